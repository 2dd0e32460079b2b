"""The int8 graphs run as the engines' fast integer kernels (issue 22), checked on what each
engine really runs, not on what the file says:

- ONNX Runtime: the int8 file's graph after ONNX Runtime's own optimizations (the model it
  saves with ``optimized_model_filepath``) has every convolution as a ``QLinearConv``, the
  elementwise ops as ``QLinearMul``/``QLinearAdd`` and a quantize and a dequantize at the edges
  only. (s8s8 QDQ left half the convolutions float between hundreds of Q/DQ nodes here.)
- LiteRT: XNNPACK takes the int8 file in as many partitions as the fp32 file (one), because the
  ops it has no int8 kernel for (``HARD_SWISH``) are kept in float, and the manifest says so.

On a small MobileNetV3-like model built here (inverted residuals, depthwise convolutions,
hard-swish, squeeze-and-excite, a residual add) trained for a few seconds on generated images.
No timings: the speed figures belong to ``keras-edge bench``.
"""

from __future__ import annotations

from collections import Counter

import keras
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from keras_edge import exporter
from keras_edge.exporter import kernels, to_tflite
from keras_edge.exporter.calibration import Calibration

SIZE = 32


def _images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Camera-like pixels 0..255: a bright square in the top or the bottom half (the label)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(60.0, 20.0, (n, SIZE, SIZE, 3))
    y = rng.integers(0, 2, n)
    for i in range(n):
        row = rng.integers(0, SIZE // 2 - 6) + (SIZE // 2 if y[i] else 0)
        col = rng.integers(0, SIZE - 6)
        x[i, row : row + 6, col : col + 6, :] += rng.uniform(80, 160)
    return np.clip(x, 0, 255).astype(np.float32), y.astype(np.int64)


def _hard_swish(x):  # as keras.applications.MobileNetV3 writes it
    return keras.layers.Multiply()([x, keras.layers.ReLU(6.0)(x + 3.0) * (1.0 / 6.0)])


def _block(x, expand: int, out: int, stride: int):
    """An inverted residual with squeeze-and-excite, MobileNetV3's block."""
    inputs = x
    x = _hard_swish(keras.layers.BatchNormalization()(keras.layers.Conv2D(expand, 1, use_bias=False)(x)))
    x = keras.layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False)(x)
    x = _hard_swish(keras.layers.BatchNormalization()(x))
    se = keras.layers.GlobalAveragePooling2D(keepdims=True)(x)
    se = keras.layers.Conv2D(max(8, expand // 4), 1, activation="relu")(se)
    se = keras.layers.ReLU(6.0)(keras.layers.Conv2D(expand, 1)(se) + 3.0) * (1.0 / 6.0)
    x = keras.layers.Multiply()([x, se])
    x = keras.layers.BatchNormalization()(keras.layers.Conv2D(out, 1, use_bias=False)(x))
    if stride == 1 and inputs.shape[-1] == out:
        x = keras.layers.Add()([inputs, x])
    return x


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    keras.utils.set_random_seed(22)
    x_train, y_train = _images(512, 0)
    x_val, y_val = _images(200, 1)
    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inputs)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same")(x)
    x = _hard_swish(keras.layers.BatchNormalization()(x))
    x = _block(x, 32, 16, 1)
    x = _block(x, 48, 24, 2)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x), name="tiny_mobilenet")
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="binary_crossentropy", jit_compile=False)
    model.fit(x_train, y_train, epochs=4, batch_size=32, verbose=0)
    out = tmp_path_factory.mktemp("kernels") / "dist"
    model.save(out.parent / "model.keras")
    result = exporter.export(
        model, out, quantize=["int8"], calibration=x_train[:128], validation=(x_val, y_val),
        int8_fallback="none",  # the recipe's own graph, whatever the gate says of it
    )  # fmt: skip
    return result.manifest, out


def _optimized_ops(path, tmp_path) -> Counter[str]:
    """The op types of the graph ONNX Runtime runs, after its own optimizations."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return Counter(node.op_type for node in onnx.load(str(tmp_path / "optimized.onnx")).graph.node)


def test_onnx_int8_runs_as_qlinear_kernels(exported, tmp_path):
    manifest, out = exported
    convs = Counter(n.op_type for n in onnx.load(str(out / "onnx-fp32.onnx")).graph.node)["Conv"]
    ops = _optimized_ops(out / "onnx-int8.onnx", tmp_path)
    assert convs == 11  # the stem; per block expand, depthwise, squeeze, excite, project
    assert ops["QLinearConv"] == convs and ops["Conv"] == 0, ops  # every convolution, in int8
    assert ops["QLinearMul"] >= 8 and ops["QLinearAdd"] >= 6 and ops["Mul"] == ops["Add"] == 0, ops
    # One quantize at the float input, dequantize at the float output only: nothing in between.
    # (An image model's file has a decision output after the probabilities; ONNX Runtime gives
    # each of the decision's nodes that read the probabilities its own copy of that dequantize.)
    graph = onnx.load(str(out / "onnx-int8.onnx")).graph
    assert graph.output[0].name == "keras_edge_decision"
    probability = graph.output[1].name
    readers = sum(probability in node.input for node in graph.node)
    assert ops["QuantizeLinear"] == 1 and ops["DequantizeLinear"] == 1 + readers, ops
    assert manifest.variants["onnx-int8"].passed


def test_tflite_int8_is_one_xnnpack_partition_like_fp32(exported):
    manifest, out = exported
    fp32 = kernels.partitions((out / "tflite-fp32.tflite").read_bytes())
    int8 = kernels.partitions((out / "tflite-int8.tflite").read_bytes())
    assert fp32.count == 1 and not fp32.inner()
    assert int8.count == fp32.count and not int8.inner(), int8.describe()
    record = manifest.variants["tflite-int8"].kernels
    # XNNPACK has no int8 HARD_SWISH: all-int8 split the graph, and the export said why.
    assert record.int8_partitions > 1 and set(record.kept_float) == {"HARD_SWISH"}
    assert record.kept_float["HARD_SWISH"] == 5 and record.partitions == 1 and not record.left_out
    assert manifest.variants["tflite-int8"].passed


def test_partitions_name_the_ops_left_out(exported, tmp_path):
    """The measurement itself, on the public converter's full int8 of the same model: XNNPACK
    leaves its five HARD_SWISH ops to LiteRT's built-in kernels, named by type and output
    tensor, and takes the rest in the six pieces between them."""
    manifest, out = exported
    model = exporter.load_model(out.parent / "model.keras")
    x, _ = _images(64, 2)
    spec = manifest.inputs
    data = to_tflite.convert(model, "int8", Calibration.from_array(x, spec))
    full = kernels.partitions(data)
    assert full.left_types == {"HARD_SWISH": 5} and full.count == 6, full.describe()
    assert all(name for _, name in full.inner()) and len(set(full.inner())) == 5
    assert full.count == manifest.variants["tflite-int8"].kernels.int8_partitions
