"""Load a Keras model safely and read what it is: its input and its head."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from keras_edge.exporter import _tf
from keras_edge.exporter.errors import UnsafeModelError, UnsupportedModelError
from keras_edge.runtime.errors import UsageError
from keras_edge.runtime.manifest import Head, InputSpec

logger = logging.getLogger(__name__)

MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")
HEAD_CHOICES = ("auto", "logit", "regression")


def load_model(path: str | Path, safe_mode: bool = True) -> Any:
    """Load a ``.keras`` or legacy ``.h5`` model with Keras safe mode on unless told otherwise."""
    path = Path(path)
    if path.suffix not in MODEL_SUFFIXES:
        raise UsageError(
            f"Expected a Keras model file ending in {', '.join(MODEL_SUFFIXES)}, got {str(path)!r}"
            + (" (Keras 3 cannot load a SavedModel folder)" if path.is_dir() else "")
        )
    if not path.is_file():
        raise UsageError(f"Expected a Keras model file at {str(path)!r}, found none")
    keras = _tf.keras()
    try:
        with _tf.captured_output():
            model = keras.models.load_model(path, compile=False, safe_mode=safe_mode)
    except ValueError as exc:
        if "safe_mode" in str(exc):
            raise UnsafeModelError(
                f"{str(path)!r} holds code that Keras safe mode refuses to run (e.g. a Lambda "
                f"layer). If you trust the file, opt in with --unsafe (CLI) or safe_mode=False "
                f"(Python)"
            ) from exc
        raise UsageError(f"Could not load the Keras model {str(path)!r}: {exc}") from exc
    except (OSError, TypeError, KeyError) as exc:
        raise UsageError(f"Could not load the Keras model {str(path)!r}: {exc}") from exc
    logger.info("loaded %s (%s, %d parameters)", path, model.name, model.count_params())
    return model


def source_sha256(source: str | Path | Any, model: Any) -> str:
    """SHA-256 of the model file; for an in-memory model, of its config and weights."""
    if isinstance(source, (str, Path)):
        from keras_edge.runtime.manifest import sha256_file

        return sha256_file(source)
    digest = hashlib.sha256(json.dumps(model.get_config(), sort_keys=True, default=str).encode())
    for weight in model.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()


def input_spec(model: Any) -> InputSpec:
    """The model's single input, with a free batch dimension and known feature dimensions."""
    inputs = model.inputs
    if len(inputs) != 1:
        raise UnsupportedModelError(
            f"Expected a model with exactly one input, got {len(inputs)}: {[i.name for i in inputs]}"
        )
    tensor = inputs[0]
    shape = tuple(tensor.shape)
    if len(shape) < 2 or any(d is None for d in shape[1:]):
        raise UnsupportedModelError(
            f"Expected an input shape (None, features...) with every feature dimension known, "
            f"got {shape}"
        )
    dtype = str(tensor.dtype)
    if dtype != "float32":
        raise UnsupportedModelError(f"Expected a float32 model input, got {dtype}")
    name = tensor.name.split(":")[0] or "input"
    return InputSpec(name=name, shape=(None, *(int(d) for d in shape[1:])), dtype=dtype)


def as_inputs(
    x: Any, feature_shape: tuple[int, ...], what: str, error: type[UsageError] = UsageError
) -> np.ndarray:
    """``x`` as finite float32 model inputs of shape (n >= 1, *feature_shape), or ``error``."""
    x = np.asarray(x)
    if x.dtype.kind not in "fiu":
        raise error(f"Expected numeric {what} data, got dtype {x.dtype}")
    x = x.astype(np.float32)
    if x.shape[1:] != feature_shape:
        raise error(
            f"Expected {what} data of shape (None, {', '.join(map(str, feature_shape))}), got {x.shape}"
        )
    if len(x) == 0:
        raise error(f"Expected at least one {what} sample, got 0")
    if not np.isfinite(x).all():
        raise error(f"Expected finite {what} data, got NaN or Inf")
    return x


def _activation_name(model: Any) -> str:
    last = model.layers[-1]
    if type(last).__name__ == "Softmax":
        return "softmax"
    activation = getattr(last, "activation", None)
    return getattr(activation, "__name__", str(activation)) if activation is not None else "linear"


def infer_head(
    model: Any,
    head: str = "auto",
    threshold: float | list[float] = 0.5,
    labels: list[str] | None = None,
) -> Head:
    """Read the head from the last layer: sigmoid is binary (1 unit) or multilabel (k units),
    softmax multiclass; a linear output needs ``head='logit'`` or ``head='regression'``."""
    if head not in HEAD_CHOICES:
        raise UsageError(f"Expected head in {HEAD_CHOICES}, got {head!r}")
    if len(model.outputs) != 1 or len(model.outputs[0].shape) != 2:
        raise UnsupportedModelError(
            f"Expected one output of shape (None, units), got {[tuple(o.shape) for o in model.outputs]}"
        )
    units = int(model.outputs[0].shape[-1])
    activation = _activation_name(model)
    if activation == "sigmoid":
        kind, output = ("binary" if units == 1 else "multilabel"), "probability"
    elif activation == "softmax":
        kind, output = "multiclass", "probability"
    elif activation == "linear":
        if head == "auto":
            raise UnsupportedModelError(
                "The model ends in a linear output, so keras-edge cannot tell logits from "
                "regression values; say which with --head logit or --head regression "
                "(head='logit' / head='regression' in Python)"
            )
        if head == "logit":
            kind, output = ("binary" if units == 1 else "multilabel"), "logit"
        else:
            kind, output = "regression", "probability"
    else:
        raise UnsupportedModelError(
            f"Expected the last layer's activation to be sigmoid, softmax or linear, got {activation!r}"
        )
    if head != "auto" and activation != "linear":
        raise UsageError(
            f"--head {head} is for models with a linear output, but this one ends in {activation}"
        )
    if labels is None:
        labels = ["0", "1"] if kind == "binary" else [str(i) for i in range(units)]
    expected_labels = 2 if kind == "binary" else units
    if len(labels) != expected_labels:
        raise UsageError(f"Expected {expected_labels} labels for a {kind} head, got {labels!r}")
    t: float | tuple[float, ...] | None
    if kind == "binary":
        if isinstance(threshold, (list, tuple)):
            raise UsageError(f"Expected one threshold for a binary head, got {threshold!r}")
        t = float(threshold)
    elif kind == "multilabel":
        seq = threshold if isinstance(threshold, (list, tuple)) else [threshold] * units
        t = tuple(float(v) for v in seq)
    else:
        t = None
    result = Head(kind=kind, output=output, units=units, labels=tuple(labels), threshold=t)
    logger.info("head: %s %s, %d unit(s), threshold %s", kind, output, units, t)
    return result


def keras_outputs(model: Any, x: np.ndarray) -> np.ndarray:
    """The Keras model's raw output for ``x``, float32."""
    if len(x) == 0:
        return np.empty((0, int(model.outputs[0].shape[-1])), dtype=np.float32)
    return np.asarray(model.predict(x, batch_size=1024, verbose=0), dtype=np.float32)


def keras_labels(model: Any, head: Head, x: np.ndarray) -> np.ndarray | None:
    """Keras's decisions on ``x`` by the runtime's rule, as an (n, k) int array (k = 1 for
    binary and multiclass); ``None`` for a regression head, which decides nothing."""
    from keras_edge.exporter.parity import to_probability
    from keras_edge.runtime.gate import decide

    if head.kind == "regression":
        return None
    return decide(head, to_probability(head, keras_outputs(model, x)), head.threshold)
