"""``keras-edge export``: its arguments and what it prints. TensorFlow is imported when the
export runs, not when the command is configured."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

from keras_edge.exporter.errors import PartialExportError
from keras_edge.exporter.head_check import HEADS
from keras_edge.runtime.console import EXIT_OK, PER_HEAD_HELP, number_value, per_head, threshold_value
from keras_edge.runtime.errors import GateError
from keras_edge.runtime.report import REPORT_NAME

logger = logging.getLogger(__name__)


def configure(name: str, p: argparse.ArgumentParser) -> None:
    """Add the arguments of ``keras-edge export`` to ``p``."""
    _data_arguments(p)
    _decision_arguments(p)
    _variant_arguments(p)
    p.set_defaults(handler=_run_export)


def _data_arguments(p: argparse.ArgumentParser) -> None:
    """The model, the folder, the formats and the data files."""
    p.add_argument("model", type=Path, help=".keras or .h5 model file, or a SavedModel folder")
    add_custom_objects_argument(p)
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--formats", default="tflite,onnx", help="comma list of tflite, onnx")
    p.add_argument("--quantize", default=None, help="comma list of fp16, dynamic, int8, or all")
    p.add_argument("--calibration", type=Path, help="int8 calibration inputs (.npy/.npz/.csv)")
    p.add_argument("--validation", type=Path, help="parity inputs, with labels y for accuracy")
    p.add_argument(
        "--label-column",
        action="append",
        help="label column of CSV data files; for a model with several heads, HEAD=COLUMN once per "
        "head, the option repeated (an .npz holds y_<head> arrays instead of y)",
    )
    p.add_argument(
        "--feature-names",
        help="comma list of the model's feature names, in its input order, recorded so that "
        "predict matches CSV/Parquet columns by name (default: the header of the first CSV data "
        "file given; the other CSVs are matched to it by name)",
    )
    p.add_argument(
        "--require-data",
        action="store_true",
        help="refuse (exit 2) an export given neither --validation nor --calibration, instead of "
        "gating every variant on a synthetic probe set (a pass on it exits 0, with a warning)",
    )


def _decision_arguments(p: argparse.ArgumentParser) -> None:
    """The head, the threshold and its tuning, the decision inside the artifacts."""
    p.add_argument(
        "--threshold",
        action="append",
        help="decision threshold, rule p > threshold (default 0.5; comma list for multilabel)"
        + PER_HEAD_HELP,
    )
    p.add_argument(
        "--head",
        action="append",
        metavar="{" + ",".join(HEADS) + "}",
        help="what the output holds (default auto; for a model with several heads, NAME=HEAD once "
        "per head, the option repeated): auto reads a final sigmoid (binary, multilabel) or softmax "
        "(multiclass) from the model; declare binary (1 sigmoid unit), multilabel (k sigmoid "
        "units) or multiclass (k softmax units) where the model applies them out of keras-edge's "
        "sight (a custom layer), logit for logits, regression for values. A declaration must "
        "agree with the model's sigmoid/softmax; on a linear-looking output it is checked "
        "against the Keras model's outputs on the parity data (probabilities in [0, 1], softmax "
        "rows summing to 1, logits not all in [0, 1]): exit 2 where they contradict it",
    )
    p.add_argument(
        "--tune-threshold",
        metavar="OBJECTIVE",
        help="tune the threshold, for Keras and each variant on its own scores: f1, fbeta:B, "
        "youden, balanced-accuracy, mcc, precision>=X, recall>=X, cost:fp=A,fn=B",
    )
    p.add_argument(
        "--tune-data",
        type=Path,
        metavar="FILE",
        help="labelled data to tune on (default: --validation, which makes the report optimistic)",
    )
    p.add_argument(
        "--plot",
        type=Path,
        metavar="F.png",
        help="with --tune-threshold: draw the objective against the threshold for Keras and "
        "each variant (needs matplotlib)",
    )
    p.add_argument(
        "--with-decision",
        action="store_true",
        help="add a 'class' output to every artifact, decided in the graph (p > t, argmax); "
        "several heads: one 'class_NAME' output per head",
    )
    p.add_argument(
        "--min-confidence",
        action="append",
        metavar="C",
        help="multiclass: the class is -1 (unknown) unless the top probability exceeds C; "
        "--tune-threshold tunes it; for several heads, NAME=C once per multiclass head (or "
        "--threshold NAME=C)",
    )


def _variant_arguments(p: argparse.ArgumentParser) -> None:
    """Labels, the gate, int8 and the release folder."""
    p.add_argument(
        "--labels",
        action="append",
        help="comma list of class names; for a model with several heads, NAME=a,b,c once per "
        "head, the option repeated (--labels topic=news,sport,tech)",
    )
    p.add_argument(
        "--input-normalization",
        metavar="MEAN/STD",
        help="what an app does to 0-255 pixels before a float image input, (pixel - MEAN) / STD, "
        "written into the TFLite metadata for MediaPipe (127.5/127.5, 0/255, or one value per "
        "channel: 123.7,116.3,103.5/58.4,57.1,57.4); default: none when the model starts with a "
        "Rescaling/Normalization layer, else read off the data's range ([0,1]: 0/255, [-1,1]: "
        "127.5/127.5, wider: raw pixels)",
    )
    p.add_argument("--min-agreement", type=float, help="minimum label agreement for every variant")
    p.add_argument(
        "--int8-io",
        action="store_true",
        help="tflite-int8 with int8 input/output (integer-only targets); default float32 IO",
    )
    p.add_argument(
        "--allow-constant",
        action="store_true",
        help="export a model whose output is (nearly) constant on the parity data (exit 3 without)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="export into a non-empty folder that is not a previous export (files with the "
        "export's names are replaced, the others kept)",
    )
    p.add_argument(
        "--int8-fallback",
        choices=("auto", "none"),
        default="auto",
        help="an int8 variant that misses its gate: auto keeps the fewest layers in float that "
        "pass it (mixed precision, listed in the manifest); none leaves it failed (default auto)",
    )
    p.add_argument(
        "--unsafe",
        action="store_true",
        help="turn Keras safe mode off (allows Lambda layers; only for trusted files)",
    )


def add_custom_objects_argument(p: argparse.ArgumentParser) -> None:
    """``--custom-objects``, shared by every command that loads a user's Keras model."""
    p.add_argument(
        "--custom-objects",
        action="append",
        default=[],
        metavar="FILE.py|MODULE",
        help="import the user code the model needs (custom layers, losses, activations "
        "registered with @keras.saving.register_keras_serializable) before loading it: a .py "
        "file, or a dotted module name on the Python path; repeatable, imported in order. Keras "
        "safe mode stays on (see --unsafe); the manifest records each (a file by name and "
        "SHA-256). A missing or failing file or module exits 2 with nothing written",
    )


