"""Keras model -> TFLite bytes at one precision."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
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

logger = logging.getLogger(__name__)


def convert(
    model: Any, precision: str, calibration: Calibration | None = None, int8_io: bool = False
) -> bytes:
    """Convert with ``TFLiteConverter.from_keras_model``: ``from_concrete_functions`` with the
    model as trackable converts without an error and gives NaN (the weights stay resource
    variables, and int8 then fails in READ_VARIABLE).

    ``int8`` is full integer inside, calibrated on ``calibration``. Its input and output stay
    float32 (LiteRT quantizes and dequantizes in C++, cheaper than numpy can per call) unless
    ``int8_io``, for integer-only targets (microcontrollers, NPUs): then they are int8 and the
    runtime quantizes with the model's scale and zero point.
    """
    tf = _tf.tensorflow()
    with _tf.captured_output():
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        if precision == "fp16":
            # supported_types alone gives a file identical to fp32: DEFAULT is needed too.
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        elif precision == "dynamic":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        elif precision == "int8":
            if calibration is None:
                raise CalibrationError("Expected calibration data for tflite-int8, got none")
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = calibration.representative_dataset
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            if int8_io:
                converter.inference_input_type = tf.int8
                converter.inference_output_type = tf.int8
        elif precision != "fp32":
            raise ConversionError(f"Expected a precision fp32/fp16/dynamic/int8, got {precision!r}")
        return _convert(converter, model, precision)


def _convert(converter: Any, model: Any, precision: str) -> bytes:
    """``converter.convert()``, its untyped errors as UnsupportedOpError (ops that need
    TensorFlow) or ConversionError."""
    try:
        data = bytes(converter.convert())
    except Exception as exc:  # the converter raises many untyped errors
        unsupported = _needs_tensorflow(model, str(exc))
        if unsupported:
            raise UnsupportedOpError(unsupported) from exc
        message = first_error(str(exc))
        raise ConversionError(f"TFLite conversion at {precision} failed: {message}") from exc
    refuse_flex(data, model)
    return data


def flex_ops(data: bytes) -> list[tuple[str, str]]:
    """(TensorFlow op, first output tensor's name) of every Select TF op ("Flex", a custom op
    named ``Flex<Op>``) in a TFLite model."""
    from ai_edge_litert import schema_py_generated as schema

    root = schema.Model.GetRootAsModel(data, 0)
    found = []
    for g in range(root.SubgraphsLength()):
        graph = root.Subgraphs(g)
        for o in range(graph.OperatorsLength()):
            op = graph.Operators(o)
            code = root.OperatorCodes(op.OpcodeIndex()).CustomCode()
            name = code.decode() if code else ""
            if name.startswith("Flex"):
                outputs = [int(t) for t in op.OutputsAsNumpy() if t >= 0]
                tensor = graph.Tensors(outputs[0]).Name().decode() if outputs else ""
                found.append((name[len("Flex") :], tensor))
    return found


def refuse_flex(data: bytes, model: Any) -> None:
    """Raise :class:`UnsupportedOpError` when a converted model holds Select TF ops. keras-edge
    never asks for them (``SELECT_TF_OPS``), so a converter that writes them anyway is caught
    here, before any file is written: the runtime's LiteRT has no Flex delegate to run them."""
    found = flex_ops(data)
    if not found:
        return
    ops = sorted({op for op, _ in found})
    layers = []
    for _, tensor in found:
        label = _layer_label(model, tensor)
        if label not in layers:
            layers.append(label)
    raise UnsupportedOpError(
        f"layer {', '.join(layers)} needs the TensorFlow op(s) {', '.join(ops)}, which LiteRT "
        f"runs only through Select TF ops (Flex), a TensorFlow runtime that a device running "
        f"keras-edge does not have, so this TFLite variant is refused (the ONNX variants may "
        f"still export)"
    )


def _layer_label(model: Any, path: str) -> str:
    """``'name' (Class)`` of the layer a graph path names ('model/gru_1/while' -> the layer
    'gru'), or the path's scope as it is when no layer matches."""
    parts = [p for p in path.split("/") if p and not p.startswith("StatefulPartitionedCall")]
    name = parts[1] if len(parts) > 1 else (parts[0] if parts else "(unknown)")
    for candidate in (name, re.sub(r"_\d+$", "", name)):
        try:
            return f"{candidate!r} ({type(model.get_layer(candidate)).__name__})"
        except (ValueError, AttributeError):
            continue
    return repr(name)


# The converter's messages locate an op as fused["OpName:", "model/layer/inner@function"].
_LOCATION = re.compile(r'fused\["(\w+):", "([^"@]+)@')
_TF_OP = re.compile(r"'tf\.(\w+)'")


def _needs_tensorflow(model: Any, message: str) -> str | None:
    """If the conversion failed because ops need TensorFlow at run time (LiteRT's Select TF
    ops, "Flex"), a message naming the layers and the ops; else None. keras-edge never enables
    Select TF ops: the runtime has no TensorFlow to run them."""
    lowered = message.lower()
    if "select tf ops" not in lowered and "flex op" not in lowered:
        return None
    ops = sorted(set(_TF_OP.findall(message)))
    layers = []
    for _, path in _LOCATION.findall(message):
        if path.startswith("StatefulPartitionedCall"):
            continue  # the signature's wrapper, not a layer
        # The graph names a layer as TensorFlow made it unique: 'gru_1' for the layer 'gru'.
        label = _layer_label(model, path)
        if label not in layers:
            layers.append(label)
    return (
        f"layer {', '.join(layers) or '(unknown)'} needs the TensorFlow op(s) "
        f"{', '.join(ops) or '(unknown)'}, which LiteRT runs only through Select TF ops (Flex), "
        f"a TensorFlow runtime that a device running keras-edge does not have, so this TFLite "
        f"variant is refused (the ONNX variants may still export)"
    )


