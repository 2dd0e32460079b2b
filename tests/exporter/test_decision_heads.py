"""--with-decision on a model with several heads: one int64 output per head, ``class_<name>``,
decided in the graph from that head's columns with that head's threshold; read with the bare
engines (ONNX Runtime, the LiteRT interpreter), each equals ``keras_edge.load(...).predict(x)``
for that head on every input. The model is trained here for a few seconds; every conversion
and engine is real."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from keras_edge import exporter, runtime
from tests.exporter.test_decision import bare_outputs

VARIANTS = ("tflite-fp32", "tflite-int8", "onnx-fp32", "onnx-int8")
DECIDED = ("spam", "topic", "urgent")  # the heads with a class output; "score" is a regression


@pytest.fixture(scope="module")
def heads_model() -> tuple[keras.Model, np.ndarray]:
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(5)
    x = rng.normal(size=(900, 6)).astype("float32")
    targets = {
        "spam": (x[:, 0] > 0).astype("float32"),
        "topic": np.argmax(x[:, 2:5], axis=1),
        "urgent": (x[:, 1] > 0.5).astype("float32"),
        "score": (x[:, 5] * 2).astype("float32"),
    }
    inp = keras.Input((6,), name="x")
    h = keras.layers.Dense(16, activation="relu")(inp)
    outputs = {
        "spam": keras.layers.Dense(1, activation="sigmoid", name="spam")(h),
        "topic": keras.layers.Dense(3, activation="softmax", name="topic")(h),
        "urgent": keras.layers.Dense(1, activation="sigmoid", name="urgent")(h),
        "score": keras.layers.Dense(1, name="score")(h),
    }
    model = keras.Model(inp, outputs)
    model.compile("adam", {"spam": "binary_crossentropy", "topic": "sparse_categorical_crossentropy",
                           "urgent": "binary_crossentropy", "score": "mse"})  # fmt: skip
    model.fit(x[:600], {k: v[:600] for k, v in targets.items()}, epochs=8, verbose=0)
    return model, x


@pytest.fixture(scope="module")
def decided(heads_model, tmp_path_factory) -> Path:
    model, x = heads_model
    out = tmp_path_factory.mktemp("heads_decision") / "dist"
    exporter.export(
        model, out, quantize=["int8"], calibration=x[:300], validation=x[600:750],
        threshold={"spam": 0.3}, min_confidence={"topic": 0.6}, head={"score": "regression"},
        with_decision=True,
    )  # fmt: skip
    return out


@pytest.mark.parametrize("vid", VARIANTS)
def test_each_head_gets_its_class_output_equal_to_predict(decided, heads_model, vid):
    _, x = heads_model
    manifest = runtime.Manifest.read(decided)
    assert [(p.name, p.kind, p.threshold) for p in manifest.head.parts] == [
        ("score", "regression", None), ("spam", "binary", 0.3), ("topic", "multiclass", 0.6),
        ("urgent", "binary", 0.5),
    ]  # fmt: skip
    clf = runtime.load(decided, variant=vid)
    got = bare_outputs(decided / manifest.variants[vid].file, x)
    class_names = [name for name in got if name.startswith("class")]
    assert sorted(class_names) == [f"class_{name}" for name in DECIDED]  # none for "score"
    first = next(iter(got.values()))  # the probabilities stay the first output, unchanged
    assert first.shape == (len(x), manifest.head.units) and first.dtype != np.int64
    expected = clf.predict(x)
    for name in DECIDED:
        cls = got[f"class_{name}"]
        assert cls.dtype == np.int64, (vid, name, cls.dtype)
        np.testing.assert_array_equal(cls, expected[name], err_msg=f"{vid} {name}")
    assert got["class_spam"].shape == got["class_topic"].shape == (len(x),)
    assert (got["class_topic"] == -1).any() and (got["class_topic"] >= 0).any()  # the cut bites
    spam_proba = clf.predict_proba(x)["spam"][:, 0]
    assert (got["class_spam"] == 1).sum() > (spam_proba > 0.5).sum()  # the head's own threshold
    # The runtime ignores the class outputs: a lone file loads, and decides as its folder does.
    lone = runtime.load(decided / manifest.variants[vid].file)
    for name in DECIDED:
        np.testing.assert_array_equal(lone.predict(x[:50])[name], expected[name][:50])


def test_the_export_with_class_outputs_verifies(decided):
    from keras_edge.runtime.verify import verify

    checks = verify(decided)
    assert all(c.status in ("passed", "failed at export") for c in checks), checks
    assert any(c.status == "passed" for c in checks)


def test_a_full_int8_output_is_compared_on_its_integers_per_head(heads_model, tmp_path):
    # --int8-io: one int8 output holds every head; each head's columns are sliced in int8 and
    # compared with that head's integer cut, as the runtime decides after dequantizing.
    model, x = heads_model
    exporter.export(model, tmp_path / "d", formats=["tflite"], quantize=["int8"],
                    calibration=x[:300], validation=x[600:750], int8_io=True,
                    threshold={"spam": 0.3, "urgent": 0.7}, min_confidence={"topic": 0.6},
                    head={"score": "regression"}, with_decision=True)  # fmt: skip
    clf = runtime.load(tmp_path / "d", variant="tflite-int8")
    assert clf.engine.output_quantization is not None
    assert clf.engine.output_quantization.dtype == np.int8
    got = bare_outputs(tmp_path / "d" / "tflite-int8.tflite", x)
    expected = clf.predict(x)
    for name in DECIDED:
        np.testing.assert_array_equal(got[f"class_{name}"], expected[name], err_msg=name)


def test_tuned_thresholds_are_the_ones_decided_in_the_graph(heads_model, tmp_path):
    # Each variant's own tuned threshold per head is what its class outputs decide with.
    model, x = heads_model
    val = x[600:750]
    y = {"spam": (val[:, 0] > 0.3).astype(int), "topic": val[:, 2:5].argmax(axis=1)}
    result = exporter.export(model, tmp_path / "d", quantize=["int8"], calibration=x[:300],
                             validation=(val, y), tune="f1", head={"score": "regression"},
                             with_decision=True)  # fmt: skip
    for vid, variant in result.manifest.variants.items():
        _, spam, topic, _ = variant.threshold
        assert spam != 0.5 and topic is not None, (vid, variant.threshold)
        clf = runtime.load(tmp_path / "d", variant=vid)
        assert clf.threshold == variant.threshold
        got = bare_outputs(tmp_path / "d" / variant.file, x)
        expected = clf.predict(x)
        for name in DECIDED:
            np.testing.assert_array_equal(got[f"class_{name}"], expected[name], err_msg=f"{vid} {name}")
