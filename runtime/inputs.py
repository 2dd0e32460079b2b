"""The checks every input passes on its way into an engine, because the engines answer bad
input silently: fed ``[nan, 0]`` an fp32 model answers NaN (class 0 by ``p > t``) and a
full-int8 model answers p = 0.996 (class 1). Shape, rank, dtype (a safe cast to float32, never a
float cast for token ids), id ranges, float32's range and NaN/Inf: each refused with a typed
:class:`InputError` naming what was received and what was expected."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from keras_edge.runtime.errors import InputError, UsageError
from keras_edge.runtime.records import InputSpec

# 0 x Inf in all_finite's dot product warns "invalid value" on the way to a typed InputError.

_FLOAT32 = np.dtype(np.float32)
_isfinite = math.isfinite
# Kinds of input dtype that cast to float32 without losing what they mean.
_CASTABLE_KINDS = "fiub"
_F32_MAX = float(np.finfo(np.float32).max)


CLI_HINT = (
    "; name the features with --columns (in the model's order), pass others through with "
    "--keep-columns"
)


def feature_columns(
    available: list[str], expected: tuple[str, ...] | None, skip: set[str], where: str,
    others: list[str] | None = None, error: type[UsageError] = UsageError, hint: str = CLI_HINT,
) -> list[str] | None:  # fmt: skip
    """The model's feature columns of a named table, in the model's order: ``expected`` (the
    names recorded at export) matched by name, never by position. ``available``: the table's
    columns; ``skip``: the label and the kept columns; ``others``: the columns that could be a
    feature (default: every column not skipped). None when the model recorded no names (the
    caller keeps the positional rule). A recorded name missing from the table, or a column that
    could be a feature but is not one of them, is ``error``, naming both lists."""
    if expected is None:
        return None
    candidates = [c for c in (available if others is None else others) if c not in skip]
    missing = [c for c in expected if c not in available]
    unexpected = [c for c in candidates if c not in expected]
    if missing or unexpected:
        said = [f"missing {missing}" if missing else "",
                f"unexpected {unexpected}" if unexpected else ""]  # fmt: skip
        raise error(
            f"Expected the model's feature columns {list(expected)} (recorded at export) in "
            f"{where}, got {candidates}: {', '.join(s for s in said if s)}{hint}"
        )
    return list(expected)


def named_columns(x: Any) -> tuple[str, ...] | None:
    """The column names of a table (a pandas DataFrame, anything with ``columns``) when every
    column is named by a string; None otherwise (arrays, numbered columns)."""
    columns = getattr(x, "columns", None)
    if columns is None or isinstance(x, np.ndarray) or not all(isinstance(c, str) for c in columns):
        return None
    return tuple(columns)


def by_name(x: Any, spec: InputSpec) -> Any:
    """A table with named columns (a pandas DataFrame, anything with ``columns`` naming each
    column by a string) reordered by the feature names the export recorded, never taken by
    position (see :func:`feature_columns`). Anything else, and any table for a model exported
    without names, as it is."""
    columns = named_columns(x)
    if spec.features is None or columns is None:
        return x
    where = f"the columns given for {spec.name!r}"
    return x[feature_columns(list(columns), spec.features, set(), where, error=InputError, hint="")]


def check_input(x: Any, spec: InputSpec, multi: bool = False) -> np.ndarray:
    """``x`` as a C-contiguous array of ``spec``'s shape and dtype, or a typed error:
    float32 for float inputs; for integer inputs (token ids) integers only, never a float
    cast, within the Embedding's range when the manifest records it."""
    feature_shape, rank = spec.feature_shape, len(spec.shape)
    if type(x) is not np.ndarray:
        x = by_name(x, spec)
        try:
            x = np.asarray(x)
        except (ValueError, TypeError) as exc:  # ragged nested lists
            raise InputError(
                f"Expected a numeric array of shape (None, "
                f"{', '.join(map(str, feature_shape))}) for {spec.name!r}, got an input "
                f"numpy cannot turn into one: {exc}"
            ) from exc
    if spec.is_float:
        if x.dtype is not _FLOAT32:
            if x.dtype.kind not in _CASTABLE_KINDS:
                raise InputError(
                    f"Expected a numeric input (float, int, uint or bool) for "
                    f"{spec.name!r}, got dtype {x.dtype}"
                )
            with np.errstate(over="ignore"):
                cast = x.astype(np.float32)
            if x.dtype.kind == "f" and x.dtype.itemsize > 4 and x.size:
                refuse_out_of_range(x, cast, spec.name)
            x = cast
    else:
        x = check_integers(x, spec)
    if x.shape[1:] != feature_shape:
        expected = (None, *feature_shape)
        what = f"input {spec.name!r}" if multi else "input"
        if x.ndim != rank:
            hint = ""
            if x.ndim == rank - 1:
                hint = (
                    " (use x.reshape(-1, 1) for samples of one feature)" if feature_shape == (1,)
                    else " (use x.reshape(1, -1) for one sample)"
                )  # fmt: skip
            raise InputError(
                f"Expected {what} of rank {rank} with shape {expected}, got rank {x.ndim} "
                f"with shape {x.shape}{hint}"
            )
        raise InputError(f"Expected {what} of shape {expected}, got {x.shape}")
    if not x.flags.c_contiguous:
        x = np.ascontiguousarray(x)
    return x


