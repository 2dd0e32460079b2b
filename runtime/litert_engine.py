"""The LiteRT engines: the ``Interpreter`` on the CPU, one per calling thread, and the
``CompiledModel`` on an accelerator (gpu, npu), strictly. ai-edge-litert is imported when an
engine is built."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from keras_edge.runtime.embedded import check_tflite_structure
from keras_edge.runtime.engine_base import (
    DECIDED_OUTPUT,
    DEFAULT_THREADS,
    LITERT_ACCELERATORS,
    Quantization,
    available_devices,
    engine_installed,
    is_class_output,
    missing_engine,
)
from keras_edge.runtime.errors import ArtifactError, DeviceUnavailableError, plain

logger = logging.getLogger(__name__)


def tflite_input_name(name: str) -> str:
    """The Keras input name inside a TFLite tensor name: ``serving_default_tokens:0``."""
    return name.removeprefix("serving_default_").rsplit(":", 1)[0]


class _Interpreter:
    """One LiteRT interpreter and its buffers, re-allocated only when the batch size changes.
    Used by one thread at a time: LiteRT interpreters are not thread-safe."""

    def __init__(self, interpreter: Any, in_details: list[dict], out_index: int) -> None:
        self.interpreter = interpreter  # allocated
        self._ins = [d["index"] for d in in_details]
        self._shapes = [tuple(int(v) for v in d["shape"]) for d in in_details]
        self._in, self._shape = self._ins[0], self._shapes[0]
        self._out = out_index
        self._set = self.interpreter.set_tensor
        self._invoke = self.interpreter.invoke
        self._view = self.interpreter.tensor(self._out)

    def _resize(self, shape: tuple[int, ...]) -> None:
        logger.debug("LiteRT: resizing input from %s to %s", self._shape, shape)
        self.interpreter.resize_tensor_input(self._in, shape, strict=False)
        self.interpreter.allocate_tensors()
        self._shape = self._shapes[0] = shape
        self._view = self.interpreter.tensor(self._out)  # buffers move on allocation

    def run_transient(self, x: np.ndarray) -> np.ndarray:
        if x.shape != self._shape:
            self._resize(x.shape)
        self._set(self._in, x)
        self._invoke()
        return self._view()

    def run_many(self, xs: Sequence[np.ndarray]) -> np.ndarray:
        shapes = [x.shape for x in xs]
        if shapes != self._shapes:
            for index, shape in zip(self._ins, shapes, strict=True):
                self.interpreter.resize_tensor_input(index, shape, strict=False)
            self.interpreter.allocate_tensors()
            self._shapes = shapes
            self._shape = shapes[0]
            self._view = self.interpreter.tensor(self._out)
        for index, x in zip(self._ins, xs, strict=True):
            self._set(index, x)
        self._invoke()
        return self._view().copy()


class LiteRTEngine:
    """LiteRT on the CPU: one interpreter per thread that calls it (an interpreter is not
    thread-safe, and its output is a view of its own buffer), each made on the thread's first
    call from the same bytes. One thread pays nothing for this; many run in parallel (LiteRT
    releases the GIL while it invokes), at the memory of one interpreter each."""

    format = "tflite"

    def __init__(
        self,
        model: bytes,
        device: str = "cpu",
        threads: int | None = None,
        input_names: Sequence[str] | None = None,
    ) -> None:
        if not engine_installed("tflite"):
            raise missing_engine("tflite")
        if device != "cpu":
            raise DeviceUnavailableError(
                f"Expected device 'cpu' for LiteRT's Interpreter (gpu and npu go through its "
                f"CompiledModel; ONNX Runtime's accelerators need an onnx variant), got {device!r}"
            )
        self.model, self.threads = model, threads  # to rebuild it elsewhere (pickling)
        self._threads = DEFAULT_THREADS if threads is None else threads
        from ai_edge_litert.interpreter import Interpreter

        check_tflite_structure(model)
        self._options: dict[str, Any] = {}  # the Interpreter's, for every thread's copy
        self.providers = ["LiteRT CPU (XNNPACK)"]
        try:
            probe = self._probe(Interpreter)
        except Exception as exc:  # LiteRT raises ValueError/RuntimeError for corrupt files
            if "XNNPACK" not in str(exc):
                raise ArtifactError(f"LiteRT could not load and run the artifact: {exc}") from exc
            # XNNPACK accepts some graphs it then fails to prepare (a full-int8 unrolled LSTM:
            # "failed to create XNNPACK runtime"); LiteRT's own kernels run them.
            from ai_edge_litert.interpreter import OpResolverType

            self._options = {
                "experimental_op_resolver_type": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
            }
            self.providers = ["LiteRT CPU (builtin kernels, XNNPACK refused the graph)"]
            logger.warning(
                "LiteRT's XNNPACK could not prepare this model (%s): running it on LiteRT's "
                "builtin kernels, which are slower", plain(" ".join(str(exc).split())),
            )  # fmt: skip
            try:
                probe = self._probe(Interpreter)
            except Exception as again:  # as above
                raise ArtifactError(f"LiteRT could not load and run the artifact: {again}") from again
        in_details = probe.get_input_details()
        out_details = [d for d in probe.get_output_details() if not _is_class(d)]
        if len(out_details) != 1:
            raise ArtifactError(f"Expected a TFLite model with 1 output, got {len(out_details)}")
        if input_names is not None and len(input_names) > 1:
            # Several inputs: the converter orders them its own way; match them by name.
            by_name = {tflite_input_name(d["name"]): d for d in in_details}
            if sorted(by_name) != sorted(input_names):
                raise ArtifactError(
                    f"Expected a TFLite model with inputs {list(input_names)}, got {sorted(by_name)}"
                )
            in_details = [by_name[name] for name in input_names]
        elif len(in_details) != 1:
            raise ArtifactError(f"Expected a TFLite model with 1 input, got {len(in_details)}")
        self._in_details, self._out_index = in_details, out_details[0]["index"]
        self.input_quantizations = [self._quantization(d) for d in in_details]
        self.input_quantization = self.input_quantizations[0]
        self.output_quantization = self._quantization(out_details[0])
        self._local = threading.local()
        self._local.interpreter = _Interpreter(probe, in_details, self._out_index)  # this thread's

    def _probe(self, interpreter_class: Any) -> Any:
        """A new interpreter, allocated and run once on zeros: a damaged file that loads can
        still fail to run (a constant without data, a tensor without memory); it fails here."""
        probe = interpreter_class(model_content=self.model, num_threads=self._threads, **self._options)
        probe.allocate_tensors()
        for detail in probe.get_input_details():
            probe.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
        probe.invoke()
        for detail in probe.get_output_details():
            probe.get_tensor(detail["index"])
        return probe

    def _interpreter(self) -> _Interpreter:
        """This thread's interpreter, made on its first call."""
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_content=self.model, num_threads=self._threads, **self._options)
        interpreter.allocate_tensors()
        mine = _Interpreter(interpreter, self._in_details, self._out_index)
        self._local.interpreter = mine
        logger.debug("LiteRT: a new interpreter for thread %s", threading.current_thread().name)
        return mine

    def _mine(self) -> _Interpreter:
        try:
            return self._local.interpreter
        except AttributeError:
            return self._interpreter()

    @property
    def interpreter(self) -> Any:
        """The calling thread's LiteRT ``Interpreter``."""
        return self._mine().interpreter

    def resize(self, shape: tuple[int, ...]) -> None:
        """Size the calling thread's interpreter for ``shape``, if it is not already."""
        mine = self._mine()
        if shape != mine._shape:
            mine._resize(shape)

    @staticmethod
    def _quantization(details: dict) -> Quantization | None:
        """Affine quantization of an integer tensor; None for floats and for plain integers
        (token ids: scale 0)."""
        dtype = np.dtype(details["dtype"])
        scale, zero_point = details["quantization"]
        if dtype.kind not in "iu" or not scale:
            return None
        return Quantization(scale=float(scale), zero_point=int(zero_point), dtype=dtype)

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.run_transient(x).copy()

    def run_transient(self, x: np.ndarray) -> np.ndarray:
        """Like :meth:`run`, but the result is a view of this thread's interpreter's output
        buffer, valid until this thread's next call: no copy, for callers that reduce it at
        once (``predict``)."""
        try:
            mine = self._local.interpreter
        except AttributeError:
            mine = self._interpreter()
        return mine.run_transient(x)

    def run_many(self, xs: Sequence[np.ndarray]) -> np.ndarray:
        """Run with one array per input, in the order of the manifest's inputs."""
        return self._mine().run_many(xs)


