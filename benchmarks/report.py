"""Turn measurements into the terminal table, Markdown, the plot, and the ratios the project
holds the runtime to (stated met or missed, never adjusted). matplotlib is imported by
:func:`plot` alone, so everything else works on a device without it."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

from keras_edge.benchmarks import machine

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


def _p50(
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
    results, startup, variants = _at_first_threads(data), data["startup"], data["variants"]
    out: list[dict[str, Any]] = []
    ids = [v["id"] for v in variants]
    batches = sorted({r["batch_size"] for r in results})
    if 1 in batches and ids:
        best = min(ids, key=lambda v: _p50(results, v, 1) or float("inf"))
        fastest = _p50(results, best, 1)
        for baseline, limit in (("keras-predict", 10_000.0), ("keras-tf-function", 100.0)):
            base = _p50(results, baseline, 1)
            if base and fastest:
                out.append(
                    {
                        "check": f"batch 1: {best} (runtime predict) vs {baseline}",
                        "value": base / fastest,
                        "limit": limit,
                        "kind": "speed-up >=",
                        "met": base / fastest >= limit,
                    }
                )
    for vid in ids:
        fmt = vid.split("-")[0]
        for batch in (1, 1024):
            run, raw = _p50(results, vid, batch), _p50(results, f"{vid}:raw", batch)
            limit = OVERHEAD_LIMITS.get((fmt, batch))
            check = f"batch {batch}: {vid} runtime / bare engine call"
            if batch == 1 and raw and raw >= BIG_BARE_US:
                limit, check = BIG_OVERHEAD_LIMIT, f"{check} (bare call >= {BIG_BARE_US:g} us)"
            if run and raw and limit:
                out.append(
                    {
                        "check": check,
                        "value": run / raw,
                        "limit": limit,
                        "kind": "overhead <=",
                        "met": run / raw <= limit,
                    }
                )
    if 1 in batches:
        out += _vs_keras_exports(results, ids)
    keras = next((s for s in startup if s["target"] == "keras-predict-on-batch"), None)
    if keras:
        keras_start = keras["load_s"] + keras["first_call_us"] / 1e6
        for s in startup:
            if s["target"] in ids:
                start = s["load_s"] + s["first_call_us"] / 1e6
                out.append(
                    {
                        "check": f"start-up: {s['target']} vs TF + Keras (import, load, 1st call)",
                        "value": keras_start / start,
                        "limit": 10.0,
                        "kind": "faster >=",
                        "met": keras_start / start >= 10.0,
                    }
                )
                out.append(
                    {
                        "check": f"peak RSS: {s['target']} vs TF + Keras",
                        "value": keras["peak_rss_mb"] / s["peak_rss_mb"],
                        "limit": 5.0,
                        "kind": "smaller >=",
                        "met": keras["peak_rss_mb"] / s["peak_rss_mb"] >= 5.0,
                    }
                )
    return out


def _vs_keras_exports(results: list[dict[str, Any]], ids: list[str]) -> list[dict[str, Any]]:
    """At batch 1, each variant's bare call against Keras's own export of the model on the same
    engine (LiteRT against ``format="litert"``, ONNX Runtime against ``format="onnx"``)."""
    out = []
    for vid in ids:
        fmt, _, precision = vid.partition("-")
        reference = KERAS_EXPORT_OF.get(fmt)
        ours, theirs = _p50(results, f"{vid}:raw", 1), _p50(results, reference or "", 1)
        if ours and theirs and precision in ("fp32", "int8"):  # fp32 no slower, int8 faster
            expect = "should beat" if precision == "int8" else "no slower"
            limit = VS_KERAS_EXPORT_LIMITS[expect]
            out.append(
                {
                    "check": f"batch 1: {vid}:raw / {reference} ({expect})",
                    "value": ours / theirs,
                    "limit": limit,
                    "kind": "vs Keras export <=",
                    "met": ours / theirs <= limit,
                }
            )
    return out


def _table(header: list[str], rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines) + "\n"
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(
            c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines) + "\n"


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
    keras = _p50(results, "keras-predict", batch)
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
            base = _p50(results, r["target"], batch, first)
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


def matplotlib_available() -> bool:
    """True when ``--plot`` can work here (matplotlib importable, not blocked)."""
    try:
        return importlib.util.find_spec("matplotlib") is not None
    except ValueError:  # in sys.modules as None: import blocked
        return False


def plot(data: dict[str, Any], path: Path) -> None:
    """Latency against batch size per target and thread count (log axes), and, where Keras
    was measured, the speed-up of each runtime target over the Keras baselines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = data["results"]
    batches = sorted({r["batch_size"] for r in results})
    lines = list(dict.fromkeys((r["target"], r.get("threads")) for r in results))
    counts = list(dict.fromkeys(t for _, t in lines))
    variants = list(dict.fromkeys(t.removesuffix(":raw") for t, _ in lines if not is_keras(t)))
    keras = [k for k in KERAS_ORDER if any(t == k for t, _ in lines)]
    baselines = [k for k in ("keras-predict", "keras-tf-function") if k in keras]
    fig, axes = plt.subplots(
        1, 1 + len(baselines), figsize=(6.5 * (1 + len(baselines)), 8), squeeze=False
    )
    axes = axes[0]
    colors = plt.get_cmap("tab10")
    markers = "os^Dvx*"

    def label(target: str, threads: int | None) -> str:
        if is_keras(target) or len(counts) == 1:
            return target
        return f"{target} @{threads}"

    for target, threads in lines:
        ys = [_p50(results, target, b, threads) for b in batches]
        if is_keras(target):
            style = {
                "color": "black",
                "linestyle": ["-", "--", ":"][KERAS_ORDER.index(target)],
                "linewidth": 2,
            }
        else:
            style = {
                "color": colors(variants.index(target.removesuffix(":raw")) % 10),
                "linestyle": ":" if target.endswith(":raw") else "-",
                "marker": markers[counts.index(threads) % len(markers)],
                "markersize": 4,
                "alpha": 1.0 if counts.index(threads) == 0 else 0.6,
            }
        axes[0].plot(batches, ys, label=label(target, threads), **style)
    axes[0].set(
        xscale="log",
        yscale="log",
        xlabel="batch size (samples per call)",
        ylabel="median latency per call (microseconds)",
        title="Latency per call, p50",
    )
    axes[0].legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.13))
    runtime_lines = [(t, n) for t, n in lines if not is_keras(t) and not t.endswith(":raw")]
    for ax, baseline in zip(axes[1:], baselines, strict=True):
        for target, threads in runtime_lines:
            ys = [
                (_p50(results, baseline, b) or 0) / (_p50(results, target, b, threads) or 1)
                for b in batches
            ]
            ax.plot(
                batches,
                ys,
                marker=markers[counts.index(threads) % len(markers)],
                markersize=4,
                alpha=1.0 if counts.index(threads) == 0 else 0.6,
                color=colors(variants.index(target) % 10),
                label=label(target, threads),
            )
        ax.axhline(1.0, color="grey", linewidth=0.8)
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="batch size (samples per call)",
            ylabel=f"speed-up over {baseline} (x, p50)",
            title=f"runtime predict vs {baseline}",
        )
        ax.legend(fontsize=7, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.13))
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.tick_params(axis="x", which="minor", labelbottom=False)
    versus = " vs the original Keras model" if keras else ""
    fig.suptitle(
        f"keras-edge: exported variants{versus} ({data['machine']['cpu']}, threads "
        f"{', '.join(map(str, counts))})"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
