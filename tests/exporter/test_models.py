"""The models people ship beyond the two-feature MLP, on the pieces of the exporter and runtime
that make them work: several named inputs, integer token ids, recurrent layers, heads found
through trailing layers, regression tolerances, and refusals that name the layer and the op.
Every model is built here with a fixed seed; every conversion and engine is real."""

from __future__ import annotations

import json
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_edge import exporter, runtime
from keras_edge.exporter import parity
from keras_edge.exporter.errors import UnsupportedOpError
from keras_edge.exporter.model import infer_head
from keras_edge.runtime.manifest import Head

RNG = np.random.default_rng(0)


def test_two_named_inputs_export_and_decide_like_keras(two_inputs):
    model, x, out, manifest = two_inputs
    assert [(s.name, s.shape) for s in manifest.inputs] == [
        ("numeric", (None, 6)),
        ("image", (None, 8, 8, 1)),
    ]
    expected = (model.predict([x["numeric"], x["image"]], verbose=0)[:, 0] > 0.5).astype(int)
    for vid, variant in manifest.variants.items():
        assert variant.parity.passed, (vid, variant.parity)
        clf = runtime.load(out, variant=vid)
        by_name, in_order = clf.predict(x), clf.predict([x["numeric"], x["image"]])
        np.testing.assert_array_equal(by_name, in_order)
        if variant.precision == "fp32":
            np.testing.assert_array_equal(by_name, expected)
        one = {k: v[:1] for k, v in x.items()}
        assert clf.predict(one).shape == (1,) and clf.predict_proba(one).shape == (1, 1)


def test_several_inputs_refuse_what_does_not_fit(two_inputs):
    _, x, out, _ = two_inputs
    clf = runtime.load(out, variant="onnx-fp32")
    with pytest.raises(runtime.InputError, match=r"missing \['image'\]"):
        clf.predict({"numeric": x["numeric"]})
    with pytest.raises(runtime.InputError, match="a list of 2 arrays in the order"):
        clf.predict(x["numeric"])
    with pytest.raises(runtime.InputError, match="same number of samples"):
        clf.predict({"numeric": x["numeric"][:3], "image": x["image"][:2]})
    bad = {"numeric": x["numeric"][:2].copy(), "image": x["image"][:2]}
    bad["numeric"][1, 0] = np.nan
    with pytest.raises(runtime.InputError, match="finite"):
        clf.predict(bad)


