"""The decision-fidelity gate's numbers and rule, shared by the export (which checks every
variant against Keras) and ``keras-edge verify`` (which checks them again on a device).

A variant passes at export when its label agreement with Keras (flips at exact ties excused,
see ``TIE_BAND``) reaches its precision's minimum and its largest probability error is within
its precision's tolerance. On a device, it must stay within the same tolerance of Keras and
within ``DRIFT`` of what it answered at export.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from keras_edge.runtime.manifest import Head

# Largest |p_variant - p_keras| allowed, per precision.
TOLERANCES = {
    # Same float32 math in another order (XNNPACK, MLAS): ~1e-7 on in-domain data (seed MLP,
    # breast-cancer MLP). Large activations magnify it: a Normalization layer fed the probe
    # set's out-of-domain inputs reached 1.9e-5. 1e-4 still flags any real conversion error.
    "fp32": 1e-4,
    # float16 keeps 11 significant bits (relative error ~5e-4 per weight); through a few
    # layers and a sigmoid that stays under 1e-2.
    "fp16": 1e-2,
    # int8 weights (255 levels per tensor). ONNX Runtime also quantizes activations to uint8
    # per call, with a scale from the batch's own range: measured 0.034 (seed MLP) and 0.065
    # (breast-cancer MLP); TFLite keeps activations float (~2e-3).
    "dynamic": 1e-1,
    # Inputs and activations quantized too, output in steps of 1/256. For int8 the decisions
    # are the criterion (MIN_AGREEMENT below); this bound only catches a gross error. Samples
    # near the threshold move most (the sigmoid is steepest there): trained full-int8
    # backbones measured 0.16 (MobileNetV3Small) and 0.23-0.245 (EfficientNetB0) at 99.75%
    # agreement, mean 0.008-0.01. 0.1 made mixed precision keep layers in float that no
    # decision needed, and cost int8 its speed (issue 22).
    "int8": 3e-1,
}
# Largest mean |p_variant - p_keras| over the samples, for the precisions whose largest single
# difference is allowed to be large (int8: see above). The max bound lets the few samples at the
# threshold move; this one keeps the rest where apps that read probabilities need them. Trained
# full-int8 backbones measured 0.008-0.012; a wrong output scale or clipped input range moves
# every answer. Applied at export, on the parity data (see judge).
MEAN_TOLERANCES = {"int8": 3e-2}
# Minimum label agreement with Keras, per precision (overridable with --min-agreement).
MIN_AGREEMENT = {"fp32": 1.0, "fp16": 0.999, "dynamic": 0.999, "int8": 0.99}
# A flip whose Keras probability lies within this distance of the threshold is a tie decided
# by float rounding (within fp32's tolerance), not a different decision: it is not held against
# any variant. Lower precisions cannot resolve finer than their output's own step: see
# near_tie_band().
TIE_BAND = TOLERANCES["fp32"]
# One step of a full-int8 probability output (a sigmoid or softmax quantized to 256 levels of
# [0, 1]): two answers closer than this are the same int8 value.
INT8_PROBABILITY_STEP = 1 / 256
# Flips within this distance of the threshold are reported as "near": the model is unsure there.
NEAR_BAND = 0.05
# Largest |p_device - p_at_export| that another machine's engine build, CPU kernels (ARM NEON
# against x86 AVX) and thread count can explain, per precision. The same artifact on the same
# machine answers bit for bit; anything beyond these is a different artifact or a broken engine.
DRIFT = {
    # Reordered float32 sums: ~1e-6 after a sigmoid; 1e-4 is the export's own fp32 tolerance.
    "fp32": 1e-4,
    # Kernels that keep float16 activations (ARM's native fp16) round each layer to 11 bits.
    "fp16": 5e-3,
    # ONNX Runtime's integer matmul differs by platform (u8s8 on ARM and AVX-VNNI, u8u8 else).
    "dynamic": 2e-2,
    # Integer kernels may round one requantization differently: two output steps of 1/256.
    "int8": 2 / 256,
}

# A regression output has no threshold: each value must lie within atol * S + rtol * |y| of
# Keras's y, where S = max(1, max |y|) is the output's scale. Float rounding is relative (an
# output near 1e4 moves by ~1e-3 from float32 rounding alone); quantization error scales with
# the range an int8 tensor spans. (atol, rtol) per precision:
REGRESSION_TOLERANCES = {
    "fp32": (1e-6, 1e-5),  # float32 keeps 24 bits; a few layers of rounding stay under 1e-5
    "fp16": (1e-3, 1e-2),  # 11 bits: ~5e-4 relative per layer
    "dynamic": (2e-2, 2e-2),  # activations quantized per call to 256 levels of their range
    "int8": (2e-2, 2e-2),  # output in steps of S/128 or finer: a few steps
}


def regression_tolerance(precision: str, reference: np.ndarray) -> tuple[float, float]:
    """(absolute, relative) tolerance for a regression head's values against ``reference``."""
    atol, rtol = REGRESSION_TOLERANCES[precision]
    scale = max(1.0, float(np.abs(reference).max())) if reference.size else 1.0
    return atol * scale, rtol


