"""Typed errors shared by the runtime, the exporter and the command line.

Every message names the value received and the value expected. The command line maps
:class:`UsageError` subclasses to exit code 2 and :class:`GateError` to exit code 3.
"""

from __future__ import annotations

import re

# Terminal escape sequences (colours, bold) that Keras and TensorFlow put into their messages.
_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def plain(text: str) -> str:
    """``text`` without terminal escape sequences: one-line errors and the manifest's reasons
    are read in logs, CI output and JSON, where ``\x1b[1m`` is noise."""
    return _ESCAPES.sub("", text)


class KerasEdgeError(Exception):
    """Base class of every error raised on purpose by keras-edge."""


class UsageError(KerasEdgeError):
    """Bad usage or bad input: the caller can fix it (exit code 2)."""


class InputError(UsageError, ValueError):
    """An input array that the model cannot answer correctly (shape, dtype, NaN, ...)."""


class ManifestError(UsageError):
    """A manifest that is missing, malformed, or points outside its folder."""


class ArtifactError(UsageError):
    """An artifact file that is missing, or whose bytes do not match the manifest."""


class UnknownVariantError(UsageError, LookupError):
    """A variant id that the manifest does not list."""


class BackendUnavailableError(UsageError, ImportError):
    """The engine a variant needs is not installed; the message names the extra."""


class DeviceUnavailableError(UsageError):
    """The requested device is not available to the engine on this machine."""


class GateError(KerasEdgeError):
    """A parity or quality gate failed (exit code 3); artifacts and manifest were written."""


class VerificationError(GateError):
    """A variant that passed at export no longer decides as it did, on this machine
    (``keras-edge verify``, ``load(..., verify=True)``); ``failed`` names the variants."""

    def __init__(self, message: str, failed: list[str]) -> None:
        super().__init__(message)
        self.failed = failed
