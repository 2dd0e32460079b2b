"""A TensorFlow SavedModel folder as a Keras model, through its serving signature.

Keras 3 cannot ``load_model`` a SavedModel folder, but it can call one: ``keras.layers.TFSMLayer``
runs the folder's ``serving_default`` function. The folder becomes a functional ``keras.Model``
whose inputs and outputs are the signature's (names, shapes, dtypes; a dict of them when there
are several),
so the rest of the export (the converters, Keras's reference answers through ``predict``) runs
unchanged, and every variant is gated against the SavedModel's own serving function.

Folders written by Keras 3's ``model.export(path, format="tf_saved_model")``, by
``tf.saved_model.save(model, path)`` and by a Keras 2 (``tf_keras``) ``model.save(folder)`` all
carry that signature.
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path
from typing import Any

from keras_edge.exporter import _tf
from keras_edge.exporter.errors import UnsupportedModelError
from keras_edge.runtime.errors import UsageError

logger = logging.getLogger(__name__)

SIGNATURE = "serving_default"
SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")


def is_saved_model(path: str | Path) -> bool:
    """True when ``path`` is a folder holding ``saved_model.pb`` (or ``.pbtxt``)."""
    path = Path(path)
    return path.is_dir() and any((path / name).is_file() for name in SAVED_MODEL_FILES)


def folder_sha256(path: str | Path) -> str:
    """SHA-256 over every file of the folder in sorted order of their relative paths (each path,
    its size, then its bytes): the same folder gives the same digest wherever it lies."""
    root = Path(path)
    digest = hashlib.sha256()
    files = {p.relative_to(root).as_posix(): p for p in root.rglob("*") if p.is_file()}
    for name in sorted(files):
        file, relative = files[name], name.encode()
        digest.update(len(relative).to_bytes(8, "big") + relative)
        digest.update(file.stat().st_size.to_bytes(8, "big"))
        with file.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def load(path: str | Path, name: str | None = None) -> Any:
    """The SavedModel folder ``path`` as a functional ``keras.Model`` calling its serving
    signature, or a typed error: not a SavedModel (UsageError), no ``serving_default``
    signature, unnamed inputs or outputs (UnsupportedModelError). Several inputs or outputs
    become a dict of them by the signature's names. ``name`` names the model (else the
    folder's name)."""
    path = Path(path)
    if not is_saved_model(path):
        held = sorted(p.name for p in path.iterdir())[:8] if path.is_dir() else []
        raise UsageError(
            f"Expected a SavedModel folder (holding saved_model.pb) or a Keras model file ending "
            f"in .keras, .h5, got the folder {str(path)!r} holding {held or 'nothing'}"
        )
    tf = _tf.tensorflow()
    keras = _tf.keras()
    try:
        with _tf.captured_output():
            loaded = tf.saved_model.load(str(path))
    except Exception as exc:  # TensorFlow's loader raises many untyped errors
        from keras_edge.exporter.errors import first_error

        message = first_error(str(exc))
        raise UsageError(f"Could not load the SavedModel {str(path)!r}: {message}") from exc
    signatures = sorted(loaded.signatures.keys())
    if SIGNATURE not in signatures:
        raise UnsupportedModelError(
            f"Expected a {SIGNATURE!r} signature in the SavedModel {str(path)!r} (it is what "
            f"keras-edge exports and checks against), got signatures {signatures}; save it with "
            f"tf.saved_model.save(model, path, signatures=...) or Keras's model.export(path)"
        )
    function = loaded.signatures[SIGNATURE]
    args, kwargs = function.structured_input_signature
    specs = dict(kwargs)
    outputs = function.structured_outputs
    if args or not specs:
        raise UnsupportedModelError(
            f"Expected the {SIGNATURE!r} signature of {str(path)!r} to take named inputs, got "
            f"{args} and {specs}"
        )
    if not isinstance(outputs, dict) or not outputs:
        raise UnsupportedModelError(
            f"Expected named outputs in the {SIGNATURE!r} signature of {str(path)!r}, got "
            f"{type(outputs).__name__}"
        )
    for input_name, spec in specs.items():
        if spec.shape.rank is None or spec.shape.rank < 2:
            raise UnsupportedModelError(
                f"Expected the {SIGNATURE!r} input {input_name!r} of {str(path)!r} to have shape "
                f"(None, features...), got {spec.shape}"
            )
    with _tf.captured_output():
        layer = _signature_layer(keras)(str(path), call_endpoint=SIGNATURE, name="saved_model")
        inputs = {
            input_name: keras.Input(shape=tuple(spec.shape[1:]), dtype=spec.dtype.name, name=input_name)
            for input_name, spec in sorted(specs.items())
        }
        feed = next(iter(inputs.values())) if len(inputs) == 1 else inputs
        result = layer(feed)
        if not isinstance(result, dict):
            result = {next(iter(outputs)): result}
        # One input and one output stay plain tensors; several are named, as the signature names
        # them (the export then matches data to inputs and heads to outputs by those names).
        model_inputs = feed if len(inputs) == 1 else inputs
        single = result[next(iter(outputs))] if len(outputs) == 1 else None
        model_outputs = single if single is not None else dict(sorted(result.items()))
        model = keras.Model(model_inputs, model_outputs, name=name or _model_name(path))
    logger.info(
        "loaded the SavedModel %s through %r: inputs %s, outputs %s", path, SIGNATURE,
        {k: (v.dtype.name, tuple(v.shape)) for k, v in sorted(specs.items())},
        {k: tuple(v.shape) for k, v in sorted(outputs.items())},
    )  # fmt: skip
    return model


def _signature_layer(keras: Any) -> Any:
    """``TFSMLayer`` calling the signature with its inputs by name: the stock layer passes a
    dict of several inputs as one positional argument, which a signature of named inputs
    refuses."""

    class SignatureLayer(keras.layers.TFSMLayer):  # type: ignore[misc, name-defined]
        def call(self, inputs: Any, training: bool = False, **kwargs: Any) -> Any:
            if isinstance(inputs, dict):
                return self.call_endpoint_fn(**inputs, **kwargs)
            return super().call(inputs, training=training, **kwargs)

    return SignatureLayer


def _model_name(path: Path) -> str:
    """A Keras-safe name from the folder's name ('my model/' -> 'my_model')."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", path.absolute().name).strip("_")
    return name or "saved_model"
