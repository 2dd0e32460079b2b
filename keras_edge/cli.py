"""``keras-edge``: the one console script, a dispatcher over the three packages.

It imports a subcommand's package only when that subcommand runs: ``predict``, ``inspect`` and
``verify`` import the runtime alone (numpy + one engine), ``export`` the exporter (TensorFlow,
when it runs), ``bench`` and the other commands the benchmarks: ``example`` (the seed model of the
README's main job), ``zoo`` (one model of the zoo), ``bench-coverage``, ``bench-soak`` and
``bench-stream``. So a device with ``keras-edge[onnx]`` or ``keras-edge[litert]`` never loads
exporter or benchmark code.

Exit codes (a release build relies on them): 0 success; 1 an unexpected failure (a bug to
report); 2 bad usage or bad input, one line on stderr and nothing half-written; 3 a parity,
verification or regression gate failed, with the report written and naming what failed.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence

from keras_edge import __version__
from keras_edge.runtime.console import Parser, execute

DESCRIPTION = (
    "Export a Keras classifier to TFLite and ONNX, prove every variant decides like Keras, and "
    "run it on a device without TensorFlow."
)

# Subcommands that may import TensorFlow, and those whose converter output the command captures
# (bench captures its own, only with --keras: without it, it never imports the exporter).
TENSORFLOW_COMMANDS = {"export", "bench", "example", "zoo", "bench-coverage"}
CAPTURED = {"export", "example", "zoo", "bench-coverage"}

# Subcommand -> (the module that configures and runs it, one line of help).
COMMANDS = {
    "export": (
        "keras_edge.exporter.cli",
        "convert a Keras model to TFLite/ONNX variants and prove each one (needs TensorFlow)",
    ),
    "predict": ("keras_edge.runtime.commands.predict", "classify inputs with an exported variant"),
    "inspect": (
        "keras_edge.runtime.commands.inspect",
        "show an export's variants, sizes, thresholds and parity",
    ),
    "verify": (
        "keras_edge.runtime.commands.verify",
        "check that this machine's engines still decide as the export did, on its golden set",
    ),
    "bench": (
        "keras_edge.benchmarks.cli",
        "time every variant through the runtime and the bare engine (and Keras with --keras)",
    ),
    "example": (
        "keras_edge.benchmarks.example",
        "train (or reuse) the bundled seed model on two moons and write its data files (needs "
        "TensorFlow)",
    ),
    "zoo": (
        "keras_edge.benchmarks.zoo",
        "build, train and save one model of the zoo with its calibration and validation data "
        "(needs TensorFlow and scikit-learn)",
    ),
    "bench-coverage": (
        "keras_edge.benchmarks.coverage",
        "export every model of the zoo to all 8 variants; tabulate parity and speed",
    ),
    "bench-soak": (
        "keras_edge.benchmarks.soak",
        "share one classifier per variant between threads for many calls; check every answer "
        "and the resident memory",
    ),
    "bench-stream": (
        "keras_edge.benchmarks.stream_bench",
        "time keras-edge predict over millions of rows against the bare engine, with peak RSS",
    ),
}


def build_parser(command: str | None) -> Parser:
    """The parser, with the full arguments of ``command`` only: configuring a subcommand
    imports its package, and only the one that runs is imported."""
    parser = Parser(prog="keras-edge", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"keras-edge {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    for name, (module, text) in COMMANDS.items():
        p = sub.add_parser(name, help=text, description=text)
        if name == command:
            importlib.import_module(module).configure(name, p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    if command in TENSORFLOW_COMMANDS:  # a command's choice, not a library's: before TensorFlow
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # is imported, its C++ notices off
        os.environ.setdefault("KERAS_BACKEND", "tensorflow")  # the converters need TF tensors
    args = build_parser(command).parse_args(argv)
    if command not in CAPTURED:
        return execute(args)
    from keras_edge.exporter._tf import capturing

    with capturing():  # what the converters and Keras print goes to the debug log (-vv)
        return execute(args)
