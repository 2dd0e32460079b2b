"""``export()``: Keras model -> artifacts + manifest, each artifact proved against Keras.

The export is a sequence of stages: :mod:`~keras_edge.exporter.options` checks every argument
in one place; :mod:`~keras_edge.exporter.prepare` loads the model and computes what every
variant is gated against; :mod:`~keras_edge.exporter.pipeline` converts, stages, gates, falls
back to mixed precision, tunes and writes the golden set; :mod:`~keras_edge.exporter.release`
installs the folder in one step. Every variant is checked through ``runtime.load()``, so the
code path that ships is the code path that is checked.

It changes no process-wide state: no working directory, no file descriptors, no environment
variables, no warning filters (the ``keras-edge`` command line captures what the converters
print; a Python caller sees it). Two exports in one process run one after the other (a lock:
the converters share TensorFlow's and tf2onnx's global state); other threads run on meanwhile.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from keras_edge.exporter import release
from keras_edge.exporter.options import FORMATS, QUANTIZATIONS, ExportOptions, Progress
from keras_edge.exporter.outcome import outcome, own_names
from keras_edge.exporter.pipeline import Pipeline
from keras_edge.exporter.prepare import PROBE_SEED, PROBE_SIZE, PROBE_STD, Data, prepare
from keras_edge.exporter.result import ExportResult

logger = logging.getLogger(__name__)

__all__ = ["FORMATS", "PROBE_SEED", "PROBE_SIZE", "PROBE_STD", "QUANTIZATIONS", "export", "run"]

_LOCK = threading.Lock()  # one export at a time in a process: see the module's docstring


def export(
    model: str | Path | Any,
    out: str | Path,
    formats: Sequence[str] = FORMATS,
    quantize: str | Sequence[str] | None = None,
    calibration: Any = None,
    validation: Any = None,
    threshold: float | Sequence[float] = 0.5,
    head: str = "auto",
    labels: Sequence[str] | None = None,
    safe_mode: bool = True,
    min_agreement: float | None = None,
    int8_io: bool = False,
    progress: Progress | None = None,
    tune: str | None = None,
    tune_data: Any = None,
    with_decision: bool = False,
    min_confidence: float | None = None,
    plot: str | Path | None = None,
    force: bool = False,
    allow_constant: bool = False,
    int8_fallback: str = "auto",
    feature_names: Sequence[str] | None = None,
    require_data: bool = False,
    strict: bool = False,
    custom_objects: Sequence[str | Path] | Mapping[str, Any] | None = None,
    input_normalization: str | tuple[Any, Any] | None = None,
) -> ExportResult:
    """Export a Keras model to TFLite/ONNX variants in ``out`` and prove each one.

    ``model`` is a ``.keras`` / ``.h5`` path, a SavedModel folder, or a built ``keras.Model``
    (functional, subclassed, or Keras 2 ``tf_keras``: see :mod:`.sources`); ``out`` the folder for
    the artifacts, ``manifest.json``, ``parity.json`` and ``golden.npz``. The data:
    ``calibration`` (full-int8 calibration inputs: required for ``int8`` asked for by name;
    with ``"all"`` and none, int8 is skipped with a warning), ``validation`` (``x`` or ``(x,
    y)`` to gate on; without it the calibration inputs, else a synthetic probe set, which the
    result says) and ``tune_data`` (``(x, y)`` to tune on); arrays, a dict or list of arrays for
    several inputs, or pandas DataFrames. ``progress(step, total, message)`` is called while
    it works. Every other argument is an option, documented on :class:`ExportOptions`.

    Returns:
        An :class:`ExportResult`: the manifest written, ``failed`` (variants that missed their
        gate: written, marked failed, never the default), ``refused`` and ``table``, the parity
        table as the CLI prints it (``print(result)``). ``result.raise_for_gate()`` raises the
        ParityError that ``strict=True`` would have.

    Raises:
        UsageError: bad input (exit 2); nothing is written. Its subclass UnsupportedOpError when
            no variant at all can express the model.
        PartialExportError: a converter or engine failed on some variants (exit 1); the others
            are written first. ConversionError when it failed on every variant.
        ParityError: with ``strict=True`` only, a variant failed its gate (exit 3); everything
            is written first.
        ConstantOutputError: the Keras model answers a constant on the parity data (exit 3);
            raised whatever ``strict`` says, before anything is converted: nothing is written,
            so there is no result to return.
    """
    options = ExportOptions.create(
        formats=formats, quantize=quantize, threshold=threshold, head=head, labels=labels,
        safe_mode=safe_mode, min_agreement=min_agreement, int8_io=int8_io,
        min_confidence=min_confidence, int8_fallback=int8_fallback, tune=tune,
        with_decision=with_decision, plot=plot, force=force, allow_constant=allow_constant,
        feature_names=feature_names, require_data=require_data, strict=strict,
        custom_objects=custom_objects, input_normalization=input_normalization,
    )  # fmt: skip
    return run(model, out, options, Data(calibration, validation, tune_data), progress)


def run(
    model: str | Path | Any, out: str | Path, options: ExportOptions, data: Data,
    progress: Progress | None = None,
) -> ExportResult:  # fmt: skip
    """The export's stages in order, for checked ``options``: see the module's docstring."""
    out = Path(out).absolute()
    with _LOCK:
        foreign = release.check_out(out, options.force)
        options = options.without_int8(data.calibration)
        job = prepare(model, options, data)
        staging, whole = release.staging_for(out)
        try:
            with contextlib.ExitStack() as held:  # quantizers kept for mixed precision
                pipeline = Pipeline(job, options, staging, progress)
                pipeline.run(held)
            release.install(staging, out, own=own_names(), whole=whole and not foreign)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return outcome(pipeline, out, options)
