"""A zoo of small, seeded Keras models of the kinds people ship, each with its data.

Every builder returns a :class:`Case`: a compiled model trained for a few seconds (so that its
outputs vary across inputs: a parity check on a model that answers one constant proves
nothing), calibration inputs drawn from its training data, and a held-out validation split.
Data is generated with numpy or taken from the datasets scikit-learn ships (``load_digits``,
``load_breast_cancer``): nothing is downloaded. TensorFlow and scikit-learn are imported only
when a case is built. The data lives in :mod:`~keras_edge.benchmarks.zoo_data`, the builders in
:mod:`~keras_edge.benchmarks.zoo_models`.

    from keras_edge.benchmarks import zoo
    case = zoo.build("cnn")  # or, from a shell: keras-edge zoo cnn build/cnn
    exporter.export(case.model, "dist", quantize="all", calibration=case.x_calib,
                    validation=(case.x_val, case.y_val), head=case.head)
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from keras_edge.benchmarks import zoo_backbones, zoo_models
from keras_edge.benchmarks.zoo_data import Case, Inputs, build_case

logger = logging.getLogger(__name__)

CASES: dict[str, Callable[[], Case]] = {
    "mlp": zoo_models.mlp,
    "cnn": zoo_models.cnn,
    "mobilenetv3small": zoo_models.mobilenetv3small,
    "two-inputs": zoo_models.two_inputs,
    "normalization": zoo_models.normalization,
    "rescaling": zoo_models.rescaling,
    "text-embedding": zoo_models.text_embedding,
    "text-gru": zoo_models.text_gru,
    "text-lstm": zoo_models.text_lstm,
    "multilabel": zoo_models.multilabel,
    "multilabel-normalized": zoo_models.multilabel_normalized,
    "multiclass": zoo_models.multiclass,
    "regression": zoo_models.regression,
    "logit": zoo_models.logit,
}


def build(name: str) -> Case:
    """Build, train and return the case ``name`` (one of :data:`CASES`)."""
    return build_case(CASES, name)


def save(case: Case, folder: str | Path) -> Path:
    """Write ``model.keras``, ``calib.npz`` and ``val.npz`` (``x`` and ``y``; one array per input
    name instead of ``x`` for a model with several inputs) into ``folder``: what
    ``keras-edge export`` and ``keras-edge bench`` take on the command line."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    def arrays(x: Inputs) -> dict[str, np.ndarray]:
        return dict(x) if isinstance(x, dict) else {"x": x}

    np.savez(folder / "calib.npz", **arrays(case.x_calib))
    np.savez(folder / "val.npz", **arrays(case.x_val), y=case.y_val)
    case.model.save(folder / "model.keras")
    return folder / "model.keras"


def configure(name: str, p: argparse.ArgumentParser) -> None:
    """Add the arguments of ``keras-edge zoo NAME DIR`` to ``p``."""
    names = [*CASES, *zoo_backbones.CASES]  # the backbones train for minutes: not in CASES
    p.add_argument("name", choices=names, metavar="NAME", help=f"the case: {', '.join(names)}")
    p.add_argument("folder", type=Path, help="where to write model.keras, calib.npz and val.npz")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Build the case and save it for the command line."""
    make = zoo_backbones.build if args.name in zoo_backbones.CASES else build
    path = save(make(args.name), args.folder)
    print(f"wrote {path}, {args.folder / 'calib.npz'} and {args.folder / 'val.npz'}")
    return 0


__all__ = ["CASES", "Case", "build", "save"]
