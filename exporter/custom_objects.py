"""The user's own code that a model needs to load: custom layers, losses, activations.

A model that uses a class registered with ``@keras.saving.register_keras_serializable()`` can
only be loaded once the module that defines it has run. ``--custom-objects FILE.py`` (or a
dotted module name; ``custom_objects=`` in Python) imports it first: a ``.py`` file by path
under a stable module name (the same file content always gets the same name, so a second
export in one process reuses it instead of defining its classes again), a module name through
the ordinary import system. Keras safe mode stays on: importing the code is the user's explicit
choice, running the code of a Lambda stored in the model file is still refused. What importing
leaves behind is what any import leaves: the module in ``sys.modules`` (and the classes it
registers with Keras); the file's folder is on ``sys.path`` only while the file runs, so that
its sibling modules import as they do beside it.

The serializable classes that an imported module defines without registering them are also
given to Keras by class name (its ``custom_objects``), so that they load too. A dict ``{name:
object}`` in Python is passed to Keras as it is.

The manifest records what was imported: a file by its name only (never its folder, which
would make two exports of the same model differ) and its SHA-256, a module by its name, an
object by the name it was given under.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import logging
import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from keras_edge.exporter.errors import CustomObjectsError
from keras_edge.runtime.errors import UsageError, plain
from keras_edge.runtime.manifest import CustomSource

logger = logging.getLogger(__name__)

MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
# The prefix of the module name a file is imported under: with its stem and content hash.
FILE_MODULE_PREFIX = "keras_edge_custom_"
# What Keras says when a model names a class or function nobody imported.
_MISSING = re.compile(r"Could not (?:locate|deserialize) (class|function) '([^']+)'")


@dataclass(frozen=True)
class CustomCode:
    """What to import before loading a model: ``sources`` (``.py`` paths or dotted module
    names, in order) and ``objects`` (``(name, object)`` pairs a caller gave in a dict)."""

    sources: tuple[str, ...] = ()
    objects: tuple[tuple[str, Any], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.sources or self.objects)

    @classmethod
    def parse(cls, value: Any) -> CustomCode:
        """``custom_objects=`` as a caller passes it: None, one path or module name, a list of
        them, or a dict ``{name: object}`` as Keras takes it."""
        if value is None:
            return cls()
        if isinstance(value, CustomCode):
            return value
        if isinstance(value, Mapping):
            if not all(isinstance(k, str) and k for k in value):
                raise UsageError(
                    f"Expected custom_objects= a dict with names as keys, got keys {list(value)!r}"
                )
            return cls(objects=tuple(value.items()))
        items = [value] if isinstance(value, (str, Path)) else value
        if not isinstance(items, (list, tuple)) or not all(isinstance(v, (str, Path)) for v in items):
            raise UsageError(
                f"Expected custom_objects= .py file paths or module names (a list of strings), "
                f"or a dict {{name: object}}, got {value!r}"
            )
        sources = tuple(str(v) for v in items)
        for source in sources:
            if not source.strip():
                raise UsageError(
                    f"Expected a .py file or a module name in custom_objects=, got {source!r}"
                )
        return cls(sources=sources)


def _is_file(source: str) -> bool:
    """A ``.py`` path (or anything with a folder in it); else a dotted module name."""
    return source.endswith(".py") or "/" in source or "\\" in source or Path(source).is_file()


def _module_name(path: Path, digest: str) -> str:
    stem = re.sub(r"\W", "_", path.stem) or "module"
    return f"{FILE_MODULE_PREFIX}{stem}_{digest[:16]}"


def _reason(exc: BaseException) -> str:
    """The exception in one line: its type and the first line of its message."""
    lines = [line.strip() for line in plain(str(exc)).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _import_file(source: str) -> tuple[ModuleType, CustomSource]:
    path = Path(source)
    if path.suffix != ".py":
        raise CustomObjectsError(
            f"Expected a Python file ending in .py for --custom-objects, got {source!r}"
        )
    if not path.is_file():
        raise CustomObjectsError(
            f"Expected a Python file at {source!r} for --custom-objects, found none"
        )
    code = path.read_bytes()
    digest = hashlib.sha256(code).hexdigest()
    record = CustomSource(kind="file", source=path.name, sha256=digest)
    name = _module_name(path, digest)
    if name in sys.modules:  # the same content, already run in this process: reuse it
        logger.debug("custom objects: %s already imported as %s", path, name)
        return sys.modules[name], record
    spec = importlib.util.spec_from_file_location(name, path.absolute())
    if spec is None or spec.loader is None:
        raise CustomObjectsError(f"Could not import {source!r} for --custom-objects: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before running it, as the import system does (dataclasses need it)
    folder = str(path.absolute().parent)
    sys.path.insert(0, folder)  # its sibling modules import as they do beside it
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:  # any failure of the user's code
        sys.modules.pop(name, None)
        raise CustomObjectsError(
            f"Could not import {source!r} for --custom-objects: {_reason(exc)}"
        ) from exc
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(folder)
    logger.info("custom objects: imported %s (sha256 %s) as %s", path, digest[:12], name)
    return module, record


def _import_module(source: str) -> tuple[ModuleType, CustomSource]:
    if not MODULE_NAME.match(source):
        raise CustomObjectsError(
            f"Expected a .py file or a dotted module name for --custom-objects, got {source!r}"
        )
    try:
        module = importlib.import_module(source)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (source == exc.name or source.startswith(exc.name + ".")):
            raise CustomObjectsError(
                f"Expected an importable module or a .py file for --custom-objects, got {source!r}, "
                f"which Python cannot find (no module named {exc.name!r}); pass a file by its "
                f"path ({source.replace('.', '/')}.py), or put its folder on PYTHONPATH"
            ) from exc
        raise CustomObjectsError(
            f"Could not import the module {source!r} for --custom-objects: {_reason(exc)}"
        ) from exc
    except (Exception, SystemExit) as exc:  # any failure of the user's code
        raise CustomObjectsError(
            f"Could not import the module {source!r} for --custom-objects: {_reason(exc)}"
        ) from exc
    logger.info("custom objects: imported the module %s", source)
    return module, CustomSource(kind="module", source=source)


def _unregistered_classes(module: ModuleType) -> dict[str, Any]:
    """The serializable classes (with ``get_config``) that ``module`` defines itself and did not
    register, by class name: Keras finds them by that name in its custom objects. Registered
    ones are found by their registered name already; functions and imported names are left out,
    so that nothing shadows one of Keras's own activations or layers."""
    from keras_edge.exporter import _tf

    registered = _tf.keras().saving.get_registered_name
    return {
        name: value
        for name, value in vars(module).items()
        if isinstance(value, type)
        and value.__module__ == module.__name__
        and hasattr(value, "get_config")
        and registered(value) == value.__name__
    }


