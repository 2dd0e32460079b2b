"""``--with-decision``: a second output, ``class`` (int64), computed inside the artifact from the
variant's own threshold, so that a consumer in any language gets classes with no code of ours.

It is the runtime's rule, with the runtime's cut (:func:`keras_edge.runtime.classifier.
decision_cut`): ``output > cut`` for binary (shape (n,)) and multilabel ((n, k)), with the cut in
the logit domain for a logit head and, for a full-int8 output, the integer cut that gives the
labels of dequantizing first (the comparison runs on the integer output); ``argmax`` for
multiclass, and -1 where the top probability is not above a minimum confidence. The
probability output is unchanged, and the class outputs follow it (an image model's files also
get a decision output before it: :mod:`keras_edge.exporter.platforms`).

A model with several heads has one output holding every head's units side by side; it gets one
class output per head, ``class_<head name>``, each decided from that head's columns (a Slice on
axis 1) with that head's threshold, in head order; a regression head gets none. Every tensor
these ops add is named after its head, so that no two heads' tensors share a name.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import numpy as np

from keras_edge.exporter import _tf
from keras_edge.exporter.embed import pack_tflite
from keras_edge.runtime.classifier import decision_cut, integer_cut
from keras_edge.runtime.engines import CLASS_OUTPUT, Quantization, class_output_name
from keras_edge.runtime.gate import UNKNOWN
from keras_edge.runtime.manifest import Head

logger = logging.getLogger(__name__)


def _named(base: str, head: Head) -> str:
    """A tensor name for one head's decision: ``base`` for a model with one head, else
    ``base/<head name>``, unique per head (no base is another's prefix up to a ``/``)."""
    return base if head.name is None else f"{base}/{head.name}"


def _decided_heads(head: Head, threshold: Any) -> list[tuple[Head, Any, slice | None, str]]:
    """Each head that gets a class output: the head, its threshold, its columns of the one
    output (None for a model with one head: all of them) and the output's name."""
    if not head.parts:
        return [] if head.kind == "regression" else [(head, threshold, None, CLASS_OUTPUT)]
    head.check_threshold(threshold, "the class outputs")
    return [
        (part, t, columns, class_output_name(part.name))
        for part, t, columns in zip(head.parts, threshold, head.slices(), strict=True)
        if part.kind != "regression"
    ]


def into_onnx(data: bytes, head: Head, threshold: Any) -> bytes:
    """``data`` with a class output per head (one, ``class``, for a model with one head)."""
    onnx = _tf.module("onnx")
    model = onnx.load_from_string(data)
    graph = model.graph
    out = graph.output[0].name
    batch = graph.output[0].type.tensor_type.shape.dim[0]
    for part, t, columns, name in _decided_heads(head, threshold):
        source = out if columns is None else _onnx_columns(onnx, graph, out, part, columns)
        dims = _onnx_class(onnx, graph, source, part, t, name, batch.dim_param or "batch")
        graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.INT64, dims))
    return model.SerializeToString(deterministic=True)


def _onnx_columns(onnx: Any, graph: Any, out: str, head: Head, columns: slice) -> str:
    """One head's columns of the output ``out``: a Slice on axis 1."""
    bounds = {"starts": columns.start, "ends": columns.stop, "axes": 1}
    for base, value in bounds.items():
        array = np.array([value], np.int64)
        graph.initializer.append(onnx.numpy_helper.from_array(array, _named(f"keras_edge_{base}", head)))
    result = _named("keras_edge_columns", head)
    inputs = [out, *(_named(f"keras_edge_{base}", head) for base in bounds)]
    graph.node.append(onnx.helper.make_node("Slice", inputs, [result], name=result))
    return result


