"""Look inside converted artifacts: which tensor types and op types they hold.

Used to prove that quantization happened (a converter can silently quantize nothing: TFLite
leaves weight tensors under 1024 elements in float), by the export and by the tests.
"""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np

from keras_edge.exporter import _tf

logger = logging.getLogger(__name__)

# What a variant of each precision must contain to count as quantized.
EXPECTED_TFLITE = {"fp16": "float16", "dynamic": "int8", "int8": "int8"}
EXPECTED_ONNX_OPS = {"dynamic": "DynamicQuantizeLinear", "int8": "QuantizeLinear"}


def tflite_tensor_types(data: bytes) -> Counter[str]:
    """How many tensors of each dtype the TFLite model holds."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=data)
    return Counter(np.dtype(t["dtype"]).name for t in interpreter.get_tensor_details())


def onnx_op_types(data: bytes) -> Counter[str]:
    """How many nodes of each op type the ONNX graph holds."""
    onnx = _tf.module("onnx")
    return Counter(node.op_type for node in onnx.load_from_string(data).graph.node)


def onnx_initializer_types(data: bytes) -> Counter[str]:
    """How many initializers (weights) of each element type the ONNX graph holds."""
    onnx = _tf.module("onnx")
    graph = onnx.load_from_string(data).graph
    return Counter(onnx.helper.tensor_dtype_to_np_dtype(t.data_type).name for t in graph.initializer)


def quantized_nothing(fmt: str, precision: str, data: bytes) -> str | None:
    """A sentence when a quantized variant holds none of what its precision should add."""
    if precision == "fp32":
        return None
    if fmt == "tflite":
        expected = EXPECTED_TFLITE[precision]
        found = tflite_tensor_types(data)
        if found[expected] == 0:
            return (
                f"tflite-{precision} holds no {expected} tensor ({dict(found)}): the converter "
                f"quantized nothing (TFLite leaves weight tensors under 1024 elements in float)"
            )
        return None
    if precision == "fp16":
        types = onnx_initializer_types(data)
        if types["float16"] == 0:
            return f"onnx-fp16 holds no float16 initializer ({dict(types)}): nothing was converted"
        return None
    op = EXPECTED_ONNX_OPS[precision]
    ops = onnx_op_types(data)
    if ops[op] == 0:
        return f"onnx-{precision} holds no {op} node ({dict(ops)}): the quantizer changed nothing"
    return None