class CompiledModelEngine:
    """LiteRT's ``CompiledModel`` on an accelerator (``gpu``: WebGPU/OpenCL/Metal, ``npu``:
    the vendor's dispatch), strictly: the accelerator alone, no CPU fallback, so that a model
    it cannot run whole is refused rather than run on the CPU unnoticed. The Interpreter stays
    the CPU path (measured 2.3 us a call against CompiledModel's 5.2 on the seed model). One
    compiled model per engine; calls from several threads take turns (a lock)."""

    format = "tflite"

    def __init__(
        self,
        model: bytes,
        device: str = "gpu",
        threads: int | None = None,
        input_names: Sequence[str] | None = None,
    ) -> None:
        if not engine_installed("tflite"):
            raise missing_engine("tflite")
        if device not in (*LITERT_ACCELERATORS, "cpu"):
            raise DeviceUnavailableError(
                f"Expected a LiteRT accelerator from {LITERT_ACCELERATORS}, got {device!r}"
            )
        # The Interpreter reads what CompiledModel does not report (quantization), and checks
        # the artifact as the CPU path does.
        cpu = LiteRTEngine(model, "cpu", threads, input_names)
        self.model, self.threads = model, threads
        self.input_quantizations = cpu.input_quantizations
        self.input_quantization = cpu.input_quantization
        self.output_quantization = cpu.output_quantization
        from ai_edge_litert.compiled_model import CompiledModel
        from ai_edge_litert.hardware_accelerator import HardwareAccelerator

        accelerator = getattr(HardwareAccelerator, device.upper())
        bare = without_decided(model)  # the decision outputs for apps: ops a GPU may not take
        try:
            self._compiled = CompiledModel.from_buffer(bare, hardware_accel=accelerator)
        except Exception as exc:  # LiteRT raises RuntimeError naming a C++ source line
            reason = " ".join(str(exc).split())[:300]
            raise DeviceUnavailableError(
                f"Asked LiteRT for its {device.upper()} accelerator, which could not run this "
                f"model here ({reason}); available here: {available_devices()}"
            ) from exc
        if not self._compiled.is_fully_accelerated():
            raise DeviceUnavailableError(
                f"LiteRT's {device.upper()} accelerator runs only part of this model; refusing "
                f"to run the rest on the CPU unnoticed (load with device='cpu')"
            )
        signature = next(iter(self._compiled.get_signature_list()))
        ins = list(self._compiled.get_input_tensor_details(signature))
        out_details = self._compiled.get_output_tensor_details(signature)
        outs = list(out_details)
        order = list(input_names) if input_names is not None and len(ins) > 1 else ins
        self._positions = [ins.index(name) for name in order]
        probabilities = (n for n in outs if not _is_class({**out_details[n], "name": n}))
        self._out = outs.index(next(probabilities))
        self._shapes: list[tuple[int, ...]] = []
        self._lock = threading.Lock()
        self.providers = [f"LiteRT CompiledModel {device.upper()}"]
        out = next(d for d in cpu.interpreter.get_output_details() if not _is_class(d))
        self._per_sample, self._out_dtype = int(np.prod(out["shape"][1:])), np.dtype(out["dtype"])

    def run_many(self, xs: Sequence[np.ndarray]) -> np.ndarray:
        with self._lock:
            shapes = [x.shape for x in xs]
            if shapes != self._shapes:
                for position, shape in zip(self._positions, shapes, strict=True):
                    self._compiled.resize_input_tensor(position, list(shape))
                self._buffers = (self._compiled.create_input_buffers(0),
                                 self._compiled.create_output_buffers(0))  # fmt: skip
                self._shapes = shapes
            inputs, outputs = self._buffers
            for position, x in zip(self._positions, xs, strict=True):
                inputs[position].write(np.ascontiguousarray(x))
            self._compiled.run_by_index(0, inputs, outputs)
            n = len(xs[0])
            return outputs[self._out].read(n * self._per_sample, self._out_dtype).reshape(n, -1)

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.run_many([x])

    run_transient = run  # a fresh array on every call


