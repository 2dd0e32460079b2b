"""Rows of a model's inputs, the one data helper the device core needs (the golden set, the
exporter's parity and tuning). Reading data files is offline work: see
:mod:`keras_edge.runtime.batch.files`."""

from __future__ import annotations

from typing import Any

import numpy as np


def rows(xs: tuple[np.ndarray, ...], index: Any) -> Any:
    """Rows ``index`` of every input, in the form the runtime and Keras take: the array itself
    for a one-input model, a list in the model's order for several."""
    return xs[0][index] if len(xs) == 1 else [x[index] for x in xs]
