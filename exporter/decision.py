"""``--with-decision``: a second output, ``class`` (int64), computed inside the artifact from the
variant's own threshold, so that a consumer in any language gets classes with no code of ours.

It is the runtime's rule, with the runtime's cut (:func:`keras_edge.runtime.classifier.
decision_cut`): ``output > cut`` for binary (shape (n,)) and multilabel ((n, k)), with the cut in
the logit domain for a logit head and, for a full-int8 output, the integer cut that gives the
labels of dequantizing first (the comparison runs on the integer output); ``argmax`` for
multiclass, and -1 where the top probability is not above a minimum confidence. The
probability output stays the first output, unchanged.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from keras_edge.exporter import _tf
from keras_edge.exporter.embed import pack_tflite
from keras_edge.runtime.classifier import decision_cut, integer_cut
from keras_edge.runtime.engines import CLASS_OUTPUT, Quantization
from keras_edge.runtime.gate import UNKNOWN
from keras_edge.runtime.manifest import Head

logger = logging.getLogger(__name__)


def into_onnx(data: bytes, head: Head, threshold: Any) -> bytes:
    onnx = _tf.module("onnx")
    helper, numpy_helper = onnx.helper, onnx.numpy_helper
    model = onnx.load_from_string(data)
    graph = model.graph
    out = graph.output[0].name
    batch = graph.output[0].type.tensor_type.shape.dim[0]
    nodes = []
    if head.kind == "multiclass":
        dims: list[Any] = [batch.dim_param or "batch"]
        if threshold is None:
            nodes.append(helper.make_node("ArgMax", [out], [CLASS_OUTPUT], axis=1, keepdims=0))
        else:  # the minimum confidence: -1 where the top probability is not above it
            cut = np.asarray([decision_cut(head, threshold)], dtype=np.float32)
            graph.initializer.append(numpy_helper.from_array(cut, "keras_edge_cut"))
            unknown = numpy_helper.from_array(np.array(UNKNOWN, np.int64), "keras_edge_unknown")
            graph.initializer.append(unknown)
            nodes += [
                helper.make_node("ArgMax", [out], ["keras_edge_top"], axis=1, keepdims=0),
                helper.make_node("ReduceMax", [out], ["keras_edge_best"], axes=[1], keepdims=0),
                helper.make_node("Greater", ["keras_edge_best", "keras_edge_cut"], ["keras_edge_sure"]),
                helper.make_node(
                    "Where", ["keras_edge_sure", "keras_edge_top", "keras_edge_unknown"], [CLASS_OUTPUT]
                ),
            ]
    else:
        cut = np.asarray(decision_cut(head, threshold), dtype=np.float32).reshape(-1)
        graph.initializer.append(numpy_helper.from_array(cut, "keras_edge_cut"))
        nodes.append(helper.make_node("Greater", [out, "keras_edge_cut"], ["keras_edge_above"]))
        if head.kind == "binary":
            nodes.append(helper.make_node("Cast", ["keras_edge_above"], ["keras_edge_flag"], to=7))
            shape = numpy_helper.from_array(np.array([-1], np.int64), "keras_edge_flat")
            graph.initializer.append(shape)
            nodes.append(
                helper.make_node("Reshape", ["keras_edge_flag", "keras_edge_flat"], [CLASS_OUTPUT])
            )
            dims = [batch.dim_param or "batch"]
        else:
            nodes.append(helper.make_node("Cast", ["keras_edge_above"], [CLASS_OUTPUT], to=7))
            dims = [batch.dim_param or "batch", head.units]
    graph.node.extend(nodes)
    graph.output.append(helper.make_tensor_value_info(CLASS_OUTPUT, onnx.TensorProto.INT64, dims))
    return model.SerializeToString(deterministic=True)


def into_tflite(data: bytes, head: Head, threshold: Any) -> bytes:
    schema = _tf.module("ai_edge_litert.schema_py_generated")
    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    graph = model.subgraphs[0]
    out_index = graph.outputs[0]
    out = graph.tensors[out_index]
    shape = list(out.shape)
    signature = list(out.shapeSignature) if out.shapeSignature is not None else [-1, *shape[1:]]
    ops = schema.BuiltinOperator

    def opcode(code: int) -> int:
        for i, known in enumerate(model.operatorCodes):
            if max(known.builtinCode, known.deprecatedBuiltinCode) == code:
                return i
        entry = schema.OperatorCodeT()
        entry.builtinCode, entry.deprecatedBuiltinCode, entry.version = code, min(code, 127), 1
        model.operatorCodes.append(entry)
        return len(model.operatorCodes) - 1

    def tensor(name: str, dtype: int, dims: list[int], sig: list[int], value: Any = None,
               quantization: Any = None) -> int:  # fmt: skip
        buffer = schema.BufferT()
        if value is not None:
            buffer.data = np.frombuffer(np.ascontiguousarray(value).tobytes(), dtype=np.uint8)
        model.buffers.append(buffer)
        t = schema.TensorT()
        t.name, t.type, t.shape, t.shapeSignature = name, dtype, dims, sig
        t.buffer, t.quantization = len(model.buffers) - 1, quantization
        graph.tensors.append(t)
        return len(graph.tensors) - 1

    def operator(code: int, inputs: list[int], outputs: list[int], options: Any = None,
                 options_type: int = 0) -> None:  # fmt: skip
        op = schema.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = opcode(code), inputs, outputs
        op.builtinOptionsType, op.builtinOptions = options_type, options
        graph.operators.append(op)

    types = schema.TensorType
    if head.kind == "multiclass":
        axis = tensor("keras_edge_axis", types.INT32, [1], [1], np.array([1], np.int32))
        result = tensor(CLASS_OUTPUT, types.INT64, shape[:1], signature[:1])
        options = schema.ArgMaxOptionsT()
        options.outputType = types.INT64
        argmax_options = schema.BuiltinOptions.ArgMaxOptions
        if threshold is None:
            operator(ops.ARG_MAX, [out_index, axis], [result], options, argmax_options)
        else:  # the minimum confidence: -1 where the top probability is not above it
            top = tensor("keras_edge_top", types.INT64, shape[:1], signature[:1])
            operator(ops.ARG_MAX, [out_index, axis], [top], options, argmax_options)
            best = tensor("keras_edge_best", out.type, shape[:1], signature[:1],
                          quantization=out.quantization)  # fmt: skip
            reducer = schema.ReducerOptionsT()
            reducer.keepDims = False
            operator(ops.REDUCE_MAX, [out_index, axis], [best], reducer,
                     schema.BuiltinOptions.ReducerOptions)  # fmt: skip
            sure = _greater(tensor, operator, schema, best, graph.tensors[best], head, threshold,
                            "keras_edge_sure")  # fmt: skip
            unknown = tensor("keras_edge_unknown", types.INT64, [], [], np.array(UNKNOWN, np.int64))
            operator(ops.SELECT_V2, [sure, top, unknown], [result])
    else:
        above = _greater(tensor, operator, schema, out_index, out, head, threshold, "keras_edge_above")
        cast_options = schema.CastOptionsT()
        cast_options.inDataType, cast_options.outDataType = types.BOOL, types.INT64
        if head.kind == "binary":
            flag = tensor("keras_edge_flag", types.INT64, shape, signature)
            operator(ops.CAST, [above], [flag], cast_options, schema.BuiltinOptions.CastOptions)
            flat = tensor("keras_edge_flat", types.INT32, [1], [1], np.array([-1], np.int32))
            result = tensor(CLASS_OUTPUT, types.INT64, shape[:1], signature[:1])
            operator(ops.RESHAPE, [flag, flat], [result])
        else:
            result = tensor(CLASS_OUTPUT, types.INT64, shape, signature)
            operator(ops.CAST, [above], [result], cast_options, schema.BuiltinOptions.CastOptions)
    graph.outputs = [*graph.outputs, result]
    for sig in model.signatureDefs or []:
        entry = schema.TensorMapT()
        entry.name, entry.tensorIndex = CLASS_OUTPUT, result
        sig.outputs = [*(sig.outputs or []), entry]
    return pack_tflite(model, len(data))


def _greater(tensor: Any, operator: Any, schema: Any, source: int, src: Any, head: Head,
             threshold: Any, name: str) -> int:  # fmt: skip
    """A BOOL tensor ``name``, ``source > cut``, with the float cut, or for a full-int8 output the
    integer cut (same scale) that gives the labels of dequantizing first.

    That integer cut lies outside int8 when no output level is above the cut (it is then the
    largest level: nothing is greater) or every one is (it is then the smallest level minus one,
    -129 for int8, which no int8 tensor holds). In that case the output is cast to int32 and
    compared with the int32 cut, so that the class stays ``q > cut`` exactly: all 1 below the
    range, all 0 above it, as the runtime decides."""
    types = schema.TensorType
    dims, sig = list(src.shape), list(src.shapeSignature) if src.shapeSignature is not None else None
    sig = sig if sig is not None else [-1, *dims[1:]]
    cuts = np.asarray(decision_cut(head, threshold), dtype=np.float32).reshape(-1)

    def greater(left: int, cut: int) -> int:
        above = tensor(name, types.BOOL, dims, sig)
        operator(schema.BuiltinOperator.GREATER, [left, cut], [above])
        return above

    if src.type != types.INT8:
        return greater(source, tensor("keras_edge_cut", types.FLOAT32, [len(cuts)], [len(cuts)], cuts))
    q = Quantization(float(src.quantization.scale[0]), int(src.quantization.zeroPoint[0]),
                     np.dtype(np.int8))  # fmt: skip
    ints = np.array([integer_cut(q, c) for c in cuts], dtype=np.int64)
    info = np.iinfo(np.int8)
    if ints.min() >= info.min and ints.max() <= info.max:
        cut = tensor("keras_edge_cut", types.INT8, [len(ints)], [len(ints)], ints.astype(np.int8),
                     src.quantization)  # fmt: skip
        return greater(source, cut)
    logger.info(
        "%s: the integer cut %s lies outside int8 [%d, %d] (threshold %s, output scale %g, zero "
        "point %d): comparing in int32, so the class is constant where it is out of range",
        name, ints.tolist(), info.min, info.max, threshold, q.scale, q.zero_point,
    )  # fmt: skip
    wide = tensor("keras_edge_wide", types.INT32, dims, sig)
    options = schema.CastOptionsT()
    options.inDataType, options.outDataType = types.INT8, types.INT32
    operator(schema.BuiltinOperator.CAST, [source], [wide], options, schema.BuiltinOptions.CastOptions)
    return greater(
        wide, tensor("keras_edge_cut", types.INT32, [len(ints)], [len(ints)], ints.astype(np.int32))
    )
