"""The zoo's data and its :class:`Case`: generated with numpy or taken from the datasets
scikit-learn ships (``load_digits``, ``load_breast_cancer``); nothing is downloaded. scikit-learn
is imported only when a dataset is read."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from keras_edge.runtime.errors import BackendUnavailableError, UsageError

logger = logging.getLogger(__name__)

SEED = 0
# Text cases: sequences of SEQ_LEN tokens from a vocabulary of VOCAB (0 unused).
VOCAB = 64
SEQ_LEN = 20

Inputs = np.ndarray | dict[str, np.ndarray]
Labels = np.ndarray | dict[str, np.ndarray]  # a dict by output name for several heads

# How a case's model reaches ``export()``: saved as a ``.keras`` file (what most users have), the
# model object itself (a subclassed model, exported from Python), a folder written by Keras 3's
# ``model.export(path, format="tf_saved_model")``, or a ``.keras`` file plus the ``.py`` file
# of its custom layers (``custom_objects=[that file]``).
SOURCES = ("keras-file", "object", "saved-model", "keras-file+custom-objects")


@dataclass(frozen=True, eq=False)
class Case:
    """One model with its data: what ``export()`` needs, and a line saying what it is."""

    name: str
    model: Any
    x_calib: Inputs
    x_val: Inputs
    y_val: Labels
    head: str  # "auto", or "logit" / "regression" for a linear output
    description: str
    threshold: float | dict[str, float] = 0.5  # a dict by head name for several heads
    source: str = "keras-file"  # one of SOURCES
    custom_code: str | None = None  # the module of the custom layers, for a custom-objects source

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise UsageError(f"Expected a case source from {SOURCES}, got {self.source!r}")
        if (self.source == SOURCES[3]) != (self.custom_code is not None):
            raise UsageError(
                f"Expected custom_code (a module name) exactly for source {SOURCES[3]!r}, got "
                f"source {self.source!r} with custom_code {self.custom_code!r}"
            )


def _sklearn_datasets() -> Any:
    try:
        import sklearn.datasets
    except ImportError as exc:
        raise BackendUnavailableError(
            f"The model zoo takes data from scikit-learn's bundled datasets, and scikit-learn "
            f"could not be imported ({exc}); install it with: pip install 'keras-edge[dev]'"
        ) from exc
    return sklearn.datasets


def _split(n: int, n_val: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(SEED).permutation(n)
    return order[n_val:], order[:n_val]


def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 8x8 digits: (x_train, y_train, x_val, y_val), x raw 0..16 of
    shape (n, 8, 8, 1) float32, y the digit; 397 held out."""
    x, y = _sklearn_datasets().load_digits(return_X_y=True)
    train, val = _split(len(x), 397)
    x = x.reshape(-1, 8, 8, 1).astype(np.float32)
    return x[train], y[train].astype(np.int64), x[val], y[val].astype(np.int64)


def breast_cancer() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's breast-cancer table, raw features (ranges differ 1e5x); 169 held out."""
    x, y = _sklearn_datasets().load_breast_cancer(return_X_y=True)
    train, val = _split(len(x), 169)
    x = x.astype(np.float32)
    return x[train], y[train].astype(np.int64), x[val], y[val].astype(np.int64)


def standardize(x_train: np.ndarray, x_val: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, std = x_train.mean(axis=0), x_train.std(axis=0) + 1e-6
    return ((x_train - mean) / std).astype(np.float32), ((x_val - mean) / std).astype(np.float32)


def tokens(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic token sequences (int32, (n, SEQ_LEN), tokens 1..VOCAB-1); the label is 1 when
    tokens 1-8 occur more often than tokens 9-16."""
    rng = np.random.default_rng(seed)
    x = rng.integers(1, VOCAB, size=(n, SEQ_LEN)).astype(np.int32)
    positive = ((x >= 1) & (x <= 8)).sum(axis=1)
    negative = ((x >= 9) & (x <= 16)).sum(axis=1)
    return x, (positive > negative).astype(np.int64)


def padded_tokens(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`tokens`, each row ending in 0 to SEQ_LEN // 4 padding zeros (id 0), as a
    tokenizer pads sentences of different lengths; the label counts the real tokens only."""
    x, _ = tokens(n, seed)
    ends = np.random.default_rng(seed + 1000).integers(0, SEQ_LEN // 4 + 1, n)
    x[np.arange(SEQ_LEN)[None, :] >= SEQ_LEN - ends[:, None]] = 0
    positive = ((x >= 1) & (x <= 8)).sum(axis=1)
    negative = ((x >= 9) & (x <= 16)).sum(axis=1)
    return x, (positive > negative).astype(np.int64)


def digits_flat() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    x_train, d_train, x_val, d_val = digits()
    return x_train.reshape(-1, 64) / 16.0, d_train, x_val.reshape(-1, 64) / 16.0, d_val


def digit_tags(d: np.ndarray) -> np.ndarray:
    """Three labels per digit: even, >= 5, drawn with a closed loop (0, 6, 8, 9)."""
    return np.stack([d % 2 == 0, d >= 5, np.isin(d, [0, 6, 8, 9])], axis=1).astype(np.int64)


def build_case(cases: Mapping[str, Callable[[], Case]], name: str) -> Case:
    """Build, train and return the case ``name`` of ``cases`` (a zoo's registry)."""
    if name not in cases:
        raise UsageError(f"Expected a case from {list(cases)}, got {name!r}")
    case = cases[name]()
    logger.info("built %s: %s", name, case.description)
    return case
