"""``keras-edge bench DIR`` (also ``python -m keras_edge bench DIR``): every exported variant
whose engine is installed, through the runtime and through the bare engine call, at one or more
thread counts: latency, throughput, start-up, memory and size; with ``--keras MODEL``, against
the original Keras model too (and decision agreement), and against Keras 3's own ONNX and LiteRT
exports of it on bare engines; with ``--baseline OLD.json``, beside an earlier run, from this
machine or another.

Without ``--keras`` it needs numpy and one engine: no TensorFlow, no exporter code, no
matplotlib (unless ``--plot``)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from keras_edge import runtime
from keras_edge.benchmarks import baseline, machine, plot, report, timing
from keras_edge.benchmarks.startup import measure_startup
from keras_edge.benchmarks.targets import (
    KERAS_TARGETS,
    Target,
    keras_export_targets,
    keras_targets,
    limit_tensorflow_threads,
    variant_targets,
)
from keras_edge.runtime.engines import ENGINE_EXTRAS, ENGINE_MODULES, engine_installed
from keras_edge.runtime.errors import GateError, UsageError
from keras_edge.runtime.golden import read_golden
from keras_edge.runtime.manifest import Manifest

logger = logging.getLogger(__name__)

POOL = 32  # distinct input arrays per batch size, cycled through
DATA_SEED = 0


def configure(name: str, p: argparse.ArgumentParser) -> None:
    """Add the arguments of ``keras-edge bench`` to ``p``."""
    p.add_argument("folder", type=Path, help="exported folder (manifest.json)")
    p.add_argument(
        "--keras",
        type=Path,
        metavar="MODEL",
        help="the original .keras/.h5 model, timed too (needs TensorFlow)",
    )
    p.add_argument(
        "--batch-sizes", default="1,32,1024", metavar="B,...", help="comma list (default 1,32,1024)"
    )
    p.add_argument("--seconds", type=float, default=1.0, help="time budget per target and batch size")
    p.add_argument(
        "--min-samples", type=int, default=30, help="floor on calls per target and batch size"
    )
    p.add_argument("--warmup", type=int, default=5, help="untimed calls per target first")
    p.add_argument(
        "--threads",
        default="1",
        metavar="N,...",
        help="comma list of engine thread counts, e.g. 1,2,4 (default 1); Keras and the "
        "start-up runs use the first",
    )
    p.add_argument(
        "--variants",
        metavar="ID,...",
        help="comma list of variant ids (default: all whose engine is here)",
    )
    p.add_argument(
        "--data", type=Path, help="inputs to draw from (.npy/.npz/.csv); default seeded N(0,1)"
    )
    p.add_argument("--label-column", help="label column of a CSV --data file")
    p.add_argument("--no-startup", action="store_true", help="skip the fresh-process start-up runs")
    p.add_argument("--json", type=Path, metavar="F.json", help="write every figure as JSON here")
    p.add_argument("--markdown", type=Path, metavar="F.md", help="write the tables as Markdown here")
    p.add_argument(
        "--plot",
        type=Path,
        metavar="F.png",
        help="write latency and speed-up plots (PNG; needs matplotlib)",
    )
    p.add_argument(
        "--baseline", type=Path, metavar="OLD.json", help="an earlier run's --json file, to compare with"
    )
    p.add_argument(
        "--fail-above",
        metavar="R",
        help="with --baseline: exit 3 if a row of both runs has p50 > R x the baseline's",
    )
    p.add_argument("--unsafe", action="store_true", help="load the Keras model with safe mode off")
    p.add_argument(
        "--custom-objects",
        action="append",
        default=[],
        metavar="FILE.py|MODULE",
        help="with --keras: import the user code the model needs (a .py file or a module name; "
        "repeatable) before loading it, as keras-edge export does",
    )
    p.set_defaults(handler=run)


def _positive_ints(text: str, option: str, example: str) -> list[int]:
    """A comma list of positive integers, duplicates dropped, order kept."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(
            f"Expected {option} as a comma list of integers (e.g. {example}), got {text!r}"
        ) from None
    if not values or any(v < 1 for v in values):
        raise UsageError(f"Expected {option} to list positive integers (e.g. {example}), got {text!r}")
    return list(dict.fromkeys(values))


