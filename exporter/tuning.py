"""Threshold tuning: the cut ``p > t`` that is best for an objective on labelled data.

The search is exact: every distinct score is a place where the decisions change, so the
candidates are the midpoints between adjacent distinct scores (and below the lowest and above
the highest, where those lie inside (0, 1)). A midpoint keeps ``p > t`` robust to float noise:
no score lies on or next to the chosen cut. Confusion counts for all candidates come from one
sort and cumulative sums.

Ties between equally good thresholds are broken toward the default 0.5: the candidate nearest
0.5 wins, and of two equally near, the higher (fewer positives). A multilabel head is tuned one
label at a time. A multiclass head's threshold is its minimum confidence, tuned on the top
probability with "the top class is right" as the positive.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from keras_edge.exporter import model as model_io
from keras_edge.exporter.errors import TuningError
from keras_edge.exporter.parity import Reference
from keras_edge.runtime.data import rows
from keras_edge.runtime.errors import UsageError
from keras_edge.runtime.gate import to_probability
from keras_edge.runtime.manifest import Head, InputSpec, Variant

logger = logging.getLogger(__name__)

OBJECTIVES = ("f1", "fbeta:B", "youden", "balanced-accuracy", "mcc", "precision>=X", "recall>=X",
              "cost:fp=A,fn=B")  # fmt: skip
TUNABLE = ("binary", "multilabel", "multiclass")  # multiclass: the minimum confidence
_FBETA = re.compile(r"^fbeta:(\d+(?:\.\d+)?)$")
_FLOOR = re.compile(r"^(precision|recall)>=(0?\.\d+|1(?:\.0*)?|0)$")
_COST = re.compile(r"^cost:fp=(\d+(?:\.\d+)?),fn=(\d+(?:\.\d+)?)$")


@dataclass(frozen=True)
class Objective:
    """A parsed ``--tune-threshold`` value."""

    text: str
    kind: str  # f1, fbeta, youden, balanced-accuracy, mcc, precision>=, recall>=, cost
    beta: float = 1.0
    floor: float = 0.0
    fp_cost: float = 1.0
    fn_cost: float = 1.0

    @classmethod
    def parse(cls, text: str) -> Objective:
        t = text.strip().lower()
        if t in ("f1", "youden", "balanced-accuracy", "mcc"):
            return cls(text, t)
        if m := _FBETA.match(t):
            beta = float(m.group(1))
            if beta > 0:
                return cls(text, "fbeta", beta=beta)
        if m := _FLOOR.match(t):
            floor = float(m.group(2))
            if 0 < floor <= 1:
                return cls(text, f"{m.group(1)}>=", floor=floor)
        if m := _COST.match(t):
            fp, fn = float(m.group(1)), float(m.group(2))
            if fp > 0 or fn > 0:
                return cls(text, "cost", fp_cost=fp, fn_cost=fn)
        raise UsageError(
            f"Expected a tuning objective from {', '.join(OBJECTIVES)} (B > 0, 0 < X <= 1, "
            f"A, B >= 0 not both 0), got {text!r}"
        )


@dataclass(frozen=True)
class Tuned:
    """The chosen threshold, the objective's value there and the confusion counts."""

    threshold: float
    value: float
    tp: int
    fp: int
    tn: int
    fn: int
    head: str | None = None  # which head, for a model with several

    def to_dict(self) -> dict[str, float | int | str]:
        return {k: v for k, v in self.__dict__.items() if v is not None or k != "head"}


