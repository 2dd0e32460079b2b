"""Load an exported variant and turn its outputs into decisions.

``load()`` reads the manifest, checks the artifact's hash, builds one engine, and returns a
:class:`Classifier`. The classifier checks every input on the way in (shape, dtype, NaN/Inf),
because the engines answer bad input silently: fed ``[nan, 0]`` an fp32 model answers NaN
(class 0 by ``p > t``) and a full-int8 model answers p = 0.996 (class 1).
"""

from __future__ import annotations

import hashlib
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from runtime.engines import LiteRTEngine, OnnxEngine, engine_installed, make_engine
from runtime.errors import ArtifactError, InputError, UnknownVariantError
from runtime.manifest import Head, Manifest, Variant

logger = logging.getLogger(__name__)

_FLOAT32 = np.dtype(np.float32)
# Kinds of input dtype that cast to float32 without losing what they mean.
_CASTABLE_KINDS = "fiub"


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-z.astype(np.float64)))).astype(np.float32)


def _softmax(z: np.ndarray) -> np.ndarray:
    shifted = z.astype(np.float64) - z.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


class Classifier:
    """One loaded variant. ``predict`` gives classes; ``predict_proba`` gives probabilities.

    Not safe to share between threads: LiteRT interpreters are not. Load one per thread.
    """

    def __init__(
        self,
        manifest: Manifest,
        variant: Variant,
        engine: OnnxEngine | LiteRTEngine,
        device: str,
    ) -> None:
        self.manifest = manifest
        self.head: Head = manifest.head
        self.variant: str = variant.id
        self.variant_info = variant
        self.device = device
        self.providers: list[str] = list(engine.providers)
        self.engine = engine
        self.threshold: float | tuple[float, ...] | None = variant.threshold
        spec = manifest.input
        self._feature_shape = spec.feature_shape
        self._rank = len(spec.shape)
        self._input_name = spec.name
        self._run = engine.run
        self._in_q = engine.input_quantization
        self._out_q = engine.output_quantization
        head = self.head
        self._out_shape_tail = (head.units,)
        # Precompute everything the decision needs, so a call does only the comparison.
        if head.kind == "binary":
            t = float(variant.threshold)  # type: ignore[arg-type]
            self._cut = np.float32(math.log(t / (1.0 - t))) if head.output == "logit" else t
        elif head.kind == "multilabel":
            ts = np.asarray(variant.threshold, dtype=np.float64)
            cut = np.log(ts / (1.0 - ts)) if head.output == "logit" else ts
            self._cut = cut.astype(np.float32).reshape(1, -1)
        else:
            self._cut = None

    def __repr__(self) -> str:
        return (
            f"Classifier(variant={self.variant!r}, head={self.head.kind!r}, "
            f"threshold={self.threshold!r}, device={self.device!r}, providers={self.providers!r})"
        )

    # -- input checks -------------------------------------------------------------------------

    def _check(self, x: Any) -> np.ndarray:
        """Return ``x`` as a C-contiguous float32 array of the model's shape, or raise."""
        if type(x) is not np.ndarray:
            try:
                x = np.asarray(x)
            except (ValueError, TypeError) as exc:  # ragged nested lists
                raise InputError(
                    f"Expected a numeric array of shape (None, "
                    f"{', '.join(map(str, self._feature_shape))}), got an input numpy cannot "
                    f"turn into one: {exc}"
                ) from exc
        if x.dtype is not _FLOAT32:
            if x.dtype.kind not in _CASTABLE_KINDS:
                raise InputError(
                    f"Expected a numeric input (float, int, uint or bool) for "
                    f"{self._input_name!r}, got dtype {x.dtype}"
                )
            with np.errstate(over="ignore"):
                x = x.astype(np.float32)  # out-of-range float64 becomes inf: caught below
        if x.shape[1:] != self._feature_shape:
            expected = (None, *self._feature_shape)
            if x.ndim != self._rank:
                hint = " (use x.reshape(1, -1) for one sample)" if x.ndim == self._rank - 1 else ""
                raise InputError(
                    f"Expected input of rank {self._rank} with shape {expected}, got rank "
                    f"{x.ndim} with shape {x.shape}{hint}"
                )
            raise InputError(f"Expected input of shape {expected}, got {x.shape}")
        if not x.flags.c_contiguous:
            x = np.ascontiguousarray(x)
        # One float64 reduction is the cheap test: it cannot overflow on finite float32
        # values, so it is NaN/Inf exactly when an input is. The details are found only then.
        if not math.isfinite(x.sum(dtype=np.float64)):
            bad = ~np.isfinite(x)
            rows = np.unique(np.nonzero(bad)[0])
            raise InputError(
                f"Expected finite inputs, got NaN or Inf in {bad.sum()} value(s) of "
                f"{len(rows)} sample(s) (first at row {int(rows[0])}); the engines would "
                f"answer them with a confident wrong class"
            )
        return x

    def _forward(self, x: Any) -> np.ndarray:
        """Raw model output (float32, Keras's shape) for a checked input."""
        x = self._check(x)
        if x.shape[0] == 0:
            return np.empty((0, *self._out_shape_tail), dtype=np.float32)
        if self._in_q is not None:
            x = self._in_q.quantize(x)
        y = self._run(x)
        if self._out_q is not None:
            y = self._out_q.dequantize(y)
        return y

    # -- public API ---------------------------------------------------------------------------

    def predict_proba(self, x: Any) -> np.ndarray:
        """Probabilities, float32, the shape Keras ``model.predict`` gives: (n, units).

        A logit head gets the sigmoid (binary, multilabel) or softmax (multiclass) applied.
        A regression head has no probabilities: use :meth:`predict`.
        """
        head = self.head
        if head.kind == "regression":
            raise InputError(
                "Expected a classifier head for predict_proba, got a regression head; "
                "use predict() for its values"
            )
        y = self._forward(x)
        if head.output == "logit":
            return _softmax(y) if head.kind == "multiclass" else _sigmoid(y)
        return y

    def predict(self, x: Any) -> np.ndarray:
        """Decisions: int labels (n,) for binary and multiclass, (n, k) for multilabel.

        Binary and multilabel use the rule of Keras ``BinaryAccuracy``: ``p > threshold``
        (for a logit head, ``z > log(t / (1 - t))``, the same rule). Multiclass takes the argmax.
        A regression head returns its values as they are (float32, (n, units)).
        """
        y = self._forward(x)
        kind = self.head.kind
        if kind == "binary":
            return (y > self._cut).reshape(-1).astype(np.int64)
        if kind == "multilabel":
            return (y > self._cut).astype(np.int64)
        if kind == "multiclass":
            return y.argmax(axis=1).astype(np.int64)
        return y


