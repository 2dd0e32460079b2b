"""Accelerators, never silent: strict errors that list what is here, the variant chosen by
device, auto, ONNX Runtime's silent CPU fall-back caught, LiteRT's CompiledModel path. This
machine has no accelerator: the errors are real, and CompiledModel's run path is proven on its
CPU accelerator."""

from __future__ import annotations

import numpy as np
import pytest

from keras_edge import runtime
from keras_edge.runtime.classifier import Classifier
from keras_edge.runtime.engines import CompiledModelEngine, available_devices
from keras_edge.runtime.errors import DeviceUnavailableError
from keras_edge.runtime.loading import resolve_device


def test_an_unknown_device_lists_the_known_ones(fp32_export):
    expected = r"Expected device from \['cpu', 'auto', 'cuda'.*got 'cuda:0'"
    with pytest.raises(DeviceUnavailableError, match=expected):
        runtime.load(fp32_export, device="cuda:0")


def test_cuda_takes_an_onnx_variant_and_says_what_is_here(fp32_export):
    # The default is tflite-fp32; cuda can only be ONNX Runtime's, so onnx-fp32 is tried.
    with pytest.raises(DeviceUnavailableError) as info:
        runtime.load(fp32_export, device="cuda")
    message = str(info.value)
    assert "CUDAExecutionProvider" in message and "available here: ['cpu'" in message
    assert "keras-edge[onnx-gpu]" in message


def test_a_named_variant_the_device_cannot_run_is_refused(fp32_export):
    expected = r"'tflite-fp32' is tflite, but device 'cuda' runs onnx variants: one of \['onnx-fp32'\]"
    with pytest.raises(DeviceUnavailableError, match=expected):
        runtime.load(fp32_export, variant="tflite-fp32", device="cuda")
    expected = r"'onnx-fp32' is onnx, but device 'gpu' runs tflite"
    with pytest.raises(DeviceUnavailableError, match=expected):
        runtime.load(fp32_export, variant="onnx-fp32", device="gpu")


def test_auto_on_a_cpu_machine_is_the_cpu_and_says_so(fp32_export, wide_inputs):
    clf = runtime.load(fp32_export, device="auto")
    assert (clf.device, clf.variant) == ("cpu", "tflite-fp32")
    assert clf.providers == ["LiteRT CPU (XNNPACK)"]
    plain = runtime.load(fp32_export)
    np.testing.assert_array_equal(clf.predict(wide_inputs), plain.predict(wide_inputs))


def test_auto_prefers_cuda_and_onnx_runtimes_silent_cpu_fallback_is_caught(fp32_export, monkeypatch):
    import onnxruntime as ort

    offered = ["TensorrtExecutionProvider", "OpenVINOExecutionProvider", "CUDAExecutionProvider",
               "CPUExecutionProvider"]  # fmt: skip
    monkeypatch.setattr(ort, "get_available_providers", lambda: offered)
    assert resolve_device("auto", {"onnx", "tflite"}) == "cuda"  # not TensorRT: minutes to start
    assert resolve_device("auto", {"tflite"}) == "cpu"
    # This onnxruntime build has no CUDA: asked for it anyway (the list above claims it), ONNX
    # Runtime falls back to the CPU without an error; the runtime checks and refuses.
    expected = r"Asked ONNX Runtime for CUDAExecutionProvider .* runs on \['CPUExecutionProvider'\]"
    with pytest.raises(DeviceUnavailableError, match=expected):
        runtime.load(fp32_export, device="auto")


def test_litert_gpu_and_npu_are_refused_where_absent(fp32_export):
    for device in ("gpu", "npu"):
        expected = f"Asked LiteRT for its {device.upper()} accelerator"
        with pytest.raises(DeviceUnavailableError, match=expected):
            runtime.load(fp32_export, device=device)
    assert "gpu (LiteRT, untried)" in available_devices()


@pytest.mark.parametrize("vid", ["tflite-fp32", "tflite-int8"])
def test_compiled_model_path_answers_as_the_interpreter(seed_all, wide_inputs, vid):
    folder, manifest, _ = seed_all
    variant = manifest.variants[vid]
    data = (folder / variant.file).read_bytes()
    compiled = Classifier(manifest, variant, CompiledModelEngine(data, device="cpu"), "cpu")
    reference = runtime.load(folder, variant=vid)
    for n in (1, 7, 1000, 1):  # resizes both ways
        x = wide_inputs[:n]
        np.testing.assert_array_equal(compiled.predict_proba(x), reference.predict_proba(x))
        np.testing.assert_array_equal(compiled.predict(x), reference.predict(x))
    assert compiled.providers == ["LiteRT CompiledModel CPU"]


def test_a_lone_artifact_on_a_device_of_another_format_is_refused(fp32_export, tmp_path):
    (tmp_path / "m.onnx").write_bytes((fp32_export / "onnx-fp32.onnx").read_bytes())
    with pytest.raises(DeviceUnavailableError, match="Device 'gpu' runs tflite artifacts"):
        runtime.load(tmp_path / "m.onnx", device="gpu")
    assert runtime.load(tmp_path / "m.onnx", device="auto").device == "cpu"
