"""The edge backbones int8 is judged on (issue 22): ``keras.applications`` MobileNetV3Small,
MobileNetV2 (alpha 0.35) and EfficientNetB0 at 64x64x3, trained from scratch (``weights=None``:
nothing is downloaded) on a learnable task, scikit-learn's digits drawn as 64x64 camera pixels
(0..255): is the digit >= 5? Their outputs vary and both classes occur, and their batch
normalization statistics are settled (re-estimated with momentum 0 on one training-mode pass
over the training images), so that a parity check and a speed figure mean something: an
untrained MobileNet answers one constant.

Training costs 1-3 minutes each on 2 cores, so they are kept out of the test suite and out of
:data:`~keras_edge.benchmarks.zoo.CASES`: ``keras-edge zoo mobilenetv2-035 DIR`` saves one for
``keras-edge export`` and ``keras-edge bench``. TensorFlow is imported when a builder runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from keras_edge.benchmarks.zoo_data import Case, build_case, digits
from keras_edge.benchmarks.zoo_models import _fit, _keras
from keras_edge.exporter import captured_output

logger = logging.getLogger(__name__)

SIZE = 64  # pixels a side
EPOCHS = 4


def camera_digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The digits as (n, 64, 64, 3) float32 pixel values 0..255 with a little sensor noise
    (seeded), and whether each is >= 5: (x_train, y_train, x_val, y_val), 397 held out."""
    x_train, d_train, x_val, d_val = digits()
    rng = np.random.default_rng(22)

    def pixels(x: np.ndarray) -> np.ndarray:
        scale = SIZE // x.shape[1]
        big = np.repeat(np.repeat(x, scale, axis=1), scale, axis=2) * 16.0
        noisy = np.repeat(big, 3, axis=3) + rng.normal(0.0, 8.0, (*big.shape[:3], 3))
        return np.clip(noisy, 0, 255).astype(np.float32)

    return pixels(x_train), (d_train >= 5).astype(np.int64), pixels(x_val), (d_val >= 5).astype(np.int64)


def settle_batch_norm(model: Any, x: np.ndarray) -> None:
    """Re-estimate every BatchNormalization's moving mean and variance from ``x`` in one
    training-mode pass (momentum 0): the statistics a long training run converges to."""
    keras = _keras()
    layers = [layer for layer in _leaves(model) if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.0
    model(x, training=True)
    for layer, momentum in zip(layers, momenta, strict=True):
        layer.momentum = momentum


def _leaves(model: Any) -> list[Any]:
    out, stack = [], [model]
    while stack:
        for layer in getattr(stack.pop(), "layers", None) or []:
            (stack if isinstance(getattr(layer, "layers", None), list) else out).append(layer)
    return out


def _backbone_case(name: str, make: Callable[[Any, Any], Any], description: str) -> Case:
    keras = _keras()
    x_train, y_train, x_val, y_val = camera_digits()
    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    features = make(keras, inputs)
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(features), name=name)
    with captured_output():
        _fit(model, x_train, y_train, EPOCHS, "binary_crossentropy", lr=2e-3, batch_size=32)
    settle_batch_norm(model, x_train[:512])
    accuracy = float(((model.predict(x_val, verbose=0)[:, 0] > 0.5) == y_val).mean())
    logger.info("%s: validation accuracy %.3f", name, accuracy)
    description = f"{description}, validation accuracy {accuracy:.3f}"
    return Case(name, model, x_train[:256], x_val, y_val, "auto", description)


def mobilenetv3small() -> Case:
    def make(keras: Any, inputs: Any) -> Any:  # its own Rescaling to [-1, 1] comes first
        return keras.applications.MobileNetV3Small(
            input_shape=(SIZE, SIZE, 3), weights=None, include_top=False, pooling="avg"
        )(inputs)

    return _backbone_case(
        "mobilenetv3small-64", make, "MobileNetV3Small, 64x64x3 digits 0..255 (>= 5?)"
    )


def mobilenetv2() -> Case:
    def make(keras: Any, inputs: Any) -> Any:
        scaled = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inputs)  # what it expects
        return keras.applications.MobileNetV2(
            input_shape=(SIZE, SIZE, 3), alpha=0.35, weights=None, include_top=False, pooling="avg"
        )(scaled)

    return _backbone_case(
        "mobilenetv2-035", make, "MobileNetV2 alpha 0.35, 64x64x3 digits 0..255 (>= 5?)"
    )


def efficientnetb0() -> Case:
    def make(keras: Any, inputs: Any) -> Any:  # its own Rescaling and Normalization come first
        return keras.applications.EfficientNetB0(
            input_shape=(SIZE, SIZE, 3), weights=None, include_top=False, pooling="avg"
        )(inputs)

    return _backbone_case(
        "efficientnetb0-64", make, "EfficientNetB0, 64x64x3 digits 0..255 (>= 5?)"
    )


CASES: dict[str, Callable[[], Case]] = {
    "mobilenetv3small-64": mobilenetv3small,
    "mobilenetv2-035": mobilenetv2,
    "efficientnetb0-64": efficientnetb0,
}


def build(name: str) -> Case:
    """Build, train and return the case ``name`` (one of :data:`CASES`)."""
    return build_case(CASES, name)


__all__ = ["CASES", "build", "camera_digits", "settle_batch_norm"]
