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
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from keras_edge.runtime import embedded
from keras_edge.runtime.engines import (
    LITERT_ACCELERATORS,
    ONNX_PROVIDERS,
    SMALL,
    LiteRTEngine,
    OnnxEngine,
    Quantization,
    engine_installed,
    make_engine,
    missing_engine,
)
from keras_edge.runtime.errors import (
    ArtifactError,
    DeviceUnavailableError,
    InputError,
    ManifestError,
    UnknownVariantError,
)
from keras_edge.runtime.gate import label_names, multiclass_labels
from keras_edge.runtime.golden import check_classifier, raise_on_failure, read_golden
from keras_edge.runtime.manifest import Head, InputSpec, Manifest, Variant, validate_threshold
from keras_edge.runtime.report import export_order

logger = logging.getLogger(__name__)
# 0 x Inf in _all_finite's dot product warns "invalid value" on the way to a typed InputError.
warnings.filterwarnings("ignore", "invalid value encountered in dot", RuntimeWarning, __name__)

_FLOAT32 = np.dtype(np.float32)
_isfinite = math.isfinite
_ONE, _ZERO = np.ones(1, dtype=np.int64), np.zeros(1, dtype=np.int64)
# Kinds of input dtype that cast to float32 without losing what they mean.
_CASTABLE_KINDS = "fiub"
_F32_MAX = float(np.finfo(np.float32).max)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-z.astype(np.float64)))).astype(np.float32)


def _softmax(z: np.ndarray) -> np.ndarray:
    shifted = z.astype(np.float64) - z.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


