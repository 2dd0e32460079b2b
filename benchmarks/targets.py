"""What the benchmark measures: the Keras model three ways, each variant through the runtime,
and each variant through the bare engine call (``<variant>:raw``).

``model.predict`` alone is a misleading baseline (~36 ms a call whatever the batch: it builds a
tf.data pipeline every call), so ``predict_on_batch`` and a ``tf.function`` are measured too.
The runtime target is ``predict`` (classes, threshold applied, input checks on); the raw target
is the same artifact with nothing around the engine, so the runtime's own overhead shows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from keras_edge import runtime
from keras_edge.runtime.engines import LiteRTEngine, OnnxEngine, Quantization
from keras_edge.runtime.manifest import Manifest

logger = logging.getLogger(__name__)

KERAS_TARGETS = ("keras-predict", "keras-predict-on-batch", "keras-tf-function")


Call = Callable[[np.ndarray], Any]
Convert = Callable[[np.ndarray], np.ndarray]


@dataclass
class Target:
    """A thing to time. ``prepare(batch_size)`` returns the call and an input transform that is
    applied to the input pool outside the timed region."""

    name: str
    kind: str  # "keras", "runtime" or "raw"
    variant: str | None
    prepare: Callable[[int], tuple[Call, Convert]]


def _same(x: np.ndarray) -> np.ndarray:
    return x


def keras_targets(model: Any) -> list[Target]:
    from keras_edge.exporter import _tf

    tf = _tf.tensorflow()
    spec = tf.TensorSpec((None, *model.inputs[0].shape[1:]), tf.float32)
    fn = tf.function(lambda x: model(x, training=False), input_signature=[spec])

    def predict(b: int):
        return (lambda x: model.predict(x, verbose=0)), _same

    def on_batch(b: int):
        return model.predict_on_batch, _same

    def tf_function(b: int):
        return (lambda x: fn(x).numpy()), _same

    return [
        Target("keras-predict", "keras", None, predict),
        Target("keras-predict-on-batch", "keras", None, on_batch),
        Target("keras-tf-function", "keras", None, tf_function),
    ]


def bare_call(engine: OnnxEngine | LiteRTEngine, batch: int) -> tuple[Call, Convert]:
    """The bare engine call for one batch size: ``session.run``, or
    ``set_tensor``/``invoke``/``get_tensor`` on an interpreter already sized for the batch.
    Integer inputs are quantized by the returned ``Convert``, outside the timed region."""
    if isinstance(engine, OnnxEngine):
        run, name, out = engine.session.run, engine.input_name, engine.output_names
        return (lambda x: run(out, {name: x})[0]), _same
    interpreter = engine.interpreter
    detail = interpreter.get_input_details()[0]
    shape = (batch, *(int(d) for d in detail["shape"][1:]))
    engine.resize(shape)
    i_in, i_out = detail["index"], interpreter.get_output_details()[0]["index"]
    set_tensor, invoke, get_tensor = interpreter.set_tensor, interpreter.invoke, interpreter.get_tensor

    def call(x: np.ndarray) -> np.ndarray:
        set_tensor(i_in, x)
        invoke()
        return get_tensor(i_out)

    quant: Quantization | None = engine.input_quantization
    return call, (quant.quantize if quant is not None else _same)


def variant_targets(
    folder: Path, manifest: Manifest, ids: list[str], threads: int | None
) -> list[Target]:
    """For each variant: ``runtime.load(...).predict`` and the bare call of the same engine
    (the same session or interpreter, so only the runtime's own work differs)."""
    out = []
    for vid in ids:
        clf = runtime.load(folder, variant=vid, threads=threads)

        def prepare_runtime(b: int, clf: runtime.Classifier = clf) -> tuple[Call, Convert]:
            return clf.predict, _same

        def prepare_raw(b: int, clf: runtime.Classifier = clf) -> tuple[Call, Convert]:
            return bare_call(clf.engine, b)

        out.append(Target(vid, "runtime", vid, prepare_runtime))
        out.append(Target(f"{vid}:raw", "raw", vid, prepare_raw))
    return out
