"""pyarrow, imported when a run needs it (the ``batch`` extra): numpy <-> Arrow for plain
numeric columns through their buffers, and the reader of Parquet and Arrow IPC files.

pyarrow's own ``to_numpy``, ``fill_null`` and ``pa.array(ndarray)`` import pandas when it is
installed (it is, wherever Ray is): ~0.3 s and ~60 MB of resident memory for nothing. The
buffers give the same values, zero-copy where the layout allows, without it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from keras_edge.runtime.batch.chunks import Chunk, Source, rows_at
from keras_edge.runtime.errors import UsageError
from keras_edge.runtime.inputs import feature_columns

logger = logging.getLogger(__name__)

BATCH_EXTRA = "pip install 'keras-edge[batch]'"
ARROW_SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".arrow": "ipc", ".feather": "ipc",
                  ".ipc": "ipc", ".arrows": "ipc"}  # fmt: skip


def pyarrow() -> Any:
    """The pyarrow module, or a UsageError naming the extra that brings it."""
    try:
        import pyarrow
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


def _numeric(pa: Any, kind: Any) -> bool:
    t = pa.types
    return bool(t.is_integer(kind) or t.is_floating(kind) or t.is_boolean(kind))


class ArrowSource(Source):
    """Parquet and Arrow IPC files, in order. Features are the ``columns`` named; else the
    ``expected`` names the model recorded at export, matched by name; else every numeric column
    but the label and the kept ones, in order. Every file must hold them."""

    def __init__(
        self, files: list[Path], columns: Sequence[str] | None, label_column: str | None,
        keep: Sequence[str], expected: tuple[str, ...] | None = None,
    ) -> None:  # fmt: skip
        pa = self.pa = pyarrow()
        self.files = files
        self.name = str(files[0]) if len(files) == 1 else f"{len(files)} files from {files[0].parent}"
        schema = self._schema(files[0])
        skip = {*keep, *([label_column] if label_column else [])}
        numeric = [f.name for f in schema if _numeric(pa, f.type)]
        if columns:
            features = list(columns)
        else:  # non-numeric columns are never features: only numeric ones are unexpected
            named = feature_columns(schema.names, expected, skip, repr(self.name), numeric)
            features = named or [c for c in numeric if c not in skip]
            logger.info("feature columns: %s", features)
        self.features, self.label, self.keep_names = features, label_column, tuple(keep)
        self.has_labels = label_column is not None
        needed = [*features, *keep, *([label_column] if label_column else [])]
        total = 0
        for path in files:
            schema = self._schema(path)
            missing = [c for c in needed if c not in schema.names]
            if missing:
                raise UsageError(f"Expected columns {missing} in {str(path)!r}, got {schema.names}")
            wrong = [
                f"{c} ({schema.field(c).type})"
                for c in features
                if not _numeric(pa, schema.field(c).type)
            ]
            if wrong:
                raise UsageError(
                    f"Expected numeric feature columns in {str(path)!r}, got {', '.join(wrong)} "
                    f"(choose the features with --columns)"
                )
            rows = self._rows(path)
            total = None if rows is None or total is None else total + rows
        if not features:
            raise UsageError(f"Expected numeric feature columns in {self.name!r}, got {schema.names}")
        self.needed, self.total, self.feature_names = needed, total, tuple(features)

    def _schema(self, path: Path) -> Any:
        try:
            if ARROW_SUFFIXES[path.suffix] == "parquet":
                return self.pa.parquet.read_schema(path)
            return self._ipc(path).schema
        except (OSError, self.pa.ArrowException) as exc:
            raise UsageError(f"Could not read {str(path)!r}: {exc}") from exc

    def _ipc(self, path: Path) -> Any:
        """An IPC file reader (random access), else a stream reader, over a memory map."""
        source = self.pa.memory_map(str(path))
        try:
            return self.pa.ipc.open_file(source)
        except self.pa.ArrowInvalid:
            return self.pa.ipc.open_stream(self.pa.memory_map(str(path)))

    def _rows(self, path: Path) -> int | None:
        if ARROW_SUFFIXES[path.suffix] == "parquet":
            return int(self.pa.parquet.ParquetFile(path).metadata.num_rows)
        reader = self._ipc(path)
        if not hasattr(reader, "num_record_batches"):
            return None  # a stream: its length is known at its end
        return sum(reader.get_batch(i).num_rows for i in range(reader.num_record_batches))

    def _batches(self, path: Path, size: int) -> Iterator[Any]:
        if ARROW_SUFFIXES[path.suffix] == "parquet":
            pf = self.pa.parquet.ParquetFile(path)
            # One reader per row group: one reader over the whole file kept several row groups'
            # data (pyarrow 26: ~95 MB for 10^7 rows of 2 floats, ~13 MB this way).
            for group in range(pf.num_row_groups):
                yield from pf.iter_batches(batch_size=size, row_groups=[group], columns=self.needed)
            return
        reader = self._ipc(path)
        batches = (
            (reader.get_batch(i) for i in range(reader.num_record_batches))
            if hasattr(reader, "num_record_batches")
            else reader
        )
        for batch in batches:
            batch = batch.select(self.needed)
            for start in range(0, batch.num_rows, size):
                yield batch.slice(start, size)

    def chunks(self, size: int) -> Iterator[Chunk]:
        for path in self.files:
            start = 0
            try:
                for batch in self._batches(path, size):
                    yield self._chunk(batch, str(path), start)
                    start += batch.num_rows
            except self.pa.ArrowException as exc:
                raise UsageError(f"Could not read {str(path)!r} after row {start}: {exc}") from exc

    def _chunk(self, batch: Any, name: str, start: int) -> Chunk:
        n = batch.num_rows
        invalid = np.zeros(n, dtype=bool)
        reasons: dict[int, str] = {}
        parts = []
        for c in self.features:
            values, nulls = to_numpy(batch.column(c))
            if nulls is not None:
                for i in np.flatnonzero(nulls & ~invalid)[:1].tolist():
                    reasons[i] = f"null in column {c!r}"
                invalid |= nulls
            parts.append(values)
        x = np.empty((n, len(parts)), dtype=np.result_type(*parts))
        for j, part in enumerate(parts):
            x[:, j] = part
        labels = None
        if self.label is not None:
            column = batch.column(self.label)
            nulls = null_mask(column)
            if nulls is not None:
                for i in np.flatnonzero(nulls & ~invalid)[:1].tolist():
                    reasons[i] = f"null label in column {self.label!r}"
                invalid |= nulls
            numeric = _numeric(self.pa, column.type) and not self.pa.types.is_boolean(column.type)
            labels = to_numpy(column)[0] if numeric else column.to_numpy(zero_copy_only=False)
        return Chunk(
            x, n, rows_at(name, start), labels=labels,
            keep={k: batch.column(k) for k in self.keep_names},
            invalid=invalid if invalid.any() else None, reasons=reasons,
        )  # fmt: skip