def _confidence(text: str) -> float:
    return number_value(text, "--min-confidence")


class _Progress:
    """One line per step on stderr, with the time since the export started. Nothing is printed
    before the first step, so a refused export leaves only its one-line error."""

    def __init__(self, header: str) -> None:
        self._t0 = time.perf_counter()
        self._header: str | None = header

    def __call__(self, step: int, total: int, message: str) -> None:
        if self._header is not None:
            sys.stderr.write(self._header + "\n")
            self._header = None
        now = time.perf_counter()
        sys.stderr.write(f"[{step}/{total}] {now - self._t0:5.1f}s  {message}\n")
        sys.stderr.flush()


def _read_data(args: argparse.Namespace) -> tuple[dict[str, Any], tuple[str, ...] | None]:
    """The data files, by role, and the feature names: --feature-names, else the first CSV's
    header; every other CSV is matched to those names by name, whatever its column order."""
    from keras_edge.runtime.batch.files import read_named

    names = tuple(n.strip() for n in args.feature_names.split(",")) if args.feature_names else None
    data: dict[str, Any] = {}
    for what in ("calibration", "validation", "tune_data"):
        path = getattr(args, what)
        if path is not None:
            label = per_head(args.label_column, "--label-column", str)
            x, y, found = read_named(path, label, what == "tune_data", names)
            names = names or found
            data[what] = x if what == "calibration" else (x, y)
    return data, names


def _options(args: argparse.Namespace, names: tuple[str, ...] | None) -> Any:
    from keras_edge.exporter.options import ExportOptions

    return ExportOptions.create(
        formats=[f.strip() for f in args.formats.split(",") if f.strip()],
        quantize=args.quantize, head=per_head(args.head, "--head", str) or "auto",
        threshold=per_head(args.threshold, "--threshold", threshold_value) if args.threshold else 0.5,
        labels=per_head(args.labels, "--labels", lambda text: text.split(",")),
        safe_mode=not args.unsafe,
        min_agreement=args.min_agreement, int8_io=args.int8_io, int8_fallback=args.int8_fallback,
        tune=args.tune_threshold, feature_names=names, require_data=args.require_data,
        with_decision=args.with_decision, plot=args.plot,
        min_confidence=per_head(args.min_confidence, "--min-confidence", _confidence),
        force=args.force, allow_constant=args.allow_constant,
        custom_objects=args.custom_objects, input_normalization=args.input_normalization,
        strict=False,  # the table first, then the ParityError (exit 3) below
    )  # fmt: skip


def _run_export(args: argparse.Namespace) -> int:
    from keras_edge.exporter.export import run
    from keras_edge.exporter.prepare import Data

    data, names = _read_data(args)
    options = _options(args, names)
    progress = _Progress(f"exporting {args.model} to {args.out}")
    try:
        # (under the console script, which captures what the converters print: -vv shows it)
        result = run(args.model, args.out, options, Data(data.get("calibration"),
                     data.get("validation"), data.get("tune_data")), progress)  # fmt: skip
    except (GateError, PartialExportError) as exc:  # written: show what was, then the error
        # (PartialExportError; ConstantOutputError wrote nothing; a failed gate is in the result)
        if not getattr(exc, "written", True):
            raise
        from keras_edge.exporter.result import ExportResult
        from keras_edge.runtime.manifest import Manifest

        sys.stdout.write(ExportResult.of(Manifest.read(args.out), args.out).table)
        raise
    sys.stdout.write(result.table)
    result.raise_for_gate()  # exit 3, naming each failed variant; the table is printed above
    sys.stdout.write(f"wrote {args.out / 'manifest.json'} and {args.out / REPORT_NAME}\n")
    return EXIT_OK
