"""What both inference engines share, and what can run here: the engine module each format
needs and the extra that installs it, the devices each engine offers, the quantization of an
integer tensor, and the constants of the fast paths. Imports no engine at import time."""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass, field

import numpy as np

from keras_edge.runtime.errors import BackendUnavailableError

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
LITERT_ACCELERATORS = ("gpu", "npu")  # LiteRT's CompiledModel; the CPU keeps the Interpreter


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


# The name of the in-graph decision output of ``export --with-decision`` artifacts; a model with
# several heads has one per head (but a regression head), ``class_<head name>``.
CLASS_OUTPUT = "class"
CLASS_OUTPUT_PREFIX = "class_"


def class_output_name(head_name: str | None) -> str:
    """The name of a head's in-graph class output: ``class`` for a model with one head."""
    return CLASS_OUTPUT if head_name is None else f"{CLASS_OUTPUT_PREFIX}{head_name}"


# The TFLite decision output written for MediaPipe (:mod:`keras_edge.exporter.platforms`): the
# decided class's probability at its index, 0 elsewhere; ``keras_edge_decision/<head>`` per head.
DECIDED_OUTPUT = "keras_edge_decision"


def decided_output_name(head_name: str | None) -> str:
    """The name of a head's TFLite decision output: ``keras_edge_decision`` for one head."""
    return DECIDED_OUTPUT if head_name is None else f"{DECIDED_OUTPUT}/{head_name}"


def is_class_output(name: str, dtype: str) -> bool:
    """Whether an artifact's output is one the runtime leaves alone: an in-graph class output
    (``--with-decision``, int64) or a TFLite decision output for MediaPipe (float32). The runtime
    decides on the probability output, whose threshold can change at run time. Only those
    dtypes count, so that a probability output whose name happens to start with ``class_`` is
    never taken for one. ``dtype``: ONNX Runtime's type (``tensor(int64)``) or a numpy dtype's
    name (``int64``)."""
    if name == DECIDED_OUTPUT or name.startswith(DECIDED_OUTPUT + "/"):
        return dtype in ("tensor(float)", "float32")
    named = name == CLASS_OUTPUT or name.startswith(CLASS_OUTPUT_PREFIX)
    return named and dtype in ("tensor(int64)", "int64")


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