@dataclass(frozen=True)
class Imported:
    """The imported code: ``objects`` to give Keras by name, ``records`` for the manifest."""

    objects: dict[str, Any]
    records: tuple[CustomSource, ...]


def import_code(code: CustomCode) -> Imported:
    """Run every source of ``code`` in order, or raise :class:`CustomObjectsError` (exit 2)
    naming the one that failed and why."""
    objects: dict[str, Any] = {}
    records: list[CustomSource] = []
    for source in code.sources:
        module, record = _import_file(source) if _is_file(source) else _import_module(source)
        objects.update(_unregistered_classes(module))
        records.append(record)
    for name, value in code.objects:
        objects[name] = value
        records.append(CustomSource(kind="object", source=name))
    return Imported(objects=objects, records=tuple(records))


@contextlib.contextmanager
def scope(objects: Mapping[str, Any]) -> Iterator[None]:
    """Keras's custom-object scope with ``objects`` (this thread only), around a load."""
    if not objects:
        yield
        return
    from keras_edge.exporter import _tf

    with _tf.keras().saving.custom_object_scope(dict(objects)):
        yield


def missing_object(message: str) -> tuple[str, str] | None:
    """(``class`` or ``function``, its name) when Keras's ``message`` says it could not find a
    custom object; else None."""
    found = _MISSING.search(plain(message))
    return (found.group(1), found.group(2)) if found else None


def load(path: str | Path, safe_mode: bool, imported: Imported) -> Any:
    """Load the model at ``path`` with the imported code in scope; a class or function that is
    still missing is one clear line naming it and ``--custom-objects``."""
    from keras_edge.exporter import model as model_io

    try:
        with scope(imported.objects):
            return model_io.load_model(path, safe_mode)
    except UsageError as exc:
        missing = missing_object(str(exc))
        if missing is None:
            raise
        kind, name = missing
        given = (
            f"none of {[r.source for r in imported.records]} defines or registers it"
            if imported.records
            else "no custom code was imported"
        )
        raise CustomObjectsError(
            f"Could not load the Keras model {str(path)!r}: it uses the custom {kind} {name!r}, and "
            f"{given}; pass the .py file or module that defines it with --custom-objects FILE.py "
            f"(custom_objects= in Python)"
        ) from exc


def load_model(path: str | Path, safe_mode: bool = True, custom_objects: Any = None) -> Any:
    """The public loader (``keras_edge.exporter.load_model``): the model at ``path`` (a
    ``.keras``/``.h5`` file or a SavedModel folder), with ``custom_objects`` (.py files, module
    names, or a dict ``{name: object}``) imported first and in scope, Keras safe mode on unless
    ``safe_mode=False``."""
    return load(path, safe_mode, import_code(CustomCode.parse(custom_objects)))


def import_custom_objects(custom_objects: Any) -> dict[str, Any]:
    """Import ``custom_objects`` (.py files, module names, or a dict) and return what Keras's
    ``custom_objects=`` takes: the serializable classes they define, by name."""
    return dict(import_code(CustomCode.parse(custom_objects)).objects)
