"""Keras model -> TFLite bytes at one precision."""

from __future__ import annotations

import logging
from typing import Any

from keras_edge.exporter import _tf
from keras_edge.exporter.calibration import Calibration
from keras_edge.exporter.errors import CalibrationError, ConversionError

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
            raise ConversionError(f"TFLite conversion at {precision} failed: {exc}") from exc
