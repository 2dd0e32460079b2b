"""Lazy, quiet imports of the converter stack, with the extra to install when one is missing."""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Iterator
from types import ModuleType

from runtime.errors import BackendUnavailableError

logger = logging.getLogger(__name__)

_EXTRA_HINT = (
    "install it with: pip install 'keras-edge[export]' (or 'keras-edge[export-no-tf]' beside "
    "a TensorFlow you already have)"
)


def _import(name: str) -> ModuleType:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # failures still raise in Python
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")  # the converters need TF tensors
    try:
        return __import__(name, fromlist=["_"])
    except ImportError as exc:
        raise BackendUnavailableError(
            f"Exporting needs the Python package {name.split('.')[0]!r}, which could not be "
            f"imported ({exc}); {_EXTRA_HINT}"
        ) from exc


def tensorflow() -> ModuleType:
    return _import("tensorflow")


def keras() -> ModuleType:
    tensorflow()  # keras 3 picks its backend at import; make it TensorFlow's, quietly
    return _import("keras")


def module(name: str) -> ModuleType:
    return _import(name)


def version(name: str) -> str:
    """Installed version of a distribution, or 'absent'."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as _version

    try:
        return _version(name)
    except PackageNotFoundError:
        return "absent"


@contextlib.contextmanager
def captured_stdout() -> Iterator[None]:
    """Send what converters print on stdout (temp folder paths, ...) to the debug log."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        yield
    text = buffer.getvalue().strip()
    if text:
        logger.debug("converter output:\n%s", text)
