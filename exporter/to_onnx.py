"""Keras model -> ONNX bytes at one precision.

fp32 goes through ``tf2onnx.convert.from_function`` on a ``tf.function`` of the model
(``from_keras`` fails on Keras 3). The quantized variants are made from the fp32 graph with
onnxconverter-common (fp16) and ``onnxruntime.quantization`` (dynamic, static QDQ int8).
"""

from __future__ import annotations

import logging
import re
import tempfile
from pathlib import Path
from typing import Any

from keras_edge.exporter import _tf
from keras_edge.exporter.calibration import Calibration
from keras_edge.exporter.errors import CalibrationError, ConversionError
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


def _canonicalize(model: Any, input_name: str) -> None:
    """Stable names, and bytes reproducible within one process: tf2onnx names free dimensions
    ``unk__N`` and fills ``doc_string`` from global counters."""
    model.doc_string = ""
    model.graph.doc_string = ""
    for value in [*model.graph.input, *model.graph.output]:
        for dim in value.type.tensor_type.shape.dim:
            if _UNK_DIM.match(dim.dim_param):
                dim.dim_param = BATCH_DIM
    for value, name in ((model.graph.input[0], input_name), (model.graph.output[0], OUTPUT_NAME)):
        if value.name != name:
            _rename(model, value.name, name)
            value.name = name


def to_fp32_proto(model: Any, spec: InputSpec) -> Any:
    """tf2onnx on the model's frozen graph.

    Freezing first matters: ``from_function`` turns tensors the function captures without a
    variable (a Keras ``Normalization`` layer's mean and variance) into extra graph inputs with
    no value, which ONNX Runtime then asks the caller to feed.
    """
    tf = _tf.tensorflow()
    tf2onnx = _tf.module("tf2onnx")
    constants = _tf.module("tensorflow.python.framework.convert_to_constants")
    fn = tf.function(lambda x: model(x, training=False))
    try:
        with _tf.captured_output():
            concrete = fn.get_concrete_function(tf.TensorSpec(spec.shape, tf.float32, name=spec.name))
            frozen = constants.convert_variables_to_constants_v2(concrete)
            proto, _ = tf2onnx.convert.from_graph_def(
                frozen.graph.as_graph_def(),
                input_names=[t.name for t in frozen.inputs],
                output_names=[t.name for t in frozen.outputs],
                opset=OPSET,
            )
    except Exception as exc:  # tf2onnx raises many untyped errors
        raise ConversionError(f"tf2onnx conversion failed: {exc}") from exc
    initializers = {i.name for i in proto.graph.initializer}
    feeds = [i.name for i in proto.graph.input if i.name not in initializers]
    if len(feeds) != 1 or len(proto.graph.output) != 1:
        raise ConversionError(
            f"Expected the ONNX graph to have 1 input and 1 output, got inputs {feeds} and "
            f"outputs {[o.name for o in proto.graph.output]}"
        )
    _canonicalize(proto, spec.name)
    return proto


def _fp16(proto: Any) -> Any:
    float16 = _tf.module("onnxconverter_common.float16")
    copy = type(proto)()
    copy.CopyFrom(proto)  # the converter edits the graph it is given
    # keep_io_types: the device still feeds float32 and reads float32.
    return float16.convert_float_to_float16(copy, keep_io_types=True)


def _quantize_with_files(
    proto: Any, precision: str, spec: InputSpec, calibration: Calibration | None
) -> bytes:
    onnx = _tf.module("onnx")
    quantization = _tf.module("onnxruntime.quantization")
    with tempfile.TemporaryDirectory(prefix="keras-edge-") as tmp:
        raw, src, dst = (Path(tmp) / name for name in ("fp32.onnx", "pre.onnx", "quantized.onnx"))
        onnx.save(proto, str(raw))
        # ONNX Runtime's recommended pre-processing: shape inference and fusions (MatMul+Add
        # -> Gemm), so that the quantizer sees one op per layer.
        quantization.quant_pre_process(str(raw), str(src))
        if precision == "dynamic":
            quantization.quantize_dynamic(str(src), str(dst), weight_type=quantization.QuantType.QInt8)
        else:
            quantization.quantize_static(
                str(src),
                str(dst),
                calibration.onnx_reader(spec.name),
                quant_format=quantization.QuantFormat.QDQ,
                activation_type=quantization.QuantType.QInt8,
                weight_type=quantization.QuantType.QInt8,
                calibrate_method=quantization.CalibrationMethod.MinMax,
            )
        out = onnx.load(str(dst))
    _canonicalize(out, spec.name)
    return out.SerializeToString(deterministic=True)


def from_fp32(
    proto: Any, spec: InputSpec, precision: str, calibration: Calibration | None = None
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
            return _quantize_with_files(proto, precision, spec, calibration)
    except Exception as exc:  # onnxconverter-common and onnxruntime raise untyped errors
        raise ConversionError(f"ONNX {precision} conversion failed: {exc}") from exc