def _choose_variant(manifest: Manifest, requested: str | None) -> Variant:
    if requested is not None:
        if requested not in manifest.variants:
            raise UnknownVariantError(
                f"Unknown variant {requested!r}; this manifest has {sorted(manifest.variants)}"
            )
        return manifest.variants[requested]
    candidates = [v for v in manifest.variants.values() if v.passed]
    if not candidates:
        raise UnknownVariantError(
            f"No variant passed its parity gate; the manifest lists {sorted(manifest.variants)} "
            f"(ask for one by name to load it anyway)"
        )
    default = manifest.variants.get(manifest.default_variant or "")
    if default is not None and default.passed and engine_installed(default.format):
        return default
    for variant in candidates:
        if engine_installed(variant.format):
            logger.info(
                "default variant %r cannot run here; chose %r", manifest.default_variant, variant.id
            )
            return variant
    # Nothing can run: report the first candidate's missing engine.
    return candidates[0]


def read_artifact(folder: Path, variant: Variant) -> bytes:
    """The artifact's bytes, after checking they are the bytes the manifest describes."""
    path = folder / variant.file
    root = folder.resolve()
    if root not in path.resolve().parents:
        raise ArtifactError(f"Variant {variant.id!r}: file {variant.file!r} leaves {str(folder)!r}")
    if not path.is_file():
        raise ArtifactError(f"Variant {variant.id!r}: expected the file {str(path)!r}, found none")
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != variant.sha256:
        raise ArtifactError(
            f"Variant {variant.id!r}: {variant.file!r} has sha256 {digest}, the manifest "
            f"expects {variant.sha256}; the file is corrupt or was replaced"
        )
    return data


def load(
    folder: str | Path,
    variant: str | None = None,
    device: str = "cpu",
    threads: int | None = None,
) -> Classifier:
    """Load a variant from an exported folder.

    Args:
        folder: the folder holding ``manifest.json`` and the artifacts.
        variant: a variant id (e.g. ``"onnx-int8"``). ``None`` takes the manifest's default,
            or the first variant that passed its gate and whose engine is installed here.
        device: ``"cpu"``, or an accelerator ONNX Runtime knows (``"cuda"``, ...). Refused
            with :class:`DeviceUnavailableError` when the engine cannot use it.
        threads: intra-op threads for the engine; ``None`` leaves the engine's default.
    """
    if threads is not None and (
        isinstance(threads, bool) or not isinstance(threads, int) or threads < 1
    ):
        raise InputError(f"Expected threads to be a positive integer or None, got {threads!r}")
    folder = Path(folder)
    manifest = Manifest.read(folder)
    chosen = _choose_variant(manifest, variant)
    engine = make_engine(chosen.format, read_artifact(folder, chosen), device, threads)
    clf = Classifier(manifest, chosen, engine, device)
    logger.info("loaded variant %r on %s (%s)", chosen.id, device, ", ".join(clf.providers))
    return clf
