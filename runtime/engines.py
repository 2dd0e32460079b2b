"""The two inference engines behind the runtime, ONNX Runtime and LiteRT, and
:func:`make_engine`, which builds the one an artifact needs.

Each engine is imported lazily, inside the constructor, so ``import keras_edge.runtime`` costs only
numpy.
An engine exposes ``run(x)``: ``x`` already validated and in the engine's input dtype, the
result the engine's raw output. ``quantization`` describes integer IO, if any, so that the
runtime can quantize inputs and dequantize outputs.

What both share is in :mod:`.engine_base`, the engines in :mod:`.onnx_engine` and
:mod:`.litert_engine`; their names are re-exported here.
"""

from __future__ import annotations

from collections.abc import Sequence

from keras_edge.runtime.engine_base import (
    CLASS_OUTPUT,
    CLASS_OUTPUT_PREFIX,
    DECIDED_OUTPUT,
    DEFAULT_THREADS,
    ENGINE_EXTRAS,
    ENGINE_MODULES,
    LITERT_ACCELERATORS,
    ONNX_PROVIDERS,
    SMALL,
    Quantization,
    available_devices,
    class_output_name,
    decided_output_name,
    engine_installed,
    is_class_output,
    missing_engine,
)
from keras_edge.runtime.errors import ArtifactError
from keras_edge.runtime.litert_engine import CompiledModelEngine, LiteRTEngine
from keras_edge.runtime.onnx_engine import OnnxEngine

__all__ = [
    "CLASS_OUTPUT",
    "CLASS_OUTPUT_PREFIX",
    "DECIDED_OUTPUT",
    "DEFAULT_THREADS",
    "ENGINE_EXTRAS",
    "ENGINE_MODULES",
    "LITERT_ACCELERATORS",
    "ONNX_PROVIDERS",
    "SMALL",
    "CompiledModelEngine",
    "LiteRTEngine",
    "OnnxEngine",
    "Quantization",
    "available_devices",
    "class_output_name",
    "decided_output_name",
    "engine_installed",
    "is_class_output",
    "make_engine",
    "missing_engine",
]


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
