"""keras-edge exporter: Keras model -> TFLite/ONNX variants + a manifest, each proved.

TensorFlow is imported only when an export runs, never at ``import keras_edge.exporter``.
``load_model``, ``keras_labels``, ``import_tensorflow``, ``import_keras``, ``captured_output``
and ``capturing`` (converter noise to the debug log, for a command line) are what the
benchmarks (and other tools) may use of the exporter; everything else is internal.
"""

from keras_edge.exporter._tf import captured_output, capturing
from keras_edge.exporter._tf import keras as import_keras
from keras_edge.exporter._tf import tensorflow as import_tensorflow
from keras_edge.exporter.custom_objects import import_custom_objects, load_model
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
from keras_edge.exporter.model import keras_labels
from keras_edge.exporter.result import ExportResult

__all__ = [
    "CalibrationError",
    "ConversionError",
    "ExportResult",
    "ParityError",
    "PartialExportError",
    "UnsafeModelError",
    "UnsupportedModelError",
    "UnsupportedOpError",
    "captured_output",
    "capturing",
    "export",
    "import_custom_objects",
    "import_keras",
    "import_tensorflow",
    "keras_labels",
    "load_model",
]
