"""Score one batch of a table: the function a cluster engine calls on each block.

``clf.score_batch(batch)`` takes a ``pyarrow.Table`` or ``RecordBatch``, a
``pandas.DataFrame`` or a dict of numpy arrays, and returns the same kind with the outputs
added, so Ray Data's ``map_batches`` and Dask's ``map_partitions`` call it as it is (Spark's
``mapInArrow`` hands over an iterator of record batches: ``lambda it: map(clf.score_batch,
it)``); :class:`keras_edge.runtime.batch.cluster.BatchScorer` is the same for Ray's actor pools.

Neither pyarrow nor pandas is imported here unless a batch of theirs arrives.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from keras_edge.runtime.batch.arrow import from_numpy, to_numpy
from keras_edge.runtime.batch.metrics import Metrics
from keras_edge.runtime.batch.scoring import (
    Layout,
    Scorer,
    as_columns,
    by_input,
    check_policy,
    input_columns,
    parse_labels,
    score_rows,
)
from keras_edge.runtime.errors import UsageError
from keras_edge.runtime.inputs import feature_columns

logger = logging.getLogger(__name__)


@dataclass
class BatchStats:
    """What scoring one batch did; merged across batches and workers."""

    rows: int = 0
    written: int = 0
    bad: int = 0
    first_bad: str | None = None
    metrics: Metrics | None = None

    def merge(self, other: BatchStats) -> BatchStats:
        self.rows += other.rows
        self.written += other.written
        self.bad += other.bad
        self.first_bad = self.first_bad or other.first_bad
        if other.metrics is not None:
            self.metrics = other.metrics if self.metrics is None else self.metrics.merge(other.metrics)
        return self


def _kind(batch: Any) -> str:
    module = type(batch).__module__
    if module.startswith("pyarrow") and hasattr(batch, "schema"):
        return "arrow"
    if module.startswith("pandas") and hasattr(batch, "columns"):
        return "pandas"
    if isinstance(batch, Mapping):
        return "dict"
    raise UsageError(
        f"Expected a pyarrow Table or RecordBatch, a pandas DataFrame or a dict of numpy arrays, "
        f"got {type(batch).__module__}.{type(batch).__name__}"
    )


def _names(batch: Any, kind: str) -> list[str]:
    if kind == "arrow":
        return list(batch.schema.names)
    return [str(c) for c in (batch.columns if kind == "pandas" else batch.keys())]


def _numpy(batch: Any, kind: str, name: str) -> tuple[np.ndarray, np.ndarray | None]:
    """A column as numpy, and its null mask (Arrow only; None when it has no nulls)."""
    if kind == "arrow":
        return to_numpy(batch.column(name))
    values = batch[name]
    return (values.to_numpy() if kind == "pandas" else np.asarray(values)), None


def _numeric(values: np.ndarray) -> bool:
    return values.dtype.kind in "biuf" and values.ndim == 1


def _features(
    clf: Scorer, batch: Any, kind: str, columns: Sequence[str] | None, exclude: set[str]
) -> tuple[Any, np.ndarray | None, dict[int, str]]:
    """The model's input from the batch, rows with a null feature, and why."""
    names = _names(batch, kind)
    specs = clf.manifest.inputs
    if columns is None and kind == "dict" and all(s.name in batch for s in specs):
        # Tensor columns named as the model's inputs (Ray's numpy batches of n-d arrays).
        arrays = {s.name: np.asarray(batch[s.name]) for s in specs}
        return (arrays[specs[0].name] if len(specs) == 1 else arrays), None, {}
    one_each = input_columns(specs)  # one input per column (Keras's structured-data style)
    if columns is None:
        numeric = [c for c in names if _numeric(_numpy(batch, kind, c)[0])]
        expected = specs[0].features if len(specs) == 1 else one_each
        columns = feature_columns(names, expected, exclude, "the batch", numeric) or [
            c for c in numeric if c not in exclude
        ]
    missing = [c for c in columns if c not in names]
    if missing:
        raise UsageError(f"Expected feature columns {missing} in the batch, got {names}")
    invalid = np.zeros(_rows(batch, kind), dtype=bool)
    reasons: dict[int, str] = {}
    parts = []
    for c in columns:
        values, nulls = _numpy(batch, kind, c)
        if values.dtype.kind not in "biuf":
            raise UsageError(f"Expected numeric feature columns, got {c!r} of type {values.dtype}")
        if nulls is not None:
            for i in np.flatnonzero(nulls & ~invalid)[:1].tolist():
                reasons[i] = f"null in column {c!r}"
            invalid |= nulls
        parts.append(values)
    x = np.stack(parts, axis=1) if parts else np.empty((len(invalid), 0), np.float32)
    if one_each is not None and sorted(columns) == sorted(one_each):
        x = by_input(x, specs, columns)
    return x, (invalid if invalid.any() else None), reasons


def _rows(batch: Any, kind: str) -> int:
    if kind == "arrow":
        return int(batch.num_rows)
    if kind == "pandas":
        return len(batch)
    return len(next(iter(batch.values()))) if batch else 0


def _where(batch: Any, kind: str, keep: Sequence[str]) -> Any:
    """Names a row of the batch for messages, with its kept columns' values (an id)."""

    def where(i: int) -> str:
        ids = []
        for k in list(keep)[:3]:
            values = batch.column(k)[i].as_py() if kind == "arrow" else np.asarray(batch[k])[i]
            ids.append(f"{k}={values!r}")
        return f"row {i} of the batch" + (f" ({', '.join(ids)})" if ids else "")

    return where


