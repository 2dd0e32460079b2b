"""Soak: a million predictions from many threads through one shared classifier per variant,
with the process's resident memory read before, during and after. A leak of a few bytes a
call shows as tens of MB here. A script, not a test: it reports, it asserts nothing timed.

    keras-edge bench-soak build/seed/dist --calls 1000000 --threads 16 \\
        --json benchmarks/results/soak.json
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from keras_edge import runtime

logger = logging.getLogger(__name__)

MB = 1024 * 1024


def rss_mb() -> float:
    """Resident set size now, from /proc (Linux); ru_maxrss elsewhere (a peak, not a level)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024 / MB
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def soak(folder: Path, variant: str, calls: int, threads: int, batch: int) -> dict[str, Any]:
    """``calls`` predictions of ``batch`` samples from ``threads`` threads sharing one classifier
    of ``variant``, each answer checked against a serial run, the resident memory read before,
    every 0.5 s and after."""
    clf = runtime.load(folder, variant=variant)
    rng = np.random.default_rng(0)
    shape = clf.manifest.inputs[0].feature_shape
    pool = rng.standard_normal((1024, batch, *shape)).astype(np.float32)
    expected = [clf.predict(x) for x in pool]  # serial answers; every threaded one must equal
    # Warm up allocators and the engine before the first reading.
    for x in pool[:256]:
        clf.predict(x)
        clf.predict_proba(x)
    gc.collect()
    start = rss_mb()
    expected_proba = [clf.predict_proba(x) for x in pool]
    shared = _share(clf, pool, expected, expected_proba, calls // threads, threads)
    gc.collect()
    return _record(variant, threads, batch, shared, start, rss_mb())


@dataclass
class Shared:
    """What the threads of one soak did: per thread, wrong answers and calls made; every
    error; the resident memory every 0.5 s (MB); the wall time."""

    wrong: list[int]
    calls: list[int]
    errors: list[str]
    readings: list[float]
    seconds: float = 0.0


def _share(
    clf: runtime.Classifier,
    pool: np.ndarray,
    expected: list[np.ndarray],
    expected_proba: list[np.ndarray],
    per_thread: int,
    threads: int,
) -> Shared:
    """``threads`` threads each making ``per_thread`` calls on ``clf``, alternating ``predict``
    and ``predict_proba``, while a watcher reads the resident memory."""
    shared = Shared(wrong=[0] * threads, calls=[0] * threads, errors=[], readings=[])
    done = threading.Event()

    def work(k: int) -> None:
        try:
            for i in range(per_thread):
                j = (i * 7 + k) % len(pool)
                if (i & 1) == 0:
                    same = np.array_equal(clf.predict(pool[j]), expected[j])
                else:
                    same = np.array_equal(clf.predict_proba(pool[j]), expected_proba[j])
                shared.wrong[k] += not same
                shared.calls[k] += 1
        except Exception as exc:  # a thread-safety failure must be counted, not lost
            shared.errors.append(f"{type(exc).__name__}: {exc}")

    def watch() -> None:
        while not done.wait(0.5):
            shared.readings.append(rss_mb())

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    t0 = time.perf_counter()
    workers = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    shared.seconds = time.perf_counter() - t0
    done.set()
    watcher.join()
    return shared


def _record(
    variant: str, threads: int, batch: int, shared: Shared, start: float, end: float
) -> dict[str, Any]:
    """One variant's soak as the JSON and the printed line show it (MB, rounded)."""
    calls, readings = sum(shared.calls), shared.readings
    return {
        "variant": variant,
        "calls": calls,
        "errors": len(shared.errors),
        "first_error": shared.errors[0] if shared.errors else None,
        "threads": threads,
        "batch": batch,
        "wrong": sum(shared.wrong),
        "seconds": round(shared.seconds, 2),
        "calls_per_s": round(calls / shared.seconds),
        "rss_start_mb": round(start, 1),
        "rss_peak_mb": round(max([start, end, *readings]), 1),
        "rss_end_mb": round(end, 1),
        "rss_growth_mb": round(end - start, 1),
        # Half a second in, every thread has made its LiteRT interpreter (one each, by design):
        # growth from there on is what a leak would show.
        "rss_settled_mb": round(readings[0], 1) if readings else None,
        "rss_growth_after_settled_mb": round(end - readings[0], 1) if readings else None,
    }


def settled(result: dict[str, Any]) -> str:
    growth = result["rss_growth_after_settled_mb"]
    return "" if growth is None else f"; {growth:+.1f} after the first 0.5 s"


def configure(name: str, p: argparse.ArgumentParser) -> None:
    """Add the arguments of ``keras-edge bench-soak`` to ``p``."""
    p.add_argument("folder", type=Path, help="an exported folder")
    p.add_argument("--variants", help="comma list (default: every passing one installed here)")
    p.add_argument("--calls", type=int, default=1_000_000, help="predictions per variant")
    p.add_argument("--threads", type=int, default=16, help="threads sharing one classifier")
    p.add_argument("--batch", type=int, default=1, help="samples per call")
    p.add_argument("--json", type=Path, help="write the results here")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Soak each variant in turn, print a line for each; exit 1 on any wrong answer or error."""
    manifest = runtime.Manifest.read(args.folder)
    if args.variants:
        variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    else:
        variants = [vid for vid, v in manifest.variants.items() if v.passed]
    results = []
    for vid in variants:
        try:
            result = soak(args.folder, vid, args.calls, args.threads, args.batch)
        except runtime.BackendUnavailableError as exc:
            print(f"{vid}: skipped, {exc}", file=sys.stderr)
            continue
        results.append(result)
        print(
            f"{vid:15} {result['calls']:>9,} calls x{result['threads']} threads "
            f"{result['calls_per_s']:>9,}/s  wrong {result['wrong']}  errors {result['errors']}  "
            f"RSS {result['rss_start_mb']:.1f}"
            f" -> {result['rss_end_mb']:.1f} MB (peak {result['rss_peak_mb']:.1f}, "
            f"growth {result['rss_growth_mb']:+.1f}{settled(result)})",
            flush=True,
        )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 1 if any(r["wrong"] or r["errors"] for r in results) else 0
