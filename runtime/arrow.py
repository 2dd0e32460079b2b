"""pyarrow, imported when a run needs it (the ``batch`` extra), and numpy <-> Arrow for plain
numeric columns through their buffers.

pyarrow's own ``to_numpy``, ``fill_null`` and ``pa.array(ndarray)`` import pandas when it is
installed (it is, wherever Ray is): ~0.3 s and ~60 MB of resident memory for nothing. The
buffers give the same values, zero-copy where the layout allows, without it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from keras_edge.runtime.errors import UsageError

BATCH_EXTRA = "pip install 'keras-edge[batch]'"


def pyarrow() -> Any:
    """The pyarrow module, or a UsageError naming the extra that brings it."""
    try:
        import pyarrow
        import pyarrow.compute
        import pyarrow.parquet
    except ImportError as exc:
        raise UsageError(f"Parquet and Arrow files need pyarrow: {BATCH_EXTRA}") from exc
    return pyarrow


def null_mask(column: Any) -> np.ndarray | None:
    """The null slots of an Arrow array, from its validity bitmap; None without nulls."""
    if not column.null_count:
        return None
    if column.buffers()[0] is None:  # a null-typed array: every slot is null
        return np.ones(len(column), dtype=bool)
    bits = np.frombuffer(column.buffers()[0], dtype=np.uint8)
    valid = np.unpackbits(bits, bitorder="little")[column.offset : column.offset + len(column)]
    return valid == 0


def to_numpy(column: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """A numeric Arrow array (or one-chunk ChunkedArray) as numpy, and its null mask (None
    without nulls); null slots hold 0."""
    pa = pyarrow()
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    kind = column.type
    nulls = null_mask(column)
    if (pa.types.is_integer(kind) or pa.types.is_floating(kind)) and not pa.types.is_float16(kind):
        dtype = np.dtype(kind.to_pandas_dtype())  # a numpy dtype; imports no pandas
        offset = column.offset * dtype.itemsize
        values = np.frombuffer(column.buffers()[1], dtype=dtype, count=len(column), offset=offset)
    else:  # booleans (bit-packed), half floats: through pyarrow
        values = column.to_numpy(zero_copy_only=False)
    if nulls is not None:
        values = values.copy()
        values[nulls] = 0
    return values, nulls


def from_numpy(values: np.ndarray, nulls: np.ndarray | None = None) -> Any:
    """A 1-d numeric numpy array as an Arrow array (zero-copy), ``nulls`` marking null slots;
    anything else (text, objects) through ``pa.array``."""
    pa = pyarrow()
    values = np.asarray(values)
    if values.ndim != 1 or values.dtype.kind not in "iuf" or values.dtype.byteorder == ">":
        return pa.array(values.tolist() if values.dtype.kind in "USO" else values, mask=nulls)
    values = np.ascontiguousarray(values)
    validity = None
    if nulls is not None and nulls.any():
        validity = pa.py_buffer(np.packbits(~nulls, bitorder="little"))
    kind = pa.from_numpy_dtype(values.dtype)
    return pa.Array.from_buffers(kind, len(values), [validity, pa.py_buffer(values)])
