"""Score a data file of any size: read a chunk, score it with one engine call, write it, and
count; memory is bounded by the chunk, not the file.

    source = open_source("logs.parquet", columns=["a", "b"], keep=["id"])
    writer = open_writer(Path("scored.parquet"), "parquet", Layout(clf.head), source.keep_names, {})
    summary = score_stream(clf, source, writer)          # writer committed, or aborted on error

The classes and probabilities are those of one ``predict`` call over the whole file, bit for
bit, whatever the chunk size (a variant whose answers depend on the batch, ``onnx-dynamic``,
excepted: its activation scales are computed per call).
"""

from __future__ import annotations

import logging
import math
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any, TextIO

import numpy as np

from keras_edge.runtime.batch.arrow import from_numpy
from keras_edge.runtime.batch.chunks import Chunk, Source
from keras_edge.runtime.batch.metrics import Metrics
from keras_edge.runtime.batch.scoring import by_input, check_policy, parse_labels, score_rows
from keras_edge.runtime.batch.writers import Writer
from keras_edge.runtime.classifier import Classifier
from keras_edge.runtime.errors import UsageError

logger = logging.getLogger(__name__)

# Rows per engine call by default: small models run faster on chunks whose activations stay in
# the CPU's caches (the seed MLP: ~1.35x faster at 4,096-8,192 rows than at 65,536), and the
# per-chunk cost of reading and writing is a few percent at 8,192.
MAX_CHUNK = 8_192
CHUNK_BYTES = 32 << 20  # the default chunk holds at most this much input