PRIVATE_API = ("mlir_quantize", "deduplicate_readonly_buffers")


def _require_private_api(tf: Any, converter: Any, convert: Any) -> None:
    """Mixed precision needs two private pieces of TensorFlow's converter; a TensorFlow without
    them (another version, the user's own build) cannot make it: say which, before calibrating.
    The public converter's int8 (every op quantized) does not need them."""
    missing = [name for name in PRIVATE_API if not hasattr(convert, name)]
    if not hasattr(converter, "_experimental_calibrate_only"):
        missing.insert(0, "TFLiteConverter._experimental_calibrate_only")
    if missing:
        raise ConversionError(
            f"Expected TensorFlow's private converter API for mixed precision "
            f"(tensorflow.lite.python.convert: {', '.join(PRIVATE_API)}; the converter's "
            f"_experimental_calibrate_only), got a TensorFlow {tf.__version__} without "
            f"{', '.join(missing)}"
        )


class MixedInt8:
    """Full-integer TFLite with chosen ops kept in float: calibrated once, quantized per
    candidate in ~10 ms.

    The converter's own int8 path calibrates, then runs TensorFlow's MLIR quantizer; here the
    two steps are split as TensorFlow's ``tf.lite.experimental.QuantizationDebugger`` splits
    them (the converter's ``_experimental_calibrate_only``, then ``mlir_quantize`` with
    ``denylisted_nodes``: the output tensor names of the ops kept in float), and the converter's
    last step, deduplicating read-only buffers, is done again. With every op quantized the
    result decides bit for bit as :func:`convert` does (only the order of two metadata entries
    differs). The debugger itself is not used: its quantized model always has float input and
    output, and with ``int8_io`` the variant keeps int8 ones.
    """

    fmt = "tflite"

    def __init__(self, model: Any, calibration: Calibration, int8_io: bool = False) -> None:
        tf = _tf.tensorflow()
        self._convert = _tf.module("tensorflow.lite.python.convert")
        with _tf.captured_output():
            converter = tf.lite.TFLiteConverter.from_keras_model(model)
            _require_private_api(tf, converter, self._convert)
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = calibration.representative_dataset
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter._experimental_calibrate_only = True  # the float model with its ranges
            self._calibrated = _convert(converter, model, "int8")
        self._io = tf.int8 if int8_io else tf.float32
        self._float = tf.float32
        self._nodes: list[GraphNode] | None = None

    def __enter__(self) -> MixedInt8:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def nodes(self) -> list[GraphNode]:
        """The float model's ops in execution order, keyed by their output tensor's name."""
        if self._nodes is None:
            self._nodes = self._read_nodes()
        return self._nodes

    def _read_nodes(self) -> list[GraphNode]:
        from ai_edge_litert import schema_py_generated as schema

        codes = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
        root = schema.Model.GetRootAsModel(self._calibrated, 0)
        graph = root.Subgraphs(0)
        names = [graph.Tensors(t).Name().decode() for t in range(graph.TensorsLength())]
        producer: dict[int, str] = {}
        out = []
        for o in range(graph.OperatorsLength()):
            op = graph.Operators(o)
            code = root.OperatorCodes(op.OpcodeIndex())
            kind = codes.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "CUSTOM")
            outputs = [int(t) for t in op.OutputsAsNumpy() if t >= 0]
            inputs = [int(t) for t in op.InputsAsNumpy() if t >= 0]
            if not outputs:
                continue
            key = names[outputs[0]]
            out.append(
                GraphNode(
                    key=key,
                    op=kind,
                    names=(key,),
                    weights=tuple(names[t] for t in inputs if t not in producer),
                    inputs=tuple(producer[t] for t in inputs if t in producer),
                )
            )
            for t in outputs:
                producer[t] = key
        return out

    def _quantize(self, denylisted: Sequence[str], io: Any, final: bool = True) -> bytes:
        try:
            with _tf.captured_output():
                data = self._convert.mlir_quantize(
                    self._calibrated,
                    input_data_type=io,
                    output_data_type=io,
                    denylisted_nodes=list(denylisted) or None,
                )
                if not final:  # a model only measured: deduplicating costs more than quantizing
                    return bytes(data)
                return bytes(self._convert.deduplicate_readonly_buffers(data))
        except Exception as exc:  # the quantizer raises untyped errors
            raise ConversionError(f"TFLite int8 quantization failed: {first_error(str(exc))}") from exc

    def quantize(self, float_nodes: Sequence[str]) -> bytes:
        """The variant's bytes (int8 or float32 IO as asked), ``float_nodes`` kept in float."""
        return self._quantize(float_nodes, self._io)

    def only(self, nodes: Sequence[str]) -> bytes:
        """Float IO, only ``nodes`` quantized."""
        keep = set(nodes)
        return self._quantize(
            [n.key for n in self.nodes() if n.key not in keep], self._float, final=False
        )
