"""Keras model -> ONNX bytes at one precision.

fp32 goes through ``tf2onnx.convert.from_function`` on a ``tf.function`` of the model
(``from_keras`` fails on Keras 3). The quantized variants are made from the fp32 graph with
onnxconverter-common (fp16) and ``onnxruntime.quantization`` (dynamic, static QDQ int8).
"""

from __future__ import annotations

import logging
import math
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from keras_edge.exporter import _tf
from keras_edge.exporter.calibration import Calibration
from keras_edge.exporter.errors import (
    CalibrationError,
    ConversionError,
    UnsupportedOpError,
    first_error,
)
from keras_edge.exporter.mixed import GraphNode
from keras_edge.runtime.manifest import InputSpec

logger = logging.getLogger(__name__)

OPSET = 17  # tf2onnx 1.17 handles 13-18; 17 is the newest every ONNX Runtime >= 1.14 runs
OUTPUT_NAME = "output"
BATCH_DIM = "batch"
_UNK_DIM = re.compile(r"^unk__\d+$")


def _rename(model: Any, old: str, new: str) -> None:
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
        for i, name in enumerate(node.output):
            if name == old:
                node.output[i] = new


def _canonicalize(model: Any, input_names: list[str]) -> None:
    """Stable names (the model's input names, ``output``), and bytes reproducible within one
    process: tf2onnx names free dimensions ``unk__N`` and fills ``doc_string`` from global
    counters."""
    model.doc_string = ""
    model.graph.doc_string = ""
    for value in [*model.graph.input, *model.graph.output]:
        for dim in value.type.tensor_type.shape.dim:
            if _UNK_DIM.match(dim.dim_param):
                dim.dim_param = BATCH_DIM
    initializers = {i.name for i in model.graph.initializer}
    feeds = [value for value in model.graph.input if value.name not in initializers]
    pairs = [*zip(feeds, input_names, strict=True), (model.graph.output[0], OUTPUT_NAME)]
    for value, name in pairs:
        if value.name != name:
            _rename(model, value.name, name)
            value.name = name
    _renumber(model)


_COUNTER = re.compile(r"__(\d+)(?=$|:)")


def _renumber(model: Any) -> None:
    """Renumber the ``__N`` suffixes tf2onnx gives the ops it inserts ('new_shape__10'), in
    order of first appearance. N comes from a process-wide counter, and a second conversion in
    one process (a test run, a build script exporting several models) starts it elsewhere: the
    same model then gave other bytes. The renumbering is one-to-one, so no two names merge."""
    graph = model.graph
    if any(attr.g.node or attr.graphs for node in graph.node for attr in node.attribute):
        return  # If/Loop/Scan bodies name outer tensors too; left as tf2onnx wrote them
    kept = {v.name for v in [*graph.input, *graph.output]}  # the model's own names
    if any(_COUNTER.search(name) for name in kept):
        return  # an input named 'feat__1' could collide with a renumbered name: leave all
    numbers: dict[str, str] = {}

    def new(name: str) -> str:
        if name in kept:
            return name

        def swap(match: re.Match[str]) -> str:
            return "__" + numbers.setdefault(match.group(1), str(len(numbers) + 1))

        return _COUNTER.sub(swap, name)

    for node in graph.node:
        node.name = new(node.name)
        node.input[:] = [new(n) for n in node.input]
        node.output[:] = [new(n) for n in node.output]
    for collection in (graph.initializer, graph.value_info):
        for item in collection:
            item.name = new(item.name)


