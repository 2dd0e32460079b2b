"""Scoring files at any size: ``keras-edge predict`` over 10^6 and 10^7 rows, against the bare
engine at the same chunk size and thread count, in one run.

    keras-edge bench-stream DIR [--rows 1000000,10000000] [--chunk-size N] [--threads N]
        [--variant ID] [--work FOLDER] [--json F] [--markdown F]

For each row count it writes seeded N(0, 1) inputs of the model's features as ``.npy`` and
Parquet, then runs ``keras-edge predict`` on each, into ``.npy`` and Parquet, as a subprocess:
the figures are the command's rows per second (and its streaming loop's alone, without imports
and loading) and its peak resident set (``VmHWM``, read inside the command's own process at its
end: ``ru_maxrss`` of a child would carry the parent's peak across ``exec``). The bare engine
(``set_tensor``/``invoke``/``get_tensor``, or ``session.run``) is timed over the same rows in
memory, in chunks of the same size. Targets: peak RSS under 300 MB at 10^7 rows, throughput at
least half of the bare engine's. A benchmark, not a test: it asserts nothing. Needs numpy, one
engine and pyarrow (the ``batch`` extra); no exporter code.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from keras_edge.benchmarks.machine import describe, summary
from keras_edge.benchmarks.startup import _peak_rss_mb
from keras_edge.benchmarks.targets import bare_call
from keras_edge.runtime.batch.stream import MAX_CHUNK
from keras_edge.runtime.engines import make_engine
from keras_edge.runtime.errors import UsageError
from keras_edge.runtime.loading import read_artifact
from keras_edge.runtime.manifest import Manifest
from keras_edge.runtime.report import text_table

RSS_TARGET_MB = 300.0
RATIO_TARGET = 0.5
CASES = (("npy", "npy"), ("npy", "parquet"), ("parquet", "npy"), ("parquet", "parquet"))
GENERATE = 1_000_000  # rows generated and written at a time
# The fresh process that runs ``keras-edge predict ARGS`` and writes its figures to RESULT:
# python -c CHILD RESULT ARGS...
CHILD = (
    "import sys\n"
    "from keras_edge.benchmarks.stream_bench import child\n"
    "sys.exit(child(sys.argv[1], sys.argv[2:]))\n"
)


def _inputs(folder: Path, rows: int, features: int, work: Path) -> dict[str, Path]:
    """Seeded inputs, written a slice at a time so this process stays small."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    npy, parquet = work / f"x{rows}.npy", work / f"x{rows}.parquet"
    rng = np.random.default_rng(0)
    out = np.lib.format.open_memmap(npy, mode="w+", dtype=np.float32, shape=(rows, features))
    names = [f"x{i}" for i in range(features)]
    schema = pa.schema([(n, pa.float32()) for n in names])
    with pq.ParquetWriter(parquet, schema) as writer:
        for start in range(0, rows, GENERATE):
            part = rng.standard_normal((min(GENERATE, rows - start), features)).astype(np.float32)
            out[start : start + len(part)] = part
            writer.write_table(pa.table({n: part[:, i] for i, n in enumerate(names)}, schema=schema))
    out.flush()
    del out
    return {"npy": npy, "parquet": parquet}


def _run_predict(args: list[str], work: Path) -> dict[str, Any]:
    """``keras-edge predict ARGS`` in a fresh process that reports its own time and VmHWM."""
    result = work / "child.json"
    result.unlink(missing_ok=True)
    cmd = [sys.executable, "-c", CHILD, str(result), *args]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"keras-edge predict {' '.join(args)} failed: {proc.stderr.strip()[-800:]}")
    figures = json.loads(result.read_text())
    figures["process_s"] = wall
    return figures


def _bare_rows_per_s(folder: Path, variant: str, x: np.ndarray, chunk: int, threads: int) -> float:
    """The bare engine over whole chunks of ``x`` (already in memory): rows per second."""
    manifest = Manifest.read(folder)
    v = manifest.variants[variant]
    engine = make_engine(v.format, read_artifact(folder, v), "cpu", threads)
    n = len(x) // chunk * chunk
    call, convert = bare_call(engine, chunk)
    for _ in range(3):  # warm-up
        call(convert(x[:chunk]))
    started = time.perf_counter()
    for i in range(0, n, chunk):
        call(convert(x[i : i + chunk]))
    return n / (time.perf_counter() - started)