def sigmoid(z: np.ndarray) -> np.ndarray:
    """The logistic function in float64, as float32: what a logit head's probability is."""
    return (1.0 / (1.0 + np.exp(-z.astype(np.float64)))).astype(np.float32)


def softmax(z: np.ndarray) -> np.ndarray:
    """Softmax over the last axis of (n, k) logits, in float64, as float32."""
    shifted = z.astype(np.float64) - z.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def to_probability(head: Head, raw: np.ndarray) -> np.ndarray:
    """Raw outputs as probabilities: sigmoid (softmax for multiclass) for a logit head, as they
    are (float32) for the others. The runtime and the exporter's reference both use it. For
    several heads, each head's columns as that head's."""
    if head.parts:
        columns = zip(head.parts, head.slices(), strict=True)
        return np.hstack([to_probability(p, raw[:, s]) for p, s in columns])
    if head.output != "logit":
        return raw.astype(np.float32)
    return softmax(raw) if head.kind == "multiclass" else sigmoid(raw)


def decide(head: Head, proba: np.ndarray, threshold: float | tuple[float, ...] | None) -> np.ndarray:
    """Labels by the runtime's rule, as an (n, k) int array (k = 1 for binary/multiclass).
    Multiclass with a threshold (the minimum confidence) gives -1 where the top p is not above it.
    For several heads, each head's labels side by side (one threshold per head)."""
    if head.parts:
        columns = zip(head.parts, head.slices(), threshold, strict=True)
        return np.hstack([decide(p, proba[:, s], t) for p, s, t in columns])
    if head.kind == "multiclass":
        return multiclass_labels(proba, threshold).reshape(-1, 1)
    if head.kind == "regression":
        return np.zeros((len(proba), 1), dtype=np.int64)
    t = np.asarray(threshold, dtype=np.float32).reshape(1, -1)
    return (proba > t).astype(np.int64)


UNKNOWN = -1  # the class of a multiclass sample whose top probability is not above the threshold
UNKNOWN_LABEL = "unknown"  # its label name


def multiclass_labels(proba: np.ndarray, threshold: float | None) -> np.ndarray:
    """argmax of each row, or ``UNKNOWN`` where the row's top probability is not above
    ``threshold`` (the minimum confidence, float32 as the model's output); int64 (n,)."""
    labels = proba.argmax(axis=1).astype(np.int64)
    if threshold is not None and len(proba):
        labels[proba.max(axis=1) <= np.float32(threshold)] = UNKNOWN
    return labels


def near_tie_band(precision: str, head: Head, threshold: float | tuple[float, ...] | None) -> float:
    """How close to the threshold a Keras probability may lie and its flip still be a near-tie
    that the variant's precision cannot resolve, rather than a different decision.

    float16 output: one float16 step at the threshold (2**-11 = 4.9e-4 at 0.5), the smallest
    move its output can make there. Full int8: one output step, 1/256 for a probability. fp32
    and dynamic (float outputs): ``TIE_BAND``. A logit head's output is not a probability: its
    steps near logit(t) are finer than TIE_BAND in probability, so TIE_BAND it is. For
    multiclass, the distance is the margin between the two best classes (see
    ``distance_to_decision``), and the step is taken at 0.5, where the margin is decided.
    """
    if head.output != "probability" or head.kind == "regression":
        return TIE_BAND
    if precision == "int8":
        return max(TIE_BAND, INT8_PROBABILITY_STEP)
    if precision == "fp16":
        values = threshold if isinstance(threshold, (list, tuple)) else [threshold]
        at = [0.5 if head.kind == "multiclass" or v is None else float(v) for v in values]
        return max(TIE_BAND, *(float(np.spacing(np.float16(t))) for t in at))
    return TIE_BAND