def _onnx_class(onnx: Any, graph: Any, out: str, head: Head, threshold: Any, name: str,
                batch: str) -> list[Any]:  # fmt: skip
    """The nodes deciding ``head`` from ``out`` (its columns) into the int64 output ``name``;
    the output's dims."""
    helper, numpy_helper = onnx.helper, onnx.numpy_helper

    def n(base: str) -> str:
        return _named(f"keras_edge_{base}", head)

    nodes = []
    if head.kind == "multiclass":
        dims: list[Any] = [batch]
        if threshold is None:
            nodes.append(helper.make_node("ArgMax", [out], [name], axis=1, keepdims=0))
        else:  # the minimum confidence: -1 where the top probability is not above it
            cut = np.asarray([decision_cut(head, threshold)], dtype=np.float32)
            graph.initializer.append(numpy_helper.from_array(cut, n("cut")))
            unknown = numpy_helper.from_array(np.array(UNKNOWN, np.int64), n("unknown"))
            graph.initializer.append(unknown)
            nodes += [
                helper.make_node("ArgMax", [out], [n("top")], axis=1, keepdims=0),
                helper.make_node("ReduceMax", [out], [n("best")], axes=[1], keepdims=0),
                helper.make_node("Greater", [n("best"), n("cut")], [n("sure")]),
                helper.make_node("Where", [n("sure"), n("top"), n("unknown")], [name]),
            ]
    else:
        cut = np.asarray(decision_cut(head, threshold), dtype=np.float32).reshape(-1)
        graph.initializer.append(numpy_helper.from_array(cut, n("cut")))
        nodes.append(helper.make_node("Greater", [out, n("cut")], [n("above")]))
        if head.kind == "binary":
            nodes.append(helper.make_node("Cast", [n("above")], [n("flag")], to=7))
            shape = numpy_helper.from_array(np.array([-1], np.int64), n("flat"))
            graph.initializer.append(shape)
            nodes.append(helper.make_node("Reshape", [n("flag"), n("flat")], [name]))
            dims = [batch]
        else:
            nodes.append(helper.make_node("Cast", [n("above")], [name], to=7))
            dims = [batch, head.units]
    graph.node.extend(nodes)
    return dims


class _Graph:
    """A TFLite flatbuffer's first subgraph, unpacked, with what adding ops needs: an operator
    code, a tensor (with its buffer), an operator, a cast, an output."""

    def __init__(self, data: bytes) -> None:
        self.schema = _tf.module("ai_edge_litert.schema_py_generated")
        self.types, self.ops = self.schema.TensorType, self.schema.BuiltinOperator
        self.model = self.schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
        self.graph = self.model.subgraphs[0]

    def opcode(self, code: int) -> int:
        for i, known in enumerate(self.model.operatorCodes):
            if max(known.builtinCode, known.deprecatedBuiltinCode) == code:
                return i
        entry = self.schema.OperatorCodeT()
        entry.builtinCode, entry.deprecatedBuiltinCode, entry.version = code, min(code, 127), 1
        self.model.operatorCodes.append(entry)
        return len(self.model.operatorCodes) - 1

    def tensor(self, name: str, dtype: int, dims: list[int], sig: list[int], value: Any = None,
               quantization: Any = None) -> int:  # fmt: skip
        buffer = self.schema.BufferT()
        if value is not None:
            buffer.data = np.frombuffer(np.ascontiguousarray(value).tobytes(), dtype=np.uint8)
        self.model.buffers.append(buffer)
        t = self.schema.TensorT()
        t.name, t.type, t.shape, t.shapeSignature = name, dtype, dims, sig
        t.buffer, t.quantization = len(self.model.buffers) - 1, quantization
        self.graph.tensors.append(t)
        return len(self.graph.tensors) - 1

    def operator(self, code: int, inputs: list[int], outputs: list[int], options: Any = None,
                 options_type: int = 0) -> None:  # fmt: skip
        op = self.schema.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = self.opcode(code), inputs, outputs
        op.builtinOptionsType, op.builtinOptions = options_type, options
        self.graph.operators.append(op)

    def cast(self, source: int, result: int, src_type: int, dst_type: int) -> None:
        options = self.schema.CastOptionsT()
        options.inDataType, options.outDataType = src_type, dst_type
        self.operator(self.ops.CAST, [source], [result], options, self.schema.BuiltinOptions.CastOptions)

    def add_output(self, result: int, name: str, first: bool = False) -> None:
        """``result`` as the model's next output (with ``first``, its first one), ``name`` in
        every signature."""
        self.graph.outputs = [result, *self.graph.outputs] if first else [*self.graph.outputs, result]
        for sig in self.model.signatureDefs or []:
            entry = self.schema.TensorMapT()
            entry.name, entry.tensorIndex = name, result
            sig.outputs = [entry, *(sig.outputs or [])] if first else [*(sig.outputs or []), entry]