def _batch_sizes(text: str) -> list[int]:
    try:
        sizes = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise UsageError(f"Expected --batch-sizes as a comma list of integers, got {text!r}") from exc
    if not sizes or any(b < 1 for b in sizes):
        raise UsageError(f"Expected positive batch sizes, got {text!r}")
    return sorted(set(sizes))


def _progress(message: str) -> None:
    sys.stderr.write(f"{time.strftime('%H:%M:%S')} {message}\n")
    sys.stderr.flush()


def _choose_variants(
    manifest: Manifest, folder: Path, named: str | None, keras: bool
) -> tuple[list[str], dict[str, str]]:
    """The variants to time and those skipped (id -> why). Named variants are all kept: one
    whose engine is missing fails in ``runtime.load`` with the runtime's own error."""
    if named:
        ids = list(dict.fromkeys(v.strip() for v in named.split(",") if v.strip()))
        unknown = [v for v in ids if v not in manifest.variants]
        if unknown or not ids:
            raise UsageError(
                f"Unknown variant(s) {unknown or [named]}; this manifest has {sorted(manifest.variants)}"
            )
        return ids, {}
    ids, skipped = [], {}
    for vid, v in manifest.variants.items():
        if engine_installed(v.format):
            ids.append(vid)
        else:
            module, extra = ENGINE_MODULES[v.format], ENGINE_EXTRAS[v.format]
            skipped[vid] = f"needs {module}: pip install 'keras-edge[{extra}]'"
    if skipped:
        sys.stderr.write(
            f"keras-edge bench: skipping, engine not installed: {report.skipped(skipped)}\n"
        )
    if not ids and not keras:
        raise UsageError(
            f"Expected at least one variant of {folder} whose engine is installed here, got "
            f"none: {report.skipped(skipped)}"
        )
    return ids, skipped


def _input_pool(args: argparse.Namespace, manifest: Manifest) -> tuple[np.ndarray, str]:
    spec = manifest.input
    shape, dtype = spec.feature_shape, np.dtype(spec.dtype)
    if args.data is None:
        if not spec.is_float:  # token ids: random floats mean nothing; the export's own rows do
            if manifest.golden is None:
                raise UsageError(
                    f"Expected --data for a model with integer input {spec.name!r} (its export "
                    f"has no golden set to draw ids from), got none"
                )
            rows = read_golden(args.folder, manifest).xs[0]
            return rows, f"the export's golden set ({len(rows)} rows, drawn with seed {DATA_SEED})"
        rng = np.random.default_rng(DATA_SEED)
        return rng.standard_normal((10_000, *shape)).astype(np.float32), f"N(0, 1), seed {DATA_SEED}"
    from keras_edge.runtime.batch.files import read_data

    source, _ = read_data(args.data, label_column=args.label_column, features=spec.features)
    source = np.asarray(source, dtype=dtype)
    if source.shape[1:] != shape:
        raise UsageError(
            f"Expected --data of shape (None, {', '.join(map(str, shape))}), got {source.shape}"
        )
    return source, f"{args.data.name} ({len(source)} rows, drawn with seed {DATA_SEED})"


def _measure(
    targets: list[Target], batches: list[int], threads: list[int], source: np.ndarray, args: Any
) -> list[dict[str, Any]]:
    """Every target at every batch size, interleaved within one thread count at a time (an
    engine's pool spinning after its call must not land on a target of another count)."""
    rng = np.random.default_rng(DATA_SEED)
    results = []
    step, steps = 0, len(batches) * len(threads)
    for batch in batches:
        pool = [source[rng.integers(0, len(source), batch)] for _ in range(POOL)]
        for count in threads:
            step += 1
            timed = []
            for target in (t for t in targets if t.threads == count):
                call, convert = target.prepare(batch)
                inputs = [np.ascontiguousarray(convert(x)) for x in pool]
                timed.append(timing.Timed(target.name, call, inputs))
            _progress(
                f"[{step}/{steps}] batch {batch}, threads {count}: {len(timed)} targets, interleaved"
            )
            samples = timing.measure(timed, args.seconds, args.min_samples, warmup=args.warmup)
            for target in timed:
                stats = timing.Stats.of(samples[target.name], batch)
                results.append(
                    {"target": target.name, "batch_size": batch, "threads": count, **stats.__dict__}
                )
    return results


