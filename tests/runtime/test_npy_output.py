"""predict --output x.npy: the header is sized from the columns, so a head with many classes
or labels writes a file numpy loads, equal to predict() (once refused past about 30 columns,
after scoring the whole file)."""

from __future__ import annotations

import numpy as np
import pytest

from keras_edge import exporter, runtime
from keras_edge.cli import main


@pytest.mark.parametrize("kind,units", [("multiclass", 48), ("multilabel", 64)])
def test_many_columns_write_an_npy_numpy_loads(kind, units, tmp_path, capsys):
    import keras

    keras.utils.set_random_seed(0)
    activation = "softmax" if kind == "multiclass" else "sigmoid"
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(units, activation=activation)])
    x = np.random.default_rng(0).standard_normal((257, 6)).astype(np.float32)
    exporter.export(model, tmp_path / "d", formats=["onnx"], validation=x)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "scores.npy"
    args = ["predict", str(tmp_path / "d"), str(tmp_path / "x.npy"), "--output", str(out),
            "--chunk-size", "100"]  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err
    got = np.load(out)
    clf = runtime.load(tmp_path / "d")
    labels = clf.head.labels
    assert len(labels) == units and got.shape == (len(x),)
    np.testing.assert_array_equal(
        np.stack([got[f"p_{label}"] for label in labels], axis=1), clf.predict_proba(x)
    )
    if kind == "multiclass":
        np.testing.assert_array_equal(got["class"], clf.predict(x))
    else:
        classes = np.stack([got[f"class_{label}"] for label in labels], axis=1)
        np.testing.assert_array_equal(classes, clf.predict(x))
    with open(out, "rb") as fh:  # the rows start where numpy would put them: 64-byte aligned
        np.lib.format.read_magic(fh)
        np.lib.format.read_array_header_1_0(fh)
        assert fh.tell() % 64 == 0
    assert [f.name for f in tmp_path.iterdir() if f.name.startswith(".")] == []  # no temp left


def test_an_empty_input_writes_an_empty_npy(fp32_export, tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.zeros((0, 2), np.float32))
    out = tmp_path / "scores.npy"
    assert main(["predict", str(fp32_export), str(tmp_path / "x.npy"), "--output", str(out)]) == 0
    got = np.load(out)
    assert got.shape == (0,) and got.dtype.names == ("probability", "class")


def test_labels_outside_latin1_write_an_npy_numpy_loads(tmp_path, capsys):
    # Column names in any script: the header is utf-8 (format 3.0) where latin-1 cannot say them.
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3, activation="softmax")])
    x = np.random.default_rng(0).standard_normal((50, 6)).astype(np.float32)
    exporter.export(model, tmp_path / "d", formats=["onnx"], validation=x, labels=["猫", "犬", "é"])
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "scores.npy"
    assert main(["predict", str(tmp_path / "d"), str(tmp_path / "x.npy"), "--output", str(out)]) == 0
    got = np.load(out)
    assert got.dtype.names == ("p_猫", "p_犬", "p_é", "class")
    np.testing.assert_array_equal(got["p_犬"], runtime.load(tmp_path / "d").predict_proba(x)[:, 1])
