"""The ONNX Runtime engine: one ``InferenceSession`` on the execution provider asked for,
checked after the session starts (ONNX Runtime falls back to the CPU silently). onnxruntime is
imported when an engine is built."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from keras_edge.runtime.engine_base import (
    DEFAULT_THREADS,
    ONNX_PROVIDERS,
    Quantization,
    available_devices,
    engine_installed,
    is_class_output,
    missing_engine,
)
from keras_edge.runtime.errors import ArtifactError, DeviceUnavailableError

logger = logging.getLogger(__name__)


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
        # A --with-decision artifact adds a "class" output (one "class_<head>" per head): the
        # runtime decides on the probabilities (its threshold can be changed at run time), and
        # ONNX Runtime skips what is not asked.
        outputs = [o for o in outputs if not is_class_output(o.name, o.type)]
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
