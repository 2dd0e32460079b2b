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
from collections.abc import Sequence
from dataclasses import dataclass, field

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
                f"offers only {available}"
            )
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads is not None:
            options.intra_op_num_threads = threads
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


class LiteRTEngine:
    """A LiteRT interpreter, re-allocated only when the batch size changes."""

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
        from ai_edge_litert.interpreter import Interpreter

        if device != "cpu":
            raise DeviceUnavailableError(
                f"Expected device 'cpu' for LiteRT variants (accelerator delegates are not "
                f"supported yet; use an onnx variant for accelerators), got {device!r}"
            )
        try:
            self.interpreter = Interpreter(model_content=model, num_threads=threads)
            self.interpreter.allocate_tensors()
        except Exception as exc:  # LiteRT raises ValueError/RuntimeError for corrupt files
            raise ArtifactError(f"LiteRT could not load the artifact: {exc}") from exc
        self.providers = ["LiteRT CPU (XNNPACK)"]
        in_details = self.interpreter.get_input_details()
        out_details = [
            d for d in self.interpreter.get_output_details() if d["name"] != CLASS_OUTPUT
        ]
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
        self._ins = [d["index"] for d in in_details]
        self._shapes = [tuple(int(v) for v in d["shape"]) for d in in_details]
        self._in, self._shape = self._ins[0], self._shapes[0]
        self._out = out_details[0]["index"]
        self.input_quantizations = [self._quantization(d) for d in in_details]
        self.input_quantization = self.input_quantizations[0]
        self.output_quantization = self._quantization(out_details[0])
        self._set = self.interpreter.set_tensor
        self._invoke = self.interpreter.invoke
        self._view = self.interpreter.tensor(self._out)

    @staticmethod
    def _quantization(details: dict) -> Quantization | None:
        """Affine quantization of an integer tensor; None for floats and for plain integers
        (token ids: scale 0)."""
        dtype = np.dtype(details["dtype"])
        scale, zero_point = details["quantization"]
        if dtype.kind not in "iu" or not scale:
            return None
        return Quantization(scale=float(scale), zero_point=int(zero_point), dtype=dtype)

    def resize(self, shape: tuple[int, ...]) -> None:
        """Size the interpreter for ``shape``, if it is not already."""
        if shape != self._shape:
            self._resize(shape)

    def _resize(self, shape: tuple[int, ...]) -> None:
        logger.debug("LiteRT: resizing input from %s to %s", self._shape, shape)
        self.interpreter.resize_tensor_input(self._in, shape, strict=False)
        self.interpreter.allocate_tensors()
        self._shape = self._shapes[0] = shape
        self._view = self.interpreter.tensor(self._out)  # buffers move on allocation

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.run_transient(x).copy()

    def run_transient(self, x: np.ndarray) -> np.ndarray:
        """Like :meth:`run`, but the result is a view of the interpreter's output buffer, valid
        until the next call: no copy, for callers that reduce it at once (``predict``)."""
        if x.shape != self._shape:
            self._resize(x.shape)
        self._set(self._in, x)
        self._invoke()
        return self._view()

    def run_many(self, xs: Sequence[np.ndarray]) -> np.ndarray:
        """Run with one array per input, in the order of the manifest's inputs."""
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


def make_engine(
    fmt: str,
    model: bytes,
    device: str,
    threads: int | None,
    input_names: Sequence[str] | None = None,
) -> OnnxEngine | LiteRTEngine:
    """Build the engine for an artifact of format ``fmt``; ``input_names`` in the manifest's
    order (the engine matches the artifact's inputs to them by name)."""
    if fmt == "onnx":
        return OnnxEngine(model, device=device, threads=threads, input_names=input_names)
    if fmt == "tflite":
        return LiteRTEngine(model, device=device, threads=threads, input_names=input_names)
    raise ArtifactError(f"Expected an artifact format in {sorted(ENGINE_MODULES)}, got {fmt!r}")
