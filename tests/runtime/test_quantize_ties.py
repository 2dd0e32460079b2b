"""The runtime quantizes an int8-IO model's float inputs itself. It must round exactly as
LiteRT's QUANTIZE kernel would inside a float-IO model, or the two would decide differently on
the inputs that land on a half step. Proven on a one-op model (float32 -> QUANTIZE -> int8) fed
values exactly halfway between two integer levels."""

from __future__ import annotations

import numpy as np
import pytest

from keras_edge.exporter.embed import pack_tflite
from keras_edge.runtime.engines import Quantization


def _one_quantize_op(scale: float, zero: int, width: int) -> bytes:
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT()
    model.version = 3
    model.buffers = [schema.BufferT() for _ in range(3)]
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.QUANTIZE
    code.version = 1
    model.operatorCodes = [code]
    x, q = schema.TensorT(), schema.TensorT()
    for tensor, name, dtype, buffer in ((x, "x", "FLOAT32", 1), (q, "q", "INT8", 2)):
        tensor.name, tensor.type, tensor.buffer = name, getattr(schema.TensorType, dtype), buffer
        tensor.shape, tensor.shapeSignature = [1, width], [-1, width]
    q.quantization = schema.QuantizationParametersT()
    q.quantization.scale, q.quantization.zeroPoint = [scale], [zero]
    op = schema.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0], [1]
    graph = schema.SubGraphT()
    graph.tensors, graph.inputs, graph.outputs, graph.operators = [x, q], [0], [1], [op]
    model.subgraphs = [graph]
    return pack_tflite(model, 1024)


def _litert(data: bytes, x: np.ndarray, resolver: str) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kwargs = {}
    if resolver != "default":
        kwargs["experimental_op_resolver_type"] = getattr(OpResolverType, resolver)
    interpreter = Interpreter(model_content=data, **kwargs)
    detail = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(detail["index"], x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(detail["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


@pytest.mark.parametrize("scale, zero", [(2**-4, 0), (2**-4, -7), (2**-6, 3), (2**-2, -128)])
def test_runtime_quantization_rounds_exact_ties_as_litert(scale, zero):
    levels = np.arange(-140, 140)
    ties = ((levels + 0.5) * scale).astype(np.float32)  # exact in float32: halfway by construction
    x = np.concatenate([ties, -ties]).reshape(-1, 8)
    assert np.array_equal(x.astype(np.float64) / scale % 1, np.full(x.shape, 0.5))
    data = _one_quantize_op(scale, zero, 8)
    q = Quantization(scale, zero, np.dtype(np.int8))
    ours = q.quantize(x)
    # The engine the runtime runs (the default: XNNPACK) and LiteRT's optimized builtin kernel.
    for resolver in ("default", "BUILTIN_WITHOUT_DEFAULT_DELEGATES"):
        np.testing.assert_array_equal(ours, _litert(data, x, resolver), resolver)
    # The few-values path a device's single-sample call takes rounds the same.
    for i, row in enumerate(x):
        np.testing.assert_array_equal(q.quantize_values(row.tolist(), (8,)), ours[i])
    # LiteRT's reference kernel rounds halves away from zero instead: the ties really are ties.
    r = x.astype(np.float64) / scale
    away = np.clip(np.sign(r) * np.floor(np.abs(r) + 0.5) + zero, -128, 127).astype(np.int8)
    reference = _litert(data, x, "BUILTIN_REF")
    np.testing.assert_array_equal(reference, away)
    assert (reference != ours).any()


def test_runtime_quantization_equals_litert_off_ties():
    rng = np.random.default_rng(0)
    for scale, zero in [(0.0235, -3), (0.0078431, 0), (0.1173, 12)]:
        x = rng.normal(0, 60 * scale, (512, 8)).astype(np.float32)
        q = Quantization(scale, zero, np.dtype(np.int8))
        litert = _litert(_one_quantize_op(scale, zero, 8), x, "default")
        np.testing.assert_array_equal(q.quantize(x), litert, f"scale {scale}")
