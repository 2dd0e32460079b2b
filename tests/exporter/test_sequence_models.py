"""Attention and recurrent text classifiers in every variant asked for (issue 21, item 4).

Each model is built here, trained for a few seconds on generated token ids, exported once per
module (real conversions: TensorFlow, tf2onnx, onnxconverter-common, ONNX Runtime, LiteRT), and
decided on held-out ids through ``keras_edge.load`` exactly as Keras decides them.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
import onnx
import onnxruntime as ort
import pytest

import keras_edge
from keras_edge import exporter
from keras_edge.exporter import to_onnx, to_tflite
from keras_edge.exporter.errors import UnsupportedOpError

LENGTH, VOCAB = 10, 30
logger = logging.getLogger(__name__)


def _ids(rng: np.random.Generator, n: int, pad: bool) -> tuple[np.ndarray, np.ndarray]:
    """Token ids 1..VOCAB-1 (0 is padding), labelled 1 when two or more rare ids (< 6) occur;
    with ``pad``, each row ends in 0 to 4 padding zeros."""
    ids = rng.integers(1, VOCAB, (n, LENGTH)).astype(np.int32)
    if pad:
        ends = rng.integers(0, 5, n)
        ids[np.arange(LENGTH)[None, :] >= LENGTH - ends[:, None]] = 0
    y = (((ids > 0) & (ids < 6)).sum(axis=1) >= 2).astype(np.float32)
    return ids, y


class Exported:
    """A model, its data, its export (folder and result) and how long the export took."""

    def __init__(self, model: Any, x_val: np.ndarray, y_val: np.ndarray, x_held: np.ndarray,
                 out: Path, quantize: str, strays: Path) -> None:  # fmt: skip
        self.model, self.x_val, self.y_val, self.x_held, self.out = model, x_val, y_val, x_held, out
        started = time.perf_counter()
        # In a folder of its own: ONNX Runtime's failed symbolic shape inference (attention
        # graphs) writes files into the working directory; the export must leave none.
        with contextlib.chdir(strays):
            self.result = exporter.export(model, out, quantize=quantize, validation=(x_val, y_val))
        self.seconds = time.perf_counter() - started
        self.strays = sorted(p.name for p in strays.iterdir())
        logger.warning("%s exported in %.1f s", model.name, self.seconds)


def _train(model: Any, x: np.ndarray, y: np.ndarray, epochs: int) -> Any:
    model.compile("adam", "binary_crossentropy")
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    return model


@pytest.fixture(scope="module")
def transformer(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    """A Transformer block over token and position embeddings, the positions computed from the
    input (tf2onnx writes the position Embedding's ``ids < 0`` check as a float compare)."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    i = keras.Input((LENGTH,), dtype="int32", name="tokens")
    positions = keras.ops.cumsum(keras.ops.ones_like(i), axis=1) - 1
    h = keras.layers.Embedding(VOCAB, 16)(i) + keras.layers.Embedding(LENGTH, 16)(positions)
    h = keras.layers.LayerNormalization()(h + keras.layers.MultiHeadAttention(2, 8)(h, h))
    h = keras.layers.LayerNormalization()(h + keras.layers.Dense(16, activation="relu")(h))
    out = keras.layers.Dense(1, activation="sigmoid")(keras.layers.GlobalAveragePooling1D()(h))
    model = keras.Model(i, out, name="transformer")
    x, y = _ids(rng, 800, pad=False)
    _train(model, x, y, epochs=6)
    x_val, y_val = _ids(rng, 200, pad=False)
    x_held, _ = _ids(rng, 200, pad=False)
    root = tmp_path_factory.mktemp("transformer")
    (root / "cwd").mkdir()
    return Exported(model, x_val, y_val, x_held, root / "dist", "fp16,dynamic", root / "cwd")


@pytest.fixture(scope="module")
def masked_bilstm(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    """A Bidirectional LSTM over ``Embedding(mask_zero=True)``: padded sequences of a fixed
    length, which the converters get as an unrolled copy."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(1)
    i = keras.Input((LENGTH,), dtype="int32", name="tokens")
    h = keras.layers.Embedding(VOCAB, 8, mask_zero=True)(i)
    h = keras.layers.Bidirectional(keras.layers.LSTM(6), name="bilstm")(h)
    model = keras.Model(i, keras.layers.Dense(1, activation="sigmoid")(h), name="masked_bilstm")
    x, y = _ids(rng, 800, pad=True)
    _train(model, x, y, epochs=8)
    x_val, y_val = _ids(rng, 200, pad=True)
    x_held, _ = _ids(rng, 200, pad=True)
    root = tmp_path_factory.mktemp("bilstm")
    (root / "cwd").mkdir()
    return Exported(model, x_val, y_val, x_held, root / "dist", "fp16", root / "cwd")


MODELS = {
    "transformer": ("transformer", ("fp32", "fp16", "dynamic")),
    "masked-bilstm": ("masked_bilstm", ("fp32", "fp16")),
}


@pytest.fixture(params=list(MODELS))
def case(request: pytest.FixtureRequest) -> tuple[Exported, tuple[str, ...]]:
    fixture, precisions = MODELS[request.param]
    return request.getfixturevalue(fixture), precisions


def test_every_variant_is_written_and_passes(case):
    exported, precisions = case
    manifest = exported.result.manifest
    expected = {f"{fmt}-{p}" for fmt in ("tflite", "onnx") for p in precisions}
    assert manifest.refused == {}
    assert set(manifest.variants) == expected
    # export() returned: the CLI exits 0 (3 only for a quantized variant missing its gate).
    assert all(vid.endswith(("fp16", "dynamic", "int8")) for vid in exported.result.failed)
    for vid in ("tflite-fp32", "onnx-fp32"):
        assert manifest.variants[vid].parity.passed, manifest.variants[vid].parity
        assert (exported.out / manifest.variants[vid].file).is_file()
    assert exported.strays == [], "the export left files in the working directory"


def test_onnx_fp16_loads_in_onnx_runtime_with_the_index_arithmetic_in_float32(case):
    exported, _ = case
    path = exported.out / "onnx-fp16.onnx"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    fp16 = session.run(None, {"tokens": exported.x_held})[0]
    np.testing.assert_allclose(fp16, exported.model.predict(exported.x_held, verbose=0), atol=5e-3)
    graph = onnx.load(str(path)).graph
    # The id / mask casts stay float32 (to=1); float16 is only for the activations.
    casts = [n for n in graph.node if n.op_type == "Cast" and n.input[0] == "tokens"]
    assert casts == [] or all(a.i != onnx.TensorProto.FLOAT16 for n in casts for a in n.attribute)
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in graph.initializer)


def test_every_variant_decides_held_out_inputs_as_keras(case):
    exported, _ = case
    want = (exported.model.predict(exported.x_held, verbose=0)[:, 0] > 0.5).astype(int)
    assert 0 < want.sum() < len(want), "Keras decides one class for every input: proves nothing"
    for vid in exported.result.manifest.variants:
        got = keras_edge.load(exported.out, variant=vid).predict(exported.x_held)
        assert got.shape == want.shape
        np.testing.assert_array_equal(got, want, err_msg=vid)


def test_the_masked_bilstm_converts_through_an_unrolled_copy(masked_bilstm):
    manifest = masked_bilstm.result.manifest
    assert manifest.model.unrolled == ("'bilstm' (Bidirectional of LSTM)",)
    # Gated against the original model: its own probabilities, not the copy's.
    reference = masked_bilstm.model.predict(masked_bilstm.x_val, verbose=0)
    for vid in ("tflite-fp32", "onnx-fp32"):
        proba = keras_edge.load(masked_bilstm.out, variant=vid).predict_proba(masked_bilstm.x_val)
        np.testing.assert_allclose(proba, reference, atol=1e-5)
        assert manifest.variants[vid].parity.max_abs_diff < 1e-5


def test_exact_nodes_keep_id_casts_and_comparisons_in_float32(transformer):
    proto = onnx.load(str(transformer.out / "onnx-fp32.onnx"))
    kept = set(to_onnx.exact_nodes(proto))
    by_name = {n.name: n for n in proto.graph.node}
    kinds = {by_name[name].op_type for name in kept}
    assert {"Cast", "Less"} <= kinds
    # Nothing that computes on activations is kept: attention, normalization, dense layers.
    assert not kinds & {"MatMul", "Softmax", "ReduceMean", "Sqrt", "Sigmoid", "Relu"}


def test_a_flex_graph_is_never_written_and_names_the_layer():
    # The converter's own SELECT_TF_OPS (never enabled by keras-edge) writes a Flex op for a
    # determinant; the check on converted bytes refuses it, naming the op and the layer.
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    i = keras.Input((3, 3), name="m")
    det = keras.layers.Lambda(lambda m: keras.ops.expand_dims(keras.ops.linalg.det(m), -1), name="det")
    model = keras.Model(i, keras.layers.Dense(1, activation="sigmoid")(det(i)))
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
    data = converter.convert()
    assert [op for op, _ in to_tflite.flex_ops(data)] == ["MatrixDeterminant"]
    with pytest.raises(UnsupportedOpError, match=r"layer 'det' \(Lambda\) needs the TensorFlow op\(s\) "
                       r"MatrixDeterminant.*Select TF ops \(Flex\)") as caught:  # fmt: skip
        to_tflite.refuse_flex(data, model)
    assert "\x1b" not in str(caught.value)
    assert to_tflite.flex_ops(to_tflite.convert(keras.Model(i, keras.layers.Flatten()(i)), "fp32")) == []


def _unroll_flags(layer: Any) -> list[bool]:
    """``unroll`` of every recurrent layer in ``layer``, nested ones included."""
    if isinstance(layer, keras.layers.RNN):
        return [layer.unroll]
    inner = [getattr(layer, name, None) for name in ("forward_layer", "backward_layer", "layer")]
    flags = [f for sub in inner if sub is not None for f in _unroll_flags(sub)]
    for sub in getattr(layer, "layers", []):
        flags += _unroll_flags(sub)
    return flags


def test_the_unrolled_copy_finds_loops_at_any_depth():
    from keras_edge.exporter import recurrent

    keras.utils.set_random_seed(0)
    i = keras.Input((5, 3), name="seq")
    nested = keras.Sequential([keras.Input((5, 3)), keras.layers.SimpleRNN(2, return_sequences=True)],
                              name="inner")  # fmt: skip
    h = keras.layers.GRU(4, return_sequences=True, name="gru")(nested(i))
    h = keras.layers.Bidirectional(keras.layers.LSTM(3), name="bi")(h)
    model = keras.Model(i, keras.layers.Dense(1, activation="sigmoid")(h))
    conversion = recurrent.for_conversion(model)
    assert conversion.unrolled == (
        "'inner' (Sequential of SimpleRNN)", "'gru' (GRU)", "'bi' (Bidirectional of LSTM)",
    )  # fmt: skip
    assert [f for layer in conversion.model.layers for f in _unroll_flags(layer)] == [True] * 4
    assert [f for layer in model.layers for f in _unroll_flags(layer)] == [False] * 4  # untouched
    x = np.random.default_rng(0).standard_normal((16, 5, 3)).astype(np.float32)
    recurrent.check_copy(model, conversion, (x,))  # raises when the copy answers otherwise
    np.testing.assert_allclose(conversion.model.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-6)  # fmt: skip
    plain = keras.Model(i, keras.layers.Dense(1)(keras.layers.Flatten()(i)))
    assert recurrent.for_conversion(plain).model is plain