def score_table(
    clf: Scorer,
    batch: Any,
    columns: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    keep: Sequence[str] | None = None,
    classes: bool = True,
    on_bad_row: str = "error",
    label: str | None = None,
) -> tuple[Any, BatchStats]:
    """:func:`score_batch`, and what it did (:class:`BatchStats`, with the metrics where
    ``label`` names a label column)."""
    check_policy(on_bad_row)
    kind = _kind(batch)
    names = _names(batch, kind)
    kept = names if keep is None else list(keep)
    missing = [k for k in kept if k not in names]
    if missing:
        raise UsageError(f"Expected columns {missing} to keep in the batch, got {names}")
    layout = Layout(clf.head, proba_only=not classes)
    outputs = layout.values + layout.classes
    clash = sorted(set(kept) & set(outputs))
    if clash:
        raise UsageError(f"The batch already has output columns {clash}: drop them or keep= others")
    if on_bad_row == "null" and kind != "arrow":
        raise UsageError(
            "Expected on_bad_row 'error' or 'skip' for numpy and pandas batches (nulls need Arrow)"
        )
    skip = {*exclude, *outputs, *([label] if label else []), *(keep or [])}  # never features
    x, invalid, reasons = _features(clf, batch, kind, columns, skip)
    n = _rows(batch, kind)
    stats = BatchStats(rows=n)
    y_true = None
    if label is not None and clf.head.kind != "regression":
        raw, nulls = _numpy(batch, kind, label)
        y_true, bad, label_reasons = parse_labels(clf.head, raw)
        if nulls is not None:
            bad = bad | nulls
            label_reasons.update({int(i): f"null label in {label!r}" for i in np.flatnonzero(nulls)[:1]})
        if bad.any():
            invalid = bad if invalid is None else invalid | bad
            for i, r in label_reasons.items():
                reasons.setdefault(i, r)
    scored = score_rows(clf, x, n, on_bad_row, _where(batch, kind, kept), invalid, reasons)
    stats.bad, stats.first_bad, stats.written = scored.bad, scored.first_bad, len(scored.values)
    if y_true is not None and scored.classes is not None:
        stats.metrics = Metrics(clf.head, clf.threshold)
        rows = scored.rows if scored.rows is not None else np.flatnonzero(
            np.ones(n, bool) if scored.nulls is None else ~scored.nulls)  # fmt: skip
        pred = scored.classes if scored.rows is not None else scored.classes[rows]
        stats.metrics.add(y_true[rows], pred)
    columns_out: dict[str, Any] = {}
    for j, c in enumerate(layout.values):
        columns_out[c] = scored.values[:, j]
    if layout.classes:
        cls2 = as_columns(scored.classes)  # type: ignore[arg-type]
        for j, c in enumerate(layout.classes):
            columns_out[c] = cls2[:, j]
    return _assemble(batch, kind, kept, scored.rows, scored.nulls, columns_out), stats


def _assemble(
    batch: Any, kind: str, kept: list[str], rows: np.ndarray | None, nulls: np.ndarray | None,
    outputs: dict[str, np.ndarray],
) -> Any:  # fmt: skip
    """The batch's kept columns (only ``rows`` of them, when rows were skipped) and the outputs."""
    if kind == "arrow":
        import pyarrow as pa

        one_batch = isinstance(batch, pa.RecordBatch)
        table = (pa.Table.from_batches([batch]) if one_batch else batch).select(kept)
        if rows is not None:
            table = table.take(from_numpy(rows.astype(np.int64)))
        for name, values in outputs.items():
            table = table.append_column(name, from_numpy(values, nulls))
        if one_batch:
            columns = [pa.concat_arrays(c.chunks) if c.num_chunks else pa.array([], c.type)
                       for c in table.columns]  # fmt: skip
            return pa.RecordBatch.from_arrays(columns, schema=table.schema)
        return table
    if kind == "pandas":
        frame = batch[kept]
        if rows is not None:
            frame = frame.iloc[rows]
        frame = frame.copy(deep=False) if rows is None else frame.reset_index(drop=True)
        for name, values in outputs.items():
            frame[name] = values
        return frame
    out = {k: (np.asarray(batch[k]) if rows is None else np.asarray(batch[k])[rows]) for k in kept}
    out.update(outputs)
    return out


def score_batch(
    clf: Scorer,
    batch: Any,
    columns: Sequence[str] | None = None,
    keep: Sequence[str] | None = None,
    classes: bool = True,
    on_bad_row: str = "error",
    exclude: Sequence[str] = (),
) -> Any:
    """``batch`` with the outputs added, as the same kind of container.

    Args:
        batch: a ``pyarrow.Table`` / ``RecordBatch``, a ``pandas.DataFrame``, or a dict of numpy
            arrays (one per column; or one n-d array per model input, named as the input).
        columns: the feature columns, in the model's feature order. Default: every numeric
            column but those in ``exclude`` (ids, labels) or ``keep``, and those named as
            outputs.
        keep: the input columns to return beside the outputs (default: all of them); named
            here, they are not features unless ``columns`` says so.
        classes: add ``class`` (``class_<label>`` for multilabel) beside the probabilities
            (``probability``, or ``p_<label>``); False: the probabilities only, as
            ``predict --proba`` does.
        on_bad_row: ``error`` raises at the first row the model cannot take (NaN or Inf, a
            null, ids out of range), naming it; ``skip`` leaves such rows out; ``null`` (Arrow
            batches) gives them null outputs.
    """
    return score_table(clf, batch, columns, exclude, keep, classes, on_bad_row)[0]
