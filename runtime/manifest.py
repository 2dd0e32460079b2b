"""The manifest: the contract between the exporter (which writes it) and the runtime (reads it).

``manifest.json`` lives beside the artifacts. It is written with sorted keys and no timestamps
or absolute paths, so the same model, data and options give the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path, PurePosixPath
from typing import Any

from keras_edge.runtime.errors import ManifestError

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
DECISION_RULE = "p > threshold"

HEAD_KINDS = ("binary", "multilabel", "multiclass", "regression")
PARITY_SOURCES = ("validation", "calibration", "synthetic")
HEAD_OUTPUTS = ("probability", "logit")
FORMATS = ("tflite", "onnx")
PRECISIONS = ("fp32", "fp16", "dynamic", "int8")


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _require(data: dict[str, Any], key: str, where: str) -> Any:
    if key not in data:
        raise ManifestError(f"Manifest {where} is missing the key {key!r}; got keys {sorted(data)}")
    return data[key]


def validate_threshold(kind: str, units: int, threshold: Any, where: str) -> None:
    """A threshold fit for a head of ``kind``: one number strictly between 0 and 1 (binary),
    one per label (multilabel), none or one such number for multiclass (the minimum confidence:
    below it the class is -1, "unknown"), none for regression; else :class:`ManifestError`
    naming ``where`` and the value."""
    if kind == "multilabel":
        if not isinstance(threshold, tuple) or len(threshold) != units:
            raise ManifestError(
                f"Expected {units} thresholds for {where} (a multilabel head), got {threshold!r}"
            )
        for t in threshold:
            _check_threshold(t, where)
    elif kind == "binary" or (kind == "multiclass" and threshold is not None):
        _check_threshold(threshold, where)
    elif threshold is not None:
        raise ManifestError(f"Expected no threshold for {where} (a {kind} head), got {threshold!r}")


def _check_threshold(value: float, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ManifestError(f"Expected a number for the threshold of {where}, got {value!r}")
    if not (0.0 < float(value) < 1.0) or not math.isfinite(value):
        raise ManifestError(f"Expected the threshold of {where} strictly between 0 and 1, got {value!r}")
    return float(value)


def _check_file_name(name: str, what: str) -> None:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or "\\" in name or len(path.parts) != 1:
        raise ManifestError(
            f"Expected a plain file name inside the manifest's folder for {what}, got {name!r}"
        )


INPUT_DTYPES = ("float32", "int32", "int64")


def _as_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, (list, tuple)) else value


def _tuned(record: dict[str, Any] | None, kind: str) -> Any:
    """The threshold a tuning record chose: one per label for multilabel; None without one."""
    labels = (record or {}).get("labels")
    if not isinstance(labels, list) or not labels:
        return None
    try:
        values = tuple(label["threshold"] for label in labels)
    except (KeyError, TypeError) as exc:
        raise ManifestError(f"Malformed tuning record {record!r}: {exc!r}") from exc
    return values if kind == "multilabel" else values[0]


def check_thresholds(manifest: Manifest) -> None:
    """One source of truth for the threshold: every variant decides with the head's threshold,
    unless its own tuning record says it was tuned on its own scores (then with that one); the
    head's threshold is the one tuned for Keras when the export tuned it. A disagreement (a hand
    edit of one of them) is refused naming both values, so that ``inspect``, ``predict`` and
    ``load()`` can never report or use different thresholds."""
    head = manifest.head
    keras = _tuned({"labels": (manifest.tuning or {}).get("keras")}, head.kind)
    if keras is not None and _as_tuple(keras) != _as_tuple(head.threshold):
        raise ManifestError(
            f"The head's threshold is {head.threshold!r}, but the export tuned {keras!r} for the "
            f"Keras model; one of them was changed after the export"
        )
    for vid, variant in manifest.variants.items():
        tuned = _tuned(variant.tuning, head.kind)
        expected, why = (
            (head.threshold, "the head's threshold") if tuned is None
            else (tuned, "the threshold its tuning record chose")
        )  # fmt: skip
        if _as_tuple(variant.threshold) != _as_tuple(expected):
            raise ManifestError(
                f"Variant {vid!r} decides with threshold {variant.threshold!r}, but {why} is "
                f"{expected!r}; one of them was changed after the export (export again, or give "
                f"a threshold for this run with --threshold / clf.threshold)"
            )


@dataclass(frozen=True)
class InputSpec:
    """One model input: its name, shape (``None`` for the batch) and dtype. An integer input
    (token ids) may carry the ``range`` of values its Embedding accepts, [low, high]. An input
    of one row of features may carry their ``features`` names, in the model's order: the header
    of the CSV it was exported from, or names given at export; files whose columns are named
    are then matched to them by name, never by position."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str
    range: tuple[int, int] | None = None
    features: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.dtype not in INPUT_DTYPES:
            raise ManifestError(
                f"Expected input {self.name!r} to have a dtype in {INPUT_DTYPES}, got {self.dtype!r}"
            )
        if self.features is not None:
            width = self.shape[1] if len(self.shape) == 2 else None
            if (
                width != len(self.features)
                or len(set(self.features)) != len(self.features)
                or not all(isinstance(f, str) and f for f in self.features)
            ):
                raise ManifestError(
                    f"Expected {width if width is not None else 'no'} distinct feature names for "
                    f"input {self.name!r} of shape {list(self.shape)}, got {list(self.features)}"
                )

    @property
    def feature_shape(self) -> tuple[int, ...]:
        """The shape of one sample: every dimension after the batch."""
        return tuple(int(d) for d in self.shape[1:])  # type: ignore[arg-type]

    @property
    def is_float(self) -> bool:
        return self.dtype == "float32"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"dtype": self.dtype, "name": self.name, "shape": list(self.shape)}
        if self.range is not None:
            out["range"] = list(self.range)
        if self.features is not None:
            out["features"] = list(self.features)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InputSpec:
        shape = _require(data, "shape", "input")
        if not isinstance(shape, list) or not shape or shape[0] is not None:
            raise ManifestError(f"Expected an input shape starting with null (the batch), got {shape!r}")
        if any(not isinstance(d, int) or d <= 0 for d in shape[1:]):
            raise ManifestError(f"Expected positive integer feature dimensions, got {shape!r}")
        bounds = data.get("range")
        if bounds is not None and (
            not isinstance(bounds, list)
            or len(bounds) != 2
            or not all(isinstance(b, int) and not isinstance(b, bool) for b in bounds)
            or bounds[0] > bounds[1]
        ):
            raise ManifestError(f"Expected an input range [low, high] of integers, got {bounds!r}")
        features = data.get("features")
        if features is not None and not isinstance(features, list):
            raise ManifestError(f"Expected a list of feature names, got {features!r}")
        return cls(
            name=str(_require(data, "name", "input")),
            shape=tuple(shape),
            dtype=str(_require(data, "dtype", "input")),
            range=None if bounds is None else (bounds[0], bounds[1]),
            features=None if features is None else tuple(features),
        )


