"""The golden set: a few hundred parity inputs kept beside the artifacts, with Keras's outputs
and labels and every variant's answers at export, so that a device can check its own engine
build, CPU kernels and thread count (``keras-edge verify``) without TensorFlow.

The rows are the ``NEAREST`` inputs closest to the threshold (where a small numerical change
flips a decision) plus evenly spaced ones, in their original order. The file is an ``.npz``
written with fixed zip timestamps, so the same export gives the same bytes.
"""

from __future__ import annotations

import io
import logging
import zipfile
from pathlib import Path

import numpy as np

from keras_edge.runtime.gate import decide, distance_to_decision
from keras_edge.runtime.golden import (
    GOLDEN_NAME,
    KERAS_KEY,
    LABELS_KEY,
    X_KEY,
    input_key,
    variant_key,
)
from keras_edge.runtime.manifest import GoldenInfo, Head, sha256_file

logger = logging.getLogger(__name__)

SIZE = 256  # rows at most: a few milliseconds to verify on a device
NEAREST = 64  # of them, the rows nearest a decision boundary (a quarter, for fewer rows)
# The golden set's inputs may take this share of the smallest artifact they check, or FREE
# bytes, whichever is more: an image model's rows are large (64x64x3 float32 is 48 KiB), and a
# golden set the size of the model it checks is a second model to ship; a tabular model's 256
# rows are a few KiB.
SHARE = 0.1
FREE = 256 * 1024
MIN_ROWS = 32  # whatever the budget: fewer rows would prove little on a device


def budget(row_bytes: int, artifact_bytes: int | None) -> int:
    """How many rows the golden set keeps: ``SIZE``, or fewer when ``SIZE`` rows of
    ``row_bytes`` input bytes would take more than ``SHARE`` of ``artifact_bytes`` (the smallest
    artifact) and more than ``FREE`` bytes, but never fewer than ``MIN_ROWS``."""
    if artifact_bytes is None or row_bytes <= 0:
        return SIZE
    allowed = max(FREE, SHARE * artifact_bytes)
    return int(max(MIN_ROWS, min(SIZE, allowed // row_bytes)))


def select(head: Head, proba: np.ndarray, size: int = SIZE) -> tuple[np.ndarray, int]:
    """Row indices of the golden set (sorted, at most ``size``), and how many were picked as
    nearest the decision."""
    n = len(proba)
    if n <= size:
        return np.arange(n), 0
    distance = distance_to_decision(head, proba)
    near = min(NEAREST, size // 4)
    nearest = np.argsort(distance, kind="stable")[:near] if distance is not None else []
    spread = np.linspace(0, n - 1, size - len(nearest)).round().astype(np.int64)
    rows = np.union1d(nearest, spread).astype(np.int64)
    return rows, len(nearest)


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez`` with a fixed timestamp on every member: byte-identical on every run."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for name in sorted(arrays):
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            archive.writestr(info, buffer.getvalue())


def write(
    folder: Path,
    head: Head,
    xs: tuple[np.ndarray, ...],
    names: list[str],
    keras_proba: np.ndarray,
    variant_outputs: dict[str, np.ndarray],
    data: str,
    artifact_bytes: int | None = None,
) -> GoldenInfo:
    """Write ``golden.npz`` into ``folder`` from the parity data and every variant's per-sample
    answers on it (probabilities; values for regression); return its manifest record. Its
    rows are kept to ``SHARE`` of ``artifact_bytes``, the smallest artifact (see :func:`budget`)."""
    row_bytes = sum(int(x[:1].nbytes) for x in xs)
    size = budget(row_bytes, artifact_bytes)
    if size < SIZE and len(keras_proba) > size:
        logger.info("golden set: %d rows of %d input bytes each, within %.0f%% of the smallest "
                    "artifact (%d bytes) or %d KiB", size, row_bytes, SHARE * 100, artifact_bytes,
                    FREE // 1024)  # fmt: skip
    rows, nearest = select(head, keras_proba, size)
    arrays = {KERAS_KEY: keras_proba[rows].astype(np.float32)}
    if len(xs) == 1:
        arrays[X_KEY] = xs[0][rows]
    else:  # one array per input, by name
        arrays.update({input_key(name): x[rows] for name, x in zip(names, xs, strict=True)})
    if head.kind != "regression":
        arrays[LABELS_KEY] = decide(head, keras_proba[rows], head.threshold)
    for vid, outputs in variant_outputs.items():
        arrays[variant_key(vid)] = outputs[rows].astype(np.float32)
    path = folder / GOLDEN_NAME
    _write_npz(path, arrays)
    logger.info("golden set: %d rows (%d nearest the decision) of %s", len(rows), nearest, data)
    return GoldenInfo(
        file=GOLDEN_NAME, sha256=sha256_file(path), n=len(rows), nearest=nearest, data=data
    )
