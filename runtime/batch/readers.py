"""Read a data file in chunks of rows: features, labels and pass-through columns, never the
whole file at once.

``.npy`` through a memory map (pages already read are given back, so the resident set stays at
about one chunk); ``.npz`` member by member from the zip stream; ``.csv`` with the ``csv``
module (no pyarrow needed); Parquet and Arrow IPC files, a folder or a glob of them, with
pyarrow (the ``batch`` extra). Each chunk says where its rows are (``line 12 of a.csv``,
``row 41 of b.parquet (from 0)``) so that a bad row can be named.
"""

from __future__ import annotations

import csv
import glob
import logging
import mmap
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from keras_edge.runtime.batch.arrow import ARROW_SUFFIXES, ArrowSource
from keras_edge.runtime.batch.chunks import Chunk, Source, rows_at
from keras_edge.runtime.errors import UsageError
from keras_edge.runtime.inputs import feature_columns

logger = logging.getLogger(__name__)

SUFFIXES = (".npy", ".npz", ".csv", *ARROW_SUFFIXES)


def _refuse_options(path: Path, what: str, **options: Any) -> None:
    given = [f"--{k.replace('_', '-')}" for k, v in options.items() if v]
    if given:
        raise UsageError(f"Expected no {', '.join(given)} for {str(path)!r}: {what}")


class NpySource(Source):
    """Features from a ``.npy`` file through a read-only memory map."""

    def __init__(self, path: Path) -> None:
        self.name = str(path)
        try:
            self.array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise UsageError(f"Could not read {self.name!r} as a .npy array: {exc}") from exc
        if self.array.ndim < 1:
            raise UsageError(f"Expected an array of samples in {self.name!r}, got a scalar")
        self.total = len(self.array)

    def chunks(self, size: int) -> Iterator[Chunk]:
        array, released = self.array, 0
        mm = getattr(array, "_mmap", None)  # None for an empty array: nothing is mapped
        row_bytes = array.itemsize * int(np.prod(array.shape[1:], dtype=np.int64))
        start_in_map = getattr(array, "offset", 0) % mmap.ALLOCATIONGRANULARITY
        for start in range(0, self.total or 0, size):
            part = np.array(array[start : start + size])  # a copy: the map's pages can go
            if mm is not None and hasattr(mm, "madvise"):
                # Give back the pages read so far: the page cache keeps them, but a map counts
                # every page it touched in this process's resident set until it is closed.
                end = (start_in_map + (start + len(part)) * row_bytes) // mmap.PAGESIZE * mmap.PAGESIZE
                if end > released:
                    mm.madvise(mmap.MADV_DONTNEED, released, end - released)
                    released = end
            yield Chunk(part, len(part), rows_at(self.name, start))


class _MemberReader:
    """One array of an ``.npz``, read row by row from the zip stream (stored or deflated)."""

    def __init__(self, archive: zipfile.ZipFile, member: str, where: str) -> None:
        self.fh = archive.open(member)
        version = np.lib.format.read_magic(self.fh)
        read_header = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        self.shape, fortran, self.dtype = read_header(self.fh)
        if self.dtype.hasobject:
            raise UsageError(f"Expected numeric arrays in {where}, got dtype {self.dtype} in {member!r}")
        if not self.shape:
            raise UsageError(f"Expected an array of samples as {member!r} in {where}, got a scalar")
        self.whole = None
        if fortran and len(self.shape) > 1:  # rows are not contiguous: read it whole, once
            logger.warning("%s in %s is in Fortran order: read whole, not in chunks", member, where)
            count = int(np.prod(self.shape))
            flat = np.frombuffer(self.fh.read(count * self.dtype.itemsize), self.dtype, count)
            self.whole = flat.reshape(self.shape, order="F")
        self.row_bytes = self.dtype.itemsize * int(np.prod(self.shape[1:], dtype=np.int64))
        self.done = 0

    def read(self, rows: int) -> np.ndarray:
        if self.whole is not None:
            part = self.whole[self.done : self.done + rows]
        else:
            data = self.fh.read(rows * self.row_bytes)
            part = np.frombuffer(data, self.dtype).reshape(-1, *self.shape[1:])
        self.done += len(part)
        return part