def without_decided(model: bytes) -> bytes:
    """``model`` without its decision outputs for MediaPipe (``keras_edge_decision*``) and the
    ops only they need, for an accelerator: they are boolean and index ops (GREATER, ONE_HOT,
    SELECT_V2...) that a GPU or NPU may not run, and the runtime never reads them. ``model``
    itself when it has none."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    m = schema.ModelT.InitFromPackedBuf(bytearray(model), 0)
    graph = m.subgraphs[0]

    def decided(index: int) -> bool:
        name = graph.tensors[index].name
        name = name.decode("utf-8") if isinstance(name, bytes) else str(name)
        return name == DECIDED_OUTPUT or name.startswith(DECIDED_OUTPUT + "/")

    kept = [i for i in graph.outputs if not decided(i)]
    if len(kept) == len(graph.outputs):
        return model
    graph.outputs = kept
    producer = {int(t): k for k, op in enumerate(graph.operators) for t in op.outputs}
    needed: set[int] = set()
    stack = list(kept)
    while stack:
        k = producer.get(int(stack.pop()))
        if k is not None and k not in needed:
            needed.add(k)
            stack += [t for t in graph.operators[k].inputs if t >= 0]
    graph.operators = [op for k, op in enumerate(graph.operators) if k in needed]
    for sig in m.signatureDefs or []:
        sig.outputs = [entry for entry in sig.outputs or [] if not decided(entry.tensorIndex)]
    builder = flatbuffers.Builder(len(model) + 4096)
    builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _is_class(detail: dict[str, Any]) -> bool:
    """Whether an output (its details: a name and a dtype) is an in-graph class output."""
    return is_class_output(detail["name"], np.dtype(detail["dtype"]).name)