def to_fp32_proto(model: Any, specs: tuple[InputSpec, ...]) -> Any:
    """tf2onnx on the model's frozen graph.

    Freezing first matters: ``from_function`` turns tensors the function captures without a
    variable (a Keras ``Normalization`` layer's mean and variance) into extra graph inputs with
    no value, which ONNX Runtime then asks the caller to feed.
    """
    tf = _tf.tensorflow()
    tf2onnx = _tf.module("tf2onnx")
    constants = _tf.module("tensorflow.python.framework.convert_to_constants")
    if len(specs) == 1:
        fn = tf.function(lambda x: model(x, training=False))
    else:
        fn = tf.function(lambda *xs: model(list(xs), training=False))
    signature = [tf.TensorSpec(s.shape, getattr(tf, s.dtype), name=s.name) for s in specs]
    try:
        with _tf.captured_output():
            concrete = fn.get_concrete_function(*signature)
            frozen = constants.convert_variables_to_constants_v2(concrete)
            proto, _ = tf2onnx.convert.from_graph_def(
                frozen.graph.as_graph_def(),
                input_names=[t.name for t in frozen.inputs],
                output_names=[t.name for t in frozen.outputs],
                opset=OPSET,
            )
    except Exception as exc:  # tf2onnx raises many untyped errors
        raise ConversionError(f"tf2onnx conversion failed: {first_error(str(exc))}") from exc
    _refuse_unknown_ops(proto, onnx_module=_tf.module("onnx"))
    initializers = {i.name for i in proto.graph.initializer}
    feeds = [i.name for i in proto.graph.input if i.name not in initializers]
    if len(feeds) != len(specs) or len(proto.graph.output) != 1:
        raise ConversionError(
            f"Expected the ONNX graph to have {len(specs)} input(s) and 1 output, got inputs "
            f"{feeds} and outputs {[o.name for o in proto.graph.output]}"
        )
    _canonicalize(proto, [s.name for s in specs])
    return proto


def _refuse_unknown_ops(proto: Any, onnx_module: Any) -> None:
    """tf2onnx copies a TensorFlow op it has no ONNX form for into the graph as it is, and ONNX
    Runtime then refuses to load it: refuse the ONNX variants here, naming the op and layer."""
    unknown = []
    for node in proto.graph.node:
        domain = node.domain or ""
        if domain in ("", "ai.onnx") and not onnx_module.defs.has(node.op_type, domain):
            layer = node.name.split("/")[1] if "/" in node.name else node.name
            unknown.append(f"{node.op_type} (in {layer!r})")
    if unknown:
        raise UnsupportedOpError(
            f"tf2onnx has no ONNX form for the TensorFlow op(s) {', '.join(sorted(set(unknown)))}, "
            f"so the ONNX variants are refused (ONNX Runtime cannot run them); the TFLite "
            f"variants may still export"
        )


_TYPE_ERROR_NODE = re.compile(r"of node \(([^)]+)\)")

# ONNX element types (onnx.TensorProto): FLOAT is what float16 conversion relabels.
FLOAT, FLOAT16, DOUBLE, BFLOAT16 = 1, 10, 11, 16
_FLOATS = {FLOAT, FLOAT16, DOUBLE, BFLOAT16}


def exact_nodes(proto: Any) -> list[str]:
    """The nodes a float16 conversion must leave in float32, decided from the graph: the index
    arithmetic that tf2onnx writes in float.

    tf2onnx writes integer and boolean computations partly in float: an Embedding's ``ids < 0``
    check casts the ids (or positions computed from the input) to float and compares them with
    a float constant; a masked recurrent step's ``where(mask, new, old)`` casts the mask to float
    and blends with it. onnxconverter-common relabels every float tensor float16 and converts
    every float constant, but a ``Cast(to=float)`` still makes float32: its consumer then gets
    float32 and float16 inputs, and ONNX Runtime refuses the graph. Such values are whole
    numbers (ids, positions, 0/1 masks) that float16 represents exactly only up to 2048.

    So: every node whose output is float32 by its attribute (``Cast``, or a ``dtype``) is kept
    in float32 (the converter then casts its output to float16 where float16 ops read it); and
    from the casts of integer or boolean values, the float values computed only from them and
    from constants (the comparison, the arithmetic on the ids) are kept in float32 too, found by
    propagating element types forward through the graph (ONNX shape inference gives them)."""
    onnx = _tf.module("onnx")
    graph = onnx.shape_inference.infer_shapes(proto).graph
    types = {
        v.name: v.type.tensor_type.elem_type for v in [*graph.value_info, *graph.input, *graph.output]
    }
    types.update({i.name: i.data_type for i in graph.initializer})
    constant = {i.name for i in graph.initializer}
    constant |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    exact: set[str] = set()  # float tensors that hold whole numbers from integers or booleans
    kept: list[str] = []
    for node in graph.node:
        fixed = [a for a in node.attribute if a.name in ("to", "dtype") and a.i == FLOAT]
        floats = [n for n in node.input if n and types.get(n) == FLOAT and n not in constant]
        if fixed:
            kept.append(node.name)
            known = [types.get(n) for n in node.input if n]
            if node.op_type == "Cast" and known and all(t and t not in _FLOATS for t in known):
                exact.update(node.output)  # ids or a mask, now float
        elif floats and all(n in exact for n in floats):
            kept.append(node.name)
            exact.update(o for o in node.output if types.get(o) == FLOAT)
    return kept