class Classifier:
    """One loaded variant. ``predict`` gives classes; ``predict_proba`` gives probabilities.

    Safe to share between threads: ONNX Runtime sessions are, and a LiteRT variant gives each
    calling thread its own interpreter. Picklable: it travels as its artifact's bytes and is
    rebuilt where it lands (a process pool, Ray, Spark).
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
        self._specs = manifest.inputs
        self._multi = len(self._specs) > 1
        spec = manifest.input
        self._feature_shape = spec.feature_shape
        self._float_input = spec.is_float
        self._in_qs = list(engine.input_quantizations)
        self._run = engine.run
        self._run_transient = engine.run_transient
        self._in_q = engine.input_quantization
        self._out_q = engine.output_quantization
        head = self.head
        self._out_shape_tail = (head.units,)
        self._out_dtype = np.float32 if self._out_q is None else self._out_q.dtype
        self._set_threshold(variant.threshold)

    @property
    def threshold(self) -> float | tuple[float, ...] | None:
        """The threshold ``predict`` decides with (rule ``p > threshold``; one per label for
        multilabel; for multiclass the minimum confidence, or ``None`` for a plain argmax;
        ``None`` for regression). Settable: the new value is checked like the manifest's and
        decides from the next call on."""
        return self._threshold

    @threshold.setter
    def threshold(self, value: float | Sequence[float] | None) -> None:
        if isinstance(value, (list, tuple, np.ndarray)):
            value = tuple(float(v) for v in value)
        try:
            validate_threshold(self.head.kind, self.head.units, value, f"variant {self.variant!r}")
        except ManifestError as exc:
            raise InputError(str(exc)) from exc
        self._set_threshold(value)

    def _set_threshold(self, threshold: Any) -> None:
        """Precompute everything the decision needs, so a call does only the comparison."""
        self._threshold = threshold
        self._cut = decision_cut(self.head, threshold, self._out_q)
        if (
            self.head.kind == "binary"
            and self._in_q is None
            and self._float_input
            and not self._multi
        ):
            # Shadows the method for this instance: same results, fewer steps per call.
            self.predict = self._fast_binary_predict()  # type: ignore[method-assign]

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickle as the artifact's bytes, the manifest, the variant and the settings: the
        engine is rebuilt where it is unpickled (a process pool's worker, a Ray or Spark
        task), with the threshold as it is now."""
        engine = self.engine
        state = (self.manifest, self.variant_info, engine.model, self.device, engine.threads)
        return _rebuild, (*state, self._threshold)

    def __repr__(self) -> str:
        return (
            f"Classifier(variant={self.variant!r}, head={self.head.kind!r}, "
            f"threshold={self.threshold!r}, device={self.device!r}, providers={self.providers!r})"
        )

    # -- input checks -------------------------------------------------------------------------

    def _check(self, x: Any, index: int = 0) -> np.ndarray:
        """``x`` as a C-contiguous array of input ``index``'s shape and dtype, or a typed error:
        float32 for float inputs; for integer inputs (token ids) integers only, never a float
        cast, within the Embedding's range when the manifest records it."""
        spec = self._specs[index]
        feature_shape, rank = spec.feature_shape, len(spec.shape)
        if type(x) is not np.ndarray:
            try:
                x = np.asarray(x)
            except (ValueError, TypeError) as exc:  # ragged nested lists
                raise InputError(
                    f"Expected a numeric array of shape (None, "
                    f"{', '.join(map(str, feature_shape))}) for {spec.name!r}, got an input "
                    f"numpy cannot turn into one: {exc}"
                ) from exc
        if spec.is_float:
            if x.dtype is not _FLOAT32:
                if x.dtype.kind not in _CASTABLE_KINDS:
                    raise InputError(
                        f"Expected a numeric input (float, int, uint or bool) for "
                        f"{spec.name!r}, got dtype {x.dtype}"
                    )
                with np.errstate(over="ignore"):
                    cast = x.astype(np.float32)
                if x.dtype.kind == "f" and x.dtype.itemsize > 4 and x.size:
                    self._refuse_out_of_range(x, cast, spec.name)
                x = cast
        else:
            x = self._check_integers(x, spec)
        if x.shape[1:] != feature_shape:
            expected = (None, *feature_shape)
            what = f"input {spec.name!r}" if self._multi else "input"
            if x.ndim != rank:
                hint = " (use x.reshape(1, -1) for one sample)" if x.ndim == rank - 1 else ""
                raise InputError(
                    f"Expected {what} of rank {rank} with shape {expected}, got rank {x.ndim} "
                    f"with shape {x.shape}{hint}"
                )
            raise InputError(f"Expected {what} of shape {expected}, got {x.shape}")
        if not x.flags.c_contiguous:
            x = np.ascontiguousarray(x)
        return x

    @staticmethod
    def _check_integers(x: np.ndarray, spec: InputSpec) -> np.ndarray:
        """Token ids: an integer array in the input's dtype, values within its range."""
        dtype = np.dtype(spec.dtype)
        if x.dtype.kind not in "iub":
            raise InputError(
                f"Expected integer ids ({spec.dtype}) for {spec.name!r}, got dtype {x.dtype}; "
                f"integer inputs are never cast from floats"
            )
        if x.size:
            low, high = spec.range or (int(np.iinfo(dtype).min), int(np.iinfo(dtype).max))
            lo, hi = int(x.min()), int(x.max())
            if lo < low or hi > high:
                raise InputError(
                    f"Expected ids in [{low}, {high}] for {spec.name!r}, got values from {lo} to {hi}"
                )
        return x.astype(dtype, copy=False)

    def _check_many(self, x: Any) -> list[np.ndarray]:
        """One checked array per input, in the manifest's order, from a dict by name or a list
        or tuple in order; every input with the same number of samples."""
        names = [spec.name for spec in self._specs]
        if isinstance(x, dict):
            missing = [n for n in names if n not in x]
            extra = [str(k) for k in x if k not in names]
            if missing or extra:
                raise InputError(
                    f"Expected inputs named {names}, got {sorted(map(str, x))} (missing "
                    f"{missing}, unknown {extra})"
                )
            arrays = [x[n] for n in names]
        elif isinstance(x, (list, tuple)) and len(x) == len(names):
            arrays = list(x)
        else:
            got = (
                f"a {type(x).__name__} of {len(x)}" if isinstance(x, (list, tuple)) else type(x).__name__
            )
            raise InputError(
                f"Expected a dict {{name: array}} or a list of {len(names)} arrays in the order "
                f"{names}, got {got}"
            )
        checked = [self._check(a, i) for i, a in enumerate(arrays)]
        sizes = [len(a) for a in checked]
        if len(set(sizes)) > 1:
            raise InputError(
                f"Expected the same number of samples in every input, got "
                f"{dict(zip(names, sizes, strict=True))}"
            )
        return checked

    @staticmethod
    def _refuse_out_of_range(x: np.ndarray, cast: np.ndarray, name: str) -> None:
        """A finite float64 beyond float32's range becomes Inf in the cast: say so, rather
        than blame an Inf the caller never passed."""
        if _all_finite(cast):
            return
        beyond = np.isfinite(x) & ~np.isfinite(cast)
        if beyond.any():
            raise InputError(
                f"Expected values within float32's range (|x| <= {_F32_MAX:.4g}) for {name!r}, "
                f"got {int(beyond.sum())} value(s) beyond it (largest |x| "
                f"{float(np.abs(x[beyond]).max()):.4g})"
            )

    @staticmethod
    def _refuse_nonfinite(x: np.ndarray) -> None:
        bad = ~np.isfinite(x)
        rows = np.unique(np.nonzero(bad)[0])
        raise InputError(
            f"Expected finite inputs, got NaN or Inf in {int(bad.sum())} value(s) of "
            f"{len(rows)} sample(s) (first at row {int(rows[0])}); the engines would "
            f"answer them with a confident wrong class"
        )

    def _raw(self, x: Any, transient: bool = False) -> np.ndarray:
        """The engine's output for a checked input: float32, or integers for int8 output.
        ``transient``: the result may be a view valid only until the next call."""
        if self._multi:
            return self._raw_many(x)
        if not (
            type(x) is np.ndarray
            and x.dtype is _FLOAT32
            and self._float_input
            and x.shape[1:] == self._feature_shape
            and x.flags.c_contiguous
        ):
            x = self._check(x)  # the common case above needs no conversion
        if x.shape[0] == 0:
            return np.empty((0, *self._out_shape_tail), dtype=self._out_dtype)
        if not self._float_input:  # token ids: checked, never quantized
            return self._run_transient(x) if transient else self._run(x)
        in_q = self._in_q
        if x.size <= SMALL:
            # A few values: plain Python is 3-5x cheaper than numpy's per-call overhead.
            values = x.ravel().tolist()
            if not all(map(_isfinite, values)):
                self._refuse_nonfinite(x)
            if in_q is not None:
                x = in_q.quantize_values(values, x.shape)
        else:
            if not _all_finite(x):
                self._refuse_nonfinite(x)
            if in_q is not None:
                x = in_q.quantize(x)
        return self._run_transient(x) if transient else self._run(x)

    def _raw_many(self, x: Any) -> np.ndarray:
        """:meth:`_raw` for a model with several inputs."""
        xs = self._check_many(x)
        if len(xs[0]) == 0:
            return np.empty((0, *self._out_shape_tail), dtype=self._out_dtype)
        for i, (array, spec) in enumerate(zip(xs, self._specs, strict=True)):
            if spec.is_float:
                if not _all_finite(array):
                    self._refuse_nonfinite(array)
                if self._in_qs[i] is not None:
                    xs[i] = self._in_qs[i].quantize(array)  # type: ignore[union-attr]
        return self.engine.run_many(xs)

    def _values(self, y: np.ndarray) -> np.ndarray:
        return y if self._out_q is None else self._out_q.dequantize(y)

    def _fast_binary_predict(self) -> Any:
        """``predict`` for a binary head and float input, for the call a device makes most: a
        few float32 rows. Everything the call needs is bound here, once; any other input (a
        list, another dtype, NaN, a large batch, an empty one) takes the general path, which
        also raises the errors."""
        general = Classifier.predict.__get__(self)
        feature_shape, run, cut = self._feature_shape, self._run_transient, self._cut
        ndarray, float32, isfinite, small, labels = (
            np.ndarray,
            _FLOAT32,
            _isfinite,
            SMALL,
            _binary_labels,
        )

        def predict(x: Any) -> np.ndarray:
            if (
                type(x) is ndarray
                and x.dtype is float32
                and x.shape[1:] == feature_shape
                and 0 < x.size <= small
                and x.flags.c_contiguous
                and all(map(isfinite, x.ravel().tolist()))
            ):
                return labels(run(x), cut)
            return general(x)

        predict.__doc__ = Classifier.predict.__doc__
        return predict

    # -- public API ---------------------------------------------------------------------------

    def predict_proba(self, x: Any) -> np.ndarray:
        """Probabilities, float32, the shape Keras ``model.predict`` gives: (n, units).

        ``x`` is an array of samples; for a model with several inputs, a dict of arrays by input
        name or a list of them in the model's order (``clf.manifest.inputs``).

        A logit head gets the sigmoid (binary, multilabel) or softmax (multiclass) applied.
        A regression head has no probabilities: use :meth:`predict`.
        """
        head = self.head
        if head.kind == "regression":
            raise InputError(
                "Expected a classifier head for predict_proba, got a regression head; "
                "use predict() for its values"
            )
        y = self._values(self._raw(x))
        if head.output == "logit":
            return _softmax(y) if head.kind == "multiclass" else _sigmoid(y)
        return y

    @property
    def classes_(self) -> tuple[str, ...]:
        """The label names, in class-index order (scikit-learn's name for them)."""
        return self.head.labels

    def predict_labels(self, x: Any) -> np.ndarray | list[list[str]]:
        """Decisions as label names: an array of names, (n,), for binary and multiclass
        (``"unknown"`` where a multiclass sample is below the minimum confidence); for
        multilabel, the list of names that apply to each sample."""
        if self.head.kind == "regression":
            raise InputError("Expected a classifier head for predict_labels, got a regression head")
        labels = self.predict(x)
        names = np.asarray(self.head.labels, dtype=object)
        if self.head.kind == "multilabel":
            return [[str(n) for n in names[row.astype(bool)]] for row in labels]
        return label_names(self.head.labels, labels)

    def predict(self, x: Any) -> np.ndarray:
        """Decisions: int labels (n,) for binary and multiclass, (n, k) for multilabel.

        Binary and multilabel use the rule of Keras ``BinaryAccuracy``: ``p > threshold``
        (for a logit head, ``z > log(t / (1 - t))``, the same rule). Multiclass takes the argmax;
        with a threshold (the minimum confidence), -1 ("unknown") where the top probability is
        not above it.
        A regression head returns its values as they are (float32, (n, units)).
        """
        kind = self.head.kind
        y = self._raw(x, transient=kind != "regression")  # every branch below makes new arrays
        if kind == "binary":
            return _binary_labels(y, self._cut)  # type: ignore[arg-type]
        y = self._values(y)
        if kind == "multilabel":
            return (y > self._cut).astype(np.int64)
        if kind == "multiclass":
            return multiclass_labels(y, self._threshold)
        return y

    def predict_both(self, x: Any) -> tuple[np.ndarray, np.ndarray | None]:
        """``(predict_proba(x), predict(x))`` from one engine call, equal to the two calls
        bit for bit: what scoring files and batches needs. A regression head gives
        ``(values, None)``."""
        kind = self.head.kind
        y = self._raw(x)
        if kind == "regression":
            return y, None
        values = self._values(y)
        if kind == "binary":
            labels = _binary_labels(y, self._cut)  # type: ignore[arg-type]
        elif kind == "multilabel":
            labels = (values > self._cut).astype(np.int64)
        else:
            labels = multiclass_labels(values, self._threshold)
        if self.head.output == "logit":
            values = _softmax(values) if kind == "multiclass" else _sigmoid(values)
        return values, labels

    def score_batch(
        self,
        batch: Any,
        columns: Sequence[str] | None = None,
        keep: Sequence[str] | None = None,
        classes: bool = True,
        on_bad_row: str = "error",
        exclude: Sequence[str] = (),
    ) -> Any:
        """Score one batch of a table and return it with the outputs added: the function that
        Ray Data's ``map_batches`` and Dask's ``map_partitions`` call as it is (Spark's
        ``mapInArrow``: ``lambda batches: map(clf.score_batch, batches)``).

        ``batch`` is a ``pyarrow.Table`` or ``RecordBatch``, a ``pandas.DataFrame``, or a dict
        of numpy arrays (Ray's ``"numpy"`` batch format); the result is the same kind, with
        ``probability`` (binary) or ``p_<label>`` columns and ``class`` (``class_<label>`` for
        multilabel; ``value_<label>`` for regression). ``columns``: the feature columns (default:
        every numeric column but ``exclude`` and ``keep``); ``keep``: the input columns returned
        (default: all); ``classes=False``: probabilities only; ``on_bad_row``: ``error``, ``skip`` or
        ``null`` (see :func:`keras_edge.runtime.batch.table.score_batch`).
        """
        from keras_edge.runtime.batch.table import score_batch

        return score_batch(self, batch, columns, keep, classes, on_bad_row, exclude)


