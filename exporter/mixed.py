"""Mixed precision when a full-int8 variant misses its gate: keep the fewest layers in float
that make it decide as Keras does.

1. Group the graph's ops by the Keras layer they come from (tf2onnx and the TFLite converter
   keep the layer's scope in each op's name; an op no layer names belongs with its producer;
   a fused TFLite op that names several layers joins them into one group).
2. Rank the groups once, on the parity data (at most ``SENSITIVITY_SAMPLES`` rows, fewer for
   large inputs), by how far the model's output moves when that group alone is quantized and
   everything else stays float (ONNX Runtime's ``nodes_to_quantize``; TFLite's MLIR quantizer
   with every other op denylisted). Above ``CHUNKED_ABOVE`` groups, runs of consecutive groups
   are measured first and only the most sensitive runs group by group (see :func:`rank`); the
   second int8 format reuses the first one's scores, the groups being the same Keras layers.
   Quantizing one group at a time measures what each group does to the output,
   where errors compound and cancel; a per-tensor error of the all-int8 model
   (``qdq_loss_debug``'s SQNR) ranks the layers where noise shows, not where it is made, and
   kept MobileNetV3Small failing with half its ops in float.
3. Input preprocessing (``Normalization``, ``Rescaling``) goes first: a full-int8 input has one
   scale for every raw feature before the layer that would have equalized them.
4. Keep the top 1, 2, 4, 8, ... groups in float (after the preprocessing) until the variant
   passes the export's own gate on its shipped bytes, then bisect down to the fewest that pass,
   at most ``MAX_ATTEMPTS`` candidates. Every group in float is never tried: that is fp32.

Each format supplies a :class:`Quantizer`: ``to_tflite.MixedInt8`` and ``to_onnx.StaticInt8``.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np

from keras_edge.runtime.manifest import Fallback, FallbackAttempt, Parity

logger = logging.getLogger(__name__)

FALLBACKS = ("auto", "none")
# Candidates gated at most, per variant: doubling reaches 128 groups in 8, bisection has 4 more.
MAX_ATTEMPTS = 12
# Parity samples the groups are ranked on (evenly spaced rows), in one call per group. The gate
# fails on the worst sample, so the ranking needs the rare ones too: on 64 of the 397 digits,
# a Normalization model's first Dense ranked below its last (its error comes from the few
# images that light a rarely inked pixel), and the search kept the wrong one in float.
SENSITIVITY_SAMPLES = 512
# At most this many input values in the rows a ranking runs on (512 rows of 4,096 values), and
# at least this many rows: images are ranked on fewer rows than tables (see sensitivity_rows).
SENSITIVITY_VALUES = 2**21
MIN_SENSITIVITY_SAMPLES = 128
# Above this many layer groups, ranking measures runs of consecutive groups first (see rank).
CHUNKED_ABOVE = 32
REFINED_CHUNKS = 3
# Keras layers that prepare raw inputs: kept in float first.
PREPROCESSING = ("Normalization", "Rescaling")

_UNIQUE_SUFFIX = re.compile(r"_\d+$")


@dataclass(frozen=True)
class GraphNode:
    """One op of a format's float graph, as its quantizer names it.

    ``key`` is what the quantizer takes to keep the op in float (an ONNX node name, a TFLite
    op's output tensor name); ``names`` are the TensorFlow names it carries (a fused TFLite op
    carries several, joined by ';'); ``weights`` the names of its constant inputs, read when
    ``names`` name no layer (tf2onnx renames some convolutions ``Conv__305``); ``inputs`` the
    keys of the ops that feed it."""

    key: str
    op: str
    names: tuple[str, ...]
    weights: tuple[str, ...] = ()
    inputs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Group:
    """Ops kept in float together: those of one Keras layer (or of layers fused into one op)."""

    label: str
    layers: tuple[str, ...]
    nodes: tuple[str, ...]
    preprocessing: bool = False


class Quantizer(Protocol):
    """A format's full-integer quantizer, calibrated once, re-quantized per candidate."""

    fmt: str

    def nodes(self) -> list[GraphNode]: ...

    def quantize(self, float_nodes: Sequence[str]) -> bytes:
        """The variant's bytes, every op quantized but ``float_nodes``."""
        ...

    def only(self, nodes: Sequence[str]) -> bytes:
        """A model with float input and output in which only ``nodes`` are quantized (none: the
        float model)."""
        ...


