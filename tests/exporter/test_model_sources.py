"""Models given as SavedModel folders, subclassed models, Keras 2 (tf_keras) objects, and heads
that only the graph shows (a sigmoid in call(), concatenated sigmoid heads), exported with no
--head flag and decided by the runtime exactly as Keras decides on held-out inputs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import keras_edge
from keras_edge import exporter
from keras_edge.exporter.errors import UnsupportedModelError
from keras_edge.exporter.savedmodel import folder_sha256
from keras_edge.runtime.errors import UsageError

CLI = [sys.executable, "-m", "keras_edge"]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
FP32 = ("tflite-fp32", "onnx-fp32")


def _data(seed: int, n: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 4)).astype(np.float32)


X_TRAIN, X_VAL, X_HELDOUT = _data(1, 512), _data(2, 256), _data(3, 256)


def _binary(x: np.ndarray) -> np.ndarray:
    return (x[:, 0] + x[:, 1] > 0).astype(np.float32)


def _multilabel(x: np.ndarray) -> np.ndarray:
    return (x[:, :3] > 0).astype(np.float32)


def _multiclass(x: np.ndarray) -> np.ndarray:
    return (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0)


def _keras_classes(proba: np.ndarray, kind: str) -> np.ndarray:
    """Keras's decisions by the documented rules: p > 0.5 per unit, argmax for softmax."""
    proba = np.asarray(proba)
    if kind == "multiclass":
        return proba.argmax(axis=1)
    labels = (proba > 0.5).astype(np.int64)
    return labels[:, 0] if kind == "binary" else labels


def _check(out: Path, kind: str, keras_proba: np.ndarray) -> None:
    """fp32 variants written; each decides as Keras does on every held-out input."""
    expected = _keras_classes(keras_proba, kind)
    assert len(np.unique(expected)) > 1  # both sides of the decision are tested
    for variant in FP32:
        assert (out / f"{variant}.{variant.split('-')[0]}").is_file()
        clf = keras_edge.load(out, variant=variant)
        assert clf.head.kind == kind
        np.testing.assert_array_equal(clf.predict(X_HELDOUT).reshape(expected.shape), expected)


def _cli(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, env=ENV, timeout=600)


def _functional(units: int, activation: str, seed: int) -> Any:
    import keras

    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((4,), name="features"),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(units, activation=activation),
        ]
    )


def _fit(model: Any, y: np.ndarray, loss: str) -> Any:
    model.compile(optimizer="adam", loss=loss)
    model.fit(X_TRAIN, y, epochs=15, batch_size=32, verbose=0)
    return model


# --- a Keras 3 tf_saved_model folder, through the CLI, no --head ------------------------------


@pytest.fixture(scope="module")
def keras3_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    model = _fit(_functional(1, "sigmoid", 11), _binary(X_TRAIN), "binary_crossentropy")
    folder = tmp_path_factory.mktemp("k3") / "saved model"
    model.export(folder, format="tf_saved_model", verbose=False)
    return folder, model.predict(X_HELDOUT, verbose=0)


def test_keras3_saved_model_folder_exports_from_the_cli(keras3_folder, tmp_path):
    folder, proba = keras3_folder
    np.save(tmp_path / "val.npy", X_VAL)
    out = tmp_path / "dist"
    proc = _cli("export", folder, "--out", out, "--validation", tmp_path / "val.npy")
    assert proc.returncode == 0, proc.stderr
    _check(out, "binary", proba)
    manifest = keras_edge.load(out).manifest
    assert manifest.model.name == "saved_model"
    assert manifest.model.source_sha256 == folder_sha256(folder)
    assert [s.name for s in manifest.inputs] == ["features"]


def test_folder_sha256_is_the_same_for_a_copy(keras3_folder, tmp_path):
    folder, _ = keras3_folder
    copy = shutil.copytree(folder, tmp_path / "elsewhere")
    assert folder_sha256(copy) == folder_sha256(folder)
    (copy / "assets" / "extra.txt").write_text("changed\n")
    assert folder_sha256(copy) != folder_sha256(folder)


# --- tf.saved_model.save of a softmax model, through Python ---------------------------------


def test_tf_saved_model_save_folder_reads_softmax_from_the_graph(tmp_path):
    import tensorflow as tf

    model = _fit(_functional(3, "softmax", 12), _multiclass(X_TRAIN), "sparse_categorical_crossentropy")
    tf.saved_model.save(model, str(tmp_path / "tfsm"))
    result = exporter.export(tmp_path / "tfsm", tmp_path / "dist", validation=X_VAL)
    assert not result.failed
    _check(tmp_path / "dist", "multiclass", model.predict(X_HELDOUT, verbose=0))


# --- Keras 2 (tf_keras): a model.save(folder) and a model object ----------------------------


