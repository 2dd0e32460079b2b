"""Read feature arrays (and labels) from .npy, .npz and .csv files, with numpy only."""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

import numpy as np

from keras_edge.runtime.errors import UsageError

logger = logging.getLogger(__name__)

SUFFIXES = (".npy", ".npz", ".csv")


def rows(xs: tuple[np.ndarray, ...], index: Any) -> Any:
    """Rows ``index`` of every input, in the form the runtime and Keras take: the array itself
    for a one-input model, a list in the model's order for several."""
    return xs[0][index] if len(xs) == 1 else [x[index] for x in xs]


def read_data(
    path: str | Path, label_column: str | None = None, need_labels: bool = False
) -> tuple[Any, np.ndarray | None]:
    """Features and, where present, labels from a data file.

    ``.npy`` holds features; ``.npz`` holds ``x`` and optionally ``y`` (for a model with several
    inputs, one array per input name instead of ``x``: then the features are a dict); ``.csv``
    has a header row, and ``label_column`` names the label column (every other column is a
    feature).
    """
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise UsageError(f"Expected a data file ending in {', '.join(SUFFIXES)}, got {str(path)!r}")
    if not path.is_file():
        raise UsageError(f"Expected a data file at {str(path)!r}, found none")
    y: np.ndarray | None = None
    try:
        if path.suffix == ".npy":
            x = np.load(path, allow_pickle=False)
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                y = archive["y"] if "y" in archive.files else None
                named = [name for name in archive.files if name != "y"]
                if "x" in archive.files:
                    x = archive["x"]
                elif named:  # a model with several inputs: one array per input name
                    x = {name: archive[name] for name in named}
                else:
                    raise UsageError(
                        f"Expected an array named 'x' (or one per model input) in "
                        f"{str(path)!r}, got {archive.files}"
                    )
        else:
            x, y = _read_csv(path, label_column)
    except UsageError:
        raise
    except (OSError, ValueError) as exc:
        raise UsageError(f"Could not read {str(path)!r}: {exc}") from exc
    if need_labels and y is None:
        where = "a --label-column" if path.suffix == ".csv" else "an array named 'y'"
        raise UsageError(f"Expected labels in {str(path)!r} ({where}), found none")
    n = len(next(iter(x.values()))) if isinstance(x, dict) else len(x)
    if y is not None and len(y) != n:
        raise UsageError(f"Expected one label per sample in {str(path)!r}, got {len(y)} for {n}")
    logger.debug("read %s: %d samples, labels %s", path, n, None if y is None else y.shape)
    return x, y


def _read_csv(path: Path, label_column: str | None) -> tuple[np.ndarray, np.ndarray | None]:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        raise UsageError(f"Expected a header row in {str(path)!r}, got an empty file")
    header, body = rows[0], rows[1:]
    if label_column is not None and label_column not in header:
        raise UsageError(f"Expected a column {label_column!r} in {str(path)!r}, got {header}")
    label_index = header.index(label_column) if label_column is not None else None
    keep = [i for i in range(len(header)) if i != label_index]
    x = np.empty((len(body), len(keep)), dtype=np.float32)
    y = np.empty(len(body), dtype=np.float32) if label_index is not None else None
    for r, row in enumerate(body):
        if len(row) != len(header):
            raise UsageError(
                f"Expected {len(header)} fields on line {r + 2} of {str(path)!r}, got {len(row)}"
            )
        try:
            x[r] = [float(row[i]) for i in keep]
            if y is not None:
                y[r] = float(row[label_index])  # type: ignore[index]
        except ValueError as exc:
            raise UsageError(f"Expected numbers on line {r + 2} of {str(path)!r}: {exc}") from exc
    return x, y