def confusion_at_candidates(scores: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, ...]:
    """(cuts, tp, fp, tn, fn) for every candidate cut, each an array over the candidates."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    positive = np.asarray(y).ravel().astype(bool)
    order = np.argsort(s, kind="stable")
    s, positive = s[order], positive[order]
    distinct, first = np.unique(s, return_index=True)
    # Below a cut lie the rows before the first occurrence of the next distinct score.
    cuts = (distinct[:-1] + distinct[1:]) / 2.0
    below = first[1:]
    if distinct[0] > 0:
        cuts, below = np.concatenate([[distinct[0] / 2.0], cuts]), np.concatenate([[0], below])
    if distinct[-1] < 1:
        cuts = np.concatenate([cuts, [(distinct[-1] + 1.0) / 2.0]])
        below = np.concatenate([below, [len(s)]])
    pos_below = np.concatenate([[0], np.cumsum(positive)])[below]
    total_pos = int(positive.sum())
    fn = pos_below
    tn = below - pos_below
    tp = total_pos - fn
    fp = (len(s) - below) - tp
    return cuts, tp, fp, tn, fn


def _values(objective: Objective, tp: np.ndarray, fp: np.ndarray, tn: np.ndarray, fn: np.ndarray):
    tp, fp, tn, fn = (a.astype(np.float64) for a in (tp, fp, tn, fn))
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        recall = np.where(tp + fn > 0, tp / (tp + fn), 0.0)
        specificity = np.where(tn + fp > 0, tn / (tn + fp), 0.0)
        kind = objective.kind
        if kind in ("f1", "fbeta"):
            b2 = objective.beta**2
            den = (1 + b2) * tp + b2 * fn + fp
            return np.where(den > 0, (1 + b2) * tp / den, 0.0), None
        if kind == "youden":
            return recall + specificity - 1.0, None
        if kind == "balanced-accuracy":
            return (recall + specificity) / 2.0, None
        if kind == "mcc":
            den = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
            return np.where(den > 0, (tp * tn - fp * fn) / np.where(den > 0, den, 1), 0.0), None
        if kind == "precision>=":
            return recall, (tp + fp > 0) & (precision >= objective.floor)
        if kind == "recall>=":
            return precision, (tp + fn > 0) & (recall >= objective.floor)
        n = tp + fp + tn + fn
        return -(objective.fp_cost * fp + objective.fn_cost * fn) / n, None  # cost: maximize -cost


def tune(scores: np.ndarray, y: np.ndarray, objective: Objective, what: str = "") -> Tuned:
    """The best cut for ``objective`` on one label's ``scores`` (probabilities) and 0/1 ``y``."""
    y = np.asarray(y).ravel()
    if len(y) == 0 or not set(np.unique(y).tolist()) <= {0, 1}:
        raise UsageError(
            f"Expected 0/1 labels to tune {what or 'the threshold'} on, got values {np.unique(y)[:10]}"
        )
    cuts, tp, fp, tn, fn = confusion_at_candidates(scores, y)
    if len(cuts) == 0:
        raise TuningError(
            f"Cannot tune {what or 'the threshold'}: every score is {float(scores.ravel()[0])!r}, so "
            f"no threshold separates anything"
        )
    values, feasible = _values(objective, tp, fp, tn, fn)
    if feasible is not None:
        if not feasible.any():
            measure = "precision" if objective.kind == "precision>=" else "recall"
            reached = (
                tp / np.maximum(tp + fp, 1) if measure == "precision" else tp / np.maximum(tp + fn, 1)
            )
            raise TuningError(
                f"No threshold reaches {measure} >= {objective.floor:g} for {what or 'the model'} "
                f"on the tuning data: the best is {float(reached.max()):.4f}"
            )
        values = np.where(feasible, values, -np.inf)
    top = values.max()
    candidates = np.nonzero(values >= top - 1e-12)[0]
    distance = np.abs(cuts[candidates] - 0.5)
    nearest = candidates[distance <= distance.min() + 1e-12]
    i = int(nearest[np.argmax(cuts[nearest])])  # equally near 0.5: the higher cut
    value = float(values[i]) if objective.kind != "cost" else float(-values[i])
    return Tuned(float(cuts[i]), value, int(tp[i]), int(fp[i]), int(tn[i]), int(fn[i]))


def problems(
    kind: str | Head, scores: np.ndarray, y: Any, what: str
) -> list[tuple[np.ndarray, np.ndarray, str]]:
    """The one-cut problems a head's threshold(s) solve, as (scores, 0/1 labels, name): one per
    label for binary and multilabel. For a multiclass head, the minimum confidence: the cut on
    each sample's top probability, with "the top class is right" as the positive (tp: answered
    and right, fp: answered and wrong, tn: refused and would have been wrong, fn: refused and
    would have been right). For several heads (``kind`` is the head, ``y`` a dict of labels by
    head name), the problems of every head that has labels, in head order."""
    if isinstance(kind, Head):
        return [problem for _, problem in _head_problems(kind, scores, y, what)]
    if kind not in TUNABLE:
        raise UsageError(f"Expected a head from {TUNABLE} to tune a threshold for, got {kind}")
    if kind == "multiclass":
        scores = np.asarray(scores)
        y = np.asarray(y)
        y = y.argmax(axis=1) if y.ndim == 2 and y.shape[1] > 1 else y.reshape(-1)
        if len(y) != len(scores) or not np.issubdtype(y.dtype, np.number):
            raise UsageError(
                f"Expected {len(scores)} class indices to tune {what}'s minimum confidence, got "
                f"{y.shape} {y.dtype}"
            )
        k = scores.shape[1]
        if len(y) and not (np.all(y == np.round(y)) and y.min() >= 0 and y.max() < k):
            raise UsageError(
                f"Expected class indices in [0, {k - 1}] (or one-hot rows) to tune {what}'s minimum "
                f"confidence, got values from {y.min()} to {y.max()}"
            )
        right = (scores.argmax(axis=1) == y).astype(np.int64)
        return [(scores.max(axis=1), right, f"{what} (minimum confidence)")]
    scores = np.asarray(scores).reshape(len(scores), -1)
    y = np.asarray(y).reshape(len(scores), -1)
    if y.shape != scores.shape:
        raise UsageError(f"Expected labels of shape {scores.shape} to tune {what}, got {y.shape}")
    names = [f"{what} label {k}" if kind == "multilabel" else what for k in range(scores.shape[1])]
    return [(scores[:, k], y[:, k], names[k]) for k in range(scores.shape[1])]


