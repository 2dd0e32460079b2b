"""Scoring on a cluster through an existing engine: :class:`BatchScorer` for Ray Data's actor
pools (Ray's tasks and Dask's ``map_partitions`` call ``clf.score_batch`` directly, Spark's
``mapInArrow`` over its iterator: ``lambda batches: map(clf.score_batch, batches)``), and
``keras-edge predict DIR INPUT --ray``.

    clf = keras_edge.load("dist")
    ds = ray.data.read_parquet("logs/")
    ds = ds.map_batches(BatchScorer, fn_constructor_args=(clf,), batch_format="pyarrow",
                        compute=ray.data.ActorPoolStrategy(size=4))
    ds.write_parquet("scored/")

``--ray``: Ray Data reads the files, an actor pool of scorers (each rebuilds the classifier once
from its pickled bytes) scores the blocks, and Ray Data writes Parquet into a temporary folder
beside the destination, renamed at the end. Each actor reports what it did (rows, bad rows,
confusion counts) to one small tally actor, so the counts and metrics cover the whole run.
Without ``address`` a local Ray instance is started for the run (and stopped after); with it,
the run joins that cluster. Ray (the ``ray`` extra) is imported only when a run asks for it.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from keras_edge.runtime.batch.arrow import ArrowSource
from keras_edge.runtime.batch.metrics import Metrics
from keras_edge.runtime.batch.stream import StreamOptions, Summary, auto_chunk_size, check_features
from keras_edge.runtime.batch.table import BatchStats, score_batch, score_table
from keras_edge.runtime.classifier import Classifier
from keras_edge.runtime.errors import KerasEdgeError, UsageError
from keras_edge.runtime.loading import load

logger = logging.getLogger(__name__)

RAY_EXTRA = "pip install 'keras-edge[ray]'"


def ray_module() -> Any:
    """Ray, with Ray Data, or a UsageError naming the extra."""
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise UsageError(f"--ray needs Ray Data: {RAY_EXTRA}") from exc
    return ray


class BatchScorer:
    """A callable class for Ray Data's actor pools (``map_batches(BatchScorer,
    fn_constructor_args=(clf,), ...)``): the classifier (pickled as its artifact's bytes, or
    loaded from ``folder`` in the worker, which must see that path) is built once per actor,
    then scores every batch that actor gets with :func:`keras_edge.runtime.batch.table.score_batch`
    and ``options`` (``columns``, ``keep``, ``classes``, ``on_bad_row``, ``exclude``)."""

    def __init__(
        self,
        classifier: Classifier | str | Path,
        variant: str | None = None,
        threads: int | None = None,
        **options: Any,
    ) -> None:
        if isinstance(classifier, Classifier):
            self.clf = classifier
        else:
            self.clf = load(classifier, variant=variant, threads=threads)
        self.options = options

    def __call__(self, batch: Any) -> Any:
        return score_batch(self.clf, batch, **self.options)


class CountingScorer(BatchScorer):
    """A :class:`BatchScorer` that also sends what each batch did to the run's tally actor."""

    def __init__(self, clf: Classifier, tally: Any, **options: Any) -> None:
        super().__init__(clf)
        self.tally, self.options = tally, options

    def __call__(self, batch: Any) -> Any:
        import ray

        try:
            out, stats = score_table(self.clf, batch, **self.options)
        except KerasEdgeError as exc:  # Ray passes on its text only: the tally keeps the error
            ray.get(self.tally.fail.remote(exc))
            raise
        ray.get(self.tally.add.remote(stats))  # before the block is handed on: counted once done
        return out


class _Tally:
    """Sums :class:`BatchStats` from every actor (a Ray actor with no CPU of its own)."""

    def __init__(self, metrics: Metrics | None) -> None:
        self.stats = BatchStats(metrics=metrics)
        self.error: KerasEdgeError | None = None

    def add(self, stats: BatchStats) -> None:
        self.stats.merge(stats)

    def fail(self, error: KerasEdgeError) -> None:
        self.error = self.error or error

    def total(self) -> BatchStats:
        return self.stats

    def first_error(self) -> KerasEdgeError | None:
        return self.error


def _worker_error(ray: Any, tally: Any, exc: BaseException) -> KerasEdgeError | None:
    """The keras-edge error a worker raised (a bad row, a bad column), which Ray's own error
    carries only as text: the tally kept it."""
    if tally is None or not isinstance(exc, Exception):
        return None
    try:
        return ray.get(tally.first_error.remote(), timeout=30)
    except Exception:  # the cluster is gone: Ray's error is the one to show
        logger.debug("could not ask the tally for a worker's error", exc_info=True)
        return None


def _quiet_ray() -> None:
    """Ray Data logs each run and each failure at length on stderr; the command line prints one
    line for a failure, and -v brings Ray's logs back."""
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.CRITICAL if name == "ray.data" else logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"ray\.data\..*")


BLOCK_BYTES = 128 << 20  # about Ray Data's own target size of a block


