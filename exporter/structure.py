"""A model's inputs and outputs as the rest of the export sees them: a list of inputs in the
model's order, and one output.

Keras models take a dict of inputs by name (``keras.Model({"numeric": a, "aux": b}, out)``,
the structured-data style) and give several outputs (a dict by name, or a list). The
converters, the quantizers and the gate want one thing: a list of named inputs in, one
(n, units) output out. :func:`plain` wraps such a model into exactly that, with the same
layers and weights: its inputs are named by the dict's keys (so data is matched to them by
name everywhere), and its one output is every head's output side by side, in the model's
output order. The manifest names each head's columns of it (:class:`~keras_edge.runtime.
manifest.Head`'s ``name``); the runtime splits them again and answers in the model's own
structure (a dict by output name, or a list in output order), as Keras's ``predict`` does.
A model that already has that form is returned as it is.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from keras_edge.exporter import _tf
from keras_edge.exporter.errors import UnsupportedModelError

logger = logging.getLogger(__name__)

HEADS_LAYER = "keras_edge_heads"  # the Concatenate that puts the heads side by side


@dataclass(frozen=True)
class Structure:
    """How the model takes its inputs and gives its outputs: ``input_keys`` (the dict's key
    of each input, in ``model.inputs`` order, or None for a list or one array), ``outputs``
    (``"one"``, ``"dict"`` or ``"list"``) and ``output_names`` (one per output, in
    ``model.outputs`` order)."""

    input_keys: tuple[str, ...] | None
    outputs: str
    output_names: tuple[str, ...]

    @property
    def is_plain(self) -> bool:
        return self.input_keys is None and self.outputs == "one"


def read(model: Any) -> Structure:
    """The structure of a functional Keras model's inputs and outputs."""
    inputs_struct = getattr(model, "_inputs_struct", None)
    keys = None
    if isinstance(inputs_struct, dict):
        by_id = {id(tensor): str(key) for key, tensor in inputs_struct.items()}
        keys = tuple(by_id[id(tensor)] for tensor in model.inputs)
    outputs_struct = getattr(model, "_outputs_struct", None)
    n = len(model.outputs)
    names = getattr(model, "output_names", None) or [f"output_{i}" for i in range(n)]
    if isinstance(outputs_struct, dict):
        by_id = {id(tensor): str(key) for key, tensor in outputs_struct.items()}
        names = [by_id.get(id(tensor), name) for tensor, name in zip(model.outputs, names, strict=True)]
    kind = "one" if n == 1 else "dict" if isinstance(outputs_struct, dict) else "list"
    if kind == "list" and len(set(names)) != len(names):
        # A nested model's outputs share its name ('inner', 'inner'): name them by position.
        names = [f"output_{i}" for i in range(n)]
    if len(set(names)) != len(names):
        raise UnsupportedModelError(f"Expected distinct output names, got {list(names)}")
    return Structure(input_keys=keys, outputs=kind, output_names=tuple(str(n) for n in names))


def plain(model: Any, structure: Structure, specs: Any) -> Any:
    """``model`` with a list of inputs named as ``specs`` and one output (every output flattened
    to (n, units) and side by side); ``model`` itself when it has that form already."""
    if structure.is_plain:
        return model
    keras = _tf.keras()
    with _tf.captured_output():
        inputs = [
            keras.Input(shape=spec.feature_shape, dtype=spec.dtype, name=spec.name) for spec in specs
        ]
        if structure.input_keys is not None:
            feed: Any = dict(zip(structure.input_keys, inputs, strict=True))
        else:
            feed = inputs[0] if len(inputs) == 1 else inputs
        result = model(feed)
        if isinstance(result, dict):
            outputs = [result[name] for name in structure.output_names]
        elif isinstance(result, (list, tuple)):
            outputs = list(result)
        else:
            outputs = [result]
        for name, tensor in zip(structure.output_names, outputs, strict=True):
            if len(tensor.shape) != 2:
                raise UnsupportedModelError(
                    f"Expected output {name!r} of shape (None, units), got {tuple(tensor.shape)}"
                )
        joined = outputs[0] if len(outputs) == 1 else keras.layers.Concatenate(name=HEADS_LAYER)(outputs)
        wrapper = keras.Model(inputs, joined, name=model.name)
    logger.info(
        "inputs %s, outputs %s: converted as one model with a list of inputs and one output",
        list(structure.input_keys or [s.name for s in specs]), list(structure.output_names),
    )  # fmt: skip
    return wrapper
