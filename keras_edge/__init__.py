"""keras-edge: export a Keras classifier to TFLite and ONNX, prove each artifact decides like
Keras, and run it on a device with numpy and one engine.

``import keras_edge`` imports numpy and the runtime only: ``export`` is resolved on first use, so
no exporter code and no TensorFlow is imported until an export runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from keras_edge.runtime import load

if TYPE_CHECKING:
    from keras_edge.exporter import export

__version__ = "0.2.0"

__all__ = ["__version__", "export", "load"]


def __getattr__(name: str) -> Any:
    if name == "export":
        from keras_edge.exporter import export

        return export
    raise AttributeError(f"module 'keras_edge' has no attribute {name!r}")