def resolution_note(n: int, need: float) -> str:
    """What a gate on ``n`` samples can tell apart: one flip is 1/n of the agreement."""
    if n == 0:
        return "no samples: the gate proves nothing"
    one = 1 / n
    allowed = int(np.floor((1 - need) * n + 1e-9))
    return (
        f"one flip is {one:.2%} of {n} samples; the minimum {need:.2%} allows {allowed} "
        f"flip(s) beyond near-ties"
    )


def label_names(labels: Sequence[str], classes: np.ndarray) -> np.ndarray:
    """Label names for class indices (n,), ``"unknown"`` for -1 (below the minimum confidence)."""
    names = np.asarray([*labels, UNKNOWN_LABEL], dtype=object)
    return names[np.where(classes == UNKNOWN, len(labels), classes)]


def distance_to_decision(head: Head, proba: np.ndarray) -> np.ndarray | None:
    """How far each row's Keras output is from changing its label: |p - t| (the nearest label's,
    for multilabel), or the margin between the two best classes (and, with a minimum
    confidence, the top probability's distance to it); ``None`` for regression. For several
    heads, the nearest of theirs (``None`` when every head is a regression)."""
    if head.parts:
        columns = zip(head.parts, head.slices(), strict=True)
        found = [distance_to_decision(p, proba[:, s]) for p, s in columns]
        found = [d for d in found if d is not None]
        return np.minimum.reduce(found) if found else None
    if head.kind in ("binary", "multilabel"):
        t = np.asarray(head.threshold, dtype=np.float64).reshape(1, -1)
        return np.abs(proba.astype(np.float64) - t).min(axis=1)
    if head.kind == "multiclass":
        p = proba.astype(np.float64)
        top2 = np.sort(p, axis=1)[:, -2:] if p.shape[1] > 1 else np.zeros((len(p), 2))
        margin = top2[:, 1] - top2[:, 0] if p.shape[1] > 1 else np.full(len(p), np.inf)
        if head.threshold is not None:
            margin = np.minimum(margin, np.abs(p.max(axis=1, initial=0.0) - head.threshold))
        return margin
    return None


@dataclass(frozen=True)
class Verdict:
    """The gate's answer for one variant on one set of inputs, and the numbers behind it."""

    n: int
    max_abs_diff: float
    mean_abs_diff: float
    flips: int  # samples whose decision differs from Keras's (any label, for multilabel)
    near_ties: int  # of them, within ``band`` of the threshold: not counted
    near: int  # of them, within NEAR_BAND: reported
    excused: int  # of them, decided as the variant decided them at export (verify)
    agreement: float
    band: float
    tolerance: float
    relative_tolerance: float | None
    min_agreement: float
    drift: float | None
    failures: tuple[str, ...]
    flipped: np.ndarray | None = field(default=None, repr=False, compare=False)  # per row

    @property
    def passed(self) -> bool:
        return not self.failures


@dataclass(frozen=True)
class Limits:
    """What a variant must meet: None takes its precision's default (``TOLERANCES``,
    ``MIN_AGREEMENT``, ``REGRESSION_TOLERANCES``). ``verify`` passes the ones recorded at
    export, so the device is held to the gate the export applied."""

    tolerance: float | None = None
    relative_tolerance: float | None = None
    min_agreement: float | None = None


