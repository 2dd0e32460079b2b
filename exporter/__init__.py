"""keras-edge exporter: Keras model -> TFLite/ONNX variants + a manifest, each proved.

TensorFlow is imported only when an export runs, never at ``import exporter``.
"""

from exporter.errors import (
    CalibrationError,
    ConversionError,
    ParityError,
    UnsafeModelError,
    UnsupportedModelError,
)
from exporter.export import export

__all__ = [
    "CalibrationError",
    "ConversionError",
    "ParityError",
    "UnsafeModelError",
    "UnsupportedModelError",
    "export",
]
