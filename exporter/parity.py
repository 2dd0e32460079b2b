"""One parity function for every variant: does the artifact decide as the Keras model does?

The gate is decision-first; its numbers and its decision rule live in
:mod:`keras_edge.runtime.gate`, shared with ``keras-edge verify`` on the device.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from keras_edge.runtime.gate import NEAR_BAND, Limits, decide, judge
from keras_edge.runtime.manifest import Head, Parity

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reference:
    """What the variants are compared against: Keras probabilities on some inputs."""

    proba: np.ndarray
    labels: np.ndarray | None
    data: str
    source: str | None = None  # validation, calibration or synthetic (see Parity.source)


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
    ``reference``, by the one gate (:func:`keras_edge.runtime.gate.judge`); ``batch_proba``
    (one call for all samples) is judged and recorded too.

    ``labels`` / ``batch_labels`` are the variant's decisions as the runtime's ``predict()``
    made them (the code that ships: the fast path, the integer cut of an int8 output, the logit
    cut); without them the decisions are derived from the probabilities by the same rule."""
    limits = Limits(tolerance=tolerance, min_agreement=min_agreement)
    verdict = judge(head, reference.proba, proba, precision, threshold, labels, limits)
    batch = None
    if batch_proba is not None:
        batch = judge(head, reference.proba, batch_proba, precision, threshold, batch_labels, limits)
    if labels is None:
        labels = decide(head, proba, threshold)
    accuracy = reference_accuracy = None
    if reference.labels is not None and not head.parts:  # several heads: no one accuracy
        accuracy = _accuracy(head, labels.reshape(len(proba), -1), reference.labels)
        keras_labels = decide(head, reference.proba, head.threshold)
        reference_accuracy = _accuracy(head, keras_labels, reference.labels)
    return Parity(
        n=verdict.n,
        max_abs_diff=verdict.max_abs_diff,
        mean_abs_diff=verdict.mean_abs_diff,
        label_agreement=verdict.agreement,
        flips=verdict.flips,
        flips_near_threshold=verdict.near,
        near_threshold_band=NEAR_BAND,
        near_ties=verdict.near_ties,
        near_tie_band=verdict.band,
        tolerance=verdict.tolerance,
        relative_tolerance=verdict.relative_tolerance,
        min_agreement=verdict.min_agreement,
        passed=verdict.passed,
        data=reference.data,
        source=reference.source,
        accuracy=accuracy,
        reference_accuracy=reference_accuracy,
        batch_flips=None if batch is None else batch.flips,
        batch_max_abs_diff=None if batch is None else batch.max_abs_diff,
        failures=verdict.failures,
    )
