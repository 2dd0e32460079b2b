"""The device-side commands, ``keras-edge predict``, ``inspect`` and ``verify`` (numpy and one
engine), and what every subcommand shares: the one-line-error parser and :func:`execute`, which
maps errors to exit codes. It lives here, in the bottom layer, so that the exporter and the
benchmarks can use it without importing each other."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import NoReturn

from keras_edge.runtime.batch.arrow import ArrowSource
from keras_edge.runtime.batch.readers import open_source
from keras_edge.runtime.batch.scoring import BAD_ROW_POLICIES, Layout
from keras_edge.runtime.batch.stream import Progress, StreamOptions, Summary, score_stream
from keras_edge.runtime.batch.writers import open_writer, output_format
from keras_edge.runtime.classifier import Classifier, load
from keras_edge.runtime.errors import GateError, KerasEdgeError, UsageError
from keras_edge.runtime.manifest import Manifest
from keras_edge.runtime.report import export_order, format_table, text_table

logger = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_GATE = 0, 1, 2, 3
EXIT_INTERRUPTED = 130


class Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr and exit code 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        raise SystemExit(EXIT_USAGE)


def _quiet_broken_pipe() -> None:
    """The reader of stdout went away (``| head``): point stdout at /dev/null so that the
    interpreter's final flush cannot raise again, and end quietly."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout without a file descriptor (captured in a test)
        pass


def _one_line(exc: BaseException) -> str:
    """A message on one line: a multi-line one (a list of failed variants) joined by '; '."""
    parts = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return " ".join(p + (";" if i < len(parts) - 1 and not p.endswith(":") else "")
                    for i, p in enumerate(parts))  # fmt: skip


def execute(args: argparse.Namespace) -> int:
    """Run ``args.handler(args)`` and turn every outcome into an exit code, with at most one
    line on stderr: 0 done, 1 unexpected failure, 2 bad usage or input, 3 a gate failed."""
    verbose = getattr(args, "verbose", 0)
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        code = int(args.handler(args))
        sys.stdout.flush()  # inside the try: a closed pipe surfaces here, not at exit
        return code
    except BrokenPipeError:
        _quiet_broken_pipe()
        return EXIT_OK
    except GateError as exc:
        sys.stderr.write(f"keras-edge: gate failed: {_one_line(exc)}\n")
        return EXIT_GATE
    except UsageError as exc:
        sys.stderr.write(f"keras-edge: error: {_one_line(exc)}\n")
        return EXIT_USAGE
    except KerasEdgeError as exc:
        sys.stderr.write(f"keras-edge: failed: {_one_line(exc)}\n")
        return EXIT_FAILURE
    except KeyboardInterrupt:
        sys.stderr.write("keras-edge: interrupted\n")
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug: one line, the traceback with -vv
        logger.debug("unexpected failure", exc_info=True)
        sys.stderr.write(
            f"keras-edge: unexpected {type(exc).__name__}: {_one_line(exc)} (a bug worth reporting; "
            f"-vv shows the traceback)\n"
        )
        return EXIT_FAILURE


