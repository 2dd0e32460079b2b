"""``export --plot F.png``: the tuning objective against the threshold, for Keras and each
variant on its own scores, the chosen threshold of each marked. Needs matplotlib."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

import numpy as np

from keras_edge.exporter.tuning import Plan, curve, problems
from keras_edge.runtime.errors import UsageError

logger = logging.getLogger(__name__)


def matplotlib_available() -> bool:
    """True when a plot can be drawn here (matplotlib importable, not blocked)."""
    try:
        return importlib.util.find_spec("matplotlib") is not None
    except ValueError:  # in sys.modules as None: import blocked
        return False


def check(path: Path | None, tune: str | None) -> None:
    """Refuse a plot that cannot be drawn, before anything is converted."""
    if path is None:
        return
    if tune is None:
        raise UsageError(
            f"Expected --tune-threshold with --plot (it draws the tuning objective), got --plot "
            f"{path} alone"
        )
    if path.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise UsageError(f"Expected a .png, .svg or .pdf file for --plot, got {str(path)!r}")
    if not path.parent.is_dir():
        raise UsageError(f"Expected --plot in an existing folder, got {str(path)!r}")
    if not matplotlib_available():
        raise UsageError(
            f"--plot needs matplotlib: pip install matplotlib (or keras-edge[bench]); got --plot "
            f"{path}"
        )


def draw(plan: Plan, path: Path, labels: tuple[str, ...] = ()) -> None:
    """One panel per tuned threshold (one per label for multilabel): the objective at every
    candidate cut for Keras (black) and each variant, the chosen cut of each marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_name = {
        name: list(zip(problems(plan.kind, scores, plan.y, name), results, strict=True))
        for name, (scores, results) in plan.scores.items()
    }
    panels = len(per_name["keras"])
    # Top row: the whole range; bottom row: around the chosen thresholds, where variants differ.
    fig, axes = plt.subplots(2, panels, figsize=(8 * panels, 9.5), squeeze=False)
    colors = plt.get_cmap("tab10")
    objective = plan.objective
    for k in range(panels):
        chosen_cuts = [entries[k][1].threshold for entries in per_name.values()]
        low, high = min(chosen_cuts), max(chosen_cuts)
        pad = max(0.05, (high - low) * 0.5)
        for row, ax in enumerate(axes[:, k]):
            for i, (name, entries) in enumerate(per_name.items()):
                (scores, y, _), chosen = entries[k]
                cuts, values = curve(scores, y, objective)
                keras = name == "keras"
                color = "black" if keras else colors((i - 1) % 10)
                style: dict[str, Any] = (
                    {"linewidth": 3.5, "alpha": 0.35, "zorder": 1}  # under the variants
                    if keras
                    else {"linewidth": 1.1, "alpha": 0.9, "zorder": 2}
                )
                label = f"{name}: t={chosen.threshold:.4g}, value {chosen.value:.4g}"
                ax.step(cuts, values, where="mid", color=color, label=label, **style)
                ax.plot([chosen.threshold], [chosen.value], marker="o" if keras else "D",
                        markersize=9 if keras else 6, color=color, zorder=4,
                        markeredgecolor="white")  # fmt: skip
            what = "minimum confidence" if plan.kind == "multiclass" else "threshold"
            if not isinstance(plan.kind, str):  # several heads: one panel per tuned cut
                head = per_name["keras"][k][1].head
                what = f"threshold of head {head!r} (its minimum confidence for a softmax)"
            if plan.kind == "multilabel":
                what += f", label {labels[k] if k < len(labels) else k}"
            ax.axvline(0.5, color="grey", linewidth=0.8, linestyle=":")
            ax.grid(True, alpha=0.3)
            better = "lower" if objective.kind == "cost" else "higher"
            ax.set(ylabel=f"{objective.text} ({better} is better)", xlabel=f"{what} t (rule p > t)")
            if row == 0:
                ax.set(xlim=(0, 1), title=f"{objective.text} against the {what}")
            else:
                window = (max(0.0, low - pad), min(1.0, high + pad))
                seen = [v for name, entries in per_name.items()
                        for c, v in zip(*curve(*entries[k][0][:2], objective), strict=True)
                        if window[0] <= c <= window[1] and np.isfinite(v)]  # fmt: skip
                if seen:
                    span = max(seen) - min(seen) or 1e-3
                    ax.set_ylim(min(seen) - 0.05 * span, max(seen) + 0.05 * span)
                ax.set(xlim=window, title="around the chosen thresholds (markers)")
                ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
    caveat = " (tuned and shown on the same data: optimistic)" if plan.optimistic else ""
    fig.suptitle(f"keras-edge: threshold tuning on {plan.data}{caveat}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    logger.info("plotted %s against the threshold to %s", objective.text, path)
