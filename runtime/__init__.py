"""keras-edge runtime: load an exported variant and get classes, with numpy and one engine.

Never imports TensorFlow, Keras, tf2onnx or onnx.
"""

from keras_edge.runtime.classifier import Classifier
from keras_edge.runtime.errors import (
    ArtifactError,
    BackendUnavailableError,
    DeviceUnavailableError,
    GateError,
    InputError,
    KerasEdgeError,
    ManifestError,
    UnknownVariantError,
    UsageError,
    VerificationError,
)
from keras_edge.runtime.loading import load
from keras_edge.runtime.manifest import Manifest

__all__ = [
    "ArtifactError",
    "BackendUnavailableError",
    "Classifier",
    "DeviceUnavailableError",
    "GateError",
    "InputError",
    "KerasEdgeError",
    "Manifest",
    "ManifestError",
    "UnknownVariantError",
    "UsageError",
    "VerificationError",
    "load",
]
