"""``keras-edge inspect DIR``: an export's model, input, head, decision rule, variants, sizes,
thresholds and parity, as a table or (``--json``) the manifest itself. Reads the manifest
only: no engine, no TensorFlow, no offline scoring."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from keras_edge.runtime.console import EXIT_OK
from keras_edge.runtime.manifest import Manifest
from keras_edge.runtime.report import export_order, format_table, heads_threshold, threshold_text


def configure(name: str, p: argparse.ArgumentParser) -> None:
    """Add the arguments of ``inspect`` to ``p``."""
    p.add_argument("folder", type=Path, help="folder holding manifest.json")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.set_defaults(handler=run_inspect)


def run_inspect(args: argparse.Namespace) -> int:
    """Print the manifest: a summary and the variants' table, or the JSON itself."""
    manifest = Manifest.read(args.folder)
    if args.json:
        sys.stdout.write(manifest.to_json())
        return EXIT_OK
    head, spec = manifest.head, manifest.input
    own = (
        " (tuned variants decide with their own: see the table)"
        if any(v.threshold != head.threshold for v in manifest.variants.values()) else ""
    )  # fmt: skip
    features = "" if spec.features is None else f", features {','.join(spec.features)} (by name)"
    parity = next((v.parity for v in manifest.variants.values() if v.parity), None)
    data = "not checked" if parity is None else parity.data
    if parity is not None and parity.synthetic:
        data += " (SYNTHETIC inputs: the gate proved the conversion, not decisions on your data)"
    info = manifest.golden
    golden = (
        "none (exported before keras-edge 0.2: export again to verify on a device)"
        if info is None
        else f"{info.file}, {info.n} rows ({info.nearest} nearest the decision) for keras-edge verify"
    )
    inputs = "".join(
        f"input     {s.name} {list(s.shape)} {s.dtype}{features if s is spec else ''}\n"
        for s in manifest.inputs
    )
    heads = "".join(
        f"head      {f'{h.name}: ' if h.name else ''}{h.kind}, {h.output} output, labels "
        f"{list(h.labels)}, threshold {threshold_text(h.threshold)}\n"
        for h in head.heads
    )
    structure = f" (predict answers a {head.structure} by head name)" if head.parts else ""
    sys.stdout.write(
        f"model     {manifest.model.name} (sha256 {manifest.model.source_sha256[:12]}..., "
        f"keras {manifest.model.keras_version}, tensorflow {manifest.model.tensorflow_version})\n"
        f"{inputs}{heads}"
        f"decision  {manifest.decision_rule} with threshold "
        f"{heads_threshold(head.threshold) if head.parts else threshold_text(head.threshold)}"
        f"{own}{structure}\n"
        f"parity on {data}\n"
        f"default   {manifest.default_variant} (marked *)\n"
        f"golden    {golden}\n\n"
    )
    sys.stdout.write(format_table(manifest))
    sys.stdout.write(_tuning_summary(manifest))
    return EXIT_OK


def _tuning_summary(manifest: Manifest) -> str:
    """The tuned thresholds and objective values, for Keras and each variant."""
    tuning = manifest.tuning
    if not tuning:
        return ""

    def cell(labels: list[dict]) -> str:
        return ", ".join(
            f"{r['head'] + ': ' if 'head' in r else ''}t={r['threshold']:.6g} value={r['value']:.4f}"
            for r in labels
        )

    caveat = " (tuned and reported on the same data: optimistic)" if tuning.get("optimistic") else ""
    lines = [f"\nthreshold tuned for {tuning['objective']} on {tuning['data']}{caveat}",
             f"  keras  {cell(tuning['keras'])}"]  # fmt: skip
    for vid, v in sorted(manifest.variants.items(), key=lambda item: export_order(item[1])):
        if v.tuning:
            lines.append(f"  {vid}  {cell(v.tuning['labels'])}")
    return "\n".join(lines) + "\n"
