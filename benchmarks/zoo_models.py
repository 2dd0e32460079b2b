"""The zoo's models: each builder returns a :class:`~keras_edge.benchmarks.zoo_data.Case`, a
compiled model trained for a few seconds with a fixed seed, with its calibration and validation
data. TensorFlow is imported when a builder runs, never at import."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from keras_edge.benchmarks.example import make_moons
from keras_edge.benchmarks.zoo_data import (
    SEED,
    SEQ_LEN,
    VOCAB,
    Case,
    breast_cancer,
    digit_tags,
    digits,
    digits_flat,
    standardize,
    tokens,
)
from keras_edge.exporter import captured_output, import_keras

logger = logging.getLogger(__name__)


def _keras(seed: int = SEED) -> Any:
    keras = import_keras()
    keras.utils.set_random_seed(seed)
    return keras


def _fit(
    model: Any,
    x: Any,
    y: np.ndarray,
    epochs: int,
    loss: Any,
    lr: float = 0.01,
    batch_size: int = 64,
    run_eagerly: bool = False,
) -> Any:
    """Compile and train quietly. No XLA: compiling a graph costs more than these few steps."""
    keras = import_keras()
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=lr),
        loss=loss,
        jit_compile=False,
        run_eagerly=run_eagerly,
    )
    with captured_output():
        model.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0, shuffle=True)
    return model


def mlp() -> Case:
    keras = _keras()
    x_train, y_train = make_moons(1000, seed=SEED)
    x_val, y_val = make_moons(500, seed=SEED + 1)
    model = keras.Sequential(
        [
            keras.Input((2,), name="features"),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(1, activation="sigmoid"),
        ],
        name="mlp",
    )
    _fit(model, x_train, y_train, 30, "binary_crossentropy")
    return Case("mlp", model, x_train, x_val, y_val, "auto", "Dense 2-32-32-1 sigmoid, two moons")


def cnn() -> Case:
    keras = _keras()
    x_train, d_train, x_val, d_val = digits()
    x_train, x_val = x_train / 16.0, x_val / 16.0
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1), name="image"),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
            keras.layers.BatchNormalization(momentum=0.9),
            keras.layers.MaxPooling2D(2),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dropout(0.2),
            keras.layers.Dense(1, activation="sigmoid"),
        ],
        name="cnn",
    )
    _fit(model, x_train, (d_train == 3).astype(np.int64), 15, "binary_crossentropy")
    return Case(
        "cnn",
        model,
        x_train,
        x_val,
        (d_val == 3).astype(np.int64),
        "auto",
        "Conv2D, BatchNorm, MaxPool, GAP, Dropout, sigmoid; digits 8x8: is it a 3?",
    )


def _upsample(x: np.ndarray) -> np.ndarray:
    """8x8x1 digits (0..16) -> 32x32x3 pixel values 0..255, as a camera would give."""
    big = np.repeat(np.repeat(x, 4, axis=1), 4, axis=2)
    return np.clip(np.repeat(big, 3, axis=3) * 16.0, 0, 255).astype(np.float32)


def mobilenetv3small() -> Case:
    keras = _keras()
    x_train, d_train, x_val, d_val = digits()
    x_train, x_val = _upsample(x_train[:384]), _upsample(x_val[:200])
    y_train, y_val = (d_train[:384] >= 5).astype(np.int64), (d_val[:200] >= 5).astype(np.int64)
    backbone = keras.applications.MobileNetV3Small(
        input_shape=(32, 32, 3), weights=None, include_top=False, pooling="avg"
    )
    # Its BatchNormalization momentum is 0.999: a few steps would leave the moving statistics
    # at their initial values, and the model answering one constant for every input.
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.5
    inputs = keras.Input((32, 32, 3), name="image")
    model = keras.Model(
        inputs, keras.layers.Dense(1, activation="sigmoid")(backbone(inputs)), name="mobilenetv3small"
    )
    # 12 steps, eagerly: tracing the training graph of this backbone costs ~20 s on 2 cores,
    # more than the steps themselves. Enough for outputs that vary (std ~0.25), not accuracy.
    _fit(model, x_train, y_train, 1, "binary_crossentropy", batch_size=32, run_eagerly=True)
    return Case(
        "mobilenetv3small",
        model,
        x_train[:200],
        x_val,
        y_val,
        "auto",
        "MobileNetV3Small backbone (untrained, a few steps), 32x32x3 digits 0..255: is it >= 5?",
    )


def two_inputs() -> Case:
    keras = _keras()
    x_train, d_train, x_val, d_val = digits()
    rng = np.random.default_rng(SEED)
    w = rng.standard_normal(8).astype(np.float32) / np.sqrt(8)

    def numeric_and_label(d: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
        numeric = np.random.default_rng(seed).standard_normal((len(d), 8)).astype(np.float32)
        return numeric, ((d >= 5) * 2.0 - 1.0 + numeric @ w > 0).astype(np.int64)

    n_train, y_train = numeric_and_label(d_train, SEED + 1)
    n_val, y_val = numeric_and_label(d_val, SEED + 2)
    numeric = keras.Input((8,), name="numeric")
    image = keras.Input((8, 8, 1), name="image")
    seen = keras.layers.Conv2D(8, 3, activation="relu")(image)
    seen = keras.layers.Flatten()(keras.layers.MaxPooling2D(2)(seen))
    merged = keras.layers.Concatenate()([keras.layers.Dense(8, activation="relu")(numeric), seen])
    hidden = keras.layers.Dense(16, activation="relu")(merged)
    model = keras.Model(
        [numeric, image], keras.layers.Dense(1, activation="sigmoid")(hidden), name="two_inputs"
    )
    train = {"numeric": n_train, "image": x_train / 16.0}
    _fit(model, train, y_train, 15, "binary_crossentropy")
    return Case(
        "two-inputs",
        model,
        train,
        {"numeric": n_val, "image": (x_val / 16.0).astype(np.float32)},
        y_val,
        "auto",
        "two named inputs (numeric (8,), image (8, 8, 1)) concatenated, sigmoid",
    )


def normalization() -> Case:
    keras = _keras()
    x_train, y_train, x_val, y_val = breast_cancer()
    norm = keras.layers.Normalization()
    norm.adapt(x_train)
    model = keras.Sequential(
        [
            keras.Input((30,), name="features"),
            norm,
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(1, activation="sigmoid"),
        ],
        name="normalization",
    )
    _fit(model, x_train, y_train, 30, "binary_crossentropy")
    return Case(
        "normalization",
        model,
        x_train,
        x_val,
        y_val,
        "auto",
        "Normalization adapted inside the model, raw breast-cancer features (ranges 1e5x apart)",
    )


def rescaling() -> Case:
    keras = _keras()
    x_train, d_train, x_val, d_val = digits()
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1), name="pixels"),
            keras.layers.Rescaling(1 / 16),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(1, activation="sigmoid"),
        ],
        name="rescaling",
    )
    _fit(model, x_train, (d_train >= 5).astype(np.int64), 15, "binary_crossentropy")
    return Case(
        "rescaling",
        model,
        x_train,
        x_val,
        (d_val >= 5).astype(np.int64),
        "auto",
        "Rescaling(1/16) inside a CNN, raw digits pixels 0..16: is it >= 5?",
    )


def _text(name: str, layer: Callable[[Any], Any], epochs: int, description: str) -> Case:
    keras = _keras()
    x_train, y_train = tokens(2000, SEED)
    x_val, y_val = tokens(400, SEED + 1)
    model = keras.Sequential(
        [
            keras.Input((SEQ_LEN,), dtype="int32", name="tokens"),
            keras.layers.Embedding(VOCAB, 8),
            layer(keras),
            keras.layers.Dense(1, activation="sigmoid"),
        ],
        name=name.replace("-", "_"),
    )
    _fit(model, x_train, y_train, epochs, "binary_crossentropy", lr=0.02)
    return Case(name, model, x_train, x_val, y_val, "auto", description)


def text_embedding() -> Case:
    return _text(
        "text-embedding",
        lambda keras: keras.layers.GlobalAveragePooling1D(),
        15,
        f"int32 tokens ({SEQ_LEN},), Embedding + GlobalAveragePooling1D, sigmoid",
    )


def text_gru() -> Case:
    return _text(
        "text-gru",
        lambda keras: keras.layers.GRU(8),
        8,
        f"int32 tokens ({SEQ_LEN},), Embedding + GRU(8), sigmoid",
    )


def text_lstm() -> Case:
    return _text(
        "text-lstm",
        lambda keras: keras.layers.LSTM(8),
        8,
        f"int32 tokens ({SEQ_LEN},), Embedding + LSTM(8), sigmoid",
    )


def multilabel() -> Case:
    keras = _keras()
    x_train, d_train, x_val, d_val = digits_flat()
    model = keras.Sequential(
        [
            keras.Input((64,), name="pixels"),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(3, activation="sigmoid"),
        ],
        name="multilabel",
    )
    _fit(model, x_train, digit_tags(d_train), 20, "binary_crossentropy")
    return Case(
        "multilabel",
        model,
        x_train,
        x_val,
        digit_tags(d_val),
        "auto",
        "Dense 64-32-3 sigmoid, digits: even / >= 5 / has a loop, one threshold each",
    )


def multilabel_normalized() -> Case:
    """The multilabel tagger fed raw pixel counts (0..16), a Normalization layer inside: what
    the Keras guides do for raw features. Per pixel, so the rarely inked border pixels get the
    largest scales; full int8 fails it (the input scale is fixed before the normalization, and
    the first Dense then sees the rare pixels' huge normalized values)."""
    keras = _keras()
    x_train, d_train, x_val, d_val = digits()
    x_train, x_val = x_train.reshape(-1, 64), x_val.reshape(-1, 64)
    norm = keras.layers.Normalization()
    norm.adapt(x_train)
    model = keras.Sequential(
        [
            keras.Input((64,), name="pixels"),
            norm,
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(3, activation="sigmoid"),
        ],
        name="multilabel_normalized",
    )
    _fit(model, x_train, digit_tags(d_train), 20, "binary_crossentropy")
    return Case(
        "multilabel-normalized",
        model,
        x_train,
        x_val,
        digit_tags(d_val),
        "auto",
        "Normalization inside, Dense 64-32-3 sigmoid, raw digit pixel counts 0..16: three tags",
    )


def multiclass() -> Case:
    keras = _keras()
    x_train, d_train, x_val, d_val = digits_flat()
    model = keras.Sequential(
        [
            keras.Input((64,), name="pixels"),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ],
        name="multiclass",
    )
    _fit(model, x_train, d_train, 20, "sparse_categorical_crossentropy")
    return Case(
        "multiclass", model, x_train, x_val, d_val, "auto", "Dense 64-32-10 softmax, digits: argmax"
    )


def regression() -> Case:
    keras = _keras()

    def data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        x = np.random.default_rng(seed).standard_normal((n, 6)).astype(np.float32)
        y = 500 + 250 * x[:, 0] - 150 * x[:, 1] + 100 * x[:, 2] * x[:, 3]
        return x, y.astype(np.float32).reshape(-1, 1)

    x_train, y_train = data(2000, SEED)
    x_val, y_val = data(400, SEED + 1)
    model = keras.Sequential(
        [
            keras.Input((6,), name="features"),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(1),
        ],
        name="regression",
    )
    _fit(model, x_train, y_train, 30, "mse", lr=0.05)
    return Case(
        "regression",
        model,
        x_train,
        x_val,
        y_val,
        "regression",
        "Dense 6-32-32-1 linear, a synthetic target of values up to ~1e3 (head regression)",
    )


def logit() -> Case:
    keras = _keras()
    x_train, y_train, x_val, y_val = breast_cancer()
    x_train, x_val = standardize(x_train, x_val)
    model = keras.Sequential(
        [
            keras.Input((30,), name="features"),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(1),
        ],
        name="logit",
    )
    _fit(model, x_train, y_train, 30, keras.losses.BinaryCrossentropy(from_logits=True))
    return Case(
        "logit",
        model,
        x_train,
        x_val,
        y_val,
        "logit",
        "Dense 30-16-1 linear trained from_logits, standardized breast cancer (head logit)",
    )