class NpzSource(Source):
    """``x`` (or one array per model input), ``y`` (labels, or the array ``label_column``
    names) and pass-through arrays from an ``.npz``, streamed member by member."""

    def __init__(
        self, path: Path, input_names: Sequence[str], label_column: str | None, keep: Sequence[str]
    ) -> None:
        self.name = str(path)
        try:
            self.archive = zipfile.ZipFile(path)
        except (OSError, zipfile.BadZipFile) as exc:
            raise UsageError(f"Could not read {self.name!r} as an .npz archive: {exc}") from exc
        members = {m.removesuffix(".npy"): m for m in self.archive.namelist() if m.endswith(".npy")}
        label = label_column or ("y" if "y" in members else None)
        if "x" in members:
            self.features = ["x"]
        else:
            self.features = [n for n in input_names if n in members]
            if not self.features or len(self.features) != len(input_names):
                raise UsageError(
                    f"Expected an array named 'x' (or one per model input, {list(input_names)}) in "
                    f"{self.name!r}, got {sorted(members)}"
                )
        missing = [n for n in [*keep, *([label] if label else [])] if n not in members]
        if missing:
            raise UsageError(f"Expected arrays {missing} in {self.name!r}, got {sorted(members)}")
        self.label, self.keep_names, self.has_labels = label, tuple(keep), label is not None
        self.members = members
        with self.archive.open(members[self.features[0]]) as fh:
            version = np.lib.format.read_magic(fh)
            shape = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                     else np.lib.format.read_array_header_2_0)(fh)[0]  # fmt: skip
        self.total = int(shape[0]) if shape else 0

    def chunks(self, size: int) -> Iterator[Chunk]:
        names = [*self.features, *self.keep_names, *([self.label] if self.label else [])]
        readers = {n: _MemberReader(self.archive, self.members[n], repr(self.name)) for n in names}
        lengths = {n: r.shape[0] for n, r in readers.items()}
        if len(set(lengths.values())) > 1:
            raise UsageError(f"Expected arrays of one length in {self.name!r}, got {lengths}")
        for start in range(0, self.total or 0, size):
            parts = {n: r.read(size) for n, r in readers.items()}
            x = parts["x"] if self.features == ["x"] else {n: parts[n] for n in self.features}
            yield Chunk(
                x, len(parts[names[0]]), rows_at(self.name, start),
                labels=parts[self.label] if self.label else None,
                keep={n: parts[n] for n in self.keep_names},
            )  # fmt: skip


def is_number(text: str) -> bool:
    """Whether a CSV field reads as a float."""
    try:
        float(text)
    except ValueError:
        return False
    return True


class CsvSource(Source):
    """A CSV file with a header row (``no_header``: without one, columns named ``0``, ``1``,
    ...). Features are ``columns``; else the ``expected`` names the model recorded at export,
    matched by name; else every column but the label and the kept ones, in order. A first
    row of numbers is refused, never taken for a header (``can_skip_header``: the message
    offers ``--no-header``)."""

    def __init__(
        self,
        path: Path,
        columns: Sequence[str] | None,
        label_column: str | None,
        keep: Sequence[str],
        no_header: bool = False,
        can_skip_header: bool = True,
        expected: tuple[str, ...] | None = None,
    ) -> None:
        self.name, self.path, self.no_header = str(path), path, no_header
        with open(path, newline="", encoding="utf-8") as fh:
            try:
                first = next(csv.reader(fh), None)
            except (csv.Error, UnicodeDecodeError) as exc:
                raise UsageError(f"Could not read {self.name!r} as CSV: {exc}") from exc
        if first is None:
            raise UsageError(f"Expected a header row in {self.name!r}, got an empty file")
        if no_header:
            header = [str(i) for i in range(len(first))]
        elif first and all(is_number(v) for v in first):
            hint = ", or pass --no-header to read the first row as data" if can_skip_header else ""
            raise UsageError(
                f"Expected a header row in {self.name!r}, got a first row of numbers "
                f"({','.join(first[:6])}{',...' if len(first) > 6 else ''}): add a header row naming "
                f"the columns{hint}"
            )
        else:
            header = first
        self.header, self.width = header, len(header)
        if not columns and not no_header:  # a header names the columns: match them by name
            skip = {*keep, *([label_column] if label_column else [])}
            columns = feature_columns(header, expected, skip, repr(self.name)) or columns
        named = [*(columns or []), *keep, *([label_column] if label_column else [])]
        missing = [c for c in named if c not in header]
        if missing:
            raise UsageError(f"Expected columns {missing} in {self.name!r}, got {header}")
        self.label = header.index(label_column) if label_column is not None else None
        self.keep = [header.index(c) for c in keep]
        skip = {*self.keep, *([self.label] if self.label is not None else [])}
        self.features = (
            [header.index(c) for c in columns] if columns
            else [i for i in range(self.width) if i not in skip]
        )  # fmt: skip
        self.keep_names, self.has_labels = tuple(keep), label_column is not None
        self.feature_names = tuple(header[i] for i in self.features)
        self._size = max(path.stat().st_size, 1)
        self._raw: Any = None

    def fraction(self) -> float | None:
        try:
            return None if self._raw is None else min(self._raw.tell() / self._size, 1.0)
        except (OSError, ValueError):
            return None

    def chunks(self, size: int) -> Iterator[Chunk]:
        with open(self.path, newline="", encoding="utf-8") as fh:
            self._raw = fh.buffer
            reader = csv.reader(fh)
            if not self.no_header:
                next(reader)
            rows: list[list[str]] = []
            lines: list[int] = []
            try:
                for row in reader:
                    if not row:  # a blank line is no row
                        continue
                    rows.append(row)
                    lines.append(reader.line_num)
                    if len(rows) == size:
                        yield self._parse(rows, lines)
                        rows, lines = [], []
            except (csv.Error, UnicodeDecodeError) as exc:
                raise UsageError(
                    f"Could not read line {reader.line_num + 1} of {self.name!r}: {exc}"
                ) from exc
            if rows:
                yield self._parse(rows, lines)

    def _parse(self, rows: list[list[str]], lines: list[int]) -> Chunk:
        n, width = len(rows), self.width
        invalid = np.zeros(n, dtype=bool)
        reasons: dict[int, str] = {}
        for i, row in enumerate(rows):
            if len(row) != width:
                invalid[i] = True
                reasons[i] = f"expected {width} fields, got {len(row)}"
                rows[i] = (row + [""] * width)[:width]  # its pass-through fields stay as they are
        cols = list(zip(*rows, strict=True))
        x = np.empty((n, len(self.features)), dtype=np.float32)
        for j, c in enumerate(self.features):
            x[:, j] = self._numbers(cols[c], self.header[c], invalid, reasons)
        name = self.name
        return Chunk(
            x, n, lambda i: f"line {lines[i]} of {name}",
            labels=None if self.label is None else np.array(cols[self.label]),
            keep={self.header[c]: np.array(cols[c]) for c in self.keep},
            invalid=invalid if invalid.any() else None, reasons=reasons,
        )  # fmt: skip

    @staticmethod
    def _numbers(cells: tuple[str, ...], column: str, invalid: np.ndarray, reasons: dict) -> np.ndarray:
        """A column as float32, parsed as Python's ``float()`` then rounded, as before; a cell
        that is no number marks its row invalid (placeholder 0)."""
        try:
            return np.array(cells).astype(np.float64).astype(np.float32)
        except ValueError:
            pass
        values = np.zeros(len(cells), dtype=np.float64)
        for i, cell in enumerate(cells):
            try:
                values[i] = float(cell)
            except ValueError:
                if not invalid[i]:
                    invalid[i] = True
                    reasons[i] = f"expected a number in column {column!r}, got {cell!r}"
        return values.astype(np.float32)


