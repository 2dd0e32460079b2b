"""The golden set on the device, and the check behind ``keras-edge verify``: does this
device's engine still decide as the export did?

ONNX Runtime and LiteRT versions, ARM NEON against x86 kernels and thread counts all move float
results a little, and integer kernels more. The export keeps a golden set beside the artifacts
(see ``keras_edge.exporter.golden``): inputs, Keras's outputs and labels, and each variant's
answers at export. Here each installed variant answers the golden set one sample per call, as a
device calls it, through the runtime's own ``predict_proba`` and ``predict``. A variant that
passed at export fails here by the export's own gate (:func:`keras_edge.runtime.gate.judge`,
with the tolerance, agreement minimum and near-tie band recorded at export), when

  * its largest difference from Keras exceeds the tolerance the export applied, or
  * its decisions flip against Keras's beyond near-ties and beyond the flips it already had at
    export (those the export accepted) by more than the agreement minimum allows, or
  * its largest difference from its own answers at export exceeds its precision's ``DRIFT``:
    more than another engine build or CPU can explain, so a different artifact or a broken
    engine.
"""

from __future__ import annotations

import io
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from keras_edge.runtime.data import rows
from keras_edge.runtime.errors import UsageError, VerificationError
from keras_edge.runtime.gate import Limits, decide, distance_to_decision, drift_band, judge
from keras_edge.runtime.manifest import Head, Manifest, read_checked

logger = logging.getLogger(__name__)

GOLDEN_NAME = "golden.npz"
X_KEY, KERAS_KEY, LABELS_KEY = "x", "keras", "keras_labels"


def input_key(name: str) -> str:
    """The golden-set array holding input ``name`` of a model with several inputs."""
    return f"input.{name}"


def variant_key(variant: str) -> str:
    """The golden-set array holding ``variant``'s answers at export."""
    return f"variant.{variant}"


@dataclass(frozen=True)
class Golden:
    xs: tuple[np.ndarray, ...]  # one array per input, in the manifest's order
    keras: np.ndarray
    keras_labels: np.ndarray | None
    at_export: dict[str, np.ndarray]


@dataclass(frozen=True)
class Check:
    """One variant's verification on this machine."""

    variant: str
    precision: str
    status: str  # "passed", "FAILED", "skipped" (engine not installed), "failed at export"
    n: int = 0
    max_abs_diff: float | None = None  # against Keras
    tolerance: float | None = None
    drift: float | None = None  # against this variant's own answers at export
    drift_band: float | None = None
    label_agreement: float | None = None  # against Keras
    flips: int | None = None
    flips_at_export: int | None = None
    seconds: float | None = None
    failures: tuple[str, ...] = field(default_factory=tuple)

    @property
    def failed(self) -> bool:
        return self.status == "FAILED"

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "failures": list(self.failures)}


def read_golden(folder: str | Path, manifest: Manifest) -> Golden:
    """The golden set, after checking its bytes against the manifest's sha256."""
    info = manifest.golden
    if info is None:
        raise UsageError(
            f"Expected a golden set in the manifest of {str(folder)!r}, found none: the export "
            f"predates keras-edge 0.2; export again to verify it on a device"
        )
    path = Path(folder) / info.file
    if not path.is_file():
        raise VerificationError(
            f"Expected the golden set at {str(path)!r}, found none; no variant can be verified",
            failed=sorted(manifest.variants),
        )
    data, digest = read_checked(path, info.sha256)
    if digest is not None:
        raise VerificationError(
            f"The golden set {info.file!r} has sha256 {digest}, the manifest expects "
            f"{info.sha256}: it changed after the export, so no variant "
            f"({', '.join(sorted(manifest.variants))}) can be verified against it",
            failed=sorted(manifest.variants),
        )
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    prefix = variant_key("")
    names = [spec.name for spec in manifest.inputs]
    keys = [X_KEY] if len(names) == 1 else [input_key(n) for n in names]
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise VerificationError(
            f"Expected the golden set to hold {keys}, got {sorted(arrays)}; it does not belong "
            f"to this manifest",
            failed=sorted(manifest.variants),
        )
    return Golden(
        xs=tuple(arrays[k] for k in keys),
        keras=arrays[KERAS_KEY],
        keras_labels=arrays.get(LABELS_KEY),
        at_export={k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)},
    )


