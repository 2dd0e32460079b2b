"""What the benchmark measures: the Keras model three ways, each variant through the runtime,
and each variant through the bare engine call (``<variant>:raw``).

``model.predict`` alone is a misleading baseline (~36 ms a call whatever the batch: it builds a
tf.data pipeline every call), so ``predict_on_batch`` and a ``tf.function`` are measured too.
The runtime target is ``predict`` (classes, threshold applied, input checks on); the raw target
is the same artifact with nothing around the engine, so the runtime's own overhead shows.

Every variant is loaded once per thread count; the Keras model runs at the one thread count
TensorFlow was given at start-up. Nothing here imports TensorFlow: the caller passes it in.
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
    threads: int | None
    prepare: Callable[[int], tuple[Call, Convert]]


def _same(x: np.ndarray) -> np.ndarray:
    return x


def limit_tensorflow_threads(tf: Any, threads: int | None) -> None:
    """Give TensorFlow the thread count the engines get: the same resources for every target,
    and no TensorFlow pool spinning on another core while an engine is timed. TensorFlow
    fixes its pools at start-up, so this holds for the whole process."""
    if threads is not None:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)


def keras_targets(model: Any, tf: Any, threads: int | None) -> list[Target]:
    """``model.predict``, ``predict_on_batch`` and a ``tf.function`` of the model; ``tf`` is
    the TensorFlow module, already limited to ``threads``."""
    spec = tf.TensorSpec((None, *model.inputs[0].shape[1:]), tf.float32)
    fn = tf.function(lambda x: model(x, training=False), input_signature=[spec])

    def predict(b: int):
        return (lambda x: model.predict(x, verbose=0)), _same

    def on_batch(b: int):
        return model.predict_on_batch, _same

    def tf_function(b: int):
        return (lambda x: fn(x).numpy()), _same

    return [
        Target("keras-predict", "keras", None, threads, predict),
        Target("keras-predict-on-batch", "keras", None, threads, on_batch),
        Target("keras-tf-function", "keras", None, threads, tf_function),
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


def variant_targets(folder: Path, ids: list[str], threads: list[int]) -> list[Target]:
    """For each variant and thread count: ``runtime.load(...).predict`` and the bare call of
    the same engine (the same session or interpreter, so only the runtime's own work differs).
    ``load`` raises the runtime's error, naming the extra, for a variant whose engine is not
    installed."""
    out = []
    for vid in ids:
        for count in threads:
            clf = runtime.load(folder, variant=vid, threads=count)

            def prepare_runtime(b: int, clf: runtime.Classifier = clf) -> tuple[Call, Convert]:
                return clf.predict, _same

            def prepare_raw(b: int, clf: runtime.Classifier = clf) -> tuple[Call, Convert]:
                return bare_call(clf.engine, b)

            out.append(Target(vid, "runtime", vid, count, prepare_runtime))
            out.append(Target(f"{vid}:raw", "raw", vid, count, prepare_raw))
    return out
