"""The per-variant parity report: one set of rows for the terminal table and for parity.json."""

from __future__ import annotations

import json
from typing import Any

from keras_edge.runtime.manifest import FORMATS, PRECISIONS, Manifest, Variant

REPORT_NAME = "parity.json"


def export_order(v: Variant) -> tuple[int, int, str]:
    """tflite before onnx, fp32 first: the order of the export plan."""
    return (
        FORMATS.index(v.format),
        PRECISIONS.index(v.precision) if v.precision in PRECISIONS else 99,
        v.id,
    )


PARITY_COLUMNS = (
    "max_abs_diff", "mean_abs_diff", "label_agreement", "flips", "near_ties", "near_tie_band",
    "flips_near_threshold", "batch_flips", "batch_max_abs_diff", "accuracy", "reference_accuracy",
    "tolerance", "min_agreement", "passed",
)  # fmt: skip


def variant_rows(manifest: Manifest) -> list[dict[str, Any]]:
    """One row per variant: size, ratio to the fp32 file of its format, parity, gate."""
    rows = []
    for v in sorted(manifest.variants.values(), key=export_order):
        fp32 = manifest.variants.get(f"{v.format}-fp32")
        row: dict[str, Any] = {
            "variant": v.id,
            "default": v.id == manifest.default_variant,
            "bytes": v.bytes,
            "ratio_to_fp32": round(v.bytes / fp32.bytes, 4) if fp32 else None,
            "threshold": v.threshold,
            "failures": [] if v.parity is None else list(v.parity.failures),
        }
        for key in PARITY_COLUMNS:
            row[key] = None if v.parity is None else getattr(v.parity, key)
        row["keras_accuracy"] = row.pop("reference_accuracy")
        row["float_layers"] = None if v.fallback is None else len(v.fallback.float_layers)
        row["fallback"] = None if v.fallback is None else v.fallback.to_dict()
        rows.append(row)
    return rows


def report_json(manifest: Manifest) -> str:
    """``parity.json``: the table's rows plus what they were measured on."""
    data = next((v.parity.data for v in manifest.variants.values() if v.parity), None)
    body = {
        "data": data,
        "near_threshold_band": next(
            (v.parity.near_threshold_band for v in manifest.variants.values() if v.parity), None
        ),
        "calibration": None if manifest.calibration is None else manifest.calibration.to_dict(),
        "default_variant": manifest.default_variant,
        "refused": dict(manifest.refused),
        "variants": variant_rows(manifest),
    }
    return json.dumps(body, sort_keys=True, indent=2, allow_nan=False) + "\n"


def _cell(value: Any, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "pct":
        return f"{value:.2%}"
    if kind == "sci":
        return f"{value:.2e}"
    if kind == "acc":
        return f"{value:.4f}"
    if kind == "ratio":
        return f"{value:.2f}x"
    if kind == "int":
        return f"{value:,}"
    if kind == "thr":  # one threshold, or one per label; for several heads, one group per head
        return threshold_text(value)
    if kind == "bool":
        return "yes" if value else "NO"
    return str(value)


def heads_threshold(value: Any) -> str:
    """Several heads' thresholds, one per head: ``0.3|-|0.5,0.6``."""
    return "|".join(map(threshold_text, value))


def threshold_text(value: Any) -> str:
    """A threshold as the table prints it: ``0.5``, ``0.3,0.6`` per label, ``-`` for none (a
    regression head, a plain argmax); several heads' as ``0.5|-|0.3,0.6`` (see
    :func:`format_table`, which knows which it is)."""
    if value is None:
        return "-"
    values = value if isinstance(value, (list, tuple)) else [value]
    return ",".join(f"{v:.6g}" for v in values)


COLUMNS = [
    ("variant", "variant", "str"),
    ("bytes", "bytes", "int"),
    ("vs fp32", "ratio_to_fp32", "ratio"),
    ("threshold", "threshold", "thr"),
    ("max diff", "max_abs_diff", "sci"),
    ("agreement", "label_agreement", "pct"),
    ("flips", "flips", "int"),
    ("near-ties", "near_ties", "int"),
    ("near t", "flips_near_threshold", "int"),
    ("batch flips", "batch_flips", "int"),
    ("accuracy", "accuracy", "acc"),
    ("keras acc", "keras_accuracy", "acc"),
    ("float layers", "float_layers", "int"),
    ("passed", "passed", "bool"),
]
# Float layers named per variant under the table; the manifest lists them all.
LISTED_FLOAT_LAYERS = 8


def text_table(
    header: list[str], rows: list[list[str]], markdown: bool = False, right: bool = False
) -> str:
    """The one table renderer: columns two spaces apart with a rule under the header, left
    aligned (``right``: every column but the first right aligned, for numbers); or a Markdown
    table (``markdown``)."""
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines) + "\n"
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(r: list[str]) -> str:
        cells = [c.rjust(w) if right and i else c.ljust(w)
                 for i, (c, w) in enumerate(zip(r, widths, strict=True))]  # fmt: skip
        return "  ".join(cells) if right else "  ".join(cells).rstrip()

    lines = [line(r) for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines) + "\n"