def configure(name: str, parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``predict``, ``inspect`` or ``verify`` to ``parser``."""
    {"predict": _predict_arguments, "inspect": _inspect_arguments, "verify": _verify_arguments}[name](
        parser
    )


def _predict_arguments(p: argparse.ArgumentParser) -> None:
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
    p.add_argument("--device", default="cpu", help="cpu, or an ONNX Runtime accelerator (cuda, ...)")
    p.add_argument("--threads", type=int, help="engine threads")
    p.add_argument(
        "--threshold",
        "--min-confidence",
        dest="threshold",
        help="decide with this threshold for this run instead of the variant's (comma list for "
        "multilabel; for multiclass the minimum confidence, below which the class is -1)",
    )
    p.add_argument("--ray", action="store_true", help="score Parquet with Ray Data (the ray extra)")
    p.add_argument("--address", help="with --ray: the cluster to join (default: start a local Ray)")
    p.add_argument("--concurrency", type=int, default=2, help="with --ray: scoring actors (default 2)")
    p.set_defaults(handler=run_predict)


def _inspect_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", type=Path, help="folder holding manifest.json")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.set_defaults(handler=run_inspect)


def _names(text: str | None) -> list[str]:
    return [c.strip() for c in text.split(",") if c.strip()] if text else []


def _set_threshold(clf: Classifier, text: str) -> None:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError as exc:
        raise UsageError(f"Expected --threshold to be a number or a comma list, got {text!r}") from exc
    clf.threshold = values[0] if len(values) == 1 else values  # checked like the manifest's


def run_predict(args: argparse.Namespace) -> int:
    """Stream the input through the classifier: chunks in, scores out, counts and metrics."""
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
        features=specs[0].features if len(specs) == 1 else None,
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
    return 0


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


def run_inspect(args: argparse.Namespace) -> int:
    manifest = Manifest.read(args.folder)
    if args.json:
        sys.stdout.write(manifest.to_json())
        return 0
    head, spec = manifest.head, manifest.input
    own = (
        " (tuned variants decide with their own: see the table)"
        if any(v.threshold != head.threshold for v in manifest.variants.values()) else ""
    )  # fmt: skip
    features = "" if spec.features is None else f", features {','.join(spec.features)} (by name)"
    parity = next((v.parity for v in manifest.variants.values() if v.parity), None)
    data = "not checked" if parity is None else parity.data
    if parity is not None and parity.synthetic:
        data += " (SYNTHETIC inputs: the gate proved the conversion, not decisions on your data)"
    info = manifest.golden
    golden = (
        "none (exported before keras-edge 0.2: export again to verify on a device)"
        if info is None
        else f"{info.file}, {info.n} rows ({info.nearest} nearest the decision) for keras-edge verify"
    )
    sys.stdout.write(
        f"model     {manifest.model.name} (sha256 {manifest.model.source_sha256[:12]}..., "
        f"keras {manifest.model.keras_version}, tensorflow {manifest.model.tensorflow_version})\n"
        f"input     {spec.name} {list(spec.shape)} {spec.dtype}{features}\n"
        f"head      {head.kind}, {head.output} output, labels {list(head.labels)}\n"
        f"decision  {manifest.decision_rule} with threshold {head.threshold}{own}\n"
        f"parity on {data}\n"
        f"default   {manifest.default_variant} (marked *)\n"
        f"golden    {golden}\n\n"
    )
    sys.stdout.write(format_table(manifest))
    sys.stdout.write(_tuning_summary(manifest))
    return 0


def _tuning_summary(manifest: Manifest) -> str:
    """The tuned thresholds and objective values, for Keras and each variant."""
    tuning = manifest.tuning
    if not tuning:
        return ""

    def cell(labels: list[dict]) -> str:
        return ", ".join(f"t={r['threshold']:.6g} value={r['value']:.4f}" for r in labels)

    caveat = " (tuned and reported on the same data: optimistic)" if tuning.get("optimistic") else ""
    lines = [f"\nthreshold tuned for {tuning['objective']} on {tuning['data']}{caveat}",
             f"  keras  {cell(tuning['keras'])}"]  # fmt: skip
    for vid, v in sorted(manifest.variants.items(), key=lambda item: export_order(item[1])):
        if v.tuning:
            lines.append(f"  {vid}  {cell(v.tuning['labels'])}")
    return "\n".join(lines) + "\n"


def _verify_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", type=Path, help="folder holding manifest.json and golden.npz")
    p.add_argument("--variants", help="comma list of variant ids (default: every one installed here)")
    p.add_argument("--device", default="cpu", help="cpu, or an ONNX Runtime accelerator (cuda, ...)")
    p.add_argument("--threads", type=int, help="engine threads (default: the engine's)")
    p.add_argument("--json", action="store_true", help="print the checks as JSON")
    p.set_defaults(handler=run_verify)


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def run_verify(args: argparse.Namespace) -> int:
    from keras_edge.runtime.golden import raise_on_failure
    from keras_edge.runtime.verify import verify

    names = [v.strip() for v in args.variants.split(",") if v.strip()] if args.variants else None
    checks = verify(args.folder, variants=names, device=args.device, threads=args.threads)
    if args.json:
        sys.stdout.write(json.dumps([c.to_dict() for c in checks], indent=2, sort_keys=True) + "\n")
    else:
        header = ["variant", "n", "vs keras", "tolerance", "vs export", "drift band", "agreement",
                  "flips (at export)", "ms", "result"]  # fmt: skip
        rows = [
            [
                c.variant,
                str(c.n) if c.n else "-",
                _fmt(c.max_abs_diff, ".2e"),
                _fmt(c.tolerance, ".0e"),
                _fmt(c.drift, ".2e"),
                _fmt(c.drift_band, ".1e"),
                _fmt(c.label_agreement, ".2%"),
                "-" if c.flips is None else f"{c.flips} ({c.flips_at_export})",
                _fmt(None if c.seconds is None else c.seconds * 1e3, ".1f"),
                c.status,
            ]
            for c in checks
        ]
        sys.stdout.write(text_table(header, rows))
        skipped = [c for c in checks if c.status == "skipped"]
        if skipped:
            sys.stdout.write(
                f"skipped, engine not installed: {', '.join(c.variant for c in skipped)} "
                f"({skipped[0].failures[0]})\n"
            )
        for c in checks:
            if c.failed:
                sys.stdout.write(f"{c.variant} FAILED: {'; '.join(c.failures)}\n")
        ran = [c for c in checks if c.seconds is not None]
        if ran:
            sys.stdout.write(
                f"verified {len(ran)} variant(s) on the golden set ({ran[0].n} samples, one call "
                f"each) in {sum(c.seconds for c in ran) * 1e3:.1f} ms\n"  # type: ignore[misc]
            )
    raise_on_failure(checks)
    return EXIT_OK
