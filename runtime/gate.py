"""The decision-fidelity gate's numbers and rule, shared by the export (which checks every
variant against Keras) and ``keras-edge verify`` (which checks them again on a device).

A variant passes at export when its label agreement with Keras (flips at exact ties excused,
see ``TIE_BAND``) reaches its precision's minimum and its largest probability error is within
its precision's tolerance. On a device, it must stay within the same tolerance of Keras and
within ``DRIFT`` of what it answered at export.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from keras_edge.runtime.manifest import Head

# Largest |p_variant - p_keras| allowed, per precision.
TOLERANCES = {
    # Same float32 math in another order (XNNPACK, MLAS): ~1e-7 on in-domain data (seed MLP,
    # breast-cancer MLP). Large activations magnify it: a Normalization layer fed the probe
    # set's out-of-domain inputs reached 1.9e-5. 1e-4 still flags any real conversion error.
    "fp32": 1e-4,
    # float16 keeps 11 significant bits (relative error ~5e-4 per weight); through a few
    # layers and a sigmoid that stays under 1e-2.
    "fp16": 1e-2,
    # int8 weights (255 levels per tensor). ONNX Runtime also quantizes activations to uint8
    # per call, with a scale from the batch's own range: measured 0.034 (seed MLP) and 0.065
    # (breast-cancer MLP); TFLite keeps activations float (~2e-3).
    "dynamic": 1e-1,
    # Inputs and activations quantized too, output in steps of 1/256: measured 0.026-0.06 on
    # the seed MLP; a few steps of error is normal, 0.1 is not.
    "int8": 1e-1,
}
# Minimum label agreement with Keras, per precision (overridable with --min-agreement).
MIN_AGREEMENT = {"fp32": 1.0, "fp16": 0.999, "dynamic": 0.999, "int8": 0.99}
# A flip whose Keras probability lies within this distance of the threshold is a tie decided
# by float rounding (within fp32's tolerance), not a different decision: it is not held against
# any variant. Lower precisions cannot resolve finer than their output's own step: see
# near_tie_band().
TIE_BAND = TOLERANCES["fp32"]
# One step of a full-int8 probability output (a sigmoid or softmax quantized to 256 levels of
# [0, 1]): two answers closer than this are the same int8 value.
INT8_PROBABILITY_STEP = 1 / 256
# Flips within this distance of the threshold are reported as "near": the model is unsure there.
NEAR_BAND = 0.05
# Largest |p_device - p_at_export| that another machine's engine build, CPU kernels (ARM NEON
# against x86 AVX) and thread count can explain, per precision. The same artifact on the same
# machine answers bit for bit; anything beyond these is a different artifact or a broken engine.
DRIFT = {
    # Reordered float32 sums: ~1e-6 after a sigmoid; 1e-4 is the export's own fp32 tolerance.
    "fp32": 1e-4,
    # Kernels that keep float16 activations (ARM's native fp16) round each layer to 11 bits.
    "fp16": 5e-3,
    # ONNX Runtime's integer matmul differs by platform (u8s8 on ARM and AVX-VNNI, u8u8 else).
    "dynamic": 2e-2,
    # Integer kernels may round one requantization differently: two output steps of 1/256.
    "int8": 2 / 256,
}

# A regression output has no threshold: each value must lie within atol * S + rtol * |y| of
# Keras's y, where S = max(1, max |y|) is the output's scale. Float rounding is relative (an
# output near 1e4 moves by ~1e-3 from float32 rounding alone); quantization error scales with
# the range an int8 tensor spans. (atol, rtol) per precision:
REGRESSION_TOLERANCES = {
    "fp32": (1e-6, 1e-5),  # float32 keeps 24 bits; a few layers of rounding stay under 1e-5
    "fp16": (1e-3, 1e-2),  # 11 bits: ~5e-4 relative per layer
    "dynamic": (2e-2, 2e-2),  # activations quantized per call to 256 levels of their range
    "int8": (2e-2, 2e-2),  # output in steps of S/128 or finer: a few steps
}


def regression_tolerance(precision: str, reference: np.ndarray) -> tuple[float, float]:
    """(absolute, relative) tolerance for a regression head's values against ``reference``."""
    atol, rtol = REGRESSION_TOLERANCES[precision]
    scale = max(1.0, float(np.abs(reference).max())) if reference.size else 1.0
    return atol * scale, rtol


def decide(head: Head, proba: np.ndarray, threshold: float | tuple[float, ...] | None) -> np.ndarray:
    """Labels by the runtime's rule, as an (n, k) int array (k = 1 for binary/multiclass).
    Multiclass with a threshold (the minimum confidence) gives -1 where the top p is not above it."""
    if head.kind == "multiclass":
        return multiclass_labels(proba, threshold).reshape(-1, 1)
    if head.kind == "regression":
        return np.zeros((len(proba), 1), dtype=np.int64)
    t = np.asarray(threshold, dtype=np.float32).reshape(1, -1)
    return (proba > t).astype(np.int64)


UNKNOWN = -1  # the class of a multiclass sample whose top probability is not above the threshold
UNKNOWN_LABEL = "unknown"  # its label name


def multiclass_labels(proba: np.ndarray, threshold: float | None) -> np.ndarray:
    """argmax of each row, or ``UNKNOWN`` where the row's top probability is not above
    ``threshold`` (the minimum confidence, float32 as the model's output); int64 (n,)."""
    labels = proba.argmax(axis=1).astype(np.int64)
    if threshold is not None and len(proba):
        labels[proba.max(axis=1) <= np.float32(threshold)] = UNKNOWN
    return labels


def near_tie_band(precision: str, head: Head, threshold: float | tuple[float, ...] | None) -> float:
    """How close to the threshold a Keras probability may lie and its flip still be a near-tie
    that the variant's precision cannot resolve, rather than a different decision.

    float16 output: one float16 step at the threshold (2**-11 = 4.9e-4 at 0.5), the smallest
    move its output can make there. Full int8: one output step, 1/256 for a probability. fp32
    and dynamic (float outputs): ``TIE_BAND``. A logit head's output is not a probability: its
    steps near logit(t) are finer than TIE_BAND in probability, so TIE_BAND it is. For
    multiclass, the distance is the margin between the two best classes (see
    ``distance_to_decision``), and the step is taken at 0.5, where the margin is decided.
    """
    if head.output != "probability" or head.kind == "regression":
        return TIE_BAND
    if precision == "int8":
        return max(TIE_BAND, INT8_PROBABILITY_STEP)
    if precision == "fp16":
        values = threshold if isinstance(threshold, (list, tuple)) else [threshold]
        at = [0.5 if head.kind == "multiclass" or v is None else float(v) for v in values]
        return max(TIE_BAND, *(float(np.spacing(np.float16(t))) for t in at))
    return TIE_BAND


def resolution_note(n: int, need: float) -> str:
    """What a gate on ``n`` samples can tell apart: one flip is 1/n of the agreement."""
    if n == 0:
        return "no samples: the gate proves nothing"
    one = 1 / n
    allowed = int(np.floor((1 - need) * n + 1e-9))
    return (
        f"one flip is {one:.2%} of {n} samples; the minimum {need:.2%} allows {allowed} "
        f"flip(s) beyond near-ties"
    )


def label_names(labels: Sequence[str], classes: np.ndarray) -> np.ndarray:
    """Label names for class indices (n,), ``"unknown"`` for -1 (below the minimum confidence)."""
    names = np.asarray([*labels, UNKNOWN_LABEL], dtype=object)
    return names[np.where(classes == UNKNOWN, len(labels), classes)]
