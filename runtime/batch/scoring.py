"""Scoring rows in bulk, for files (``stream``) and table batches (``table``) alike: the output
columns, the labels a file gives, and one chunk of rows scored under a bad-row policy.

A bad row is one the runtime cannot answer on its own: a field the reader could not parse, NaN
or Inf in its features, token ids out of range, a label that is not a class. The policy says
what happens to it: ``error`` refuses the input at the first one, naming where it is; ``skip``
scores the rest and leaves it out; ``null`` scores the rest and gives it empty outputs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from keras_edge.runtime.errors import InputError, UsageError
from keras_edge.runtime.gate import label_names
from keras_edge.runtime.manifest import Head, InputSpec, Manifest

logger = logging.getLogger(__name__)

BAD_ROW_POLICIES = ("error", "skip", "null")


class Scorer(Protocol):
    """What scoring needs of a :class:`~keras_edge.runtime.classifier.Classifier` (named here
    by its methods: the classifier itself imports this module's users)."""

    manifest: Manifest
    head: Head

    @property
    def threshold(self) -> Any: ...

    def predict_both(self, x: Any) -> tuple[np.ndarray, np.ndarray | None]: ...


def check_policy(policy: str) -> str:
    if policy not in BAD_ROW_POLICIES:
        raise UsageError(f"Expected on_bad_row from {list(BAD_ROW_POLICIES)}, got {policy!r}")
    return policy


@dataclass(frozen=True)
class Layout:
    """The output columns of a head, after any pass-through columns: ``values`` (``probability``
    for binary, ``p_<label>`` per class, ``value_<label>`` for regression), then ``classes``
    (``class``, or ``class_<label>`` per label for multilabel; none for regression or
    ``proba``-only output). Text formats add ``label``, the class's name, when ``named``."""

    head: Head
    proba_only: bool = False

    @property
    def values(self) -> list[str]:
        head = self.head
        if head.parts:  # several heads: each one's columns, named after it
            return [f"{p.name}_{c}" for p in head.parts for c in Layout(p, self.proba_only).values]
        if head.kind == "binary":
            return ["probability"]
        prefix = "value" if head.kind == "regression" else "p"
        return [f"{prefix}_{label}" for label in head.labels]

    @property
    def classes(self) -> list[str]:
        if self.head.parts:
            return [f"{p.name}_{c}" for p in self.head.parts for c in Layout(p, self.proba_only).classes]
        if self.proba_only or self.head.kind == "regression":
            return []
        return (
            [f"class_{label}" for label in self.head.labels]
            if self.head.kind == "multilabel"
            else ["class"]
        )

    @property
    def named(self) -> bool:
        return bool(self.classes) and self.head.kind not in ("multilabel", "heads")

    def names(self, classes: np.ndarray) -> np.ndarray:
        """Label names (object array) for class indices, ``"unknown"`` for -1."""
        return label_names(self.head.labels, classes)

    def columns(self, text: bool = False) -> list[str]:
        return self.values + self.classes + (["label"] if text and self.named else [])


@dataclass
class Scored:
    """The outputs of one chunk. With ``skip``, ``rows`` holds the chunk rows they belong to
    (None: every row); with ``null``, ``nulls`` marks the rows with empty outputs."""

    values: np.ndarray
    classes: np.ndarray | None
    rows: np.ndarray | None = None
    nulls: np.ndarray | None = None
    bad: int = 0
    first_bad: str | None = None


def as_columns(a: np.ndarray) -> np.ndarray:
    """``a`` as (n, columns): (n,) becomes (n, 1), (n, k, ...) becomes (n, k x ...); n may be 0."""
    return a.reshape(len(a), int(np.prod(a.shape[1:], dtype=np.int64)))


def take(x: Any, index: np.ndarray) -> Any:
    """Rows ``index`` of features: an array, or a dict / list of arrays (several inputs)."""
    if isinstance(x, dict):
        return {k: v[index] for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [v[index] for v in x]
    return x[index]


def _arrays(clf: Scorer, x: Any) -> list[tuple[Any, np.ndarray]] | None:
    specs = clf.manifest.inputs
    if len(specs) == 1:
        arrays = [x]
    elif isinstance(x, dict) and all(s.name in x for s in specs):
        arrays = [x[s.name] for s in specs]
    elif isinstance(x, (list, tuple)) and len(x) == len(specs):
        arrays = list(x)
    else:
        return None
    return [(spec, np.asarray(a)) for spec, a in zip(specs, arrays, strict=True)]


def bad_rows(clf: Scorer, x: Any) -> np.ndarray | None:
    """The rows the runtime refuses on their own account (NaN or Inf; ids out of range), as a
    boolean mask; None where the input as a whole is wrong (its shape, its dtype)."""
    arrays = _arrays(clf, x)
    if arrays is None:
        return None
    mask: np.ndarray | None = None
    for spec, a in arrays:
        if a.ndim < 1 or a.dtype.kind not in "fiub":
            return None
        rows = as_columns(a)
        if spec.is_float:
            with np.errstate(over="ignore"):
                bad = ~np.isfinite(rows.astype(np.float32)).all(axis=1)
        elif a.dtype.kind in "iub":
            info = np.iinfo(np.dtype(spec.dtype))
            low, high = spec.range or (int(info.min), int(info.max))
            bad = ((rows < low) | (rows > high)).any(axis=1)
        else:
            return None
        mask = bad if mask is None else mask | bad
    return mask


def describe(clf: Scorer, x: Any, i: int) -> str:
    """Why row ``i`` of ``x`` is bad, with its values."""
    parts = []
    for spec, a in _arrays(clf, x) or []:
        row = a[i].ravel()
        shown = ", ".join(str(v) for v in row[:8].tolist()) + (", ..." if row.size > 8 else "")
        if spec.is_float and not np.isfinite(row.astype(np.float64)).all():
            parts.append(f"NaN or Inf in {spec.name!r} ({shown})")
        elif not spec.is_float:
            low, high = spec.range or (None, None)
            parts.append(f"ids outside [{low}, {high}] in {spec.name!r} ({shown})")
    return "; ".join(parts) or "a value the model cannot take"


def score_rows(
    clf: Scorer,
    x: Any,
    n: int,
    policy: str,
    where: Callable[[int], str],
    invalid: np.ndarray | None = None,
    reasons: dict[int, str] | None = None,
) -> Scored:
    """Score ``n`` rows of features ``x`` with one engine call. ``invalid`` marks rows the
    reader could not read (their features are placeholders), with ``reasons``; ``where(i)``
    names row ``i``'s place in the input for messages."""
    if invalid is None or not invalid.any():
        try:
            values, classes = clf.predict_both(x)
            return Scored(values, classes)
        except InputError:
            found = bad_rows(clf, x)
            if found is None or not found.any():
                raise  # not about rows: the input's shape or dtype
        mask = found
    else:
        found = bad_rows(clf, x)
        mask = invalid if found is None else invalid | found
    reasons = reasons or {}
    first = int(np.flatnonzero(mask)[0])
    reason = reasons.get(first) or describe(clf, x, first)
    if policy == "error":
        raise InputError(
            f"Bad row at {where(first)}: {reason} (--on-bad-row skip or null scores the other rows)"
        )
    good = np.flatnonzero(~mask)
    values, classes = clf.predict_both(take(x, good))
    bad, first_bad = int(mask.sum()), f"{where(first)}: {reason}"
    if policy == "skip":
        return Scored(values, classes, rows=good, bad=bad, first_bad=first_bad)
    full = np.zeros((n, *values.shape[1:]), dtype=values.dtype)
    full[good] = values
    full_classes = None
    if classes is not None:
        full_classes = np.zeros((n, *classes.shape[1:]), dtype=classes.dtype)
        full_classes[good] = classes
    return Scored(full, full_classes, nulls=mask, bad=bad, first_bad=first_bad)


def parse_labels(head: Head, raw: Any) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
    """Class indices from a label column: numbers (0/1, a class index; a float that is a whole
    number) or class names as the manifest's labels. Returns (int64 classes, a mask of rows
    whose label is not a class, their reasons). Multilabel: (n, k) of 0/1."""
    k = len(head.labels)
    array = np.asarray(raw)
    n = len(array)
    reasons: dict[int, str] = {}
    if array.dtype.kind in "USO":  # text: a class name, else a number
        index = {name: i for i, name in enumerate(head.labels)}
        classes = np.zeros(n, dtype=np.int64)
        bad = np.zeros(n, dtype=bool)
        for i, value in enumerate(array.tolist()):
            if value in index:
                classes[i] = index[value]
                continue
            try:
                number = float(value)
            except (TypeError, ValueError):
                number = float("nan")
            if number.is_integer() and 0 <= number < k:
                classes[i] = int(number)
            else:
                bad[i] = True
                reasons[i] = f"label {value!r} is not one of the classes {list(head.labels)}"
        return classes, bad, reasons
    if array.dtype.kind not in "fiub":
        raise UsageError(f"Expected numeric labels or class names, got dtype {array.dtype}")
    values = array.astype(np.float64)
    with np.errstate(invalid="ignore"):
        whole = np.isfinite(values) & (values == np.round(values))
        bad = ~(whole & (values >= 0) & (values < (2 if head.kind == "multilabel" else k)))
    if values.ndim > 1:
        bad = bad.reshape(n, -1).any(axis=1)
    for i in np.flatnonzero(bad)[:1].tolist():  # the first one is what a message shows
        reasons[i] = f"label {array[i].tolist()!r} is not one of the classes {list(head.labels)}"
    classes = np.where(np.isfinite(values), values, 0).astype(np.int64)
    return classes, bad, reasons


def input_columns(specs: tuple[InputSpec, ...]) -> tuple[str, ...] | None:
    """The columns a table needs for a model of several inputs of shape (None, 1): their names,
    in the model's order (Keras's structured-data style: one input per column)."""
    if len(specs) > 1 and all(s.shape == (None, 1) for s in specs):
        return tuple(s.name for s in specs)
    return None


# Above this, a float32 (what a CSV's numbers are read as) no longer holds every integer.
FLOAT32_EXACT = 2**24


def by_input(
    x: np.ndarray, specs: tuple[InputSpec, ...], names: Sequence[str] | None = None
) -> dict[str, np.ndarray]:
    """A table's (n, k) feature columns, named ``names`` (default: the inputs' names, in the
    model's order), as a dict of (n, 1) arrays by input name, each column going to the input of
    its name. Whole numbers become the integer dtype of an integer input (a CSV holds numbers;
    the input checks still refuse anything else); integers a float32 cannot hold exactly (2^24
    and above) are refused rather than rounded into another id."""
    names = list(names) if names is not None else [s.name for s in specs]
    out = {}
    for spec in specs:
        j = names.index(spec.name)
        column = np.ascontiguousarray(x[:, j : j + 1])
        if not spec.is_float and column.dtype.kind == "f":
            whole = np.isfinite(column) & (column == np.round(column))
            if whole.all():
                if column.dtype.itemsize <= 4 and column.size and np.abs(column).max() >= FLOAT32_EXACT:
                    raise UsageError(
                        f"Expected integers below 2^24 = {FLOAT32_EXACT} in column {spec.name!r} of "
                        f"a table read as float32 (a CSV), got up to {np.abs(column).max():.0f}: "
                        f"larger ids cannot be read exactly; pass them as integers (an .npz)"
                    )
                column = column.astype(spec.dtype)
        out[spec.name] = column
    return out