def _own_constants(proto: Any, kept: set[str]) -> None:
    """Give the nodes kept in float32 their own copy of every initializer they share with
    nodes converted to float16: the converter keeps a shared initializer in float32, and the
    float16 node reading it would then be refused."""
    graph = proto.graph
    initializers = {i.name: i for i in graph.initializer}
    readers: dict[str, set[bool]] = {}
    for node in graph.node:
        for name in node.input:
            if name in initializers:
                readers.setdefault(name, set()).add(node.name in kept)
    taken = {o for n in graph.node for o in n.output} | set(initializers)
    for name, which in readers.items():
        if which != {True, False} or initializers[name].data_type != FLOAT:
            continue
        copy = f"{name}__fp32"
        while copy in taken:
            copy += "_"
        taken.add(copy)
        twin = graph.initializer.add()
        twin.CopyFrom(initializers[name])
        twin.name = copy
        for node in graph.node:
            if node.name in kept:
                node.input[:] = [copy if n == name else n for n in node.input]


def _fp16(proto: Any) -> Any:
    """float16 inside, float32 input and output, with the index arithmetic that tf2onnx writes
    in float kept in float32 (:func:`exact_nodes`). ONNX Runtime then checks that it loads the
    graph; should it still refuse a node for a type mismatch (a pattern the graph analysis does
    not know), that node is kept in float32 too and the conversion redone, and the gap logged."""
    float16 = _tf.module("onnxconverter_common.float16")
    ort = _tf.module("onnxruntime")
    if any(not node.name for node in proto.graph.node):  # the block list goes by node name
        proto = _named_nodes(proto)
    blocked = exact_nodes(proto)
    logger.debug("fp16: %d node(s) kept in float32: %s", len(blocked), blocked)
    for _ in range(MAX_FP16_RETRIES):
        copy = type(proto)()
        copy.CopyFrom(proto)  # the converter edits the graph it is given
        _own_constants(copy, set(blocked))
        converted = float16.convert_float_to_float16(
            copy,
            keep_io_types=True,
            op_block_list=float16.DEFAULT_OP_BLOCK_LIST,
            node_block_list=list(blocked),
        )
        try:
            ort.InferenceSession(converted.SerializeToString(), providers=["CPUExecutionProvider"])
            return converted
        except Exception as exc:  # onnxruntime's errors are untyped
            found = _TYPE_ERROR_NODE.search(str(exc))
            if found is None or found.group(1) in blocked:
                return converted  # not a relabelling problem: the export's check reports it
            logger.warning(
                "onnx-fp16: keeping node %s in float32, which the graph analysis missed (%s)",
                found.group(1), first_error(str(exc)),
            )  # fmt: skip
            blocked.append(found.group(1))
    return converted


def _named_nodes(proto: Any) -> Any:
    """A copy of ``proto`` whose unnamed nodes are named after their first output."""
    named = type(proto)()
    named.CopyFrom(proto)
    for node in named.graph.node:
        if not node.name:
            node.name = f"{node.output[0]}__node"
    return named


MAX_FP16_RETRIES = 8  # nodes the graph analysis missed, kept in float32 one at a time


# Dynamic quantization only where it pays on CPU: ConvInteger was measured 7-9x SLOWER than
# float convolution for a small CNN on ONNX Runtime's CPU provider, so convolutions stay float;
# matrix products, embeddings (Gather) and recurrent cells are quantized.
DYNAMIC_OP_TYPES = ["MatMul", "Gemm", "Gather", "LSTM", "Attention"]


# Below this share of the weight bytes in the ops above (a CNN: its convolutions hold nearly
# all), onnx-dynamic is the fp32 graph under another name: fp32's size and speed. Not written.
MIN_DYNAMIC_SHARE = 0.5


def dynamic_share(proto: Any) -> tuple[float, dict[str, int]]:
    """The share of the fp32 graph's float weight bytes that dynamic quantization would make
    int8 (those read by ``DYNAMIC_OP_TYPES`` nodes), and the weight bytes per op type."""
    sizes = {  # float32: 4 bytes a value, read from the dims (no tensor is decoded)
        i.name: 4 * math.prod(i.dims) for i in proto.graph.initializer if i.data_type == FLOAT
    }
    by_op: dict[str, int] = {}
    seen: set[str] = set()
    for node in proto.graph.node:
        for name in node.input:
            if name in sizes and name not in seen:
                seen.add(name)
                by_op[node.op_type] = by_op.get(node.op_type, 0) + sizes[name]
    total = sum(by_op.values())
    quantized = sum(n for op, n in by_op.items() if op in DYNAMIC_OP_TYPES)
    return (quantized / total if total else 0.0), by_op


