"""Models written the way keras-io's examples and real projects write them (issue 21): a dict of
named inputs (one per CSV column, the structured-data style), one model with two sigmoid heads
and a softmax head, and a camera's uint8 pixels. Each is trained here for a few seconds on
generated data; every conversion and engine is real. Each export must write tflite-fp32 and
onnx-fp32, and their classes must equal Keras's on every held-out input through
``keras_edge.load()``."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_edge import exporter, runtime
from keras_edge.runtime.errors import InputError, UsageError

CLI = [sys.executable, "-m", "keras_edge"]
FP32 = ("tflite-fp32", "onnx-fp32")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True)


# -- a dict of named inputs, one per CSV column ---------------------------------------------------


def _tabular(n: int = 600) -> tuple[dict[str, np.ndarray], np.ndarray]:
    rng = np.random.default_rng(1)
    cols = {
        "age": rng.normal(40, 10, n).astype("float32"),
        "fare": rng.gamma(2, 20, n).astype("float32"),
        "pclass": rng.integers(1, 4, n).astype("float32"),
    }
    y = ((cols["fare"] / 40 - (cols["pclass"] - 2) + rng.normal(0, 0.5, n)) > 0.5).astype("float32")
    return cols, y


@pytest.fixture(scope="module")
def tabular(tmp_path_factory):
    keras.utils.set_random_seed(0)
    cols, y = _tabular()
    inputs = {name: keras.Input((1,), name=name) for name in ("pclass", "age", "fare")}
    h = keras.layers.Concatenate()([inputs["age"] / 50.0, inputs["fare"] / 50.0, inputs["pclass"] / 3.0])
    h = keras.layers.Dense(8, activation="relu")(h)
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(h))
    model.compile("adam", "binary_crossentropy")
    model.fit({k: v[:, None] for k, v in cols.items()}, y, epochs=15, verbose=0)
    folder = tmp_path_factory.mktemp("tabular")
    model.save(folder / "model.keras")
    order = ["fare", "label", "pclass", "age"]  # not the model's order, and a label between
    for name, rows in (("val.csv", range(0, 300)), ("test.csv", range(300, 600))):
        with open(folder / name, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(order)
            for i in rows:
                w.writerow([*(cols[c][i] if c != "label" else int(y[i]) for c in order)])
    proc = _cli("export", folder / "model.keras", "--out", folder / "dist", "--validation",
                folder / "val.csv", "--label-column", "label")  # fmt: skip
    return model, cols, folder, proc


def test_dict_inputs_export_from_a_csv_matched_by_name(tabular):
    model, cols, folder, proc = tabular
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((folder / "dist" / "manifest.json").read_text())
    assert [i["name"] for i in manifest["inputs"]] == ["age", "fare", "pclass"]
    held_out = {k: v[300:, None] for k, v in cols.items()}
    expected = (model.predict(held_out, verbose=0)[:, 0] > 0.5).astype(int)
    for vid in FP32:
        clf = runtime.load(folder / "dist", variant=vid)
        np.testing.assert_array_equal(clf.predict(held_out), expected)
    # The CLI reads the test CSV's columns by name, whatever their order, the label passed by.
    out = _cli("predict", folder / "dist", folder / "test.csv", "--label-column", "label")
    assert out.returncode == 0, out.stderr
    classes = [int(line.split(",")[1]) for line in out.stdout.splitlines()[1:]]
    np.testing.assert_array_equal(classes, expected)


def test_dict_inputs_from_a_dataframe_and_score_batch_by_column_name(tabular):
    import pandas as pd  # installed with the dev extra (Ray Data needs it)
    model, cols, folder, _ = tabular
    frame = pd.DataFrame({"fare": cols["fare"][300:], "pclass": cols["pclass"][300:],
                          "age": cols["age"][300:], "id": np.arange(300)})  # fmt: skip
    expected = (model.predict({k: v[300:, None] for k, v in cols.items()}, verbose=0)[:, 0] > 0.5)
    clf = runtime.load(folder / "dist")
    np.testing.assert_array_equal(clf.predict(frame[["pclass", "fare", "age"]]), expected.astype(int))
    scored = clf.score_batch(frame, keep=["id"])
    np.testing.assert_array_equal(scored["class"].to_numpy(), expected.astype(int))
    with pytest.raises(InputError, match=r"unexpected \['id'\]"):
        clf.predict(frame)


def test_dict_inputs_from_python_with_a_missing_input_refused(tabular, tmp_path):
    model, cols, _, _ = tabular
    x = {k: v[:200, None] for k, v in cols.items()}
    with pytest.raises(UsageError, match=r"named \['age', 'fare', 'pclass'\]"):
        exporter.export(model, tmp_path / "d", validation={"age": x["age"], "fare": x["fare"]})
    assert not (tmp_path / "d").exists()


# -- two sigmoid heads and a softmax head in one model --------------------------------------------


@pytest.fixture(scope="module")
def heads(tmp_path_factory):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(900, 6)).astype("float32")
    targets = {
        "spam": (x[:, 0] > 0).astype("float32"),
        "urgent": (x[:, 1] > 0.5).astype("float32"),
        "topic": np.argmax(x[:, 2:5], axis=1),
    }
    inp = keras.Input((6,), name="x")
    h = keras.layers.Dense(16, activation="relu")(inp)
    outputs = {
        "spam": keras.layers.Dense(1, activation="sigmoid", name="spam")(h),
        "urgent": keras.layers.Dense(1, activation="sigmoid", name="urgent")(h),
        "topic": keras.layers.Dense(3, activation="softmax", name="topic")(h),
    }
    model = keras.Model(inp, outputs)
    model.compile("adam", {"spam": "binary_crossentropy", "urgent": "binary_crossentropy",
                           "topic": "sparse_categorical_crossentropy"})  # fmt: skip
    model.fit(x[:600], {k: v[:600] for k, v in targets.items()}, epochs=8, verbose=0)
    out = tmp_path_factory.mktemp("heads") / "dist"
    result = exporter.export(
        model, out, quantize=["int8"], calibration=x[:300], validation=x[600:750],
        threshold={"spam": 0.3, "urgent": 0.7}, labels={"topic": ["news", "sport", "tech"]},
    )  # fmt: skip
    return model, x, out, result


def test_several_heads_decide_per_head_like_keras(heads):
    model, x, out, result = heads
    head = result.manifest.head
    assert [(p.name, p.kind) for p in head.parts] == [
        ("spam", "binary"), ("topic", "multiclass"), ("urgent", "binary"),
    ]  # fmt: skip
    assert head.threshold == (0.3, None, 0.7) and head.structure == "dict"
    held_out = x[750:]
    keras_out = model.predict(held_out, verbose=0)
    expected = {
        "spam": (keras_out["spam"][:, 0] > 0.3).astype(int),
        "urgent": (keras_out["urgent"][:, 0] > 0.7).astype(int),
        "topic": keras_out["topic"].argmax(axis=1),
    }
    for vid in FP32:
        clf = runtime.load(out, variant=vid)
        proba = clf.predict_proba(held_out)
        assert sorted(proba) == ["spam", "topic", "urgent"]
        assert proba["topic"].shape == (150, 3) and proba["spam"].shape == (150, 1)
        np.testing.assert_allclose(proba["topic"], keras_out["topic"], atol=1e-5)
        classes = clf.predict(held_out)
        for name, want in expected.items():
            np.testing.assert_array_equal(classes[name], want, err_msg=f"{vid} {name}")
        assert set(clf.predict_labels(held_out[:5])["topic"]) <= {"news", "sport", "tech"}
    for vid, variant in result.manifest.variants.items():
        assert variant.parity.passed or vid.endswith("int8"), (vid, variant.parity.failures)


def test_several_heads_thresholds_records_and_cli(heads, tmp_path):
    model, x, out, _ = heads
    clf = runtime.load(out, variant="onnx-fp32")
    clf.threshold = {"spam": 0.9}
    assert clf.threshold == (0.9, None, 0.7)
    with pytest.raises(InputError, match="bogus"):
        clf.threshold = {"bogus": 0.5}
    # A lone artifact carries every head and its threshold.
    lone = runtime.load(out / "tflite-fp32.tflite")
    in_folder = runtime.load(out).predict(x[:20])["spam"]
    np.testing.assert_array_equal(lone.predict(x[:20])["spam"], in_folder)
    np.save(tmp_path / "x.npy", x[750:760])
    proc = _cli("predict", out, tmp_path / "x.npy", "--threshold", "urgent=0.2")
    assert proc.returncode == 0, proc.stderr
    header = proc.stdout.splitlines()[0].split(",")
    assert header[:5] == ["spam_probability", "topic_p_news", "topic_p_sport", "topic_p_tech",
                          "urgent_probability"]  # fmt: skip
    assert header[5:] == ["spam_class", "topic_class", "urgent_class"]
    one = _cli("predict", out, tmp_path / "x.npy", "--threshold", "0.2")  # every sigmoid head
    assert one.returncode == 0, one.stderr
    bad = _cli("predict", out, tmp_path / "x.npy", "--threshold", "0.2,0.3")  # a list: which head?
    assert bad.returncode == 2 and "by head name" in bad.stderr
    verify = _cli("verify", out)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    model.save(tmp_path / "heads.keras")
    bench = _cli("bench", out, "--keras", tmp_path / "heads.keras", "--data", tmp_path / "x.npy")
    assert bench.returncode == 2 and "one head for keras-edge bench" in bench.stderr, bench.stderr


def test_heads_through_a_nested_model_are_read_from_the_output_each_comes_from(tmp_path):
    # The inner model's second output is a softmax: it must not be read as the first's sigmoid.
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(6).normal(size=(300, 5)).astype("float32")
    i = keras.Input((5,))
    h = keras.layers.Dense(8, activation="relu")(i)
    inner = keras.Model(i, [keras.layers.Dense(1, activation="sigmoid")(h),
                            keras.layers.Dense(3, activation="softmax")(h)], name="inner")  # fmt: skip
    o = keras.Input((5,), name="x")
    spam, topic = inner(o)
    for model, names in ((keras.Model(o, {"a_spam": spam, "b_topic": topic}), ["a_spam", "b_topic"]),
                         (keras.Model(o, [spam, topic]), ["output_0", "output_1"])):  # fmt: skip
        result = exporter.export(model, tmp_path / names[0], formats=["onnx"], validation=x)
        head = result.manifest.head
        assert [(p.name, p.kind) for p in head.parts] == [(names[0], "binary"), (names[1], "multiclass")]
        answer = runtime.load(tmp_path / names[0]).predict(x)
        topic_classes = answer[names[1]] if isinstance(answer, dict) else answer[1]
        keras_out = model.predict(x, verbose=0)
        keras_topic = keras_out[names[1]] if isinstance(keras_out, dict) else keras_out[1]
        np.testing.assert_array_equal(topic_classes, keras_topic.argmax(axis=1))


def test_several_heads_tune_each_head_with_labels_from_python_npz_and_csv(heads, tmp_path):
    model, x, _, _ = heads
    val = x[600:750]
    y = {"spam": (val[:, 0] > 0.3).astype(int), "topic": val[:, 2:5].argmax(axis=1)}
    result = exporter.export(model, tmp_path / "py", formats=["onnx"], validation=(val, y), tune="f1")
    spam, topic, urgent = result.manifest.head.threshold
    assert spam != 0.5 and topic is not None and urgent == 0.5  # urgent has no labels: kept
    entries = result.manifest.tuning["keras"]
    assert [e["head"] for e in entries] == ["spam", "topic"]
    clf = runtime.load(tmp_path / "py")
    assert clf.threshold == result.manifest.variants["onnx-fp32"].threshold
    keras_spam = model.predict(val, verbose=0)["spam"][:, 0]
    np.testing.assert_array_equal(clf.predict(val)["spam"], (keras_spam > clf.threshold[0]).astype(int))
    # The same labels from files: y_<head> in an .npz, one --label-column per head in a CSV.
    np.savez(tmp_path / "val.npz", x=val, y_spam=y["spam"], y_topic=y["topic"])
    with open(tmp_path / "val.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["is_spam", *(f"f{i}" for i in range(6)), "topic_id"])
        for row, s_, t in zip(val.tolist(), y["spam"], y["topic"], strict=True):
            w.writerow([s_, *row, t])
    model.save(tmp_path / "heads.keras")
    for name, extra in (("npz", ["--validation", tmp_path / "val.npz"]),
                        ("csv", ["--validation", tmp_path / "val.csv", "--label-column",
                                 "spam=is_spam", "--label-column", "topic=topic_id"])):  # fmt: skip
        proc = _cli("export", tmp_path / "heads.keras", "--out", tmp_path / name, "--formats", "onnx",
                    "--tune-threshold", "f1", *extra)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        tuned = json.loads((tmp_path / name / "manifest.json").read_text())["tuning"]["keras"]
        np.testing.assert_allclose([e["threshold"] for e in tuned], [spam, topic], rtol=1e-6)


def test_several_heads_plot_their_tuning_and_refuse_bad_labels(heads, tmp_path):
    model, x, _, _ = heads
    val = x[600:750]
    y = {"spam": (val[:, 0] > 0.3).astype(int), "topic": val[:, 2:5].argmax(axis=1)}
    exporter.export(model, tmp_path / "p", formats=["onnx"], validation=(val, y), tune="f1",
                    plot=tmp_path / "p.png")  # fmt: skip
    assert (tmp_path / "p.png").stat().st_size > 10_000  # one panel per tuned head
    with pytest.raises(UsageError, match=r"class indices in \[0, 2\].*from 7 to 7"):
        exporter.export(model, tmp_path / "d", validation=(val, {"topic": np.full(150, 7)}), tune="f1")
    with pytest.raises(UsageError, match="by head name"):
        exporter.export(model, tmp_path / "d", validation=x[:100], labels=["a", "b", "c"])
    assert not (tmp_path / "d").exists()


# -- a camera's uint8 pixels ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def pixels(tmp_path_factory):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, size=(700, 8, 8, 3)).astype("uint8")
    y = (images[..., 0].mean(axis=(1, 2)) > images[..., 2].mean(axis=(1, 2))).astype("float32")
    inp = keras.Input((8, 8, 3), dtype="uint8", name="pixels")
    h = keras.layers.Rescaling(1 / 255)(inp)
    h = keras.layers.Conv2D(4, 3, activation="relu")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(inp, keras.layers.Dense(1, activation="sigmoid")(h))
    model.compile("adam", "binary_crossentropy")
    model.fit(images[:400], y[:400], epochs=10, verbose=0)
    out = tmp_path_factory.mktemp("pixels") / "dist"
    result = exporter.export(model, out, quantize="all", calibration=images[:300],
                             validation=(images[400:550], y[400:550]))  # fmt: skip
    return model, images, out, result


def test_uint8_pixels_in_every_variant(pixels):
    model, images, out, result = pixels
    manifest = result.manifest
    assert manifest.inputs[0].dtype == "uint8"
    # A CNN: onnx-dynamic would quantize none of its convolutions, so it is not written.
    assert sorted(manifest.variants) == sorted(
        {f"{f}-{p}" for f in ("tflite", "onnx") for p in ("fp32", "fp16", "dynamic", "int8")}
        - {"onnx-dynamic"}
    )
    assert list(manifest.refused) == ["onnx-dynamic"]
    held_out = images[550:]
    expected = (model.predict(held_out, verbose=0)[:, 0] > 0.5).astype(int)
    for vid in FP32:
        np.testing.assert_array_equal(runtime.load(out, variant=vid).predict(held_out), expected)
    for vid in manifest.variants:
        clf = runtime.load(out, variant=vid)
        # An image loaded as floats holding whole numbers is the same image.
        as_floats = clf.predict(held_out[:10].astype("float32"))
        np.testing.assert_array_equal(as_floats, clf.predict(held_out[:10]))


def test_uint8_input_refuses_what_is_not_pixels(pixels):
    _, images, out, _ = pixels
    clf = runtime.load(out)
    with pytest.raises(InputError, match=r"uint8 values \(whole numbers in \[0, 255\]\).*e\.g\. 1\.31"):
        clf.predict(images[:2].astype("float32") / 255 + 0.5)
    with pytest.raises(InputError, match=r"in \[0, 255\].*from -1"):
        clf.predict(images[:2].astype("int16") - 1)
    with pytest.raises(InputError, match="uint8 values"):
        clf.predict(np.full((1, 8, 8, 3), np.nan, dtype="float32"))


def test_int8_sensor_input_in_every_variant(tmp_path):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(4)
    x = rng.integers(-128, 128, size=(400, 16)).astype("int8")
    y = (x[:, :4].astype(float).sum(axis=1) > 0).astype("float32")
    inp = keras.Input((16,), dtype="int8", name="sensor")
    h = keras.layers.Dense(8, activation="relu")(keras.layers.Rescaling(1 / 128)(inp))
    model = keras.Model(inp, keras.layers.Dense(1, activation="sigmoid")(h))
    model.compile("adam", "binary_crossentropy")
    model.fit(x, y, epochs=10, verbose=0)
    result = exporter.export(model, tmp_path / "d", quantize="all", calibration=x[:200],
                             validation=(x[200:300], y[200:300]))  # fmt: skip
    assert result.manifest.inputs[0].dtype == "int8" and not result.manifest.refused
    expected = (model.predict(x[300:], verbose=0)[:, 0] > 0.5).astype(int)
    for vid in FP32:
        clf = runtime.load(tmp_path / "d", variant=vid)
        np.testing.assert_array_equal(clf.predict(x[300:]), expected)
    with pytest.raises(InputError, match=r"in \[-128, 127\]"):
        runtime.load(tmp_path / "d").predict(np.full((1, 16), 200.0))


def test_per_head_options_on_the_command_line(heads, tmp_path):
    model, x, _, _ = heads
    model.save(tmp_path / "heads.keras")
    np.save(tmp_path / "val.npy", x[600:700])
    proc = _cli("export", tmp_path / "heads.keras", "--out", tmp_path / "d", "--formats", "onnx",
                "--validation", tmp_path / "val.npy", "--threshold", "spam=0.3",
                "--threshold", "topic=0.6", "--head", "spam=binary")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    head = json.loads((tmp_path / "d" / "manifest.json").read_text())["head"]
    # A threshold named for a softmax head is its minimum confidence.
    thresholds = [(h["name"], h["threshold"]) for h in head["heads"]]
    assert thresholds == [("spam", 0.3), ("topic", 0.6), ("urgent", 0.5)]
    bad = _cli("export", tmp_path / "heads.keras", "--out", tmp_path / "e", "--formats", "onnx",
               "--validation", tmp_path / "val.npy", "--head", "spam=multiclass")  # fmt: skip
    assert bad.returncode == 2 and "Head 'spam': --head multiclass contradicts" in bad.stderr
    assert not (tmp_path / "e").exists()


def test_one_column_each_tables_in_any_column_order_and_as_1d_columns(tabular, tmp_path):
    from keras_edge.runtime.batch.scoring import FLOAT32_EXACT, by_input

    model, cols, folder, _ = tabular
    expected = (model.predict({k: v[300:, None] for k, v in cols.items()}, verbose=0)[:, 0] > 0.5)
    clf = runtime.load(folder / "dist")
    np.testing.assert_array_equal(clf.predict({k: v[300:] for k, v in cols.items()}), expected)
    out = _cli("predict", folder / "dist", folder / "test.csv", "--columns", "pclass,fare,age")
    assert out.returncode == 0, out.stderr
    np.testing.assert_array_equal([int(r.split(",")[1]) for r in out.stdout.splitlines()[1:]], expected)
    specs = (runtime.manifest.InputSpec("id", (None, 1), "int64"),)
    with pytest.raises(UsageError, match="below 2\\^24"):
        by_input(np.array([[float(FLOAT32_EXACT)]], np.float32), specs)