def _head_problems(
    head: Head, scores: np.ndarray, y: dict[str, Any], what: str
) -> list[tuple[str, tuple[np.ndarray, np.ndarray, str]]]:
    """(head name, problem) for every head of several that has labels in ``y``."""
    out = []
    for part, columns in zip(head.parts, head.slices(), strict=True):
        if part.name in y:
            label = f"{what} head {part.name!r}"
            for problem in problems(part.kind, scores[:, columns], y[part.name], label):
                out.append((str(part.name), problem))
    return out


def tune_head(
    kind: str | Head, scores: np.ndarray, y: Any, objective: Objective, what: str
) -> tuple[Any, list[Tuned]]:
    """The threshold(s) for a head (see :func:`problems`): one per label for multilabel. For
    several heads, one per head (tuned where ``y`` has its labels, else the head's own) and
    the results of each tuned one, each naming its ``head``."""
    if isinstance(kind, Head):
        found = [(name, tune(s, t, objective, label)) for name, (s, t, label)
                 in _head_problems(kind, scores, y, what)]  # fmt: skip
        thresholds = []
        for part in kind.parts:
            own = [r for name, r in found if name == part.name]
            if not own:
                thresholds.append(part.threshold)
            else:
                values = tuple(r.threshold for r in own)
                thresholds.append(values if part.kind == "multilabel" else values[0])
        return tuple(thresholds), [replace(r, head=name) for name, r in found]
    results = [tune(s, t, objective, name) for s, t, name in problems(kind, scores, y, what)]
    thresholds = tuple(r.threshold for r in results)
    return (thresholds if kind == "multilabel" else thresholds[0]), results


def curve(scores: np.ndarray, y: np.ndarray, objective: Objective) -> tuple[np.ndarray, np.ndarray]:
    """The objective at every candidate cut, (cuts, values); NaN where a floor is not met."""
    cuts, tp, fp, tn, fn = confusion_at_candidates(scores, y)
    values, feasible = _values(objective, tp, fp, tn, fn)
    values = -values if objective.kind == "cost" else values
    return cuts, values if feasible is None else np.where(feasible, values, np.nan)


@dataclass
class Plan:
    """What threshold tuning needs across the export: the objective, its data, the Keras
    model's tuned threshold, and how to tune each variant on its own scores."""

    objective: Objective
    kind: str | Head  # several heads: the head, tuned one by one
    samples: list[Any] | None  # the tuning inputs one per call, when not the parity data
    y: Any  # several heads: a dict of labels by head name
    data: str
    optimistic: bool
    keras_threshold: Any
    keras: list[Tuned]
    scores: dict[str, tuple[np.ndarray, list[Tuned]]] = field(default_factory=dict)

    def tune_variant(self, clf: Any, variant: Variant, parity_scores: np.ndarray) -> Variant:
        """``variant`` with its own threshold, tuned on ``clf``'s scores (the parity data's
        ``parity_scores``, or the separate tuning data's), and the tuning record."""
        scores = (
            parity_scores
            if self.samples is None
            else np.concatenate([clf.outputs(s) for s in self.samples])
        )
        threshold, results = tune_head(self.kind, scores, self.y, self.objective, variant.id)
        self.scores[variant.id] = (scores, results)
        record = {"objective": self.objective.text, "labels": [r.to_dict() for r in results]}
        return replace(variant, threshold=threshold, tuning=record)

    def record(self) -> dict[str, Any]:
        return {
            "objective": self.objective.text,
            "data": self.data,
            "optimistic": self.optimistic,
            "keras": [r.to_dict() for r in self.keras],
            **({"positive": "the top class is right"} if self.kind == "multiclass" else {}),
        }


