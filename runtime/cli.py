"""The device-side commands, ``keras-edge predict`` and ``keras-edge inspect``: numpy only."""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import sys
from pathlib import Path
from typing import TextIO

import numpy as np

from runtime.classifier import load
from runtime.data import read_data
from runtime.manifest import Manifest
from runtime.report import format_table

logger = logging.getLogger(__name__)


def add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="classify inputs with an exported variant (no TensorFlow)")
    p.add_argument("folder", type=Path, help="folder holding manifest.json")
    p.add_argument("input", type=Path, help="features: .npy, .npz (x) or .csv (header row)")
    p.add_argument("--variant", help="variant id (default: the manifest's default)")
    p.add_argument("--proba", action="store_true", help="print probabilities only, no classes")
    p.add_argument("--format", choices=("csv", "json"), default="csv", help="output format")
    p.add_argument("--output", type=Path, help="write here instead of stdout")
    p.add_argument("--label-column", help="CSV column to ignore as a label")
    p.add_argument("--device", default="cpu", help="cpu, or an ONNX Runtime accelerator (cuda, ...)")
    p.add_argument("--threads", type=int, help="engine threads")
    p.set_defaults(handler=run_predict)


def add_inspect(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="show an export's variants, sizes, threshold and parity")
    p.add_argument("folder", type=Path, help="folder holding manifest.json")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.set_defaults(handler=run_inspect)


def _columns(manifest: Manifest) -> list[str]:
    head = manifest.head
    if head.kind == "binary":
        return ["probability"]
    prefix = "value" if head.kind == "regression" else "p"
    return [f"{prefix}_{label}" for label in head.labels]


def run_predict(args: argparse.Namespace) -> int:
    x, _ = read_data(args.input, label_column=args.label_column)
    clf = load(args.folder, variant=args.variant, device=args.device, threads=args.threads)
    head = clf.head
    values = clf.predict(x) if head.kind == "regression" else clf.predict_proba(x)
    labels = None if (args.proba or head.kind == "regression") else clf.predict(x)
    columns = _columns(clf.manifest)
    if labels is not None:
        columns += ["class"] if labels.ndim == 1 else [f"class_{lab}" for lab in head.labels]
    rows = []
    for i in range(len(values)):
        row = [float(v) for v in values[i]]
        if labels is not None:
            row += [int(v) for v in np.atleast_1d(labels[i])]
        rows.append(row)
    buffer = io.StringIO()
    if args.format == "json":
        json.dump(
            {
                "variant": clf.variant,
                "threshold": clf.threshold,
                "decision_rule": clf.manifest.decision_rule,
                "columns": columns,
                "rows": rows,
            },
            buffer,
            indent=2,
        )
        buffer.write("\n")
    else:
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        # 9 significant digits round-trip a float32 exactly.
        writer.writerows([[f"{v:.9g}" if isinstance(v, float) else v for v in r] for r in rows])
    _emit(buffer.getvalue(), args.output)
    logger.info("predicted %d samples with %s (threshold %s)", len(rows), clf.variant, clf.threshold)
    return 0


def _emit(text: str, path: Path | None, stream: TextIO | None = None) -> None:
    if path is None:
        (stream or sys.stdout).write(text)
    else:
        path.write_text(text, encoding="utf-8")


def run_inspect(args: argparse.Namespace) -> int:
    manifest = Manifest.read(args.folder)
    if args.json:
        sys.stdout.write(manifest.to_json())
        return 0
    head, spec = manifest.head, manifest.input
    data = next((v.parity.data for v in manifest.variants.values() if v.parity), "not checked")
    sys.stdout.write(
        f"model     {manifest.model.name} (sha256 {manifest.model.source_sha256[:12]}..., "
        f"keras {manifest.model.keras_version}, tensorflow {manifest.model.tensorflow_version})\n"
        f"input     {spec.name} {list(spec.shape)} {spec.dtype}\n"
        f"head      {head.kind}, {head.output} output, labels {list(head.labels)}\n"
        f"decision  {manifest.decision_rule} with threshold {head.threshold}\n"
        f"parity on {data}\n"
        f"default   {manifest.default_variant} (marked *)\n\n"
    )
    sys.stdout.write(format_table(manifest))
    return 0