@pytest.fixture(scope="module")
def tf_keras_model() -> Any:
    import tf_keras  # installed by the README's test command (--no-deps): never skipped
    tf_keras.utils.set_random_seed(13)
    model = tf_keras.Sequential(
        [
            tf_keras.layers.Dense(16, activation="relu", input_shape=(4,)),
            tf_keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile(optimizer="adam", loss="binary_crossentropy")
    model.fit(X_TRAIN, _binary(X_TRAIN), epochs=15, batch_size=32, verbose=0)
    return model


def test_tf_keras_saved_model_folder(tf_keras_model, tmp_path):
    tf_keras_model.save(tmp_path / "tfk")  # Keras 2's SavedModel format
    result = exporter.export(tmp_path / "tfk", tmp_path / "dist", validation=X_VAL)
    assert not result.failed
    _check(tmp_path / "dist", "binary", tf_keras_model.predict(X_HELDOUT, verbose=0))


def test_tf_keras_model_object(tf_keras_model, tmp_path):
    result = exporter.export(tf_keras_model, tmp_path / "dist", validation=X_VAL)
    assert not result.failed
    assert result.manifest.model.name == tf_keras_model.name
    assert result.manifest.inputs[0].dtype == "float32"
    _check(tmp_path / "dist", "binary", tf_keras_model.predict(X_HELDOUT, verbose=0))


# --- a subclassed model and concatenated sigmoid heads, through Python, no head= -------------


def _tabular_net() -> Any:
    import keras
    import tensorflow as tf

    class TabularNet(keras.Model):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.hidden = keras.layers.Dense(16, activation="relu")
            self.out = keras.layers.Dense(1)

        def call(self, x: Any) -> Any:
            return tf.sigmoid(self.out(self.hidden(x)))  # the activation only the graph shows

    keras.utils.set_random_seed(14)
    return TabularNet(name="tabular_net")


def test_subclassed_model_exports_as_binary(tmp_path):
    model = _fit(_tabular_net(), _binary(X_TRAIN), "binary_crossentropy")
    result = exporter.export(model, tmp_path / "dist", validation=X_VAL)
    assert not result.failed
    assert result.manifest.head.kind == "binary"
    assert result.manifest.model.name == "tabular_net"
    _check(tmp_path / "dist", "binary", model.predict(X_HELDOUT, verbose=0))


def test_concatenated_sigmoid_heads_are_multilabel(tmp_path):
    import keras

    keras.utils.set_random_seed(15)
    x = keras.Input((4,), name="features")
    hidden = keras.layers.Dense(16, activation="relu")(x)
    heads = [keras.layers.Dense(1, activation="sigmoid", name=f"label_{i}")(hidden) for i in range(3)]
    model = keras.Model(x, keras.layers.Concatenate()(heads))
    _fit(model, _multilabel(X_TRAIN), "binary_crossentropy")
    model.save(tmp_path / "concat.keras")
    result = exporter.export(tmp_path / "concat.keras", tmp_path / "dist", validation=X_VAL)
    assert not result.failed
    assert result.manifest.head.kind == "multilabel"
    _check(tmp_path / "dist", "multilabel", model.predict(X_HELDOUT, verbose=0))


# --- refusals ----------------------------------------------------------------------------------


def test_a_folder_that_is_not_a_saved_model_exits_2(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("not a model\n")
    proc = _cli("export", tmp_path / "notes", "--out", tmp_path / "d")
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("keras-edge")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "Expected a SavedModel folder" in lines[0] and "readme.txt" in lines[0]
    assert not (tmp_path / "d").exists()


def test_a_saved_model_without_serving_default_is_refused(tmp_path):
    import tensorflow as tf

    module = tf.Module()
    module.w = tf.Variable(tf.ones((4, 1)))
    module.score = tf.function(
        lambda x: tf.sigmoid(x @ module.w), input_signature=[tf.TensorSpec((None, 4), tf.float32)]
    )
    tf.saved_model.save(module, str(tmp_path / "sm"), signatures={"score": module.score})
    with pytest.raises(
        UnsupportedModelError, match=r"'serving_default' signature .* got signatures \['score'\]"
    ):
        exporter.export(tmp_path / "sm", tmp_path / "dist")
    assert not (tmp_path / "dist").exists()


def test_a_saved_model_with_two_outputs_is_refused(tmp_path):
    import keras

    x = keras.Input((4,), name="features")
    model = keras.Model(
        x,
        [keras.layers.Dense(1, activation="sigmoid")(x), keras.layers.Dense(1, activation="sigmoid")(x)],
    )
    model.export(tmp_path / "two", format="tf_saved_model", verbose=False)
    with pytest.raises(
        UnsupportedModelError, match=r"Expected one output .* got 2: \['output_0', 'output_1'\]"
    ):
        exporter.export(tmp_path / "two", tmp_path / "dist")


def test_an_unbuilt_subclassed_model_is_refused(tmp_path):
    with pytest.raises(UnsupportedModelError, match="never built or called; build it first"):
        exporter.export(_tabular_net(), tmp_path / "dist")


def test_an_object_that_is_no_model_is_refused(tmp_path):
    with pytest.raises(
        UsageError,
        match=r"Expected a \.keras/\.h5 path, a SavedModel folder or a keras\.Model, got builtins\.dict",
    ):
        exporter.export({"not": "a model"}, tmp_path / "dist")