@dataclass(frozen=True)
class Head:
    """What the model's output means and how it becomes a decision."""

    kind: str
    output: str
    units: int
    labels: tuple[str, ...]
    threshold: float | tuple[float, ...] | None

    def __post_init__(self) -> None:
        if self.kind not in HEAD_KINDS:
            raise ManifestError(f"Expected head kind in {HEAD_KINDS}, got {self.kind!r}")
        if self.output not in HEAD_OUTPUTS:
            raise ManifestError(f"Expected head output in {HEAD_OUTPUTS}, got {self.output!r}")
        if self.kind == "binary" and self.units != 1:
            raise ManifestError(f"Expected 1 output unit for a binary head, got {self.units}")
        validate_threshold(self.kind, self.units, self.threshold, "the head")

    def to_dict(self) -> dict[str, Any]:
        threshold = list(self.threshold) if isinstance(self.threshold, tuple) else self.threshold
        return {
            "kind": self.kind,
            "labels": list(self.labels),
            "output": self.output,
            "threshold": threshold,
            "units": self.units,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Head:
        threshold = _require(data, "threshold", "head")
        if isinstance(threshold, list):
            threshold = tuple(threshold)
        return cls(
            kind=_require(data, "kind", "head"),
            output=_require(data, "output", "head"),
            units=int(_require(data, "units", "head")),
            labels=tuple(str(label) for label in _require(data, "labels", "head")),
            threshold=threshold,
        )


@dataclass(frozen=True)
class Parity:
    """How closely a variant reproduces the Keras model, and whether it passed the gate."""

    n: int
    max_abs_diff: float
    mean_abs_diff: float
    label_agreement: float
    flips: int
    flips_near_threshold: int
    near_threshold_band: float
    tolerance: float
    min_agreement: float
    passed: bool
    data: str
    accuracy: float | None = None
    reference_accuracy: float | None = None
    batch_flips: int | None = None
    batch_max_abs_diff: float | None = None
    relative_tolerance: float | None = None  # regression heads: |diff| <= tolerance + this * |y|
    failures: tuple[str, ...] = ()
    # Flips within the variant's output resolution of the threshold (gate.near_tie_band): not
    # held against the agreement minimum. None in manifests written before keras-edge 0.3.
    near_ties: int | None = None
    near_tie_band: float | None = None
    # What the variant was compared on: "validation" (the user's data, with or without labels),
    # "calibration" (the user's calibration inputs) or "synthetic" (the seeded probe set, not
    # the user's data: the gate then proves the conversion, not the decisions the device will
    # make). None in manifests written before keras-edge 0.4.
    source: str | None = None

    def __post_init__(self) -> None:
        if self.source is not None and self.source not in PARITY_SOURCES:
            raise ManifestError(f"Expected parity source in {PARITY_SOURCES}, got {self.source!r}")

    @property
    def synthetic(self) -> bool:
        """Whether the gate ran on the seeded probe set instead of the user's data."""
        return self.source == "synthetic"

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["failures"] = list(self.failures)
        if self.source is None:  # manifests of older exports keep their bytes
            del out["source"]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Parity:
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["failures"] = tuple(kwargs.get("failures", ()))
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise ManifestError(f"Malformed parity record {data!r}: {exc}") from exc


@dataclass(frozen=True)
class FallbackAttempt:
    """One mixed-precision candidate tried for a full-int8 variant that missed its gate: how many
    layer groups and graph ops it kept in float, and what the gate measured (None: the candidate
    could not be made or loaded)."""

    float_groups: int
    float_ops: int
    label_agreement: float | None
    max_abs_diff: float | None
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FallbackAttempt:
        try:
            return cls(**{f.name: _require(data, f.name, "fallback attempt") for f in fields(cls)})
        except TypeError as exc:
            raise ManifestError(f"Malformed fallback attempt {data!r}: {exc}") from exc


@dataclass(frozen=True)
class Fallback:
    """Mixed precision: a full-int8 variant missed its gate, so the layers whose quantization
    moved its decisions most were kept in float, the fewest that made it pass.

    ``float_layers`` names Keras layers (an op no layer owns, by its graph name); ``float_ops`` of
    the graph's ``ops`` run in float. ``int8_bytes`` and ``int8_label_agreement`` are the full-int8
    file's, which this one replaces; ``passed`` is False when nothing tried passed (the variant is
    then that full-int8 file, and ``float_layers`` is empty)."""

    float_layers: tuple[str, ...]
    float_ops: int
    ops: int
    int8_bytes: int
    int8_label_agreement: float
    passed: bool
    attempts: tuple[FallbackAttempt, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["float_layers"] = list(self.float_layers)
        out["attempts"] = [a.to_dict() for a in self.attempts]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fallback:
        if not isinstance(data, dict):
            raise ManifestError(f"Expected the fallback record to be an object, got {data!r}")
        try:
            return cls(
                **{
                    **{f.name: _require(data, f.name, "fallback") for f in fields(cls)},
                    "float_layers": tuple(str(n) for n in _require(data, "float_layers", "fallback")),
                    "attempts": tuple(FallbackAttempt.from_dict(a) for a in data.get("attempts", ())),
                }
            )
        except TypeError as exc:
            raise ManifestError(f"Malformed fallback record {data!r}: {exc}") from exc


@dataclass(frozen=True)
class Variant:
    """One artifact: a format at a precision, with its hash, size, threshold and parity."""

    id: str
    file: str
    format: str
    precision: str
    sha256: str
    bytes: int
    threshold: float | tuple[float, ...] | None
    parity: Parity | None = None
    tuning: dict[str, Any] | None = None  # objective, and per label: threshold, value, counts
    fallback: Fallback | None = None  # int8 that missed its gate: the layers kept in float

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ManifestError(f"Expected variant format in {FORMATS}, got {self.format!r}")
        _check_file_name(self.file, f"variant {self.id!r}")

    @property
    def passed(self) -> bool:
        """True unless a parity check ran and failed."""
        return self.parity is None or self.parity.passed

    @property
    def float_layers(self) -> tuple[str, ...]:
        """The layers a mixed-precision int8 variant keeps in float; empty for the others."""
        return () if self.fallback is None else self.fallback.float_layers

    def to_dict(self) -> dict[str, Any]:
        threshold = list(self.threshold) if isinstance(self.threshold, tuple) else self.threshold
        return {
            "bytes": self.bytes,
            "fallback": None if self.fallback is None else self.fallback.to_dict(),
            "file": self.file,
            "format": self.format,
            "parity": None if self.parity is None else self.parity.to_dict(),
            "precision": self.precision,
            "sha256": self.sha256,
            "threshold": threshold,
            "tuning": self.tuning,
        }

    @classmethod
    def from_dict(cls, variant_id: str, data: dict[str, Any]) -> Variant:
        parity, fallback = data.get("parity"), data.get("fallback")
        threshold = _require(data, "threshold", f"variant {variant_id!r}")
        return cls(
            id=variant_id,
            file=str(_require(data, "file", f"variant {variant_id!r}")),
            format=str(_require(data, "format", f"variant {variant_id!r}")),
            precision=str(_require(data, "precision", f"variant {variant_id!r}")),
            sha256=str(_require(data, "sha256", f"variant {variant_id!r}")),
            bytes=int(_require(data, "bytes", f"variant {variant_id!r}")),
            threshold=tuple(threshold) if isinstance(threshold, list) else threshold,
            parity=None if parity is None else Parity.from_dict(parity),
            tuning=data.get("tuning"),
            fallback=None if fallback is None else Fallback.from_dict(fallback),
        )


@dataclass(frozen=True)
class CalibrationInfo:
    """The full-integer calibration data, and how well it covers the parity data.

    Full-int8 variants clip inputs outside the calibrated range silently, so the share of
    parity values outside each feature's calibrated [min, max] is recorded.
    """

    samples: int
    sha256: str
    data: str
    outside_fraction: float
    worst_feature: int
    worst_feature_outside: float
    range_ratio: float = 1.0
    widest_feature: int = 0
    narrowest_feature: int = 0
    constant_features: tuple[int, ...] = ()
    outside_by_feature: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["constant_features"] = list(self.constant_features)
        out["outside_by_feature"] = list(self.outside_by_feature)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CalibrationInfo:
        try:
            return cls(
                **{
                    **data,
                    "constant_features": tuple(data.get("constant_features", ())),
                    "outside_by_feature": tuple(data.get("outside_by_feature", ())),
                }
            )
        except TypeError as exc:
            raise ManifestError(f"Malformed calibration record {data!r}: {exc}") from exc


@dataclass(frozen=True)
class GoldenInfo:
    """The golden set beside the artifacts: a few hundred parity inputs (those nearest the
    threshold among them) with Keras's outputs and labels and each variant's answers at export,
    so that ``keras-edge verify`` can check a device's engines without TensorFlow."""

    file: str
    sha256: str
    n: int
    nearest: int
    data: str

    def __post_init__(self) -> None:
        _check_file_name(self.file, "the golden set")

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GoldenInfo:
        try:
            return cls(**{f.name: _require(data, f.name, "golden") for f in fields(cls)})
        except TypeError as exc:
            raise ManifestError(f"Malformed golden record {data!r}: {exc}") from exc


@dataclass(frozen=True)
class ModelInfo:
    """Where the artifacts came from."""

    name: str
    source_sha256: str
    keras_version: str
    tensorflow_version: str

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelInfo:
        return cls(**{f.name: str(_require(data, f.name, "model")) for f in fields(cls)})


@dataclass(frozen=True)
class Manifest:
    """Everything the runtime needs to load an artifact and turn its output into decisions."""

    model: ModelInfo
    inputs: tuple[InputSpec, ...]
    head: Head
    variants: dict[str, Variant]
    default_variant: str | None
    tools: dict[str, str] = field(default_factory=dict)
    calibration: CalibrationInfo | None = None
    golden: GoldenInfo | None = None
    refused: dict[str, str] = field(default_factory=dict)  # variant -> why it was not written
    tuning: dict[str, Any] | None = None  # objective, data, optimistic, Keras's tuned labels
    format_version: int = FORMAT_VERSION
    decision_rule: str = DECISION_RULE

    def __post_init__(self) -> None:
        if self.format_version != FORMAT_VERSION:
            raise ManifestError(
                f"Expected manifest format_version {FORMAT_VERSION}, got {self.format_version!r}"
            )
        if self.decision_rule != DECISION_RULE:
            raise ManifestError(f"Expected decision_rule {DECISION_RULE!r}, got {self.decision_rule!r}")
        for vid, variant in self.variants.items():
            validate_threshold(self.head.kind, self.head.units, variant.threshold, f"variant {vid!r}")
        check_thresholds(self)
        names = [spec.name for spec in self.inputs]
        if not names or len(set(names)) != len(names):
            raise ManifestError(f"Expected one or more inputs with distinct names, got {names}")
        if self.default_variant is not None and self.default_variant not in self.variants:
            raise ManifestError(
                f"Expected default_variant to be one of {sorted(self.variants)}, "
                f"got {self.default_variant!r}"
            )

    @property
    def input(self) -> InputSpec:
        """The first input (the only one, for most models)."""
        return self.inputs[0]

    def with_variants(
        self,
        variants: dict[str, Variant],
        default_variant: str | None,
        calibration: CalibrationInfo | None = None,
    ) -> Manifest:
        return replace(
            self, variants=dict(variants), default_variant=default_variant, calibration=calibration
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "calibration": None if self.calibration is None else self.calibration.to_dict(),
            "decision_rule": self.decision_rule,
            "default_variant": self.default_variant,
            "format_version": self.format_version,
            "golden": None if self.golden is None else self.golden.to_dict(),
            "head": self.head.to_dict(),
            "inputs": [spec.to_dict() for spec in self.inputs],
            "model": self.model.to_dict(),
            "refused": dict(self.refused),
            "tools": dict(self.tools),
            "tuning": self.tuning,
            "variants": {vid: v.to_dict() for vid, v in self.variants.items()},
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, indent=2, allow_nan=False) + "\n"

    def write(self, folder: str | Path) -> Path:
        path = Path(folder) / MANIFEST_NAME
        path.write_text(self.to_json(), encoding="utf-8")
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        if not isinstance(data, dict):
            raise ManifestError(f"Expected a JSON object in the manifest, got {type(data).__name__}")
        variants_raw = _require(data, "variants", "")
        if not isinstance(variants_raw, dict):
            raise ManifestError(f"Expected 'variants' to be an object, got {variants_raw!r}")
        return cls(
            format_version=_require(data, "format_version", ""),
            decision_rule=_require(data, "decision_rule", ""),
            model=ModelInfo.from_dict(_require(data, "model", "")),
            inputs=tuple(InputSpec.from_dict(i) for i in _require(data, "inputs", "")),
            head=Head.from_dict(_require(data, "head", "")),
            variants={vid: Variant.from_dict(vid, v) for vid, v in variants_raw.items()},
            default_variant=data.get("default_variant"),
            tools={str(k): str(v) for k, v in data.get("tools", {}).items()},
            calibration=(
                CalibrationInfo.from_dict(data["calibration"]) if data.get("calibration") else None
            ),
            golden=GoldenInfo.from_dict(data["golden"]) if data.get("golden") else None,
            refused={str(k): str(v) for k, v in (data.get("refused") or {}).items()},
            tuning=data.get("tuning"),
        )

    @classmethod
    def read(cls, folder: str | Path) -> Manifest:
        path = Path(folder) / MANIFEST_NAME
        if not Path(folder).is_dir():
            raise ManifestError(f"Expected a folder holding {MANIFEST_NAME}, got {str(folder)!r}")
        if not path.is_file():
            raise ManifestError(f"Expected a manifest at {str(path)!r}, found none")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ManifestError(f"Expected JSON in {str(path)!r}: {exc}") from exc
        manifest = cls.from_dict(data)
        logger.debug("read manifest %s with variants %s", path, sorted(manifest.variants))
        return manifest