def check_integers(x: np.ndarray, spec: InputSpec) -> np.ndarray:
    """Token ids: an integer array in the input's dtype, values within its range. Pixels
    (uint8 / int8): integers in the dtype's range, or floats that hold whole numbers in it (an
    image loaded as float); any other float is refused, never rounded."""
    dtype = np.dtype(spec.dtype)
    if spec.is_pixels and x.dtype.kind == "f":
        info = np.iinfo(dtype)
        whole = np.isfinite(x) & (x == np.round(x))
        if x.size and not (whole.all() and x.min() >= info.min and x.max() <= info.max):
            bad = x[~whole]
            got = f"e.g. {float(bad.flat[0]):g}" if bad.size else f"from {x.min():g} to {x.max():g}"
            raise InputError(
                f"Expected {spec.dtype} values (whole numbers in [{info.min}, {info.max}]) for "
                f"{spec.name!r}, got a {x.dtype} array that does not hold them ({got})"
            )
        return x.astype(dtype)
    if x.dtype.kind not in "iub":
        raise InputError(
            f"Expected integer {'values' if spec.is_pixels else 'ids'} ({spec.dtype}) for "
            f"{spec.name!r}, got dtype {x.dtype}; integer inputs are never cast from floats"
        )
    if x.size:
        low, high = spec.range or (int(np.iinfo(dtype).min), int(np.iinfo(dtype).max))
        lo, hi = int(x.min()), int(x.max())
        if lo < low or hi > high:
            raise InputError(
                f"Expected {'values' if spec.is_pixels else 'ids'} in [{low}, {high}] for "
                f"{spec.name!r}, got values from {lo} to {hi}"
            )
    return x.astype(dtype, copy=False)


def check_inputs(x: Any, specs: tuple[InputSpec, ...]) -> list[np.ndarray]:
    """One checked array per input, in the manifest's order, from a dict by name or a list
    or tuple in order; every input with the same number of samples."""
    names = [spec.name for spec in specs]
    columns = named_columns(x)
    if columns is not None and all(s.shape == (None, 1) for s in specs):
        # A table whose columns are the inputs, one each (Keras's structured-data style): by name.
        where = "the table's columns"
        feature_columns(list(columns), tuple(names), set(), where, error=InputError, hint="")
        x = {n: np.asarray(x[[n]]) for n in names}
    if isinstance(x, dict):
        missing = [n for n in names if n not in x]
        extra = [str(k) for k in x if k not in names]
        if missing or extra:
            raise InputError(
                f"Expected inputs named {names}, got {sorted(map(str, x))} (missing "
                f"{missing}, unknown {extra})"
            )
        arrays = [x[n] for n in names]
    elif isinstance(x, (list, tuple)) and len(x) == len(names):
        arrays = list(x)
    else:
        got = (
            f"a {type(x).__name__} of {len(x)}" if isinstance(x, (list, tuple)) else type(x).__name__
        )
        raise InputError(
            f"Expected a dict {{name: array}} or a list of {len(names)} arrays in the order "
            f"{names}, got {got}"
        )
    multi = len(specs) > 1
    # One value per sample for an input of one feature (a column: dict(frame), Keras's
    # structured-data style) is that input's (n, 1).
    arrays = [
        np.asarray(a).reshape(-1, 1) if spec.shape == (None, 1) and np.ndim(a) == 1 else a
        for a, spec in zip(arrays, specs, strict=True)
    ]
    checked = [check_input(a, spec, multi) for a, spec in zip(arrays, specs, strict=True)]
    sizes = [len(a) for a in checked]
    if len(set(sizes)) > 1:
        raise InputError(
            f"Expected the same number of samples in every input, got "
            f"{dict(zip(names, sizes, strict=True))}"
        )
    return checked


def refuse_out_of_range(x: np.ndarray, cast: np.ndarray, name: str) -> None:
    """A finite float64 beyond float32's range becomes Inf in the cast: say so, rather
    than blame an Inf the caller never passed."""
    if all_finite(cast):
        return
    beyond = np.isfinite(x) & ~np.isfinite(cast)
    if beyond.any():
        raise InputError(
            f"Expected values within float32's range (|x| <= {_F32_MAX:.4g}) for {name!r}, "
            f"got {int(beyond.sum())} value(s) beyond it (largest |x| "
            f"{float(np.abs(x[beyond]).max()):.4g})"
        )


def refuse_nonfinite(x: np.ndarray) -> None:
    """Raise the typed error for an input holding NaN or Inf, counting them and naming the
    first sample that holds one."""
    bad = ~np.isfinite(x)
    rows = np.unique(np.nonzero(bad)[0])
    raise InputError(
        f"Expected finite inputs, got NaN or Inf in {int(bad.sum())} value(s) of "
        f"{len(rows)} sample(s) (first at row {int(rows[0])}); the engines would "
        f"answer them with a confident wrong class"
    )


_ZEROS = np.zeros(0, dtype=np.float32)  # grows to the largest input seen; never written


def all_finite(x: np.ndarray) -> bool:
    """True when every value of a C-contiguous float32 array is finite: its dot product with
    zeros is 0 for finite values and NaN as soon as one is NaN or Inf (0 x Inf is NaN), it cannot
    overflow, and BLAS computes it without a temporary array, 3x faster than a float64 sum."""
    global _ZEROS
    n, zeros = x.size, _ZEROS  # one read: another thread may replace it meanwhile
    if zeros.size < n:
        zeros = _ZEROS = np.zeros(n, dtype=np.float32)
    with np.errstate(invalid="ignore"):  # NaN is the answer here, not a warning
        return _isfinite(float(np.dot(x.reshape(-1), zeros[:n])))
