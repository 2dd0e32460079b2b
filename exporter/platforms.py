"""What the platforms' own runtimes read, written into every artifact beside keras-edge's record.

**TFLite** gets the standard model metadata (``metadata_schema.fbs`` of TFLite Support and
MediaPipe, file identifier ``M001``): a ``Model.metadata`` entry named ``TFLITE_METADATA``
pointing at a ``ModelMetadata`` flatbuffer (name, description, version, one ``TensorMetadata``
per input and per output), and the label files it names appended to the model as a zip, as
TFLite Support's ``MetadataPopulator`` does. MediaPipe Tasks (Android, iOS, web, Python: one C++
core), the TFLite Support Library and Android Studio's model binding read it.

- Each image input (``[1, H, W, 1 or 3]`` float32) gets ``ImageProperties`` and the
  ``NormalizationOptions`` an app applies to 0-255 pixels, ``(pixel - mean) / std``
  (:class:`Normalization`); other inputs get ``FeatureProperties``.
- A classifier's file decides in MediaPipe as keras-edge decides. MediaPipe ranks each output's
  scores and keeps a category whose score is ``>=`` the score threshold; keras-edge decides
  ``p > t`` on one sigmoid unit, or argmax. So a model of one image input (what MediaPipe's
  ImageClassifier and OpenVINO's ClassificationModel load) gets, per classifier head, a float32
  output ``keras_edge_decision`` (``keras_edge_decision/<head>`` with several heads), placed
  *first* so that it is MediaPipe's head 0, named ``decision`` in the metadata: the decided
  class's probability at its index, 0 elsewhere (binary: two columns, ``[1 - p, 0]`` or
  ``[0, p]``; multiclass: the argmax's probability, and with a minimum confidence a first
  column ``unknown`` holding the top probability where it is not above it; multilabel: ``p_i``
  where ``p_i > t_i``). Its score threshold is the smallest positive float32, so the zeros are
  dropped and the app gets exactly keras-edge's ``predict_labels``, each with its probability.
  The decision uses the runtime's own cut (:func:`keras_edge.exporter.decision._greater`: the
  integer cut on an int8 output), so a score that lands on the threshold is decided as
  keras-edge decides it. The probability output follows, with its labels and, where one number
  says it (one threshold), the threshold made MediaPipe's rule: the next float32 above it
  (``score >= next`` is ``score > t``). Other models get the metadata alone: no op is added to
  what they run.
- keras-edge's runtime leaves ``keras_edge_decision`` outputs alone, as it does ``class`` ones.

**ONNX** gets the same decision output (an image model's), and the keys OpenVINO's Model API
reads, ``model_info <key>`` in ``metadata_props``: ``model_type``, ``labels`` (space-separated,
the decision output's columns), ``confidence_threshold``, ``multilabel`` (:func:`onnx_keys`);
ONNX Runtime shows them to every binding as ``custom_metadata_map``.
"""

from __future__ import annotations

import copy
import io
import logging
import math
import zipfile
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from keras_edge.exporter import _tf
from keras_edge.exporter.decision import (
    _decided_heads,
    _Graph,
    _greater,
    _named,
    _onnx_columns,
    _shape,
    _tflite_columns,
)
from keras_edge.exporter.embed import pack_tflite, put_metadata
from keras_edge.runtime.classifier import decision_cut
from keras_edge.runtime.engines import decided_output_name
from keras_edge.runtime.errors import UsageError
from keras_edge.runtime.gate import UNKNOWN_LABEL
from keras_edge.runtime.litert_engine import tflite_input_name
from keras_edge.runtime.manifest import Head, Manifest, Variant

logger = logging.getLogger(__name__)

METADATA_NAME = "TFLITE_METADATA"  # the entry MediaPipe and TFLite Support look for
MIN_PARSER_VERSION = "1.0.0"  # no field written here is newer than the schema's 1.0.0
DECISION_HEAD = "decision"
# Keeps every positive score, drops the zeros of a decision output.
KEEP_POSITIVE = float(np.finfo(np.float32).tiny)
# Leading layers that preprocess raw inputs inside the graph.
PREPROCESSING = ("Rescaling", "Normalization")
# Layers that do nothing at inference, looked through on the way to the first real layer.
INACTIVE = ("RandomFlip", "RandomRotation", "RandomZoom", "RandomContrast", "RandomTranslation",
            "RandomBrightness", "Dropout", "GaussianNoise", "GaussianDropout", "InputLayer")  # fmt: skip
ONNX_PREFIX = "model_info "

# metadata_schema.fbs: union member numbers, enum values, file identifier
_FEATURE_PROPERTIES, _IMAGE_PROPERTIES = 1, 2
_NORMALIZATION, _SCORE_THRESHOLDING = 1, 3
_RGB, _GRAYSCALE = 1, 2
_TENSOR_AXIS_LABELS = 2
_IDENTIFIER = b"M001"


