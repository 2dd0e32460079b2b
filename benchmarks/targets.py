"""What the benchmark measures: the Keras model three ways, each variant through the runtime,
and each variant through the bare engine call (``<variant>:raw``).

``model.predict`` alone is a misleading baseline (~36 ms a call whatever the batch: it builds a
tf.data pipeline every call), so ``predict_on_batch`` and a ``tf.function`` are measured too.
The runtime target is ``predict`` (classes, threshold applied, input checks on); the raw target
is the same artifact with nothing around the engine, so the runtime's own overhead shows.

Beside them, what a user would do instead of keras-edge: Keras 3's own ``model.export`` to ONNX
and to LiteRT, each run on a bare engine (``keras-export-onnx:raw``, ``keras-export-litert:raw``)
with the engine settings the runtime uses, so that our graphs are compared with Keras's.

Every variant is loaded once per thread count; the Keras model runs at the one thread count
TensorFlow was given at start-up. Nothing here imports TensorFlow: the caller passes it in.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from keras_edge import runtime
from keras_edge.runtime.engines import (
    ENGINE_EXTRAS,
    ENGINE_MODULES,
    LiteRTEngine,
    OnnxEngine,
    Quantization,
    engine_installed,
    is_class_output,
)

logger = logging.getLogger(__name__)

KERAS_TARGETS = ("keras-predict", "keras-predict-on-batch", "keras-tf-function")
# Keras 3's ``model.export`` format -> (the engine format that runs it, the file it is written to).
KERAS_EXPORTS = {"onnx": ("onnx", "model.onnx"), "litert": ("tflite", "model.tflite")}


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
    engine.resize((batch, *(int(d) for d in detail["shape"][1:])))
    quant: Quantization | None = engine.input_quantization
    return _invoke(interpreter), (quant.quantize if quant is not None else _same)


def _invoke(interpreter: Any) -> Call:
    """``set_tensor``/``invoke``/``get_tensor`` on an interpreter already sized for the batch."""
    i_in = interpreter.get_input_details()[0]["index"]
    i_out = next(d["index"] for d in interpreter.get_output_details()
                 if not is_class_output(d["name"], np.dtype(d["dtype"]).name))  # fmt: skip
    set_tensor, invoke, get_tensor = interpreter.set_tensor, interpreter.invoke, interpreter.get_tensor

    def call(x: np.ndarray) -> np.ndarray:
        set_tensor(i_in, x)
        invoke()
        return get_tensor(i_out)

    return call


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


def keras_export_targets(
    model: Any, shape: tuple[int, ...], threads: list[int]
) -> tuple[list[Target], dict[str, dict[str, Any]]]:
    """Export ``model`` with Keras 3's own exporters into a temporary folder (removed before
    this returns) and time each export on a bare engine at every thread count:
    ``keras-export-onnx:raw`` and ``keras-export-litert:raw``.

    Returns the targets and, per Keras format, ``{"bytes": N}`` or ``{"error": why}``: an export
    that fails (a Keras without ``format="litert"``, a converter error, its engine not installed
    here) gives no target, and the caller says why."""
    from keras_edge.exporter import captured_output, capturing  # only with --keras

    try:
        # A freshly loaded functional model must have been called before ``model.export``
        # ("The model provided has never called").
        model(np.zeros((1, *shape), dtype=np.float32), training=False)
    except Exception as exc:  # any failure is recorded; the run goes on
        why = f"calling the model on a zero batch failed: {_reason(exc)}"
        return [], {fmt: {"error": why} for fmt in KERAS_EXPORTS}
    record: dict[str, dict[str, Any]] = {}
    out: list[Target] = []
    with tempfile.TemporaryDirectory(prefix="keras-edge-bench-") as tmp:
        for fmt, (engine, filename) in KERAS_EXPORTS.items():
            if not engine_installed(engine):
                record[fmt] = {
                    "error": f"needs {ENGINE_MODULES[engine]}: pip install "
                    f"'keras-edge[{ENGINE_EXTRAS[engine]}]'"
                }
                continue
            path = Path(tmp) / filename
            step = "model.export failed"
            try:
                with capturing(), captured_output():  # the bench command's own output only
                    model.export(str(path), format=fmt, verbose=False)
                artifact = path.read_bytes()
                step = f"{ENGINE_MODULES[engine]} could not load the export"
                make = _bare_session if engine == "onnx" else _bare_interpreter
                prepares = [make(artifact, count) for count in threads]
            except Exception as exc:  # converters and engines raise anything: recorded
                record[fmt] = {"error": f"{step}: {_reason(exc)}"}
                continue
            record[fmt] = {"bytes": len(artifact)}
            name = f"keras-export-{fmt}:raw"
            out += [
                Target(name, "raw", None, count, prepare)
                for count, prepare in zip(threads, prepares, strict=True)
            ]
    return out, record


def _bare_session(artifact: bytes, threads: int) -> Callable[[int], tuple[Call, Convert]]:
    """A bare ONNX Runtime session with the SessionOptions the runtime's engine uses (intra-op
    threads = ``threads``, inter-op 1, CPU), fed a dict by its input name."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(artifact, sess_options=options, providers=["CPUExecutionProvider"])
    run, name = session.run, session.get_inputs()[0].name
    out = [next(o.name for o in session.get_outputs() if not is_class_output(o.name, o.type))]

    def prepare(b: int) -> tuple[Call, Convert]:
        return (lambda x: run(out, {name: x})[0]), _same

    return prepare


def _bare_interpreter(artifact: bytes, threads: int) -> Callable[[int], tuple[Call, Convert]]:
    """A bare LiteRT interpreter, resized and allocated once per batch size, then called as
    :func:`bare_call` calls ours."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=artifact, num_threads=threads)
    detail = interpreter.get_input_details()[0]

    def prepare(b: int) -> tuple[Call, Convert]:
        shape = (b, *(int(d) for d in detail["shape"][1:]))
        interpreter.resize_tensor_input(detail["index"], shape, strict=False)
        interpreter.allocate_tensors()
        return _invoke(interpreter), _same

    return prepare


def _reason(exc: BaseException) -> str:
    """An exception as one line: type and message, whitespace folded, cut at 300 characters."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= 300 else text[:297] + "..."
