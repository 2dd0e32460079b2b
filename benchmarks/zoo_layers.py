"""A user's custom layer, as a training script defines it in a module of its own: registered
with ``@keras.saving.register_keras_serializable`` so that a saved ``.keras`` file names it.

The ``custom-layer`` coverage case trains a model with it, saves the model, copies this file
beside the model, and exports with ``custom_objects=[that copy]`` in a fresh process, as a user
exports a model whose layer class Keras cannot find by itself. Keras is imported with this
module: import it only where TensorFlow may load.
"""

from __future__ import annotations

from typing import Any

import keras


@keras.saving.register_keras_serializable(package="zoo_user")
class LearnedScale(keras.layers.Layer):
    """One trainable scale per feature, initialised to 1."""

    def build(self, input_shape: Any) -> None:
        self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="scale")

    def call(self, x: Any) -> Any:
        return x * self.scale
