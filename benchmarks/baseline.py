"""``--baseline OLD.json`` and ``--fail-above R``: put an earlier run's figures beside this
run's, and fail (exit 3) where a target became more than R times slower.

A row is one (target, batch size, threads). Rows in both runs get ratio = new p50 / old p50.
Rows in one run only are kept with the other side empty: a baseline taken on a workstation
holds the Keras targets a device cannot run, and each runtime target here is compared with
those (``speedups``)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from keras_edge.runtime.errors import UsageError

KERAS_BASELINES = ("keras-predict", "keras-tf-function")
EXPECTED = (
    "a JSON object written by 'keras-edge bench --json' (machine, config, and results rows "
    "with target, batch_size and p50_us)"
)

TYPES = {"machine": dict, "config": dict, "results": list}


def _refuse(path: Path, problem: str) -> UsageError:
    return UsageError(f"Expected --baseline {str(path)!r} to be {EXPECTED}, got {problem}")


def read(path: Path) -> dict[str, Any]:
    """An earlier bench JSON, checked, with ``threads`` on every row (rows of files written
    before ``--threads`` took a list take their config's single thread count)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise _refuse(path, "no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise _refuse(path, f"a file that cannot be read ({exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _refuse(path, f"invalid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise _refuse(path, f"a JSON {type(data).__name__}")
    missing = [f"{k} ({t.__name__})" for k, t in TYPES.items() if not isinstance(data.get(k), t)]
    if missing:
        raise _refuse(path, f"an object without {', '.join(missing)}")
    default = data["config"].get("threads")
    if isinstance(default, list):
        default = default[0] if default else None
    rows = []
    for i, row in enumerate(data["results"]):
        ok = (
            isinstance(row, dict)
            and isinstance(row.get("target"), str)
            and isinstance(row.get("batch_size"), int)
            and isinstance(row.get("p50_us"), int | float)
            and row["p50_us"] > 0
        )
        if not ok:
            raise _refuse(path, f"results[{i}] = {json.dumps(row)[:120]}")
        rows.append({**row, "threads": row.get("threads", default)})
    return {**data, "results": rows}


def _key(row: dict[str, Any]) -> tuple[str, int, int | None]:
    return (row["target"], row["batch_size"], row.get("threads"))


def compare(data: dict[str, Any], old: dict[str, Any], name: str) -> dict[str, Any]:
    """The ``baseline`` object of the JSON: the baseline's file and machine, every row of
    either run side by side, and this run's runtime targets against the baseline's Keras."""
    new_p50 = {_key(r): r["p50_us"] for r in data["results"]}
    old_p50 = {_key(r): r["p50_us"] for r in old["results"]}
    rows = []
    for key in [*new_p50, *(k for k in old_p50 if k not in new_p50)]:
        target, batch, threads = key
        before, after = old_p50.get(key), new_p50.get(key)
        rows.append(
            {
                "target": target,
                "batch_size": batch,
                "threads": threads,
                "baseline_p50_us": before,
                "p50_us": after,
                "ratio": after / before if before and after else None,
            }
        )
    # Keras is measured at one thread count per run: match it on batch size alone.
    keras_p50 = {}
    for o in old["results"]:
        if o["target"] in KERAS_BASELINES:
            keras_p50.setdefault((o["target"], o["batch_size"]), o["p50_us"])
    speedups = [
        {
            "target": r["target"],
            "batch_size": r["batch_size"],
            "threads": r["threads"],
            "over": keras,
            "baseline_p50_us": keras_p50[keras, r["batch_size"]],
            "p50_us": r["p50_us"],
            "speedup": keras_p50[keras, r["batch_size"]] / r["p50_us"],
        }
        for r in data["results"]
        if _is_runtime(r["target"])
        for keras in KERAS_BASELINES
        if (keras, r["batch_size"]) in keras_p50
    ]
    return {"file": name, "machine": old["machine"], "rows": rows, "speedups": speedups}


def _is_runtime(target: str) -> bool:
    """``<variant>``: predict through the runtime (not Keras, not the bare ``:raw`` call)."""
    return not target.startswith("keras-") and not target.endswith(":raw")


def fail_above(text: str | None, has_baseline: bool) -> float | None:
    """The ``--fail-above`` limit, checked: a finite number > 0, and only with a baseline."""
    if text is None:
        return None
    try:
        limit = float(text)
    except ValueError:
        limit = math.nan
    if not math.isfinite(limit) or limit <= 0:
        raise UsageError(
            f"Expected --fail-above to be a number > 0 (a ratio of new to baseline p50, e.g. "
            f"1.25), got {text!r}"
        )
    if not has_baseline:
        raise UsageError(
            f"--fail-above {text} compares with an earlier run: expected --baseline OLD.json "
            f"too, got none"
        )
    return limit


def regressions(comparison: dict[str, Any], limit: float) -> list[dict[str, Any]]:
    """Rows of both runs whose new p50 is more than ``limit`` times the old."""
    return [r for r in comparison["rows"] if r["ratio"] is not None and r["ratio"] > limit]


def gate_message(regressed: list[dict[str, Any]], limit: float, name: str) -> str:
    """One line naming each regression: target, batch size, threads, old and new p50, ratio."""
    items = "; ".join(
        f"{r['target']} batch {r['batch_size']} threads {r['threads']}: "
        f"{r['baseline_p50_us']:,.1f} us -> {r['p50_us']:,.1f} us ({r['ratio']:.3f}x)"
        for r in regressed
    )
    return f"{len(regressed)} row(s) slower than {limit:g}x the p50 of the baseline {name}: {items}"
