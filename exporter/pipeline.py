"""The export after its first stage (:mod:`keras_edge.exporter.prepare`), as plain steps on one
small object: convert each variant, stage it with its decision record, gate it, fall back to
mixed precision, tune its threshold, write the golden set, install the release.

Files are staged in a folder beside ``out`` and moved into place at the end: a bad input
leaves nothing half-written; a failed gate still writes everything. A variant a format cannot
express (:class:`UnsupportedOpError`) is left out with its reason in the manifest's
``refused``; one a converter or engine fails on is left out the same way, the rest are written,
and :class:`PartialExportError` (exit code 1) names it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from keras_edge import runtime
from keras_edge.exporter import (
    _tf,
    artifacts,
    decision,
    embed,
    golden,
    kernels,
    mixed,
    parity,
    platforms,
    refusals,
    to_onnx,
    to_tflite,
)
from keras_edge.exporter.errors import (
    ConversionError,
    TuningError,
    UnsupportedOpError,
)
from keras_edge.exporter.options import ExportOptions, Progress
from keras_edge.exporter.prepare import Job
from keras_edge.runtime import embedded
from keras_edge.runtime.data import rows
from keras_edge.runtime.errors import KerasEdgeError
from keras_edge.runtime.manifest import Kernels, Manifest, Parity, Variant, sha256_file
from keras_edge.runtime.report import REPORT_NAME, report_json

logger = logging.getLogger(__name__)

EXTENSIONS = {"tflite": ".tflite", "onnx": ".onnx"}
# What an engine raises when it cannot load or run an artifact (they raise untyped errors).
ENGINE_ERRORS = (KerasEdgeError, RuntimeError, ValueError)


class Pipeline:
    """One export's conversions and gates. :meth:`run` is the whole sequence; each step reads
    and writes the attributes below, in that order."""

    def __init__(self, job: Job, options: ExportOptions, staging: Path, progress: Progress | None):
        self.job, self.options, self.staging, self.progress = job, options, staging, progress
        self.plan = options.variant_ids()
        self.variants: dict[str, Variant] = {}  # staged, with their current bytes' hash
        self.originals: dict[str, bytes] = {}  # converter output, before the decision record
        self.refused: dict[str, str] = {}  # variant -> why it was not written
        self.faults: list[str] = []  # of those, the ones a converter or engine failed on
        self.checked: dict[str, Variant] = {}  # gated, with their parity
        self.answers: dict[str, np.ndarray] = {}  # per-sample answers, for the golden set
        self.quantizers: dict[str, Any] = {}  # calibrated int8 quantizers, for the fallback
        self.kernels: dict[str, Kernels] = {}  # full-int8 TFLite: how XNNPACK takes it
        self.layer_scores: dict[str, float] = {}  # mixed precision's ranking, by Keras layer
        self.samples = [rows(job.x_check, slice(i, i + 1)) for i in range(len(job.x_check[0]))]
        self._onnx_fp32: Any = None  # tf2onnx runs once; the quantized ONNX variants start from it
        self.normalizations = platforms.normalizations(
            job.keras_model, job.specs, job.x_check, job.reference.source, options.input_normalization
        )  # fmt: skip
        self.manifest = Manifest(
            model=job.info, inputs=job.specs, head=job.head, variants={}, default_variant=None,
            tools=_tools({p for _, _, p in self.plan}, set(options.formats)),
        )  # fmt: skip
        if "tflite" in options.formats and platforms.wants_decision_output(self.manifest):
            for why in platforms.mediapipe_cannot(options.with_decision, options.int8_io):
                logger.warning("%s", why)

    # -- steps ---------------------------------------------------------------------------------
    def run(self, held: contextlib.ExitStack) -> Manifest:
        """Convert, stage, gate (falling back and tuning as asked), then write the manifest,
        the parity report and the golden set into the staging folder; return the manifest."""
        for step, (vid, fmt, precision) in enumerate(self.plan, start=1):
            self.report(step, f"converting {vid}")
            self.convert(vid, fmt, precision, held)
        self.manifest = replace(self.manifest, variants=dict(self.variants))
        self.manifest.write(self.staging)  # provisional: lets runtime.load() read the variants
        self.originals = {vid: (self.staging / v.file).read_bytes() for vid, v in self.variants.items()}
        for step, (vid, fmt, precision) in enumerate(self.plan, start=len(self.plan) + 1):
            if vid in self.variants:
                self.report(step, f"checking {vid} on {self.job.reference.data}")
                self.check(vid, fmt, precision, step, held)
        return self.finish()

    def convert(self, vid: str, fmt: str, precision: str, held: contextlib.ExitStack) -> None:
        """Convert one variant into the staging folder, or record why it was not. ONNX int8
        with the fallback on keeps its calibrated quantizer: should the variant miss its gate,
        mixed precision quantizes again from it (ONNX Runtime calibrates once, in seconds)."""
        job, options = self.job, self.options
        try:
            if fmt == "onnx" and precision == "int8" and options.int8_fallback == "auto":
                quantizer = to_onnx.StaticInt8(self._onnx(), job.specs, job.calibration)
                self.quantizers[vid] = held.enter_context(quantizer)
                data = quantizer.quantize([])
            elif fmt == "onnx":
                if precision == "dynamic" and (why := self.dynamic_pays_nothing()) is not None:
                    self.refused[vid] = why
                    logger.warning("%s not written: %s", vid, why)
                    return
                data = to_onnx.from_fp32(self._onnx(), job.specs, precision, job.calibration)
            else:  # the public converter, int8 too; mixed precision only when the gate fails
                data = to_tflite.convert(job.convertible, precision, job.calibration, options.int8_io)
                if precision == "int8":
                    data = self.covered(vid, data, held)
        except (ConversionError, UnsupportedOpError) as exc:
            self.refuse(vid, "conversion", exc)
            return
        path = self.staging / f"{vid}{EXTENSIONS[fmt]}"
        path.write_bytes(data)
        unchanged = artifacts.quantized_nothing(fmt, precision, data)
        if unchanged:
            logger.warning("%s", unchanged)
        self.variants[vid] = Variant(
            id=vid, file=path.name, format=fmt, precision=precision, sha256=sha256_file(path),
            bytes=len(data), threshold=job.head.threshold, kernels=self.kernels.get(vid),
        )  # fmt: skip

    def covered(self, vid: str, data: bytes, held: contextlib.ExitStack) -> bytes:
        """:meth:`cover_kernels`, or ``data`` as it is when the measurement or the re-quantization
        fails (a file LiteRT cannot load is the gate's to report; a TensorFlow without the
        private quantizer API still ships the public converter's int8)."""
        try:
            return self.cover_kernels(vid, data, held)
        except (ConversionError, *ENGINE_ERRORS) as exc:
            logger.warning("%s: XNNPACK's kernel coverage could not be measured or kept: %s",
                           vid, " ".join(str(exc).split()))  # fmt: skip
            return data

    def cover_kernels(self, vid: str, data: bytes, held: contextlib.ExitStack) -> bytes:
        """A full-int8 TFLite file as XNNPACK runs it in one piece: the ops XNNPACK leaves to
        LiteRT's built-in kernels (an int8 ``HARD_SWISH``: MobileNetV3 split into 19
        partitions, slower than float) are kept in float, which XNNPACK runs between a
        dequantize and a quantize, when that leaves fewer partitions. Measured on the file,
        not from a list: another LiteRT release covers other ops. The quantizer is kept for
        mixed precision, with those ops float in every candidate."""
        full = kernels.partitions(data)
        fp32 = self.staging / f"tflite-fp32{EXTENSIONS['tflite']}"
        # Ops XNNPACK leaves out of the fp32 file too (shape arithmetic) are no int8 gap.
        float_gaps = {op for op, _ in kernels.partitions(fp32.read_bytes()).inner()} if (
            "tflite-fp32" in self.variants) else set()  # fmt: skip
        gaps = [(op, name) for op, name in full.inner() if op not in float_gaps]
        types = sorted({op for op, _ in gaps})
        record = Kernels(
            engine=kernels.ENGINE, partitions=full.count, left_out=dict(full.left_types),
            kept_float={}, int8_partitions=full.count,
        )  # fmt: skip
        self.kernels[vid] = record
        if not types:
            return data
        quantizer = held.enter_context(
            to_tflite.MixedInt8(self.job.convertible, self.job.calibration, self.options.int8_io)
        )
        self.quantizers[vid] = quantizer  # calibrated once: the fallback quantizes from it too
        # The ops left out, by their output tensor (the float model's op keys are those names);
        # by type where the names did not survive quantization.
        names = {name for _, name in gaps}
        pinned = [n for n in quantizer.nodes() if n.key in names]
        if len(pinned) < len(gaps):
            pinned = [n for n in quantizer.nodes() if n.op in types]
        candidate = quantizer.quantize([n.key for n in pinned])
        covered = kernels.partitions(candidate)
        if covered.count >= full.count:
            logger.info("%s: keeping %s in float leaves %s; full int8 kept", vid, types,
                        covered.describe())  # fmt: skip
            return data
        logger.info("%s: %s in full int8; %s kept in float: %s", vid, full.describe(),
                    ", ".join(types), covered.describe())  # fmt: skip
        self.quantizers[vid] = mixed.Pinned(quantizer, [n.key for n in pinned])
        kept: dict[str, int] = {}
        for n in pinned:
            kept[n.op] = kept.get(n.op, 0) + 1
        self.kernels[vid] = replace(
            record, partitions=covered.count, left_out=dict(covered.left_types), kept_float=kept
        )
        return candidate

    def dynamic_pays_nothing(self) -> str | None:
        """Why onnx-dynamic would be fp32 under another name (its quantized ops hold under
        ``MIN_DYNAMIC_SHARE`` of the weights: a CNN), or None when it quantizes enough."""
        share, by_op = to_onnx.dynamic_share(self._onnx())
        if share >= to_onnx.MIN_DYNAMIC_SHARE:
            return None
        heavy = ", ".join(f"{op} {n / max(1, sum(by_op.values())):.0%}" for op, n in
                          sorted(by_op.items(), key=lambda kv: -kv[1])[:3])  # fmt: skip
        return (
            f"dynamic quantization would make int8 only {share * 100:.2g}% of the weights (it "
            f"quantizes {'/'.join(to_onnx.DYNAMIC_OP_TYPES)}; ONNX Runtime's ConvInteger runs "
            f"5-9x slower than float Conv on CPU, so convolutions stay float), and the weights "
            f"here are {heavy}: the file would be onnx-fp32's size and speed; onnx-int8 "
            f"(static) is the quantized ONNX variant for this model"
        )

    def _onnx(self) -> Any:
        """The fp32 ONNX graph, converted once; a conversion error is kept and raised again
        for every ONNX variant, which are refused for the same reason."""
        if self._onnx_fp32 is None:
            try:
                self._onnx_fp32 = to_onnx.to_fp32_proto(self.job.convertible, self.job.specs)
            except (ConversionError, UnsupportedOpError) as exc:
                self._onnx_fp32 = exc
        if isinstance(self._onnx_fp32, KerasEdgeError):
            raise self._onnx_fp32
        return self._onnx_fp32

    def ship(self, vid: str, threshold: Any, tuned: dict | None = None) -> runtime.Classifier:
        """Stage the bytes that ship, decision record (and class output) inside, with
        ``threshold`` (and the tuning record that chose it); load them. The gate then checks
        these bytes, not a draft of them: a class output can change how an engine fuses the
        graph (ONNX Runtime's int8 Softmax moved by one output step when the output got a
        second consumer)."""
        v = replace(self.variants[vid], threshold=threshold, tuning=tuned)
        data = _decided(self.originals[vid], self.manifest, v, self.options.with_decision,
                        self.normalizations)  # fmt: skip
        (self.staging / v.file).write_bytes(data)
        self.variants[vid] = replace(v, sha256=sha256_file(self.staging / v.file), bytes=len(data))
        replace(self.manifest, variants=dict(self.variants)).write(self.staging)
        return runtime.load(self.staging, variant=vid, threads=1)

    def load(self, vid: str, threshold: Any) -> runtime.Classifier:
        """Ship ``vid`` and run it once: an artifact that loads but cannot run fails here."""
        clf = self.ship(vid, threshold)
        clf.predict(self.samples[0])
        return clf

    def check(
        self, vid: str, fmt: str, precision: str, step: int, held: contextlib.ExitStack
    ) -> None:
        """Gate one staged variant; an int8 one that misses it falls back to mixed precision."""
        try:
            clf = self.load(vid, self.variants[vid].threshold)
        except ENGINE_ERRORS as exc:
            self.refuse(vid, "loading in its engine", exc)
            (self.staging / self.variants[vid].file).unlink()
            del self.variants[vid]
            return
        result, per_sample = self.measure(vid, clf, precision)
        if not result.passed and precision == "int8" and self.options.int8_fallback == "auto":
            result, per_sample = self.fall_back(vid, fmt, step, (result, per_sample), held)
        self.answers[vid] = per_sample
        if not result.passed and precision == "int8" and self.job.problems:
            result = replace(result, failures=(*result.failures, *self.job.problems))
        self.checked[vid] = replace(self.variants[vid], parity=result)

    def measure(self, vid: str, clf: runtime.Classifier, precision: str) -> tuple[Parity, np.ndarray]:
        """The gate on the shipped bytes of ``vid`` (its own threshold tuned first, when asked):
        its parity and its per-sample answers."""
        head = self.job.head
        answer = clf.outputs
        # One call per sample, as a device calls the model; then one call for the whole set,
        # because some variants answer differently when samples share a batch.
        per_sample = np.concatenate([answer(sample) for sample in self.samples])
        clf, tuning_failure = self.tune(vid, clf, per_sample, answer)
        decides = any(h.kind != "regression" for h in head.heads)
        labels = np.concatenate([clf.decisions(s) for s in self.samples]) if decides else None
        everything = rows(self.job.x_check, slice(None))
        result = parity.compare(
            head, self.job.reference, per_sample, precision, self.variants[vid].threshold,
            self.options.min_agreement, batch_proba=answer(everything), labels=labels,
            batch_labels=clf.decisions(everything) if decides else None,
        )  # fmt: skip
        if result.batch_flips != result.flips:
            logger.warning(
                "%s decides differently when samples share a batch: %d flips with one call "
                "per sample, %d with one call for all %d (ONNX Runtime's dynamic "
                "quantization, for one, takes activation scales from each call's batch)",
                vid, result.flips, result.batch_flips, len(self.samples),
            )  # fmt: skip
        if tuning_failure is not None:
            result = replace(result, passed=False, failures=(*result.failures, tuning_failure))
        return result, per_sample

    def tune(
        self, vid: str, clf: runtime.Classifier, per_sample: np.ndarray, answer: Any
    ) -> tuple[runtime.Classifier, str | None]:
        """The variant's own threshold, tuned on its own scores and written into it (only a
        constant of the graph changes: its scores must not). (classifier, failure or None)."""
        plan = self.job.tuning
        if plan is None:
            return clf, None
        try:
            tuned = plan.tune_variant(clf, self.variants[vid], per_sample)
            clf = self.ship(vid, tuned.threshold, tuned.tuning)
            again = np.concatenate([answer(sample) for sample in self.samples])
            if not np.array_equal(again, per_sample):
                raise TuningError(
                    f"its scores changed when its tuned threshold was written into it "
                    f"(largest change {float(np.abs(again - per_sample).max()):.3g})"
                )
        except TuningError as exc:
            return clf, f"its own threshold could not be tuned: {exc}"
        return clf, None

    def fall_back(
        self, vid: str, fmt: str, step: int, full: tuple[Parity, np.ndarray],
        held: contextlib.ExitStack,
    ) -> tuple[Parity, np.ndarray]:  # fmt: skip
        """Mixed precision for an int8 variant that missed its gate (see ``mixed``): the
        fewest layers kept in float that pass the same gate on the shipped bytes, or, when
        nothing passes (or nothing can be tried), the full-int8 variant as it was."""
        search = _Search(self, vid, *full)
        started = time.perf_counter()
        outcome, failure = None, None
        try:
            quantizer = self.quantizers.get(vid) or held.enter_context(self._quantizer(fmt))
            outcome, ranking = mixed.fall_back(
                quantizer, self.job.convertible, self.job.x_check, self.job.input_names,
                search.gate, lambda message: self.report(step, f"{vid} int8 fallback: {message}"),
                scores=self.layer_scores,
            )  # fmt: skip
            if not self.layer_scores:  # the first format's: the other one's fallback reuses it
                self.layer_scores = ranking.scores()
        except ENGINE_ERRORS as exc:  # converters raise untyped errors; private APIs may lack
            logger.warning("%s: mixed precision could not be tried: %s", vid, exc)
            failure = f"mixed precision could not be tried: {' '.join(str(exc).split())}"
        search.settle(None if outcome is None else outcome.data)
        logger.info("%s: int8 fallback searched for %.1f s", vid, time.perf_counter() - started)
        if outcome is not None:
            if outcome.data is not None:
                self.recheck_speed(vid, fmt, outcome)
            if outcome.data is not None and outcome.float_ops * 2 > outcome.ops:
                logger.warning(
                    "%s passes its gate only with %d of its %d ops in float: little of int8's "
                    "size and speed is left", vid, outcome.float_ops, outcome.ops,
                )  # fmt: skip
            failure = outcome.failure(int8_input=fmt == "tflite" and self.options.int8_io)
            record = outcome.record(search.full_bytes, full[0].label_agreement)
            self.variants[vid] = replace(self.variants[vid], fallback=record)
            kept = self.variants[vid].kernels
            if kept is not None and outcome.data is not None:  # the partitions of what ships
                try:
                    now = kernels.partitions(outcome.data)
                    self.variants[vid] = replace(self.variants[vid], kernels=replace(
                        kept, partitions=now.count, left_out=dict(now.left_types)))  # fmt: skip
                except ENGINE_ERRORS as exc:
                    logger.warning("%s: partitions of the mixed-precision file not measured: %s",
                                   vid, exc)  # fmt: skip
        final = search.result
        if failure is not None:
            final = replace(final, failures=(*final.failures, failure))
        return final, search.per_sample

    def recheck_speed(self, vid: str, fmt: str, outcome: mixed.Outcome) -> None:
        """Time the mixed-precision file against its format's fp32 (batch 1, one thread, on this
        machine) and warn when the layers kept in float made it no faster: it then passes its
        gate but has only its size to offer. Logged, not recorded: timings are not
        reproducible, and the manifest is."""
        fp32 = f"{fmt}-fp32"
        if fp32 not in self.variants or outcome.data is None:
            return
        if fmt == "tflite" and self.options.int8_io:
            logger.info("%s: speed not re-checked (int8 input: the fp32 file takes floats)", vid)
            return
        reference = (self.staging / self.variants[fp32].file).read_bytes()
        try:
            ratio = kernels.relative_time(fmt, outcome.data, reference, self.job.x_check,
                                          self.job.input_names)  # fmt: skip
        except ENGINE_ERRORS as exc:
            logger.info("%s: speed not re-checked: %s", vid, exc)
            return
        groups = len(outcome.groups)
        message = f"with {groups} layer group(s) in float it runs at {ratio:.2f}x {fp32}'s time"
        if ratio >= 1.0:
            logger.warning("%s %s here (batch 1, one thread): no faster than float", vid, message)
        else:
            logger.info("%s %s here (batch 1, one thread)", vid, message)

    def _quantizer(self, fmt: str) -> Any:
        """The calibrated quantizer mixed precision searches with: TensorFlow's calibrate-only
        converter and MLIR quantizer (private APIs) for TFLite, ONNX Runtime's static
        quantizer for ONNX. Made only when an int8 variant misses its gate."""
        job = self.job
        if fmt == "tflite":
            return to_tflite.MixedInt8(job.convertible, job.calibration, self.options.int8_io)
        return to_onnx.StaticInt8(self._onnx(), job.specs, job.calibration)

    def finish(self) -> Manifest:
        """The golden set, the final manifest and the parity report, in the staging folder."""
        if not self.checked:  # nothing to write: fail before anything is installed
            reasons = "; ".join(
                f"{vid}: {why.split(f' (converter output: {refusals.LOGS}/')[0]}"
                for vid, why in self.refused.items()
            )  # the logs go with the staging folder: their lines were shown as warnings
            error = ConversionError if self.faults else UnsupportedOpError
            raise error(f"No variant could be made, nothing was written: {reasons}")
        job = self.job
        passed = [vid for vid, v in self.checked.items() if v.passed]
        smallest = min((v.bytes for v in self.checked.values()), default=None)
        info = golden.write(self.staging, job.head, job.x_check, job.input_names,
                            job.reference.proba, self.answers, job.reference.data,
                            smallest)  # fmt: skip
        self.manifest = replace(
            self.manifest.with_variants(self.checked, passed[0] if passed else None, job.coverage),
            golden=info,
            refused=dict(self.refused),
            tuning=None if job.tuning is None else job.tuning.record(),
        )
        self.manifest.write(self.staging)
        (self.staging / REPORT_NAME).write_text(report_json(self.manifest), encoding="utf-8")
        return self.manifest

    # -- helpers -------------------------------------------------------------------------------
    def report(self, step: int, message: str) -> None:
        logger.info("[%d/%d] %s", step, len(self.plan) * 2, message)
        if self.progress is not None:
            self.progress(step, len(self.plan) * 2, message)

    def refuse(self, vid: str, step: str, exc: Exception) -> None:
        """Record why ``vid`` is not written (see :func:`refusals.record`)."""
        refusals.record(vid, step, exc, self.job.keras_model, self.staging, self.refused, self.faults)


class _Search:
    """The mixed-precision search's view of one variant: each candidate's bytes shipped and
    gated as the variant's own (``gate``), and the last one staged put right at the end."""

    def __init__(self, pipeline: Pipeline, vid: str, result: Parity, per_sample: np.ndarray):
        self.pipeline, self.vid = pipeline, vid
        self.full = pipeline.originals[vid]
        self.full_bytes = pipeline.variants[vid].bytes
        self.staged: bytes = self.full  # the bytes staged now, and their gate's answers
        self.result: Parity = result
        self.per_sample: np.ndarray = per_sample

    def gate(self, data: bytes) -> Parity | None:
        p = self.pipeline
        p.originals[self.vid] = self.staged = data
        try:
            clf = p.load(self.vid, p.job.head.threshold)
        except ENGINE_ERRORS as exc:
            logger.warning("%s: a mixed-precision candidate did not load: %s", self.vid, exc)
            self.result, self.per_sample = None, None  # type: ignore[assignment]
            return None
        self.result, self.per_sample = p.measure(self.vid, clf, "int8")
        return self.result

    def settle(self, chosen: bytes | None) -> None:
        """Stage the chosen bytes (the full-int8 file when nothing passed), gated again if the
        last candidate tried was another."""
        chosen = self.full if chosen is None else chosen
        if self.staged is not chosen:
            self.gate(chosen)


def _decided(data: bytes, manifest: Manifest, variant: Variant, with_decision: bool,
             norms: dict[str, platforms.Normalization]) -> bytes:  # fmt: skip
    """The artifact's bytes with the variant's decision record inside, with ``with_decision``
    its ``class`` output, and what the platforms' own runtimes read (:mod:`.platforms`): a
    TFLite file's decision output first, its standard metadata and label files last (they are
    appended after the flatbuffer, which nothing may re-pack afterwards)."""
    head, record = manifest.head, embedded.record(manifest, variant)
    if with_decision and head.kind != "regression":
        add = decision.into_onnx if variant.format == "onnx" else decision.into_tflite
        data = add(data, head, variant.threshold)
    decided = platforms.wants_decision_output(manifest)
    if variant.format == "onnx":
        spec = manifest.inputs[0]
        return platforms.into_onnx(embed.into_onnx(data, record), head, variant.threshold, decided,
                                   norms.get(spec.name), int(spec.shape[-1] or 1))  # fmt: skip
    if decided:
        data = platforms.decision_outputs(data, head, variant.threshold)
    return platforms.standard_metadata(embed.into_tflite(data, record), manifest, variant, norms)


def _tools(precisions: set[str], formats: set[str]) -> dict[str, str]:
    names = ["keras", "keras-edge", "numpy", "tensorflow"]
    if "tflite" in formats:
        names.append("ai-edge-litert")
    if "onnx" in formats:
        names += ["tf2onnx", "onnx", "onnxruntime"]
        if "fp16" in precisions:
            names.append("onnxconverter-common")
    return {name: _tf.version(name) for name in sorted(names)}
