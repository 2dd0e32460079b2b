"""The models people ship (the zoo in ``keras_edge.benchmarks.zoo``), exported for real: every
variant asked for passes its parity gate, and the runtime's fp32 variants of both formats decide
every validation sample as Keras does.

Conversion is the cost, so each case is built and exported once per module and reused by its
tests. Cases that take more than ~10 s on 2 cores are marked ``slow``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from keras_edge import exporter, runtime
from keras_edge.benchmarks import zoo

# Cases the exporter cannot export yet, with why. Their tests are written as they should pass
# and marked strict xfail, so that they fail the day the support lands: then drop them here.
NOT_YET: dict[str, str] = {}
# Over ~10 s each on 2 cores: MobileNetV3's training steps and conversions, the recurrent
# layers' conversions (while loops).
SLOW = {"mobilenetv3small", "text-gru", "text-lstm"}
# Quantized variants exported too, where they are cheap (small dense or conv models) and pass
# the gate with a margin on this data; the coverage benchmark shows all eight for every case.
QUANTIZED = {
    "mlp": ("fp16", "dynamic", "int8"),
    "cnn": ("fp16", "dynamic", "int8"),
    "multiclass": ("fp16", "dynamic", "int8"),
    "regression": ("fp16", "dynamic", "int8"),
    "multilabel": ("fp16", "dynamic"),
    "logit": ("fp16", "dynamic"),
}
# Convolutional cases: onnx-dynamic would quantize none of their convolutions (ONNX Runtime's
# ConvInteger is slower than float Conv), so it is not written, and the manifest says why.
NO_ONNX_DYNAMIC = {"cnn"}
# A Keras output this close to the decision boundary is a tie that float rounding decides
# (the gate's TIE_BAND, the fp32 tolerance): the runtime may decide it either way.
TIE = 1e-4


def _param(name: str, *extra: Any) -> Any:
    marks = [pytest.mark.slow] if name in SLOW else []
    if name in NOT_YET:
        marks.append(pytest.mark.xfail(reason=NOT_YET[name], strict=True))
    return pytest.param(name, *extra, marks=marks, id="-".join([name, *map(str, extra)]))


CASES = [_param(name) for name in zoo.CASES]
CASES_BY_FORMAT = [_param(name, fmt) for name in zoo.CASES for fmt in ("tflite", "onnx")]


class Exports:
    """Each case built and exported once; a failure is kept and raised again to every test
    of the case, so that a case the exporter refuses costs one attempt."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.done: dict[str, tuple[zoo.Case, Path, Any] | BaseException] = {}

    def get(self, name: str) -> tuple[zoo.Case, Path, Any]:
        if name not in self.done:
            try:
                self.done[name] = self._export(name)
            except Exception as exc:
                self.done[name] = exc
        result = self.done[name]
        if isinstance(result, BaseException):
            raise result
        return result

    def _export(self, name: str) -> tuple[zoo.Case, Path, Any]:
        case = zoo.build(name)
        quantize = QUANTIZED.get(name, ())
        dist = self.root / name
        manifest = exporter.export(
            case.model,
            dist,
            quantize=list(quantize),
            calibration=case.x_calib if "int8" in quantize else None,
            validation=(case.x_val, case.y_val),
            head=case.head,
        )
        return case, dist, manifest


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> Exports:
    return Exports(tmp_path_factory.mktemp("architectures"))


def keras_decisions(case: zoo.Case, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Keras's labels on the validation data by the rule the runtime applies (threshold 0.5),
    and a mask of the samples that are ties (within ``TIE`` of the boundary)."""
    raw = np.asarray(case.model.predict(case.x_val, verbose=0), dtype=np.float64)
    if kind == "multiclass":  # argmax
        top2 = np.sort(raw, axis=1)[:, -2:]
        return raw.argmax(axis=1), (top2[:, 1] - top2[:, 0]) <= TIE
    # p > 0.5, the rule of Keras BinaryAccuracy; for a logit, z > log(0.5 / 0.5) = 0.
    cut = 0.0 if case.head == "logit" else 0.5
    labels, ties = (raw > cut).astype(np.int64), np.abs(raw - cut) <= TIE
    if kind == "binary":
        return labels[:, 0], ties[:, 0]
    return labels, ties.any(axis=1)  # multilabel: one threshold per label


@pytest.mark.parametrize("name", CASES)
def test_every_variant_passes_the_gate(exports, name):
    case, _, manifest = exports.get(name)
    expected = {f"{fmt}-{p}" for fmt in ("tflite", "onnx") for p in ("fp32", *QUANTIZED.get(name, ()))}
    if name in NO_ONNX_DYNAMIC:
        expected.discard("onnx-dynamic")
        assert set(manifest.refused) == {"onnx-dynamic"}
        assert "ConvInteger" in manifest.refused["onnx-dynamic"]
    else:
        assert getattr(manifest, "refused", {}) == {}
    assert set(manifest.variants) == expected
    for vid, variant in manifest.variants.items():
        assert variant.parity is not None and variant.parity.passed, (vid, variant.parity)
        assert variant.parity.n == len(case.y_val)


@pytest.mark.parametrize(("name", "fmt"), CASES_BY_FORMAT)
def test_runtime_decides_as_keras(exports, name, fmt):
    case, dist, manifest = exports.get(name)
    clf = runtime.load(dist, variant=f"{fmt}-fp32", threads=1)
    got = clf.predict(case.x_val)
    if case.head == "regression":
        want = case.model.predict(case.x_val, verbose=0)
        # The same float32 math in another order: ~1e-7 relative; values reach ~1e3.
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-3)
        return
    want, ties = keras_decisions(case, manifest.head.kind)
    assert got.shape == want.shape
    differ = (got != want) if got.ndim == 1 else (got != want).any(axis=1)
    assert not (differ & ~ties).any(), f"{int((differ & ~ties).sum())} of {len(want)} differ"
    assert len(np.unique(want)) > 1, "Keras decides one class for every sample: proves nothing"


def test_int8_of_raw_features_fails_the_gate(tmp_path):
    # Normalization inside the model, raw breast-cancer features in: a full-int8 input has one
    # scale for features 1e5x apart, so the narrow ones lose their resolution. The gate says so.
    case = zoo.build("normalization")
    with pytest.raises(exporter.ParityError) as info:
        exporter.export(
            case.model,
            tmp_path / "dist",
            quantize=["int8"],
            calibration=case.x_calib,
            validation=(case.x_val, case.y_val),
            int8_fallback="none",  # tests/exporter/test_mixed.py shows the mixed-precision fix
            strict=True,
        )
    assert sorted(info.value.failed) == ["onnx-int8", "tflite-int8"]
    manifest = runtime.Manifest.read(tmp_path / "dist")
    assert manifest.variants["tflite-fp32"].passed and manifest.default_variant == "tflite-fp32"


def test_unknown_case_is_refused():
    with pytest.raises(runtime.UsageError, match="Expected a case from"):
        zoo.build("resnet9000")