def expand(pattern: str | Path) -> list[Path]:
    """The files an input names: itself; a folder's Parquet and Arrow files (recursively, in
    sorted order); or the files a glob matches, sorted."""
    path = Path(pattern)
    text = str(pattern)
    if path.is_dir():
        files = sorted(
            p for p in path.rglob("*")
            if p.suffix in ARROW_SUFFIXES and p.is_file()
            and not any(part.startswith((".", "_")) for part in p.relative_to(path).parts)
        )  # fmt: skip  (hidden and _temporary files are a writer's, not data)
        if not files:
            raise UsageError(
                f"Expected Parquet or Arrow files ({', '.join(ARROW_SUFFIXES)}) in the folder "
                f"{text!r}, found none"
            )
        return files
    if path.is_file() or not any(ch in text for ch in "*?["):
        if path.suffix not in SUFFIXES:
            raise UsageError(f"Expected a data file ending in {', '.join(SUFFIXES)}, got {text!r}")
        if not path.is_file():
            raise UsageError(f"Expected a data file at {text!r}, found none")
        return [path]
    files = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
    if not files:
        raise UsageError(f"Expected files matching {text!r}, found none")
    others = [str(p) for p in files if p.suffix not in ARROW_SUFFIXES]
    if others:
        raise UsageError(f"Expected only Parquet or Arrow files to match {text!r}, got {others[:3]}")
    return files


def open_source(
    pattern: str | Path,
    input_names: Sequence[str] = (),
    columns: Sequence[str] | None = None,
    label_column: str | None = None,
    keep: Sequence[str] = (),
    no_header: bool = False,
    features: tuple[str, ...] | None = None,
) -> Source:
    """The reader for an input: a file, a folder or a glob (see :func:`expand`). ``features``:
    the feature names the model recorded at export, which a CSV header or a table's columns are
    matched to by name (``columns`` overrides; a header-less CSV and arrays are positional)."""
    files = expand(pattern)
    path = files[0]
    if path.suffix in ARROW_SUFFIXES:
        _refuse_options(path, "--no-header is for CSV", no_header=no_header)
        return ArrowSource(files, columns, label_column, keep, features)
    if path.suffix == ".csv":
        return CsvSource(path, columns, label_column, keep, no_header, expected=features)
    if path.suffix == ".npz":
        _refuse_options(path, "an .npz holds arrays, not columns", columns=columns, no_header=no_header)
        return NpzSource(path, input_names, label_column, keep)
    _refuse_options(
        path, "a .npy file holds features only (use .npz, .csv, Parquet or Arrow)",
        columns=columns, label_column=label_column, keep_columns=keep, no_header=no_header,
    )  # fmt: skip
    return NpySource(path)