def _shape(tensor: Any) -> tuple[list[int], list[int]]:
    """A tensor's shape and its signature (-1 for the batch when it has none)."""
    dims = list(tensor.shape)
    sig = list(tensor.shapeSignature) if tensor.shapeSignature is not None else [-1, *dims[1:]]
    return dims, sig


def into_tflite(data: bytes, head: Head, threshold: Any) -> bytes:
    """``data`` with a class output per head (one, ``class``, for a model with one head)."""
    g = _Graph(data)
    out_index = g.graph.outputs[0]
    for part, t, columns, name in _decided_heads(head, threshold):
        source = out_index if columns is None else _tflite_columns(g, out_index, part, columns)
        if part.kind == "multiclass":
            result = _argmax_class(g, source, part, t, name)
        else:
            result = _threshold_class(g, source, part, t, name)
        g.add_output(result, name)
    return pack_tflite(g.model, len(data))


def _tflite_columns(g: _Graph, out_index: int, head: Head, columns: slice) -> int:
    """One head's columns of the output: a SLICE (every row, ``columns``), in the output's type
    and quantization, so that an int8 output is still compared on its integers."""
    types, out = g.types, g.graph.tensors[out_index]
    shape, signature = _shape(out)
    units = columns.stop - columns.start
    begin = g.tensor(_named("keras_edge_begin", head), types.INT32, [2], [2],
                     np.array([0, columns.start], np.int32))  # fmt: skip
    size = g.tensor(_named("keras_edge_size", head), types.INT32, [2], [2],
                    np.array([-1, units], np.int32))  # fmt: skip
    result = g.tensor(_named("keras_edge_columns", head), out.type, [shape[0], units],
                      [signature[0], units], quantization=copy.deepcopy(out.quantization))  # fmt: skip
    g.operator(g.ops.SLICE, [out_index, begin, size], [result], g.schema.SliceOptionsT(),
               g.schema.BuiltinOptions.SliceOptions)  # fmt: skip
    return result


def _argmax_class(g: _Graph, out_index: int, head: Head, threshold: Any, name: str) -> int:
    """argmax, or with a minimum confidence -1 where the top probability is not above it."""
    types, out = g.types, g.graph.tensors[out_index]
    shape, signature = _shape(out)
    axis = g.tensor(_named("keras_edge_axis", head), types.INT32, [1], [1], np.array([1], np.int32))
    result = g.tensor(name, types.INT64, shape[:1], signature[:1])
    options = g.schema.ArgMaxOptionsT()
    options.outputType = types.INT64
    argmax_options = g.schema.BuiltinOptions.ArgMaxOptions
    if threshold is None:
        g.operator(g.ops.ARG_MAX, [out_index, axis], [result], options, argmax_options)
        return result
    top = g.tensor(_named("keras_edge_top", head), types.INT64, shape[:1], signature[:1])
    g.operator(g.ops.ARG_MAX, [out_index, axis], [top], options, argmax_options)
    best = g.tensor(_named("keras_edge_best", head), out.type, shape[:1], signature[:1],
                    quantization=copy.deepcopy(out.quantization))  # fmt: skip
    reducer = g.schema.ReducerOptionsT()
    reducer.keepDims = False
    g.operator(g.ops.REDUCE_MAX, [out_index, axis], [best], reducer,
               g.schema.BuiltinOptions.ReducerOptions)  # fmt: skip
    sure = _greater(g, best, head, threshold, "sure")
    unknown = g.tensor(_named("keras_edge_unknown", head), types.INT64, [], [],
                       np.array(UNKNOWN, np.int64))  # fmt: skip
    g.operator(g.ops.SELECT_V2, [sure, top, unknown], [result])
    return result


