"""Read feature arrays (and labels) from .npy, .npz and .csv files, with numpy only: the whole
file at once, for the exporter's calibration and validation data and ``keras-edge bench --data``
(``keras-edge predict`` streams instead, through :mod:`keras_edge.runtime.batch.readers`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from keras_edge.runtime.batch.readers import CsvSource, is_number
from keras_edge.runtime.errors import UsageError

logger = logging.getLogger(__name__)

SUFFIXES = (".npy", ".npz", ".csv")


HEAD_LABELS = "y_"  # an .npz's labels of one head of several: y_<head name>


def read_data(
    path: str | Path,
    label_column: str | None = None,
    need_labels: bool = False,
    features: tuple[str, ...] | None = None,
) -> tuple[Any, np.ndarray | None]:
    """Features and, where present, labels from a data file (see :func:`read_named`)."""
    x, y, _ = read_named(path, label_column, need_labels, features)
    return x, y


def read_named(
    path: str | Path,
    label_column: str | dict[str, str] | None = None,
    need_labels: bool = False,
    features: tuple[str, ...] | None = None,
) -> tuple[Any, Any, tuple[str, ...] | None]:
    """Features, labels where present, and the features' column names (None for arrays).

    ``.npy`` holds features; ``.npz`` holds ``x`` and optionally ``y`` (for a model with several
    inputs, one array per input name instead of ``x``: then the features are a dict; for a model
    with several heads, ``y_<head>`` per head instead of ``y``: then the labels are a dict);
    ``.csv`` has a header row, and ``label_column`` names the label column (for several heads,
    a dict head name -> column). A CSV's features are the
    ``features`` named, matched by name (a missing or unexpected column is refused naming both
    lists), or else every column but the label, in order.
    """
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise UsageError(f"Expected a data file ending in {', '.join(SUFFIXES)}, got {str(path)!r}")
    if not path.is_file():
        raise UsageError(f"Expected a data file at {str(path)!r}, found none")
    y: np.ndarray | None = None
    names: tuple[str, ...] | None = None
    try:
        if path.suffix == ".npy":
            x = np.load(path, allow_pickle=False)
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                y = archive["y"] if "y" in archive.files else None
                heads = {n[2:]: archive[n] for n in archive.files if n.startswith(HEAD_LABELS)}
                if heads:  # several heads: y_<head name>, one array each
                    if y is not None:
                        raise UsageError(
                            f"Expected labels in {str(path)!r} as 'y' (one head) or 'y_<head>' "
                            f"(several), got both: {archive.files}"
                        )
                    y = heads
                named = [n for n in archive.files if n != "y" and not n.startswith(HEAD_LABELS)]
                if "x" in archive.files:
                    x = archive["x"]
                elif named:  # a model with several inputs: one array per input name
                    x = {name: archive[name] for name in named}
                else:
                    raise UsageError(
                        f"Expected an array named 'x' (or one per model input) in "
                        f"{str(path)!r}, got {archive.files}"
                    )
        elif isinstance(label_column, dict):  # several heads: one label column each
            x, y, names = _read_csv_heads(path, label_column, features)
        else:
            x, y, names = _read_csv(path, label_column, features)
    except UsageError:
        raise
    except (OSError, ValueError) as exc:
        raise UsageError(f"Could not read {str(path)!r}: {exc}") from exc
    if need_labels and y is None:
        where = "a --label-column" if path.suffix == ".csv" else "an array named 'y'"
        raise UsageError(f"Expected labels in {str(path)!r} ({where}), found none")
    n = len(next(iter(x.values()))) if isinstance(x, dict) else len(x)
    for head, labels in (y.items() if isinstance(y, dict) else [("", y)]):
        if labels is not None and len(labels) != n:
            which = f" for head {head!r}" if head else ""
            raise UsageError(
                f"Expected one label per sample in {str(path)!r}{which}, got {len(labels)} for {n}"
            )
    shown = sorted(y) if isinstance(y, dict) else None if y is None else y.shape
    logger.debug("read %s: %d samples, labels %s", path, n, shown)
    return x, y, names


def _read_csv_heads(
    path: Path, label_columns: dict[str, str], features: tuple[str, ...] | None
) -> tuple[np.ndarray, dict[str, np.ndarray], tuple[str, ...]]:
    """A CSV with one label column per head (``label_columns``: head name -> column)."""
    source = CsvSource(path, None, None, tuple(label_columns.values()), can_skip_header=False,
                       expected=features)  # fmt: skip
    xs: list[np.ndarray] = []
    ys: dict[str, list[np.ndarray]] = {head: [] for head in label_columns}
    for chunk in source.chunks(65_536):
        if chunk.invalid is not None:
            i = int(np.flatnonzero(chunk.invalid)[0])
            raise UsageError(f"Bad row at {chunk.where(i)}: {chunk.reasons.get(i)}")
        xs.append(chunk.x)
        for head, column in label_columns.items():
            values = np.asarray(chunk.keep[column])
            try:
                ys[head].append(values.astype(np.float64).astype(np.float32))
            except ValueError:
                i = next(i for i, v in enumerate(values.tolist()) if not is_number(str(v)))
                raise UsageError(
                    f"Expected a number in column {column!r} on {chunk.where(i)}, got "
                    f"{values.tolist()[i]!r}"
                ) from None
    width = len(source.features)
    x = np.concatenate(xs) if xs else np.empty((0, width), dtype=np.float32)
    y = {h: np.concatenate(v) if v else np.empty(0, np.float32) for h, v in ys.items()}
    return x, y, tuple(source.feature_names)


def _read_csv(
    path: Path, label_column: str | None, features: tuple[str, ...] | None
) -> tuple[np.ndarray, np.ndarray | None, tuple[str, ...]]:
    """The whole CSV through the streaming reader: one parser, one header check (a first row
    of numbers is refused, never dropped), the same messages with line numbers."""
    source = CsvSource(path, None, label_column, (), can_skip_header=False, expected=features)
    xs, ys = [], []
    for chunk in source.chunks(65_536):
        if chunk.invalid is not None:
            i = int(np.flatnonzero(chunk.invalid)[0])
            raise UsageError(f"Bad row at {chunk.where(i)}: {chunk.reasons.get(i)}")
        xs.append(chunk.x)
        if chunk.labels is not None:
            try:
                ys.append(chunk.labels.astype(np.float64).astype(np.float32))
            except ValueError:
                i = next(i for i, v in enumerate(chunk.labels.tolist()) if not is_number(v))
                raise UsageError(
                    f"Expected a number in column {label_column!r} on {chunk.where(i)}, got "
                    f"{chunk.labels.tolist()[i]!r}"
                ) from None
    width = len(source.features)
    x = np.concatenate(xs) if xs else np.empty((0, width), dtype=np.float32)
    names = tuple(source.feature_names)
    if label_column is None:
        return x, None, names
    return x, (np.concatenate(ys) if ys else np.empty(0, dtype=np.float32)), names
