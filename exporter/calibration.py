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

from exporter.errors import CalibrationError

logger = logging.getLogger(__name__)

MAX_SAMPLES = 1000  # enough to pin min/max ranges; more only slows the converters


@dataclass(frozen=True)
class Calibration:
    """Float32 calibration inputs of shape (n, features...), at most ``MAX_SAMPLES`` of them."""

    x: np.ndarray = field(repr=False)

    @classmethod
    def from_array(cls, x: Any, feature_shape: tuple[int, ...]) -> Calibration:
        x = np.asarray(x)
        if x.dtype.kind not in "fiu":
            raise CalibrationError(f"Expected numeric calibration data, got dtype {x.dtype}")
        x = x.astype(np.float32)
        if x.shape[1:] != feature_shape:
            raise CalibrationError(
                f"Expected calibration data of shape (None, "
                f"{', '.join(map(str, feature_shape))}), got {x.shape}"
            )
        if len(x) == 0:
            raise CalibrationError("Expected at least one calibration sample, got 0")
        if not np.isfinite(x).all():
            raise CalibrationError("Expected finite calibration data, got NaN or Inf")
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