def _has_conv(proto: Any) -> bool:
    return any(node.op_type in ("Conv", "ConvTranspose") for node in proto.graph.node)


def _quantize_with_files(
    proto: Any, precision: str, specs: tuple[InputSpec, ...], calibration: Calibration | None
) -> bytes:
    if precision == "int8":
        with StaticInt8(proto, specs, calibration) as quantizer:  # type: ignore[arg-type]
            return quantizer.quantize([])
    onnx = _tf.module("onnx")
    quantization = _tf.module("onnxruntime.quantization")
    with tempfile.TemporaryDirectory(prefix="keras-edge-") as tmp:
        raw, src, dst = (Path(tmp) / name for name in ("fp32.onnx", "pre.onnx", "quantized.onnx"))
        onnx.save(proto, str(raw))
        # ONNX Runtime's recommended pre-processing: shape inference and fusions (MatMul+Add
        # -> Gemm), so that the quantizer sees one op per layer.
        pre_process(quantization, raw, src)
        quantization.quantize_dynamic(
            str(src),
            str(dst),
            weight_type=quantization.QuantType.QInt8,
            op_types_to_quantize=DYNAMIC_OP_TYPES,
        )
        out = onnx.load(str(dst))
    _canonicalize(out, [s.name for s in specs])
    return out.SerializeToString(deterministic=True)


# What ONNX Runtime's symbolic shape inference saves into the working directory when it fails
# (a fixed relative path in onnxruntime/tools/symbolic_shape_infer.py), and the external data
# file ONNX names for it: a uuid1 ('2bb8e364-f144-11f1-a202-02fc00000001.data'). Attention
# graphs fail it ("Incomplete symbolic shape inference").
_STRAY = ("sym_shape_infer_temp.onnx", "sym_shape_infer_temp.onnx.data")
_STRAY_DATA = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-1[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}\.data$")


def _strays() -> set[str]:
    """The names in the working directory that a failed symbolic shape inference writes."""
    return {p.name for p in Path().iterdir() if p.name in _STRAY or _STRAY_DATA.match(p.name)}


def pre_process(quantization: Any, src: Path, dst: Path) -> None:
    """ONNX Runtime's ``quant_pre_process`` from ``src`` to ``dst``, explicit paths, the working
    directory untouched. Its symbolic shape inference (for transformers' symbolic dims) saves a
    model and its weights into the working directory when it fails: those files are removed, and
    the pre-processing runs again without it (ONNX's own shape inference and the fusions still
    run)."""
    there = _strays()
    try:
        quantization.quant_pre_process(str(src), str(dst))
    except Exception as exc:  # onnxruntime raises untyped errors
        if "symbolic shape inference" not in str(exc).lower():
            raise
        for name in sorted(_strays() - there):
            Path(name).unlink(missing_ok=True)
        logger.info("symbolic shape inference failed (%s); pre-processing without it", exc)
        quantization.quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)


