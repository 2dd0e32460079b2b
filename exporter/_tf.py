"""Lazy imports of the converter stack, with the extra to install when one is missing; and
the capture of what the converters print, which only a command line turns on.

The library changes no process-wide state: it sets no environment variable, and it leaves
file descriptors 1 and 2 alone unless the caller asked for capture with :func:`capturing`
(the ``keras-edge`` console script does, for its commands that convert, in its single
thread; a Python caller sees the converters' output, and other threads' output is never
swallowed)."""

from __future__ import annotations

import contextlib
import contextvars
import io
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from types import ModuleType

from keras_edge.runtime.errors import BackendUnavailableError

logger = logging.getLogger(__name__)

_EXTRA_HINT = (
    "install it with: pip install 'keras-edge[export]' (or 'keras-edge[export-no-tf]' beside "
    "a TensorFlow you already have)"
)


_CAPTURE: contextvars.ContextVar[bool] = contextvars.ContextVar("keras_edge_capture", default=False)


def _import(name: str) -> ModuleType:
    try:
        return __import__(name, fromlist=["_"])
    except ImportError as exc:
        raise BackendUnavailableError(
            f"Exporting (and bench --keras) needs the Python package {name.split('.')[0]!r}, which "
            f"could not be imported ({exc}); {_EXTRA_HINT}"
        ) from exc


@contextlib.contextmanager
def capturing() -> Iterator[None]:
    """Within this block (in this thread or task), :func:`captured_output` redirects what the
    converters print to the debug log. For a command line: it redirects the process's file
    descriptors 1 and 2 while a converter runs."""
    token = _CAPTURE.set(True)
    try:
        yield
    finally:
        _CAPTURE.reset(token)


def tensorflow() -> ModuleType:
    loaded = sys.modules.get("tensorflow")  # None when an import of it was blocked
    if loaded is not None:
        return loaded
    with captured_output():  # its C++ start-up notices (oneDNN, absl) go to the debug log
        return _import("tensorflow")


def keras() -> ModuleType:
    tensorflow()
    keras = _import("keras")
    backend = keras.backend.backend()
    if backend != "tensorflow":  # the converters need TensorFlow tensors
        raise BackendUnavailableError(
            f"Expected Keras on its TensorFlow backend to export (KERAS_BACKEND=tensorflow, set "
            f"before Keras is imported), got the {backend!r} backend"
        )
    return keras


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
def captured_output() -> Iterator[None]:
    """Inside :func:`capturing`, send what converters print to the debug log instead of the
    user's terminal; elsewhere (a library call), do nothing.

    The converters print temp folder paths, quantizer settings and advice, from Python and from
    C++, on stdout and stderr; the file descriptors are redirected so both are caught.
    """
    if not _CAPTURE.get():
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        buffer = io.StringIO()
        failure: BaseException | None = None
        try:
            with contextlib.redirect_stdout(buffer), warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                yield
        except BaseException as exc:
            failure = exc
            raise
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            sink.seek(0)
            text = (buffer.getvalue() + sink.read().decode("utf-8", "replace")).strip()
            text += "".join(f"\n{w.category.__name__}: {w.message}" for w in caught)
            if text.strip():
                logger.debug("converter output:\n%s", text.strip())
                if failure is not None:  # kept for the failure's report: see converter_output()
                    failure.converter_output = text.strip()  # type: ignore[attr-defined]


def converter_output(exc: BaseException) -> str | None:
    """What the converters printed while failing with ``exc`` (or the error it was raised
    from), or None."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = getattr(current, "converter_output", None)
        if text:
            return str(text)
        current = current.__cause__ or current.__context__
    return None