def run(args: argparse.Namespace) -> int:
    """Check every option, measure, write the tables; a GateError when ``--fail-above`` finds a
    regression."""
    # Every check that can fail comes before the first measurement.
    batches, threads, limit = _checked_options(args)
    old = baseline.read(args.baseline) if args.baseline is not None else None
    manifest = _one_input_manifest(args.folder)
    ids, skipped = _choose_variants(manifest, args.folder, args.variants, args.keras is not None)
    source, data_name = _input_pool(args, manifest)

    _progress(
        f"loading {len(ids)} variant(s) from {args.folder} at threads {args.threads}"
        + (f", and {args.keras}" if args.keras else "")
    )
    tf = _tensorflow(args.keras, threads[0])
    targets = variant_targets(args.folder, ids, threads)
    model, keras_exports = None, None
    if tf is not None:
        targets, model, keras_exports = _with_keras(args, manifest, tf, threads, targets)

    results = _measure(targets, batches, threads, source, args)
    variants = _variants(args.folder, manifest, ids, model, source, threads[0])
    startup = [] if args.no_startup else _startup(args, ids, model is not None, threads[0])

    data: dict[str, Any] = {
        "machine": machine.describe(),
        "config": {
            "folder": str(args.folder),
            "keras": None if args.keras is None else str(args.keras),
            "batch_sizes": batches,
            "seconds": args.seconds,
            "min_samples": args.min_samples,
            "warmup": args.warmup,
            "threads": threads,
            "data": data_name,
            "pool_per_batch_size": POOL,
            "targets": list(dict.fromkeys(t.name for t in targets)),
            "variants": ids,
            "skipped_variants": skipped,
            **({} if keras_exports is None else {"keras_exports": keras_exports}),
        },
        "results": results,
        "startup": startup,
        "variants": variants,
    }
    data["ratios"] = report.ratios(data)
    if old is not None:
        data["baseline"] = {
            **baseline.compare(data, old, str(args.baseline)),
            "fail_above": limit,
        }
    _write(data, args)
    if limit is not None:
        regressed = baseline.regressions(data["baseline"], limit)
        if regressed:
            raise GateError(baseline.gate_message(regressed, limit, str(args.baseline)))
    return 0


def _checked_options(args: argparse.Namespace) -> tuple[list[int], list[int], float | None]:
    """The batch sizes, the thread counts and the ``--fail-above`` limit; a UsageError for any
    option that cannot work, before anything is measured."""
    batches = _batch_sizes(args.batch_sizes)
    threads = _positive_ints(args.threads, "--threads", "1,2,4")
    if args.seconds <= 0 or args.min_samples < 1:
        raise UsageError(
            f"Expected --seconds > 0 and --min-samples >= 1, got {args.seconds}, {args.min_samples}"
        )
    limit = baseline.fail_above(args.fail_above, args.baseline is not None)
    if args.plot and not plot.matplotlib_available():
        raise UsageError(
            f"--plot needs matplotlib: pip install matplotlib (or keras-edge[bench]); got --plot "
            f"{str(args.plot)!r} on a Python without it"
        )
    return batches, threads, limit