_ZEROS = np.zeros(0, dtype=np.float32)  # grows to the largest input seen; never written


def _all_finite(x: np.ndarray) -> bool:
    """True when every value of a C-contiguous float32 array is finite: its dot product with
    zeros is 0 for finite values and NaN as soon as one is NaN or Inf (0 x Inf is NaN), it cannot
    overflow, and BLAS computes it without a temporary array, 3x faster than a float64 sum."""
    global _ZEROS
    n, zeros = x.size, _ZEROS  # one read: another thread may replace it meanwhile
    if zeros.size < n:
        zeros = _ZEROS = np.zeros(n, dtype=np.float32)
    with np.errstate(invalid="ignore"):  # NaN is the answer here, not a warning
        return _isfinite(float(np.dot(x.reshape(-1), zeros[:n])))


def _binary_labels(y: np.ndarray, cut: float | int) -> np.ndarray:
    """``y > cut`` as int64 labels of shape (n,), for a binary head's raw output."""
    if y.size == 1:  # one sample, the usual call on a device: no numpy operation
        return (_ONE if y.item() > cut else _ZERO).copy()
    if y.size <= SMALL:
        return np.array([v > cut for v in y.ravel().tolist()], dtype=np.int64)
    return (y.ravel() > cut).astype(np.int64)