class Pinned:
    """A quantizer whose ``pinned`` ops stay float in every candidate (the ops the target's
    kernel library has no int8 kernel for): the search neither ranks nor counts them, so a
    ``fallback`` record's ``float_ops`` and ``ops`` leave them out (the variant's ``kernels``
    record counts them)."""

    def __init__(self, quantizer: Quantizer, pinned: Sequence[str]) -> None:
        self.quantizer, self.pinned = quantizer, tuple(pinned)
        self.fmt = quantizer.fmt

    def nodes(self) -> list[GraphNode]:
        pinned = set(self.pinned)
        return [n for n in self.quantizer.nodes() if n.key not in pinned]

    def quantize(self, float_nodes: Sequence[str]) -> bytes:
        return self.quantizer.quantize([*self.pinned, *float_nodes])

    def only(self, nodes: Sequence[str]) -> bytes:
        return self.quantizer.only(nodes)


@dataclass(frozen=True)
class Outcome:
    """What the search found: the bytes that passed and the groups they keep in float (None and
    () when nothing tried passed), and every candidate tried, in order."""

    data: bytes | None
    groups: tuple[Group, ...]
    attempts: tuple[FallbackAttempt, ...]
    ops: int = 0  # ops in the graph

    @property
    def float_layers(self) -> tuple[str, ...]:
        return tuple(name for g in self.groups for name in (g.layers or (g.label,)))

    @property
    def float_ops(self) -> int:
        return sum(len(g.nodes) for g in self.groups)

    def record(self, int8_bytes: int, int8_label_agreement: float) -> Fallback:
        """The manifest's record of this search, for a full-int8 file of ``int8_bytes`` that
        agreed with Keras on ``int8_label_agreement`` of the samples."""
        return Fallback(
            float_layers=self.float_layers,
            float_ops=self.float_ops,
            ops=self.ops,
            int8_bytes=int8_bytes,
            int8_label_agreement=int8_label_agreement,
            passed=self.data is not None,
            attempts=self.attempts,
        )

    def failure(self, int8_input: bool) -> str | None:
        """The gate's sentence when nothing passed; ``int8_input``: the variant's input is int8."""
        if self.data is not None:
            return None
        tried = max((a.float_groups for a in self.attempts), default=0)
        why = (
            f"mixed precision tried {len(self.attempts)} candidate(s), keeping up to {tried} "
            f"layer group(s) in float, and none passed"
        )
        if int8_input:
            why += " (with --int8-io the input is quantized before any layer kept in float)"
        return why


def keras_layers(model: Any) -> tuple[dict[str, str], set[str]]:
    """Every leaf layer of ``model`` (nested models opened) by name, with its class name; and the
    names of the model and the models nested in it."""
    layers: dict[str, str] = {}
    containers = {str(model.name)}
    stack = [model]
    while stack:
        for layer in getattr(stack.pop(), "layers", None) or []:
            if isinstance(getattr(layer, "layers", None), list):
                containers.add(str(layer.name))
                stack.append(layer)
            else:
                layers[str(layer.name)] = type(layer).__name__
    return layers, containers


class LayerNames:
    """Keras layer names from TensorFlow op names such as ``normalization_1/dense_1_2/MatMul``.

    Tracing a Keras 3 model makes every name scope unique with a ``_N`` suffix even on its first
    use (layer ``dense`` is scope ``dense_1``, layer ``dense_1`` is ``dense_1_2``): the suffix
    is dropped once when the model's own scope shows it, else names are taken as they are."""

    def __init__(self, model_name: str, layers: dict[str, str], containers: set[str]) -> None:
        self.model_name, self.layers, self.containers = model_name, layers, containers

    def _scope(self, component: str, uniquified: bool) -> str:
        return _UNIQUE_SUFFIX.sub("", component, count=1) if uniquified else component

    def of(self, name: str) -> str | None:
        """The layer an op name belongs to, or None (an op no layer scopes, a constant)."""
        parts = name.split(":")[0].split("/")
        first = parts[0]
        uniquified = first != self.model_name and self._scope(first, True) == self.model_name
        if self._scope(first, uniquified) == self.model_name:
            parts = parts[1:]  # the model's own scope
        for component in parts[:-1] if len(parts) > 1 else parts:
            scope = self._scope(component, uniquified)
            if scope in self.layers:
                return scope
            if scope not in self.containers:
                return None  # an op (or a constant) directly under a model's scope
        return None

    def of_node(self, node: GraphNode) -> list[str]:
        found = [self.of(n) for name in node.names for n in name.split(";") if n]
        if not any(found):
            found = [next((layer for w in node.weights if (layer := self.of(w))), None)]
        return list(dict.fromkeys(f for f in found if f))


