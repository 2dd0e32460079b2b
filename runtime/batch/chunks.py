"""A chunk of rows read from an input, and the reader interface every format implements."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np


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
