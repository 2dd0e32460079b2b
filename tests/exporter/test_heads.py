"""Every head kind, exported for real and decided by the runtime as the manifest says."""

from __future__ import annotations

import numpy as np
import pytest

from keras_edge import exporter, runtime
from keras_edge.exporter.errors import UnsupportedModelError


def _model(units: int, activation: str | None, seed: int = 7):
    import keras

    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((4,), name="x"),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(units, activation=activation),
        ]
    )


@pytest.fixture(scope="module")
def x4() -> np.ndarray:
    return np.random.default_rng(5).normal(size=(500, 4)).astype(np.float32)


def _sigmoid(z):
    return 1 / (1 + np.exp(-z.astype(np.float64)))


@pytest.mark.parametrize(
    ("units", "activation", "head", "kind", "output"),
    [
        (1, "sigmoid", "auto", "binary", "probability"),
        (3, "sigmoid", "auto", "multilabel", "probability"),
        (3, "softmax", "auto", "multiclass", "probability"),
        (1, None, "logit", "binary", "logit"),
        (3, None, "logit", "multilabel", "logit"),
        (2, None, "regression", "regression", "probability"),
    ],
)
def test_head_is_read_and_decided(tmp_path, x4, units, activation, head, kind, output):
    model = _model(units, activation)
    raw = model.predict(x4, verbose=0)
    threshold = [0.3, 0.5, 0.7] if kind == "multilabel" else 0.4
    manifest = exporter.export(model, tmp_path / "dist", validation=x4, head=head, threshold=threshold)
    assert (manifest.head.kind, manifest.head.output, manifest.head.units) == (kind, output, units)
    for vid in manifest.variants:
        assert manifest.variants[vid].parity.passed, manifest.variants[vid].parity
        clf = runtime.load(tmp_path / "dist", variant=vid)
        labels = clf.predict(x4)
        if kind == "binary":
            p = _sigmoid(raw) if output == "logit" else raw
            np.testing.assert_array_equal(labels, (p[:, 0] > 0.4).astype(int))
            np.testing.assert_allclose(clf.predict_proba(x4), p, atol=1e-5)
        elif kind == "multilabel":
            p = _sigmoid(raw) if output == "logit" else raw
            assert labels.shape == (len(x4), 3)
            np.testing.assert_array_equal(labels, (p > np.array([0.3, 0.5, 0.7])).astype(int))
        elif kind == "multiclass":
            np.testing.assert_array_equal(labels, raw.argmax(axis=1))
            np.testing.assert_allclose(clf.predict_proba(x4), raw, atol=1e-5)
        else:
            np.testing.assert_allclose(labels, raw, atol=1e-5)
            with pytest.raises(runtime.InputError, match="regression head"):
                clf.predict_proba(x4)


def test_linear_output_needs_a_declared_head(tmp_path):
    with pytest.raises(UnsupportedModelError, match="--head logit or --head regression"):
        exporter.export(_model(1, None), tmp_path / "dist")
    assert not (tmp_path / "dist").exists()


def test_unknown_activation_is_refused(tmp_path):
    with pytest.raises(UnsupportedModelError, match="sigmoid, softmax or linear, got 'tanh'"):
        exporter.export(_model(1, "tanh"), tmp_path / "dist")
