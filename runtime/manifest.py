"""The manifest: the contract between the exporter (which writes it) and the runtime (reads it).

``manifest.json`` lives beside the artifacts. It is written with sorted keys and no timestamps
or absolute paths, so the same model, data and options give the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from keras_edge.runtime.errors import ManifestError
from keras_edge.runtime.records import (
    INPUT_DTYPES,  # noqa: F401 (re-exported, as the records are: they are imported from here too)
    CalibrationInfo,
    CustomSource,  # noqa: F401
    Fallback,
    FallbackAttempt,  # noqa: F401
    GoldenInfo,
    InputSpec,
    Kernels,
    ModelInfo,
    Parity,
    check_file_name,
    require,
)

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
DECISION_RULE = "p > threshold"

HEAD_KINDS = ("binary", "multilabel", "multiclass", "regression")
# A model with several outputs has one head per output; its manifest's head is of this kind, and
# lists them (``heads``) in the order their units lie side by side in the artifact's one output.
SEVERAL = "heads"
OUTPUT_STRUCTURES = ("dict", "list")  # what Keras's predict returns for such a model
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


def read_checked(path: Path, sha256: str) -> tuple[bytes, str | None]:
    """A file's bytes, and None when their SHA-256 is ``sha256``, else the digest they have:
    the one check of an export's files (artifacts, the golden set) against its manifest."""
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    return data, None if digest == sha256 else digest


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


def _as_tuple(value: Any) -> Any:
    """Lists as tuples, at any depth (a model with several heads has one threshold per head)."""
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


def _as_list(value: Any) -> Any:
    return [_as_list(v) for v in value] if isinstance(value, (list, tuple)) else value


def _tuned(record: dict[str, Any] | None, kind: str | Head) -> Any:
    """The threshold a tuning record chose: one per label for multilabel; None without one.
    For several heads (``kind`` is the head), one per head: the tuned one where the record has
    entries for the head (each entry names its ``head``), else the head's own."""
    labels = (record or {}).get("labels")
    if not isinstance(labels, list) or not labels:
        return None
    if isinstance(kind, Head):
        try:
            named = {str(entry["head"]) for entry in labels}
        except (KeyError, TypeError) as exc:
            raise ManifestError(f"Malformed tuning record {record!r}: {exc!r}") from exc
        unknown = named - {p.name for p in kind.parts}
        if unknown:
            raise ManifestError(f"Expected tuning entries for the heads, got ones for {sorted(unknown)}")
        return tuple(
            _tuned({"labels": [e for e in labels if e["head"] == p.name]}, p.kind) if p.name in named
            else p.threshold
            for p in kind.parts
        )  # fmt: skip
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
    kind = head if head.kind == SEVERAL else head.kind  # several heads: tuned one by one
    keras = _tuned({"labels": (manifest.tuning or {}).get("keras")}, kind)
    if keras is not None and _as_tuple(keras) != _as_tuple(head.threshold):
        raise ManifestError(
            f"The head's threshold is {head.threshold!r}, but the export tuned {keras!r} for the "
            f"Keras model; one of them was changed after the export"
        )
    for vid, variant in manifest.variants.items():
        tuned = _tuned(variant.tuning, kind)
        expected, why = (
            (head.threshold, "the head's threshold") if tuned is None
            else (tuned, "the threshold its tuning record chose")
        )  # fmt: skip
        if _as_tuple(variant.threshold) != _as_tuple(expected):
            raise ManifestError(
                f"Variant {vid!r} decides with threshold {variant.threshold!r}, but {why} is "
                f"{expected!r}; one of them was changed after the export (export again with the "
                f"threshold you want: --threshold, or --tune-threshold)"
            )


