"""User code and declared heads: a custom layer imported from a file with --custom-objects
(recorded in the manifest, re-exported byte for byte), and --head binary|multilabel|multiclass|
logit|regression checked against the model's activation and against its outputs.

The custom-layer exports run the console script in a fresh process, as a user runs it: in this
process the test's own import of the layer file has registered the class already.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import textwrap
from typing import Any

import numpy as np
import pytest

import keras_edge
from keras_edge import exporter
from keras_edge.exporter.custom_objects import CustomCode, import_code
from keras_edge.exporter.errors import (
    CustomObjectsError,
    HeadContradictionError,
    UnsupportedModelError,
)
from keras_edge.runtime.errors import ManifestError, UsageError
from keras_edge.runtime.manifest import CustomSource, ModelInfo
from tests.test_cli import one_line_error, run

LAYERS = textwrap.dedent(
    '''
    """A user's layers, as a training script imports them."""
    import keras


    @keras.saving.register_keras_serializable(package="user")
    class LearnedScale(keras.layers.Layer):
        """One trainable scale per feature."""

        def build(self, input_shape):
            self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="scale")

        def call(self, x):
            return x * self.scale


    class Shift(keras.layers.Layer):
        """Not registered: Keras finds it by its class name among the file's classes."""

        def call(self, x):
            return x + 0.25


    @keras.saving.register_keras_serializable(package="user")
    class Squash(keras.layers.Layer):
        """A sigmoid the layer walk cannot see: the output looks linear."""

        def call(self, x):
            return keras.ops.sigmoid(x)
    '''
)


def _data(n: int = 600, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    return x, (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.float32)


@pytest.fixture(scope="module")
def user(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """layers.py in a folder, its module (imported here, as the training script did), a model
    using LearnedScale and Shift trained a few seconds and saved, and a model whose sigmoid is
    inside Squash; with held-out inputs."""
    import keras

    folder = tmp_path_factory.mktemp("user")
    (folder / "layers.py").write_text(LAYERS)
    spec = importlib.util.spec_from_file_location("test_user_layers", folder / "layers.py")
    layers = importlib.util.module_from_spec(spec)
    sys.modules["test_user_layers"] = layers
    spec.loader.exec_module(layers)
    x, y = _data()
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((4,), name="x"),
            keras.layers.Dense(8, activation="relu"),
            layers.LearnedScale(),
            layers.Shift(),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile("adam", "binary_crossentropy")
    model.fit(x[:400], y[:400], epochs=8, batch_size=32, verbose=0)
    model.save(folder / "model.keras")
    squashed = keras.Sequential(
        [keras.Input((4,), name="x"), keras.layers.Dense(8, activation="relu"),
         keras.layers.Dense(1), layers.Squash()]
    )  # fmt: skip
    squashed.compile("adam", "binary_crossentropy")
    squashed.fit(x[:400], y[:400], epochs=8, batch_size=32, verbose=0)
    squashed.save(folder / "squashed.keras")
    np.savez(folder / "val.npz", x=x[400:500], y=y[400:500])
    return {"folder": folder, "model": model, "squashed": squashed, "held_out": x[500:]}


def test_custom_layer_from_a_file_exports_and_decides_like_keras(user):
    folder = user["folder"]
    out = folder / "dist"
    proc = run(
        "export", "model.keras", "--out", out, "--validation", "val.npz",
        "--custom-objects", "layers.py", cwd=folder,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    for variant in ("tflite-fp32", "onnx-fp32"):
        assert (out / manifest["variants"][variant]["file"]).is_file(), variant
    digest = __import__("hashlib").sha256((folder / "layers.py").read_bytes()).hexdigest()
    assert manifest["model"]["custom_objects"] == [
        {"kind": "file", "sha256": digest, "source": "layers.py"}
    ]
    assert str(folder) not in (out / "manifest.json").read_text()  # no path but the file's name
    x = user["held_out"]
    keras_classes = (user["model"].predict(x, verbose=0)[:, 0] > 0.5).astype(int)
    assert 0 < keras_classes.sum() < len(x)  # both classes are tested
    for variant in ("tflite-fp32", "onnx-fp32"):
        np.testing.assert_array_equal(keras_edge.load(out, variant=variant).predict(x), keras_classes)

    again = folder / "again"  # from another folder, through an absolute path: the same bytes
    proc = run(
        "export", folder / "model.keras", "--out", again, "--validation", folder / "val.npz",
        "--custom-objects", folder / "layers.py",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(again)) == sorted(os.listdir(out))
    for name in os.listdir(out):
        assert (again / name).read_bytes() == (out / name).read_bytes(), name


@pytest.mark.parametrize(
    ("given", "match"),
    [
        (None, r"uses the custom class 'LearnedScale', and no custom code was imported; pass "
               r"the \.py file or module that defines it with --custom-objects"),
        ("missing.py", r"Expected a Python file at 'missing\.py' for --custom-objects, found none"),
        ("broken.py", r"Could not import 'broken\.py' for --custom-objects: RuntimeError: boom$"),
        ("no_such_module_xyz", r"got 'no_such_module_xyz', which Python cannot find"),
    ],
)  # fmt: skip
def test_custom_objects_errors_are_one_line_exit_2_nothing_written(user, given, match):
    import re

    folder = user["folder"]
    (folder / "broken.py").write_text('import sys\nraise RuntimeError("boom\\nsecond line")\n')
    extra = [] if given is None else ["--custom-objects", given]
    proc = run("export", "model.keras", "--out", "refused", "--formats", "onnx", *extra, cwd=folder)
    assert proc.returncode == 2, proc.stderr
    line = one_line_error(proc)
    assert re.search(match, line), line
    assert not (folder / "refused").exists()


def test_python_api_takes_files_modules_and_a_dict(user, tmp_path):
    folder = user["folder"]
    code = CustomCode.parse([folder / "layers.py"])
    first, second = import_code(code), import_code(code)  # run once, then reused
    assert first.objects["Shift"] is second.objects["Shift"]
    assert "LearnedScale" not in first.objects  # registered: Keras finds it by its own name
    assert first.records == (CustomSource("file", "layers.py", first.records[0].sha256),)
    assert import_code(CustomCode.parse("json")).records == (CustomSource("module", "json"),)
    with pytest.raises(CustomObjectsError, match=r"got 'no/such\.py'|at 'no/such\.py'"):
        import_code(CustomCode.parse(["no/such.py"]))
    with pytest.raises(UsageError, match="a dict"):
        CustomCode.parse([{"a": 1}])
    # a dict is passed to Keras as it is, and recorded by name
    manifest = exporter.export(
        folder / "model.keras", tmp_path / "d", formats=["onnx"], validation=user["held_out"],
        custom_objects={"Shift": user["model"].layers[2].__class__},
    )  # fmt: skip
    assert manifest.manifest.model.custom_objects == (CustomSource("object", "Shift"),)


def test_model_record_without_custom_objects_still_loads():
    old = {"keras_version": "3", "name": "m", "source_sha256": "ab", "tensorflow_version": "2"}
    info = ModelInfo.from_dict(old)
    assert info.custom_objects == () and info.to_dict() == old  # no key written when none
    record = {"kind": "file", "sha256": "0" * 64, "source": "layers.py"}
    info = ModelInfo.from_dict({**old, "custom_objects": [record, {"kind": "module", "source": "a.b"}]})
    assert ModelInfo.from_dict(info.to_dict()) == info
    with pytest.raises(ManifestError, match="plain file name"):
        CustomSource("file", "/tmp/layers.py", "0" * 64)
    with pytest.raises(ManifestError, match="kind"):
        CustomSource.from_dict({"kind": "url", "source": "x"})


# --- declared heads ---------------------------------------------------------------------------


def _dense(units: int, activation: str | None):
    import keras

    keras.utils.set_random_seed(3)
    return keras.Sequential(
        [keras.Input((4,), name="x"), keras.layers.Dense(8, activation="relu"),
         keras.layers.Dense(units, activation=activation)]
    )  # fmt: skip


@pytest.mark.parametrize(
    ("activation", "units", "head", "kind"),
    [("sigmoid", 1, "binary", "binary"), ("sigmoid", 3, "multilabel", "multilabel"),
     ("softmax", 3, "multiclass", "multiclass"), ("sigmoid", 1, "auto", "binary")],
)  # fmt: skip
def test_a_head_that_agrees_with_the_activation_is_accepted(activation, units, head, kind):
    from keras_edge.exporter.model import infer_head

    assert infer_head(_dense(units, activation), head).kind == kind


@pytest.mark.parametrize(
    ("activation", "units", "head", "match"),
    [
        ("sigmoid", 1, "multiclass", r"--head multiclass contradicts the model: its output ends in "
                                     r"sigmoid over 1 unit\(s\), a binary head .* --head binary"),
        ("sigmoid", 1, "logit", r"--head logit contradicts .* sigmoid"),
        ("softmax", 3, "multilabel", r"--head multilabel contradicts .* softmax .* --head multiclass"),
        ("sigmoid", 3, "regression", r"--head regression contradicts .* --head multilabel"),
        (None, 3, "binary", r"--head binary expects 1 output unit .* got 3"),
        (None, 1, "multiclass", r"--head multiclass expects 2 or more output units, got 1"),
    ],
)  # fmt: skip
def test_a_contradicting_head_is_refused(tmp_path, activation, units, head, match):
    with pytest.raises(HeadContradictionError, match=match):
        exporter.export(_dense(units, activation), tmp_path / "d", head=head)
    assert not (tmp_path / "d").exists()


def test_the_linear_output_hint_lists_every_head(tmp_path):
    with pytest.raises(UnsupportedModelError) as raised:
        exporter.export(_dense(1, None), tmp_path / "d")
    for choice in ("logit", "regression", "binary", "multilabel", "multiclass"):
        assert f"--head {choice}" in str(raised.value)


def test_logit_head_on_hidden_sigmoid_probabilities_is_refused_naming_the_range(user):
    folder = user["folder"]
    proc = run(
        "export", "squashed.keras", "--out", "logit", "--formats", "onnx", "--validation", "val.npz",
        "--head", "logit", "--custom-objects", "layers.py", cwd=folder,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    line = one_line_error(proc)
    # The traced graph sees the sigmoid inside the custom layer, so the declaration is refused
    # before any output is computed, naming what the graph ends in and the head that fits.
    assert "--head logit contradicts the model" in line and "ends in sigmoid" in line, line
    assert "--head binary" in line, line
    assert not (folder / "logit").exists()


def test_binary_head_on_hidden_sigmoid_exports_and_decides_like_keras(user, tmp_path):
    model, x = user["squashed"], user["held_out"]
    manifest = exporter.export(model, tmp_path / "d", head="binary", validation=x)
    assert (manifest.head.kind, manifest.head.output) == ("binary", "probability")
    keras_classes = (model.predict(x, verbose=0)[:, 0] > 0.5).astype(int)
    assert 0 < keras_classes.sum() < len(x)
    for variant in ("tflite-fp32", "onnx-fp32"):
        assert manifest.variants[variant].parity.passed
        clf = keras_edge.load(tmp_path / "d", variant=variant)
        np.testing.assert_array_equal(clf.predict(x), keras_classes)


def test_probability_heads_on_logits_are_refused(tmp_path):
    x, _ = _data(200, seed=4)
    with pytest.raises(
        HeadContradictionError,
        match=r"--head binary expects probabilities in "
        r"\[0, 1\], but the Keras model's outputs .* range from -.* --head logit",
    ):
        exporter.export(_dense(1, None), tmp_path / "d", head="binary", validation=x)
    # 3 independent scores in [0, 1] (a clip the graph does not read as a head) declared as a
    # softmax: the rows do not sum to 1
    import keras

    squash = keras.layers.Lambda(lambda z: keras.ops.clip(z * 0.1 + 0.5, 0.0, 1.0))
    hidden = keras.Sequential([_dense(3, None), squash])
    with pytest.raises(
        HeadContradictionError,
        match=r"--head multiclass expects each sample's 3 "
        r"probabilities to sum to 1 .* --head multilabel",
    ):
        exporter.export(hidden, tmp_path / "d", head="multiclass", validation=x)
    assert not (tmp_path / "d").exists()
