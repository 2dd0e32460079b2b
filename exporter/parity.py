"""One parity function for every variant: does the artifact decide as the Keras model does?

The gate is decision-first; its numbers and its decision rule live in
:mod:`keras_edge.runtime.gate`, shared with ``keras-edge verify`` on the device.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from keras_edge.exporter.golden import distance_to_decision
from keras_edge.runtime.gate import (
    MIN_AGREEMENT,
    NEAR_BAND,
    TOLERANCES,
    decide,
    near_tie_band,
    regression_tolerance,
    resolution_note,
)
from keras_edge.runtime.manifest import Head, Parity

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reference:
    """What the variants are compared against: Keras probabilities on some inputs."""

    proba: np.ndarray
    labels: np.ndarray | None
    data: str
    source: str | None = None  # validation, calibration or synthetic (see Parity.source)


def to_probability(head: Head, raw: np.ndarray) -> np.ndarray:
    """Keras raw outputs as probabilities (sigmoid/softmax for logit heads)."""
    if head.output != "logit":
        return raw.astype(np.float32)
    z = raw.astype(np.float64)
    if head.kind == "multiclass":
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
    return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)


def _accuracy(head: Head, labels: np.ndarray, y: np.ndarray) -> float | None:
    if head.kind == "regression" or len(y) == 0:
        return None
    y = np.asarray(y)
    if head.kind == "multiclass" and y.ndim == 2 and y.shape[1] > 1:
        y = y.argmax(axis=1)  # one-hot
    return float((labels == y.reshape(labels.shape).astype(np.int64)).mean())


def compare(
    head: Head,
    reference: Reference,
    proba: np.ndarray,
    precision: str,
    threshold: float | tuple[float, ...] | None,
    min_agreement: float | None = None,
    tolerance: float | None = None,
    batch_proba: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    batch_labels: np.ndarray | None = None,
) -> Parity:
    """Parity of one variant's probabilities ``proba`` (one call per sample) against
    ``reference``; ``batch_proba`` (one call for all samples) is compared and recorded too.

    ``labels`` / ``batch_labels`` are the variant's decisions as the runtime's ``predict()``
    made them (the code that ships: the fast path, the integer cut of an int8 output, the logit
    cut); without them the decisions are derived from the probabilities by the same rule."""
    if labels is None:
        labels = decide(head, proba, threshold)
    labels = labels.reshape(len(proba), -1)
    if batch_proba is not None and batch_labels is None:
        batch_labels = decide(head, batch_proba, threshold)
    if batch_labels is not None:
        batch_labels = batch_labels.reshape(len(proba), -1)
    tol = TOLERANCES[precision] if tolerance is None else tolerance
    need = MIN_AGREEMENT[precision] if min_agreement is None else min_agreement
    ref = reference.proba
    n = len(ref)
    diff = np.abs(proba.astype(np.float64) - ref.astype(np.float64))
    max_diff = float(diff.max()) if n else 0.0
    mean_diff = float(diff.mean()) if n else 0.0
    rtol = None
    if head.kind == "regression":
        # Values, not probabilities: an absolute and a relative tolerance (see gate.py).
        if tolerance is None:
            tol, rtol = regression_tolerance(precision, ref)
        allowed = tol + (rtol or 0.0) * np.abs(ref.astype(np.float64))
        flipped = (diff > allowed).any(axis=1)
        distance = np.full(n, np.inf)
    else:
        ref_labels = decide(head, ref, head.threshold)
        flipped = (ref_labels != labels).any(axis=1)
        distance = distance_to_decision(head, ref)
    flips = int(flipped.sum())
    # Near-ties: flips closer to the threshold than the variant's output can resolve. They are
    # counted and shown apart, never against the agreement minimum (see near_tie_band()).
    band = near_tie_band(precision, head, threshold)
    ties = int((flipped & (distance <= band)).sum())
    near = int((flipped & (distance <= NEAR_BAND)).sum())
    agreement = 1.0 - flips / n if n else 1.0
    gate_agreement = 1.0 - (flips - ties) / n if n else 1.0

    failures = []
    if head.kind == "regression":
        if flips:
            failures.append(
                f"{flips} of {n} samples have values further from Keras's than {tol:.3g} + "
                f"{rtol or 0:.3g} x |value| (largest difference {max_diff:.3g})"
            )
    elif gate_agreement < need:
        failures.append(
            f"label agreement {agreement:.4%} ({flips} flips of {n}, {ties} of them near-ties "
            f"within {band:.2g} of the threshold) is below the required {need:.2%}; "
            f"{resolution_note(n, need)}"
        )
    if head.kind != "regression" and max_diff > tol:
        failures.append(f"max abs probability difference {max_diff:.3g} exceeds tolerance {tol:.3g}")
    batch_flips = batch_max_diff = None
    if batch_proba is not None:
        batch_diff = np.abs(batch_proba.astype(np.float64) - ref.astype(np.float64))
        batch_max_diff = float(batch_diff.max()) if n else 0.0
        if head.kind == "regression":
            batch_flips = int((batch_diff > allowed).any(axis=1).sum())
        else:
            batch_flips = int((decide(head, ref, head.threshold) != batch_labels).any(axis=1).sum())
    accuracy = reference_accuracy = None
    if reference.labels is not None:
        accuracy = _accuracy(head, labels, reference.labels)
        reference_accuracy = _accuracy(head, decide(head, ref, head.threshold), reference.labels)
    return Parity(
        n=n,
        max_abs_diff=max_diff,
        mean_abs_diff=mean_diff,
        label_agreement=agreement,
        flips=flips,
        flips_near_threshold=near,
        near_threshold_band=NEAR_BAND,
        near_ties=ties if head.kind != "regression" else 0,
        near_tie_band=band,
        tolerance=tol,
        relative_tolerance=rtol,
        min_agreement=need,
        passed=not failures,
        data=reference.data,
        source=reference.source,
        accuracy=accuracy,
        reference_accuracy=reference_accuracy,
        batch_flips=batch_flips,
        batch_max_abs_diff=batch_max_diff,
        failures=tuple(failures),
    )