def format_table(manifest: Manifest) -> str:
    """The rows as a plain-text table; the default variant is marked with ``*``."""
    rows = []
    several = bool(manifest.head.parts)  # one threshold per head: 0.3|-|0.5,0.6
    for row in variant_rows(manifest):
        cells = [
            heads_threshold(row[key]) if several and kind == "thr" else _cell(row[key], kind)
            for _, key, kind in COLUMNS
        ]
        cells[0] += "*" if row["default"] else ""
        rows.append(cells)
    refused = "".join(f"{vid}: not written: {why}\n" for vid, why in sorted(manifest.refused.items()))
    table = text_table([title for title, _, _ in COLUMNS], rows)
    return table + kernel_lines(manifest) + fallback_lines(manifest) + refused + larger_note(manifest)


def kernel_lines(manifest: Manifest) -> str:
    """One line per full-int8 TFLite variant whose ops XNNPACK does not all take in int8: what
    was kept in float for the kernels (not for the decisions), and the partitions."""
    lines = []
    for v in sorted(manifest.variants.values(), key=export_order):
        k = v.kernels
        if k is None or not (k.kept_float or k.left_out):
            continue
        line = f"{v.id}: {k.engine} runs it in {k.partitions} partition(s)"
        if k.kept_float:
            kept = ", ".join(f"{n} {op}" for op, n in sorted(k.kept_float.items()))
            line += (
                f"; kept in float because {k.engine} has no int8 kernel for them: {kept} "
                f"(all-int8 split it into {k.int8_partitions})"
            )
        if k.left_out:
            left = ", ".join(f"{n} {op}" for op, n in sorted(k.left_out.items()))
            line += f"; left to LiteRT's built-in kernels: {left}"
        lines.append(line + "\n")
    return "".join(lines)


def larger_note(manifest: Manifest) -> str:
    """A line for each quantized variant whose file is larger than its format's fp32 one: on a
    tiny model the bookkeeping of quantization outweighs the bytes it saves."""
    lines = []
    for row in variant_rows(manifest):
        ratio = row["ratio_to_fp32"]
        if (row["fallback"] or {}).get("passed"):
            continue  # larger because layers stay float: its fallback line gives the sizes
        if ratio is not None and ratio > 1.005 and not row["variant"].endswith("-fp32"):
            lines.append(
                f"{row['variant']} is {ratio:.2f}x the size of its fp32 file: the weights are too "
                f"few, or too few are quantized, for the saving to pay for what quantization "
                f"adds (scales, zero points, quantize/dequantize or cast ops); it is for speed, "
                f"GPUs or integer-only hardware, not size"
            )
    return "".join(line + "\n" for line in lines)


