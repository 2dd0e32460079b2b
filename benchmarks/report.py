"""Turn measurements into the terminal table, Markdown, and the ratios the project holds the
runtime to (stated met or missed, never adjusted). The plot is :mod:`keras_edge.benchmarks.plot`,
the one module that imports matplotlib."""

from __future__ import annotations

import logging
from typing import Any

from keras_edge.benchmarks import machine
from keras_edge.runtime.report import text_table

logger = logging.getLogger(__name__)

# The targets that run the Keras model in TensorFlow, in plot order.
KERAS_ORDER = ["keras-predict", "keras-predict-on-batch", "keras-tf-function"]
# The runtime's targets (the README's table of them): runtime / bare engine call at most this,
# per (format, batch).
OVERHEAD_LIMITS = {("onnx", 1): 1.5, ("tflite", 1): 2.0, ("onnx", 1024): 1.05, ("tflite", 1024): 1.05}
# Where the bare call at batch 1 takes this long (CNNs, backbones), the runtime's fixed cost of
# a few microseconds must vanish in it: at most BIG_OVERHEAD_LIMIT there.
BIG_BARE_US = 100.0
BIG_OVERHEAD_LIMIT = 1.1
# Our graphs against what a user would do instead: Keras 3's own export of the same model on
# the same bare engine. fp32 must be no slower, 5% left for the noise of a shared machine; int8
# should beat it. (fp16 and dynamic are in the tables, without a claim.)
KERAS_EXPORT_OF = {"tflite": "keras-export-litert:raw", "onnx": "keras-export-onnx:raw"}
VS_KERAS_EXPORT_LIMITS = {"no slower": 1.05, "should beat": 1.0}
# Whether quantization paid: each quantized variant's bare call against the same export's fp32
# on the same engine, at every batch size measured. int8's goals are issue 22's (LiteRT's
# XNNPACK int8 kernels at 0.6x its float ones, ONNX Runtime's u8s8 QLinear kernels at 0.8x);
# a dynamic variant must at least not be slower than fp32, or it has no speed to offer.
VS_FP32_LIMITS = {("tflite", "int8"): 0.6, ("onnx", "int8"): 0.8,
                  ("tflite", "dynamic"): 1.0, ("onnx", "dynamic"): 1.0}  # fmt: skip


def p50(
    results: list[dict[str, Any]], target: str, batch: int, threads: int | None = None
) -> float | None:
    """The p50 of ``target`` at ``batch`` (and ``threads``, where given)."""
    for r in results:
        if (
            r["target"] == target
            and r["batch_size"] == batch
            and (threads is None or r.get("threads") == threads)
        ):
            return r["p50_us"]
    return None


def is_keras(target: str) -> bool:
    """True for the targets that run the Keras model in TensorFlow (at the first thread count
    only), not for Keras's exports on a bare engine."""
    return target in KERAS_ORDER


def first_threads(data: dict[str, Any]) -> int | None:
    """The first thread count of a run: the one Keras and the start-up runs used."""
    threads = data.get("config", {}).get("threads")
    return threads[0] if isinstance(threads, list) else threads


def _at_first_threads(data: dict[str, Any]) -> list[dict[str, Any]]:
    first = first_threads(data)
    return [r for r in data["results"] if r.get("threads", first) == first]


