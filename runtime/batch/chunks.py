"""A chunk of rows read from an input, and the reader interface every format implements."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from keras_edge.runtime.errors import UsageError


@dataclass
class Chunk:
    """``n`` rows in file order. ``x``: features (an array, or a dict by input name);
    ``labels``: raw label values; ``keep``: pass-through columns by name (numpy arrays, or
    pyarrow arrays from Arrow input); ``invalid``: rows the reader could not read, their
    features placeholders, with ``reasons``; ``where(i)``: row i's place in the input."""

    x: Any
    n: int
    where: Callable[[int], str]
    labels: Any = None
    keep: dict[str, Any] = field(default_factory=dict)
    invalid: np.ndarray | None = None
    reasons: dict[int, str] = field(default_factory=dict)


class Source:
    """A data file (or several) read chunk by chunk. ``total``: rows, when known up front."""

    name: str = ""
    total: int | None = None
    has_labels: bool = False
    keep_names: tuple[str, ...] = ()
    feature_names: tuple[str, ...] | None = None  # columns of a table; None: arrays

    def chunks(self, size: int) -> Iterator[Chunk]:
        raise NotImplementedError

    def fraction(self) -> float | None:
        """The share of the input read so far, for a progress bar where ``total`` is unknown."""
        return None


def rows_at(name: str, start: int) -> Callable[[int], str]:
    return lambda i: f"row {start + i} of {name} (from 0)"


def feature_columns(
    available: list[str], expected: tuple[str, ...] | None, skip: set[str], where: str,
    others: list[str] | None = None,
) -> list[str] | None:  # fmt: skip
    """The model's feature columns of a named table, in the model's order: ``expected`` (the
    names recorded at export) matched by name, never by position. ``available``: the table's
    columns; ``skip``: the label and the kept columns; ``others``: the columns that could be a
    feature (default: every column not skipped). None when the model recorded no names (the
    caller keeps the positional rule). A recorded name missing from the table, or a column that
    could be a feature but is not one of them, is refused naming both lists."""
    if expected is None:
        return None
    candidates = [c for c in (available if others is None else others) if c not in skip]
    missing = [c for c in expected if c not in available]
    unexpected = [c for c in candidates if c not in expected]
    if missing or unexpected:
        said = [f"missing {missing}" if missing else "",
                f"unexpected {unexpected}" if unexpected else ""]  # fmt: skip
        raise UsageError(
            f"Expected the model's feature columns {list(expected)} (recorded at export) in "
            f"{where}, got {candidates}: {', '.join(s for s in said if s)}; name the features with "
            f"--columns (in the model's order), pass others through with --keep-columns"
        )
    return list(expected)