def judge(
    head: Head,
    keras: np.ndarray,
    outputs: np.ndarray,
    precision: str,
    threshold: float | tuple[float, ...] | None,
    labels: np.ndarray | None = None,
    limits: Limits = Limits(),
    excused: np.ndarray | None = None,
    at_export: np.ndarray | None = None,
) -> Verdict:
    """The one gate: does a variant whose answers are ``outputs`` (probabilities, or values for
    regression; one call per sample) decide as Keras (``keras``) does? Used by the export on its
    parity data and by ``keras-edge verify`` on the golden set.

    ``labels``: the variant's decisions as the runtime's ``predict()`` made them (the code that
    ships); without them, derived from ``outputs`` at ``threshold``. A flip within the variant's
    near-tie band of the threshold is not counted against the agreement minimum; nor is one in
    ``excused`` (verify: rows the variant decides as it decided them at export, which the
    export's gate accepted, or whose answer at export lay within the drift another machine may
    show of the threshold).
    ``at_export``: the variant's own answers at export, which ``outputs`` must stay within
    ``DRIFT`` of (verify: another engine build or CPU, not another artifact).

    Several heads are judged one by one, each with its own kind's limits; the variant passes
    when every head passes (:func:`_judge_heads`)."""
    if head.parts:
        return _judge_heads(head, keras, outputs, precision, threshold, labels, limits, excused,
                            at_export)  # fmt: skip
    n = len(keras)
    diff = np.abs(outputs.astype(np.float64) - keras.astype(np.float64))
    max_diff = float(diff.max()) if n else 0.0
    tol, rtol, need = _limits(head, precision, keras, limits)
    if head.kind == "regression":
        flipped = (diff > tol + (rtol or 0.0) * np.abs(keras.astype(np.float64))).any(axis=1)
        distance = np.full(n, np.inf)
    else:
        if labels is None:
            labels = decide(head, outputs, threshold)
        flipped = (decide(head, keras, head.threshold) != labels.reshape(n, -1)).any(axis=1)
        distance = distance_to_decision(head, keras)
    band = near_tie_band(precision, head, threshold)
    flips, ties = int(flipped.sum()), int((flipped & (distance <= band)).sum())
    spared = flipped & ~(distance <= band) & (False if excused is None else excused.astype(bool))
    counted = flips - ties - int(spared.sum())
    failures = _failures(head, n, (flips, ties, int(spared.sum()), counted), band, need, max_diff,
                         tol, rtol)  # fmt: skip
    mean_diff, mean_tol = float(diff.mean()) if n else 0.0, MEAN_TOLERANCES.get(precision)
    # At export only: the parity data is the model's own. The golden set verify runs on holds
    # the rows nearest the threshold on purpose, where int8 moves most (EfficientNetB0's
    # tflite-int8: mean 0.010 on its 397 rows, 0.036 on its 32 golden rows); on a device the
    # answers are held to the export's own within DRIFT instead.
    if head.kind != "regression" and at_export is None and mean_tol is not None and mean_diff > mean_tol:
        failures.append(
            f"mean abs probability difference {mean_diff:.3g} exceeds {mean_tol:.3g}: the "
            f"answers are off across the board, not only near the threshold"
        )
    drift = None
    if at_export is not None:
        drift = float(np.abs(outputs.astype(np.float64) - at_export).max()) if n else 0.0
        allowed = drift_band(head, precision, keras)
        if drift > allowed:
            failures.append(
                f"answers moved {drift:.3g} from this variant's own answers at export, more than "
                f"the {allowed:.3g} another engine build or CPU can explain: a different artifact "
                f"or a broken engine"
            )
    return Verdict(
        n=n, max_abs_diff=max_diff, mean_abs_diff=mean_diff, flips=flips,
        near_ties=ties if head.kind != "regression" else 0,
        near=int((flipped & (distance <= NEAR_BAND)).sum()), excused=int(spared.sum()),
        agreement=1.0 - flips / n if n else 1.0, band=band, tolerance=tol, relative_tolerance=rtol,
        min_agreement=need, drift=drift, failures=tuple(failures), flipped=flipped,
    )  # fmt: skip


