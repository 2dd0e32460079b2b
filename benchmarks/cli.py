"""``keras-edge bench DIR --keras MODEL`` (also ``python -m benchmarks``): every exported
variant against the original Keras model: latency, throughput, start-up, memory, size and
decision agreement."""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from keras_edge import runtime
from keras_edge.benchmarks import report, timing
from keras_edge.benchmarks.startup import measure_startup
from keras_edge.benchmarks.targets import keras_targets, variant_targets
from keras_edge.runtime.errors import UsageError
from keras_edge.runtime.manifest import Manifest

logger = logging.getLogger(__name__)

POOL = 32  # distinct input arrays per batch size, cycled through
DATA_SEED = 0


def configure(name: str, p: argparse.ArgumentParser) -> None:
    """Add the arguments of ``keras-edge bench`` to ``p``."""
    p.add_argument("folder", type=Path, help="exported folder (manifest.json)")
    p.add_argument("--keras", type=Path, required=True, help="the original .keras/.h5 model")
    p.add_argument("--batch-sizes", default="1,32,1024", help="comma list (default 1,32,1024)")
    p.add_argument("--seconds", type=float, default=1.0, help="time budget per target and batch size")
    p.add_argument(
        "--min-samples", type=int, default=30, help="floor on calls per target and batch size"
    )
    p.add_argument("--warmup", type=int, default=5, help="untimed calls per target first")
    p.add_argument(
        "--threads", type=int, default=1, help="threads for every target, TensorFlow too (default 1)"
    )
    p.add_argument("--variants", help="comma list of variant ids (default: all)")
    p.add_argument(
        "--data", type=Path, help="inputs to draw from (.npy/.npz/.csv); default seeded N(0,1)"
    )
    p.add_argument("--label-column", help="label column of a CSV --data file")
    p.add_argument("--no-startup", action="store_true", help="skip the fresh-process start-up runs")
    p.add_argument("--json", type=Path, help="write every figure as JSON here")
    p.add_argument("--markdown", type=Path, help="write the tables as Markdown here")
    p.add_argument("--plot", type=Path, help="write latency and speed-up plots (PNG) here")
    p.add_argument("--unsafe", action="store_true", help="load the Keras model with safe mode off")
    p.set_defaults(handler=run)


def limit_tensorflow_threads(tf: Any, threads: int | None) -> None:
    """Give TensorFlow the thread count the engines get: the same resources for every target,
    and no TensorFlow pool spinning on the other core while an engine is timed."""
    if threads is not None:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)


def _batch_sizes(text: str) -> list[int]:
    try:
        sizes = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise UsageError(f"Expected --batch-sizes as a comma list of integers, got {text!r}") from exc
    if not sizes or any(b < 1 for b in sizes):
        raise UsageError(f"Expected positive batch sizes, got {text!r}")
    return sorted(set(sizes))


def _machine() -> dict[str, Any]:
    from keras_edge.exporter._tf import version

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {
            name: version(name)
            for name in ("keras-edge", "numpy", "tensorflow", "keras", "onnxruntime", "ai-edge-litert")
        },
    }


def _progress(message: str) -> None:
    sys.stderr.write(f"{time.strftime('%H:%M:%S')} {message}\n")
    sys.stderr.flush()