@dataclass(frozen=True)
class Head:
    """What the model's output means and how it becomes a decision.

    A model with several outputs has a head of kind ``"heads"``: its ``parts`` are one head per
    output, each with its ``name`` (the output's), in the order their units lie side by side in
    the artifact's one output; ``structure`` says whether Keras's ``predict`` gives them as a
    ``dict`` by name or a ``list`` in order. Its threshold is the tuple of theirs."""

    kind: str
    output: str
    units: int
    labels: tuple[str, ...]
    threshold: Any
    name: str | None = None
    parts: tuple[Head, ...] = ()
    structure: str | None = None

    def __post_init__(self) -> None:
        if self.kind == SEVERAL:
            names = [part.name for part in self.parts]
            if len(self.parts) < 2 or any(not n for n in names) or len(set(names)) != len(names):
                raise ManifestError(f"Expected two or more heads with distinct names, got {names}")
            if self.structure not in OUTPUT_STRUCTURES:
                raise ManifestError(
                    f"Expected the heads' structure in {OUTPUT_STRUCTURES}, got {self.structure!r}"
                )
            self.check_threshold(self.threshold, "the heads")
            return
        if self.kind not in HEAD_KINDS:
            raise ManifestError(f"Expected head kind in {(*HEAD_KINDS, SEVERAL)}, got {self.kind!r}")
        if self.output not in HEAD_OUTPUTS:
            raise ManifestError(f"Expected head output in {HEAD_OUTPUTS}, got {self.output!r}")
        if self.kind == "binary" and self.units != 1:
            raise ManifestError(f"Expected 1 output unit for a binary head, got {self.units}")
        where = "the head" if self.name is None else f"head {self.name!r}"
        validate_threshold(self.kind, self.units, self.threshold, where)

    @classmethod
    def several(cls, parts: tuple[Head, ...], structure: str) -> Head:
        """The head of a model with several outputs, one ``part`` per output."""
        return cls(
            kind=SEVERAL, output="probability", units=sum(p.units for p in parts), labels=(),
            threshold=tuple(p.threshold for p in parts), parts=tuple(parts), structure=structure,
        )  # fmt: skip

    @property
    def heads(self) -> tuple[Head, ...]:
        """Every head: the parts of a model with several outputs, else this one."""
        return self.parts or (self,)

    def slices(self) -> list[slice]:
        """Each head's columns of the one output, in order."""
        out, start = [], 0
        for part in self.heads:
            out.append(slice(start, start + part.units))
            start += part.units
        return out

    def check_threshold(self, threshold: Any, where: str) -> None:
        """:func:`validate_threshold` for this head; for several heads, one per head."""
        if self.kind != SEVERAL:
            validate_threshold(self.kind, self.units, threshold, where)
            return
        if not isinstance(threshold, tuple) or len(threshold) != len(self.parts):
            raise ManifestError(
                f"Expected {len(self.parts)} thresholds (one per head, in the order "
                f"{[p.name for p in self.parts]}) for {where}, got {threshold!r}"
            )
        for part, t in zip(self.parts, threshold, strict=True):
            validate_threshold(part.kind, part.units, t, f"{where}, head {part.name!r}")

    def with_threshold(self, threshold: Any) -> Head:
        """This head deciding at ``threshold`` (one per head for several heads)."""
        if self.kind != SEVERAL:
            return replace(self, threshold=threshold)
        parts = tuple(replace(p, threshold=t) for p, t in zip(self.parts, threshold, strict=True))
        return Head.several(parts, self.structure or "list")

    def to_dict(self) -> dict[str, Any]:
        if self.kind == SEVERAL:
            return {
                "heads": [part.to_dict() for part in self.parts],
                "kind": SEVERAL,
                "structure": self.structure,
            }
        out = {
            "kind": self.kind,
            "labels": list(self.labels),
            "output": self.output,
            "threshold": _as_list(self.threshold),
            "units": self.units,
        }
        if self.name is not None:
            out["name"] = self.name
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Head:
        if not isinstance(data, dict):
            raise ManifestError(f"Expected the head to be an object, got {data!r}")
        if data.get("kind") == SEVERAL:
            parts = require(data, "heads", "head")
            if not isinstance(parts, list):
                raise ManifestError(f"Expected 'heads' to be a list, got {parts!r}")
            structure = require(data, "structure", "head")
            return cls.several(tuple(cls.from_dict(p) for p in parts), structure)
        threshold = require(data, "threshold", "head")
        if isinstance(threshold, list):
            threshold = tuple(threshold)
        name = data.get("name")
        return cls(
            kind=require(data, "kind", "head"),
            output=require(data, "output", "head"),
            units=int(require(data, "units", "head")),
            labels=tuple(str(label) for label in require(data, "labels", "head")),
            threshold=threshold,
            name=None if name is None else str(name),
        )


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
    kernels: Kernels | None = None  # full-int8 TFLite: XNNPACK's partitions, ops kept float for it

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ManifestError(f"Expected variant format in {FORMATS}, got {self.format!r}")
        check_file_name(self.file, f"variant {self.id!r}")

    @property
    def passed(self) -> bool:
        """True unless a parity check ran and failed."""
        return self.parity is None or self.parity.passed

    @property
    def float_layers(self) -> tuple[str, ...]:
        """The layers a mixed-precision int8 variant keeps in float; empty for the others."""
        return () if self.fallback is None else self.fallback.float_layers

    def to_dict(self) -> dict[str, Any]:
        threshold = _as_list(self.threshold)
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
            # Only where measured (full-int8 TFLite): the other variants keep their bytes.
            **({} if self.kernels is None else {"kernels": self.kernels.to_dict()}),
        }

    @classmethod
    def from_dict(cls, variant_id: str, data: dict[str, Any]) -> Variant:
        parity, fallback = data.get("parity"), data.get("fallback")
        threshold = require(data, "threshold", f"variant {variant_id!r}")
        return cls(
            id=variant_id,
            file=str(require(data, "file", f"variant {variant_id!r}")),
            format=str(require(data, "format", f"variant {variant_id!r}")),
            precision=str(require(data, "precision", f"variant {variant_id!r}")),
            sha256=str(require(data, "sha256", f"variant {variant_id!r}")),
            bytes=int(require(data, "bytes", f"variant {variant_id!r}")),
            threshold=_as_tuple(threshold),
            parity=None if parity is None else Parity.from_dict(parity),
            tuning=data.get("tuning"),
            fallback=None if fallback is None else Fallback.from_dict(fallback),
            kernels=None if data.get("kernels") is None else Kernels.from_dict(data["kernels"]),
        )


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
            self.head.check_threshold(variant.threshold, f"variant {vid!r}")
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
        variants_raw = require(data, "variants", "")
        if not isinstance(variants_raw, dict):
            raise ManifestError(f"Expected 'variants' to be an object, got {variants_raw!r}")
        return cls(
            format_version=require(data, "format_version", ""),
            decision_rule=require(data, "decision_rule", ""),
            model=ModelInfo.from_dict(require(data, "model", "")),
            inputs=tuple(InputSpec.from_dict(i) for i in require(data, "inputs", "")),
            head=Head.from_dict(require(data, "head", "")),
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