def decision_cut(
    head: Head, threshold: Any, out_q: Quantization | None = None
) -> np.ndarray | float | int | None:
    """What the raw output is compared with, ``output > cut``: the threshold in float32 (Keras
    compares float32 outputs with a float32 threshold), in the logit domain for a logit head,
    one per label for multilabel (shape (1, k)), and for an int8 output the integer cut that
    gives exactly the labels of dequantizing first; for multiclass the minimum confidence the
    top probability must exceed (None: plain argmax). None for regression.
    The exporter bakes the same cut into ``--with-decision`` artifacts."""
    if head.kind == "multilabel":
        ts = np.asarray(threshold, dtype=np.float64)
        cut = np.log(ts / (1.0 - ts)) if head.output == "logit" else ts
        return cut.astype(np.float32).reshape(1, -1)
    if head.kind == "binary":
        t = float(threshold)
        cut32 = np.float32(math.log(t / (1.0 - t)) if head.output == "logit" else t)
        return float(cut32) if out_q is None else integer_cut(out_q, cut32)
    if head.kind == "multiclass" and threshold is not None:  # softmax outputs: never logits
        cut32 = np.float32(threshold)
        return float(cut32) if out_q is None else integer_cut(out_q, cut32)
    return None


def integer_cut(q: Quantization, cut: float) -> int:
    """The integer c with ``q_out > c`` exactly when ``dequantize(q_out) > cut``."""
    info = np.iinfo(q.dtype)
    levels = np.arange(info.min, info.max + 1, dtype=np.int64)
    above = levels[q.dequantize(levels.astype(q.dtype)) > np.float32(cut)]
    return int(above[0]) - 1 if len(above) else int(info.max)


