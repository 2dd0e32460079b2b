"""Keras model -> TFLite bytes at one precision."""

from __future__ import annotations

import logging
import re
from typing import Any

from keras_edge.exporter import _tf
from keras_edge.exporter.calibration import Calibration
from keras_edge.exporter.errors import (
    CalibrationError,
    ConversionError,
    UnsupportedOpError,
    first_error,
)

logger = logging.getLogger(__name__)


def convert(
    model: Any, precision: str, calibration: Calibration | None = None, int8_io: bool = False
) -> bytes:
    """Convert with ``TFLiteConverter.from_keras_model`` (``from_concrete_functions`` with the
    model as trackable silently gives NaN, see TOOLCHAIN.md).

    ``int8`` is full integer inside, calibrated on ``calibration``. Its input and output stay
    float32 (LiteRT quantizes and dequantizes in C++, cheaper than numpy can per call) unless
    ``int8_io``, for integer-only targets (microcontrollers, NPUs): then they are int8 and the
    runtime quantizes with the model's scale and zero point.
    """
    tf = _tf.tensorflow()
    with _tf.captured_output():
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        if precision == "fp16":
            # supported_types alone gives a file identical to fp32: DEFAULT is needed too.
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        elif precision == "dynamic":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        elif precision == "int8":
            if calibration is None:
                raise CalibrationError("Expected calibration data for tflite-int8, got none")
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = calibration.representative_dataset
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            if int8_io:
                converter.inference_input_type = tf.int8
                converter.inference_output_type = tf.int8
        elif precision != "fp32":
            raise ConversionError(f"Expected a precision fp32/fp16/dynamic/int8, got {precision!r}")
        try:
            return bytes(converter.convert())
        except Exception as exc:  # the converter raises many untyped errors
            unsupported = _needs_tensorflow(model, str(exc))
            if unsupported:
                raise UnsupportedOpError(unsupported) from exc
            raise ConversionError(
                f"TFLite conversion at {precision} failed: {first_error(str(exc))}"
            ) from exc


# The converter's messages locate an op as fused["OpName:", "model/layer/inner@function"].
_LOCATION = re.compile(r'fused\["(\w+):", "([^"@]+)@')
_TF_OP = re.compile(r"'tf\.(\w+)'")


def _needs_tensorflow(model: Any, message: str) -> str | None:
    """If the conversion failed because ops need TensorFlow at run time (LiteRT's Select TF
    ops, "Flex"), a message naming the layers and the ops; else None. keras-edge never enables
    Select TF ops: the runtime has no TensorFlow to run them."""
    lowered = message.lower()
    if "select tf ops" not in lowered and "flex op" not in lowered:
        return None
    ops = sorted(set(_TF_OP.findall(message)))
    layers = []
    for _, path in _LOCATION.findall(message):
        if path.startswith("StatefulPartitionedCall"):
            continue  # the signature's wrapper, not a layer
        parts = path.split("/")
        name = parts[1] if len(parts) > 1 else parts[0]
        label = repr(name)
        # The graph names a layer as TensorFlow made it unique: 'gru_1' for the layer 'gru'.
        for candidate in (name, re.sub(r"_\d+$", "", name)):
            try:
                label = f"{candidate!r} ({type(model.get_layer(candidate)).__name__})"
                break
            except (ValueError, AttributeError):
                continue
        if label not in layers:
            layers.append(label)
    return (
        f"layer {', '.join(layers) or '(unknown)'} needs the TensorFlow op(s) "
        f"{', '.join(ops) or '(unknown)'}, which LiteRT runs only through Select TF ops (Flex), "
        f"a TensorFlow runtime that a device running keras-edge does not have, so this TFLite "
        f"variant is refused (the ONNX variants may still export)"
    )
