"""keras-edge exporter: Keras model -> TFLite/ONNX variants + a manifest, each proved.

TensorFlow is imported only when an export runs, never at ``import keras_edge.exporter``.
``load_model``, ``keras_labels``, ``import_tensorflow``, ``captured_output`` (converter noise to
the debug log) and ``zoo`` (example models) are what the benchmarks (and other tools) may use of
the exporter; everything else is internal.
"""

from keras_edge.exporter import zoo
from keras_edge.exporter._tf import captured_output
from keras_edge.exporter._tf import tensorflow as import_tensorflow
from keras_edge.exporter.errors import (
    CalibrationError,
    ConversionError,
    ParityError,
    PartialExportError,
    UnsafeModelError,
    UnsupportedModelError,
    UnsupportedOpError,
)
from keras_edge.exporter.export import export
from keras_edge.exporter.model import keras_labels, load_model

__all__ = [
    "CalibrationError",
    "ConversionError",
    "ParityError",
    "PartialExportError",
    "UnsafeModelError",
    "UnsupportedModelError",
    "UnsupportedOpError",
    "captured_output",
    "export",
    "import_tensorflow",
    "keras_labels",
    "load_model",
    "zoo",
]
