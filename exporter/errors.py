"""Errors of the exporter. They extend the runtime's hierarchy, so the CLI maps them alike."""

from __future__ import annotations

from keras_edge.runtime.errors import BackendUnavailableError, GateError, KerasEdgeError, UsageError


class UnsafeModelError(UsageError):
    """The model needs Keras safe mode off (e.g. a Lambda layer) and the user did not opt in."""


class UnsupportedModelError(UsageError):
    """A model keras-edge cannot export as asked (several inputs, an unknown head, ...)."""


class CalibrationError(UsageError):
    """Calibration data that is missing, or of the wrong shape, for full-integer variants."""


class ConversionError(KerasEdgeError):
    """A converter failed on a model it should handle (exit code 1: a bug to report)."""


class ParityError(GateError):
    """One or more variants failed the decision-fidelity gate; the manifest says which."""

    def __init__(self, message: str, failed: list[str]) -> None:
        super().__init__(message)
        self.failed = failed


__all__ = [
    "BackendUnavailableError",
    "CalibrationError",
    "ConversionError",
    "ParityError",
    "UnsafeModelError",
    "UnsupportedModelError",
]
