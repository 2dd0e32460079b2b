"""The copy of a model the converters get when it has recurrent layers: their loops unrolled.

A Keras recurrent layer (LSTM, GRU, SimpleRNN, ``RNN`` over a cell) runs a ``while`` loop over
the time steps, which TensorFlow writes with TensorList ops: LiteRT runs those only through
Select TF ops (Flex, a TensorFlow runtime the device does not have) and tf2onnx has no ONNX form
for them. Over a sequence of known length the same layer with ``unroll=True`` is plain matrix
products, one per step, that every variant converts and quantizes, with the same weights and
the same math. The layers are found wherever their configuration holds them: at the top of the
model, inside wrappers (``Bidirectional``, ``TimeDistributed``) and inside nested models; a
mask (``Embedding(mask_zero=True)``) is kept, the unrolled step selects with it as the loop does.

The copy is checked against the original model on the parity inputs before anything is
converted (:func:`check_copy`), and every variant is then gated against the ORIGINAL model's
answers: the copy never becomes the reference.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from keras_edge.exporter import _tf
from keras_edge.exporter.errors import ConversionError

logger = logging.getLogger(__name__)

# The unrolled copy's raw outputs may differ from the loop's by float rounding only (the same
# ops, in the same order): more than this, relative to the output's size, is a bug.
COPY_TOLERANCE = 1e-4
# Parity samples the copy is checked on before conversion (the gate later checks every one).
COPY_CHECK_SAMPLES = 512


@dataclass(frozen=True)
class Conversion:
    """The model the converters get, and the layers unrolled in it (empty: the model itself)."""

    model: Any
    unrolled: tuple[str, ...] = ()


def _is_loop(config: Any) -> bool:
    """A recurrent layer's configuration with its loop kept (``unroll`` false)."""
    return isinstance(config, dict) and config.get("unroll") is False and "return_sequences" in config


def _loops(config: Any) -> list[str]:
    """Class names of the recurrent layers in a layer's configuration, nested ones included
    (a Bidirectional's ``layer`` and ``backward_layer``, a nested model's ``layers``)."""
    found: list[str] = []
    if isinstance(config, dict):
        inner = config.get("config")
        if isinstance(config.get("class_name"), str) and _is_loop(inner):
            found.append(config["class_name"])
        for value in config.values():
            found += _loops(value)
    elif isinstance(config, list):
        for value in config:
            found += _loops(value)
    return found


def _unrolled(config: Any) -> Any:
    """``config`` with every recurrent layer's ``unroll`` set, at any depth (a copy)."""
    if isinstance(config, dict):
        out = {key: _unrolled(value) for key, value in config.items()}
        if _is_loop(config):
            out["unroll"] = True
        return out
    if isinstance(config, list):
        return [_unrolled(value) for value in config]
    return config


def _label(layer: Any, loops: list[str]) -> str:
    kind = type(layer).__name__
    inner = sorted(set(loops) - {kind})
    return f"{layer.name!r} ({kind}{' of ' + ', '.join(inner) if inner else ''})"


def for_conversion(model: Any) -> Conversion:
    """``model`` itself, or, when it holds recurrent layers that loop, a copy with those loops
    unrolled and the same weights. A model that cannot be copied so (a subclassed model, a
    sequence of unknown length, a layer whose configuration does not rebuild it) is returned
    as it is: the converters then refuse its loop by name, variant by variant."""
    found: dict[str, list[str]] = {}
    for layer in getattr(model, "layers", []):
        try:
            config = layer.get_config()
        except (NotImplementedError, TypeError):  # a custom layer without get_config
            continue
        loops = ([type(layer).__name__] if _is_loop(config) else []) + _loops(config)
        if loops:
            found[layer.name] = loops
    if not found:
        return Conversion(model)
    keras = _tf.keras()
    labels = tuple(_label(model.get_layer(name), loops) for name, loops in found.items())

    def unrolled(layer: Any) -> Any:
        if layer.name not in found:
            return layer.__class__.from_config(layer.get_config())
        return layer.__class__.from_config(_unrolled(layer.get_config()))

    try:
        with _tf.captured_output():
            copy = keras.models.clone_model(model, clone_function=unrolled)
            copy.set_weights(model.get_weights())
    except (ValueError, TypeError, NotImplementedError, AttributeError) as exc:
        logger.warning(
            "recurrent layer(s) %s could not be unrolled (%s): converting the model as it is, "
            "its loops may be refused", ", ".join(labels), " ".join(str(exc).split())[:300],
        )  # fmt: skip
        return Conversion(model)
    logger.info("unrolled %s for conversion (a copy, same weights)", ", ".join(labels))
    return Conversion(copy, labels)


def check_copy(original: Any, conversion: Conversion, xs: tuple[np.ndarray, ...]) -> None:
    """Raise :class:`ConversionError` when the unrolled copy answers differently from
    ``original`` on the first ``COPY_CHECK_SAMPLES`` of ``xs`` (a bug in the copy: the loop and
    the unrolled steps are the same math). Nothing to check when nothing was unrolled."""
    if not conversion.unrolled or len(xs[0]) == 0:
        return
    feed: Any = [x[:COPY_CHECK_SAMPLES] for x in xs]
    feed = feed[0] if len(feed) == 1 else feed
    want = _outputs(original, feed)
    got = _outputs(conversion.model, feed)
    diff = float(np.abs(got - want).max())
    allowed = COPY_TOLERANCE * max(1.0, float(np.abs(want).max()))
    if not diff <= allowed:  # NaN fails too
        raise ConversionError(
            f"Expected the unrolled copy of {', '.join(conversion.unrolled)} to answer as the "
            f"model does (largest difference at most {allowed:.3g}), got {diff:.3g} on "
            f"{len(want)} samples: nothing was converted"
        )
    logger.info("unrolled copy answers as the model (largest difference %.3g)", diff)


def _outputs(model: Any, feed: Any) -> np.ndarray:
    with _tf.captured_output():
        out = model.predict(feed, batch_size=1024, verbose=0)
    if isinstance(out, dict):
        out = [out[key] for key in sorted(out)]
    if isinstance(out, (list, tuple)):
        return np.concatenate([np.asarray(o, np.float32).reshape(len(o), -1) for o in out], axis=1)
    return np.asarray(out, dtype=np.float32)