def measure(
    folder: Path, rows_list: list[int], chunk: int, threads: int, variant: str | None, work: Path
) -> dict[str, Any]:
    """Every case at every row count, in ``work``: the figures and the machine."""
    manifest = Manifest.read(folder)
    variant = variant or manifest.default_variant or sorted(manifest.variants)[0]
    features = manifest.input.feature_shape
    if len(features) != 1 or len(manifest.inputs) != 1:
        raise UsageError(
            f"Expected a model with one input of shape (None, F) for bench-stream, got {features}"
        )
    results = []
    for rows in rows_list:
        paths = _inputs(folder, rows, features[0], work)
        x = np.load(paths["npy"])  # in memory, for the bare engine only
        bare = _bare_rows_per_s(folder, variant, x, chunk, threads)
        del x
        for source, target in CASES:
            out = work / f"out{rows}.{target}"
            args = [str(folder), str(paths[source]), "--output", str(out), "--variant", variant,
                    "--chunk-size", str(chunk), "--threads", str(threads)]  # fmt: skip
            figures = _run_predict(args, work)
            out.unlink(missing_ok=True)
            rate, loop = rows / figures["seconds"], rows / figures["loop_seconds"]
            results.append({
                "rows": rows, "input": source, "output": target, "seconds": figures["seconds"],
                "process_s": figures["process_s"], "rows_per_s": rate, "loop_rows_per_s": loop,
                "peak_rss_mb": figures["peak_rss_mb"], "bare_rows_per_s": bare, "ratio": rate / bare,
                "loop_ratio": loop / bare,
            })  # fmt: skip
            print(f"{rows:>11,} {source:>7} -> {target:<7} {rate:>12,.0f} rows/s  "
                  f"{figures['peak_rss_mb']:7.1f} MB  bare {bare:>12,.0f} rows/s  "
                  f"ratio {rate / bare:.2f}", file=sys.stderr)  # fmt: skip
        for p in paths.values():
            p.unlink(missing_ok=True)
    return {
        "benchmark": "stream", "folder": str(folder), "variant": variant, "chunk_size": chunk,
        "threads": threads, "machine": describe(), "targets": {"peak_rss_mb_at_1e7": RSS_TARGET_MB,
        "min_ratio_to_bare": RATIO_TARGET}, "results": results,
    }  # fmt: skip


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# keras-edge predict, streaming: {report['variant']}, chunks of {report['chunk_size']:,} "
        f"rows, {report['threads']} engine thread(s)",
        "",
        f"Machine: {summary(report['machine'])}. One run. rows/s: the command's own time "
        f"(imports, load, read, score, write); loop: its streaming loop alone (read, score, "
        f"write), as the bare engine's figure leaves loading out. Peak RSS: the command "
        f"process's VmHWM. Targets are judged on the command.",
        "",
    ]
    rows = []
    for r in report["results"]:
        rss_ok = r["rows"] < 10_000_000 or r["peak_rss_mb"] < RSS_TARGET_MB
        ok = "met" if rss_ok and r["ratio"] >= RATIO_TARGET else "missed"
        rows.append([
            f"{r['rows']:,}", r["input"], r["output"], f"{r['rows_per_s']:,.0f}",
            f"{r['seconds']:.2f}", f"{r['loop_rows_per_s']:,.0f}", f"{r['peak_rss_mb']:.0f}",
            f"{r['bare_rows_per_s']:,.0f}", f"{r['ratio']:.2f}", f"{r['loop_ratio']:.2f}", ok,
        ])  # fmt: skip
    header = ["rows", "in", "out", "rows/s", "seconds", "loop rows/s", "peak RSS (MB)",
              "bare engine rows/s", "ratio", "loop ratio", "targets"]  # fmt: skip
    lines += [text_table(header, rows, markdown=True).rstrip("\n")]
    lines += [
        "",
        f"Targets: peak RSS under {RSS_TARGET_MB:.0f} MB at 10^7 rows; rows/s at least "
        f"{RATIO_TARGET} of the bare engine's at the same chunk size and thread count.",
        "",
    ]
    return "\n".join(lines)


def child(result: str, argv: list[str]) -> int:
    """``keras-edge predict ARGV`` in this process (the console script's own parser and
    ``execute``), then this process's time and peak RSS into ``result``."""
    from keras_edge.runtime.commands.predict import configure
    from keras_edge.runtime.console import Parser, execute

    loop: list[float] = []  # the streaming loop's own seconds, from its closing log record

    class Loop(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.msg.startswith("scored %d rows"):
                loop.append(float(record.args[1]))  # type: ignore[index]

    stream_logger = logging.getLogger("keras_edge.runtime.batch.stream")
    stream_logger.setLevel(logging.INFO)
    stream_logger.propagate = False
    stream_logger.addHandler(Loop())
    started = time.perf_counter()
    parser = Parser(prog="keras-edge predict")
    configure("predict", parser)
    code = execute(parser.parse_args(argv))
    seconds = time.perf_counter() - started
    figures = {"code": code, "seconds": seconds, "loop_seconds": loop[0] if loop else None,
               "peak_rss_mb": _peak_rss_mb()}  # fmt: skip
    Path(result).write_text(json.dumps(figures))
    return code


def configure(name: str, p: argparse.ArgumentParser) -> None:
    """Add the arguments of ``keras-edge bench-stream`` to ``p``."""
    p.add_argument("folder", type=Path, help="an exported folder (a model of one (None, F) input)")
    p.add_argument("--rows", default="1000000,10000000", help="comma list of row counts")
    p.add_argument("--chunk-size", type=int, default=MAX_CHUNK, help="rows per engine call")
    p.add_argument("--threads", type=int, default=1, help="engine threads")
    p.add_argument("--variant", help="variant id (default: the manifest's default)")
    p.add_argument("--work", type=Path, help="folder for the generated files (default: a temporary one)")
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--markdown", type=Path, help="write a table here")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Measure in a temporary folder, write the JSON and the table, print the table."""
    if importlib.util.find_spec("pyarrow") is None:
        raise UsageError(
            "Expected pyarrow for bench-stream's Parquet cases, got none installed: pip install "
            "'keras-edge[batch]'"
        )
    rows = [int(r.replace("_", "")) for r in args.rows.split(",") if r.strip()]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        report = measure(args.folder, rows, args.chunk_size, args.threads, args.variant, Path(tmp))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if args.markdown:
        args.markdown.write_text(markdown(report))
    print(markdown(report))
    return 0
