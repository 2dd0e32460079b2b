"""A loaded variant, and how its outputs become decisions.

:class:`Classifier` wraps one engine (built by :func:`keras_edge.runtime.loading.load`). It
checks every input on the way in (shape, dtype, NaN/Inf: :mod:`keras_edge.runtime.inputs`),
because the engines answer bad input silently: fed ``[nan, 0]`` an fp32 model answers NaN
(class 0 by ``p > t``) and a full-int8 model answers p = 0.996 (class 1). Its decision compares
the raw output with a cut computed once per threshold (:func:`decision_cut`, which the exporter
bakes into ``--with-decision`` artifacts too).

Offline batch scoring (:mod:`keras_edge.runtime.batch`) is never imported here but through one
door, :meth:`Classifier.score_batch`, which imports it when it is called.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from keras_edge.runtime.engines import SMALL, LiteRTEngine, OnnxEngine, Quantization, make_engine
from keras_edge.runtime.errors import InputError, ManifestError
from keras_edge.runtime.gate import label_names, multiclass_labels, sigmoid, softmax
from keras_edge.runtime.inputs import all_finite, check_input, check_inputs, refuse_nonfinite
from keras_edge.runtime.manifest import Head, Manifest, Variant

logger = logging.getLogger(__name__)

_FLOAT32 = np.dtype(np.float32)
_isfinite = math.isfinite
_ONE, _ZERO = np.ones(1, dtype=np.int64), np.zeros(1, dtype=np.int64)


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
    def threshold(self, value: Any) -> None:
        """A number (a list for multilabel); for several heads, a dict by head name (the heads
        not named keep theirs) or a list with one per head, in order."""
        if self.head.parts:
            value = self._thresholds_of(value)
        elif isinstance(value, (list, tuple, np.ndarray)):
            value = tuple(float(v) for v in value)
        try:
            self.head.check_threshold(value, f"variant {self.variant!r}")
        except ManifestError as exc:
            raise InputError(str(exc)) from exc
        self._set_threshold(value)

    def _thresholds_of(self, value: Any) -> tuple[Any, ...]:
        """One threshold per head from a dict by head name (the heads not named keep theirs),
        a list in head order (only when the heads are a list, as Keras gives them: a dict's
        order is not the one the caller wrote), or one number for every binary and multilabel
        head (the others keep theirs, as the export applies one)."""
        parts, names = self.head.parts, [part.name for part in self.head.parts]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            one = {p.name: value if p.kind == "binary" else (value,) * p.units
                   for p in parts if p.kind in ("binary", "multilabel")}  # fmt: skip
            if not one:
                raise InputError(f"Expected a dict of thresholds by head name {names}, got {value!r}")
            value = one
        if isinstance(value, dict):
            unknown = [k for k in value if k not in names]
            if unknown:
                raise InputError(f"Expected thresholds for the heads {names}, got ones for {unknown}")
            value = [value.get(n, t) for n, t in zip(names, self._threshold, strict=True)]
        elif self.head.structure == "dict":
            raise InputError(
                f"Expected thresholds by head name (a dict with keys from {names}) for heads that "
                f"Keras gives as a dict, got {value!r}"
            )
        if not isinstance(value, (list, tuple)) or len(value) != len(names):
            raise InputError(
                f"Expected a dict of thresholds by head name {names}, or a list of {len(names)}, "
                f"got {value!r}"
            )
        return tuple(tuple(float(x) for x in v) if isinstance(v, (list, tuple, np.ndarray)) else v
                     for v in value)  # fmt: skip

    def _set_threshold(self, threshold: Any) -> None:
        """Precompute everything the decision needs, so a call does only the comparison."""
        self._threshold = threshold
        if self.head.parts:  # compared with dequantized values: float cuts
            parts = zip(self.head.parts, threshold, strict=True)
            self._cut = [decision_cut(part, t) for part, t in parts]
            return
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

    # -- the engine call, behind the input checks (keras_edge.runtime.inputs) -------------------

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
            x = check_input(x, self._specs[0])  # the common case above needs no conversion
        if x.shape[0] == 0:
            return np.empty((0, *self._out_shape_tail), dtype=self._out_dtype)
        if not self._float_input:  # token ids: checked, never quantized
            return self._run_transient(x) if transient else self._run(x)
        in_q = self._in_q
        if x.size <= SMALL:
            # A few values: plain Python is 3-5x cheaper than numpy's per-call overhead.
            values = x.ravel().tolist()
            if not all(map(_isfinite, values)):
                refuse_nonfinite(x)
            if in_q is not None:
                x = in_q.quantize_values(values, x.shape)
        else:
            if not all_finite(x):
                refuse_nonfinite(x)
            if in_q is not None:
                x = in_q.quantize(x)
        return self._run_transient(x) if transient else self._run(x)

    def _raw_many(self, x: Any) -> np.ndarray:
        """:meth:`_raw` for a model with several inputs."""
        xs = check_inputs(x, self._specs)
        if len(xs[0]) == 0:
            return np.empty((0, *self._out_shape_tail), dtype=self._out_dtype)
        for i, (array, spec) in enumerate(zip(xs, self._specs, strict=True)):
            if spec.is_float:
                if not all_finite(array):
                    refuse_nonfinite(array)
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
        if head.parts:
            return self._structured(self._per_head(self._values(self._raw(x)), _probability))
        if head.kind == "regression":
            raise InputError(
                "Expected a classifier head for predict_proba, got a regression head; "
                "use predict() for its values"
            )
        y = self._values(self._raw(x))
        if head.output == "logit":
            return softmax(y) if head.kind == "multiclass" else sigmoid(y)
        return y

    def outputs(self, x: Any) -> np.ndarray:
        """What the gate compares with Keras: probabilities (values for a regression head), as
        one float32 (n, units) array; for several heads, theirs side by side in head order."""
        if self.head.parts:
            return np.hstack(self._per_head(self._values(self._raw(x)), _probability))
        return self.predict(x) if self.head.kind == "regression" else self.predict_proba(x)

    def decisions(self, x: Any) -> np.ndarray:
        """The classes ``predict`` gives, as one int64 (n, k) array (k = 1 for binary and
        multiclass); for several heads, theirs side by side in head order (a column of 0 for
        a regression head, as :func:`keras_edge.runtime.gate.decide` gives)."""
        if self.head.parts:
            values = self._values(self._raw(x))
            parts = self._per_head(values, _decide, self._cut, self._threshold)
            return np.hstack([  # a regression head's column is 0, as gate.decide gives it
                np.zeros((len(values), 1), np.int64) if h.kind == "regression"
                else p.reshape(len(values), -1)
                for p, h in zip(parts, self.head.parts, strict=True)
            ])  # fmt: skip
        labels = np.asarray(self.predict(x))
        return labels.reshape(len(labels), -1)

    def _per_head(self, values: np.ndarray, answer: Any, *per_head: Any) -> list[Any]:
        """``answer(head, its columns, ...)`` for each head of a model with several heads."""
        columns = enumerate(zip(self.head.parts, self.head.slices(), strict=True))
        return [answer(part, values[:, c], *(p[i] for p in per_head)) for i, (part, c) in columns]

    def _structured(self, parts: list[Any]) -> dict[str, Any] | list[Any]:
        """Per-head answers as Keras's ``predict`` gives them: a dict by output name, or a list."""
        if self.head.structure == "dict":
            return {part.name: answer for part, answer in zip(self.head.parts, parts, strict=True)}
        return list(parts)

    @property
    def classes_(self) -> Any:
        """The label names, in class-index order (scikit-learn's name for them); for several
        heads, a dict of them by head name."""
        if self.head.parts:
            return {part.name: part.labels for part in self.head.parts}
        return self.head.labels

    def predict_labels(self, x: Any) -> np.ndarray | list[list[str]]:
        """Decisions as label names: an array of names, (n,), for binary and multiclass
        (``"unknown"`` where a multiclass sample is below the minimum confidence); for
        multilabel, the list of names that apply to each sample."""
        if self.head.parts:
            values = self._values(self._raw(x))
            return self._structured(self._per_head(values, _label_names, self._cut, self._threshold))
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
        if self.head.parts:
            values = self._values(self._raw(x))
            return self._structured(self._per_head(values, _decide, self._cut, self._threshold))
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
        ``(values, None)``. Several heads give theirs side by side, in head order (the columns
        of :class:`~keras_edge.runtime.batch.scoring.Layout`)."""
        kind = self.head.kind
        if self.head.parts:  # every head's side by side, in head order (none for regression)
            values = self._values(self._raw(x))
            proba = np.hstack(self._per_head(values, _probability))
            parts = self._per_head(values, _decide, self._cut, self._threshold)
            n = len(values)
            labels = [p.reshape(n, -1) for p, h in zip(parts, self.head.parts, strict=True)
                      if h.kind != "regression"]  # fmt: skip
            return proba, np.hstack(labels) if labels else None
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
            values = softmax(values) if kind == "multiclass" else sigmoid(values)
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

        The device core's one door into offline batch scoring: the import is here, when a batch
        is scored, so that loading and predicting never import :mod:`keras_edge.runtime.batch`.
        """
        from keras_edge.runtime.batch.table import score_batch  # the one door, lazily

        return score_batch(self, batch, columns, keep, classes, on_bad_row, exclude)


def _probability(head: Head, y: np.ndarray) -> np.ndarray:
    """One head's probabilities from its dequantized columns (values for regression)."""
    if head.output == "logit":
        return softmax(y) if head.kind == "multiclass" else sigmoid(y)
    return np.ascontiguousarray(y)


def _decide(head: Head, y: np.ndarray, cut: Any, threshold: Any) -> np.ndarray:
    """One head's decisions from its dequantized columns, as ``predict`` gives them."""
    if head.kind == "binary":
        return (y.ravel() > cut).astype(np.int64)
    if head.kind == "multilabel":
        return (y > cut).astype(np.int64)
    if head.kind == "multiclass":
        return multiclass_labels(y, threshold)
    return np.ascontiguousarray(y)


def _label_names(head: Head, y: np.ndarray, cut: Any, threshold: Any) -> Any:
    """One head's decisions as label names, as ``predict_labels`` gives them."""
    if head.kind == "regression":
        return np.ascontiguousarray(y)
    classes = _decide(head, y, cut, threshold)
    if head.kind == "multilabel":
        names = np.asarray(head.labels, dtype=object)
        return [[str(n) for n in names[row.astype(bool)]] for row in classes]
    return label_names(head.labels, classes)


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


