"""Load a Keras model safely and read what it is: its input and its head."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from keras_edge.exporter import _tf, head_check
from keras_edge.exporter.errors import UnsafeModelError, UnsupportedModelError
from keras_edge.exporter.structure import Structure
from keras_edge.exporter.structure import read as read_structure
from keras_edge.runtime.errors import InputError, UsageError
from keras_edge.runtime.inputs import check_integers
from keras_edge.runtime.manifest import INPUT_DTYPES, Head, InputSpec

logger = logging.getLogger(__name__)

MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
HEAD_CHOICES = head_check.HEADS


def load_model(path: str | Path, safe_mode: bool = True) -> Any:
    """Load a ``.keras`` or legacy ``.h5`` model with Keras safe mode on unless told otherwise;
    a folder is read as a SavedModel through its serving signature (:mod:`.savedmodel`)."""
    path = Path(path)
    if path.is_dir():
        from keras_edge.exporter import savedmodel

        return savedmodel.load(path)
    if path.suffix not in MODEL_SUFFIXES:
        raise UsageError(
            f"Expected a Keras model file ending in {', '.join(MODEL_SUFFIXES)} or a SavedModel "
            f"folder, got {str(path)!r}"
        )
    if not path.is_file():
        raise UsageError(f"Expected a Keras model file at {str(path)!r}, found none")
    keras = _tf.keras()  # first: without the export extra, that is what to say
    check_container(path)
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


def check_container(path: Path) -> None:
    """Refuse a model file that is not the container its suffix names: a ``.keras`` file is a
    zip archive, a ``.h5``/``.hdf5`` file HDF5 (Keras calls either a missing file otherwise)."""
    size = path.stat().st_size
    if path.suffix == ".keras":
        expected, what, ok = "a Keras zip archive", "a zip archive", zipfile.is_zipfile(path)
    else:
        expected, what, ok = "an HDF5 file", "HDF5", _is_hdf5(path, size)
    if size == 0 or not ok:
        got = "an empty file (0 bytes)" if size == 0 else f"{size:,} bytes that are not {what}"
        raise UsageError(f"Expected {expected} in {str(path)!r}, got {got}")


def _is_hdf5(path: Path, size: int) -> bool:
    """True when the HDF5 signature is at offset 0, or at 512, 1024, 2048, ... (after a user
    block), as the HDF5 format places it."""
    with path.open("rb") as f:
        offset = 0
        while offset + len(HDF5_SIGNATURE) <= size:
            f.seek(offset)
            if f.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE:
                return True
            offset = 512 if offset == 0 else offset * 2
    return False


def source_sha256(source: str | Path | Any, model: Any) -> str:
    """SHA-256 of the model file (of a SavedModel folder's files, in sorted order); for an
    in-memory model, of its config and weights."""
    if isinstance(source, (str, Path)) and Path(source).is_dir():
        from keras_edge.exporter.savedmodel import folder_sha256

        return folder_sha256(source)
    if isinstance(source, (str, Path)):
        from keras_edge.runtime.manifest import sha256_file

        return sha256_file(source)
    digest = hashlib.sha256(json.dumps(model.get_config(), sort_keys=True, default=str).encode())
    for weight in model.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()


def _embedding_range(model: Any, tensor: Any) -> tuple[int, int] | None:
    """[0, input_dim - 1] when ``tensor`` feeds an Embedding layer directly: ids outside it
    make the engines fail or read out of bounds, so the runtime refuses them first."""
    for layer in model.layers:
        if type(layer).__name__ != "Embedding":
            continue
        for node in layer._inbound_nodes:
            if any(t is tensor for t in node.input_tensors):
                return (0, int(layer.input_dim) - 1)
    return None


def input_specs(model: Any, keys: tuple[str, ...] | None = None) -> tuple[InputSpec, ...]:
    """The model's inputs, in its order: a free batch dimension, known feature dimensions, and
    float32 features, int32/int64 token ids or uint8/int8 pixels. ``keys``: the names of a
    model that takes a dict of inputs (its keys, which name the inputs everywhere)."""
    specs = []
    for i, tensor in enumerate(model.inputs):
        shape = tuple(tensor.shape)
        name = keys[i] if keys is not None else (tensor.name.split(":")[0] or "input")
        if len(shape) < 2 or any(d is None for d in shape[1:]):
            raise UnsupportedModelError(
                f"Expected input {name!r} of shape (None, features...) with every feature "
                f"dimension known, got {shape}"
            )
        dtype = getattr(tensor.dtype, "name", None) or str(tensor.dtype)  # a tf.DType (tf_keras)
        if dtype not in INPUT_DTYPES:
            raise UnsupportedModelError(
                f"Expected input {name!r} to be float32, int32/int64 ids or uint8/int8 pixels, "
                f"got {dtype}"
            )
        bounds = _embedding_range(model, tensor) if dtype in ("int32", "int64") else None
        specs.append(
            InputSpec(name=name, shape=(None, *(int(d) for d in shape[1:])), dtype=dtype, range=bounds)
        )
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise UnsupportedModelError(f"Expected distinct input names, got {names}")
    return tuple(specs)


Inputs = tuple[np.ndarray, ...]  # one array per model input, in the model's order


def as_inputs(
    x: Any, specs: tuple[InputSpec, ...], what: str, error: type[UsageError] = UsageError
) -> Inputs:
    """``x`` (an array for a one-input model; a dict by input name or a list in order for
    several) as checked model inputs, or ``error``: float32 and finite for features, integers
    in range for token ids, every input with the same number of samples n >= 1."""
    names = [s.name for s in specs]
    if isinstance(x, dict):
        if sorted(map(str, x)) != sorted(names):
            raise error(f"Expected {what} arrays named {names}, got {sorted(map(str, x))}")
        arrays = [x[n] for n in names]
    elif len(specs) > 1:
        if not isinstance(x, (list, tuple)) or len(x) != len(specs):
            raise error(
                f"Expected {what} data as a dict {{name: array}} or a list of {len(specs)} arrays "
                f"in the order {names}, got {type(x).__name__}"
            )
        arrays = list(x)
    else:
        arrays = [x]
    out = []
    for spec, array in zip(specs, arrays, strict=True):
        array = np.asarray(array)
        label = what if len(specs) == 1 else f"{what} input {spec.name!r}"
        expected = f"(None, {', '.join(map(str, spec.feature_shape))})"
        if array.shape[1:] != spec.feature_shape:
            raise error(f"Expected {label} data of shape {expected}, got {array.shape}")
        if len(array) == 0:
            raise error(f"Expected at least one {label} sample, got 0")
        if spec.is_float:
            if array.dtype.kind not in "fiu":
                raise error(f"Expected numeric {label} data, got dtype {array.dtype}")
            array = array.astype(np.float32)
            if not np.isfinite(array).all():
                raise error(f"Expected finite {label} data, got NaN or Inf")
        elif spec.is_pixels:
            try:
                array = check_integers(array, spec)
            except InputError as exc:
                raise error(f"{exc} in the {what} data") from exc
        else:
            if array.dtype.kind not in "iu":
                raise error(f"Expected integer ids for {label}, got dtype {array.dtype}")
            low, high = spec.range or (np.iinfo(spec.dtype).min, np.iinfo(spec.dtype).max)
            if array.min() < low or array.max() > high:
                raise error(
                    f"Expected {label} ids in [{low}, {high}], got values from {array.min()} to "
                    f"{array.max()}"
                )
            array = array.astype(spec.dtype)
        out.append(np.ascontiguousarray(array))
    if len({len(a) for a in out}) > 1:
        raise error(
            f"Expected the same number of {what} samples in every input, got {[len(a) for a in out]}"
        )
    return tuple(out)


# Layers that pass the head's values through unchanged: the head is the layer before them.
PASS_THROUGH = frozenset(
    {"Reshape", "Flatten", "Dropout", "Identity", "SpatialDropout1D", "GaussianNoise",
     "GaussianDropout", "AlphaDropout", "ActivityRegularization", "Permute"}
)  # fmt: skip


def _previous(tensor: Any) -> tuple[Any, int, int]:
    """The operation (layer or nested model) that produced ``tensor``, its node, and which of
    its outputs ``tensor`` is."""
    history = tensor._keras_history
    return history.operation, history.node_index, history.tensor_index


def _activation_name(model: Any, index: int = 0) -> str:
    """The activation of the layer that makes output ``index``, looking through a trailing
    Reshape, Flatten, Dropout or other pass-through layer and into a nested model; a trailing
    ``Activation`` layer is the head's activation."""
    op, node_index, which = _previous(model.outputs[index])
    for _ in range(100):  # a model is finite; the bound only guards against a malformed graph
        name = type(op).__name__
        if hasattr(op, "outputs") and hasattr(op, "layers"):  # a nested model: the output used
            op, node_index, which = _previous(op.outputs[which])
            continue
        if name == "Softmax":
            return "softmax"
        activation = getattr(op, "activation", None)
        if activation is not None:
            return getattr(activation, "__name__", str(activation))
        if name not in PASS_THROUGH:
            return "linear"
        inputs = op._inbound_nodes[node_index].input_tensors
        if len(inputs) != 1:
            return "linear"
        op, node_index, which = _previous(inputs[0])
    return "linear"


def _head_activation(model: Any, index: int = 0) -> str:
    """The head's activation from the layers; where they say linear, from the traced graph,
    which sees a sigmoid in a subclassed model's call(), in a SavedModel, or after a
    Concatenate of sigmoid heads."""
    activation = _activation_name(model, index)
    if activation == "linear":
        from keras_edge.exporter import graph_head

        activation = graph_head.output_activation(model, index)
        if activation != "linear":
            logger.info("head: the layers end linear, the graph ends in %s", activation)
    return activation


def trained_from_logits(model: Any, source: Any = None) -> bool:
    """True when the model was compiled with a loss that takes logits (``from_logits=True``):
    from the compiled model, or from the ``.keras`` file's compile config (a model loaded with
    ``compile=False`` keeps none)."""
    loss = getattr(model, "loss", None)
    if loss is not None:
        config = loss.get_config() if hasattr(loss, "get_config") else {}
        return bool(getattr(loss, "from_logits", config.get("from_logits", False)))
    if isinstance(source, (str, Path)) and Path(source).suffix == ".keras":
        import zipfile

        try:
            with zipfile.ZipFile(source) as archive:
                config = json.loads(archive.read("config.json"))
        except (OSError, KeyError, ValueError, zipfile.BadZipFile):
            return False
        return '"from_logits": true' in json.dumps((config.get("compile_config") or {}).get("loss"))
    return False


def infer_head(
    model: Any,
    head: str | dict[str, str] = "auto",
    threshold: Any = 0.5,
    labels: Any = None,
    from_logits: bool = False,
    min_confidence: Any = None,
    structure: Structure | None = None,
) -> Head:
    """Read the head from the last layer: sigmoid is binary (1 unit) or multilabel (k units),
    softmax multiclass; a linear output is logits when the model was trained from logits
    (``from_logits``), else it needs a declared head (see :mod:`~keras_edge.exporter.head_check`,
    which checks a declaration against the activation here and against the outputs later).

    A model with several outputs has one head per output (:meth:`Head.several`); ``head``,
    ``threshold``, ``labels`` and ``min_confidence`` are then one value for every head or a
    dict by output name."""
    structure = structure or read_structure(model)
    names = structure.output_names
    if len(names) == 1:
        return _one_head(model, 0, head, threshold, labels, from_logits, min_confidence)
    per_head = {"head": head, "threshold": threshold, "labels": labels, "min_confidence": min_confidence}
    for option, value in per_head.items():
        if isinstance(value, dict) and set(map(str, value)) - set(names):
            raise UsageError(
                f"Expected {option} for the heads {list(names)}, got one for "
                f"{sorted(set(map(str, value)) - set(names))}"
            )
    if labels is not None and not isinstance(labels, dict):
        raise UsageError(
            f"Expected labels for a model with several heads by head name ({{name: [labels]}}; "
            f"--labels NAME=a,b,c in the CLI), got {labels!r}"
        )

    def of(value: Any, name: str, default: Any) -> Any:
        return value.get(name, default) if isinstance(value, dict) else value

    parts = []
    for i, name in enumerate(names):
        # A threshold named for a multiclass head is its minimum confidence (as predict takes
        # it); one minimum confidence for every head applies to the multiclass heads.
        confidence = of(min_confidence, name, None)
        if isinstance(threshold, dict) and name in threshold and not isinstance(min_confidence, dict):
            confidence = threshold[name] if confidence is None else confidence
        parts.append(_one_head(
            model, i, of(head, name, "auto"), of(threshold, name, 0.5), of(labels, name, None),
            from_logits, confidence, name, confidence_if_multiclass=True,
        ))  # fmt: skip
    if min_confidence is not None and not any(p.kind == "multiclass" for p in parts):
        raise UsageError(
            f"Expected --min-confidence only for a multiclass (softmax) head, got the heads "
            f"{[(p.name, p.kind) for p in parts]}"
        )
    return Head.several(tuple(parts), structure.outputs)


def _one_head(
    model: Any,
    index: int,
    head: str,
    threshold: float | list[float],
    labels: list[str] | None,
    from_logits: bool,
    min_confidence: float | None,
    name: str | None = None,
    confidence_if_multiclass: bool = False,
) -> Head:
    """The head of output ``index``, named ``name`` (one of several). With
    ``confidence_if_multiclass``, ``min_confidence`` is dropped for a head that is not
    multiclass (a value given for every head, or a threshold that is one)."""
    if head not in HEAD_CHOICES:
        raise UsageError(f"Expected head in {HEAD_CHOICES}, got {head!r}")
    where = "" if name is None else f" for head {name!r}"
    shape = tuple(model.outputs[index].shape)
    if len(shape) != 2:
        raise UnsupportedModelError(
            f"Expected {'output ' + repr(name) if name else 'one output'} of shape (None, units), "
            f"got {[tuple(o.shape) for o in model.outputs] if name is None else shape}"
        )
    units = int(shape[-1])
    try:
        kind, output = _kind(_head_activation(model, index), head, from_logits, units)
    except UsageError as exc:  # one of several heads: say which
        if name is None:
            raise
        raise type(exc)(f"Head {name!r}: {exc}") from exc
    if labels is None:
        labels = ["0", "1"] if kind == "binary" else [str(i) for i in range(units)]
    expected_labels = 2 if kind == "binary" else units
    if len(labels) != expected_labels:
        raise UsageError(f"Expected {expected_labels} labels for a {kind} head{where}, got {labels!r}")
    if confidence_if_multiclass and kind != "multiclass":
        min_confidence = None
    t = _threshold(kind, units, threshold, min_confidence)
    result = Head(kind=kind, output=output, units=units, labels=tuple(labels), threshold=t, name=name)
    logger.info("head%s: %s %s, %d unit(s), threshold %s", where, kind, output, units, t)
    return result


def _kind(activation: str, head: str, from_logits: bool, units: int) -> tuple[str, str]:
    """(kind, output) of a head from the last activation and the head the user declared."""
    return head_check.kind_of(activation, head, from_logits, units)


def _threshold(
    kind: str, units: int, threshold: float | list[float], min_confidence: float | None
) -> float | tuple[float, ...] | None:
    """The head's threshold: one number (binary), one per label (multilabel), the minimum
    confidence or None (multiclass), None (regression)."""
    t: float | tuple[float, ...] | None = None
    if kind == "binary":
        if isinstance(threshold, (list, tuple)):
            raise UsageError(f"Expected one threshold for a binary head, got {threshold!r}")
        t = float(threshold)
    elif kind == "multilabel":
        seq = threshold if isinstance(threshold, (list, tuple)) else [threshold] * units
        t = tuple(float(v) for v in seq)
    if min_confidence is not None:
        if kind != "multiclass":
            raise UsageError(
                f"Expected --min-confidence only for a multiclass (softmax) head, got a {kind} head; "
                f"use --threshold"
            )
        t = float(min_confidence) if isinstance(min_confidence, (int, float)) else math.nan
        if not 0.0 < t < 1.0:
            raise UsageError(
                f"Expected --min-confidence strictly between 0 and 1, got {min_confidence!r}"
            )
    return t


def keras_outputs(model: Any, x: Any, structure: Structure | None = None) -> np.ndarray:
    """The Keras model's raw output for ``x`` (an array, or a list with one per input in the
    model's order), float32; for several outputs, every output side by side in the model's
    output order (what the converted artifacts' one output holds)."""
    structure = structure or read_structure(model)
    xs = tuple(x) if isinstance(x, (list, tuple)) else (x,)
    if len(xs[0]) == 0:
        units = sum(int(o.shape[-1]) for o in model.outputs)
        return np.empty((0, units), dtype=np.float32)
    if structure.input_keys is not None:
        feed: Any = dict(zip(structure.input_keys, xs, strict=True))
    else:
        feed = xs[0] if len(xs) == 1 else list(xs)
    result = model.predict(feed, batch_size=1024, verbose=0)
    if isinstance(result, dict):
        result = [result[name] for name in structure.output_names]
    if isinstance(result, (list, tuple)):
        return np.hstack([np.asarray(r, dtype=np.float32).reshape(len(xs[0]), -1) for r in result])
    return np.asarray(result, dtype=np.float32)


def keras_labels(model: Any, head: Head, x: np.ndarray) -> np.ndarray | None:
    """Keras's decisions on ``x`` by the runtime's rule, as an (n, k) int array (k = 1 for
    binary and multiclass); ``None`` for a regression head, which decides nothing."""
    from keras_edge.runtime.gate import decide, to_probability

    if head.kind == "regression":
        return None
    return decide(head, to_probability(head, keras_outputs(model, x)), head.threshold)
