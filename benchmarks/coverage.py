"""``keras-edge bench-coverage``: which models keras-edge exports, as what, and
whether each artifact still decides as Keras does.

For every case of the model zoo (:mod:`keras_edge.benchmarks.zoo`) and of the models people
ship (:mod:`keras_edge.benchmarks.zoo_shipped`: dict inputs, several heads, uint8 pixels, a
SavedModel folder, a Transformer block, a masked BiLSTM, a custom layer, a subclassed model,
concatenated heads) it builds and trains the model, saves it the way the case reaches
``export()`` (a ``.keras`` file, a SavedModel folder, a ``.keras`` file with its layer file, or
the object itself), and exports all eight variants in a fresh process with calibration and
validation data, recording the export's wall time and peak memory
(:mod:`~keras_edge.benchmarks.coverage_export` says what they mean). The parity gate of each
variant is read from the manifest. Every variant that was produced is then timed at batch 1
through ``runtime.load(..., threads=1).predict``, and its cell gives the speed-up over the fp32
variant of its format, measured in the same interleaved run. A case the export refuses, or a
converter that fails, is recorded with the exporter's own message, never hidden: the table says
what works today.

    keras-edge bench-coverage --markdown benchmarks/results/coverage.md \\
        --json benchmarks/results/coverage.json

To rerun a few cases and keep every other row of an earlier run (after a fix lands)::

    keras-edge bench-coverage --only transformer,masked-bilstm --update \\
        --markdown benchmarks/results/coverage.md --json benchmarks/results/coverage.json
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from keras_edge import runtime
from keras_edge.benchmarks import coverage_export, machine, timing, zoo, zoo_shipped
from keras_edge.benchmarks.coverage_export import BUILDERS, one_line
from keras_edge.runtime.errors import UsageError
from keras_edge.runtime.manifest import FORMATS, MANIFEST_NAME, PRECISIONS, Manifest, Variant
from keras_edge.runtime.report import text_table

logger = logging.getLogger(__name__)

COMMAND = (
    "keras-edge bench-coverage --markdown benchmarks/results/coverage.md "
    "--json benchmarks/results/coverage.json"
)
PROG = "keras-edge bench-coverage"
DEFAULT_OUT = Path("build/coverage")
DEFAULT_SECONDS = 0.3
VARIANTS = [f"{fmt}-{precision}" for fmt in FORMATS for precision in PRECISIONS]
POOL = 32  # validation rows cycled through when timing, one per call
MIN_SAMPLES = 20  # calls per variant at least, whatever --seconds says
CELL_REASON = 100  # characters of a refusal's reason in a cell; the notes give all of it
# The parity figures of each variant copied into the JSON.
_PARITY_FIELDS = (
    "n", "label_agreement", "flips", "max_abs_diff", "mean_abs_diff", "tolerance",
    "min_agreement", "accuracy", "reference_accuracy", "batch_flips", "passed",
)  # fmt: skip


def _rows(x: Any, n: int) -> list[Any]:
    """The first ``n`` samples of ``x`` (an array, or a dict name -> array), one per call."""
    if isinstance(x, dict):
        size = len(next(iter(x.values())))
        return [{k: v[i : i + 1] for k, v in x.items()} for i in range(min(n, size))]
    return [x[i : i + 1] for i in range(min(n, len(x)))]


def _short_reason(variant: Variant) -> str:
    """Why a variant failed its gate, in a few words; the full messages go to the notes."""
    p = variant.parity
    if p is None:
        return "no parity record"
    parts = []
    if p.label_agreement < p.min_agreement:
        parts.append(f"{p.flips} flips of {p.n}, needs {p.min_agreement:.1%}")
    if p.max_abs_diff > p.tolerance:
        parts.append(f"max diff {p.max_abs_diff:.3g} > {p.tolerance:g}")
    return "; ".join(parts) or (p.failures[0] if p.failures else "failed")


def brief(reason: str, limit: int = CELL_REASON) -> str:
    """A reason cut to fit a table cell; the notes under the table keep it whole."""
    return reason if len(reason) <= limit else reason[: limit - 1].rstrip() + "\u2026"


def percent(value: float) -> str:
    """A share with one decimal, rounded down: 99.96% reads 99.9%, never 100.0%."""
    return f"{math.floor(value * 1000 + 1e-9) / 10:.1f}%"


def _time_variants(dist: Path, ids: list[str], x_val: Any, seconds: float) -> dict[str, dict]:
    """Batch-1 ``predict`` latency of each variant, interleaved in one run; a variant that does
    not load gets ``load_error``."""
    pool = _rows(x_val, POOL)
    targets, out = [], {}
    for vid in ids:
        try:
            clf = runtime.load(dist, variant=vid, threads=1)
        except Exception as exc:  # recorded in the table, not raised: one variant, one cell
            out[vid] = {"load_error": one_line(exc)}
            continue
        targets.append(timing.Timed(name=vid, call=clf.predict, inputs=pool))
    if targets:
        samples = timing.measure(targets, seconds=seconds, min_samples=MIN_SAMPLES)
        for vid, ns in samples.items():
            stats = timing.Stats.of(ns, batch_size=1)
            out[vid] = {"p50_us": stats.p50_us, "p90_us": stats.p90_us, "calls": stats.n}
    return out


def variant_results(manifest: Manifest, dist: Path, x_val: Any, seconds: float) -> dict[str, dict]:
    """One record per variant id: status (passed, failed, refused), its cell and figures."""
    refused = dict(getattr(manifest, "refused", None) or {})
    produced = [vid for vid in VARIANTS if vid in manifest.variants]
    times = _time_variants(dist, produced, x_val, seconds)
    results: dict[str, dict] = {}
    for vid in VARIANTS:
        v = manifest.variants.get(vid)
        if v is None:
            reason = refused.get(vid, "not produced by the export")
            results[vid] = {"status": "refused", "reason": reason, "cell": f"refused ({brief(reason)})"}
            continue
        record: dict[str, Any] = {"bytes": v.bytes, "threshold": v.threshold, **times.get(vid, {})}
        if v.parity is not None:
            record.update({k: getattr(v.parity, k) for k in _PARITY_FIELDS})
            record["failures"] = list(v.parity.failures)
        fp32 = times.get(vid.split("-")[0] + "-fp32", {}).get("p50_us")
        if fp32 and record.get("p50_us"):
            record["speedup_vs_fp32"] = fp32 / record["p50_us"]
        agreement = percent(v.parity.label_agreement) if v.parity else "unchecked"
        if "load_error" in record:
            record["status"] = "failed"
            record["reason"] = record["load_error"]
            record["cell"] = f"FAILED {agreement} (runtime.load: {brief(record['load_error'])})"
        elif not v.passed:
            record["status"] = "failed"
            record["reason"] = _short_reason(v)
            record["cell"] = f"FAILED {agreement} ({record['reason']})"
        else:
            record["status"] = "passed"
            speed = f", {record['speedup_vs_fp32']:.1f}x" if "speedup_vs_fp32" in record else ""
            mixed = ""
            if v.fallback is not None:  # int8 that passed with layers kept in float
                record["float_layers"] = list(v.fallback.float_layers)
                mixed = f", {len(v.fallback.float_layers)} float layers"
            record["cell"] = f"passed {agreement}{speed}{mixed}"
        results[vid] = record
    return results


def run_case(name: str, out: Path, seconds: float, run: str = COMMAND) -> dict[str, Any]:
    """Build and save one case here, export it in a fresh process (timed, its peak memory
    read: see :mod:`~keras_edge.benchmarks.coverage_export`), time what it wrote; every
    failure ends up in the record."""
    record: dict[str, Any] = {"name": name, "error": None, "run": run}
    folder = out / name
    dist = folder / "dist"
    start = time.perf_counter()
    try:
        case = coverage_export.build(name)
        record.update(description=case.description, head=case.head, source=case.source)
        record["build_s"] = time.perf_counter() - start
        shutil.rmtree(dist, ignore_errors=True)  # no stale artifacts of an earlier run
        coverage_export.write_job(case, folder)
    except Exception as exc:  # a case that cannot be built says so in its row
        record.update(description=record.get("description", name), error=f"build: {one_line(exc)}")
        return _refused_everywhere(record)
    outcome = coverage_export.run_job(folder)
    record.update(
        export_s=outcome.export_s,
        export_process_s=outcome.process_s,
        peak_rss_mib=outcome.peak_rss_mib,
        rss_before_mib=outcome.rss_before_mib,
        peak_method=outcome.peak_method,
        error=outcome.error,
    )
    # An export that wrote the variants it could before raising (the folder was emptied
    # above, so a manifest there is this export's) still has a row of figures.
    if not (dist / MANIFEST_NAME).is_file():
        return _refused_everywhere(record)
    manifest = Manifest.read(dist)  # a variant that failed its gate is in it, marked failed
    record["keras_accuracy"] = next(
        (v.parity.reference_accuracy for v in manifest.variants.values() if v.parity), None
    )
    record["variants"] = variant_results(manifest, dist, case.x_val, seconds)
    return record


def _refused_everywhere(record: dict[str, Any]) -> dict[str, Any]:
    reason = record["error"]
    record["variants"] = {
        vid: {"status": "refused", "reason": reason, "cell": f"refused: {brief(reason)}"}
        for vid in VARIANTS
    }
    return record


# -- output -----------------------------------------------------------------------------------


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(data: dict[str, Any]) -> str:
    """The coverage table, the per-case timings, and every failure's full message."""
    lines = [
        "# Export coverage: which Keras models keras-edge exports, and as what",
        "",
        f"Machine: {machine.summary(data['machine'])}. Regenerate with:",
        "",
        f"    {data['command']}",
        "",
    ]
    lines += _runs(data)
    lines += [
        f"Each case is built and trained by `keras_edge.benchmarks.zoo`{_shipped_rows(data)}, "
        "saved the way it reaches `export()` (a `.keras` file, a Keras 3 "
        "`tf_saved_model` folder, a `.keras` file with `custom_objects=[its layers.py]`, or the "
        'model object), and exported in a fresh process with `quantize="all"`, calibration '
        "data (training inputs) and validation data. A cell gives the parity gate on the "
        "validation data (label agreement with Keras, one call per sample; for several heads, "
        "the worst head's) and the batch-1 speed-up of "
        "`runtime.load(dist, variant=v, threads=1).predict` over the fp32 variant of the same "
        f"format (medians of {data['seconds']:g} s of calls each, interleaved, over {POOL} "
        "validation rows). `refused` means the variant was not produced, with the exporter's "
        "reason.",
        "",
    ]
    rows = [
        [f"`{case['name']}`: {_md(case['description'])}",
         *(_md(case["variants"][v]["cell"]) for v in VARIANTS)]
        for case in data["cases"]
    ]  # fmt: skip
    lines += [text_table(["case", *(f"`{v}`" for v in VARIANTS)], rows, markdown=True)]
    lines += [
        "Export time is the wall time of the `export()` call (8 variants converted and gated; "
        "TensorFlow and Keras imported before it, the converters and loading the model "
        "counted). Peak memory is the export process's peak resident set size (VmHWM) during "
        "that call, the mark reset just before it; the process held the RSS before export "
        "already (Python, TensorFlow, Keras; for a model object, the model trained there).",
        "",
    ]
    rows = []
    for case in data["cases"]:
        statuses = [case["variants"][v]["status"] for v in VARIANTS]
        outcome = ", ".join(f"{statuses.count(s)} {s}" for s in ("passed", "failed", "refused"))
        acc = case.get("keras_accuracy")
        rows.append([
            f"`{case['name']}`", str(case.get("head", "-")), str(case.get("source", "-")),
            _seconds(case.get("build_s")), _seconds(case.get("export_s")),
            _mib(case.get("peak_rss_mib")), _mib(case.get("rss_before_mib")),
            "-" if acc is None else f"{acc:.4f}", outcome,
        ])  # fmt: skip
    header = [
        "case", "head", "exported from", "build + train (s)", "export, 8 variants (s)",
        "peak RSS in export (MiB)", "RSS before export (MiB)", "Keras accuracy", "outcome",
    ]  # fmt: skip
    lines += [text_table(header, rows, markdown=True).rstrip("\n")]
    whole = [c["name"] for c in data["cases"] if c.get("peak_method") == coverage_export.PEAK_WHOLE]
    if whole:
        lines += ["", f"Peak memory of {', '.join(whole)}: the whole export process's (no reset)."]
    notes = []
    for case in data["cases"]:
        if case["error"]:
            everywhere = all(v.get("reason") == case["error"] for v in case["variants"].values())
            where = "every variant" if everywhere else "the export raised"
            notes.append(f"- `{case['name']}`, {where}: {_md(case['error'])}")
            if everywhere:
                continue
        for vid in VARIANTS:
            v = case["variants"][vid]
            if v["status"] != "passed":
                why = "; ".join(v.get("failures") or []) or v["reason"]
                notes.append(f"- `{case['name']}` `{vid}` {v['status']}: {_md(why)}")
    if notes:
        lines += ["", "## Why a cell failed or was refused", "", *notes]
    return "\n".join(lines) + "\n"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _shipped_rows(data: dict[str, Any]) -> str:
    """Which rows come from the models people ship, said after the zoo's module name."""
    names = [f"`{case['name']}`" for case in data["cases"] if case["name"] in zoo_shipped.CASES]
    if not names:
        return ""
    return f" (and {', '.join(names)} by `keras_edge.benchmarks.zoo_shipped`: the models people ship)"