DEVICES = ("cpu", "auto", *(d for d in ONNX_PROVIDERS if d != "cpu"), *LITERT_ACCELERATORS)
# ``auto``'s preference among ONNX Runtime's accelerators. TensorRT is left to be asked for by
# name: it builds an engine when a session starts, which takes minutes on a new model.
AUTO_ORDER = ("cuda", "rocm", "directml", "coreml", "openvino", "qnn")


def device_format(device: str) -> str | None:
    """The artifact format an accelerator needs (None: the CPU runs both)."""
    if device in LITERT_ACCELERATORS:
        return "tflite"
    return None if device == "cpu" else "onnx"


def resolve_device(device: str, formats: set[str]) -> str:
    """``device`` checked; ``auto`` becomes the best accelerator ONNX Runtime offers here for
    an onnx variant (among ``formats``), else ``cpu``. LiteRT's gpu/npu are not probed by
    ``auto`` (compiling for them is the only test, and costs a model compilation): ask for
    them by name."""
    if not isinstance(device, str) or device not in DEVICES:
        raise DeviceUnavailableError(f"Expected device from {list(DEVICES)}, got {device!r}")
    if device != "auto":
        return device
    if "onnx" in formats and engine_installed("onnx"):
        import onnxruntime as ort

        offered = set(ort.get_available_providers())
        for candidate in AUTO_ORDER:
            if ONNX_PROVIDERS[candidate] in offered:
                logger.info("device auto: %s (ONNX Runtime offers %s)", candidate, sorted(offered))
                return candidate
    logger.info("device auto: cpu (no accelerator found for %s)", sorted(formats))
    return "cpu"