@dataclass(frozen=True)
class Normalization:
    """What an app does to 0-255 pixels before the model: ``(pixel - mean) / std``, per channel
    (one value for all), and why (``source``: where it was read)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str

    def describe(self) -> str:
        return f"mean {list(self.mean)}, std {list(self.std)} ({self.source})"


IDENTITY = (0.0,), (1.0,)


def parse_normalization(text: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``--input-normalization MEAN/STD``, each one number or one per RGB channel (comma list):
    ``127.5/127.5``, ``0/255``, ``123.7,116.3,103.5/58.4,57.1,57.4``. One value on a side stands
    for every channel of the other; the two sides come back the same length (1 or 3)."""
    expected = "MEAN/STD, each a number or a comma list per channel (e.g. 127.5/127.5 or 0/255)"
    parts = text.split("/")
    if len(parts) != 2:
        raise UsageError(f"Expected --input-normalization {expected}, got {text!r}")
    try:
        mean, std = (tuple(float(v) for v in part.split(",")) for part in parts)
    except ValueError:
        raise UsageError(f"Expected --input-normalization {expected}, got {text!r}") from None
    if not all(math.isfinite(v) for v in (*mean, *std)) or any(s <= 0 for s in std):
        raise UsageError(
            f"Expected finite means and positive stds in --input-normalization, got {text!r}"
        )
    if len(mean) not in (1, 3) or len(std) not in (1, 3):
        raise UsageError(
            f"Expected 1 or 3 means and stds in --input-normalization (one for all channels or "
            f"one per RGB channel, as MediaPipe reads them), got {len(mean)} and {len(std)} in {text!r}"
        )
    width = max(len(mean), len(std))  # one value stands for every channel
    return tuple(mean * (width // len(mean))), tuple(std * (width // len(std)))


def is_image(spec: Any) -> bool:
    """An input MediaPipe's image tasks take: one image, ``[batch, H, W, 1 or 3]``, float or uint8."""
    shape = spec.shape
    return (len(shape) == 4 and shape[-1] in (1, 3) and all(isinstance(d, int) for d in shape[1:])
            and spec.dtype in ("float32", "uint8"))  # fmt: skip


Pair = tuple[tuple[float, ...], tuple[float, ...]]


def normalizations(
    model: Any, specs: Any, x_check: Any, data_source: str | None, given: Pair | None
) -> dict[str, Normalization]:
    """Each float image input's normalization: the model's own leading ``Rescaling`` /
    ``Normalization`` means the app feeds raw pixels (mean 0, std 1); else ``given``
    (``--input-normalization``); else read off the export's data: values in [0, 1] are pixels
    / 255 (std 255), in [-1, 1] pixels / 127.5 - 1 (mean 127.5, std 127.5), anything wider
    raw pixels; with no data (the synthetic probe set) raw pixels, with a warning."""
    out: dict[str, Normalization] = {}
    for position, spec in enumerate(specs):
        if not is_image(spec) or spec.dtype != "float32":
            continue
        leading = _leading_layer(model, position)
        x = None if data_source in (None, "synthetic") else np.asarray(x_check[position])
        if given is not None:
            channels = int(spec.shape[-1])
            if len(given[0]) not in (1, channels):
                raise UsageError(
                    f"Expected 1 or {channels} values per side of --input-normalization for input "
                    f"{spec.name!r} ({channels} channel(s)), got {len(given[0])}"
                )
            out[spec.name] = Normalization(*given, "--input-normalization")
            if leading is not None:
                logger.warning(
                    "input %r: the model starts with its own %s, and --input-normalization %s "
                    "says what an app does before it: the metadata says the latter",
                    spec.name, leading, out[spec.name].describe(),
                )  # fmt: skip
        elif leading is not None:
            out[spec.name] = Normalization(*IDENTITY, f"the model's own leading {leading}")
            if x is not None and float(np.max(x)) <= 1.0:
                logger.warning(
                    "input %r: the model starts with its own %s, so the metadata says it takes "
                    "raw 0-255 pixels, but the %s data lies in [%.3g, %.3g]; if the app scales "
                    "pixels before the model, say how with --input-normalization MEAN/STD",
                    spec.name, leading, data_source, float(np.min(x)), float(np.max(x)),
                )  # fmt: skip
        elif x is None:
            logger.warning(
                "input %r: no leading Rescaling/Normalization layer, no --input-normalization and "
                "no data: the TFLite metadata says the model takes raw 0-255 pixels (mean 0, std "
                "1); give --input-normalization MEAN/STD if it does not", spec.name,
            )  # fmt: skip
            out[spec.name] = Normalization(*IDENTITY, "default: raw pixels")
        else:
            out[spec.name] = _from_range(x, str(data_source))
        logger.info("input %r: NormalizationOptions %s", spec.name, out[spec.name].describe())
    return out


def _from_range(x: np.ndarray, data_source: str) -> Normalization:
    low, high = float(np.min(x)), float(np.max(x))
    where = f"the {data_source} data's range [{low:.3g}, {high:.3g}]"
    if low >= 0.0 and high <= 1.0:
        return Normalization((0.0,), (255.0,), f"{where}: pixels / 255")
    if low >= -1.0 and high <= 1.0:
        return Normalization((127.5,), (127.5,), f"{where}: pixels / 127.5 - 1")
    return Normalization(*IDENTITY, f"{where}: raw pixels")


def _leading_layer(model: Any, position: int) -> str | None:
    """The class name of the first layer that acts on input ``position`` at inference, when it is
    a preprocessing one (looking through augmentation, dropout and nested models)."""
    try:
        tensor = model.inputs[position]
        return _first_preprocessing(model, tensor)
    except Exception as exc:  # an unusual model: the caller falls back to the flag or the data
        logger.debug("could not follow input %d to its first layer: %s", position, exc)
        return None


_PASS = ""  # a nested model of inactive layers only: look past it


def _first_preprocessing(model: Any, tensor: Any) -> str | None:
    """Follow ``tensor`` through ``model``'s graph to the first layer that acts on it."""
    for op in getattr(model, "operations", None) or model.layers:
        inbound = [t for node in getattr(op, "_inbound_nodes", []) for t in _listed(node.input_tensors)]
        if not any(t is tensor for t in inbound) or type(op).__name__ == "InputLayer":
            continue  # (tf_keras's InputLayer lists its tensor as its own input)
        name = type(op).__name__
        if name in PREPROCESSING:
            return name
        if hasattr(op, "layers"):  # a nested Sequential or Functional model
            inner = _first_in_order(op.layers)
            if inner != _PASS:
                return inner
        elif name not in INACTIVE:
            return None
        return _first_preprocessing(model, op.output)
    return None


def _listed(tensors: Any) -> list[Any]:
    """A node's input tensors as a list (tf_keras gives a lone tensor as it is, a dict by name)."""
    if isinstance(tensors, dict):
        return list(tensors.values())
    return list(tensors) if isinstance(tensors, (list, tuple)) else [tensors]


def _first_in_order(layers: Any) -> str | None:
    """A nested model's first acting layer, in its layer order: a preprocessing layer's name,
    None for any other, ``_PASS`` when every layer is inactive at inference."""
    for layer in layers:
        name = type(layer).__name__
        if name in PREPROCESSING:
            return name
        if hasattr(layer, "layers"):
            inner = _first_in_order(layer.layers)
            if inner != _PASS:
                return inner
        elif name not in INACTIVE:
            return None
    return _PASS


# -- TFLite: decision outputs ------------------------------------------------------------------
def decision_outputs(data: bytes, head: Head, threshold: Any) -> bytes:
    """``data`` with a float32 decision output per classifier head, first among the outputs."""
    g = _Graph(data)
    out_index = g.graph.outputs[0]
    added = []
    for part, t, columns, _ in _decided_heads(head, threshold):
        named = replace_name(part, "decided")
        source = out_index if columns is None else _tflite_columns(g, out_index, named, columns)
        added.append((_decision(g, source, part, t), decided_output_name(part.name)))
    if not added:
        return data
    for index, name in reversed(added):  # first, in head order
        g.add_output(index, name, first=True)
    return pack_tflite(g.model, len(data))


def replace_name(head: Head, prefix: str) -> Head:
    """``head`` renamed so that the tensors made for it here do not share names with the
    ``--with-decision`` ones."""
    return replace(head, name=f"{prefix}/{head.name}") if head.name is not None else head


def _decision(g: _Graph, source: int, head: Head, threshold: Any) -> int:
    """The decision output of one head, from ``source`` (its output or its columns).

    Float arithmetic (``1 - p``, the two columns) hangs off the model's output, so that XNNPACK
    takes it into the partition that computes the output; the decision itself is boolean
    (GREATER, ONE_HOT, LOGICAL_*) and ends in a SELECT_V2, ops that LiteRT runs after the
    delegate: the file has as many XNNPACK partitions as without the output."""
    types, schema = g.types, g.schema
    src = g.graph.tensors[source]
    dims, sig = _shape(src)
    named = replace_name(head, "decided")
    rows, rows_sig = dims[:1], sig[:1]
    name = decided_output_name(head.name)

    def t(base: str, dtype: int, d: list[int], s: list[int], value: Any = None) -> int:
        return g.tensor(_named(f"keras_edge_decided_{base}", named), dtype, d, s, value)

    def op(code: int, inputs: list[int], out: int, options: Any = None, kind: int = 0) -> int:
        g.operator(code, inputs, [out], options, kind)
        return out

    def select(mask: int, scores: int, d: list[int], s: list[int]) -> int:
        """``scores`` where ``mask``, else 0: the output."""
        zero = t("zero", types.FLOAT32, [], [], np.array(0.0, np.float32))
        return op(g.ops.SELECT_V2, [mask, scores, zero], g.tensor(name, types.FLOAT32, d, s))

    # the probabilities, float32
    prob = source
    if src.type != types.FLOAT32:
        prob = op(g.ops.DEQUANTIZE, [source], t("dequantized", types.FLOAT32, dims, sig))
    if head.output == "logit":
        squashed = t("probability", types.FLOAT32, dims, sig)
        if head.kind == "multiclass":
            options = schema.SoftmaxOptionsT()
            options.beta = 1.0
            op(g.ops.SOFTMAX, [prob], squashed, options, schema.BuiltinOptions.SoftmaxOptions)
        else:
            op(g.ops.LOGISTIC, [prob], squashed)
        prob = squashed
    if head.kind == "multiclass":
        # at least the smallest positive float32, so that the decided class is never dropped as
        # a 0 (an int8 softmax can dequantize a flat row to all zeros)
        floor = t("floor", types.FLOAT32, [], [], np.array(KEEP_POSITIVE, np.float32))
        prob = op(g.ops.MAXIMUM, [prob, floor], t("floored", types.FLOAT32, dims, sig))
        axis = t("axis", types.INT32, [1], [1], np.array([1], np.int32))
        options = schema.ArgMaxOptionsT()
        options.outputType = types.INT32
        top = op(g.ops.ARG_MAX, [source, axis], t("top", types.INT32, rows, rows_sig), options,
                 schema.BuiltinOptions.ArgMaxOptions)  # fmt: skip
        depth = t("depth", types.INT32, [], [], np.array(head.units, np.int32))
        on = t("on", types.BOOL, [], [], np.array(True))
        off = t("off", types.BOOL, [], [], np.array(False))
        hot = schema.OneHotOptionsT()
        hot.axis = -1
        mask = op(g.ops.ONE_HOT, [top, depth, on, off], t("onehot", types.BOOL, dims, sig), hot,
                  schema.BuiltinOptions.OneHotOptions)  # fmt: skip
        if threshold is None:
            return select(mask, prob, dims, sig)
        # a minimum confidence: a first column, "unknown", holds the top probability where it
        # is not above it; the class's column where it is
        column, wide, wide_sig = [dims[0], 1], [dims[0], head.units + 1], [sig[0], head.units + 1]
        reducer, reducer_kind = schema.ReducerOptionsT(), schema.BuiltinOptions.ReducerOptions
        reducer.keepDims = True
        best = t("best", src.type, column, [sig[0], 1])
        g.graph.tensors[best].quantization = copy.deepcopy(src.quantization)
        op(g.ops.REDUCE_MAX, [source, axis], best, reducer, reducer_kind)
        top_p = op(g.ops.REDUCE_MAX, [prob, axis], t("top_p", types.FLOAT32, column, [sig[0], 1]),
                   reducer, reducer_kind)  # fmt: skip
        concat, concat_kind = schema.ConcatenationOptionsT(), schema.BuiltinOptions.ConcatenationOptions
        concat.axis = 1
        scores = op(g.ops.CONCATENATION, [top_p, prob], t("scores", types.FLOAT32, wide, wide_sig),
                    concat, concat_kind)  # fmt: skip
        sure = _greater(g, best, named, threshold, "decided_sure", "decided_cut")
        unsure = op(g.ops.LOGICAL_NOT, [sure], t("unsure", types.BOOL, column, [sig[0], 1]))
        kept = op(g.ops.LOGICAL_AND, [mask, sure], t("kept", types.BOOL, dims, sig))
        mask = op(g.ops.CONCATENATION, [unsure, kept], t("mask", types.BOOL, wide, wide_sig), concat,
                  concat_kind)  # fmt: skip
        return select(mask, scores, wide, wide_sig)
    above = _greater(g, source, named, threshold, "decided_above", "decided_cut")
    if head.kind == "multilabel":
        return select(above, prob, dims, sig)
    # binary: [1 - p, p] where [p <= cut, p > cut]
    two, two_sig = [dims[0], 2], [sig[0], 2]
    concat, concat_kind = schema.ConcatenationOptionsT(), schema.BuiltinOptions.ConcatenationOptions
    concat.axis = 1
    one = t("one", types.FLOAT32, [1], [1], np.array([1.0], np.float32))
    rest = op(g.ops.SUB, [one, prob], t("rest", types.FLOAT32, dims, sig), schema.SubOptionsT(),
              schema.BuiltinOptions.SubOptions)  # fmt: skip
    both = t("both", types.FLOAT32, two, two_sig)
    op(g.ops.CONCATENATION, [rest, prob], both, concat, concat_kind)
    below = op(g.ops.LOGICAL_NOT, [above], t("below", types.BOOL, dims, sig))
    mask = op(g.ops.CONCATENATION, [below, above], t("mask", types.BOOL, two, two_sig), concat,
              concat_kind)  # fmt: skip
    return select(mask, both, two, two_sig)


# -- TFLite: the metadata ----------------------------------------------------------------------
@dataclass(frozen=True)
class _Output:
    """One output's metadata: its name, description, labels (a file) and score threshold."""

    name: str
    description: str
    labels: tuple[str, ...] = ()
    label_file: str | None = None
    score_threshold: float | None = None


def standard_metadata(data: bytes, manifest: Manifest, variant: Variant,
                      norms: dict[str, Normalization]) -> bytes:  # fmt: skip
    """``data`` (its outputs final) with the ``TFLITE_METADATA`` entry and its label files
    appended as a zip; deterministic: the same inputs give the same bytes."""
    schema = _tf.module("ai_edge_litert.schema_py_generated")
    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    graph = model.subgraphs[0]
    int64 = schema.TensorType.INT64
    outputs = _unique_files([
        _describe_output(graph.tensors[i], manifest.head, variant.threshold, int64)
        for i in graph.outputs
    ])  # fmt: skip
    files = {o.label_file: "\n".join(o.labels) + "\n" for o in outputs if o.label_file is not None}
    blob = _metadata_bytes(manifest, variant, _input_tensors(graph, manifest, norms), outputs)
    put_metadata(model, METADATA_NAME, blob)
    return _with_zip(pack_tflite(model, len(data)), files)


def _unique_files(outputs: list[_Output]) -> list[_Output]:
    """Outputs whose label files have distinct names (heads ``a.b`` and ``a_b`` would share
    one): a repeated name gets the output's position."""
    names = [o.label_file for o in outputs]
    return [
        replace(o, label_file=f"labels_{i}_{o.label_file[len('labels_'):]}")
        if o.label_file is not None and names.count(o.label_file) > 1 else o
        for i, o in enumerate(outputs)
    ]  # fmt: skip


def _name(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _with_zip(model: bytes, files: dict[str, str]) -> bytes:
    """``model`` with the associated files appended as a zip, as TFLite Support's populator
    writes it (offsets counted from the file's start), stored (not deflated), with fixed dates
    and attributes: the same files give the same bytes."""
    if not files:
        return model
    out = io.BytesIO(model)
    out.seek(0, io.SEEK_END)
    with zipfile.ZipFile(out, "a", zipfile.ZIP_STORED) as archive:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.create_system, info.external_attr = 3, 0o644 << 16
            archive.writestr(info, files[name].encode("utf-8"))
    return out.getvalue()


def _input_tensors(graph: Any, manifest: Manifest, norms: dict[str, Normalization]) -> list[dict]:
    """Per input of the graph, in its order: name, whether an image, its normalization."""
    specs = {s.name: s for s in manifest.inputs}
    out = []
    for index in graph.inputs:
        tensor = graph.tensors[index]
        raw = _name(tensor.name)
        spec = specs.get(raw) or specs.get(tflite_input_name(raw)) or (
            manifest.inputs[0] if len(manifest.inputs) == 1 else None)  # fmt: skip
        name = spec.name if spec is not None else raw
        image = spec is not None and is_image(spec)
        channels = int(spec.shape[-1]) if image else 0
        out.append({"name": name, "image": image, "channels": channels,
                    "size": (int(spec.shape[2]), int(spec.shape[1])) if image else None,
                    "norm": norms.get(name)})  # fmt: skip
    return out


def _describe_output(tensor: Any, head: Head, threshold: Any, int64: int) -> _Output:
    name = _name(tensor.name)
    heads = head.parts or (head,)
    thresholds = threshold if head.parts else (threshold,)
    for part, t in zip(heads, thresholds, strict=True):
        if name == decided_output_name(part.name):
            labels = decision_labels(part, t)
            where = DECISION_HEAD if part.name is None else f"{DECISION_HEAD}/{part.name}"
            return _Output(
                where, _decision_text(part, t), labels, f"labels_{_file_part(where)}.txt", KEEP_POSITIVE
            )
    if tensor.type == int64:  # a --with-decision class output
        return _Output(name, "the class index keras-edge decides (-1: below the minimum confidence)")
    if head.parts:
        labels = tuple(label for part in head.parts for label in _unit_labels(part))
        return _Output("probability", "every head's units side by side, in head order; "
                       "decide with the decision heads", labels, "labels_probability.txt")  # fmt: skip
    if head.kind == "regression":
        return _Output("value", "the model's values (a regression head)")
    return _Output("probability", _probability_text(head, threshold), _unit_labels(head),
                   "labels_probability.txt", _raw_threshold(head, threshold))  # fmt: skip


def decision_labels(head: Head, threshold: Any) -> tuple[str, ...]:
    """The decision output's columns: the labels, with "unknown" first for a multiclass head with
    a minimum confidence (the runtime's ``predict_labels`` says "unknown" there too)."""
    if head.kind == "multiclass" and threshold is not None:
        return (UNKNOWN_LABEL, *head.labels)
    return tuple(head.labels)


def _file_part(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def _unit_labels(head: Head) -> tuple[str, ...]:
    """One label per unit: a binary head's one unit is its positive class."""
    return (head.labels[-1],) if head.kind == "binary" else tuple(head.labels)


def _raw_threshold(head: Head, threshold: Any) -> float | None:
    """MediaPipe's score threshold for the probability output, where one number says
    keras-edge's rule: the next float32 above the cut (``score >= next`` is ``score > cut``)."""
    cut = decision_cut(head, threshold)
    if cut is None:
        return None
    cuts = np.unique(np.asarray(cut, dtype=np.float32).reshape(-1))
    if len(cuts) != 1:
        return None
    return float(np.nextafter(cuts[0], np.float32(np.inf)))


def _decision_text(head: Head, threshold: Any) -> str:
    if head.kind == "binary":
        return (f"keras-edge's decision: the class's probability at its index, 0 at the other "
                f"({head.labels[-1]} when p > {threshold})")  # fmt: skip
    if head.kind == "multiclass":
        if threshold is None:
            return "keras-edge's decision: the top class's probability at its index, 0 elsewhere"
        return (f"keras-edge's decision: the top class's probability at its index when it is above "
                f"{threshold}, else at 'unknown' (first); 0 elsewhere")  # fmt: skip
    return (f"keras-edge's decision: each label's probability where p > its threshold "
            f"{list(threshold)}, else 0")  # fmt: skip


def _probability_text(head: Head, threshold: Any) -> str:
    what = "logits" if head.output == "logit" else "probabilities"
    if head.kind == "binary":
        return f"{what} of {head.labels[-1]!r}; keras-edge decides p > {threshold}"
    if head.kind == "multilabel":
        return f"{what} per label; keras-edge decides p > {list(threshold)}"
    return f"class {what}; keras-edge decides argmax" + (
        "" if threshold is None else f", unknown unless the top probability is above {threshold}"
    )


def _kind_text(head: Head) -> str:
    if head.parts:
        return "a model of heads " + ", ".join(f"{p.name} ({p.kind})" for p in head.parts)
    return "a regression model" if head.kind == "regression" else f"a {head.kind} classifier"


def _metadata_bytes(manifest: Manifest, variant: Variant, inputs: list[dict],
                    outputs: list[_Output]) -> bytes:  # fmt: skip
    """The ``ModelMetadata`` flatbuffer (``metadata_schema.fbs``), built field by field."""
    flatbuffers = _tf.module("flatbuffers")
    b = flatbuffers.Builder(1024)

    def string(text: str | None) -> int | None:
        return None if text is None else b.CreateString(text)

    def table(fields: list[tuple[int, str, Any]]) -> int:
        """A table of (slot, kind, value): kind 'o' an offset, 'b' a byte, 'I' a uint32, 'f' a
        float32; None values are left out."""
        b.StartObject(max(slot for slot, _, _ in fields) + 1)
        for slot, kind, value in fields:
            if value is None:
                continue
            if kind == "o":
                b.PrependUOffsetTRelativeSlot(slot, value, 0)
            elif kind == "b":
                b.PrependUint8Slot(slot, value, 0)
            elif kind == "I":
                b.PrependUint32Slot(slot, value, 0)
            else:
                b.PrependFloat32Slot(slot, value, 0.0)
        return b.EndObject()

    def vector(offsets: list[int]) -> int:
        b.StartVector(4, len(offsets), 4)
        for offset in reversed(offsets):
            b.PrependUOffsetTRelative(offset)
        return b.EndVector()

    def floats(values: tuple[float, ...]) -> int:
        b.StartVector(4, len(values), 4)
        for value in reversed(values):
            b.PrependFloat32(value)
        return b.EndVector()

    def process_unit(kind: int, options: int) -> int:
        return table([(0, "b", kind), (1, "o", options)])

    def tensor(name: str, description: str | None, content: int | None, units: list[int],
               files: list[int]) -> int:  # fmt: skip
        return table([
            (0, "o", string(name)), (1, "o", string(description)), (3, "o", content),
            (4, "o", vector(units) if units else None), (6, "o", vector(files) if files else None),
        ])  # fmt: skip

    input_tables = []
    for item in inputs:
        units = []
        if item["norm"] is not None:
            options = table([(0, "o", floats(item["norm"].mean)), (1, "o", floats(item["norm"].std))])
            units.append(process_unit(_NORMALIZATION, options))
        if item["image"]:
            width, height = item["size"]
            size = table([(0, "I", width), (1, "I", height)])
            space = _RGB if item["channels"] == 3 else _GRAYSCALE
            properties, kind = table([(0, "b", space), (1, "o", size)]), _IMAGE_PROPERTIES
            description = "an image, RGB" if item["channels"] == 3 else "an image, grayscale"
        else:
            properties, kind = table([(0, "b", None)]), _FEATURE_PROPERTIES
            description = "features"
        content = table([(0, "b", kind), (1, "o", properties)])
        input_tables.append(tensor(item["name"], description, content, units, []))
    output_tables = []
    for out in outputs:
        units, files = [], []
        if out.score_threshold is not None:
            units.append(process_unit(_SCORE_THRESHOLDING, table([(0, "f", out.score_threshold)])))
        if out.label_file is not None:
            files.append(table([(0, "o", string(out.label_file)),
                                (1, "o", string("one label per unit, in order")),
                                (2, "b", _TENSOR_AXIS_LABELS)]))  # fmt: skip
        content = table([(0, "b", _FEATURE_PROPERTIES), (1, "o", table([(0, "b", None)]))])
        output_tables.append(tensor(out.name, out.description, content, units, files))
    subgraph = table([(2, "o", vector(input_tables)), (3, "o", vector(output_tables))])
    info = manifest.model
    model = table([
        (0, "o", string(info.name)),
        (1, "o", string(f"{_kind_text(manifest.head)} exported by keras-edge, variant "
                        f"{variant.id}; source sha256 {info.source_sha256}")),
        (2, "o", string(variant.id)),
        (3, "o", vector([subgraph])),
        (7, "o", string(MIN_PARSER_VERSION)),
    ])  # fmt: skip
    b.Finish(model, file_identifier=_IDENTIFIER)
    return bytes(b.Output())


# -- ONNX --------------------------------------------------------------------------------------
def onnx_keys(head: Head, threshold: Any, decided: bool = True) -> dict[str, str]:
    """OpenVINO Model API's ``model_info`` keys for a one-head classifier (none otherwise). The
    Model API reads the first output, the decision output: single-label, it takes the argmax
    (keras-edge's class: the others are 0) and ignores ``confidence_threshold``, written as the
    variant's threshold for the reader; multilabel, it keeps ``sigmoid(x) > threshold``, so the
    threshold is 0.5: exactly the decided labels (``x > 0``), whatever keras-edge's thresholds.
    Without a decision output (not an image model), a multilabel head's threshold is written
    when all its labels share one."""
    if head.parts or head.kind == "regression":
        return {}
    labels = " ".join(label.replace(" ", "_") for label in (decision_labels(head, threshold)
                                                              if decided else head.labels))  # fmt: skip
    keys = {"model_type": "Classification", "labels": labels}
    if head.kind == "multilabel":
        keys["multilabel"] = "True"
        if decided:
            keys["confidence_threshold"] = "0.5"
        elif len(set(threshold)) == 1:
            keys["confidence_threshold"] = repr(float(threshold[0]))
    elif threshold is not None:
        keys["confidence_threshold"] = repr(float(threshold))
    return {ONNX_PREFIX + key: value for key, value in keys.items()}


def wants_decision_output(manifest: Manifest) -> bool:
    """Whether the artifacts get decision outputs: a model of one image input, which the
    platforms' image classifiers (MediaPipe's ImageClassifier, OpenVINO's Model API
    ClassificationModel) load. Other models have no such client, and their artifacts stay as
    they were: no op is added to what every call of theirs runs."""
    one_image = len(manifest.inputs) == 1 and is_image(manifest.inputs[0])
    return one_image and manifest.head.kind != "regression"


def _values(values: tuple[float, ...], channels: int) -> str:
    """One value per channel, space-separated, as the Model API reads a list."""
    full = values * channels if len(values) == 1 else values
    return " ".join(repr(float(v)) for v in full)


def mediapipe_cannot(with_decision: bool, int8_io: bool) -> list[str]:
    """What keeps an image model's .tflite files out of MediaPipe Tasks, said at export."""
    out = []
    if with_decision:
        out.append(
            "--with-decision: MediaPipe Tasks refuses a .tflite with an int64 output (it takes "
            "float32, uint8 and bool ones), so these .tflite files do not load in its "
            "ImageClassifier; without the flag their 'decision' head gives MediaPipe the class"
        )
    if int8_io:
        out.append(
            "--int8-io: MediaPipe Tasks takes uint8 or float32 images, so tflite-int8 (int8 "
            "input) does not load in its ImageClassifier; the other .tflite files do"
        )
    return out


def into_onnx(data: bytes, head: Head, threshold: Any, decided: bool = True,
              norm: Normalization | None = None, channels: int = 3) -> bytes:  # fmt: skip
    """``data`` with the Model API's keys and, with ``decided``, a decision output per classifier
    head, first among the outputs (as in TFLite)."""
    onnx = _tf.module("onnx")
    model = onnx.load_from_string(data)
    graph = model.graph
    out = graph.output[0]
    batch = out.type.tensor_type.shape.dim[0]
    batch_dim = batch.dim_param or (batch.dim_value if batch.dim_value else "batch")
    added = []
    probabilities = out.name
    heads = _decided_heads(head, threshold) if decided else []
    if heads and out.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:  # an fp16 output
        probabilities = "keras_edge_decided_float"  # compared in float32, as the runtime does
        cast = onnx.helper.make_node("Cast", [out.name], [probabilities], to=onnx.TensorProto.FLOAT,
                                     name=probabilities)  # fmt: skip
        graph.node.append(cast)
    for part, t, columns, _ in heads:
        named = replace_name(part, "decided")
        source = probabilities if columns is None else _onnx_columns(onnx, graph, probabilities, named,
                                                                     columns)  # fmt: skip
        name = decided_output_name(part.name)
        _onnx_decision(onnx, graph, source, part, t, name)
        units = len(decision_labels(part, t))
        added.append(
            onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, [batch_dim, units])
        )
    outputs = [*added, *graph.output]
    del graph.output[:]
    graph.output.extend(outputs)
    keys = onnx_keys(head, threshold, decided)
    if keys and norm is not None:  # the Model API applies them to the image it is given
        keys[ONNX_PREFIX + "mean_values"] = _values(norm.mean, channels)
        keys[ONNX_PREFIX + "scale_values"] = _values(norm.std, channels)
    if keys and decided and channels == 3:  # it takes images as OpenCV reads them, BGR
        keys[ONNX_PREFIX + "reverse_input_channels"] = "True"
    kept = [p for p in model.metadata_props if not p.key.startswith(ONNX_PREFIX)]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key in sorted(keys):
        model.metadata_props.add(key=key, value=keys[key])
    return model.SerializeToString(deterministic=True)


def _onnx_decision(onnx: Any, graph: Any, source: str, head: Head, threshold: Any, name: str) -> None:
    """The nodes of one head's decision output ``name`` (see the module's docstring)."""
    helper, numpy_helper = onnx.helper, onnx.numpy_helper
    named = replace_name(head, "decided")

    def n(base: str) -> str:
        return _named(f"keras_edge_decided_{base}", named)

    def const(base: str, value: Any) -> str:
        graph.initializer.append(numpy_helper.from_array(np.asarray(value), n(base)))
        return n(base)

    def node(op: str, inputs: list[str], out: str, **attrs: Any) -> str:
        graph.node.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    prob = source
    if head.output == "logit":
        prob = node("Softmax" if head.kind == "multiclass" else "Sigmoid", [source], n("probability"),
                    **({"axis": 1} if head.kind == "multiclass" else {}))  # fmt: skip
    zero = const("zero", np.array(0.0, np.float32))
    cut = decision_cut(head, threshold)
    if head.kind == "multiclass":  # (floored, as in TFLite: the decided class is never a 0)
        prob = node("Max", [prob, const("floor", np.array(KEEP_POSITIVE, np.float32))], n("floored"))
        top = node("ArgMax", [source], n("top"), axis=1, keepdims=0)
        depth = const("depth", np.array(head.units, np.int64))
        values = const("values", np.array([0.0, 1.0], np.float32))
        hot = node("OneHot", [top, depth, values], n("onehot"), axis=-1)
        mask = node("Cast", [hot], n("hot"), to=onnx.TensorProto.BOOL)
        if cut is None:
            node("Where", [mask, prob, zero], name)
            return
        best = node("ReduceMax", [source], n("best"), axes=[1], keepdims=1)
        scores = node("Concat", [node("ReduceMax", [prob], n("top_p"), axes=[1], keepdims=1), prob],
                      n("scores"), axis=1)  # fmt: skip
        sure = node("Greater", [best, const("cut", np.array([cut], np.float32))], n("sure"))
        kept = node("And", [mask, sure], n("kept"))
        mask = node("Concat", [node("Not", [sure], n("unsure")), kept], n("mask"), axis=1)
        node("Where", [mask, scores, zero], name)
        return
    cuts = np.asarray(cut, dtype=np.float32).reshape(-1)
    above = node("Greater", [source, const("cut", cuts)], n("above"))
    if head.kind == "multilabel":
        node("Where", [above, prob, zero], name)
        return
    rest = node("Sub", [const("one", np.array([1.0], np.float32)), prob], n("rest"))
    both = node("Concat", [rest, prob], n("both"), axis=1)
    mask = node("Concat", [node("Not", [above], n("below")), above], n("mask"), axis=1)
    node("Where", [mask, both, zero], name)