def ratios(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The runtime's targets, each with its measured value, limit and whether it is met, at
    the run's first thread count (the one Keras ran at)."""
    results = _at_first_threads(data)
    ids = [v["id"] for v in data["variants"]]
    batches = {r["batch_size"] for r in results}
    out: list[dict[str, Any]] = []
    if 1 in batches and ids:
        out += _vs_keras(results, ids)
    out += _overheads(results, ids)
    if 1 in batches:
        out += _vs_keras_exports(results, ids)
    out += _vs_own_fp32(results, ids, sorted(batches))
    return out + _startup_checks(data["startup"], ids)


def _vs_own_fp32(
    results: list[dict[str, Any]], ids: list[str], batches: list[int]
) -> list[dict[str, Any]]:
    """Each int8 and dynamic variant's bare call over the same export's fp32 bare call on the
    same engine, per batch size: a release build sees a quantized file that is slower."""
    out = []
    for vid in ids:
        fmt, _, precision = vid.partition("-")
        limit = VS_FP32_LIMITS.get((fmt, precision))
        if limit is None or f"{fmt}-fp32" not in ids:
            continue
        for batch in batches:
            ours, fp32 = p50(results, f"{vid}:raw", batch), p50(results, f"{fmt}-fp32:raw", batch)
            if ours and fp32:
                check = f"batch {batch}: {vid}:raw / {fmt}-fp32:raw (quantization paid)"
                out.append(_check(check, ours / fp32, limit, "vs own fp32 <="))
    return out


def _check(check: str, value: float, limit: float, kind: str) -> dict[str, Any]:
    """One target's record; ``kind`` ends with the comparison that meets it (``>=`` or ``<=``)."""
    met = value >= limit if kind.endswith(">=") else value <= limit
    return {"check": check, "value": value, "limit": limit, "kind": kind, "met": met}


def _vs_keras(results: list[dict[str, Any]], ids: list[str]) -> list[dict[str, Any]]:
    """At batch 1, the fastest variant through the runtime against Keras's ``predict`` and its
    ``tf.function``."""
    best = min(ids, key=lambda v: p50(results, v, 1) or float("inf"))
    fastest = p50(results, best, 1)
    out = []
    for baseline, limit in (("keras-predict", 10_000.0), ("keras-tf-function", 100.0)):
        base = p50(results, baseline, 1)
        if base and fastest:
            check = f"batch 1: {best} (runtime predict) vs {baseline}"
            out.append(_check(check, base / fastest, limit, "speed-up >="))
    return out


def _overheads(results: list[dict[str, Any]], ids: list[str]) -> list[dict[str, Any]]:
    """Each variant's runtime call over its bare engine call, at batch 1 and 1024."""
    out = []
    for vid in ids:
        fmt = vid.split("-")[0]
        for batch in (1, 1024):
            run, raw = p50(results, vid, batch), p50(results, f"{vid}:raw", batch)
            limit = OVERHEAD_LIMITS.get((fmt, batch))
            check = f"batch {batch}: {vid} runtime / bare engine call"
            if batch == 1 and raw and raw >= BIG_BARE_US:
                limit, check = BIG_OVERHEAD_LIMIT, f"{check} (bare call >= {BIG_BARE_US:g} us)"
            if run and raw and limit:
                out.append(_check(check, run / raw, limit, "overhead <="))
    return out


def _startup_checks(startup: list[dict[str, Any]], ids: list[str]) -> list[dict[str, Any]]:
    """Each variant's start-up (import, load, first call) and peak RSS against TensorFlow +
    Keras's, where the run measured ``keras-predict-on-batch``'s."""
    keras = next((s for s in startup if s["target"] == "keras-predict-on-batch"), None)
    if not keras:
        return []
    keras_start = keras["load_s"] + keras["first_call_us"] / 1e6
    out = []
    for s in startup:
        if s["target"] in ids:
            start = s["load_s"] + s["first_call_us"] / 1e6
            check = f"start-up: {s['target']} vs TF + Keras (import, load, 1st call)"
            out.append(_check(check, keras_start / start, 10.0, "faster >="))
            rss = keras["peak_rss_mb"] / s["peak_rss_mb"]
            out.append(_check(f"peak RSS: {s['target']} vs TF + Keras", rss, 5.0, "smaller >="))
    return out


def _vs_keras_exports(results: list[dict[str, Any]], ids: list[str]) -> list[dict[str, Any]]:
    """At batch 1, each variant's bare call against Keras's own export of the model on the same
    engine (LiteRT against ``format="litert"``, ONNX Runtime against ``format="onnx"``)."""
    out = []
    for vid in ids:
        fmt, _, precision = vid.partition("-")
        reference = KERAS_EXPORT_OF.get(fmt)
        ours, theirs = p50(results, f"{vid}:raw", 1), p50(results, reference or "", 1)
        if ours and theirs and precision in ("fp32", "int8"):  # fp32 no slower, int8 faster
            expect = "should beat" if precision == "int8" else "no slower"
            limit = VS_KERAS_EXPORT_LIMITS[expect]
            check = f"batch 1: {vid}:raw / {reference} ({expect})"
            out.append(_check(check, ours / theirs, limit, "vs Keras export <="))
    return out


def _table(header: list[str], rows: list[list[str]], markdown: bool) -> str:
    """Numbers right aligned, or Markdown: the runtime's one table renderer."""
    return text_table(header, rows, markdown=markdown, right=True)


def _us(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _x(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}x" if value >= 100 else f"{value:,.2f}x"


def _header(data: dict[str, Any], h: str) -> str:
    config = data["config"]
    threads = config["threads"] if isinstance(config["threads"], list) else [config["threads"]]
    keras = any(is_keras(r["target"]) for r in data["results"])
    note = (
        f" (Keras targets at {threads[0]} only: TensorFlow fixes its thread pools at start-up)"
        if keras
        else ""
    )
    lines = [
        f"{h}Machine: {machine.summary(data['machine'])}; Python {data['machine']['python']}\n",
        f"threads {', '.join(map(str, threads))}{note}; {config['seconds']} s per target, batch "
        f"size and thread count; inputs: {config['data']}\n",
    ]
    if config.get("keras_exports"):
        exports = [
            f"{fmt} {got['bytes']:,} bytes" if "bytes" in got else f"{fmt} not timed ({got['error']})"
            for fmt, got in config["keras_exports"].items()
        ]
        lines.append(
            f"Keras 3's own model.export, timed on bare engines as keras-export-<format>:raw: "
            f"{'; '.join(exports)}\n"
        )
    if config.get("skipped_variants"):
        lines.append(f"not timed, engine not installed here: {skipped(config['skipped_variants'])}\n")
    return "\n".join(lines)


def skipped(variants: dict[str, str]) -> str:
    """``{variant: why}`` as one line, the variants grouped by why."""
    by_reason: dict[str, list[str]] = {}
    for vid, why in variants.items():
        by_reason.setdefault(why, []).append(vid)
    return "; ".join(f"{', '.join(ids)} ({why})" for why, ids in by_reason.items())


def _batch_table(data: dict[str, Any], batch: int, markdown: bool) -> str:
    """One batch size: each target at each thread count, side by side, with its scaling over
    the first thread count and its speed-up over ``keras-predict``."""
    results = [r for r in data["results"] if r["batch_size"] == batch]
    first = first_threads(data)
    counts = {r.get("threads") for r in results}
    keras = p50(results, "keras-predict", batch)
    order = list(dict.fromkeys(r["target"] for r in results))
    header = ["target", "threads", "p50", "p90", "p99", "mean", "std", "n", "samples/s"]
    if len(counts) > 1:
        header.append(f"vs {first} thread{'' if first == 1 else 's'}")
    if keras:
        header.append("vs keras-predict")
    rows = []
    for r in sorted(results, key=lambda r: order.index(r["target"])):  # stable: threads in order
        row = [
            r["target"],
            str(r.get("threads")),
            *(f"{r[k]:,.1f}" for k in ("p50_us", "p90_us", "p99_us", "mean_us", "std_us")),
            f"{r['n']:,}",
            f"{r['throughput_per_s']:,.0f}",
        ]
        if len(counts) > 1:
            base = p50(results, r["target"], batch, first)
            row.append(_x(base / r["p50_us"]) if base and not is_keras(r["target"]) else "-")
        if keras:
            row.append(f"{keras / r['p50_us']:,.0f}x")
        rows.append(row)
    return _table(header, rows, markdown)


def _comparison(data: dict[str, Any], h: str, markdown: bool) -> str:
    """The baseline's figures beside this run's, and this run's runtime against the
    baseline's Keras."""
    cmp = data["baseline"]
    limit = cmp.get("fail_above")
    bullet = "- " if markdown else "  "
    parts = [
        f"{h}Compared with baseline {cmp['file']} (p50, microseconds per call; ratio = this run / "
        f"baseline)\n",
        f"{bullet}baseline: {machine.summary(cmp['machine'])}\n"
        f"{bullet}this run: {machine.summary(data['machine'])}\n",
    ]
    order = list(dict.fromkeys(r["target"] for r in cmp["rows"]))
    rows = []
    for r in sorted(cmp["rows"], key=lambda r: (r["batch_size"], order.index(r["target"]))):
        row = [
            r["target"],
            str(r["batch_size"]),
            str(r["threads"]),
            _us(r["baseline_p50_us"]),
            _us(r["p50_us"]),
            "-" if r["ratio"] is None else f"{r['ratio']:.3f}",
        ]
        if limit is not None:
            row.append("REGRESSED" if r["ratio"] is not None and r["ratio"] > limit else "")
        rows.append(row)
    header = ["target", "batch", "threads", "baseline p50", "p50", "ratio"]
    if limit is not None:
        header.append(f"> {limit:g}?")
    parts.append(_table(header, rows, markdown))
    if cmp["speedups"]:
        overs = list(dict.fromkeys(s["over"] for s in cmp["speedups"]))
        grouped: dict[tuple[str, int, Any], dict[str, float]] = {}
        for s in cmp["speedups"]:
            key = (s["target"], s["batch_size"], s["threads"])
            grouped.setdefault(key, {"p50": s["p50_us"]})[s["over"]] = s["speedup"]
        targets = list(dict.fromkeys(target for target, _, _ in grouped))
        rows = [
            [target, str(batch), str(threads), _us(got["p50"]), *(_x(got.get(o)) for o in overs)]
            for (target, batch, threads), got in sorted(
                grouped.items(), key=lambda item: (item[0][1], targets.index(item[0][0]))
            )
        ]
        parts.append(f"{h}This run's runtime targets vs the baseline's Keras (p50 speed-up)\n")
        header = ["target", "batch", "threads", "p50", *(f"vs baseline {o}" for o in overs)]
        parts.append(_table(header, rows, markdown))
    return "\n".join(parts)


def render(data: dict[str, Any], markdown: bool = False) -> str:
    """Every table of a benchmark run, as plain text or Markdown."""
    h = "### " if markdown else ""
    parts = [_header(data, h)]
    for batch in sorted({r["batch_size"] for r in data["results"]}):
        parts.append(f"{h}Batch size {batch} (microseconds per call)\n")
        parts.append(_batch_table(data, batch, markdown))
    if data["startup"]:
        rows = [
            [s["target"], f"{s['load_s']:.3f}", f"{s['first_call_us']:,.0f}", f"{s['peak_rss_mb']:.0f}"]
            for s in data["startup"]
        ]
        parts.append(f"{h}Start-up in a fresh process (threads {first_threads(data)})\n")
        parts.append(_table(["target", "import+load s", "first call us", "peak RSS MB"], rows, markdown))
    if data["variants"]:
        rows = [
            [
                v["id"],
                f"{v['bytes']:,}",
                "-" if v["label_agreement"] is None else f"{v['label_agreement']:.4%}",
                str(v["n"]),
            ]
            for v in data["variants"]
        ]
        on = next((v.get("agreement_on") for v in data["variants"] if v.get("agreement_on")), None)
        where = {"keras": "the benchmark inputs", "golden set": "the export's golden set"}.get(on or "")
        parts.append(
            f"{h}Variants: size and label agreement with Keras on {where}\n"
            if where
            else f"{h}Variants: size (label agreement with Keras needs --keras or a golden set)\n"
        )
        parts.append(_table(["variant", "bytes", "agreement", "n"], rows, markdown))
    checks = data.get("ratios", [])
    if checks:
        rows = [
            [
                c["check"],
                f"{c['value']:,.3f}" if c["value"] < 10 else f"{c['value']:,.1f}",
                f"{c['kind']} {c['limit']:g}",
                "met" if c["met"] else "MISSED",
            ]
            for c in checks
        ]
        parts.append(
            f"{h}Targets at {first_threads(data)} thread(s) (one run on a shared machine: ratios, "
            f"not absolute times)\n"
        )
        parts.append(_table(["check", "ratio", "target", ""], rows, markdown))
    if data.get("baseline"):
        parts.append(_comparison(data, h, markdown))
    return "\n".join(parts)
