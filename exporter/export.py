"""``export()``: Keras model -> artifacts + manifest, each artifact proved against Keras.

Every variant is checked through ``runtime.load()``, so the code path that ships is the code
path that is checked. Files are staged in a sibling folder and moved into place at the end: a
bad input leaves nothing half-written; a failed gate still writes everything, and the
:class:`ExportResult` names the variant and the numbers (``strict=True`` raises
:class:`ParityError`, exit code 3, instead). A variant the format cannot
express (:class:`UnsupportedOpError`) is left out with its reason in the manifest's ``refused``;
one a converter or engine fails on is left out the same way, the rest are written, and
:class:`PartialExportError` (exit code 1) names it.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from keras_edge import runtime
from keras_edge.exporter import (
    _tf,
    artifacts,
    decision,
    embed,
    features,
    golden,
    mixed,
    parity,
    release,
    to_onnx,
    to_tflite,
    tuning,
)
from keras_edge.exporter import model as model_io
from keras_edge.exporter import plot as plotting
from keras_edge.exporter.calibration import Calibration, coverage_problems
from keras_edge.exporter.calibration import coverage as calibration_coverage
from keras_edge.exporter.errors import (
    CalibrationError,
    ConstantOutputError,
    ConversionError,
    PartialExportError,
    TuningError,
    UnsupportedOpError,
)
from keras_edge.exporter.result import ExportResult
from keras_edge.runtime import embedded
from keras_edge.runtime.data import rows
from keras_edge.runtime.errors import KerasEdgeError, UsageError
from keras_edge.runtime.gate import decide
from keras_edge.runtime.golden import GOLDEN_NAME
from keras_edge.runtime.manifest import (
    MANIFEST_NAME,
    Head,
    InputSpec,
    Manifest,
    ModelInfo,
    Variant,
    sha256_file,
)
from keras_edge.runtime.report import REPORT_NAME, report_json

logger = logging.getLogger(__name__)

FORMATS = ("tflite", "onnx")
QUANTIZATIONS = ("fp16", "dynamic", "int8")
EXTENSIONS = {"tflite": ".tflite", "onnx": ".onnx"}
LOGS = "logs"  # what a converter printed when it failed, one file per variant
LOG_TAIL = 12  # lines of it shown in the warning
# A Keras output that moves less than this across the parity data (per unit, in logits for a
# classifier; relative to its largest value for a regression) is a constant: matching it proves
# nothing.
CONSTANT_SPREAD = 1e-3

# Without validation data, parity is checked on this documented, seeded probe set.
PROBE_SIZE = 10_000
PROBE_SEED = 0
PROBE_STD = 2.0

# Progress callback: (step, total, message).
Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class ExportOptions:
    """What to export, validated before anything is converted or written."""

    formats: tuple[str, ...] = FORMATS
    quantize: tuple[str, ...] = ()
    threshold: float | tuple[float, ...] = 0.5
    head: str = "auto"
    labels: tuple[str, ...] | None = None
    safe_mode: bool = True
    min_agreement: float | None = None
    int8_io: bool = False
    min_confidence: float | None = None
    int8_fallback: str = "auto"

    def __post_init__(self) -> None:
        if not self.formats or any(f not in FORMATS for f in self.formats):
            raise UsageError(f"Expected formats from {FORMATS}, got {list(self.formats)}")
        if any(q not in QUANTIZATIONS for q in self.quantize):
            raise UsageError(
                f"Expected quantizations from {QUANTIZATIONS} (or 'all'), got {list(self.quantize)}"
            )
        if self.min_agreement is not None and not (0.0 <= self.min_agreement <= 1.0):
            raise UsageError(f"Expected --min-agreement between 0 and 1, got {self.min_agreement}")
        if self.int8_fallback not in mixed.FALLBACKS:
            raise UsageError(
                f"Expected --int8-fallback from {mixed.FALLBACKS}, got {self.int8_fallback!r}"
            )

    def variant_ids(self) -> list[tuple[str, str, str]]:
        """(id, format, precision) in a fixed order: formats, then fp32 before quantized."""
        precisions = ["fp32", *[q for q in QUANTIZATIONS if q in self.quantize]]
        return [(f"{fmt}-{p}", fmt, p) for fmt in FORMATS if fmt in self.formats for p in precisions]


def parse_quantize(value: str | Sequence[str] | None) -> tuple[tuple[str, ...], bool]:
    """('fp16,int8' | ['all'] | None) -> (quantizations, asked for 'all')."""
    if value is None:
        return (), False
    items = [v.strip() for v in (value.split(",") if isinstance(value, str) else value) if v.strip()]
    if "all" in items:
        return QUANTIZATIONS, True
    return tuple(dict.fromkeys(items)), False


def probe_inputs(specs: tuple[InputSpec, ...]) -> tuple[np.ndarray, ...]:
    """The probe set: ``PROBE_SIZE`` samples of N(0, ``PROBE_STD``^2) per float input, seed
    ``PROBE_SEED``; integer ids are not probed at random (they need validation data)."""
    ids = [s.name for s in specs if not s.is_float]
    if ids:
        raise UsageError(
            f"Expected validation or calibration data for a model with integer inputs {ids}: "
            f"random ids prove nothing about the text the device will see"
        )
    rng = np.random.default_rng(PROBE_SEED)
    return tuple(
        (rng.standard_normal((PROBE_SIZE, *s.feature_shape)) * PROBE_STD).astype(np.float32)
        for s in specs
    )


def _synthetic(specs: tuple[InputSpec, ...], require_data: bool) -> tuple[Any, None, str]:
    """The probe set, for an export given neither validation nor calibration data, with a
    warning that says what a pass on it proves; refused with ``require_data``."""
    if require_data:
        raise UsageError(
            "Expected validation or calibration data (--validation FILE or --calibration FILE; "
            "validation= or calibration= in Python) with --require-data, got neither"
        )
    data_name = (
        f"synthetic probe set ({PROBE_SIZE} samples of N(0, {PROBE_STD:g}^2) per feature, seed "
        f"{PROBE_SEED}), not your data"
    )
    logger.warning(
        "no validation or calibration data: every variant is gated on a %s. A pass proves the "
        "conversion on those inputs, not the decisions on the inputs the device will see; give "
        "--validation FILE (validation=) to gate on your data, or --require-data to refuse this",
        data_name,
    )
    return probe_inputs(specs), None, data_name


def _tools(precisions: set[str], formats: set[str]) -> dict[str, str]:
    names = ["keras", "keras-edge", "numpy", "tensorflow"]
    if "tflite" in formats:
        names.append("ai-edge-litert")
    if "onnx" in formats:
        names += ["tf2onnx", "onnx", "onnxruntime"]
        if "fp16" in precisions:
            names.append("onnxconverter-common")
    return {name: _tf.version(name) for name in sorted(names)}


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
) -> ExportResult:
    """Export a Keras model to TFLite/ONNX variants in ``out`` and prove each one.

    Args:
        model: a ``.keras`` / ``.h5`` path, or a built ``keras.Model``.
        out: the folder to write artifacts, ``manifest.json`` and ``parity.json`` into.
        formats: any of ``"tflite"``, ``"onnx"``.
        quantize: any of ``"fp16"``, ``"dynamic"``, ``"int8"``, or ``"all"``; fp32 is always made.
        calibration: inputs for full-int8 calibration (an array). Required for ``int8`` asked for
            by name; with ``"all"`` and no calibration, int8 is skipped with a warning.
        validation: ``x`` or ``(x, y)`` to check parity on; without it, a seeded probe set.
        threshold: the decision threshold (a list for multilabel), rule ``p > threshold``.
        head: ``"auto"``, or for a linear output ``"logit"`` / ``"regression"``.
        safe_mode: Keras safe mode when loading a file; ``False`` allows Lambda layers.
        min_agreement: overrides every precision's minimum label agreement.
        int8_io: give ``tflite-int8`` int8 input and output (for integer-only targets).
        tune: a threshold objective (``"f1"``, ``"fbeta:2"``, ``"youden"``, ``"balanced-accuracy"``,
            ``"mcc"``, ``"precision>=0.9"``, ``"recall>=0.95"``, ``"cost:fp=1,fn=20"``): the
            Keras model's threshold, then every variant's own, tuned on labelled data.
        with_decision: give every artifact a second output, ``class`` (int64), decided in the
            graph with the variant's own threshold (argmax for multiclass).
        min_confidence: for a multiclass head, the top probability a sample needs for a class;
            at or below it the class is -1 ("unknown"). It is the head's threshold: ``tune``
            tunes it, with "correct answer" as the positive (``precision>=0.99``: the most
            answers kept with at least 99% of the kept ones right).
        plot: with ``tune``, draw the objective against the threshold for Keras and each
            variant, the chosen points marked, to this .png/.svg/.pdf (needs matplotlib).
        tune_data: ``(x, y)`` to tune on; without it, the validation data (whose labels then
            both choose and report the threshold: the report is optimistic).
        int8_fallback: ``"auto"``: a full-int8 variant that misses its gate is made again with
            the fewest layers kept in float that pass it (mixed precision; the manifest's
            ``fallback`` lists them and what was tried); ``"none"``: it fails as it is.
        progress: called as ``progress(step, total, message)`` while exporting.
        force: export into a non-empty folder that is not a previous export (files with the
            export's names are replaced, the others kept); without it, a UsageError.
        allow_constant: export a model whose Keras output is (nearly) constant on the parity
            data, with a warning; without it, ConstantOutputError (exit 3) before converting.
        feature_names: the names of the model's features (one input of shape (None, k)), kept
            in the manifest and every artifact so that files' columns are matched by name. By
            default, the columns of a pandas DataFrame given as calibration or validation data.
        require_data: refuse (UsageError, exit 2, nothing written) an export that has neither
            validation nor calibration data, instead of gating on the synthetic probe set.
        strict: raise :class:`ParityError` when a variant fails its gate (as ``keras-edge
            export`` exits 3); without it, the failed variants are in the result's ``failed``
            and a warning names them.

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
    quantizations, asked_all = parse_quantize(quantize)
    options = ExportOptions(
        formats=tuple(formats),
        quantize=quantizations,
        threshold=tuple(threshold) if isinstance(threshold, (list, tuple)) else float(threshold),
        head=head,
        labels=tuple(labels) if labels is not None else None,
        safe_mode=safe_mode,
        min_agreement=min_agreement,
        int8_io=int8_io,
        min_confidence=min_confidence,  # checked with the head: it is a multiclass head's
        int8_fallback=int8_fallback,
    )
    out = Path(out).absolute()  # converters run in a scratch folder: see release.scratch()
    plot_path = None if plot is None else Path(plot)
    plotting.check(plot_path, tune)
    foreign = release.check_out(out, force)
    if "int8" in options.quantize and calibration is None:
        if not asked_all:
            raise CalibrationError(
                "Full-int8 variants need calibration data (--calibration FILE, or calibration= "
                "in Python) drawn from the inputs the device will see; got none. keras-edge "
                "never calibrates on random numbers"
            )
        logger.warning("skipping the int8 variants: no calibration data was given")
        options = ExportOptions(**{**options.__dict__, "quantize": ("fp16", "dynamic")})

    # -- read and check everything before converting anything ---------------------------------
    keras_model = model_io.load_model(model, safe_mode) if isinstance(model, (str, Path)) else model
    names = features.choose(
        feature_names,
        {"validation": validation[0] if isinstance(validation, tuple) else validation,
         "calibration": calibration,
         "tuning": tune_data[0] if isinstance(tune_data, tuple) else None},
    )  # fmt: skip
    specs = features.named(model_io.input_specs(keras_model), names)
    calibration = features.in_order(calibration, names)
    if isinstance(validation, tuple):
        validation = (features.in_order(validation[0], names), *validation[1:])
    else:
        validation = features.in_order(validation, names)
    if isinstance(tune_data, tuple):
        tune_data = (features.in_order(tune_data[0], names), *tune_data[1:])
    the_head = model_io.infer_head(
        keras_model,
        options.head,
        list(options.threshold) if isinstance(options.threshold, tuple) else options.threshold,
        list(options.labels) if options.labels is not None else None,
        from_logits=model_io.trained_from_logits(keras_model, model),
        min_confidence=options.min_confidence,
    )
    calib = Calibration.from_array(calibration, specs) if calibration is not None else None
    if validation is not None:
        x_val, y_val = validation if isinstance(validation, tuple) else (validation, None)
        x_check = model_io.as_inputs(x_val, specs, "validation")
        if y_val is not None and len(y_val) != len(x_check[0]):
            raise UsageError(f"Expected {len(x_check[0])} validation labels, got {len(y_val)}")
        data_name, source = f"validation data ({len(x_check[0])} samples)", "validation"
    elif calib is not None:
        # The calibration inputs are what the user said the device will see.
        x_check, y_val = calib.xs, None
        data_name = f"calibration data ({len(calib)} samples; give validation data to check more)"
        source = "calibration"
    else:
        x_check, y_val, data_name, source = *_synthetic(specs, require_data), "synthetic"
    reference = parity.Reference(
        proba=parity.to_probability(the_head, model_io.keras_outputs(keras_model, list(x_check))),
        labels=None if y_val is None else np.asarray(y_val),
        data=data_name,
        source=source,
    )
    plan_tuning = tuning.plan(tune, tune_data, the_head, keras_model, specs, x_check, y_val, reference)
    if plan_tuning is not None:
        the_head = replace(the_head, threshold=plan_tuning.keras_threshold)
    _check_reference(the_head, reference, allow_constant)
    coverage, problems = None, []
    if calib is not None and "int8" in options.quantize and calib.float_features.shape[1]:
        coverage = calibration_coverage(calib, x_check, data_name)
        problems = coverage_problems(coverage)
        for problem in problems:
            logger.warning("calibration: %s", problem)

    plan = options.variant_ids()
    total = len(plan) * 2
    convertible = model_io.for_conversion(keras_model)  # recurrent layers unrolled
    tf = _tf.tensorflow()
    info = ModelInfo(
        name=str(keras_model.name),
        source_sha256=model_io.source_sha256(model, keras_model),
        keras_version=_tf.version("keras"),
        tensorflow_version=tf.__version__,
    )
    staging, whole = release.staging_for(out)
    held = contextlib.ExitStack()  # int8 quantizers kept for mixed precision, and their files
    try:
        variants: dict[str, Variant] = {}
        quantizers: dict[str, Any] = {}  # int8 variant -> its calibrated quantizer (auto)
        refused: dict[str, str] = {}  # variant -> why it was not written
        faults: list[str] = []  # of those, the ones a converter or engine failed on (exit 1)
        onnx_fp32: Any = None  # tf2onnx runs once; the quantized ONNX variants start from it
        for step, (vid, fmt, precision) in enumerate(plan, start=1):
            _report(progress, step, total, f"converting {vid}")
            try:
                with release.scratch(staging):  # a converter's stray files land in the staging
                    if fmt == "onnx" and onnx_fp32 is None:
                        onnx_fp32 = _attempt(lambda: to_onnx.to_fp32_proto(convertible, specs))
                    if fmt == "onnx" and isinstance(onnx_fp32, KerasEdgeError):
                        raise onnx_fp32
                    if precision == "int8" and options.int8_fallback == "auto":
                        # Calibrated once, kept: should the variant miss its gate, the fallback
                        # quantizes again from it with layers in float (calibrating costs seconds).
                        if fmt == "tflite":
                            quantizer: Any = to_tflite.MixedInt8(convertible, calib, options.int8_io)
                        else:
                            quantizer = to_onnx.StaticInt8(onnx_fp32, specs, calib)
                        quantizers[vid] = held.enter_context(quantizer)
                        data = quantizer.quantize([])
                    elif fmt == "tflite":
                        data = to_tflite.convert(convertible, precision, calib, options.int8_io)
                    else:
                        data = to_onnx.from_fp32(onnx_fp32, specs, precision, calib)
            except (ConversionError, UnsupportedOpError) as exc:
                _refuse(vid, "conversion", exc, refused, faults, staging, keras_model)
                continue
            path = staging / f"{vid}{EXTENSIONS[fmt]}"
            path.write_bytes(data)
            unchanged = artifacts.quantized_nothing(fmt, precision, data)
            if unchanged:
                logger.warning("%s", unchanged)
            variants[vid] = Variant(
                id=vid,
                file=path.name,
                format=fmt,
                precision=precision,
                sha256=sha256_file(path),
                bytes=len(data),
                threshold=the_head.threshold,
            )
        manifest = Manifest(
            model=info,
            inputs=specs,
            head=the_head,
            variants=variants,
            default_variant=None,
            tools=_tools({p for _, _, p in plan}, set(options.formats)),
        )
        manifest.write(staging)  # provisional: lets runtime.load() read the staged variants

        originals = {vid: (staging / v.file).read_bytes() for vid, v in variants.items()}

        def ship(vid: str, threshold: Any, tuned: dict | None = None) -> runtime.Classifier:
            """Stage the bytes that ship, decision record (and class output) inside, with
            ``threshold``; load them. The gate then checks these bytes, not a draft of them:
            a class output can change how an engine fuses the graph (ONNX Runtime's int8
            Softmax moved by one output step when the output got a second consumer)."""
            v = replace(variants[vid], threshold=threshold, tuning=tuned)  # one goes with the other
            data = _decided(originals[vid], manifest, v, with_decision)
            (staging / v.file).write_bytes(data)
            variants[vid] = replace(v, sha256=sha256_file(staging / v.file), bytes=len(data))
            replace(manifest, variants=dict(variants)).write(staging)
            return runtime.load(staging, variant=vid, threads=1)

        checked: dict[str, Variant] = {}
        answers: dict[str, np.ndarray] = {}  # per-sample answers, for the golden set
        n = len(x_check[0])
        samples = [rows(x_check, slice(i, i + 1)) for i in range(n)]

        def load(vid: str, threshold: Any) -> runtime.Classifier:
            """Ship ``vid`` and run it once: an artifact that loads but cannot run fails here."""
            clf = ship(vid, threshold)
            clf.predict(samples[0])
            return clf

        def measure(vid: str, clf: runtime.Classifier, precision: str) -> tuple[Any, np.ndarray]:
            """The gate on the shipped bytes of ``vid``: its parity and its per-sample answers."""
            answer = clf.predict if the_head.kind == "regression" else clf.predict_proba
            # One call per sample, as a device calls the model; then one call for the whole
            # set, because some variants answer differently when samples share a batch.
            per_sample = np.concatenate([answer(sample) for sample in samples])
            tuning_failure = None
            if plan_tuning is not None:  # the variant's own threshold, on its own scores
                try:
                    tuned = plan_tuning.tune_variant(clf, variants[vid], per_sample)
                    clf = ship(vid, tuned.threshold, tuned.tuning)  # a constant of the graph changes
                    again = np.concatenate([answer(sample) for sample in samples])
                    if not np.array_equal(again, per_sample):
                        raise TuningError(
                            f"its scores changed when its tuned threshold was written into it "
                            f"(largest change {float(np.abs(again - per_sample).max()):.3g})"
                        )
                except TuningError as exc:
                    tuning_failure = f"its own threshold could not be tuned: {exc}"
            # The labels of the runtime's own predict(), the decision that ships, one call per
            # sample and one for the whole set; the gate compares them with Keras's p > t.
            decides = the_head.kind != "regression"
            labels = (
                np.concatenate([clf.predict(s).reshape(1, -1) for s in samples]) if decides else None
            )
            everything = rows(x_check, slice(None))
            result = parity.compare(
                the_head,
                reference,
                per_sample,
                precision,
                variants[vid].threshold,
                options.min_agreement,
                batch_proba=answer(everything),
                labels=labels,
                batch_labels=clf.predict(everything) if decides else None,
            )
            if result.batch_flips != result.flips:
                logger.warning(
                    "%s decides differently when samples share a batch: %d flips with one call "
                    "per sample, %d with one call for all %d (ONNX Runtime's dynamic "
                    "quantization, for one, takes activation scales from each call's batch)",
                    vid,
                    result.flips,
                    result.batch_flips,
                    n,
                )
            if tuning_failure is not None:
                result = replace(result, passed=False, failures=(*result.failures, tuning_failure))
            return result, per_sample

        def fall_back(vid: str, fmt: str, step: int, result: Any, per_sample: np.ndarray) -> Any:
            """Mixed precision for an int8 variant that missed its gate (see ``mixed``): the
            fewest layers kept in float that pass the same gate on the shipped bytes, or, when
            nothing tried passes, the full-int8 variant as it was."""
            full = originals[vid]
            full_bytes, threshold = variants[vid].bytes, the_head.threshold
            full_agreement = result.label_agreement
            last: list[Any] = [full, result, per_sample]

            def gate(data: bytes) -> Any:
                originals[vid] = data
                try:
                    clf = load(vid, threshold)
                except (KerasEdgeError, RuntimeError, ValueError) as exc:  # engines raise untyped
                    logger.warning("%s: a mixed-precision candidate did not load: %s", vid, exc)
                    last[:] = [data, None, None]
                    return None
                last[:] = [data, *measure(vid, clf, "int8")]
                return last[1]

            def say(message: str) -> None:
                _report(progress, step, total, f"{vid} int8 fallback: {message}")

            started = time.perf_counter()
            try:
                with release.scratch(staging):  # ONNX Runtime's quantizer may leave files there
                    outcome = mixed.fall_back(
                        quantizers[vid], convertible, x_check, [s.name for s in specs], gate, say
                    )
            except (KerasEdgeError, RuntimeError, ValueError) as exc:  # converters raise untyped
                logger.warning("%s: mixed precision could not be tried: %s", vid, exc)
                outcome, failure = None, f"mixed precision could not be tried: {exc}"
            chosen = full if outcome is None or outcome.data is None else outcome.data
            if last[0] is not chosen:  # the staged file and record are the last candidate's
                gate(chosen)
            logger.info("%s: int8 fallback searched for %.1f s", vid, time.perf_counter() - started)
            if outcome is not None:
                if outcome.data is not None and outcome.float_ops * 2 > outcome.ops:
                    logger.warning(
                        "%s passes its gate only with %d of its %d ops in float: little of "
                        "int8's size and speed is left",
                        vid,
                        outcome.float_ops,
                        outcome.ops,
                    )
                failure = outcome.failure(int8_input=fmt == "tflite" and options.int8_io)
                record = outcome.record(full_bytes, full_agreement)
                variants[vid] = replace(variants[vid], fallback=record)
            result = last[1]
            if failure is not None:
                result = replace(result, failures=(*result.failures, failure))
            return result, last[2]

        for step, (vid, fmt, precision) in enumerate(plan, start=len(plan) + 1):
            if vid not in variants:
                continue
            _report(progress, step, total, f"checking {vid} on {data_name}")
            try:
                clf = load(vid, variants[vid].threshold)
            except (KerasEdgeError, RuntimeError, ValueError) as exc:  # engines raise untyped
                _refuse(vid, "loading in its engine", exc, refused, faults, staging, keras_model)
                (staging / variants[vid].file).unlink()
                del variants[vid]
                continue
            result, per_sample = measure(vid, clf, precision)
            if not result.passed and precision == "int8" and options.int8_fallback == "auto":
                result, per_sample = fall_back(vid, fmt, step, result, per_sample)
            answers[vid] = per_sample
            if not result.passed and precision == "int8" and problems:
                result = replace(result, failures=(*result.failures, *problems))
            checked[vid] = replace(variants[vid], parity=result)
        if not checked:  # nothing to write: fail before anything is installed
            reasons = "; ".join(
                f"{vid}: {why.split(f' (converter output: {LOGS}/')[0]}" for vid, why in refused.items()
            )  # the logs go with the staging folder: their lines were shown as warnings
            error = ConversionError if faults else UnsupportedOpError
            raise error(f"No variant could be made, nothing was written: {reasons}")
        passed = [vid for vid, v in checked.items() if v.passed]
        default = passed[0] if passed else None
        golden_info = golden.write(
            staging, the_head, x_check, [s.name for s in specs], reference.proba, answers, data_name
        )
        manifest = replace(
            manifest.with_variants(checked, default, coverage),
            golden=golden_info,
            refused=refused,
            tuning=None if plan_tuning is None else plan_tuning.record(),
        )
        manifest.write(staging)
        (staging / REPORT_NAME).write_text(report_json(manifest), encoding="utf-8")
        release.install(staging, out, own=_own_names(), whole=whole and not foreign)
    finally:
        held.close()
        shutil.rmtree(staging, ignore_errors=True)
    if plot_path is not None and plan_tuning is not None:  # drawn before a failed gate is raised
        partial = plot_path.with_name(f".{plot_path.name}.partial{plot_path.suffix}")
        plotting.draw(plan_tuning, partial, the_head.labels)
        partial.replace(plot_path)

    if faults:
        raise PartialExportError(
            f"{len(faults)} variant(s) could not be made ({', '.join(faults)}); the other "
            f"{len(checked)} were written to {out} and its manifest says why for each: "
            + "; ".join(f"{vid}: {refused[vid]}" for vid in faults),
            failed=faults,
        )
    result = ExportResult.of(manifest, out)
    if strict:
        result.raise_for_gate()
    elif result.failed:
        logger.warning(
            "%d variant(s) failed the parity gate and were marked failed in %s: %s",
            len(result.failed), out / MANIFEST_NAME, ", ".join(result.failed),
        )  # fmt: skip
    logger.info("exported %d variant(s) to %s; default %s", len(checked), out, default)
    return result


def _decided(data: bytes, manifest: Manifest, variant: Variant, with_decision: bool) -> bytes:
    """The artifact's bytes with the variant's decision record inside, and with
    ``with_decision`` its ``class`` output."""
    if with_decision and manifest.head.kind != "regression":
        add = decision.into_onnx if variant.format == "onnx" else decision.into_tflite
        data = add(data, manifest.head, variant.threshold)
    into = embed.into_onnx if variant.format == "onnx" else embed.into_tflite
    return into(data, embedded.record(manifest, variant))


def _attempt(convert: Callable[[], Any]) -> Any:
    """``convert()``, or the refusal or converter error it raised (kept, so that every variant
    that needs the same conversion is refused for the same reason without running it again)."""
    try:
        return convert()
    except (ConversionError, UnsupportedOpError) as exc:
        return exc


def _refuse(
    vid: str, step: str, exc: Exception, refused: dict[str, str], faults: list[str], staging: Path,
    model: Any = None,
) -> None:  # fmt: skip
    """Record why ``vid`` is not written; a converter or engine fault (not a format's known
    limit) also goes into ``faults``, which makes the export exit 1 after writing the rest.
    What the converter printed is kept in ``logs/VARIANT.log`` and its last lines shown."""
    unsupported = isinstance(exc, UnsupportedOpError)
    text = " ".join(str(exc).split())
    refused[vid] = text if unsupported else f"failed at {step}: {text}"
    layer = None if unsupported or model is None else _keras_layer(model, text)
    if layer is not None:
        refused[vid] += f" (Keras layer {layer})"
    output = _tf.converter_output(exc)
    tail = ""
    if output:
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


def _check_reference(head: Head, reference: parity.Reference, allow_constant: bool) -> None:
    """Refuse a parity check that proves nothing: a Keras output that barely moves across the
    data (an untrained backbone answers one constant; every variant then "agrees" with max diff
    0). Warn when every sample gets the same label: the other label was never tested."""
    proba = reference.proba.astype(np.float64).reshape(len(reference.proba), -1)
    if len(proba) == 0:
        return
    if head.kind == "regression":  # values: relative to their size
        spread = float((proba.max(axis=0) - proba.min(axis=0)).max())
        scale = float(np.abs(proba).max())
    else:  # in logits: a confident model's 0.9999 and 0.99999 differ, a constant's do not
        if head.output == "probability":
            p = np.clip(proba, 1e-12, 1 - 1e-12)
            proba = np.log(p) - np.log1p(-p)
        spread, scale = float((proba.max(axis=0) - proba.min(axis=0)).max()), 1.0
    unit = "" if head.kind == "regression" else " in logits"
    if spread <= CONSTANT_SPREAD * scale:
        message = (
            f"the Keras model's output varies by {spread:.3g}{unit} at most across the {reference.data} "
            f"(expected more than {CONSTANT_SPREAD * scale:.3g}): it answers one constant, so a "
            f"variant agreeing with it proves nothing about the variant (an untrained model? "
            f"inputs not as in training?)"
        )
        if not allow_constant:
            raise ConstantOutputError(
                f"Nothing exported: {message}; pass --allow-constant (allow_constant=True) to "
                f"export it anyway"
            )
        logger.warning("exporting anyway (--allow-constant): %s", message)
    if head.kind == "regression":
        return
    labels = decide(head, reference.proba, head.threshold)
    for unit in range(labels.shape[1]):
        seen = np.unique(labels[:, unit])
        if len(seen) == 1:
            which = "" if labels.shape[1] == 1 else f" for {head.labels[unit]!r}"
            logger.warning(
                "every sample of the %s is decided %s%s by the Keras model at threshold %s: the "
                "gate never sees the other decision, so it is untested; give validation data "
                "with both sides of the threshold",
                reference.data, int(seen[0]), which, head.threshold,
            )  # fmt: skip


_SCOPE = re.compile(r"([A-Za-z][\w.-]*)/")


def _keras_layer(model: Any, text: str) -> str | None:
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


def _report(progress: Progress | None, step: int, total: int, message: str) -> None:
    logger.info("[%d/%d] %s", step, total, message)
    if progress is not None:
        progress(step, total, message)


def _own_names() -> set[str]:
    """Every name an export writes into its folder, whichever variants it made."""
    ids = [f"{fmt}-{precision}" for fmt in FORMATS for precision in ("fp32", *QUANTIZATIONS)]
    files = {f"{vid}{EXTENSIONS[vid.split('-')[0]]}" for vid in ids}
    return files | {MANIFEST_NAME, REPORT_NAME, GOLDEN_NAME, LOGS}
