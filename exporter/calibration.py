"""Calibration data: one object that feeds both converters' full-integer quantization.

TFLite wants a ``representative_dataset`` generator; ONNX Runtime wants a
``CalibrationDataReader`` (``get_next()`` returns a feed or None, ``rewind()`` starts over).
Both are built here from the same numpy array, in the same order, so they see the same data.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from keras_edge.exporter.errors import CalibrationError
from keras_edge.runtime.manifest import CalibrationInfo

logger = logging.getLogger(__name__)

MAX_SAMPLES = 1000  # enough to pin min/max ranges; more only slows the converters
# Above this share of parity values outside the calibrated range (1%), the export warns loudly:
# each such value is clipped by the int8 input quantizer without any error.
COVERAGE_WARNING = 0.01
MAX_LISTED_FEATURES = 64  # per-feature shares are recorded for inputs up to this size
# A full-int8 input has one scale for every feature. When feature ranges differ by more than
# this factor, the narrow ones keep fewer than ~3 of the 256 levels: their information is gone.
RANGE_RATIO_WARNING = 100.0


@dataclass(frozen=True)
class Calibration:
    """Float32 calibration inputs of shape (n, features...), at most ``MAX_SAMPLES`` of them."""

    x: np.ndarray = field(repr=False)

    @classmethod
    def from_array(cls, x: Any, feature_shape: tuple[int, ...]) -> Calibration:
        from keras_edge.exporter.model import as_inputs

        x = as_inputs(x, feature_shape, "calibration", error=CalibrationError)
        if len(x) > MAX_SAMPLES:
            # Evenly spaced rows: deterministic, and it keeps the spread of ordered data.
            idx = np.linspace(0, len(x) - 1, MAX_SAMPLES).round().astype(int)
            x = x[idx]
        return cls(x=np.ascontiguousarray(x))

    def __len__(self) -> int:
        return len(self.x)

    def representative_dataset(self) -> Iterator[list[np.ndarray]]:
        """The TFLite converter's generator: one sample at a time."""
        for i in range(len(self.x)):
            yield [self.x[i : i + 1]]

    def onnx_reader(self, input_name: str) -> Any:
        """An ``onnxruntime.quantization.CalibrationDataReader`` over the same samples."""
        from onnxruntime.quantization import CalibrationDataReader

        x = self.x

        class _Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self._i = 0

            def get_next(self) -> dict[str, np.ndarray] | None:
                if self._i >= len(x):
                    return None
                self._i += 1
                return {input_name: x[self._i - 1 : self._i]}

            def rewind(self) -> None:
                self._i = 0

        return _Reader()


def coverage(calibration: Calibration, x: np.ndarray, data: str) -> CalibrationInfo:
    """How much of ``x`` falls outside the calibrated range, feature by feature."""
    import hashlib

    flat_c = calibration.x.reshape(len(calibration.x), -1)
    flat_x = x.reshape(len(x), -1).astype(np.float32)
    low, high = flat_c.min(axis=0), flat_c.max(axis=0)
    outside = (flat_x < low) | (flat_x > high)
    by_feature = outside.mean(axis=0) if len(flat_x) else np.zeros(flat_c.shape[1])
    worst = int(by_feature.argmax())
    spans = (high - low).astype(np.float64)
    varying = np.nonzero(spans > 0)[0]
    widest = int(varying[spans[varying].argmax()]) if len(varying) else 0
    narrowest = int(varying[spans[varying].argmin()]) if len(varying) else 0
    ratio = float(spans[widest] / spans[narrowest]) if len(varying) else 1.0
    return CalibrationInfo(
        samples=len(calibration),
        sha256=hashlib.sha256(calibration.x.tobytes()).hexdigest(),
        data=data,
        outside_fraction=float(outside.mean()) if outside.size else 0.0,
        worst_feature=worst,
        worst_feature_outside=float(by_feature[worst]),
        constant_features=tuple(int(i) for i in np.nonzero(high <= low)[0]),
        range_ratio=ratio,
        widest_feature=widest,
        narrowest_feature=narrowest,
        outside_by_feature=(
            tuple(float(v) for v in by_feature) if len(by_feature) <= MAX_LISTED_FEATURES else ()
        ),
    )


def coverage_problems(info: CalibrationInfo) -> list[str]:
    """Sentences a release engineer can act on; empty when the calibration looks sound."""
    problems = []
    if info.constant_features:
        shown = ", ".join(map(str, info.constant_features[:10]))
        problems.append(
            f"calibration data is constant in {len(info.constant_features)} feature(s) ({shown}): "
            f"their int8 input scale is degenerate, so every other value is clipped"
        )
    if info.range_ratio > RANGE_RATIO_WARNING:
        problems.append(
            f"feature ranges in the calibration data differ by {info.range_ratio:.3g}x (feature "
            f"{info.widest_feature} is the widest, {info.narrowest_feature} the narrowest); a "
            f"full-int8 input has one scale for all features, so the narrow ones lose their "
            f"resolution. Standardize the features before the model, or ship a float variant"
        )
    if info.outside_fraction > COVERAGE_WARNING:
        problems.append(
            f"{info.outside_fraction:.2%} of the {info.data} values fall outside the calibrated "
            f"range (worst: feature {info.worst_feature}, {info.worst_feature_outside:.2%}); "
            f"full-int8 variants clip them silently. Calibrate on inputs that span the domain "
            f"the device will see"
        )
    return problems