def _choose_variant(manifest: Manifest, requested: str | None, device: str = "cpu") -> Variant:
    needs = device_format(device)
    if requested is not None:
        if requested in manifest.refused:
            raise UnknownVariantError(
                f"Variant {requested!r} was not written by the export: {manifest.refused[requested]}"
                f"; this manifest has {sorted(manifest.variants)}"
            )
        if requested not in manifest.variants:
            raise UnknownVariantError(
                f"Unknown variant {requested!r}; this manifest has {sorted(manifest.variants)}"
            )
        chosen = manifest.variants[requested]
        if not chosen.passed:
            why = "; ".join(chosen.parity.failures) if chosen.parity is not None else "unchecked"
            logger.warning(
                "variant %r failed its parity gate at export (%s); loading it because it was asked "
                "for by name: its decisions may differ from the Keras model's",
                requested, why,
            )  # fmt: skip
        if needs is not None and chosen.format != needs:
            able = sorted(v for v, info in manifest.variants.items() if info.format == needs)
            raise DeviceUnavailableError(
                f"Variant {requested!r} is {chosen.format}, but device {device!r} runs {needs} "
                f"variants: one of {able}"
            )
        return chosen
    # The export's order: tflite before onnx, fp32 before quantized (never the JSON's order).
    passed = sorted((v for v in manifest.variants.values() if v.passed), key=export_order)
    if not passed:
        raise UnknownVariantError(
            f"No variant passed its parity gate; the manifest lists {sorted(manifest.variants)} "
            f"(ask for one by name to load it anyway)"
        )
    candidates = [v for v in passed if needs is None or v.format == needs]
    if not candidates:
        raise DeviceUnavailableError(
            f"Device {device!r} runs {needs} variants, and none passed in this export: it has "
            f"{sorted(v.id for v in passed)}"
        )
    default = manifest.variants.get(manifest.default_variant or "")
    if default in candidates and engine_installed(default.format):  # type: ignore[operator]
        return default  # type: ignore[return-value]
    for variant in candidates:
        if engine_installed(variant.format):
            if default is not None and default in candidates:
                logger.warning(
                    "default variant %r cannot run here (%s); loading %r instead",
                    default.id, missing_engine(default.format), variant.id,
                )  # fmt: skip
            else:
                logger.info("device %s runs %s variants: loading %r", device, needs, variant.id)
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
    verify: bool = False,
) -> Classifier:
    """Load a variant from an exported folder, or a lone ``.onnx`` / ``.tflite`` artifact.

    Args:
        folder: the folder holding ``manifest.json`` and the artifacts; or one artifact file,
            which decides as its folder does from the record embedded in it.
        variant: a variant id (e.g. ``"onnx-int8"``). ``None`` takes the manifest's default,
            or the first variant that passed its gate and whose engine is installed here.
        device: ``"cpu"``; ``"auto"`` (the best accelerator found, else the CPU; see
            ``clf.device`` and ``clf.providers``); ONNX Runtime's ``"cuda"``, ``"tensorrt"``,
            ``"rocm"``, ``"openvino"``, ``"coreml"``, ``"directml"``, ``"qnn"``; LiteRT's
            ``"gpu"``, ``"npu"``. Without ``variant``, the first passing variant whose engine
            can run there. An accelerator that is not there raises
            :class:`DeviceUnavailableError` listing what is; never a silent CPU.
        threads: intra-op threads for the engine; ``None`` is 1 on both engines (see
            ``DEFAULT_THREADS``: calls of a few samples, and no oversubscription when many
            threads share a classifier).
        verify: run the export's golden set through the loaded variant first (a few hundred
            calls, milliseconds for small models) and raise :class:`VerificationError` if this
            machine's engine no longer decides as the export did (see ``keras-edge verify``).
    """
    if threads is not None and (
        isinstance(threads, bool) or not isinstance(threads, int) or threads < 1
    ):
        raise InputError(f"Expected threads to be a positive integer or None, got {threads!r}")
    folder = Path(folder)
    if folder.suffix in ARTIFACT_SUFFIXES and folder.is_file():
        if variant is not None or verify:
            raise InputError(
                f"Expected no variant= or verify= for the lone artifact {str(folder)!r} (it is "
                f"one variant, and its golden set stays in its folder), got variant={variant!r}, "
                f"verify={verify!r}"
            )
        return _load_artifact(folder, device, threads)
    manifest = Manifest.read(folder)
    device = resolve_device(device, {v.format for v in manifest.variants.values() if v.passed})
    chosen = _choose_variant(manifest, variant, device)
    names = [spec.name for spec in manifest.inputs]
    data = read_artifact(folder, chosen)
    engine = make_engine(chosen.format, data, device, threads, names)
    inside = (
        embedded.read_onnx(engine.session) if chosen.format == "onnx" else embedded.read_tflite(data)
    )
    if inside is not None:  # artifacts exported before keras-edge 0.2 carry none
        embedded.check_agrees(inside, manifest, chosen)
    clf = Classifier(manifest, chosen, engine, device)
    logger.info("loaded variant %r on %s (%s)", chosen.id, device, ", ".join(clf.providers))
    if verify:
        raise_on_failure([check_classifier(clf, read_golden(folder, manifest))])
    return clf