def _threshold_class(g: _Graph, out_index: int, head: Head, threshold: Any, name: str) -> int:
    """``output > cut`` as int64: (n,) for binary, (n, k) for multilabel."""
    types = g.types
    shape, signature = _shape(g.graph.tensors[out_index])
    above = _greater(g, out_index, head, threshold, "above")
    if head.kind != "binary":
        result = g.tensor(name, types.INT64, shape, signature)
        g.cast(above, result, types.BOOL, types.INT64)
        return result
    flag = g.tensor(_named("keras_edge_flag", head), types.INT64, shape, signature)
    g.cast(above, flag, types.BOOL, types.INT64)
    flat = g.tensor(_named("keras_edge_flat", head), types.INT32, [1], [1], np.array([-1], np.int32))
    result = g.tensor(name, types.INT64, shape[:1], signature[:1])
    g.operator(g.ops.RESHAPE, [flag, flat], [result])
    return result


def _greater(g: _Graph, source: int, head: Head, threshold: Any, base: str,
             cut_base: str = "cut") -> int:  # fmt: skip
    """A BOOL tensor ``keras_edge_<base>`` (one per head), ``source > cut``, with the float cut,
    or for a full-int8 output the integer cut (same scale) that gives the labels of dequantizing
    first.

    That integer cut lies outside int8 when no output level is above the cut (it is then the
    largest level: nothing is greater) or every one is (it is then the smallest level minus one,
    -129 for int8, which no int8 tensor holds). In that case the output is cast to int32 and
    compared with the int32 cut, so that the class stays ``q > cut`` exactly: all 1 below the
    range, all 0 above it, as the runtime decides."""
    types, src = g.types, g.graph.tensors[source]
    dims, sig = _shape(src)
    cuts = np.asarray(decision_cut(head, threshold), dtype=np.float32).reshape(-1)
    name, cut_name = _named(f"keras_edge_{base}", head), _named(f"keras_edge_{cut_base}", head)

    def greater(left: int, cut: int) -> int:
        above = g.tensor(name, types.BOOL, dims, sig)
        g.operator(g.ops.GREATER, [left, cut], [above])
        return above

    if src.type != types.INT8:
        return greater(source, g.tensor(cut_name, types.FLOAT32, [len(cuts)], [len(cuts)], cuts))
    q = Quantization(float(src.quantization.scale[0]), int(src.quantization.zeroPoint[0]),
                     np.dtype(np.int8))  # fmt: skip
    ints = np.array([integer_cut(q, c) for c in cuts], dtype=np.int64)
    info = np.iinfo(np.int8)
    if ints.min() >= info.min and ints.max() <= info.max:
        cut = g.tensor(cut_name, types.INT8, [len(ints)], [len(ints)], ints.astype(np.int8),
                       src.quantization)  # fmt: skip
        return greater(source, cut)
    logger.info(
        "%s: the integer cut %s lies outside int8 [%d, %d] (threshold %s, output scale %g, zero "
        "point %d): comparing in int32, so the class is constant where it is out of range",
        name, ints.tolist(), info.min, info.max, threshold, q.scale, q.zero_point,
    )  # fmt: skip
    wide = g.tensor(_named(f"keras_edge_{base}_wide", head), types.INT32, dims, sig)
    g.cast(source, wide, types.INT8, types.INT32)
    return greater(
        wide, g.tensor(cut_name, types.INT32, [len(ints)], [len(ints)], ints.astype(np.int32))
    )