def _judge_heads(
    head: Head, keras: np.ndarray, outputs: np.ndarray, precision: str, threshold: Any,
    labels: np.ndarray | None, limits: Limits, excused: np.ndarray | None,
    at_export: np.ndarray | None,
) -> Verdict:  # fmt: skip
    """:func:`judge` for several heads: each head on its own columns, at its own threshold and
    its kind's limits (a regression head's values, a probability head's tolerance); it passes
    when every head passes, and the failures name the head. The figures are the variant's: a
    sample flips when any head's decision does (the agreement is the share of samples every
    head decides as Keras), the largest difference is the largest of any head, the mean
    difference is over every unit; near-ties and excused flips are summed over heads."""
    verdicts, columns = [], 0
    for part, s, t in zip(head.parts, head.slices(), threshold, strict=True):
        width = 1 if part.kind in ("binary", "multiclass", "regression") else part.units
        own = None if labels is None else labels[:, columns : columns + width]
        columns += width
        own_excused = excused[:, len(verdicts)] if excused is not None and excused.ndim == 2 else excused
        verdicts.append(judge(
            part, keras[:, s], outputs[:, s], precision, t, own, limits, own_excused,
            None if at_export is None else at_export[:, s],
        ))  # fmt: skip
    n = len(keras)
    flipped = np.logical_or.reduce([v.flipped for v in verdicts if v.flipped is not None])
    flips = int(flipped.sum()) if n else 0
    failures = tuple(
        f"head {part.name!r}: {failure}"
        for part, v in zip(head.parts, verdicts, strict=True)
        for failure in v.failures
    )
    drifts = [v.drift for v in verdicts if v.drift is not None]
    units = [part.units for part in head.parts]
    return Verdict(
        n=n, max_abs_diff=max(v.max_abs_diff for v in verdicts),
        mean_abs_diff=float(np.average([v.mean_abs_diff for v in verdicts], weights=units)),
        flips=flips, near_ties=sum(v.near_ties for v in verdicts), near=sum(v.near for v in verdicts),
        excused=sum(v.excused for v in verdicts), agreement=1.0 - flips / n if n else 1.0,
        band=max(v.band for v in verdicts), tolerance=max(v.tolerance for v in verdicts),
        relative_tolerance=None, min_agreement=max(v.min_agreement for v in verdicts),
        drift=max(drifts) if drifts else None, failures=failures, flipped=flipped,
    )  # fmt: skip


def drift_band(head: Head, precision: str, keras: np.ndarray) -> float:
    """How far a variant's answers may move from its own at export on another machine."""
    return DRIFT[precision] * (_scale(keras) if head.kind == "regression" else 1.0)


def _scale(values: np.ndarray) -> float:
    return max(1.0, float(np.abs(values).max())) if values.size else 1.0


def _limits(
    head: Head, precision: str, keras: np.ndarray, limits: Limits
) -> tuple[float, float | None, float]:
    """(tolerance, relative tolerance, minimum agreement): the limits given, else the defaults."""
    need = MIN_AGREEMENT[precision] if limits.min_agreement is None else limits.min_agreement
    if head.kind != "regression":
        tol = TOLERANCES[precision] if limits.tolerance is None else limits.tolerance
        return tol, None, need
    if limits.tolerance is not None and limits.relative_tolerance is not None:
        return limits.tolerance, limits.relative_tolerance, need
    tol, rtol = regression_tolerance(precision, keras)
    return (tol if limits.tolerance is None else limits.tolerance), rtol, need


def _failures(
    head: Head, n: int, counts: tuple[int, int, int, int], band: float, need: float,
    max_diff: float, tol: float, rtol: float | None,
) -> list[str]:  # fmt: skip
    """The gate's sentences: what failed, with the numbers. ``counts``: flips, near-ties,
    excused flips, and the flips held against the minimum."""
    flips, ties, excused, counted = counts
    failures = []
    if head.kind == "regression":
        if flips:
            failures.append(
                f"{flips} of {n} samples have values further from Keras's than {tol:.3g} + "
                f"{rtol or 0:.3g} x |value| (largest difference {max_diff:.3g})"
            )
        return failures
    if (1.0 - counted / n if n else 1.0) < need:
        failures.append(
            f"label agreement {1.0 - flips / n:.4%} ({flips} flips of {n}, {ties} of them "
            f"near-ties within {band:.2g} of the threshold"
            + (f", {excused} decided as at export" if excused else "")
            + f") is below the required {need:.2%}; {resolution_note(n, need)}"
        )
    if max_diff > tol:
        failures.append(f"max abs probability difference {max_diff:.3g} exceeds tolerance {tol:.3g}")
    return failures
