"""The two inference engines behind the runtime: ONNX Runtime and LiteRT.

Each engine is imported lazily, inside the constructor, so ``import keras_edge.runtime`` costs only
numpy.
An engine exposes ``run(x)``: ``x`` already validated and in the engine's input dtype, the
result the engine's raw output. ``quantization`` describes integer IO, if any, so that the
runtime can quantize inputs and dequantize outputs.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from keras_edge.runtime.errors import ArtifactError, BackendUnavailableError, DeviceUnavailableError

logger = logging.getLogger(__name__)

# The module each format needs, and the pip extra that installs it.
ENGINE_MODULES = {"onnx": "onnxruntime", "tflite": "ai_edge_litert"}
ENGINE_EXTRAS = {"onnx": "onnx", "tflite": "litert"}

# ONNX Runtime execution providers by device name.
ONNX_PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "directml": "DmlExecutionProvider",
    "qnn": "QNNExecutionProvider",
}


def engine_installed(fmt: str) -> bool:
    """True when the engine for ``fmt`` ('onnx' or 'tflite') can be imported here."""
    try:
        return importlib.util.find_spec(ENGINE_MODULES[fmt]) is not None
    except ValueError:  # present in sys.modules as None: import blocked
        return False


def missing_engine(fmt: str) -> BackendUnavailableError:
    return BackendUnavailableError(
        f"The {fmt} variants need the Python package {ENGINE_MODULES[fmt]!r}, which is not "
        f"installed; install it with: pip install 'keras-edge[{ENGINE_EXTRAS[fmt]}]'"
    )


# The name of the in-graph decision output of ``export --with-decision`` artifacts.
CLASS_OUTPUT = "class"

# Arrays of at most this many values take plain-Python paths: at that size numpy's fixed cost
# per operation (~1 us here) outweighs the work, and is most of the runtime's overhead.
SMALL = 32
# Engine threads when the caller gives none, the same for both engines: one. A device or a
# service scores a few samples per call, where a thread pool costs more than it gives, and
# a classifier shared by a server's worker threads must not oversubscribe the cores.
DEFAULT_THREADS = 1


@dataclass(frozen=True)
class Quantization:
    """Affine integer quantization of one tensor: real = (q - zero_point) * scale.

    Arithmetic is float64, rounded once to float32, in the numpy and the plain-Python paths
    alike, so a value quantizes and dequantizes the same whatever the batch size.
    """

    scale: float
    zero_point: int
    dtype: np.dtype
    low: int = field(init=False)
    high: int = field(init=False)

    def __post_init__(self) -> None:
        info = np.iinfo(self.dtype)
        object.__setattr__(self, "low", int(info.min))
        object.__setattr__(self, "high", int(info.max))

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """round(x / scale) + zero_point, halves to even, clipped to the integer range."""
        q = np.rint(x.astype(np.float64) / self.scale) + self.zero_point
        return np.clip(q, self.low, self.high).astype(self.dtype)

    def quantize_values(self, values: list[float], shape: tuple[int, ...]) -> np.ndarray:
        """:meth:`quantize` for a few Python floats (Python's ``round`` also rounds halves to
        even), at a fraction of numpy's fixed cost per operation."""
        lo, hi, scale, zp = self.low, self.high, self.scale, self.zero_point
        q = [round(v / scale) + zp for v in values]
        if min(q) < lo or max(q) > hi:
            q = [min(hi, max(lo, v)) for v in q]
        return np.array(q, dtype=self.dtype).reshape(shape)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        if q.size <= SMALL:
            scale, zp = self.scale, self.zero_point
            values = [(v - zp) * scale for v in q.ravel().tolist()]
            return np.array(values, dtype=np.float32).reshape(q.shape)
        return ((q.astype(np.float64) - self.zero_point) * self.scale).astype(np.float32)