def _blocks(source: ArrowSource, concurrency: int) -> dict[str, int]:
    """``read_parquet``'s block count: Ray's own for large inputs; for small ones (Ray makes
    one block of a few files, and one actor would do all the work), two blocks per actor."""
    pq = source.pa.parquet
    size = 0
    for path in source.files:
        meta = pq.ParquetFile(path).metadata
        size += sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    if size > 2 * concurrency * BLOCK_BYTES:
        return {}
    return {"override_num_blocks": max(len(source.files), 2 * concurrency)}


def check_output(output: Path | None) -> Path:
    if output is None:
        raise UsageError(
            "Expected --output FOLDER with --ray: Ray Data writes a folder of Parquet files"
        )
    if output.suffix in (".csv", ".jsonl", ".json", ".npy"):
        raise UsageError(
            f"Expected --output to be a folder with --ray (Parquet files), got {str(output)!r}"
        )
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise UsageError(
            f"Expected --output to be a new or empty folder with --ray, got {str(output)!r}"
        )
    if not output.parent.is_dir():
        raise UsageError(f"Expected an existing folder for --output {str(output)!r}, found none")
    return output


def _start_ray(ray: Any, address: str | None, verbose: bool) -> bool:
    """Quiet Ray's logs (unless ``verbose``) and start or join Ray if this process has not:
    True when it started it here (and must stop it after the run)."""
    if not verbose:
        _quiet_ray()
    started = not ray.is_initialized()
    if started:
        logger.info("starting Ray (%s)", address or "a local instance")
        ray.init(address=address, include_dashboard=False, log_to_driver=verbose,
                 logging_level=logging.INFO if verbose else logging.ERROR)  # fmt: skip
    return started


def _pipeline(
    ray: Any, clf: Classifier, source: ArrowSource, options: StreamOptions, concurrency: int, tally: Any
) -> Any:
    """The Ray Data pipeline, not yet run: read the Parquet files (the needed columns only),
    score them with an actor pool of ``concurrency`` :class:`CountingScorer` reporting to
    ``tally``."""
    cpus = float(ray.cluster_resources().get("CPU", 1.0))
    threads = clf.engine.threads or 1
    # Leave one CPU to reading and writing tasks: actors holding every CPU would starve them.
    per_actor = min(float(threads), max(cpus - 1.0, cpus / (concurrency + 1)) / concurrency)
    scoring = {
        "columns": source.features, "keep": list(source.keep_names), "label": source.label,
        "classes": not options.proba_only, "on_bad_row": options.on_bad_row,
    }  # fmt: skip
    ds = ray.data.read_parquet(
        [str(f) for f in source.files], **_blocks(source, concurrency)
    ).select_columns(source.needed)  # Ray Data pushes this projection into the read
    ds = ds.map_batches(
        CountingScorer,
        fn_constructor_args=(clf, tally),
        fn_constructor_kwargs=scoring,
        compute=ray.data.ActorPoolStrategy(size=concurrency),
        num_cpus=per_actor,
        batch_size=options.chunk_size or auto_chunk_size(clf),
        batch_format="pyarrow",
    )
    logger.info("Ray: %d actors of %.2f CPU each on %.0f CPUs", concurrency, per_actor, cpus)
    return ds


def score_with_ray(
    clf: Classifier,
    source: ArrowSource,
    output: Path,
    options: StreamOptions,
    address: str | None = None,
    concurrency: int = 2,
    verbose: bool = False,
) -> Summary:
    """Score ``source``'s Parquet files with ``concurrency`` actors and write Parquet into the
    folder ``output``: the kept columns, then the outputs. Rows come back in no set order:
    keep an id column to join them."""
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise UsageError(f"Expected --concurrency to be a positive integer, got {concurrency!r}")
    not_parquet = [str(f) for f in source.files if f.suffix not in (".parquet", ".pq")]
    if not_parquet:
        raise UsageError(f"Expected Parquet input with --ray, got {not_parquet[:3]}")
    output = check_output(output)
    check_features(clf, source)
    ray = ray_module()
    started = _start_ray(ray, address, verbose)
    tmp = output.parent / f".{output.name}.tmp-{os.getpid()}"
    begin = time.perf_counter()
    tally = None
    try:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = sys.stderr.isatty()
        metrics = (
            None
            if not source.has_labels or clf.head.kind == "regression"
            else Metrics(clf.head, clf.threshold)
        )
        tally = ray.remote(num_cpus=0)(_Tally).remote(metrics)
        _pipeline(ray, clf, source, options, concurrency, tally).write_parquet(str(tmp))
        stats: BatchStats = ray.get(tally.total.remote())
        if output.exists():  # an empty folder (checked above)
            output.rmdir()
        tmp.rename(output)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        found = None if isinstance(exc, KerasEdgeError) else _worker_error(ray, tally, exc)
        if found is not None:
            raise found from None
        raise
    finally:
        if started:
            ray.shutdown()
    return Summary(rows=stats.rows, written=stats.written, bad=stats.bad, first_bad=stats.first_bad,
                   seconds=time.perf_counter() - begin, metrics=stats.metrics)  # fmt: skip