def fallback_lines(manifest: Manifest) -> str:
    """One line per int8 variant that missed its gate and was tried in mixed precision."""
    lines = []
    for v in sorted(manifest.variants.values(), key=export_order):
        f = v.fallback
        if f is None:
            continue
        head = (
            f"{v.id}: full int8 agreed {f.int8_label_agreement:.2%} and missed its gate; mixed "
            f"precision tried {len(f.attempts)} candidate(s)"
        )
        if not f.passed:
            best = max(
                (a for a in f.attempts if a.label_agreement is not None),
                key=lambda a: (a.label_agreement, -(a.max_abs_diff or 0.0)),
                default=None,
            )
            tail = (
                ""
                if best is None
                else f" (best: {best.label_agreement:.2%}, max diff {best.max_abs_diff:.3g}, "
                f"with {best.float_groups} layer group(s) in float)"
            )
            lines.append(f"{head}, none passed{tail}: the full-int8 file is kept\n")
            continue
        names = ", ".join(f.float_layers[:LISTED_FLOAT_LAYERS])
        more = len(f.float_layers) - LISTED_FLOAT_LAYERS
        names += f" and {more} more (the manifest lists all)" if more > 0 else ""
        lines.append(
            f"{head}; it passes with {len(f.float_layers)} layer(s) in float ({f.float_ops} of "
            f"{f.ops} ops), {v.bytes:,} bytes against {f.int8_bytes:,} in full int8: {names}\n"
        )
    return "".join(lines)


def calibration_summary(manifest: Manifest) -> str:
    """One line on the int8 calibration and how much of the parity data it covers."""
    info = manifest.calibration
    if info is None:
        return ""
    constant = f"; constant features {list(info.constant_features)}" if info.constant_features else ""
    return (
        f"calibration: {info.samples} samples; {info.outside_fraction:.2%} of the {info.data} "
        f"values outside the calibrated range (worst feature {info.worst_feature}: "
        f"{info.worst_feature_outside:.2%}); feature ranges differ by {info.range_ratio:.3g}x"
        f"{constant}\n"
    )


def gate_summary(manifest: Manifest) -> str:
    """One line on what the gate could resolve with the data it got: one flip's weight, the
    flips each minimum allows, and the near-tie band of each precision."""
    checked = [v for v in manifest.variants.values() if v.parity is not None]
    if not checked or manifest.head.kind == "regression":
        return ""
    n = checked[0].parity.n  # type: ignore[union-attr]
    if n == 0:
        return "gate: no samples, it proves nothing\n"
    needs: dict[float, list[str]] = {}
    bands: dict[float, list[str]] = {}
    for v in sorted(checked, key=export_order):
        parity = v.parity
        assert parity is not None
        needs.setdefault(parity.min_agreement, [])
        if v.precision not in needs[parity.min_agreement]:
            needs[parity.min_agreement].append(v.precision)
        if parity.near_tie_band is not None:
            bands.setdefault(parity.near_tie_band, [])
            if v.precision not in bands[parity.near_tie_band]:
                bands[parity.near_tie_band].append(v.precision)
    minimums = ", ".join(
        f"{'/'.join(p)} {need:.2%} ({int((1 - need) * n + 1e-9)} allowed)"
        for need, p in sorted(needs.items(), reverse=True)
    )
    ties = ", ".join(f"{'/'.join(p)} {band:.2g}" for band, p in sorted(bands.items()))
    line = f"gate: {n} samples, one flip is {1 / n:.2%}; flips allowed: {minimums}"
    if ties:
        line += f"; near-ties (flips this close to the threshold, not counted): {ties}"
    return synthetic_note(manifest) + line + "\n"


def synthetic_note(manifest: Manifest) -> str:
    """A line saying that the gate ran on synthetic inputs, not the user's data; "" otherwise."""
    parity = next((v.parity for v in manifest.variants.values() if v.parity is not None), None)
    if parity is None or not parity.synthetic:
        return ""
    return (
        f"gate: on SYNTHETIC inputs only ({parity.data}): 'passed' proves the conversion on "
        f"those inputs, not the decisions on yours; export with --validation FILE to gate on "
        f"your data (--require-data refuses an export without it)\n"
    )
