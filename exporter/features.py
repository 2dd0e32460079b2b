"""Feature names: recorded at export so that a file's columns reach the model by name.

A model of one input of shape ``(None, k)`` may be given the names of its ``k`` features: the
header of the CSV it was exported from (the CLI passes it), ``feature_names=`` in Python, or the
columns of a pandas DataFrame given as calibration, validation or tuning data. The manifest and
the record inside every artifact keep them; ``keras-edge predict`` and ``score_batch`` then take
a table's columns by name, whatever their order.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from keras_edge.runtime.batch.scoring import by_input as table_by_input
from keras_edge.runtime.errors import UsageError
from keras_edge.runtime.inputs import named_columns
from keras_edge.runtime.manifest import InputSpec

logger = logging.getLogger(__name__)


def frame_names(x: Any) -> tuple[str, ...] | None:
    """A DataFrame's column names when every column is named (see ``named_columns``)."""
    return named_columns(x)


def choose(given: Sequence[str] | None, data: dict[str, Any]) -> tuple[str, ...] | None:
    """The feature names to record: ``given``, else those of the first DataFrame among ``data``
    (what -> the features); every DataFrame must name the same set, in any order."""
    names = None if given is None else tuple(str(n) for n in given)
    for what, x in data.items():
        found = frame_names(x)
        if found is None:
            continue
        if names is None:
            names = found
        elif sorted(found) != sorted(names):
            raise UsageError(
                f"Expected the {what} data's columns to be the features {list(names)}, got "
                f"{list(found)}"
            )
    return names


def in_order(x: Any, names: tuple[str, ...] | None) -> Any:
    """A DataFrame's features as an array with its columns in the recorded order (by name,
    never by position), their dtype kept; anything else as it is."""
    if names is None or frame_names(x) is None:
        return x
    return np.asarray(x[list(names)])


def one_column_each(specs: tuple[InputSpec, ...], names: tuple[str, ...] | None) -> bool:
    """True when a table's columns ``names`` are a model's inputs, one column each: several
    inputs of shape (None, 1) named as the columns (Keras's structured-data style)."""
    return (
        names is not None
        and len(specs) > 1
        and all(s.shape == (None, 1) for s in specs)
        and sorted(names) == sorted(s.name for s in specs)
    )


def by_input(x: Any, names: tuple[str, ...] | None, specs: tuple[InputSpec, ...]) -> Any:
    """A table whose columns are the model's inputs (see :func:`one_column_each`) as a dict of
    (n, 1) arrays by input name, each in its input's dtype when it holds whole numbers; anything
    else (already a dict or list of arrays) as it is."""
    if names is None or isinstance(x, (dict, list, tuple)) or x is None:
        return x
    columns = frame_names(x) or names
    array = np.asarray(x)
    if array.ndim != 2 or array.shape[1] != len(columns):
        return x
    return table_by_input(array, specs, columns)


def named(specs: tuple[InputSpec, ...], names: tuple[str, ...] | None) -> tuple[InputSpec, ...]:
    """``specs`` with the feature names recorded on the model's one input; a model that cannot
    take them (several inputs, or an input that is not one row of features) is refused."""
    if names is None:
        return specs
    spec = specs[0]
    if len(specs) != 1 or len(spec.shape) != 2:
        raise UsageError(
            f"Expected feature names only for a model with one input of shape (None, features), "
            f"got inputs {[(s.name, list(s.shape)) for s in specs]}"
        )
    if len(names) != spec.shape[1] or len(set(names)) != len(names) or not all(names):
        raise UsageError(
            f"Expected {spec.shape[1]} distinct feature names for input {spec.name!r} of shape "
            f"{list(spec.shape)}, got {list(names)}"
        )
    logger.info("feature names of %r: %s", spec.name, list(names))
    return (replace(spec, features=names),)
