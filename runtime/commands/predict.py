"""``keras-edge predict DIR INPUT``: stream a file (or, with ``--ray``, Parquet on a cluster)
through a classifier and print or write its scores. Needs no TensorFlow.

Its arguments are configured with the device core alone; offline scoring
(:mod:`keras_edge.runtime.batch`: readers, writers, streaming, Ray) is imported when the command
runs, so ``keras-edge predict --help`` loads none of it.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from keras_edge.runtime.classifier import Classifier
from keras_edge.runtime.console import EXIT_OK, PER_HEAD_HELP, per_head, threshold_value
from keras_edge.runtime.errors import UsageError
from keras_edge.runtime.loading import load

if TYPE_CHECKING:
    from keras_edge.runtime.batch.stream import Summary

logger = logging.getLogger(__name__)

# keras_edge.runtime.batch.scoring.BAD_ROW_POLICIES, spelled out so that configuring the
# command imports no offline scoring (tests/test_core_apart.py holds the two equal).
BAD_ROW_POLICIES = ("error", "skip", "null")


def configure(name: str, p: argparse.ArgumentParser) -> None:
    """Add the arguments of ``predict`` to ``p``."""
    p.add_argument("folder", type=Path, help="folder holding manifest.json")
    p.add_argument(
        "input",
        help="features: .npy, .npz (x, y), .csv (header row), or Parquet / Arrow IPC files: one, "
        "a folder or a glob (pyarrow: the batch extra)",
    )
    p.add_argument("--variant", help="variant id (default: the manifest's default)")
    p.add_argument("--proba", action="store_true", help="print probabilities only, no classes")
    p.add_argument(
        "--format", choices=("csv", "json", "jsonl"),
        help="output format on stdout (default csv); with --output, its suffix decides "
        "(.csv, .jsonl, .json, .npy, .parquet)",
    )  # fmt: skip
    p.add_argument("--output", type=Path, help="write here instead of stdout (a folder with --ray)")
    p.add_argument("--label-column", help="the label column (CSV, Parquet) or array (.npz; default y): "
                   "not a feature; with labels, the metrics are printed")  # fmt: skip
    p.add_argument(
        "--columns",
        help="comma list of feature columns, in the model's order (default: the feature names "
        "recorded at export, matched by name; for a model exported without names, every numeric "
        "column but the label and the kept ones, in order)",
    )
    p.add_argument("--keep-columns", help="comma list of input columns copied to the output, first")
    p.add_argument(
        "--no-header", action="store_true",
        help="a CSV without a header row: its columns are taken by position, in the model's order",
    )
    p.add_argument(
        "--chunk-size", type=int, help="rows per engine call (default: 8,192, fewer for large rows)"
    )
    p.add_argument(
        "--on-bad-row", choices=BAD_ROW_POLICIES, default="error",
        help="a row the model cannot take (unparseable, NaN/Inf, null, a label that is no class): "
        "error refuses the input, naming it (default); skip leaves it out; null gives it empty outputs",
    )  # fmt: skip
    p.add_argument("--metrics", type=Path, help="with labels, also write the metrics here as JSON")
    _engine_arguments(p)
    p.set_defaults(handler=run_predict)


def _engine_arguments(p: argparse.ArgumentParser) -> None:
    """The engine, the threshold and the cluster: how the scoring runs."""
    p.add_argument("--device", default="cpu", help="cpu, or an ONNX Runtime accelerator (cuda, ...)")
    p.add_argument("--threads", type=int, help="engine threads")
    p.add_argument(
        "--threshold",
        "--min-confidence",
        dest="threshold",
        action="append",
        help="decide with this threshold for this run instead of the variant's (comma list for "
        "multilabel; for multiclass the minimum confidence, below which the class is -1)"
        + PER_HEAD_HELP,
    )
    p.add_argument("--ray", action="store_true", help="score Parquet with Ray Data (the ray extra)")
    p.add_argument("--address", help="with --ray: the cluster to join (default: start a local Ray)")
    p.add_argument("--concurrency", type=int, default=2, help="with --ray: scoring actors (default 2)")


def _names(text: str | None) -> list[str]:
    return [c.strip() for c in text.split(",") if c.strip()] if text else []


def _set_threshold(clf: Classifier, texts: list[str]) -> None:
    clf.threshold = per_head(texts, "--threshold", threshold_value)  # checked like the manifest's


def run_predict(args: argparse.Namespace) -> int:
    """Stream the input through the classifier: chunks in, scores out, counts and metrics."""
    from keras_edge.runtime.batch.arrow import ArrowSource
    from keras_edge.runtime.batch.readers import open_source
    from keras_edge.runtime.batch.scoring import Layout, input_columns
    from keras_edge.runtime.batch.stream import Progress, StreamOptions, score_stream
    from keras_edge.runtime.batch.writers import open_writer, output_format

    options = StreamOptions(args.chunk_size, args.on_bad_row, args.proba)
    if not args.ray and args.address:
        raise UsageError("Expected --address only with --ray")
    fmt = "parquet" if args.ray else output_format(args.output, args.format)
    if fmt == "npy" and args.on_bad_row == "null":
        raise UsageError("Expected --on-bad-row error or skip for .npy output (it has no nulls); "
                         "write .parquet, .csv or .jsonl for null")  # fmt: skip
    if args.ray:
        from keras_edge.runtime.batch.cluster import check_output, ray_module

        check_output(args.output)
        ray_module()  # installed, or the error names the extra, before anything is loaded
    clf = load(args.folder, variant=args.variant, device=args.device, threads=args.threads)
    if args.threshold is not None:
        _set_threshold(clf, args.threshold)
    specs = clf.manifest.inputs
    source = open_source(
        args.input, [s.name for s in specs], _names(args.columns) or None,
        args.label_column, _names(args.keep_columns), args.no_header,
        features=specs[0].features if len(specs) == 1 else input_columns(specs),
    )  # fmt: skip
    if args.metrics is not None and (not source.has_labels or clf.head.kind == "regression"):
        raise UsageError(
            f"Expected labels for --metrics (--label-column, or y in an .npz) and a classifier "
            f"head, got {'a regression head' if source.has_labels else f'no labels in {args.input!r}'}"
        )
    if args.ray:
        from keras_edge.runtime.batch.cluster import score_with_ray

        if not isinstance(source, ArrowSource):
            raise UsageError(f"Expected Parquet input with --ray, got {args.input!r}")
        summary = score_with_ray(clf, source, args.output, options, args.address, args.concurrency,
                                 verbose=getattr(args, "verbose", 0) > 0)  # fmt: skip
    else:
        meta = {"variant": clf.variant, "threshold": clf.threshold,
                "decision_rule": clf.manifest.decision_rule}  # fmt: skip
        layout = Layout(clf.head, proba_only=args.proba)
        writer = open_writer(args.output, fmt, layout, source.keep_names, meta)
        summary = score_stream(clf, source, writer, options, Progress(source.total, source))
    _report(summary, clf, args)
    return EXIT_OK


def _report(summary: Summary, clf: Classifier, args: argparse.Namespace) -> None:
    """The report on stderr (stdout carries only scores): bad rows, metrics; ``--metrics F``
    writes the metrics as JSON too."""
    logger.info("predicted %d samples with %s (threshold %s) in %.2f s", summary.written, clf.variant,
                clf.threshold, summary.seconds)  # fmt: skip
    if summary.bad:
        what = "skipped" if args.on_bad_row == "skip" else "gave empty outputs to"
        sys.stderr.write(f"keras-edge: {what} {summary.bad:,} bad row(s) of {summary.rows:,}; the "
                         f"first at {summary.first_bad}\n")  # fmt: skip
    if summary.metrics is not None:
        sys.stderr.write(summary.metrics.format())
        if args.metrics is not None:
            data = {"variant": clf.variant, "input": str(args.input), **summary.metrics.to_dict()}
            args.metrics.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
