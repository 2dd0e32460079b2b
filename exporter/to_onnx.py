"""Keras model -> ONNX bytes at one precision.

fp32 goes through ``tf2onnx.convert.from_function`` on a ``tf.function`` of the model
(``from_keras`` fails on Keras 3). The quantized variants are made from the fp32 graph with
onnxconverter-common (fp16) and ``onnxruntime.quantization`` (dynamic, static QDQ int8).
"""

from __future__ import annotations

import logging
import re
import tempfile
from pathlib import Path
from typing import Any

from exporter import _tf
from exporter.calibration import Calibration
from exporter.errors import CalibrationError, ConversionError
from runtime.manifest import InputSpec

logger = logging.getLogger(__name__)

OPSET = 17  # tf2onnx 1.17 handles 13-18; 17 is the newest every ONNX Runtime >= 1.14 runs
OUTPUT_NAME = "output"
BATCH_DIM = "batch"
_UNK_DIM = re.compile(r"^unk__\d+$")


def _canonicalize(model: Any) -> None:
    """Make the bytes reproducible within one process: tf2onnx names free dimensions
    ``unk__N`` and fills ``doc_string`` from global counters."""
    model.doc_string = ""
    model.graph.doc_string = ""
    for value in [*model.graph.input, *model.graph.output]:
        for dim in value.type.tensor_type.shape.dim:
            if _UNK_DIM.match(dim.dim_param):
                dim.dim_param = BATCH_DIM
    old = model.graph.output[0].name
    if old != OUTPUT_NAME:
        for node in model.graph.node:
            for i, name in enumerate(node.output):
                if name == old:
                    node.output[i] = OUTPUT_NAME
            for i, name in enumerate(node.input):
                if name == old:
                    node.input[i] = OUTPUT_NAME
        model.graph.output[0].name = OUTPUT_NAME


def to_fp32_proto(model: Any, spec: InputSpec) -> Any:
    tf = _tf.tensorflow()
    tf2onnx = _tf.module("tf2onnx")
    signature = (tf.TensorSpec(spec.shape, tf.float32, name=spec.name),)
    fn = tf.function(lambda x: model(x, training=False))
    try:
        with _tf.captured_stdout():
            proto, _ = tf2onnx.convert.from_function(fn, input_signature=signature, opset=OPSET)
    except Exception as exc:  # tf2onnx raises many untyped errors
        raise ConversionError(f"tf2onnx conversion failed: {exc}") from exc
    _canonicalize(proto)
    return proto


def _fp16(proto: Any) -> Any:
    float16 = _tf.module("onnxconverter_common.float16")
    # keep_io_types: the device still feeds float32 and reads float32.
    return float16.convert_float_to_float16(proto, keep_io_types=True)


def _quantize_with_files(
    proto: Any, precision: str, spec: InputSpec, calibration: Calibration | None
) -> bytes:
    onnx = _tf.module("onnx")
    quantization = _tf.module("onnxruntime.quantization")
    with tempfile.TemporaryDirectory(prefix="keras-edge-") as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "quantized.onnx"
        onnx.save(proto, str(src))
        if precision == "dynamic":
            quantization.quantize_dynamic(str(src), str(dst), weight_type=quantization.QuantType.QInt8)
        else:
            if calibration is None:
                raise CalibrationError("Expected calibration data for onnx-int8, got none")
            quantization.quantize_static(
                str(src),
                str(dst),
                calibration.onnx_reader(spec.name),
                quant_format=quantization.QuantFormat.QDQ,
                activation_type=quantization.QuantType.QInt8,
                weight_type=quantization.QuantType.QInt8,
                calibrate_method=quantization.CalibrationMethod.MinMax,
            )
        out = onnx.load(str(dst))
    _canonicalize(out)
    return out.SerializeToString(deterministic=True)


def convert(
    model: Any, spec: InputSpec, precision: str, calibration: Calibration | None = None
) -> bytes:
    """ONNX bytes of ``model`` at ``precision`` (fp32, fp16, dynamic or int8)."""
    proto = to_fp32_proto(model, spec)
    try:
        if precision == "fp32":
            return proto.SerializeToString(deterministic=True)
        if precision == "fp16":
            return _fp16(proto).SerializeToString(deterministic=True)
        if precision in ("dynamic", "int8"):
            return _quantize_with_files(proto, precision, spec, calibration)
    except (CalibrationError, ConversionError):
        raise
    except Exception as exc:  # onnxruntime.quantization raises untyped errors
        raise ConversionError(f"ONNX {precision} conversion failed: {exc}") from exc
    raise ConversionError(f"Expected a precision fp32/fp16/dynamic/int8, got {precision!r}")
