"""Variants not written: why, in the manifest's ``refused``; and what the converter printed,
kept in ``logs/VARIANT.log`` beside the manifest with its last lines shown in a warning."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from keras_edge.exporter import _tf
from keras_edge.exporter.errors import UnsupportedOpError
from keras_edge.runtime.errors import plain

logger = logging.getLogger(__name__)

LOGS = "logs"  # what a converter printed when it failed, one file per variant
LOG_TAIL = 12  # lines of it shown in the warning


def record(
    vid: str, step: str, exc: Exception, model: Any, staging: Path, refused: dict[str, str],
    faults: list[str],
) -> None:  # fmt: skip
    """Record why ``vid`` is not written in ``refused``; a converter or engine fault (not a
    format's known limit) also goes into ``faults``, which makes the export exit 1 after
    writing the rest. What the converter printed (or, when nothing was captured, its whole
    message) is kept in ``logs/VARIANT.log`` and its last lines shown."""
    unsupported = isinstance(exc, UnsupportedOpError)
    text = " ".join(plain(str(exc)).split())
    refused[vid] = text if unsupported else f"failed at {step}: {text}"
    layer = None if unsupported else keras_layer(model, text)
    if layer is not None:
        refused[vid] += f" (Keras layer {layer})"
    output = _tf.converter_output(exc) or _full_message(exc)
    log = staging / LOGS / f"{vid}.log"
    log.parent.mkdir(exist_ok=True)
    log.write_text(output + "\n", encoding="utf-8")
    refused[vid] += f" (converter output: {LOGS}/{log.name})"
    lines = output.splitlines()[-LOG_TAIL:]
    tail = f"\n  last {len(lines)} line(s) the converter printed:\n" + "\n".join(
        f"    {line}" for line in lines
    )
    if not unsupported:
        faults.append(vid)
    logger.warning("%s not written: %s%s", vid, refused[vid], tail)


def _full_message(exc: BaseException) -> str:
    """The converter's own message (the error this one was raised from), in full."""
    cause = exc.__cause__ or exc
    return str(cause).strip() or type(cause).__name__


_SCOPE = re.compile(r"([A-Za-z][\w.-]*)/")


def keras_layer(model: Any, text: str) -> str | None:
    """The Keras layer an engine's or converter's message points at, from the node names it
    quotes ('functional_1/global_average_pooling1d_1/Sum'): TensorFlow scopes each op under its
    layer, made unique with a suffix ('_1'). None when no scope names a layer of ``model``."""
    names = {layer.name: layer for layer in getattr(model, "layers", [])}
    for scope in _SCOPE.findall(text):
        for candidate in (scope, re.sub(r"(_\d+)+$", "", scope)):
            layer = names.get(candidate)
            if layer is not None and not candidate.startswith(("input", "functional", "sequential")):
                return f"{candidate!r} ({type(layer).__name__})"
    return None
