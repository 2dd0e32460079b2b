"""keras-edge exporter: Keras model -> TFLite/ONNX variants + a manifest, each proved.

TensorFlow is imported only when an export runs, never at ``import keras_edge.exporter``.
``load_model``, ``keras_labels``, ``import_tensorflow``, ``captured_output`` and ``capturing``
(converter noise to the debug log, for a command line) and ``zoo`` (example models) are what
the benchmarks (and other tools) may use of the exporter; everything else is internal.
"""

from typing import Any

from keras_edge.exporter._tf import captured_output, capturing
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
    "import_tensorflow",
    "keras_labels",
    "load_model",
    "zoo",
]


def __getattr__(name: str) -> Any:
    # The zoo is imported on first use: importing it here would import exporter.example before
    # ``python -m keras_edge.exporter.example`` runs it (runpy warns about that).
    if name == "zoo":
        import importlib

        return importlib.import_module("keras_edge.exporter.zoo")
    raise AttributeError(f"module 'keras_edge.exporter' has no attribute {name!r}")