def auto_chunk_size(clf: Classifier) -> int:
    """8,192 rows, or fewer where the model's rows are large (images): about 32 MB of input."""
    row_bytes = sum(4 * math.prod(spec.feature_shape) for spec in clf.manifest.inputs)
    return max(1, min(MAX_CHUNK, CHUNK_BYTES // max(row_bytes, 1)))


@dataclass(frozen=True)
class StreamOptions:
    """``chunk_size``: rows per engine call (None: :func:`auto_chunk_size`); ``on_bad_row``:
    ``error``, ``skip`` or ``null``; ``proba_only``: no class columns."""

    chunk_size: int | None = None
    on_bad_row: str = "error"
    proba_only: bool = False

    def __post_init__(self) -> None:
        check_policy(self.on_bad_row)
        if self.chunk_size is not None and (
            isinstance(self.chunk_size, bool)
            or not isinstance(self.chunk_size, int)
            or self.chunk_size < 1
        ):
            raise UsageError(f"Expected a positive chunk size, got {self.chunk_size!r}")


@dataclass
class Summary:
    """What a run did: rows read, rows written, bad rows (skipped or given empty outputs) and
    the first of them, the metrics where the input had labels."""

    rows: int = 0
    written: int = 0
    bad: int = 0
    first_bad: str | None = None
    seconds: float = 0.0
    metrics: Metrics | None = None


class Progress:
    """rows, rows/s and ETA on one line of ``stream`` (stderr), redrawn at most 5 times a
    second; silent when the stream is not a terminal."""

    def __init__(
        self, total: int | None, source: Source | None = None, stream: TextIO | None = None
    ) -> None:
        self.stream = stream or sys.stderr
        self.active = bool(getattr(self.stream, "isatty", lambda: False)())
        self.total, self.source = total, source
        self.start = self.last = time.perf_counter()
        self.drawn = False

    def update(self, rows: int) -> None:
        now = time.perf_counter()
        if not self.active or now - self.last < 0.2:
            return
        self.last = now
        rate = rows / max(now - self.start, 1e-9)
        done = rows / self.total if self.total else (self.source.fraction() if self.source else None)
        text = f"scored {rows:,} rows"
        if self.total:
            text += f" of {self.total:,}"
        if done:
            left = (now - self.start) * (1 - done) / done
            text += f" ({done:.0%})  {rate:,.0f} rows/s  ETA {int(left // 60)}:{int(left % 60):02d}"
        else:
            text += f"  {rate:,.0f} rows/s"
        self.stream.write(f"\r{text:<78}")
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\r" + " " * 78 + "\r")
            self.stream.flush()


_DONE = object()


class _Background:
    """Runs reading (an iterator) or writing (a function of each item) on a thread of its own,
    a few items ahead or behind: pyarrow and the engines release the GIL while they work, so
    reading, scoring and writing overlap. Order is kept; an error is raised in the caller."""

    def __init__(self, depth: int = 2) -> None:
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.stop = threading.Event()

    def _put(self, item: Any) -> bool:
        """Queue ``item`` unless the consumer has stopped (then False: it reads no more)."""
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read(self, items: Iterator[Any]) -> Iterator[Any]:
        def produce() -> None:
            try:
                for item in items:
                    if not self._put(item):
                        return
            except BaseException as exc:  # handed to the caller
                self.error = exc
            self._put(_DONE)

        thread = threading.Thread(target=produce, name="keras-edge-read", daemon=True)
        thread.start()
        try:
            while (item := self.queue.get()) is not _DONE:
                yield item
            if self.error is not None:
                raise self.error
        finally:
            self.stop.set()
            thread.join()

    def write(self, consume: Any) -> tuple[Any, Any]:
        """``(put, finish)``: ``put(item)`` hands an item to ``consume`` on the thread;
        ``finish()`` waits for every item to be written and raises a writing error."""

        def run() -> None:
            while (item := self.queue.get()) is not _DONE:
                if self.error is None:
                    try:
                        consume(*item)
                    except BaseException as exc:  # handed to the caller
                        self.error = exc

        thread = threading.Thread(target=run, name="keras-edge-write", daemon=True)
        thread.start()

        def put(*item: Any) -> None:
            if self.error is not None:
                raise self.error
            self.queue.put(item)

        def finish() -> None:
            self.queue.put(_DONE)
            thread.join()
            if self.error is not None:
                raise self.error

        return put, finish


def _take(column: Any, rows: np.ndarray) -> Any:
    if isinstance(column, np.ndarray):
        return column[rows]
    return column.take(from_numpy(rows.astype(np.int64)))  # an Arrow array


def one_column_each(clf: Classifier, source: Source) -> bool:
    """True when a table's feature columns are the model's inputs, one column each (several
    inputs of shape (None, 1), read by name: see :func:`input_columns`)."""
    specs = clf.manifest.inputs
    names = source.feature_names
    return (
        names is not None and len(specs) > 1 and all(s.shape == (None, 1) for s in specs)
        and sorted(names) == sorted(s.name for s in specs)
    )  # fmt: skip


def check_features(clf: Classifier, source: Source) -> None:
    """A table's feature columns against a one-input model's features, before any scoring."""
    specs = clf.manifest.inputs
    names = source.feature_names
    if names is None or len(specs) != 1 or len(specs[0].feature_shape) != 1:
        return  # arrays, or a model the runtime itself checks
    expected = specs[0].feature_shape[0]
    if len(names) != expected:
        raise UsageError(
            f"Expected {expected} feature columns for input {specs[0].name!r} {(None, expected)}, "
            f"got {len(names)} from {source.name!r}: {list(names)} (name them with --columns; the "
            f"--label-column and --keep-columns are not features)"
        )


def _score_chunk(
    clf: Classifier,
    chunk: Chunk,
    options: StreamOptions,
    metrics: Metrics | None,
    put: Callable[..., None],
    summary: Summary,
) -> None:
    """Score one chunk and hand its scores to the writer (``put``): its labels parsed (a label
    that is no class is a bad row), its rows scored under the bad-row policy, and the counts
    and metrics in ``summary`` updated."""
    head = clf.head
    invalid, reasons = chunk.invalid, dict(chunk.reasons)
    y_true = None
    if metrics is not None and chunk.labels is not None:
        y_true, bad_labels, label_reasons = parse_labels(head, chunk.labels)
        if bad_labels.any():
            invalid = bad_labels if invalid is None else invalid | bad_labels
            for i, reason in label_reasons.items():
                reasons.setdefault(i, reason)
    scored = score_rows(clf, chunk.x, chunk.n, options.on_bad_row, chunk.where, invalid, reasons)
    keep = chunk.keep
    if scored.rows is not None:
        keep = {k: _take(v, scored.rows) for k, v in keep.items()}
        y_true = None if y_true is None else y_true[scored.rows]
    classes = None if options.proba_only else scored.classes
    put(keep, scored.values, classes, scored.nulls)
    if metrics is not None and y_true is not None and scored.classes is not None:
        if scored.nulls is not None:
            metrics.add(y_true[~scored.nulls], scored.classes[~scored.nulls])
        else:
            metrics.add(y_true, scored.classes)
    summary.rows += chunk.n
    summary.written += len(scored.values)
    if scored.bad:
        summary.bad += scored.bad
        summary.first_bad = summary.first_bad or scored.first_bad


def score_stream(
    clf: Classifier,
    source: Source,
    writer: Writer,
    options: StreamOptions | None = None,
    progress: Progress | None = None,
) -> Summary:
    """Read ``source`` chunk by chunk, score and write each; commit ``writer`` at the end, or
    abort it (nothing left behind) when anything fails, a bad row under ``error`` included."""
    options = options or StreamOptions()
    size = options.chunk_size or auto_chunk_size(clf)
    head = clf.head
    metrics = None
    if source.has_labels and head.parts:
        raise UsageError(
            f"Expected no --label-column for a model with several heads "
            f"({[p.name for p in head.parts]}): predict computes no metrics per head; pass the "
            f"label columns through with --keep-columns"
        )
    if source.has_labels:
        if head.kind == "regression":
            logger.warning("labels given for a regression head: no classification metrics")
        else:
            metrics = Metrics(head, clf.threshold)
    summary = Summary(metrics=metrics)
    start = time.perf_counter()
    put, finish = _Background().write(writer.write)
    try:
        check_features(clf, source)
        split = one_column_each(clf, source)
        for chunk in _Background().read(source.chunks(size)):
            if split:
                chunk = replace(chunk, x=by_input(chunk.x, clf.manifest.inputs, source.feature_names))
            _score_chunk(clf, chunk, options, metrics, put, summary)
            if progress is not None:
                progress.update(summary.rows)
        finish()
        writer.commit()
    except BaseException:
        try:
            finish()  # the writing thread ends before the file goes
        except BaseException:  # the first error is the one to report
            logger.debug("writing failed too", exc_info=True)
        writer.abort()
        raise
    finally:
        if progress is not None:
            progress.close()
    summary.seconds = time.perf_counter() - start
    logger.info("scored %d rows in %.2f s (chunks of %d)", summary.rows, summary.seconds, size)
    return summary