class StaticInt8:
    """Static QDQ int8 of the fp32 graph: pre-processed and calibrated once, quantized as often
    as asked, with some nodes kept in float (``nodes_to_exclude``) or only some quantized
    (``nodes_to_quantize``). ONNX Runtime's calibration cache (``calibration_cache_path``) keeps
    the ranges of the first, unrestricted run, so a candidate costs ~50 ms, not a calibration;
    with nothing excluded the bytes are those of one ``quantize_static`` call without it.

    A context manager: the pre-processed model and the cache live in a temporary folder."""

    fmt = "onnx"

    def __init__(self, proto: Any, specs: tuple[InputSpec, ...], calibration: Calibration) -> None:
        self._proto, self._specs, self._calibration = proto, specs, calibration
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._onnx = _tf.module("onnx")
        self._quantization = _tf.module("onnxruntime.quantization")
        self._nodes: list[GraphNode] | None = None

    def __enter__(self) -> StaticInt8:
        self._tmp = tempfile.TemporaryDirectory(prefix="keras-edge-")
        folder = Path(self._tmp.name)
        self._src, self._cache = folder / "pre.onnx", folder / "calibration.json"
        try:
            self._onnx.save(self._proto, str(folder / "fp32.onnx"))
            # ONNX Runtime's recommended pre-processing: shape inference and fusions (MatMul+Add
            # -> Gemm), so that the quantizer sees one op per layer.
            with _tf.captured_output():
                pre_process(self._quantization, folder / "fp32.onnx", self._src)
        except Exception as exc:  # onnxruntime raises untyped errors
            self.__exit__()
            raise ConversionError(f"ONNX int8 conversion failed: {first_error(str(exc))}") from exc
        return self

    def __exit__(self, *exc: object) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def _static(self, **which: Any) -> Any:
        """``quantize_static`` of the pre-processed graph; the first call calibrates every
        tensor (and fills the cache) whatever ``which`` restricts."""
        q = self._quantization
        if which and not self._cache.exists():
            self._static()
        dst = Path(self._src).with_name("quantized.onnx")
        with _tf.captured_output():
            q.quantize_static(
                str(self._src),
                str(dst),
                self._calibration.onnx_reader(),
                quant_format=q.QuantFormat.QDQ,
                # u8s8: uint8 activations, int8 weights. ONNX Runtime's x86 kernels (MLAS,
                # VNNI) fuse u8s8 QDQ into QLinearConv/QLinearMul/QLinearAdd; s8s8 stayed
                # Q/DQ around float ops on this CPU (MobileNetV3Small 4-20x slower than fp32).
                activation_type=q.QuantType.QUInt8,
                weight_type=q.QuantType.QInt8,
                calibrate_method=q.CalibrationMethod.MinMax,
                # One scale per output channel of a convolution's weights: channels of one
                # layer differ by orders of magnitude, and one scale for all loses the small.
                per_channel=_has_conv(self._proto),
                calibration_cache_path=str(self._cache),
                **which,
            )
        return self._onnx.load(str(dst))

    def nodes(self) -> list[GraphNode]:
        """The pre-processed float graph's nodes, in its (topological) order."""
        if self._nodes is None:
            graph = self._onnx.load(str(self._src)).graph
            constants = {i.name for i in graph.initializer}
            producer: dict[str, str] = {}
            self._nodes = []
            for node in graph.node:
                self._nodes.append(
                    GraphNode(
                        key=node.name,
                        op=node.op_type,
                        names=(node.name,),
                        weights=tuple(i for i in node.input if i in constants),
                        inputs=tuple(producer[i] for i in node.input if i in producer),
                    )
                )
                producer.update({o: node.name for o in node.output})
        return self._nodes

    def quantize(self, float_nodes: Sequence[str]) -> bytes:
        """The variant's bytes, every node quantized but ``float_nodes``."""
        which = {"nodes_to_exclude": list(float_nodes)} if float_nodes else {}
        try:
            out = self._static(**which)
        except Exception as exc:  # onnxruntime raises untyped errors
            raise ConversionError(f"ONNX int8 conversion failed: {first_error(str(exc))}") from exc
        _canonicalize(out, [s.name for s in self._specs])
        return out.SerializeToString(deterministic=True)

    def only(self, nodes: Sequence[str]) -> bytes:
        """Only ``nodes`` quantized; none: the pre-processed float graph."""
        if not nodes:
            return Path(self._src).read_bytes()
        return self._static(nodes_to_quantize=list(nodes)).SerializeToString(deterministic=True)


def from_fp32(
    proto: Any, specs: tuple[InputSpec, ...], precision: str, calibration: Calibration | None = None
) -> bytes:
    """ONNX bytes at ``precision`` (fp32, fp16, dynamic or int8), made from the fp32 graph of
    :func:`to_fp32_proto`, which is left unchanged: an export converts the model once."""
    if precision not in ("fp32", "fp16", "dynamic", "int8"):
        raise ConversionError(f"Expected a precision fp32/fp16/dynamic/int8, got {precision!r}")
    if precision == "int8" and calibration is None:
        raise CalibrationError("Expected calibration data for onnx-int8, got none")
    if precision == "fp32":
        return proto.SerializeToString(deterministic=True)
    try:
        with _tf.captured_output():
            if precision == "fp16":
                return _fp16(proto).SerializeToString(deterministic=True)
            return _quantize_with_files(proto, precision, specs, calibration)
    except Exception as exc:  # onnxconverter-common and onnxruntime raise untyped errors
        raise ConversionError(f"ONNX {precision} conversion failed: {first_error(str(exc))}") from exc
