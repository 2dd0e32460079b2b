"""Read a head's activation from the TensorFlow graph the model computes.

The layer walk (:func:`keras_edge.exporter.model._activation_name`) sees a Dense layer's
``activation``; it cannot see a sigmoid applied in a subclassed model's ``call()``, inside a
SavedModel, or after a ``Concatenate`` of several sigmoid heads. This module traces the model
(``model(x, training=False)`` for its input specs), freezes it (function calls inlined), and
walks back from the output through ops that pass values on unchanged to the op that makes them:
``Sigmoid`` is a sigmoid head, ``Softmax`` a softmax head, a ``ConcatV2`` whose every input is a
sigmoid a multilabel sigmoid head; anything else is linear.
"""

from __future__ import annotations

import logging
from typing import Any

from keras_edge.exporter import _tf

logger = logging.getLogger(__name__)

# Ops whose output is their first input's values, at most reshaped.
PASS_THROUGH_OPS = frozenset(
    {"Identity", "Snapshot", "StopGradient", "PreventGradient", "EnsureShape", "CheckNumerics",
     "Reshape", "Squeeze", "ExpandDims"}
)  # fmt: skip
CONCAT_OPS = frozenset({"ConcatV2", "Concat"})
ACTIVATION_OPS = {"Sigmoid": "sigmoid", "Softmax": "softmax"}
MAX_DEPTH = 200  # a graph is finite; the bound only guards against a malformed one


def output_activation(model: Any, index: int = 0) -> str:
    """``'sigmoid'``, ``'softmax'`` or ``'linear'``: what the op that makes the model's output
    ``index`` (in ``model.outputs`` order) is, read from its frozen graph. A model that cannot
    be traced or frozen is ``'linear'`` (the caller then asks the user to declare the head)."""
    try:
        graph_def, output = _frozen(model, index)
    except Exception as exc:  # tracing and freezing raise many untyped errors
        logger.debug("graph head: could not trace %s: %s", getattr(model, "name", model), exc)
        return "linear"
    nodes = {node.name: node for node in graph_def.node}
    activation = _producer(nodes, output, 0)
    logger.debug("graph head: the output %r is made by %s", output, activation)
    return activation


def _frozen(model: Any, index: int = 0) -> tuple[Any, str]:
    """The model's graph with variables as constants and function calls inlined, and the name
    of its output tensor ``index``. The model is called as it takes its inputs (one array, a
    list, or a dict by name), and its outputs are flattened as ``model.outputs`` lists them (a
    dict by sorted key, as Keras and ``tf.nest`` both order it)."""
    from keras_edge.exporter import structure

    tf = _tf.tensorflow()
    constants = _tf.module("tensorflow.python.framework.convert_to_constants")
    keys = structure.read(model).input_keys
    specs = [tf.TensorSpec(t.shape, t.dtype, name=f"x{i}") for i, t in enumerate(model.inputs)]
    if keys is not None:
        fn = tf.function(lambda *xs: model(dict(zip(keys, xs, strict=True)), training=False))
    elif len(specs) == 1:
        fn = tf.function(lambda x: model(x, training=False))
    else:
        fn = tf.function(lambda *xs: model(list(xs), training=False))
    with _tf.captured_output():
        concrete = fn.get_concrete_function(*specs)
        frozen = constants.convert_variables_to_constants_v2(concrete)
    return frozen.graph.as_graph_def(), frozen.outputs[index].name


def _producer(nodes: dict[str, Any], tensor: str, depth: int) -> str:
    """The activation that makes ``tensor`` ('name:index' or 'name'), through pass-through ops
    and concatenations."""
    name, _, index = tensor.lstrip("^").partition(":")
    node = nodes.get(name)
    if node is None or depth > MAX_DEPTH:
        return "linear"
    if node.op in ACTIVATION_OPS:
        return ACTIVATION_OPS[node.op]
    if node.op in PASS_THROUGH_OPS:
        return _producer(nodes, node.input[0], depth + 1)
    if node.op == "IdentityN":  # output i is input i
        data = [i for i in node.input if not i.startswith("^")]
        position = int(index or 0)
        return _producer(nodes, data[position], depth + 1) if position < len(data) else "linear"
    if node.op in CONCAT_OPS:
        data = [i for i in node.input if not i.startswith("^")]
        pieces = data[:-1] if node.op == "ConcatV2" else data[1:]  # the axis is last / first
        found = {_producer(nodes, piece, depth + 1) for piece in pieces}
        # Several sigmoid heads side by side are one multilabel head; several softmax heads
        # are not one multiclass head (each sums to 1), so they stay undeclared.
        return "sigmoid" if found == {"sigmoid"} else "linear"
    return "linear"
