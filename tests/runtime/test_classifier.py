"""The runtime against real exported artifacts: decisions, batch sizes and every bad input."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from keras_edge import runtime
from keras_edge.runtime.errors import (
    BackendUnavailableError,
    DeviceUnavailableError,
    InputError,
    UnknownVariantError,
)

VARIANTS = ["tflite-fp32", "onnx-fp32"]


@pytest.fixture(scope="module")
def keras_proba(seed_model, wide_inputs) -> np.ndarray:
    return seed_model.predict(wide_inputs, batch_size=1024, verbose=0)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("batch", [1, 7, 4096])
def test_labels_match_keras_at_any_batch_size(fp32_export, wide_inputs, keras_proba, variant, batch):
    clf = runtime.load(fp32_export, variant=variant)
    x = wide_inputs[: batch * 2 if batch < 4096 else 4096]
    expected = (keras_proba[: len(x), 0] > 0.5).astype(np.int64)  # BinaryAccuracy's rule
    got = np.concatenate([clf.predict(x[i : i + batch]) for i in range(0, len(x), batch)])
    assert got.dtype == np.int64 and got.shape == (len(x),)
    np.testing.assert_array_equal(got, expected)
    proba = clf.predict_proba(x[:batch])
    assert proba.dtype == np.float32 and proba.shape == (len(x[:batch]), 1)
    # float32 kernels in another order: ~1e-7 measured; 1e-5 is the seed model's fp32 bound.
    np.testing.assert_allclose(proba, keras_proba[: len(proba)], atol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
def test_alternating_batch_sizes_give_the_same_answers(fp32_export, wide_inputs, variant):
    clf = runtime.load(fp32_export, variant=variant, threads=1)
    full = clf.predict_proba(wide_inputs[:64])
    for n in (1, 64, 3, 1, 64):
        np.testing.assert_array_equal(clf.predict_proba(wide_inputs[:n]), full[:n])


def test_threshold_is_applied_with_a_strict_greater_than(fp32_export):
    clf = runtime.load(fp32_export, variant="onnx-fp32")
    x = np.array([[2.0, 0.0], [-1.0, 0.5]], dtype=np.float32)
    p = clf.predict_proba(x)[:, 0]
    np.testing.assert_array_equal(clf.predict(x), (p > clf.threshold).astype(int))
    assert clf.threshold == 0.5 and clf.variant == "onnx-fp32" and clf.device == "cpu"
    assert clf.providers == ["CPUExecutionProvider"]


def test_default_variant_is_the_manifests(fp32_export):
    manifest = runtime.Manifest.read(fp32_export)
    assert runtime.load(fp32_export).variant == manifest.default_variant


@pytest.mark.parametrize("variant", VARIANTS)
class TestBadInput:
    def test_wrong_number_of_features(self, fp32_export, variant):
        clf = runtime.load(fp32_export, variant=variant)
        with pytest.raises(InputError, match=r"Expected input of shape \(None, 2\), got \(3, 5\)"):
            clf.predict(np.zeros((3, 5), np.float32))

    def test_wrong_rank(self, fp32_export, variant):
        clf = runtime.load(fp32_export, variant=variant)
        with pytest.raises(InputError, match=r"rank 2 .* got rank 1 .*reshape\(1, -1\)"):
            clf.predict(np.zeros(2, np.float32))
        with pytest.raises(InputError, match="got rank 3"):
            clf.predict(np.zeros((1, 1, 2), np.float32))

    @pytest.mark.parametrize("bad", [np.array([["a", "b"]]), np.array([[1, None]], dtype=object)])
    def test_strings_and_objects(self, fp32_export, variant, bad):
        clf = runtime.load(fp32_export, variant=variant)
        with pytest.raises(InputError, match="Expected a numeric input"):
            clf.predict(bad)

    def test_complex_is_refused(self, fp32_export, variant):
        clf = runtime.load(fp32_export, variant=variant)
        with pytest.raises(InputError, match="complex"):
            clf.predict(np.zeros((1, 2), np.complex64))

    def test_ragged_list(self, fp32_export, variant):
        clf = runtime.load(fp32_export, variant=variant)
        with pytest.raises(InputError, match="numpy cannot"):
            clf.predict([[1.0, 2.0], [3.0]])

    @pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
    def test_nan_and_inf(self, fp32_export, variant, value):
        clf = runtime.load(fp32_export, variant=variant)
        x = np.zeros((5, 2), np.float32)
        x[3, 0] = value
        with pytest.raises(InputError, match=r"NaN or Inf in 1 value\(s\) of 1 sample\(s\) .*row 3"):
            clf.predict(x)
        with pytest.raises(InputError, match="NaN or Inf"):
            clf.predict_proba(x)

    def test_float64_overflowing_float32_is_refused(self, fp32_export, variant):
        clf = runtime.load(fp32_export, variant=variant)
        with pytest.raises(InputError, match=r"within float32.s range .*largest \|x\| 1e\+300"):
            clf.predict(np.array([[1e300, 0.0]]))

    def test_huge_finite_values_that_overflow_a_sum_are_accepted(self, fp32_export, variant):
        clf = runtime.load(fp32_export, variant=variant)
        x = np.full((4, 2), 3e38, dtype=np.float32)  # the sum overflows; every value is finite
        assert clf.predict(x).shape == (4,)

    def test_empty_batch(self, fp32_export, variant):
        clf = runtime.load(fp32_export, variant=variant)
        x = np.zeros((0, 2), np.float32)
        assert clf.predict(x).shape == (0,) and clf.predict(x).dtype == np.int64
        assert clf.predict_proba(x).shape == (0, 1) and clf.predict_proba(x).dtype == np.float32

    def test_ints_lists_and_float64_are_cast(self, fp32_export, variant):
        clf = runtime.load(fp32_export, variant=variant)
        expected = clf.predict(np.array([[2.0, 0.0], [-1.0, 0.0]], np.float32))
        np.testing.assert_array_equal(clf.predict([[2, 0], [-1, 0]]), expected)
        np.testing.assert_array_equal(clf.predict(np.array([[2.0, 0.0], [-1.0, 0.0]])), expected)

    def test_non_contiguous_input(self, fp32_export, variant, wide_inputs):
        clf = runtime.load(fp32_export, variant=variant)
        x = np.asfortranarray(wide_inputs[:10])
        np.testing.assert_array_equal(clf.predict(x), clf.predict(np.ascontiguousarray(x)))


def test_unknown_variant_lists_the_known_ones(fp32_export):
    with pytest.raises(UnknownVariantError, match=r"'onnx-int9'.*\['onnx-fp32', 'tflite-fp32'\]"):
        runtime.load(fp32_export, variant="onnx-int9")


@pytest.mark.parametrize("threads", [0, -1, 1.5, True])
def test_bad_threads(fp32_export, threads):
    with pytest.raises(InputError, match="positive integer"):
        runtime.load(fp32_export, threads=threads)


def test_onnx_accelerator_that_is_not_there_is_refused(fp32_export):
    # The CPU wheel lacks CUDA: ONNX Runtime would silently run on CPU; the runtime refuses.
    with pytest.raises(DeviceUnavailableError, match="CUDAExecutionProvider"):
        runtime.load(fp32_export, variant="onnx-fp32", device="cuda")
    with pytest.raises(DeviceUnavailableError, match="Expected device from"):
        runtime.load(fp32_export, variant="onnx-fp32", device="tpu9000")


def test_litert_accelerator_that_is_not_there_is_refused(fp32_export):
    with pytest.raises(DeviceUnavailableError, match="Asked LiteRT for its GPU accelerator"):
        runtime.load(fp32_export, variant="tflite-fp32", device="gpu")


@pytest.mark.parametrize(
    ("module", "variant", "extra"),
    [("onnxruntime", "onnx-fp32", "onnx"), ("ai_edge_litert", "tflite-fp32", "litert")],
)
def test_missing_engine_names_the_extra(fp32_export, monkeypatch, module, variant, extra):
    for name in [m for m in sys.modules if m == module or m.startswith(module + ".")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, module, None)  # what an absent package looks like to import
    with pytest.raises(BackendUnavailableError, match=rf"pip install 'keras-edge\[{extra}\]'"):
        runtime.load(fp32_export, variant=variant)


def test_missing_engine_makes_load_pick_another_variant(fp32_export, monkeypatch):
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    clf = runtime.load(fp32_export)
    assert clf.variant == "onnx-fp32"


@pytest.mark.parametrize("variant", VARIANTS)
def test_fast_path_decides_as_the_general_path(fp32_export, wide_inputs, variant):
    clf = runtime.load(fp32_export, variant=variant)
    general = runtime.Classifier.predict.__get__(clf)
    assert clf.predict != general  # the binary fast path is bound
    for n in (1, 2, 7, 32, 33, 500):  # both sides of the small-input limit
        x = wide_inputs[:n]
        got = clf.predict(x)
        assert got.dtype == np.int64 and got.shape == (n,)
        np.testing.assert_array_equal(got, general(x))
        np.testing.assert_array_equal(got, (clf.predict_proba(x)[:, 0] > clf.threshold).astype(int))
