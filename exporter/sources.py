"""What ``export()`` is given, as the functional Keras 3 model the rest of the export reads.

A path is a ``.keras`` / ``.h5`` file or a SavedModel folder (:mod:`.savedmodel`). A model object
is a functional Keras 3 model (used as it is), a built subclassed Keras 3 model (wrapped in a
functional model from the input shape it was built with), or a Keras 2 (``tf_keras``) model
(saved to a temporary SavedModel and read through its serving signature). The source's identity
(name, SHA-256, whether it was trained from logits) is read from what the user gave, not from
the wrapper.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keras_edge.exporter import _tf, savedmodel
from keras_edge.exporter import model as model_io
from keras_edge.exporter.errors import UnsupportedModelError
from keras_edge.runtime.errors import UsageError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Source:
    """The functional Keras 3 model to export, and what identifies the source it came from."""

    model: Any
    name: str
    sha256: str
    from_logits: bool


def resolve(source: str | Path | Any, safe_mode: bool = True, load: Any = None) -> Source:
    """``source`` (a path or a model object) as a :class:`Source`, or a typed error saying what
    was received and what to do. ``load(path, safe_mode)`` loads a path (default
    :func:`keras_edge.exporter.model.load_model`; the export's loads with the user's code in
    scope)."""
    if isinstance(source, (str, Path)):
        model = (load or model_io.load_model)(source, safe_mode)  # a file, or a SavedModel folder
        return Source(model, str(model.name), model_io.source_sha256(source, model),
                      model_io.trained_from_logits(model, source))  # fmt: skip
    if _is_tf_keras(source):
        model = _from_tf_keras(source)
    elif _is_keras(source):
        model = source if _is_functional(source) else _wrap_subclassed(source)
    else:
        raise UsageError(
            f"Expected a .keras/.h5 path, a SavedModel folder or a keras.Model, got "
            f"{type(source).__module__}.{type(source).__name__}"
        )
    return Source(model, str(source.name), _object_sha256(source),
                  model_io.trained_from_logits(source))  # fmt: skip


def _is_keras(obj: Any) -> bool:
    keras = _tf.keras()
    return isinstance(obj, keras.Model)


def _is_tf_keras(obj: Any) -> bool:
    """A Keras 2 model, from the ``tf_keras`` package (or TensorFlow's bundled Keras 2), checked
    by module so that ``tf_keras`` is never imported for a Keras 3 model."""
    return any(
        c.__module__.split(".")[0] in ("tf_keras", "tensorflow")
        for c in type(obj).__mro__
        if c.__name__ == "Model"
    )


def _is_functional(model: Any) -> bool:
    """A Keras 3 model with symbolic inputs and outputs (functional or Sequential with an Input)."""
    try:
        return bool(model.inputs) and bool(model.outputs)
    except (AttributeError, ValueError):
        return False


def _wrap_subclassed(model: Any) -> Any:
    """A functional model around a built subclassed model, from the input shape it was built
    with (``get_build_config``): float32 features of shape (None, features...)."""
    keras = _tf.keras()
    what = f"the subclassed model {model.name!r} ({type(model).__name__})"
    hint = (
        "build it first (call it on a batch, fit it, or model.build((None, features))), or wrap it "
        "yourself: inputs = keras.Input(shape, dtype=...); keras.Model(inputs, model(inputs))"
    )
    if not model.built:
        raise UnsupportedModelError(f"Expected a built model, got {what}, never built or called; {hint}")
    config = model.get_build_config() or {}
    shape = config.get("input_shape")
    if len(config) != 1 or not _is_shape(shape):
        raise UnsupportedModelError(
            f"Expected {what} to have been built on one input of shape (batch, features...), got "
            f"build config {config}; {hint}"
        )
    feature_shape = tuple(shape[1:])
    if not feature_shape or any(d is None for d in feature_shape):
        raise UnsupportedModelError(
            f"Expected {what} to have been built with every feature dimension known, got input "
            f"shape {tuple(shape)}; {hint}"
        )
    with _tf.captured_output():
        inputs = keras.Input(shape=feature_shape, dtype="float32", name="input")
        wrapped = keras.Model(inputs, model(inputs, training=False), name=model.name)
    logger.info("wrapped %s in a functional model with input shape (None, %s)", what,
                ", ".join(map(str, feature_shape)))  # fmt: skip
    return wrapped


def _is_shape(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and all(d is None or isinstance(d, int) for d in value)


def _from_tf_keras(model: Any) -> Any:
    """A Keras 2 model through a temporary SavedModel: its serving signature, gated like any
    SavedModel folder. Keras 3 cannot call a Keras 2 model's layers, but it can call the graph
    TensorFlow saves from it."""
    tf = _tf.tensorflow()
    what = f"the Keras 2 (tf_keras) model {model.name!r} ({type(model).__name__})"
    if not getattr(model, "built", False):
        raise UnsupportedModelError(
            f"Expected a built model, got {what}, never built or called; call it on a batch or "
            f"fit it first"
        )
    with tempfile.TemporaryDirectory(prefix="keras-edge-tf-keras-") as folder:
        try:
            with _tf.captured_output():
                tf.saved_model.save(model, folder)
        except Exception as exc:  # TensorFlow's saver raises many untyped errors
            from keras_edge.exporter.errors import first_error

            raise UnsupportedModelError(
                f"Could not save {what} as a SavedModel to read it ({first_error(str(exc))}); save "
                f"it yourself with model.save(folder) and export that folder"
            ) from exc
        wrapped = savedmodel.load(folder, name=str(model.name))  # variables read into memory
    logger.info("read %s through a SavedModel's serving signature", what)
    return wrapped


def _object_sha256(model: Any) -> str:
    """The in-memory model's SHA-256 (config and weights); a subclassed model that cannot give
    its config is identified by its class and weights."""
    try:
        return model_io.source_sha256(model, model)
    except (NotImplementedError, TypeError, ValueError) as exc:
        logger.debug("no config for %s (%s): hashing its class and weights", model.name, exc)
    import hashlib

    import numpy as np

    digest = hashlib.sha256(f"{type(model).__module__}.{type(model).__qualname__}".encode())
    for weight in model.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()
