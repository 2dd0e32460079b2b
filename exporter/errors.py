"""Errors of the exporter. They extend the runtime's hierarchy, so the CLI maps them alike."""

from __future__ import annotations

from keras_edge.runtime.errors import (
    BackendUnavailableError,
    GateError,
    KerasEdgeError,
    UsageError,
    plain,
)


def first_error(text: str, limit: int = 400) -> str:
    """The line of a converter's message that says what went wrong (converters print pages of
    MLIR or stack); the whole message goes to the debug log."""
    lines = [line.strip() for line in plain(text).splitlines() if line.strip()]
    chosen = next((line for line in lines if "error:" in line.lower()), lines[0] if lines else text)
    return chosen if len(chosen) <= limit else chosen[: limit - 3] + "..."


class UnsafeModelError(UsageError):
    """The model needs Keras safe mode off (e.g. a Lambda layer) and the user did not opt in."""


class CustomObjectsError(UsageError):
    """User code given with ``--custom-objects`` (``custom_objects=``) that is missing or fails
    to import, or a model whose custom class or function none of it defines (exit code 2)."""


class UnsupportedModelError(UsageError):
    """A model keras-edge cannot export as asked (several inputs, an unknown head, ...)."""


class HeadContradictionError(UsageError):
    """A declared ``--head`` that the model contradicts: its last activation, its number of
    output units, or its outputs on the parity data (exit code 2)."""


class UnsupportedOpError(UnsupportedModelError):
    """A format cannot express a layer without TensorFlow at run time (LiteRT's Select TF ops,
    a tf2onnx gap): that variant is refused, named with the layer and the op; the others still
    export."""


class TuningError(UsageError):
    """A threshold objective that cannot be met on the tuning data (exit code 2)."""


class CalibrationError(UsageError):
    """Calibration data that is missing, or of the wrong shape, for full-integer variants."""


class ConversionError(KerasEdgeError):
    """A converter failed on a model it should handle (exit code 1: a bug to report)."""


class PartialExportError(ConversionError):
    """Some variants could not be converted or loaded (exit code 1); the others were written
    and the manifest's ``refused`` says why for each."""

    def __init__(self, message: str, failed: list[str]) -> None:
        super().__init__(message)
        self.failed = failed


class ParityError(GateError):
    """One or more variants failed the decision-fidelity gate; the manifest says which."""

    def __init__(self, message: str, failed: list[str]) -> None:
        super().__init__(message)
        self.failed = failed


class ConstantOutputError(GateError):
    """The Keras model answers (nearly) one constant on the parity data, so agreeing with it
    proves nothing (exit code 3, before anything is converted or written)."""

    written = False


__all__ = [
    "BackendUnavailableError",
    "CalibrationError",
    "ConstantOutputError",
    "ConversionError",
    "CustomObjectsError",
    "HeadContradictionError",
    "ParityError",
    "PartialExportError",
    "TuningError",
    "UnsafeModelError",
    "UnsupportedModelError",
    "UnsupportedOpError",
]