def _one_input_manifest(folder: Path) -> Manifest:
    manifest = Manifest.read(folder)
    if len(manifest.inputs) != 1:
        raise UsageError(
            f"Expected a model with one input for keras-edge bench, got {len(manifest.inputs)}: "
            f"{[spec.name for spec in manifest.inputs]}"
        )
    if manifest.head.parts:
        raise UsageError(
            f"Expected a model with one head for keras-edge bench, got {len(manifest.head.parts)}: "
            f"{[part.name for part in manifest.head.parts]} (keras-edge verify checks every head "
            f"on this machine)"
        )
    if manifest.input.dtype in ("uint8", "int8"):
        raise UsageError(
            f"Expected float32 or integer-id input for keras-edge bench, got {manifest.input.dtype} "
            f"pixels in {manifest.input.name!r} (its timings feed random floats; verify checks the "
            f"variants on this machine)"
        )
    return manifest


def _tensorflow(keras_model: Path | None, threads: int) -> Any:
    """TensorFlow, limited to ``threads`` before it builds its pools, when ``--keras`` was given;
    else None."""
    if keras_model is None:
        return None
    from keras_edge.exporter import import_tensorflow

    tf = import_tensorflow()  # BackendUnavailableError, naming the extra, where missing
    limit_tensorflow_threads(tf, threads)  # before TensorFlow builds its pools
    return tf


def _with_keras(
    args: argparse.Namespace, manifest: Manifest, tf: Any, threads: list[int], targets: list[Target]
) -> tuple[list[Target], Any, dict[str, dict[str, Any]]]:
    """The Keras model's targets, then ``targets``, then Keras 3's own exports of the model on
    bare engines; with the model and what each export gave (its bytes, or why it failed)."""
    from keras_edge.exporter import load_model

    model = load_model(args.keras, not args.unsafe, args.custom_objects)
    _progress("exporting it with Keras's own exporters (onnx, litert), to compare with")
    exported, keras_exports = keras_export_targets(model, manifest.input.feature_shape, threads)
    for fmt, got in keras_exports.items():
        if "error" in got:
            sys.stderr.write(
                f"keras-edge bench: not timing keras-export-{fmt}:raw (Keras 3's "
                f'model.export(format="{fmt}")): {got["error"]}\n'
            )
    return keras_targets(model, tf, threads[0]) + targets + exported, model, keras_exports


def _startup(
    args: argparse.Namespace, ids: list[str], keras: bool, threads: int
) -> list[dict[str, Any]]:
    """Start-up of the Keras targets (with ``keras``) and of each variant and its bare call,
    each in a fresh process."""
    names = [*(KERAS_TARGETS if keras else ()), *(n for v in ids for n in (v, f"{v}:raw"))]
    startup = []
    for i, name in enumerate(names, start=1):
        _progress(f"[{i}/{len(names)}] start-up of {name} in a fresh process")
        startup.append(
            measure_startup(
                name, args.folder, args.keras, threads, custom_objects=tuple(args.custom_objects)
            )
        )
    return startup


def _variants(
    folder: Path, manifest: Manifest, ids: list[str], model: Any, x: np.ndarray, threads: int
) -> list[dict[str, Any]]:
    """Size of each variant, and how often it decides as Keras does: on the benchmark inputs
    with a Keras model, else on the export's golden set (Keras's labels kept at export)."""
    expected, reference = None, None
    if model is not None:
        from keras_edge.exporter import keras_labels

        expected, reference = keras_labels(model, manifest.head, x), "keras"
    elif manifest.golden is not None:
        golden = read_golden(folder, manifest)
        x, expected, reference = golden.xs[0], golden.keras_labels, "golden set"
    out = []
    for vid in ids:
        agreement = None
        if expected is not None:
            got = runtime.load(folder, variant=vid, threads=threads).predict(x).reshape(len(x), -1)
            agreement = float((got == expected).all(axis=1).mean())
        out.append(
            {
                "id": vid,
                "bytes": manifest.variants[vid].bytes,
                "label_agreement": agreement,
                "agreement_on": reference if agreement is not None else None,
                "n": len(x),
            }
        )
    return out


def _write(data: dict[str, Any], args: argparse.Namespace) -> None:
    sys.stdout.write(report.render(data))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(report.render(data, markdown=True), encoding="utf-8")
    if args.plot:
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        plot.plot(data, args.plot)
