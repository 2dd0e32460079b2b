"""Decision metrics over a whole stream: confusion counts added chunk by chunk (and merged
across workers), then accuracy, precision, recall and F1 at the threshold the decisions used.

Binary: the positive class is class 1. Multiclass: macro averages over the classes seen in the
labels or the decisions; a sample below the minimum confidence (class -1, "unknown") is wrong,
and counts as no class's prediction. Multilabel: each label as a binary problem,
micro-averaged, and the accuracy is the share of samples with every label right.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from keras_edge.runtime.manifest import Head

logger = logging.getLogger(__name__)


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def _prf(tp: float, fp: float, fn: float) -> dict[str, float | None]:
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    f1 = _ratio(2 * tp, 2 * tp + fp + fn)
    return {"precision": precision, "recall": recall, "f1": f1}


class Metrics:
    """Confusion counts for one head, updated with :meth:`add` and combined with :meth:`merge`.
    Picklable (plain numpy arrays), so a worker's counts travel to the driver."""

    def __init__(self, head: Head, threshold: Any = None) -> None:
        self.kind, self.labels, self.threshold = head.kind, tuple(head.labels), threshold
        k = len(self.labels)
        if self.kind == "multilabel":
            self.counts = np.zeros((k, 2, 2), dtype=np.int64)  # [label, true, predicted]
            self.exact = 0
        elif self.kind == "binary":
            self.counts = np.zeros((2, 2), dtype=np.int64)  # [true, predicted]
        else:  # multiclass: a last column for "unknown" (-1)
            self.counts = np.zeros((k, k + 1), dtype=np.int64)
        self.n = 0

    def add(self, y_true: np.ndarray, y_pred: np.ndarray) -> None:
        """Count decisions ``y_pred`` against classes ``y_true`` (int arrays of one shape)."""
        y_true, y_pred = np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)
        if len(y_true) == 0:
            return
        self.n += len(y_true)
        if self.kind == "multilabel":
            k = len(self.labels)
            cells = (np.arange(k) * 4 + y_true.reshape(-1, k) * 2 + y_pred.reshape(-1, k)).ravel()
            self.counts = self.counts + np.bincount(cells, minlength=4 * k).reshape(k, 2, 2)
            self.exact += int((y_true == y_pred).all(axis=1).sum())
            return
        width = self.counts.shape[1]
        pred = np.where(y_pred < 0, width - 1, y_pred)
        cells = y_true.ravel() * width + pred.ravel()
        counts = np.bincount(cells, minlength=self.counts.size).reshape(self.counts.shape)
        self.counts = self.counts + counts

    def merge(self, other: Metrics) -> Metrics:
        self.counts = self.counts + other.counts  # a new array: one from Ray's store is read-only
        self.n += other.n
        if self.kind == "multilabel":
            self.exact += other.exact
        return self

    def to_dict(self) -> dict[str, Any]:
        """accuracy, precision, recall, f1 (None where undefined: no positives), the counts."""
        out: dict[str, Any] = {"n": self.n, "kind": self.kind, "threshold": self.threshold}
        c = self.counts
        if self.kind == "binary":
            tn, fp, fn, tp = (int(v) for v in c.ravel())
            out.update(accuracy=_ratio(tp + tn, self.n), **_prf(tp, fp, fn))
            out["counts"] = {"tp": tp, "fp": fp, "fn": fn, "tn": tn}
        elif self.kind == "multilabel":
            tp, fp, fn = (int(c[:, 1, 1].sum()), int(c[:, 0, 1].sum()), int(c[:, 1, 0].sum()))
            out.update(accuracy=_ratio(self.exact, self.n), **_prf(tp, fp, fn), average="micro")
            out["counts"] = {
                label: {"tp": int(m[1, 1]), "fp": int(m[0, 1]), "fn": int(m[1, 0]), "tn": int(m[0, 0])}
                for label, m in zip(self.labels, c, strict=True)
            }
        else:
            k = len(self.labels)
            tp = np.diag(c[:, :k]).astype(float)
            per = [_prf(tp[i], c[:, i].sum() - tp[i], c[i].sum() - tp[i]) for i in range(k)]
            # Classes among the labels or the decisions (as scikit-learn's macro average).
            present = [p for i, p in enumerate(per) if c[i].sum() > 0 or c[:, i].sum() > 0]

            def macro(key: str) -> float | None:
                vals = [0.0 if p[key] is None else p[key] for p in present]
                return float(np.mean(vals)) if vals else None

            out.update(accuracy=_ratio(float(tp.sum()), self.n), average="macro")
            out.update(precision=macro("precision"), recall=macro("recall"), f1=macro("f1"))
            out["confusion"] = {"labels": [*self.labels, "unknown"], "rows": c.tolist()}
        return out

    def format(self) -> str:
        """A few lines for the terminal."""
        d = self.to_dict()

        def f(v: float | None) -> str:
            return "-" if v is None else f"{v:.4f}"

        at = "" if self.threshold is None else f" at threshold {self.threshold}"
        avg = f" ({d['average']} average)" if "average" in d else ""
        lines = [
            f"metrics on {self.n:,} labelled rows{at}: accuracy {f(d['accuracy'])}  precision "
            f"{f(d['precision'])}  recall {f(d['recall'])}  f1 {f(d['f1'])}{avg}"
        ]
        if self.kind == "binary":
            lines.append("confusion: tp {tp:,}  fp {fp:,}  fn {fn:,}  tn {tn:,}".format(**d["counts"]))
        elif self.kind == "multilabel":
            for label, m in d["counts"].items():
                lines.append(
                    f"  {label}: tp {m['tp']:,}  fp {m['fp']:,}  fn {m['fn']:,}  tn {m['tn']:,}"
                )
        else:
            names = d["confusion"]["labels"]
            width = max(len(n) for n in names) + 1
            lines.append("confusion (rows true, columns predicted):")
            lines.append(" " * width + "".join(f"{n:>{max(width, 8)}}" for n in names))
            for name, row in zip(self.labels, d["confusion"]["rows"], strict=True):
                lines.append(f"{name:>{width}}" + "".join(f"{v:>{max(width, 8)},}" for v in row))
        return "\n".join(lines) + "\n"
