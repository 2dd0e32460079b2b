"""The manifest's records, the leaves of its schema: a model input, a variant's parity and
mixed-precision fallback, the calibration data's coverage, the golden set and the source model.
Each is a frozen dataclass with ``to_dict`` / ``from_dict``; a malformed record is a
:class:`ManifestError`. :mod:`keras_edge.runtime.manifest` builds the manifest from them and
re-exports them."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import PurePosixPath
from typing import Any

from keras_edge.runtime.errors import ManifestError

PARITY_SOURCES = ("validation", "calibration", "synthetic")
INPUT_DTYPES = ("float32", "int32", "int64", "uint8", "int8")
# Inputs whose values are pixels or other small whole numbers (a camera's uint8 image, an int8
# sensor): not ids, so a float array holding whole numbers in range is accepted.
PIXEL_DTYPES = ("uint8", "int8")


def require(data: dict[str, Any], key: str, where: str) -> Any:
    if key not in data:
        raise ManifestError(f"Manifest {where} is missing the key {key!r}; got keys {sorted(data)}")
    return data[key]


def check_file_name(name: str, what: str) -> None:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or "\\" in name or len(path.parts) != 1:
        raise ManifestError(
            f"Expected a plain file name inside the manifest's folder for {what}, got {name!r}"
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

    @property
    def is_pixels(self) -> bool:
        """uint8 / int8 values (a camera's pixels), not token ids."""
        return self.dtype in PIXEL_DTYPES

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"dtype": self.dtype, "name": self.name, "shape": list(self.shape)}
        if self.range is not None:
            out["range"] = list(self.range)
        if self.features is not None:
            out["features"] = list(self.features)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InputSpec:
        shape = require(data, "shape", "input")
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
            name=str(require(data, "name", "input")),
            shape=tuple(shape),
            dtype=str(require(data, "dtype", "input")),
            range=None if bounds is None else (bounds[0], bounds[1]),
            features=None if features is None else tuple(features),
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
            return cls(**{f.name: require(data, f.name, "fallback attempt") for f in fields(cls)})
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
                    **{f.name: require(data, f.name, "fallback") for f in fields(cls)},
                    "float_layers": tuple(str(n) for n in require(data, "float_layers", "fallback")),
                    "attempts": tuple(FallbackAttempt.from_dict(a) for a in data.get("attempts", ())),
                }
            )
        except TypeError as exc:
            raise ManifestError(f"Malformed fallback record {data!r}: {exc}") from exc


