""".npy output written as a stream: the header of a 1-d structured array, reserved before the
first rows and rewritten with the row count at the end, and pass-through columns turned into
numbers. :class:`keras_edge.runtime.batch.writers.NpyWriter` writes with them."""

from __future__ import annotations

from typing import Any

import numpy as np

from keras_edge.runtime.batch.arrow import to_numpy
from keras_edge.runtime.errors import UsageError


def numbers(column: Any) -> np.ndarray:
    """A pass-through column as numpy: as it is; CSV text as integers, else floats, where it
    is numbers; from Arrow (nulls of an integer column become NaN, so the column turns float)."""
    if isinstance(column, np.ndarray):
        if column.dtype.kind in "US":
            for kind in (np.int64, np.float64):
                try:
                    return column.astype(kind)
                except ValueError:
                    continue
        return column
    if hasattr(column, "null_count"):
        values, nulls = to_numpy(column)
        if nulls is not None:
            values = values.astype(np.float64)
            values[nulls] = np.nan
        return values
    return np.asarray(column)


MAGIC = b"\x93NUMPY"
MOST_ROWS = np.iinfo(np.int64).max  # the widest row count a header can ever have to say
ALIGN = 64  # numpy aligns the data after the header to 64 bytes; so do we
NUMPY_HEADER_LIMIT = 10_000  # np.load's default max_header_size (numpy >= 1.24)


def npy_header(dtype: np.dtype, rows: int, size: int | None = None) -> bytes:
    """The .npy header (magic, version, length, the dict padded with spaces and a newline) of a
    1-d structured array of ``rows`` rows, ``size`` bytes long; without ``size``, the fewest
    bytes, a multiple of 64, that hold the header of any row count. The version is the oldest
    that can say it: 1.0 (latin-1 text, a 2-byte length), 2.0 past 65535 bytes (thousands of
    columns), 3.0 for column names outside latin-1 (utf-8 text, labels in any script)."""
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
              "shape": (rows,)}  # fmt: skip
    text = repr(header)
    utf8 = not text.isascii() and any(ord(c) > 0xFF for c in text)
    encoding = "utf-8" if utf8 else "latin1"
    body = text.encode(encoding)
    if size is None:
        widest = len(repr({**header, "shape": (MOST_ROWS,)}).encode(encoding)) + 1  # + "\n"
        size = -(-(len(MAGIC) + 4 + widest) // ALIGN) * ALIGN
        if utf8 or size - len(MAGIC) - 4 > 0xFFFF:  # a 4-byte length
            size = -(-(len(MAGIC) + 6 + widest) // ALIGN) * ALIGN
    if utf8:
        version, width = b"\x03\x00", 4
    else:
        version, width = (b"\x01\x00", 2) if size - len(MAGIC) - 4 <= 0xFFFF else (b"\x02\x00", 4)
    room = size - len(MAGIC) - 2 - width
    if len(body) + 1 > room:  # never: the size was reserved for the widest row count
        raise UsageError(
            f"Expected a .npy header of at most {room} bytes, got {len(body) + 1} "
            f"({len(dtype.names or ())} columns, {rows} rows)"
        )
    return MAGIC + version + room.to_bytes(width, "little") + body.ljust(room - 1) + b"\n"