class OnnxEngine:
    """An ONNX Runtime session with one output and one or more named inputs."""

    format = "onnx"

    def __init__(
        self,
        model: bytes,
        device: str = "cpu",
        threads: int | None = None,
        input_names: Sequence[str] | None = None,
    ) -> None:
        if not engine_installed("onnx"):
            raise missing_engine("onnx")
        import onnxruntime as ort

        if device not in ONNX_PROVIDERS:
            raise DeviceUnavailableError(
                f"Expected device in {sorted(ONNX_PROVIDERS)} for ONNX Runtime, got {device!r}"
            )
        wanted = ONNX_PROVIDERS[device]
        available = ort.get_available_providers()
        if wanted not in available:
            raise DeviceUnavailableError(
                f"Device {device!r} needs ONNX Runtime's {wanted}, but this onnxruntime build "
                f"offers only {available} (for CUDA/TensorRT: pip install 'keras-edge[onnx-gpu]', "
                f"which replaces onnxruntime); available here: {available_devices()}"
            )
        self.model, self.threads = model, threads  # to rebuild it elsewhere (pickling)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = DEFAULT_THREADS if threads is None else threads
        options.inter_op_num_threads = 1
        providers = [wanted] if wanted == "CPUExecutionProvider" else [wanted, "CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(model, sess_options=options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own untyped errors for corrupt files
            raise ArtifactError(f"ONNX Runtime could not load the artifact: {exc}") from exc
        # ONNX Runtime falls back to CPU silently: check what the session really uses.
        self.providers: list[str] = list(self.session.get_providers())
        if self.providers[0] != wanted:
            raise DeviceUnavailableError(
                f"Asked ONNX Runtime for {wanted} (device {device!r}), but the session runs on "
                f"{self.providers}"
            )
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        names = [i.name for i in inputs]
        if input_names is not None and sorted(input_names) != sorted(names):
            raise ArtifactError(f"Expected an ONNX model with inputs {list(input_names)}, got {names}")
        # A --with-decision artifact adds a "class" output: the runtime decides on the first
        # (its threshold can be changed at run time), and ONNX Runtime skips what is not asked.
        outputs = [o for o in outputs if o.name != CLASS_OUTPUT]
        if len(outputs) != 1:
            raise ArtifactError(f"Expected an ONNX model with 1 output, got {len(outputs)}")
        self.input_names: list[str] = list(input_names) if input_names is not None else names
        self.input_name: str = self.input_names[0]
        self.output_names: list[str] = [outputs[0].name]
        self.input_quantizations: list[Quantization | None] = [None] * len(self.input_names)
        self.input_quantization: Quantization | None = None
        self.output_quantization: Quantization | None = None

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(self.output_names, {self.input_name: x})[0]

    run_transient = run  # ONNX Runtime allocates a fresh output on every call anyway

    def run_many(self, xs: Sequence[np.ndarray]) -> np.ndarray:
        """Run with one array per input, in the order of ``input_names``."""
        return self.session.run(self.output_names, dict(zip(self.input_names, xs, strict=True)))[0]


def _tflite_input_name(name: str) -> str:
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

        from keras_edge.runtime.embedded import check_tflite_structure

        check_tflite_structure(model)
        try:
            probe = Interpreter(model_content=model, num_threads=self._threads)
            probe.allocate_tensors()
            # One call on zeros: a damaged file that loads can still fail to run (a constant
            # without data, a tensor without memory); it fails here, as a typed error.
            for detail in probe.get_input_details():
                probe.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
            probe.invoke()
            for detail in probe.get_output_details():
                probe.get_tensor(detail["index"])
        except Exception as exc:  # LiteRT raises ValueError/RuntimeError for corrupt files
            raise ArtifactError(f"LiteRT could not load and run the artifact: {exc}") from exc
        self.providers = ["LiteRT CPU (XNNPACK)"]
        in_details = probe.get_input_details()
        out_details = [d for d in probe.get_output_details() if d["name"] != CLASS_OUTPUT]
        if len(out_details) != 1:
            raise ArtifactError(f"Expected a TFLite model with 1 output, got {len(out_details)}")
        if input_names is not None and len(input_names) > 1:
            # Several inputs: the converter orders them its own way; match them by name.
            by_name = {_tflite_input_name(d["name"]): d for d in in_details}
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

    def _interpreter(self) -> _Interpreter:
        """This thread's interpreter, made on its first call."""
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_content=self.model, num_threads=self._threads)
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


LITERT_ACCELERATORS = ("gpu", "npu")  # LiteRT's CompiledModel; the CPU keeps the Interpreter


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
        try:
            self._compiled = CompiledModel.from_buffer(model, hardware_accel=accelerator)
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
        outs = list(self._compiled.get_output_tensor_details(signature))
        order = list(input_names) if input_names is not None and len(ins) > 1 else ins
        self._positions = [ins.index(name) for name in order]
        self._out = outs.index(next(name for name in outs if name != CLASS_OUTPUT))
        self._shapes: list[tuple[int, ...]] = []
        self._lock = threading.Lock()
        self.providers = [f"LiteRT CompiledModel {device.upper()}"]
        out = next(d for d in cpu.interpreter.get_output_details() if d["name"] != CLASS_OUTPUT)
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


def available_devices() -> list[str]:
    """The ``device=`` values that can work here: cpu, ONNX Runtime's accelerators in this
    build, and LiteRT's gpu/npu when ai-edge-litert is installed (whether the hardware is there
    shows only when a model is compiled for it)."""
    found = ["cpu"]
    if engine_installed("onnx"):
        import onnxruntime as ort

        providers = set(ort.get_available_providers())
        found += [d for d, p in ONNX_PROVIDERS.items() if d != "cpu" and p in providers]
    if engine_installed("tflite"):
        found += [f"{d} (LiteRT, untried)" for d in LITERT_ACCELERATORS]
    return found


def make_engine(
    fmt: str,
    model: bytes,
    device: str,
    threads: int | None,
    input_names: Sequence[str] | None = None,
) -> OnnxEngine | LiteRTEngine | CompiledModelEngine:
    """Build the engine for an artifact of format ``fmt``; ``input_names`` in the manifest's
    order (the engine matches the artifact's inputs to them by name)."""
    if fmt == "onnx":
        return OnnxEngine(model, device=device, threads=threads, input_names=input_names)
    if fmt == "tflite" and device in LITERT_ACCELERATORS:
        return CompiledModelEngine(model, device=device, threads=threads, input_names=input_names)
    if fmt == "tflite":
        return LiteRTEngine(model, device=device, threads=threads, input_names=input_names)
    raise ArtifactError(f"Expected an artifact format in {sorted(ENGINE_MODULES)}, got {fmt!r}")