@dataclass(frozen=True)
class Kernels:
    """How the target's kernel library runs a full-int8 TFLite variant: LiteRT's XNNPACK
    delegate takes it in ``partitions`` partitions (one is the whole graph), and leaves the ops in
    ``left_out`` (op type -> count) to LiteRT's slower built-in kernels. ``kept_float`` (op type
    -> count) are the ops quantized by the converter that XNNPACK has no int8 kernel for, kept in
    float for that reason (XNNPACK runs them in float between quantize and dequantize), not for
    the decisions; the full-int8 file split into ``int8_partitions``. The decisions' float layers
    are the ``fallback`` record's. Measured on the model's graph, before ``--with-decision``
    adds its class outputs (integer ops XNNPACK may leave to LiteRT, after the model's own)."""

    engine: str
    partitions: int
    left_out: dict[str, int]
    kept_float: dict[str, int]
    int8_partitions: int

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Kernels:
        if not isinstance(data, dict):
            raise ManifestError(f"Expected the kernels record to be an object, got {data!r}")
        try:
            out = cls(**{f.name: require(data, f.name, "kernels") for f in fields(cls)})
        except TypeError as exc:
            raise ManifestError(f"Malformed kernels record {data!r}: {exc}") from exc
        for name in ("left_out", "kept_float"):
            counts = getattr(out, name)
            if not isinstance(counts, dict) or not all(
                isinstance(op, str) and isinstance(n, int) and not isinstance(n, bool)
                for op, n in counts.items()
            ):
                raise ManifestError(f"Expected kernels.{name} to map op types to counts, got {counts!r}")
        for name in ("partitions", "int8_partitions"):
            value = getattr(out, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ManifestError(f"Expected kernels.{name} to be a count, got {value!r}")
        if not isinstance(out.engine, str):
            raise ManifestError(f"Expected kernels.engine to be a name, got {out.engine!r}")
        return out


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
        check_file_name(self.file, "the golden set")

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GoldenInfo:
        try:
            return cls(**{f.name: require(data, f.name, "golden") for f in fields(cls)})
        except TypeError as exc:
            raise ManifestError(f"Malformed golden record {data!r}: {exc}") from exc


CUSTOM_SOURCE_KINDS = ("file", "module", "object")


@dataclass(frozen=True)
class CustomSource:
    """User code imported before the model was loaded (``--custom-objects``): a ``file`` by its
    name only (no folder: the manifest names no path outside itself) and its SHA-256, a
    ``module`` by its dotted name, or an ``object`` given in Python by the name Keras knew it by."""

    kind: str
    source: str
    sha256: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in CUSTOM_SOURCE_KINDS:
            raise ManifestError(
                f"Expected a custom-objects kind in {CUSTOM_SOURCE_KINDS}, got {self.kind!r}"
            )
        if not isinstance(self.source, str) or not self.source:
            raise ManifestError(f"Expected a custom-objects source name, got {self.source!r}")
        if self.kind == "file":
            check_file_name(self.source, "a custom-objects file")
            if not isinstance(self.sha256, str) or len(self.sha256) != 64:
                raise ManifestError(
                    f"Expected the SHA-256 (64 hex digits) of custom-objects file "
                    f"{self.source!r}, got {self.sha256!r}"
                )

    def to_dict(self) -> dict[str, Any]:
        out = {"kind": self.kind, "source": self.source}
        if self.sha256 is not None:
            out["sha256"] = self.sha256
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CustomSource:
        if not isinstance(data, dict):
            raise ManifestError(f"Expected a custom-objects record (an object), got {data!r}")
        return cls(
            kind=str(require(data, "kind", "custom_objects")),
            source=str(require(data, "source", "custom_objects")),
            sha256=data.get("sha256"),
        )


@dataclass(frozen=True)
class ModelInfo:
    """Where the artifacts came from: the model, the versions that read it, and the user code
    imported to load it (``custom_objects``; absent from the JSON when there was none, and in
    manifests written before the key existed)."""

    name: str
    source_sha256: str
    keras_version: str
    tensorflow_version: str
    custom_objects: tuple[CustomSource, ...] = ()
    # Layers whose recurrent loops were unrolled in the copy the converters got (same weights,
    # gated against this model): "'bidirectional' (Bidirectional of LSTM)". Both written only
    # when there are some, so that other models' manifests keep their bytes.
    unrolled: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        optional = ("custom_objects", "unrolled")
        out: dict[str, Any] = {
            f.name: getattr(self, f.name) for f in fields(self) if f.name not in optional
        }
        if self.custom_objects:
            out["custom_objects"] = [c.to_dict() for c in self.custom_objects]
        if self.unrolled:
            out["unrolled"] = list(self.unrolled)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelInfo:
        custom = data.get("custom_objects", [])
        if not isinstance(custom, list):
            raise ManifestError(f"Expected model.custom_objects to be a list, got {custom!r}")
        unrolled = data.get("unrolled", [])
        if not isinstance(unrolled, list) or not all(isinstance(u, str) for u in unrolled):
            raise ManifestError(f"Expected model.unrolled to be a list of layer names, got {unrolled!r}")
        names = [f.name for f in fields(cls) if f.name not in ("custom_objects", "unrolled")]
        return cls(
            **{name: str(require(data, name, "model")) for name in names},
            custom_objects=tuple(CustomSource.from_dict(c) for c in custom),
            unrolled=tuple(unrolled),
        )