def test_cli_predicts_and_verifies_from_an_npz_per_input(two_inputs, tmp_path):
    _, x, out, _ = two_inputs
    np.savez(tmp_path / "in.npz", numeric=x["numeric"][:5], image=x["image"][:5])
    cli = [sys.executable, "-m", "keras_edge"]
    proc = subprocess.run([*cli, "predict", str(out), str(tmp_path / "in.npz"), "--format", "json"],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)["rows"]) == 5
    proc = subprocess.run([*cli, "verify", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0 and "verified 4 variant(s)" in proc.stdout, proc.stderr


@pytest.fixture(scope="module")
def tokens_gru(tmp_path_factory):
    """Integer token ids through an Embedding and a GRU, trained briefly so the outputs vary."""
    keras.utils.set_random_seed(0)
    ids = RNG.integers(0, 30, (600, 12)).astype(np.int32)
    y = (ids < 5).any(axis=1).astype(np.float32)  # "does a rare token occur?"
    i = keras.Input((12,), dtype="int32", name="tokens")
    h = keras.layers.GRU(8)(keras.layers.Embedding(30, 8)(i))
    model = keras.Model(i, keras.layers.Dense(1, activation="sigmoid")(h))
    model.compile("adam", "binary_crossentropy")
    model.fit(ids, y, epochs=8, batch_size=64, verbose=0)
    out = tmp_path_factory.mktemp("gru") / "dist"
    manifest = exporter.export(model, out, quantize="fp16,dynamic", validation=(ids, y)).manifest
    return model, ids, out, manifest


def test_tokens_through_a_gru_export_in_both_formats(tokens_gru):
    model, ids, out, manifest = tokens_gru
    spec = manifest.inputs[0]
    assert (spec.dtype, spec.range) == ("int32", (0, 29))  # the Embedding's vocabulary
    assert sorted(manifest.variants) == sorted(
        f"{f}-{p}" for f in ("tflite", "onnx") for p in ("fp32", "fp16", "dynamic")
    )
    assert manifest.refused == {}
    expected = (model.predict(ids, verbose=0)[:, 0] > 0.5).astype(int)
    for vid, variant in manifest.variants.items():
        assert variant.parity.passed, (vid, variant.parity)
        if variant.precision == "fp32":
            clf = runtime.load(out, variant=vid)
            np.testing.assert_array_equal(clf.predict(ids), expected)
            np.testing.assert_array_equal(clf.predict(ids.astype(np.int64)), expected)  # safe cast


def test_token_ids_are_never_cast_from_floats_or_out_of_range(tokens_gru):
    _, ids, out, _ = tokens_gru
    for vid in ("tflite-fp32", "onnx-fp32"):
        clf = runtime.load(out, variant=vid)
        with pytest.raises(runtime.InputError, match=r"integer ids.*never cast from floats"):
            clf.predict(ids.astype(np.float32))
        with pytest.raises(runtime.InputError, match=r"ids in \[0, 29\].*from 1 to 30"):
            clf.predict(np.minimum(ids + 1, 30))


def test_integer_inputs_stay_integers_in_full_int8(tmp_path):
    keras.utils.set_random_seed(1)
    ids = RNG.integers(0, 20, (300, 10)).astype(np.int32)
    i = keras.Input((10,), dtype="int32", name="tokens")
    h = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(20, 4)(i))
    model = keras.Model(i, keras.layers.Dense(1, activation="sigmoid")(h))
    exporter.export(model, tmp_path / "d", quantize="int8", calibration=ids, min_agreement=0.0)
    from ai_edge_litert.interpreter import Interpreter

    tfl = Interpreter(model_path=str(tmp_path / "d" / "tflite-int8.tflite"))
    assert tfl.get_input_details()[0]["dtype"] == np.int32
    import onnx

    graph = onnx.load(str(tmp_path / "d" / "onnx-int8.onnx")).graph
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT32
    consumers = [n.op_type for n in graph.node if "tokens" in n.input]
    assert "QuantizeLinear" not in consumers


def test_a_loop_tflite_cannot_express_is_refused_naming_layer_and_op():
    # Without the exporter's unrolling, a GRU over a sequence is a TensorList loop: LiteRT
    # would need Select TF ops (a TensorFlow runtime on the device). The converter is real.
    from keras_edge.exporter import to_tflite

    keras.utils.set_random_seed(0)
    i = keras.Input((6, 2), name="seq")
    model = keras.Model(
        i, keras.layers.Dense(1, activation="sigmoid")(keras.layers.GRU(3, name="gru")(i))
    )
    with pytest.raises(
        UnsupportedOpError, match=r"layer 'gru' \(GRU\) needs the TensorFlow op\(s\) TensorListReserve"
    ):
        to_tflite.convert(model, "fp32")


def test_one_format_refused_the_other_still_exports(tmp_path):
    # A determinant: ONNX has Det, TFLite has no builtin for it (it would need Flex).
    keras.utils.set_random_seed(0)
    i = keras.Input((3, 3), name="m")
    d = keras.ops.expand_dims(keras.ops.linalg.det(i), -1)
    model = keras.Model(i, keras.layers.Dense(1, activation="sigmoid")(
        keras.layers.Concatenate()([d, keras.layers.Flatten()(i)])))  # fmt: skip
    x = RNG.standard_normal((200, 3, 3)).astype(np.float32)
    manifest = exporter.export(model, tmp_path / "dist", validation=x, quantize="fp16")
    assert sorted(manifest.variants) == ["onnx-fp16", "onnx-fp32"]
    assert sorted(manifest.refused) == ["tflite-fp16", "tflite-fp32"]
    assert "MatrixDeterminant" in manifest.refused["tflite-fp32"]
    assert "Select TF ops" in manifest.refused["tflite-fp32"]
    assert manifest.default_variant == "onnx-fp32"
    assert {p.name for p in (tmp_path / "dist").iterdir()} >= {"onnx-fp32.onnx", "onnx-fp16.onnx"}
    assert not list((tmp_path / "dist").glob("*.tflite"))
    # What the converter printed while failing is kept beside the manifest, which names it.
    assert "(converter output: logs/tflite-fp32.log)" in manifest.refused["tflite-fp32"]
    log = (tmp_path / "dist" / "logs" / "tflite-fp32.log").read_text()
    assert "MatrixDeterminant" in log and "error" in log.lower()
    with pytest.raises(runtime.UnknownVariantError, match=r"not written by the export.*Flex"):
        runtime.load(tmp_path / "dist", variant="tflite-fp32")
    assert runtime.load(tmp_path / "dist").variant == "onnx-fp32"


def _sequential(*layers):
    return keras.Sequential([keras.Input((4,)), *layers])


def _nested():
    inner = _sequential(keras.layers.Dense(2), keras.layers.Dense(1, activation="sigmoid"))
    return _sequential(inner, keras.layers.Dropout(0.2))


HEADS = {
    "binary, then Reshape": (
        lambda: _sequential(keras.layers.Dense(1, activation="sigmoid"), keras.layers.Reshape((1,))),
        "binary",
    ),
    "Activation('softmax') last": (
        lambda: _sequential(keras.layers.Dense(3), keras.layers.Activation("softmax")),
        "multiclass",
    ),
    "nested model, then Dropout": (_nested, "binary"),
    "multilabel, then Flatten": (
        lambda: _sequential(keras.layers.Dense(3, activation="sigmoid"), keras.layers.Flatten()),
        "multilabel",
    ),
}


@pytest.mark.parametrize("case", list(HEADS))
def test_head_is_found_through_trailing_layers(case):
    build, kind = HEADS[case]
    assert infer_head(build()).kind == kind


def test_a_trailing_normalization_after_sigmoid_is_not_a_probability():
    model = _sequential(keras.layers.Dense(1, activation="sigmoid"), keras.layers.BatchNormalization())
    with pytest.raises(runtime.UsageError, match="linear output"):
        infer_head(model)


def test_dropout_and_noise_are_off_in_every_artifact(tmp_path):
    keras.utils.set_random_seed(0)
    model = _sequential(
        keras.layers.Dense(16, activation="relu"),
        keras.layers.Dropout(0.9),
        keras.layers.GaussianNoise(0.9),
        keras.layers.Dense(1, activation="sigmoid"),
    )
    x = RNG.standard_normal((300, 4)).astype(np.float32)
    manifest = exporter.export(model, tmp_path / "d", validation=x)
    inference = model(x, training=False).numpy()
    for vid in manifest.variants:
        clf = runtime.load(tmp_path / "d", variant=vid)
        p = clf.predict_proba(x)
        np.testing.assert_allclose(p, inference, atol=1e-5)  # Dropout at 0.9 would change it
        np.testing.assert_array_equal(p, clf.predict_proba(x))  # and make it vary call to call


def test_regression_gate_has_a_relative_tolerance():
    head = Head(kind="regression", output="probability", units=1, labels=("0",), threshold=None)
    values = np.linspace(-1e4, 1e4, 101, dtype=np.float32).reshape(-1, 1)
    reference = parity.Reference(proba=values, labels=None, data="t")
    rounded = values + np.float32(1e-3) * np.sign(values)  # float32 rounding of a big output
    assert parity.compare(head, reference, rounded, "fp32", None).passed
    wrong = values.copy()
    wrong[50] += 0.5  # an output near 0 that is off by 0.5
    result = parity.compare(head, reference, wrong, "fp32", None)
    assert not result.passed and "1 of 101 samples" in result.failures[0]
    assert result.relative_tolerance == 1e-5


def test_cnn_quantization_suits_convolutions(tmp_path):
    # Dynamic ONNX quantization leaves convolutions in float (ConvInteger is several times
    # slower than float convolution on x86), so on a CNN it would be fp32 under another name:
    # not written, and the manifest says why. Static int8 scales conv weights per channel.
    import onnx
    from onnx import numpy_helper

    keras.utils.set_random_seed(0)
    i = keras.Input((12, 12, 1), name="image")
    h = keras.layers.Conv2D(6, 3, activation="relu")(i)
    h = keras.layers.GlobalAveragePooling2D()(keras.layers.BatchNormalization()(h))
    model = keras.Model(i, keras.layers.Dense(1, activation="sigmoid")(h))
    x = RNG.random((200, 12, 12, 1)).astype(np.float32)
    result = exporter.export(model, tmp_path / "d", formats=["onnx"], quantize="dynamic,int8",
                             calibration=x, validation=x, min_agreement=0.0)  # fmt: skip
    why = result.manifest.refused["onnx-dynamic"]
    assert "only 9.1% of the weights" in why and "Conv 82%" in why and "onnx-int8" in why, why
    assert not (tmp_path / "d" / "onnx-dynamic.onnx").exists()
    static = onnx.load(str(tmp_path / "d" / "onnx-int8.onnx")).graph
    values = {t.name: numpy_helper.to_array(t) for t in static.initializer}
    conv = next(n for n in static.node if n.op_type == "Conv")
    weight_dq = next(
        n for n in static.node if n.op_type == "DequantizeLinear" and n.output[0] == conv.input[1]
    )
    assert values[weight_dq.input[1]].shape == (6,)  # one scale per output channel