def check_classifier(clf: Any, golden: Golden) -> Check:
    """Run one loaded classifier over the golden set, one sample per call, and judge it by the
    export's own gate (:func:`judge`), with the limits recorded at export."""
    info, head = clf.variant_info, clf.head
    n = len(golden.xs[0])
    samples = [rows(golden.xs, slice(i, i + 1)) for i in range(n)]
    started = time.perf_counter()
    outputs = np.concatenate([clf.outputs(sample) for sample in samples])
    labels = None
    if head.kind != "regression":
        labels = np.concatenate([clf.decisions(s) for s in samples])
    seconds = time.perf_counter() - started
    at_export = golden.at_export.get(info.id)
    excused = flipped_at_export = None
    if at_export is not None and head.kind != "regression":
        before = decide(head, at_export, info.threshold)
        flipped_at_export = (before != decide(head, golden.keras, head.threshold)).any(axis=1)
        # A flip is excused when the variant decides the row as it did at export (the export's
        # gate accepted that), or when its answer at export lay within the drift another machine
        # may show of the threshold (it may land on either side here).
        excused = _excused(head.with_threshold(info.threshold), labels, before, at_export, golden.keras,
                           info.precision)  # fmt: skip
    parity = info.parity
    limits = Limits() if parity is None else Limits(
        parity.tolerance, parity.relative_tolerance, parity.min_agreement
    )  # fmt: skip
    if head.parts and parity is not None:  # each head keeps its own kind's tolerance
        limits = Limits(min_agreement=parity.min_agreement)
    verdict = judge(head, golden.keras, outputs, info.precision, info.threshold, labels, limits,
                    excused=excused, at_export=at_export)  # fmt: skip
    failures = list(verdict.failures)
    if at_export is None:
        failures.append("the golden set holds no answers of this variant at export")
    return Check(
        variant=info.id,
        precision=info.precision,
        status="FAILED" if failures else "passed",
        n=n,
        max_abs_diff=verdict.max_abs_diff,
        tolerance=verdict.tolerance,
        drift=verdict.drift,
        drift_band=drift_band(head, info.precision, golden.keras),
        label_agreement=None if labels is None else verdict.agreement,
        flips=None if labels is None else verdict.flips,
        flips_at_export=None if flipped_at_export is None else int(flipped_at_export.sum()),
        seconds=seconds,
        failures=tuple(failures),
    )


def _excused(
    own: Head, labels: np.ndarray, before: np.ndarray, at_export: np.ndarray, keras: np.ndarray,
    precision: str,
) -> np.ndarray:  # fmt: skip
    """Rows whose flip is excused: decided as at export, or whose answer at export lay within
    the drift band of the threshold. For several heads, one column per head: a head's flip is
    excused by that head alone."""
    if own.parts:
        columns, start = [], 0
        for part, s in zip(own.parts, own.slices(), strict=True):
            width = part.units if part.kind == "multilabel" else 1
            c = slice(start, start + width)
            start += width
            columns.append(_excused(part, labels[:, c], before[:, c], at_export[:, s], keras[:, s],
                                    precision))  # fmt: skip
        return np.stack(columns, axis=1)
    distance = distance_to_decision(own, at_export)
    if distance is None:  # a regression head decides nothing
        return (labels == before).all(axis=1)
    near = distance <= drift_band(own, precision, keras)
    return (labels == before).all(axis=1) | near


def raise_on_failure(checks: list[Check]) -> None:
    """Raise :class:`VerificationError` naming every check that failed, if any did."""
    failed = [c for c in checks if c.failed]
    if failed:
        details = "; ".join(f"{c.variant}: {', '.join(c.failures)}" for c in failed)
        raise VerificationError(
            f"{len(failed)} variant(s) that passed at export fail on this machine: {details}",
            failed=[c.variant for c in failed],
        )
