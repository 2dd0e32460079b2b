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
from keras_edge.runtime.manifest import CalibrationInfo, InputSpec

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
    """Calibration inputs, one array per model input (float32 features, integer ids), at most
    ``MAX_SAMPLES`` rows."""

    xs: tuple[np.ndarray, ...] = field(repr=False)
    names: tuple[str, ...] = ()

    @classmethod
    def from_array(cls, x: Any, specs: tuple[InputSpec, ...]) -> Calibration:
        from keras_edge.exporter.model import as_inputs

        xs = as_inputs(x, specs, "calibration", error=CalibrationError)
        if len(xs[0]) > MAX_SAMPLES:
            # Evenly spaced rows: deterministic, and it keeps the spread of ordered data.
            idx = np.linspace(0, len(xs[0]) - 1, MAX_SAMPLES).round().astype(int)
            xs = tuple(x[idx] for x in xs)
        return cls(xs=tuple(np.ascontiguousarray(x) for x in xs), names=tuple(s.name for s in specs))

    @property
    def x(self) -> np.ndarray:
        """The first input's rows (the only input of most models)."""
        return self.xs[0]

    @property
    def float_widths(self) -> list[int]:
        """Features per float input, in :attr:`float_features`' column order."""
        return [int(np.prod(x.shape[1:])) for x in self.xs if x.dtype == np.float32]

    @property
    def float_features(self) -> np.ndarray:
        """Every float input, flattened and side by side: (n, features); what int8 scales cover."""
        floats = [x.reshape(len(x), -1) for x in self.xs if x.dtype == np.float32]
        return np.hstack(floats) if floats else np.empty((len(self), 0), np.float32)

    def __len__(self) -> int:
        return len(self.xs[0])

    def representative_dataset(self) -> Iterator[Any]:
        """The TFLite converter's generator: one sample at a time; a dict by input name for a
        model with several inputs (the converter's own order of them is not the model's)."""
        for i in range(len(self)):
            if len(self.xs) == 1:
                yield [self.xs[0][i : i + 1]]
            else:
                yield {name: x[i : i + 1] for name, x in zip(self.names, self.xs, strict=True)}

    def onnx_reader(self) -> Any:
        """An ``onnxruntime.quantization.CalibrationDataReader`` over the same samples."""
        from onnxruntime.quantization import CalibrationDataReader

        xs, names, n = self.xs, self.names, len(self)

        class _Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self._i = 0

            def get_next(self) -> dict[str, np.ndarray] | None:
                if self._i >= n:
                    return None
                self._i += 1
                return {name: x[self._i - 1 : self._i] for name, x in zip(names, xs, strict=True)}

            def rewind(self) -> None:
                self._i = 0

        return _Reader()


def coverage(calibration: Calibration, xs: tuple[np.ndarray, ...], data: str) -> CalibrationInfo:
    """How much of the parity inputs ``xs`` falls outside the calibrated range, feature by
    feature (every float input's features side by side; integer ids are not quantized)."""
    import hashlib

    flat_c = calibration.float_features
    flat_x = Calibration(xs=xs).float_features
    low, high = flat_c.min(axis=0), flat_c.max(axis=0)
    outside = (flat_x < low) | (flat_x > high)
    by_feature = outside.mean(axis=0) if len(flat_x) else np.zeros(flat_c.shape[1])
    worst = int(by_feature.argmax())
    spans = (high - low).astype(np.float64)
    # Each input tensor has its own int8 scale: compare feature ranges within an input only.
    widest = narrowest = 0
    ratio = 1.0
    start = 0
    for width in calibration.float_widths:
        columns = np.arange(start, start + width)
        varying = columns[spans[columns] > 0]
        if len(varying):
            wide, narrow = varying[spans[varying].argmax()], varying[spans[varying].argmin()]
            if spans[wide] / spans[narrow] > ratio:
                widest, narrowest, ratio = int(wide), int(narrow), float(spans[wide] / spans[narrow])
        start += width
    return CalibrationInfo(
        samples=len(calibration),
        sha256=hashlib.sha256(b"".join(x.tobytes() for x in calibration.xs)).hexdigest(),
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
    if info.constant_features and len(info.constant_features) == len(info.outside_by_feature or ()):
        problems.append(
            "calibration data is constant in every feature: the int8 input scale is degenerate, "
            "so every other value is clipped"
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
