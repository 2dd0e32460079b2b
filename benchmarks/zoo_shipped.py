"""The models people ship (issue 21), as coverage cases beside the zoo's: named (dict) inputs,
several heads, camera pixels, a Transformer block, a masked Bidirectional LSTM, a Keras 3
SavedModel folder, a custom layer from the user's file, a subclassed model and concatenated
sigmoid heads. Each is written the way keras-io's examples write it, trained for a few seconds
on generated data or scikit-learn's bundled datasets (nothing is downloaded), and says how it
reaches ``export()`` (:data:`~keras_edge.benchmarks.zoo_data.SOURCES`): most as a saved
``.keras`` file, the subclassed model as the object, the SavedModel as its folder, the custom
layer as a ``.keras`` file plus the ``.py`` file of :mod:`~keras_edge.benchmarks.zoo_layers`.

They are kept apart from :data:`keras_edge.benchmarks.zoo.CASES`, whose cases the exporter's
architecture tests take one output and one ``.keras`` file at a time. ``keras-edge
bench-coverage`` runs both lists; ``--only transformer,masked-bilstm`` reruns two of them.
TensorFlow is imported when a builder runs, never at import.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from keras_edge.benchmarks.zoo_data import (
    SEQ_LEN,
    VOCAB,
    Case,
    breast_cancer,
    build_case,
    digit_tags,
    digits,
    digits_flat,
    padded_tokens,
    standardize,
    tokens,
)
from keras_edge.benchmarks.zoo_models import _fit, _keras, _upsample

logger = logging.getLogger(__name__)

# The breast-cancer columns the dict-inputs case takes, one named Input each (of the 30).
COLUMNS = ("mean_radius", "mean_texture", "mean_smoothness", "worst_area", "worst_concavity")
_COLUMN_INDEX = (0, 1, 4, 23, 26)
LAYERS_MODULE = "keras_edge.benchmarks.zoo_layers"


def dict_inputs() -> Case:
    """keras-io's structured-data style: one Input per column, each normalized by its own
    adapted ``Normalization``, concatenated; given as a dict by column name."""
    keras = _keras()
    x_train, y_train, x_val, y_val = breast_cancer()

    def columns(x: np.ndarray) -> dict[str, np.ndarray]:
        return {name: x[:, [i]] for name, i in zip(COLUMNS, _COLUMN_INDEX, strict=True)}

    train, val = columns(x_train), columns(x_val)
    inputs = {name: keras.Input((1,), name=name) for name in COLUMNS}
    encoded = []
    for name, inp in inputs.items():
        norm = keras.layers.Normalization()
        norm.adapt(train[name])
        encoded.append(norm(inp))
    h = keras.layers.Dense(16, activation="relu")(keras.layers.concatenate(encoded))
    h = keras.layers.Dropout(0.2)(h)
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(h), name="dict_inputs")
    _fit(model, train, y_train, 30, "binary_crossentropy")
    return Case(
        "dict-inputs", model, train, val, y_val, "auto",
        f"dict of {len(COLUMNS)} named inputs (one per column, each Normalization-adapted), "
        "sigmoid; breast cancer",
    )  # fmt: skip


def three_heads() -> Case:
    """One model, dict outputs: two sigmoid heads and a softmax head, each with its loss, and a
    threshold per sigmoid head."""
    keras = _keras()
    x_train, d_train, x_val, d_val = digits_flat()
    inp = keras.Input((64,), name="pixels")
    h = keras.layers.Dense(32, activation="relu")(inp)
    outputs = {
        "even": keras.layers.Dense(1, activation="sigmoid", name="even")(h),
        "big": keras.layers.Dense(1, activation="sigmoid", name="big")(h),
        "digit": keras.layers.Dense(10, activation="softmax", name="digit")(h),
    }
    model = keras.Model(inp, outputs, name="three_heads")

    def targets(d: np.ndarray) -> dict[str, np.ndarray]:
        return {"even": (d % 2 == 0).astype(np.int64), "big": (d >= 5).astype(np.int64), "digit": d}

    losses = {"even": "binary_crossentropy", "big": "binary_crossentropy",
              "digit": "sparse_categorical_crossentropy"}  # fmt: skip
    _fit(model, x_train, targets(d_train), 20, losses)
    return Case(
        "three-heads", model, x_train, x_val, targets(d_val), "auto",
        "dict outputs: sigmoid heads even (threshold 0.3) and big (0.7), softmax head digit; "
        "digits 8x8",
        threshold={"even": 0.3, "big": 0.7},
    )  # fmt: skip


def uint8_pixels() -> Case:
    """A camera's pixels: ``Input(dtype="uint8")`` then ``Rescaling(1/255)`` inside the model,
    calibrated and validated on uint8 images."""
    keras = _keras()
    x_train, d_train, x_val, d_val = digits()
    x_train, x_val = _upsample(x_train[:600]).astype(np.uint8), _upsample(x_val[:200]).astype(np.uint8)
    y_train, y_val = (d_train[:600] >= 5).astype(np.int64), (d_val[:200] >= 5).astype(np.int64)
    model = keras.Sequential(
        [
            keras.Input((32, 32, 3), dtype="uint8", name="pixels"),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Conv2D(8, 3, strides=2, activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Conv2D(16, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(1, activation="sigmoid"),
        ],
        name="uint8_pixels",
    )
    _fit(model, x_train, y_train, 10, "binary_crossentropy", batch_size=32)
    return Case(
        "uint8-pixels", model, x_train[:300], x_val, y_val, "auto",
        "uint8 pixels 32x32x3, Rescaling(1/255) inside a CNN, sigmoid: is the digit >= 5?",
    )  # fmt: skip


def saved_model() -> Case:
    """The zoo's softmax classifier (``multiclass``), exported by Keras 3's
    ``model.export(path, format="tf_saved_model")`` and given to ``export()`` as that folder:
    the head is read from its serving graph."""
    from keras_edge.benchmarks.zoo_models import multiclass

    return dataclasses.replace(
        multiclass(), name="saved-model", source="saved-model",
        description='Keras 3 model.export(format="tf_saved_model") folder of a Dense 64-32-10 '
        "softmax, digits",
    )  # fmt: skip


def transformer() -> Case:
    """keras-io's text classification with a Transformer block: token and position
    embeddings, MultiHeadAttention with residuals and LayerNormalization, a feed-forward
    block, GlobalAveragePooling1D; the positions computed from the input."""
    keras = _keras()
    x_train, y_train = tokens(2000, 11)
    x_val, y_val = tokens(400, 12)
    embed, heads, ff = 16, 2, 32
    inp = keras.Input((SEQ_LEN,), dtype="int32", name="tokens")
    positions = keras.ops.cumsum(keras.ops.ones_like(inp), axis=1) - 1
    h = keras.layers.Embedding(VOCAB, embed)(inp) + keras.layers.Embedding(SEQ_LEN, embed)(positions)
    attention = keras.layers.MultiHeadAttention(num_heads=heads, key_dim=embed)(h, h)
    h = keras.layers.LayerNormalization(epsilon=1e-6)(h + keras.layers.Dropout(0.1)(attention))
    block = keras.layers.Dense(ff, activation="relu")(h)
    block = keras.layers.Dense(embed)(block)
    h = keras.layers.LayerNormalization(epsilon=1e-6)(h + keras.layers.Dropout(0.1)(block))
    h = keras.layers.GlobalAveragePooling1D()(h)
    out = keras.layers.Dense(1, activation="sigmoid")(keras.layers.Dropout(0.1)(h))
    model = keras.Model(inp, out, name="transformer")
    _fit(model, x_train, y_train, 6, "binary_crossentropy", lr=0.003, batch_size=32)
    return Case(
        "transformer", model, x_train[:500], x_val, y_val, "auto",
        f"int32 tokens ({SEQ_LEN},), token + position Embedding, MultiHeadAttention(2), "
        "LayerNormalization, feed-forward, GlobalAveragePooling1D, sigmoid",
    )  # fmt: skip


def masked_bilstm() -> Case:
    """``Embedding(mask_zero=True)`` under a Bidirectional LSTM: padded token sequences of a
    fixed length, the padding masked out."""
    keras = _keras()
    x_train, y_train = padded_tokens(2000, 13)
    x_val, y_val = padded_tokens(400, 14)
    model = keras.Sequential(
        [
            keras.Input((SEQ_LEN,), dtype="int32", name="tokens"),
            keras.layers.Embedding(VOCAB, 8, mask_zero=True),
            keras.layers.Bidirectional(keras.layers.LSTM(8)),
            keras.layers.Dense(1, activation="sigmoid"),
        ],
        name="masked_bilstm",
    )
    _fit(model, x_train, y_train, 6, "binary_crossentropy", lr=0.02)
    return Case(
        "masked-bilstm", model, x_train[:500], x_val, y_val, "auto",
        f"int32 tokens ({SEQ_LEN},) padded with 0s, Embedding(mask_zero=True) + "
        "Bidirectional(LSTM(8)), sigmoid",
    )  # fmt: skip


def custom_layer() -> Case:
    """A model using the user's registered ``LearnedScale`` layer; exported from its ``.keras``
    file with ``custom_objects=[zoo_layers.py]`` in a process that has not imported it."""
    keras = _keras()
    layers = importlib.import_module(LAYERS_MODULE)
    x_train, y_train, x_val, y_val = breast_cancer()
    x_train, x_val = standardize(x_train, x_val)
    model = keras.Sequential(
        [
            keras.Input((30,), name="features"),
            keras.layers.Dense(16, activation="relu"),
            layers.LearnedScale(),
            keras.layers.Dense(1, activation="sigmoid"),
        ],
        name="custom_layer",
    )
    _fit(model, x_train, y_train, 30, "binary_crossentropy")
    return Case(
        "custom-layer", model, x_train, x_val, y_val, "auto",
        "a registered custom layer (LearnedScale) from the user's .py file, Dense 30-16-1 "
        "sigmoid, standardized breast cancer",
        source="keras-file+custom-objects", custom_code=LAYERS_MODULE,
    )  # fmt: skip


def subclassed() -> Case:
    """A subclassed ``keras.Model`` whose sigmoid is in ``call()`` (no layer shows it),
    exported from the object as a Python user does."""
    keras = _keras()

    class TabularNet(keras.Model):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.hidden = keras.layers.Dense(16, activation="relu")
            self.score = keras.layers.Dense(1)

        def call(self, x: Any) -> Any:
            return keras.ops.sigmoid(self.score(self.hidden(x)))

    x_train, y_train, x_val, y_val = breast_cancer()
    x_train, x_val = standardize(x_train, x_val)
    model = TabularNet(name="tabular_net")
    _fit(model, x_train, y_train, 30, "binary_crossentropy")
    return Case(
        "subclassed", model, x_train, x_val, y_val, "auto",
        "subclassed keras.Model, sigmoid in call(), Dense 30-16-1, standardized breast cancer",
        source="object",
    )  # fmt: skip


def concat_heads() -> Case:
    """Three one-unit sigmoid heads joined by ``Concatenate``: a multilabel output no single
    layer's activation declares."""
    keras = _keras()
    x_train, d_train, x_val, d_val = digits_flat()
    inp = keras.Input((64,), name="pixels")
    h = keras.layers.Dense(32, activation="relu")(inp)
    heads = [keras.layers.Dense(1, activation="sigmoid", name=n)(h) for n in ("even", "big", "loop")]
    model = keras.Model(inp, keras.layers.Concatenate()(heads), name="concat_heads")
    _fit(model, x_train, digit_tags(d_train), 20, "binary_crossentropy")
    return Case(
        "concat-heads", model, x_train, x_val, digit_tags(d_val), "auto",
        "three Dense(1, sigmoid) heads concatenated (multilabel), digits: even / >= 5 / loop",
    )  # fmt: skip


CASES: dict[str, Callable[[], Case]] = {
    "dict-inputs": dict_inputs,
    "three-heads": three_heads,
    "uint8-pixels": uint8_pixels,
    "saved-model": saved_model,
    "transformer": transformer,
    "masked-bilstm": masked_bilstm,
    "custom-layer": custom_layer,
    "subclassed": subclassed,
    "concat-heads": concat_heads,
}


def build(name: str) -> Case:
    """Build, train and return the case ``name`` (one of :data:`CASES`)."""
    return build_case(CASES, name)


__all__ = ["CASES", "build"]
