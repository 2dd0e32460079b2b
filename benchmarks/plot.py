"""``keras-edge bench --plot F.png``: latency against batch size per target and thread count (log
axes), and, where Keras was measured, the speed-up of each runtime target over the Keras
baselines. The one benchmark module that imports matplotlib, and only when a plot is drawn."""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keras_edge.benchmarks.report import KERAS_ORDER, is_keras, p50

logger = logging.getLogger(__name__)

MARKERS = "os^Dvx*"


def matplotlib_available() -> bool:
    """True when ``--plot`` can work here (matplotlib importable, not blocked)."""
    try:
        return importlib.util.find_spec("matplotlib") is not None
    except ValueError:  # in sys.modules as None: import blocked
        return False


@dataclass(frozen=True)
class Layout:
    """What a run's results hold, in the order they were measured: one line per (target,
    thread count)."""

    batches: list[int]
    lines: list[tuple[str, int | None]]
    counts: list[int | None]  # thread counts
    variants: list[str]  # variant ids, without ":raw"
    keras: list[str]  # the Keras targets measured, in KERAS_ORDER
    baselines: list[str]  # the Keras targets that get a speed-up panel

    @classmethod
    def of(cls, results: list[dict[str, Any]]) -> Layout:
        lines = list(dict.fromkeys((r["target"], r.get("threads")) for r in results))
        keras = [k for k in KERAS_ORDER if any(t == k for t, _ in lines)]
        return cls(
            batches=sorted({r["batch_size"] for r in results}),
            lines=lines,
            counts=list(dict.fromkeys(t for _, t in lines)),
            variants=list(dict.fromkeys(t.removesuffix(":raw") for t, _ in lines if not is_keras(t))),
            keras=keras,
            baselines=[k for k in ("keras-predict", "keras-tf-function") if k in keras],
        )

    def label(self, target: str, threads: int | None) -> str:
        if is_keras(target) or len(self.counts) == 1:
            return target
        return f"{target} @{threads}"

    def marker(self, threads: int | None) -> dict[str, Any]:
        """Marker and transparency of a thread count: the first one drawn solid."""
        first = self.counts.index(threads) == 0
        return {
            "marker": MARKERS[self.counts.index(threads) % len(MARKERS)],
            "markersize": 4,
            "alpha": 1.0 if first else 0.6,
        }


def plot(data: dict[str, Any], path: Path) -> None:
    """Write the latency panel and one speed-up panel per Keras baseline to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = data["results"]
    layout = Layout.of(results)
    panels = 1 + len(layout.baselines)
    fig, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 8), squeeze=False)
    axes = axes[0]
    colors = plt.get_cmap("tab10")
    _latency(axes[0], results, layout, colors)
    for ax, baseline in zip(axes[1:], layout.baselines, strict=True):
        _speedup(ax, results, layout, colors, baseline)
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        ax.set_xticks(layout.batches, [str(b) for b in layout.batches])
        ax.tick_params(axis="x", which="minor", labelbottom=False)
    versus = " vs the original Keras model" if layout.keras else ""
    fig.suptitle(
        f"keras-edge: exported variants{versus} ({data['machine']['cpu']}, threads "
        f"{', '.join(map(str, layout.counts))})"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _latency(ax: Any, results: list[dict[str, Any]], layout: Layout, colors: Any) -> None:
    """p50 per call against batch size, one line per target and thread count: Keras in black,
    each variant in its colour, its bare call dotted."""
    for target, threads in layout.lines:
        ys = [p50(results, target, b, threads) for b in layout.batches]
        if is_keras(target):
            style = {
                "color": "black",
                "linestyle": ["-", "--", ":"][KERAS_ORDER.index(target)],
                "linewidth": 2,
            }
        else:
            style = {
                "color": colors(layout.variants.index(target.removesuffix(":raw")) % 10),
                "linestyle": ":" if target.endswith(":raw") else "-",
                **layout.marker(threads),
            }
        ax.plot(layout.batches, ys, label=layout.label(target, threads), **style)
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="batch size (samples per call)",
        ylabel="median latency per call (microseconds)",
        title="Latency per call, p50",
    )
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.13))


def _speedup(ax: Any, results: list[dict[str, Any]], layout: Layout, colors: Any, baseline: str) -> None:
    """Each runtime target's speed-up over ``baseline`` (a Keras target) against batch size."""
    runtime_lines = [(t, n) for t, n in layout.lines if not is_keras(t) and not t.endswith(":raw")]
    for target, threads in runtime_lines:
        ys = [
            (p50(results, baseline, b) or 0) / (p50(results, target, b, threads) or 1)
            for b in layout.batches
        ]
        ax.plot(
            layout.batches,
            ys,
            **layout.marker(threads),
            color=colors(layout.variants.index(target) % 10),
            label=layout.label(target, threads),
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
