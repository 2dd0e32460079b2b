"""What the target kernel library really runs: LiteRT's XNNPACK partitions of a ``.tflite``.

LiteRT hands XNNPACK every op it has a kernel for, in as few connected partitions as it can;
the ops it has no kernel for run on LiteRT's built-in (reference-grade) kernels, and every
switch between the two costs a copy and a lost fusion. A full-int8 MobileNetV3Small splits into
19 partitions because XNNPACK (ai-edge-litert 2.3) has no int8 ``HARD_SWISH``, and runs slower
than its float file. :func:`partitions` measures it by loading the file as a device would (the
default delegates on) and reading the interpreter's execution plan: each ``DELEGATE`` node is a
partition, and the ops no partition covers are left to the built-in kernels.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from keras_edge.exporter import _tf

logger = logging.getLogger(__name__)

ENGINE = "LiteRT XNNPACK"
# Ops that convert at the file's float edges: outside a partition they cost one pass over the
# input or output, not a split of the graph.
EDGE_OPS = ("QUANTIZE", "DEQUANTIZE")


def _added(name: str) -> bool:
    """Whether a tensor is one keras-edge adds after the output (the decision outputs' ops)."""
    return name.startswith("keras_edge_") or name == "class" or name.startswith("class_")


@dataclass(frozen=True)
class Partitions:
    """How LiteRT's default delegate (XNNPACK) takes a model: ``count`` partitions, and the ops
    it leaves to the built-in kernels as (op type, output tensor name), in graph order."""

    count: int
    left: tuple[tuple[str, str], ...]

    @property
    def left_types(self) -> Counter[str]:
        return Counter(op for op, _ in self.left)

    def inner(self) -> tuple[tuple[str, str], ...]:
        """The ops left out that split the graph: not the float edges' QUANTIZE/DEQUANTIZE, nor
        the decision ops keras-edge adds after the model's output (``keras_edge_*`` tensors,
        ``class`` outputs: boolean and integer ops that run after the delegate)."""
        return tuple((op, name) for op, name in self.left if op not in EDGE_OPS and not _added(name))

    def describe(self) -> str:
        kinds = ", ".join(f"{n} {op}" for op, n in sorted(self.left_types.items()))
        return f"{self.count} XNNPACK partition(s)" + (f", left out: {kinds}" if kinds else "")


def partitions(data: bytes) -> Partitions:
    """Load ``data`` with LiteRT's default delegates and read its execution plan: the
    ``DELEGATE`` nodes, and the ops none of them covers. A partition covers the ops its outputs
    are computed from, back to its inputs."""
    interpreter_module = _tf.module("ai_edge_litert.interpreter")
    with _tf.captured_output():
        interpreter = interpreter_module.Interpreter(model_content=data, num_threads=1)
        interpreter.allocate_tensors()
    ops = interpreter._get_ops_details()  # the only view of the execution plan
    delegates = [op for op in ops if op["op_name"] == "DELEGATE"]
    plain = [op for op in ops if op["op_name"] != "DELEGATE"]
    producer = {int(t): op["index"] for op in plain for t in op["outputs"]}
    by_index = {op["index"]: op for op in plain}
    covered: set[int] = set()
    for node in delegates:
        boundary = {int(t) for t in node["inputs"]}
        stack = [producer[int(t)] for t in node["outputs"] if int(t) in producer]
        while stack:
            index = stack.pop()
            if index in covered:
                continue
            covered.add(index)
            stack += [
                producer[int(t)]
                for t in by_index[index]["inputs"]
                if int(t) >= 0 and int(t) not in boundary and int(t) in producer
            ]
    names = interpreter._interpreter.TensorName
    left = tuple(
        (str(op["op_name"]), str(names(int(op["outputs"][0]), 0)) if len(op["outputs"]) else "")
        for op in plain
        if op["index"] not in covered
    )
    return Partitions(count=len(delegates), left=left)


def relative_time(
    fmt: str, data: bytes, reference: bytes, x: Sequence[np.ndarray], names: Sequence[str],
    calls: int = 30,
) -> float:  # fmt: skip
    """``data``'s median time per call over ``reference``'s, one sample per call, one thread,
    the two interleaved so that a busy machine slows both alike. A log line's figure, never a
    manifest's: timings are not reproducible and the bytes must be."""
    from keras_edge.runtime.engines import make_engine

    engines = [make_engine(fmt, d, "cpu", 1, list(names)) for d in (data, reference)]
    sample = [np.ascontiguousarray(a[:1]) for a in x]
    times: list[list[float]] = [[], []]
    for i in range(calls + 3):
        for which, engine in enumerate(engines):
            started = time.perf_counter()
            engine.run_many(sample)
            if i >= 3:  # the first calls warm the caches and the kernels' packing
                times[which].append(time.perf_counter() - started)
    return float(np.median(times[0]) / np.median(times[1]))


__all__ = ["EDGE_OPS", "ENGINE", "Partitions", "partitions", "relative_time"]