def _runs(data: dict[str, Any]) -> list[str]:
    """Which command made which rows, where that is not the regenerating command alone."""
    by_run: dict[str, list[str]] = {}
    for case in data["cases"]:
        by_run.setdefault(case.get("run", data["run"]), []).append(case["name"])
    if list(by_run) == [data["command"]]:
        return []
    if len(by_run) == 1:
        return [f"This run: `{next(iter(by_run))}`.", ""]
    lines = [f"Rows {', '.join(f'`{n}`' for n in names)}: `{run}`." for run, names in by_run.items()]
    return [" ".join(lines), ""]


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value


def _cases(text: str) -> list[str]:
    """``--only A,B``: cases of the zoo or of the models people ship, each known."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in BUILDERS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"expected --only cases from {list(BUILDERS)}, got {unknown or text!r}"
        )
    return names


def _positive_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"expected --seconds > 0, got {text}")
    return seconds


def configure(name: str, p: argparse.ArgumentParser) -> None:
    """Add the arguments of ``keras-edge bench-coverage`` to ``p``."""
    p.add_argument(
        "--only",
        type=_cases,
        metavar="A,B",
        help=f"comma list of cases: of the zoo ({', '.join(zoo.CASES)}) or of the models people "
        f"ship ({', '.join(zoo_shipped.CASES)})",
    )
    p.add_argument(
        "--update",
        action="store_true",
        help="keep the other cases of the --json file (an earlier run): replace only the cases "
        "run now, and write the table of all of them",
    )
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="working folder")
    p.add_argument("--markdown", type=Path, metavar="F.md", help="write the table here")
    p.add_argument("--json", type=Path, metavar="F.json", help="write every figure here")
    p.add_argument(
        "--seconds",
        type=_positive_seconds,
        default=DEFAULT_SECONDS,
        help=f"timing budget per variant (default {DEFAULT_SECONDS:g})",
    )
    p.set_defaults(handler=run)


def command_line(args: argparse.Namespace) -> str:
    """The command that ran: the options given, in the order ``--help`` lists them."""
    parts = [PROG]
    if args.only:
        parts += ["--only", ",".join(args.only)]
    if args.update:
        parts += ["--update"]
    if args.out != DEFAULT_OUT:
        parts += ["--out", str(args.out)]
    for option in ("markdown", "json"):
        if getattr(args, option):
            parts += [f"--{option}", str(getattr(args, option))]
    if args.seconds != DEFAULT_SECONDS:
        parts += ["--seconds", f"{args.seconds:g}"]
    return " ".join(parts)


def run(args: argparse.Namespace) -> int:
    """Build, export and time every case asked for; write and print the table."""
    earlier = _earlier_cases(args.json) if args.update else []
    names = args.only or list(BUILDERS)
    this_run = command_line(args)
    cases = []
    for i, name in enumerate(names, start=1):
        _progress(f"[{i}/{len(names)}] {name}")
        case = run_case(name, args.out, args.seconds, run=this_run)
        error = f": {case['error']}" if case["error"] else ""
        _progress(
            f"  built in {_seconds(case.get('build_s'))} s, exported in "
            f"{_seconds(case.get('export_s'))} s, peak {_mib(case.get('peak_rss_mib'))} MiB{error}"
        )
        cases.append(case)
    data = {
        "command": COMMAND,
        "run": this_run,
        "machine": machine.describe(),
        "seconds": args.seconds,
        "pool": POOL,
        "variants": VARIANTS,
        "cases": merge(earlier, cases),
    }
    _write(data, args.markdown, args.json)
    return 0


def _earlier_cases(path: Path | None) -> list[dict[str, Any]]:
    """The cases of an earlier run's JSON, for ``--update``."""
    if path is None:
        raise UsageError("Expected --json F.json with --update (the earlier run to update), got none")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(
            f"Expected --update's --json {path} to hold an earlier run; it does not exist "
            "(run without --update first)"
        ) from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"Expected --json {path} to be a coverage JSON, got: {exc}") from exc
    cases = data.get("cases") if isinstance(data, dict) else None
    if not isinstance(cases, list) or not all(isinstance(c, dict) and "name" in c for c in cases):
        raise UsageError(f"Expected --json {path} to hold a list of cases with names, got {cases!r:.80}")
    for case in cases:  # rows of a run before each row recorded its command: the full command
        case.setdefault("run", data.get("run", COMMAND))
    return cases


def merge(earlier: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``earlier``'s cases with those of ``new`` replacing them by name, in the order of
    :data:`BUILDERS` (a case no longer known goes last)."""
    by_name = {case["name"]: case for case in earlier}
    by_name.update({case["name"]: case for case in new})
    order = {name: i for i, name in enumerate(BUILDERS)}
    return sorted(by_name.values(), key=lambda case: order.get(case["name"], len(order)))


def _progress(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def _write(data: dict[str, Any], markdown_path: Path | None, json_path: Path | None) -> None:
    """The table to ``markdown_path`` and stdout, every figure to ``json_path``."""
    table = markdown(data)
    if markdown_path:
        markdown_path.parent.mkdir(parents=True, exist_ok=True)
        markdown_path.write_text(table, encoding="utf-8")
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(
            json.dumps(_jsonable(data), indent=2, sort_keys=True, allow_nan=False) + "\n",
            encoding="utf-8",
        )
    print(table, end="")