def plan(
    tune: str | None,
    tune_data: Any,
    head: Any,
    keras_model: Any,
    specs: tuple[InputSpec, ...],
    x_check: tuple[np.ndarray, ...],
    y_val: Any,
    reference: Reference,
) -> Plan | None:
    """Tune the Keras model's threshold before anything is converted; None without ``tune``."""
    if tune is None:
        return None
    objective = Objective.parse(tune)
    if not head.parts and head.kind not in TUNABLE:
        raise UsageError(f"Expected a head from {TUNABLE} to tune a threshold for, got {head.kind}")
    if tune_data is not None:
        if not isinstance(tune_data, tuple) or len(tune_data) != 2 or tune_data[1] is None:
            raise UsageError("Expected tuning data as (x, y) with labels y")
        xs = model_io.as_inputs(tune_data[0], specs, "tuning")
        n = len(xs[0])
        y = labels_for(head, tune_data[1], n, "tuning")
        keras_scores = to_probability(head, model_io.keras_outputs(keras_model, list(xs)))
        samples: list[Any] | None = [rows(xs, slice(i, i + 1)) for i in range(n)]
        data, optimistic = f"tuning data ({n} samples)", False
    else:
        if y_val is None:
            raise UsageError(
                "Expected labels to tune the threshold on: validation data with y (--validation "
                "FILE with labels; for several heads, labels per head) or separate --tune-data "
                "FILE; got none"
            )
        y = labels_for(head, y_val, len(reference.proba), "validation")
        keras_scores, samples, data, optimistic = reference.proba, None, reference.data, True
        logger.warning(
            "the threshold is tuned and reported on the same validation data: the objective "
            "values reported are optimistic; pass --tune-data (tune_data=) to tune on other data"
        )
    kind: str | Head = head.kind
    if head.parts:  # several heads: each labelled head of a tunable kind, on its own columns
        kind, y = head, _tunable(head, y)
    threshold, results = tune_head(kind, keras_scores, y, objective, "the Keras model")
    scores = {"keras": (keras_scores, results)}
    return Plan(objective, kind, samples, y, data, optimistic, threshold, results, scores)


def labels_for(head: Head, y: Any, n: int, what: str) -> Any:
    """``what`` labels (validation, tuning) checked against the head: one array of ``n`` rows,
    or for several heads a dict of them by head name (:func:`head_labels`)."""
    if head.parts:
        return head_labels(head, y, n, what)
    if isinstance(y, dict):
        raise UsageError(
            f"Expected {what} labels as one array for a model of one head, got a dict of "
            f"{sorted(map(str, y))}"
        )
    y = np.asarray(y)
    if len(y) != n:
        raise UsageError(f"Expected {n} {what} labels, got {len(y)}")
    return y


def _tunable(head: Head, y: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The labels of the heads that will be tuned: labelled and of a tunable kind; the others
    keep their thresholds (logged)."""
    tunable = [p.name for p in head.parts if p.name in y and p.kind in TUNABLE]
    if not tunable:
        raise UsageError(
            f"Expected labels for at least one classifier head to tune, got labels for {sorted(y)} "
            f"of the heads {[(p.name, p.kind) for p in head.parts]}"
        )
    untuned = [p.name for p in head.parts if p.name not in tunable]
    if untuned:
        logger.warning("tuning the heads %s; %s keep their thresholds (no labels or not tunable)",
                       tunable, untuned)  # fmt: skip
    return {name: labels for name, labels in y.items() if name in tunable}


def head_labels(head: Head, y: Any, n: int, what: str) -> dict[str, np.ndarray]:
    """Labels for several heads: a dict by head name (some heads may have none) or a list in
    head order, each with ``n`` rows; a :class:`UsageError` naming what was received."""
    names = [str(p.name) for p in head.parts]
    if isinstance(y, (list, tuple)) and len(y) == len(names):
        y = dict(zip(names, y, strict=True))
    if not isinstance(y, dict):
        raise UsageError(
            f"Expected {what} labels for several heads as a dict by head name {names} (or a list "
            f"in that order), got {type(y).__name__}"
        )
    unknown = sorted(set(map(str, y)) - set(names))
    if unknown:
        raise UsageError(f"Expected {what} labels for the heads {names}, got ones for {unknown}")
    out = {}
    for name, labels in y.items():
        labels = np.asarray(labels)
        if len(labels) != n:
            raise UsageError(f"Expected {n} {what} labels for head {name!r}, got {len(labels)}")
        out[str(name)] = labels
    return out