def group(nodes: list[GraphNode], names: LayerNames) -> list[Group]:
    """The ops of ``nodes`` (in graph order) grouped by Keras layer, in graph order."""
    owner: dict[str, list[str]] = {}
    for node in nodes:  # producers come first: an op no layer names joins its producer's layer
        layers = names.of_node(node)
        if not layers:
            layers = next((owner[i] for i in node.inputs if owner.get(i)), [])
        owner[node.key] = layers
    parent: dict[str, str] = {}  # union-find over layer names and op keys

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for node in nodes:
        for layer in owner[node.key]:
            parent[find("op:" + node.key)] = find("layer:" + layer)
    members: dict[str, list[GraphNode]] = {}
    for node in nodes:
        members.setdefault(find("op:" + node.key), []).append(node)
    groups = []
    for ops in members.values():
        layers = list(dict.fromkeys(layer for op in ops for layer in owner[op.key]))
        label = "+".join(layers) if layers else ops[0].key.split(";")[0].split(":")[0].split("/")[-1]
        groups.append(
            Group(
                label=label,
                layers=tuple(layers),
                nodes=tuple(op.key for op in ops),
                preprocessing=any(names.layers.get(layer) in PREPROCESSING for layer in layers),
            )
        )
    return groups


def sensitivity_rows(n: int, row_size: int = 1) -> np.ndarray:
    """Evenly spaced row indices of ``n``: at most ``SENSITIVITY_SAMPLES``, and at most
    ``SENSITIVITY_VALUES`` input values in all (rows of ``row_size`` values), at least
    ``MIN_SENSITIVITY_SAMPLES``. A ranking run costs about rows x input size: 170 images of
    64x64x3 are 2^21 values, 512 rows of 64 digits' pixels 2^15. Decided from shapes, never
    from timings: the same export ranks on the same rows."""
    cap = max(MIN_SENSITIVITY_SAMPLES, min(SENSITIVITY_SAMPLES, SENSITIVITY_VALUES // max(1, row_size)))
    return np.unique(np.linspace(0, n - 1, min(n, cap)).round().astype(int))


@dataclass(frozen=True)
class Ranking:
    """Groups, most sensitive first, with their scores, and what ranking them cost: ``runs``
    quantized models measured on ``rows`` parity rows (0: reused from another format)."""

    ranked: list[tuple[Group, float]]
    runs: int
    rows: int
    seconds: float
    reused: int = 0  # groups scored from another format's ranking

    def scores(self) -> dict[str, float]:
        """Each Keras layer's score (a fused group's score for each of its layers). Another
        format ranks by these where its groups name the same layers: the order is what
        carries over (the two quantizers' output errors are of one kind, not one scale), and
        an unrefined run's share is an estimate either way."""
        return {layer: score for g, score in self.ranked for layer in g.layers}

    def describe(self) -> str:
        text = (
            f"ranked {len(self.ranked)} layer group(s) in {self.seconds:.1f} s "
            f"({self.runs} quantized run(s) on {self.rows} row(s)"
        )
        if self.reused:
            text += f"; {self.reused} scored from the other format's ranking"
        return text + ")"


def _ordered(groups: list[Group], scores: list[float]) -> list[tuple[Group, float]]:
    """Preprocessing first, then by score, largest first; ties keep graph order."""
    keyed = sorted(
        zip(groups, scores, range(len(groups)), strict=True),
        key=lambda t: (not t[0].preprocessing, -t[1], t[2]),
    )
    return [(g, score) for g, score, _ in keyed]


def rank(
    groups: list[Group],
    quantizer: Quantizer,
    run: Callable[[bytes], np.ndarray],
    rows: int = 0,
    known: dict[str, float] | None = None,
) -> Ranking:
    """Each group with the mean squared change of the model's output when it alone is
    quantized, largest first; preprocessing groups before all others. Ties keep graph order.

    Up to ``CHUNKED_ABOVE`` groups each is measured. Above, the cost grows with the square
    root of the layer count, not with it: the groups are cut into runs of ~sqrt(n) consecutive
    ones (a network's blocks), each run is measured quantized alone, and the groups of the
    ``REFINED_CHUNKS`` most sensitive runs are measured one by one; every other group is
    scored by its run's share (its run's score over its size). EfficientNetB0's 173 groups:
    13 + 42 runs instead of 173.

    ``known``: layer scores another format measured on the same rows (the same Keras layers).
    A group naming a scored layer takes the largest of its layers' scores; only the others
    (ops no layer of the other format names: an input transpose, a converter's glue) are
    measured, as above. Ranked last unmeasured, one such group kept a MobileNetV3Small
    failing with all its other groups in float."""
    started = time.perf_counter()
    reference = run(quantizer.only([])).astype(np.float64)
    runs = 0

    def score(nodes: Sequence[str], label: str) -> float | None:
        """None when the quantizer or the engine refuses: one group is then ranked last; a
        run of groups is measured group by group instead."""
        nonlocal runs
        runs += 1
        try:
            out = run(quantizer.only(nodes)).astype(np.float64)
            return float(np.mean((out - reference) ** 2))
        except Exception as exc:  # a converter or engine refusing one group: rank it last
            logger.debug("sensitivity of %s not measured: %s", label, exc)
            return None

    scores = [0.0] * len(groups)
    todo: list[int] = []
    for i, g in enumerate(groups):
        reused = [known[layer] for layer in g.layers if known and layer in known]
        if reused:
            scores[i] = max(reused)
        else:
            todo.append(i)
    if len(todo) <= CHUNKED_ABOVE:
        for i in todo:
            scores[i] = score(groups[i].nodes, groups[i].label) or 0.0
    else:
        size = int(np.ceil(np.sqrt(len(todo))))
        chunks = [todo[i : i + size] for i in range(0, len(todo), size)]
        chunk_scores = [
            score([k for i in c for k in groups[i].nodes], f"groups {c[0]}-{c[-1]}") for c in chunks
        ]
        for c, total in zip(chunks, chunk_scores, strict=True):
            for i in c:
                scores[i] = (total or 0.0) / len(c)
        top = sorted(range(len(chunks)), key=lambda j: (-(chunk_scores[j] or 0.0), j))[:REFINED_CHUNKS]
        failed = [j for j, c in enumerate(chunks) if chunk_scores[j] is None]
        for j in [*top, *(j for j in failed if j not in top)]:  # a run that failed: one by one
            for i in chunks[j]:
                scores[i] = score(groups[i].nodes, groups[i].label) or 0.0
    reused = len(groups) - len(todo)
    return Ranking(_ordered(groups, scores), runs, rows, time.perf_counter() - started, reused)


def covers(groups: list[Group], known: dict[str, float]) -> bool:
    """Whether ``known`` (another format's layer scores) names a layer of at least half of
    ``groups``: worth reusing, measuring only the rest."""
    named = sum(any(layer in known for layer in g.layers) for g in groups)
    return bool(known) and named * 2 >= len(groups)


def sizes(preprocessing: int, total: int) -> list[int]:
    """How many groups each doubling candidate keeps in float: the preprocessing alone, then
    1, 2, 4, ... more, then all but one (every group in float would be fp32)."""
    out = [preprocessing] if preprocessing else []
    step = 1
    while preprocessing + step < total:
        out.append(preprocessing + step)
        step *= 2
    if total - 1 > (out[-1] if out else 0):
        out.append(total - 1)
    return [s for s in out if 0 < s < total]


def search(
    order: list[Group],
    quantize: Callable[[list[str]], bytes],
    gate: Callable[[bytes], Parity | None],
    max_attempts: int = MAX_ATTEMPTS,
    progress: Callable[[str], None] | None = None,
) -> Outcome:
    """Keep the first k groups of ``order`` in float for k from :func:`sizes` until ``gate``
    passes the bytes, then bisect between the last k that failed and the first that passed.
    ``gate`` returns None for bytes that could not be loaded (counted as a failed attempt)."""
    attempts: list[FallbackAttempt] = []
    passed: dict[int, bytes] = {}

    def attempt(k: int) -> bool:
        nodes = [key for g in order[:k] for key in g.nodes]
        try:
            data = quantize(nodes)
            result = gate(data)
        except Exception as exc:  # the quantizer failing on one candidate: the next may not
            logger.warning("mixed precision: keeping %d group(s) in float failed: %s", k, exc)
            result = None
        ok = result is not None and result.passed
        attempts.append(
            FallbackAttempt(
                float_groups=k,
                float_ops=len(nodes),
                label_agreement=None if result is None else result.label_agreement,
                max_abs_diff=None if result is None else result.max_abs_diff,
                passed=ok,
            )
        )
        message = (
            f"{k} of {len(order)} layer group(s) in float ({', '.join(g.label for g in order[:k][:4])}"
            f"{', ...' if k > 4 else ''}): "
            + ("not loadable" if result is None else f"agreement {result.label_agreement:.2%}, "
               f"max diff {result.max_abs_diff:.3g}, {'passed' if ok else 'failed'}")
        )  # fmt: skip
        logger.info("mixed precision: %s", message)
        if progress is not None:
            progress(message)
        if ok:
            passed[k] = data
        return ok

    preprocessing = sum(1 for g in order if g.preprocessing)
    low = 0  # the most groups known to fail (0: the full-int8 variant)
    high = None
    for k in sizes(preprocessing, len(order)):
        if len(attempts) >= max_attempts:
            break
        if attempt(k):
            high = k
            break
        low = k
    while high is not None and high - low > 1 and len(attempts) < max_attempts:
        middle = (low + high) // 2
        if attempt(middle):
            high = middle
        else:
            low = middle
    if high is None:
        return Outcome(data=None, groups=(), attempts=tuple(attempts))
    return Outcome(data=passed[high], groups=tuple(order[:high]), attempts=tuple(attempts))


def run_on(fmt: str, xs: tuple[np.ndarray, ...], input_names: Sequence[str]) -> Callable[[bytes], Any]:
    """A function that runs float-IO model bytes of ``fmt`` on ``xs`` in one call."""
    from keras_edge.runtime.engines import make_engine

    def run(data: bytes) -> np.ndarray:
        engine = make_engine(fmt, data, "cpu", 1, list(input_names))
        return np.asarray(engine.run_many(list(xs)), dtype=np.float32)

    return run


def fall_back(
    quantizer: Quantizer,
    model: Any,
    xs: tuple[np.ndarray, ...],
    input_names: Sequence[str],
    gate: Callable[[bytes], Parity | None],
    progress: Callable[[str], None] | None = None,
    scores: dict[str, float] | None = None,
) -> tuple[Outcome, Ranking]:
    """Group ``quantizer``'s ops by the layers of the Keras ``model`` it was made from, rank the
    groups on a few rows of ``xs`` (the parity inputs, one array per input), or by ``scores``
    (another format's layer scores) where they cover the groups, and search. Returns the
    outcome and the ranking (whose scores another format may reuse)."""
    nodes = quantizer.nodes()
    layers, containers = keras_layers(model)
    groups = group(nodes, LayerNames(str(model.name), layers, containers))
    known = scores if scores and covers(groups, scores) else None
    if progress is not None:
        progress(f"ranking {len(groups)} layer group(s) ({len(nodes)} ops) by sensitivity")
    index = sensitivity_rows(len(xs[0]), int(sum(np.prod(x.shape[1:]) for x in xs)))
    run = run_on(quantizer.fmt, tuple(x[index] for x in xs), input_names)
    ranking = rank(groups, quantizer, run, rows=len(index), known=known)
    if progress is not None:
        progress(ranking.describe())
    logger.info(
        "mixed precision, %s: %s; most sensitive first: %s",
        quantizer.fmt,
        ranking.describe(),
        ", ".join(f"{g.label} {score:.3g}" for g, score in ranking.ranked[:8]),
    )
    outcome = search([g for g, _ in ranking.ranked], quantizer.quantize, gate, progress=progress)
    return replace(outcome, ops=len(nodes)), ranking