ARTIFACT_SUFFIXES = {".onnx": "onnx", ".tflite": "tflite"}


def _rebuild(
    manifest: Manifest, variant: Variant, model: bytes, device: str, threads: int | None,
    threshold: Any,
) -> Classifier:  # fmt: skip
    """Unpickle a :class:`Classifier`: its engine, built again from the artifact's bytes."""
    names = [spec.name for spec in manifest.inputs]
    engine = make_engine(variant.format, model, device, threads, names)
    clf = Classifier(manifest, variant, engine, device)
    clf._set_threshold(threshold)
    return clf


def _load_artifact(path: Path, device: str, threads: int | None) -> Classifier:
    """A lone artifact: the manifest it needs is rebuilt from the record embedded in it."""
    fmt = ARTIFACT_SUFFIXES[path.suffix]
    if not engine_installed(fmt):  # the record is read with the engine's own schema
        raise missing_engine(fmt)
    device = resolve_device(device, {fmt})
    if device_format(device) not in (None, fmt):
        raise DeviceUnavailableError(
            f"Device {device!r} runs {device_format(device)} artifacts, got {str(path)!r}"
        )
    data = path.read_bytes()
    # ONNX Runtime reads the record from a session; LiteRT's needs the inputs' order first.
    engine = make_engine(fmt, data, device, threads) if fmt == "onnx" else None
    inside = embedded.read(fmt, data, engine)
    manifest, chosen = embedded.manifest_of(path, data, fmt, inside)
    names = [spec.name for spec in manifest.inputs]
    if engine is None:
        engine = make_engine(fmt, data, device, threads, names)
    elif sorted(engine.input_names) != sorted(names):
        raise ArtifactError(f"Expected inputs {names} in {str(path)!r}, got {engine.input_names}")
    else:
        engine.input_names, engine.input_name = names, names[0]  # the record's order
    clf = Classifier(manifest, chosen, engine, device)
    logger.info("loaded the lone artifact %s as %r on %s", path, chosen.id, device)
    return clf
