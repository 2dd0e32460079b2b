"""``keras-edge verify DIR``: run the export's golden set through every variant whose engine is
installed here and check each still decides as it did at export (exit 3 naming those that do
not). Numpy and the engines only: no TensorFlow, no offline scoring."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from keras_edge.runtime.console import EXIT_OK
from keras_edge.runtime.golden import Check, raise_on_failure
from keras_edge.runtime.report import text_table
from keras_edge.runtime.verify import verify


def configure(name: str, p: argparse.ArgumentParser) -> None:
    """Add the arguments of ``verify`` to ``p``."""
    p.add_argument("folder", type=Path, help="folder holding manifest.json and golden.npz")
    p.add_argument("--variants", help="comma list of variant ids (default: every one installed here)")
    p.add_argument("--device", default="cpu", help="cpu, or an ONNX Runtime accelerator (cuda, ...)")
    p.add_argument("--threads", type=int, help="engine threads (default: the engine's)")
    p.add_argument("--json", action="store_true", help="print the checks as JSON")
    p.set_defaults(handler=run_verify)


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def run_verify(args: argparse.Namespace) -> int:
    """Check every variant on the golden set; print the checks; exit 3 if one failed."""
    names = [v.strip() for v in args.variants.split(",") if v.strip()] if args.variants else None
    checks = verify(args.folder, variants=names, device=args.device, threads=args.threads)
    if args.json:
        sys.stdout.write(json.dumps([c.to_dict() for c in checks], indent=2, sort_keys=True) + "\n")
    else:
        _write_table(checks)
    raise_on_failure(checks)
    return EXIT_OK


def _write_table(checks: list[Check]) -> None:
    """One row per variant, then what was skipped, what failed and how long it took."""
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
