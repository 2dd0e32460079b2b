"""Turn measurements into the terminal table, Markdown, the plot, and the ratios the project
holds the runtime to (stated met or missed, never adjusted)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# The runtime's targets (issue 4): ratio name -> (limit, "min" if the ratio must reach it).
OVERHEAD_LIMITS = {("onnx", 1): 1.5, ("tflite", 1): 2.0, ("onnx", 1024): 1.05, ("tflite", 1024): 1.05}


def _p50(results: list[dict[str, Any]], target: str, batch: int) -> float | None:
    for r in results:
        if r["target"] == target and r["batch_size"] == batch:
            return r["p50_us"]
    return None


def ratios(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The checks of issue 4, each with its measured value, limit and whether it is met."""
    results, startup, variants = data["results"], data["startup"], data["variants"]
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
            if run and raw and limit:
                out.append(
                    {
                        "check": f"batch {batch}: {vid} runtime / bare engine call",
                        "value": run / raw,
                        "limit": limit,
                        "kind": "overhead <=",
                        "met": run / raw <= limit,
                    }
                )
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


def render(data: dict[str, Any], markdown: bool = False) -> str:
    """Every table of a benchmark run, as plain text or Markdown."""
    h = "### " if markdown else ""
    parts = []
    machine = data["machine"]
    parts.append(
        f"{h}Machine: {machine['cpu']}, {machine['cores']} cores, Python {machine['python']}; "
        f"threads {data['config']['threads']}, {data['config']['seconds']} s per target and batch "
        f"size, inputs: {data['config']['data']}\n"
    )
    results = data["results"]
    for batch in sorted({r["batch_size"] for r in results}):
        base = _p50(results, "keras-predict", batch)
        rows = []
        for r in [r for r in results if r["batch_size"] == batch]:
            rows.append(
                [
                    r["target"],
                    f"{r['p50_us']:,.1f}",
                    f"{r['p90_us']:,.1f}",
                    f"{r['p99_us']:,.1f}",
                    f"{r['mean_us']:,.1f}",
                    f"{r['std_us']:,.1f}",
                    f"{r['n']:,}",
                    f"{r['throughput_per_s']:,.0f}",
                    f"{base / r['p50_us']:,.0f}x" if base else "-",
                ]
            )
        parts.append(f"{h}Batch size {batch} (microseconds per call)\n")
        parts.append(
            _table(
                ["target", "p50", "p90", "p99", "mean", "std", "n", "samples/s", "vs keras-predict"],
                rows,
                markdown,
            )
        )
    if data["startup"]:
        rows = [
            [s["target"], f"{s['load_s']:.3f}", f"{s['first_call_us']:,.0f}", f"{s['peak_rss_mb']:.0f}"]
            for s in data["startup"]
        ]
        parts.append(f"{h}Start-up in a fresh process\n")
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
        parts.append(f"{h}Variants: size and label agreement with Keras on the benchmark inputs\n")
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
        parts.append(f"{h}Targets (one run on a shared machine: ratios, not absolute times)\n")
        parts.append(_table(["check", "ratio", "target", ""], rows, markdown))
    return "\n".join(parts)


def plot(data: dict[str, Any], path: Path) -> None:
    """Latency against batch size per target (log axes), and the speed-up over the Keras
    baselines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = data["results"]
    batches = sorted({r["batch_size"] for r in results})
    targets = list(dict.fromkeys(r["target"] for r in results))
    runtime_targets = [t for t in targets if not t.startswith("keras-") and not t.endswith(":raw")]
    fig, axes = plt.subplots(1, 3, figsize=(19, 8))
    colors = plt.get_cmap("tab10")
    for _i, target in enumerate(targets):
        ys = [_p50(results, target, b) for b in batches]
        if target.startswith("keras-"):
            style = {
                "color": "black",
                "linestyle": ["-", "--", ":"][KERAS_ORDER.index(target)],
                "linewidth": 2,
            }
        else:
            vid = target.removesuffix(":raw")
            style = {
                "color": colors(runtime_targets.index(vid) % 10),
                "linestyle": ":" if target.endswith(":raw") else "-",
                "marker": "o",
                "markersize": 3,
            }
        axes[0].plot(batches, ys, label=target, **style)
    axes[0].set(
        xscale="log",
        yscale="log",
        xlabel="batch size (samples per call)",
        ylabel="median latency per call (microseconds)",
        title="Latency per call, p50",
    )
    axes[0].legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.13))
    for ax, baseline in ((axes[1], "keras-predict"), (axes[2], "keras-tf-function")):
        for target in runtime_targets:
            ys = [(_p50(results, baseline, b) or 0) / (_p50(results, target, b) or 1) for b in batches]
            ax.plot(
                batches,
                ys,
                marker="o",
                markersize=3,
                color=colors(runtime_targets.index(target) % 10),
                label=target,
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
    fig.suptitle(
        "keras-edge: exported variants vs the original Keras model "
        f"({data['machine']['cpu']}, threads {data['config']['threads']})"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


KERAS_ORDER = ["keras-predict", "keras-predict-on-batch", "keras-tf-function"]
