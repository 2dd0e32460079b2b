"""Write scores as they come, chunk by chunk: CSV, JSON Lines, one JSON document, ``.npy`` (a
structured array) and Parquet (with pyarrow).

Nothing is half-written: a file is written under a temporary name in its destination folder
and renamed at the end (:meth:`Writer.commit`); on failure it is removed (:meth:`Writer.abort`).
Standard output is spooled (in memory, then a temporary file past a few MB) and copied out at
the end, so a refused input prints nothing there either.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import IO, Any

import numpy as np

from keras_edge.runtime.batch.arrow import from_numpy, pyarrow
from keras_edge.runtime.batch.npy import NUMPY_HEADER_LIMIT, npy_header, numbers
from keras_edge.runtime.batch.scoring import Layout, as_columns
from keras_edge.runtime.errors import UsageError

logger = logging.getLogger(__name__)

FILE_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".json": "json", ".npy": "npy", ".parquet": "parquet"}
STDOUT_FORMATS = ("csv", "json", "jsonl")
ROW_GROUP = 65_536  # Parquet rows per row group, at least (smaller chunks are gathered)


def _plain(values: Any) -> list[Any]:
    """A pass-through column as Python values."""
    return values.to_pylist() if hasattr(values, "to_pylist") else np.asarray(values).tolist()


class Writer:
    """Base: the destination (a temporary file beside ``path``, or spooled stdout) and the
    columns. Subclasses implement :meth:`write` (and :meth:`_finish` for a trailer)."""

    binary = False

    def __init__(
        self, path: Path | None, layout: Layout, keep: tuple[str, ...], meta: dict[str, Any]
    ) -> None:
        self.path, self.layout, self.keep, self.meta = path, layout, keep, meta
        clash = sorted(set(keep) & set(layout.columns(text=True)))
        if clash:
            raise UsageError(f"Expected pass-through columns other than the outputs, got {clash}")
        self.rows = 0
        if path is None:
            self.tmp: Path | None = None
            self.fh: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=8 << 20)
        else:
            if not path.parent.is_dir():
                raise UsageError(f"Expected an existing folder for --output {str(path)!r}, found none")
            self.tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
            self.fh = open(self.tmp, "wb")
        self._start()

    def _start(self) -> None:
        pass

    def _finish(self) -> None:
        pass

    def _text(self, text: str) -> None:
        self.fh.write(text.encode("utf-8"))

    def write(
        self,
        keep: dict[str, Any],
        values: np.ndarray,
        classes: np.ndarray | None,
        nulls: np.ndarray | None,
    ) -> None:
        raise NotImplementedError

    def commit(self) -> None:
        """Finish the file and move it into place (or copy the spool to stdout)."""
        self._finish()
        if self.tmp is None:
            self.fh.seek(0)
            out = getattr(sys.stdout, "buffer", None)
            if out is not None:
                sys.stdout.flush()
                shutil.copyfileobj(self.fh, out)
                out.flush()
            else:  # a text stream without bytes (a test's capture)
                sys.stdout.write(self.fh.read().decode("utf-8"))
            self.fh.close()
            return
        self.fh.close()
        os.replace(self.tmp, self.path)  # type: ignore[arg-type]
        logger.info("wrote %d rows to %s", self.rows, self.path)

    def abort(self) -> None:
        """Leave nothing behind."""
        try:
            self.fh.close()
        except Exception:  # already broken: the file goes anyway
            logger.debug("closing %s failed", self.tmp, exc_info=True)
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)

    def _text_columns(
        self,
        keep: dict[str, Any],
        values: np.ndarray,
        classes: np.ndarray | None,
        nulls: np.ndarray | None,
        floats: bool = False,
    ) -> list[list[Any]]:
        """Every output column as a list of Python values (CSV strings unless ``floats``)."""
        cols = [_plain(keep[k]) for k in self.keep]
        for j in range(values.shape[1]):
            column = values[:, j].tolist()
            cols.append(column if floats else [f"{v:.9g}" for v in column])  # 9 digits: exact float32
        if classes is not None:
            cls2 = as_columns(classes)
            cols += [cls2[:, j].tolist() for j in range(cls2.shape[1])]
            if self.layout.named:
                cols.append(self.layout.names(classes).tolist())
        if nulls is not None and nulls.any():
            empty = None if floats else ""
            for i in np.flatnonzero(nulls).tolist():
                for c in cols[len(self.keep) :]:
                    c[i] = empty
        return cols


class CsvWriter(Writer):
    def _start(self) -> None:
        self._buffer = io.StringIO()
        self._csv = csv.writer(self._buffer, lineterminator="\n")
        self._csv.writerow([*self.keep, *self.layout.columns(text=True)])

    def write(self, keep, values, classes, nulls) -> None:  # type: ignore[no-untyped-def]
        self._csv.writerows(zip(*self._text_columns(keep, values, classes, nulls), strict=True))
        self._text(self._buffer.getvalue())
        self._buffer.seek(0)
        self._buffer.truncate()
        self.rows += len(values)

    def _finish(self) -> None:
        self._text(self._buffer.getvalue())


def _json_columns(cols: list[list[Any]]) -> list[list[str]]:
    """Each value as ``json.dumps`` writes it, a column at a time: floats and ints by their
    repr (the outputs are finite), text and anything else through ``json.dumps``."""
    out = []
    for column in cols:
        kinds = {type(v) for v in column}
        if kinds <= {float, int, type(None)} and bool not in kinds:
            out.append(["null" if v is None else repr(v) for v in column])
        else:
            dumps = json.dumps
            out.append([dumps(v, default=str) for v in column])
    return out


class JsonLinesWriter(Writer):
    def write(self, keep, values, classes, nulls) -> None:  # type: ignore[no-untyped-def]
        keys = [json.dumps(name) + ": " for name in [*self.keep, *self.layout.columns(text=True)]]
        cols = _json_columns(self._text_columns(keep, values, classes, nulls, floats=True))
        self._text("".join("{" + ", ".join(k + v for k, v in zip(keys, row, strict=True)) + "}\n"
                           for row in zip(*cols, strict=True)))  # fmt: skip
        self.rows += len(values)


class JsonWriter(Writer):
    """One JSON document, as ``predict --format json`` always printed (``json.dump`` with
    ``indent=2``, byte for byte): the variant, the threshold, the rule, the columns and the
    rows (lists), written row by row."""

    def _start(self) -> None:
        head = {**self.meta, "columns": [*self.keep, *self.layout.columns(text=True)]}
        text = json.dumps(head, indent=2)
        self._text(text[: text.rindex("\n}")] + ',\n  "rows": [')

    def write(self, keep, values, classes, nulls) -> None:  # type: ignore[no-untyped-def]
        cols = _json_columns(self._text_columns(keep, values, classes, nulls, floats=True))
        rows = ["[\n      " + ",\n      ".join(row) + "\n    ]" for row in zip(*cols, strict=True)]
        if rows:
            self._text(("\n    " if self.rows == 0 else ",\n    ") + ",\n    ".join(rows))
        self.rows += len(values)

    def _finish(self) -> None:
        self._text("\n  ]\n}\n" if self.rows else "]\n}\n")


class NpyWriter(Writer):
    """A structured array: the pass-through columns (numbers only), the values, the classes.
    The header is reserved before the first rows, sized from the columns for the widest row
    count there can be, and rewritten with the row count at the end, so the rows stream to
    disk whatever the number of columns (a 1000-class head too)."""

    binary = True

    def _start(self) -> None:
        self.dtype: np.dtype | None = None
        self._header_size = 0  # reserved once the columns' types are known (the first rows)

    def _reserve(self, dtype: np.dtype) -> None:
        self.dtype = dtype
        self._header_size = len(npy_header(dtype, 0))
        self.fh.write(b"\0" * self._header_size)
        if self._header_size > NUMPY_HEADER_LIMIT:
            logger.warning(
                "%s: %d columns make a %d-byte .npy header, above the %d numpy loads by default: "
                "read it with np.load(path, max_header_size=%d), or write .parquet",
                self.path, len(dtype.names or ()), self._header_size, NUMPY_HEADER_LIMIT,
                self._header_size,
            )  # fmt: skip

    def _dtype(self, keep: dict[str, Any], classes: np.ndarray | None) -> np.dtype:
        fields = []
        for k in self.keep:
            column = keep[k]
            array = numbers(column)
            if array.dtype.kind not in "biufmM":
                raise UsageError(
                    f"Expected numeric pass-through columns for .npy output, got {k!r} of type "
                    f"{array.dtype} ({array[:3].tolist()}...): write .parquet, .csv or .jsonl to keep "
                    f"it"
                )
            fields.append((k, array.dtype))
        fields += [(c, np.float32) for c in self.layout.values]
        if classes is not None:
            fields += [(c, np.int64) for c in self.layout.classes]
        return np.dtype(fields)

    def write(self, keep, values, classes, nulls) -> None:  # type: ignore[no-untyped-def]
        if self.dtype is None:
            self._reserve(self._dtype(keep, classes))
        out = np.empty(len(values), dtype=self.dtype)
        for k in self.keep:
            column = numbers(keep[k])
            if not np.can_cast(column.dtype, out.dtype[k], "same_kind"):
                raise UsageError(
                    f"Expected pass-through column {k!r} to stay {out.dtype[k]} for .npy output, "
                    f"got {column.dtype} ({column[:3].tolist()}...) further on: write .parquet, "
                    f".csv or .jsonl"
                )
            out[k] = column
        for j, c in enumerate(self.layout.values):
            out[c] = values[:, j]
        if classes is not None:
            cls2 = as_columns(classes)
            for j, c in enumerate(self.layout.classes):
                out[c] = cls2[:, j]
        self.fh.write(out.tobytes())
        self.rows += len(values)

    def _finish(self) -> None:
        if self.dtype is None:  # no rows: pass-through columns of unknown type become float64
            classes = np.zeros(0, np.int64) if self.layout.classes else None
            self._reserve(self._dtype({k: np.zeros(0) for k in self.keep}, classes))
        self.fh.seek(0)
        self.fh.write(npy_header(self.dtype, self.rows, self._header_size))  # type: ignore[arg-type]


class ParquetWriter(Writer):
    binary = True

    def _start(self) -> None:
        self.pa = pyarrow()
        self.fh.close()  # pyarrow writes the temporary file itself, natively
        self._writer: Any = None
        self._pending: list[Any] = []
        self._pending_rows = 0

    def _table(self, keep, values, classes, nulls) -> Any:  # type: ignore[no-untyped-def]
        pa = self.pa
        arrays, names = [], []
        for k in self.keep:
            column = keep[k]
            arrow = isinstance(column, (pa.Array, pa.ChunkedArray))
            arrays.append(column if arrow else from_numpy(column))
            names.append(k)
        for j, c in enumerate(self.layout.values):
            arrays.append(from_numpy(values[:, j], nulls))
            names.append(c)
        if classes is not None:
            cls2 = as_columns(classes)
            for j, c in enumerate(self.layout.classes):
                arrays.append(from_numpy(cls2[:, j], nulls))
                names.append(c)
        return pa.Table.from_arrays(arrays, names=names)

    def write(self, keep, values, classes, nulls) -> None:  # type: ignore[no-untyped-def]
        table = self._table(keep, values, classes, nulls)
        self._pending.append(table)
        self._pending_rows += table.num_rows
        self.rows += table.num_rows
        if self._pending_rows >= ROW_GROUP:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        table = self.pa.concat_tables(self._pending) if len(self._pending) > 1 else self._pending[0]
        if self._writer is None:
            self._writer = self.pa.parquet.ParquetWriter(str(self.tmp), table.schema)
        self._writer.write_table(table, row_group_size=max(table.num_rows, 1))
        self._pending, self._pending_rows = [], 0

    def _finish(self) -> None:
        self._flush()
        if self._writer is None:  # no rows: an empty file with the output columns
            values = np.zeros((0, len(self.layout.values)), np.float32)
            classes = np.zeros(0, np.int64) if self.layout.classes else None
            empty = self._table({k: [] for k in self.keep}, values, classes, None)
            self._writer = self.pa.parquet.ParquetWriter(str(self.tmp), empty.schema)
        self._writer.close()

    def abort(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception:  # the file is removed anyway
                logger.debug("closing the Parquet writer failed", exc_info=True)
        super().abort()


WRITERS: dict[str, type[Writer]] = {
    "csv": CsvWriter, "jsonl": JsonLinesWriter, "json": JsonWriter, "npy": NpyWriter,
    "parquet": ParquetWriter,
}  # fmt: skip


def output_format(path: Path | None, fmt: str | None) -> str:
    """The format: ``--output``'s suffix, which must name one (a file whose name says one format
    and holds another is refused before anything is scored); on stdout ``--format`` (default
    csv)."""
    if path is not None:
        suffix = path.suffix.lower()
        if suffix not in FILE_FORMATS:
            got = f"{path.suffix!r}" if path.suffix else "no suffix"
            raise UsageError(
                f"Expected --output to end in one of {', '.join(FILE_FORMATS)} (the suffix decides "
                f"the format), got {got} in {str(path)!r}"
            )
        chosen = FILE_FORMATS[suffix]
        if fmt is not None and fmt != chosen:
            raise UsageError(
                f"Expected --format {chosen} for --output {str(path)!r}, got --format {fmt}"
            )
        return chosen
    if fmt is not None and fmt not in STDOUT_FORMATS:
        raise UsageError(f"Expected --format from {list(STDOUT_FORMATS)} on stdout, got {fmt!r} "
                         f"(.npy and .parquet go to --output FILE)")  # fmt: skip
    return fmt or "csv"


def open_writer(
    path: Path | None, fmt: str, layout: Layout, keep: tuple[str, ...], meta: dict[str, Any]
) -> Writer:
    return WRITERS[fmt](path, layout, keep, meta)