def run(args: argparse.Namespace) -> int:
    batches = _batch_sizes(args.batch_sizes)
    if args.seconds <= 0 or args.min_samples < 1:
        raise UsageError(
            f"Expected --seconds > 0 and --min-samples >= 1, got {args.seconds}, {args.min_samples}"
        )
    manifest = Manifest.read(args.folder)
    ids = list(manifest.variants) if not args.variants else [v.strip() for v in args.variants.split(",")]
    unknown = [v for v in ids if v not in manifest.variants]
    if unknown:
        raise UsageError(f"Unknown variant(s) {unknown}; this manifest has {sorted(manifest.variants)}")
    shape = manifest.input.feature_shape
    if args.data is not None:
        from keras_edge.runtime.data import read_data

        pool_source, _ = read_data(args.data, label_column=args.label_column)
        pool_source = np.asarray(pool_source, dtype=np.float32)
        if pool_source.shape[1:] != shape:
            raise UsageError(
                f"Expected --data of shape (None, {', '.join(map(str, shape))}), got {pool_source.shape}"
            )
        data_name = f"{args.data.name} ({len(pool_source)} rows, drawn with seed {DATA_SEED})"
    else:
        pool_source = (
            np.random.default_rng(DATA_SEED).standard_normal((10_000, *shape)).astype(np.float32)
        )
        data_name = f"N(0, 1), seed {DATA_SEED}"

    from keras_edge.exporter import _tf
    from keras_edge.exporter.model import load_model

    _progress(f"loading {args.keras} and {len(ids)} variant(s) from {args.folder}")
    limit_tensorflow_threads(_tf.tensorflow(), args.threads)
    model = load_model(args.keras, safe_mode=not args.unsafe)
    targets = keras_targets(model) + variant_targets(args.folder, manifest, ids, args.threads)
    rng = np.random.default_rng(DATA_SEED)

    results = []
    for step, batch in enumerate(batches, start=1):
        pool = [pool_source[rng.integers(0, len(pool_source), batch)] for _ in range(POOL)]
        timed = []
        for target in targets:
            call, convert = target.prepare(batch)
            timed.append(
                timing.Timed(target.name, call, [np.ascontiguousarray(convert(x)) for x in pool])
            )
        _progress(f"[{step}/{len(batches)}] batch {batch}: {len(timed)} targets, interleaved")
        samples = timing.measure(timed, args.seconds, args.min_samples, warmup=args.warmup)
        for target in timed:
            stats = timing.Stats.of(samples[target.name], batch)
            results.append({"target": target.name, "batch_size": batch, **stats.__dict__})

    keras_labels = _keras_labels(model, manifest, pool_source)
    variants = []
    for vid in ids:
        v = manifest.variants[vid]
        agreement = None
        if keras_labels is not None:
            got = (
                runtime.load(args.folder, variant=vid).predict(pool_source).reshape(len(pool_source), -1)
            )
            agreement = float((got == keras_labels).all(axis=1).mean())
        variants.append(
            {"id": vid, "bytes": v.bytes, "label_agreement": agreement, "n": len(pool_source)}
        )

    startup = []
    if not args.no_startup:
        names = [
            *("keras-predict", "keras-predict-on-batch", "keras-tf-function"),
            *[n for vid in ids for n in (vid, f"{vid}:raw")],
        ]
        for i, name in enumerate(names, start=1):
            _progress(f"[{i}/{len(names)}] start-up of {name} in a fresh process")
            startup.append(measure_startup(name, args.folder, args.keras, args.threads))

    data = {
        "machine": _machine(),
        "config": {
            "folder": str(args.folder),
            "keras": str(args.keras),
            "batch_sizes": batches,
            "seconds": args.seconds,
            "min_samples": args.min_samples,
            "warmup": args.warmup,
            "threads": args.threads,
            "data": data_name,
            "pool_per_batch_size": POOL,
            "targets": [t.name for t in targets],
        },
        "results": results,
        "startup": startup,
        "variants": variants,
    }
    data["ratios"] = report.ratios(data)
    sys.stdout.write(report.render(data))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(report.render(data, markdown=True), encoding="utf-8")
    if args.plot:
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        report.plot(data, args.plot)
    return 0


def _keras_labels(model: Any, manifest: Manifest, x: np.ndarray) -> np.ndarray | None:
    from keras_edge.exporter import parity
    from keras_edge.exporter.model import keras_outputs

    head = manifest.head
    if head.kind == "regression":
        return None
    proba = parity.to_probability(head, keras_outputs(model, x))
    return parity.decide(head, proba, head.threshold)


def main(argv: list[str] | None = None) -> int:
    """``python -m keras_edge.benchmarks ...`` is ``keras-edge bench ...``: same arguments, same
    exit codes."""
    from keras_edge.runtime.cli import Parser, execute

    parser = Parser(prog="python -m keras_edge.benchmarks", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    configure("bench", parser)
    return execute(parser.parse_args(sys.argv[1:] if argv is None else argv))
