"""Declared heads: what ``--head`` may say, whether the model's last activation agrees, and
whether the Keras model's own outputs fit what was declared.

A model that ends in sigmoid or softmax says what it holds; ``--head`` may repeat it (binary
for one sigmoid unit, multilabel for several, multiclass for softmax) and is refused when it
says something else. A linear-looking output cannot say: the user declares logits, regression
values, or probabilities from a sigmoid or softmax that the layer walk cannot see (inside a
custom layer, a subclassed model, a graph). Such a declaration is checked against the Keras
model's outputs on the parity data before anything is converted: probabilities must lie in
[0, 1] (and a softmax's rows sum to 1), and logits that all lie in [0, 1] are probably
probabilities, which read as logits decide 1 for every sample. A contradiction is refused
(exit 2) naming what was seen and the head that fits.
"""

from __future__ import annotations

import logging

import numpy as np

from keras_edge.exporter.errors import HeadContradictionError, UnsupportedModelError
from keras_edge.runtime.manifest import Head

logger = logging.getLogger(__name__)

PROBABILITY_HEADS = ("binary", "multilabel", "multiclass")
HEADS = ("auto", *PROBABILITY_HEADS, "logit", "regression")
# How far outside [0, 1] a probability may stray (float32 rounding of a sigmoid or softmax).
PROBABILITY_SLACK = 1e-6
# How far from 1 a softmax row may sum.
ROW_SUM_TOLERANCE = 1e-3

LINEAR_HINT = (
    "say which with --head logit or --head regression (logits or values), or, where the model "
    "applies a sigmoid or softmax that keras-edge cannot see, --head binary (1 sigmoid unit), "
    "--head multilabel (k sigmoid units) or --head multiclass (k softmax units); head='...' in "
    "Python"
)


def _detected(activation: str, units: int) -> str:
    if activation == "softmax":
        return "multiclass"
    return "binary" if units == 1 else "multilabel"


def kind_of(activation: str, head: str, from_logits: bool, units: int) -> tuple[str, str]:
    """(kind, output) of a head from the last activation and the head the user declared.

    Raises:
        HeadContradictionError: the declaration contradicts a sigmoid/softmax the model ends
            in, or its number of output units.
        UnsupportedModelError: a linear output with nothing declared, or another activation.
    """
    if activation in ("sigmoid", "softmax"):
        detected = _detected(activation, units)
        if head not in ("auto", detected):
            raise HeadContradictionError(
                f"--head {head} contradicts the model: its output ends in {activation} over "
                f"{units} unit(s), a {detected} head of probabilities; drop --head or pass "
                f"--head {detected}"
            )
        return detected, "probability"
    if activation != "linear":
        raise UnsupportedModelError(
            f"Expected the last layer's activation to be sigmoid, softmax or linear, got {activation!r}"
        )
    if head == "auto" and from_logits:
        head = "logit"  # a linear output trained with from_logits=True is logits
        logger.info("the model was compiled with from_logits=True: a logit head")
    if head == "auto":
        raise UnsupportedModelError(
            f"The model ends in a linear output ({units} unit(s)), so keras-edge cannot tell "
            f"logits from regression values or probabilities; {LINEAR_HINT}"
        )
    if head == "logit":
        return ("binary" if units == 1 else "multilabel"), "logit"
    if head == "regression":
        return "regression", "probability"
    _check_units(head, units)
    logger.info("declared a %s head on a linear-looking output: checked against its outputs", head)
    return head, "probability"


def _check_units(head: str, units: int) -> None:
    """A binary head has one unit; multilabel and multiclass heads have several."""
    if head == "binary" and units != 1:
        raise HeadContradictionError(
            f"--head binary expects 1 output unit (one sigmoid probability), got {units}; "
            f"pass --head multilabel ({units} sigmoid units) or --head multiclass (softmax)"
        )
    if head in ("multilabel", "multiclass") and units < 2:
        raise HeadContradictionError(
            f"--head {head} expects 2 or more output units, got {units}; pass --head binary "
            f"for one sigmoid unit"
        )


def _fmt(value: float) -> str:
    return f"{value:.6g}"


def check_outputs(declared: str, head: Head, raw: np.ndarray, data: str) -> None:
    """Refuse a declared head that the Keras model's raw outputs ``raw`` on the parity
    ``data`` contradict: probabilities outside [0, 1], softmax rows that do not sum to 1,
    logits that all lie in [0, 1]. A head read from the model (``declared`` is ``auto``)
    and a regression head are not checked.

    Raises:
        HeadContradictionError: naming the declared head, what the outputs were, and the
            ``--head`` that fits them.
    """
    values = np.asarray(raw, dtype=np.float64).reshape(len(raw), -1)
    if declared in ("auto", "regression") or values.size == 0:
        return
    low, high = float(values.min()), float(values.max())
    seen = f"the Keras model's outputs on the {data} range from {_fmt(low)} to {_fmt(high)}"
    if head.output == "probability" and head.kind in PROBABILITY_HEADS:
        if low < -PROBABILITY_SLACK or high > 1 + PROBABILITY_SLACK or not np.isfinite(values).all():
            raise HeadContradictionError(
                f"--head {declared} expects probabilities in [0, 1], but {seen}: not probabilities; "
                f"pass --head logit if they are logits (a sigmoid's input) or --head regression "
                f"if they are values"
            )
        if head.kind == "multiclass":
            sums = values.sum(axis=1)
            if float(np.abs(sums - 1.0).max()) > ROW_SUM_TOLERANCE:
                raise HeadContradictionError(
                    f"--head multiclass expects each sample's {head.units} probabilities to sum to 1 "
                    f"(a softmax, within {ROW_SUM_TOLERANCE:g}), but on the {data} their sums range "
                    f"from {_fmt(float(sums.min()))} to {_fmt(float(sums.max()))}; pass --head "
                    f"multilabel if they are independent sigmoid probabilities"
                )
    elif head.output == "logit" and low >= 0.0 and high <= 1.0:
        fits = _probability_head(values)
        raise HeadContradictionError(
            f"--head {declared} expects logits (a sigmoid's input, negative for class 0), but every "
            f"output lies in [0, 1]: {seen}. They look like probabilities, which read as logits "
            f"decide 1 for every sample; pass --head {fits}, or, if they really are logits, give "
            f"validation data with samples of both classes"
        )
    logger.info("declared head %s fits the outputs (from %.6g to %.6g)", declared, low, high)


def _probability_head(values: np.ndarray) -> str:
    """The probability head that outputs in [0, 1] look like."""
    if values.shape[1] == 1:
        return "binary"
    if float(np.abs(values.sum(axis=1) - 1.0).max()) <= ROW_SUM_TOLERANCE:
        return "multiclass"
    return "multilabel"
