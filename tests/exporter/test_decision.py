"""--with-decision: the class computed inside each artifact, read with the bare engines (and a
Node.js client), equals the runtime's predict()."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from keras_edge import exporter, runtime

NODE_SCRIPT = Path(__file__).resolve().parent.parent / "node" / "read_class.js"


def bare_outputs(path: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    """Every output by name, read with the engine itself, not through keras-edge; an int8
    input is quantized here, as an integer-only target's caller does."""
    if path.suffix == ".onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, {session.get_inputs()[0].name: x}), strict=True))
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    detail = interpreter.get_input_details()[0]
    if detail["dtype"] == np.int8:
        scale, zero = detail["quantization"]
        x = np.clip(np.rint(x / scale) + zero, -128, 127).astype(np.int8)
    interpreter.resize_tensor_input(detail["index"], x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(detail["index"], x)
    interpreter.invoke()
    return {d["name"]: interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()}


def _bare_class(path: Path, x: np.ndarray) -> np.ndarray:
    """The "class" output, read with the engine itself, not through keras-edge."""
    return bare_outputs(path, x)["class"]


@pytest.fixture(scope="module")
def seed_decision(seed_dir, seed_val, seed_all, tmp_path_factory):
    out = tmp_path_factory.mktemp("decision") / "dist"
    exporter.export(seed_dir / "seed.keras", out, quantize="int8", calibration=seed_all[2],
                    validation=seed_val, with_decision=True, threshold=0.3)  # fmt: skip
    return out


@pytest.mark.parametrize("vid", ["tflite-fp32", "tflite-int8", "onnx-fp32", "onnx-int8"])
def test_binary_class_output_equals_predict(seed_decision, wide_inputs, vid):
    manifest = runtime.Manifest.read(seed_decision)
    clf = runtime.load(seed_decision, variant=vid)
    got = _bare_class(seed_decision / manifest.variants[vid].file, wide_inputs)
    assert got.dtype == np.int64 and got.shape == (len(wide_inputs),)
    np.testing.assert_array_equal(got, clf.predict(wide_inputs))
    assert clf.threshold == 0.3 and (got == 1).sum() > (clf.predict_proba(wide_inputs) > 0.5).sum()


def test_int8_output_compares_integers(seed_dir, seed_val, seed_all, wide_inputs, tmp_path):
    exporter.export(seed_dir / "seed.keras", tmp_path / "d", formats=["tflite"], quantize="int8",
                    calibration=seed_all[2], validation=seed_val, int8_io=True,
                    with_decision=True)  # fmt: skip
    from ai_edge_litert.interpreter import Interpreter

    clf = runtime.load(tmp_path / "d", variant="tflite-int8")
    interpreter = Interpreter(model_path=str(tmp_path / "d" / "tflite-int8.tflite"))
    detail = interpreter.get_input_details()[0]
    scale, zero = detail["quantization"]
    q = np.clip(np.rint(wide_inputs / scale) + zero, -128, 127).astype(np.int8)
    interpreter.resize_tensor_input(detail["index"], q.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(detail["index"], q)
    interpreter.invoke()
    out = {d["name"]: d for d in interpreter.get_output_details()}
    assert out["class"]["dtype"] == np.int64
    np.testing.assert_array_equal(
        interpreter.get_tensor(out["class"]["index"]), clf.predict(wide_inputs)
    )


@pytest.mark.parametrize("threshold", [1e-6, 1 - 1e-6])
def test_a_cut_outside_the_int8_output_range_gives_a_constant_class(threshold, tmp_path):
    # A logit head whose int8 output spans a few logits, and a threshold whose logit cut lies far
    # outside: the integer cut is -129 (every level is above it) or 127 (none is). Once an
    # OverflowError at export; now the class is constant, 1 below the range and 0 above it.
    import keras

    from keras_edge.runtime.classifier import decision_cut

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(1)])  # fmt: skip
    rng = np.random.default_rng(0)
    x_calib, x_val = (rng.standard_normal((n, 4)).astype(np.float32) for n in (300, 400))
    y_val = (x_val[:, 0] > 0).astype(np.int64)
    exporter.export(model, tmp_path / "d", quantize="int8", calibration=x_calib,
                    validation=(x_val, y_val), head="logit", int8_io=True, with_decision=True,
                    threshold=threshold)  # fmt: skip
    z = model.predict(x_val, verbose=0)[:, 0]
    expected = (z > np.log(threshold / (1 - threshold))).astype(np.int64)
    assert np.abs(z).max() < 10 and len(set(expected.tolist())) == 1  # the cut is out of reach
    manifest = runtime.Manifest.read(tmp_path / "d")
    tflite = runtime.load(tmp_path / "d", variant="tflite-int8")
    out_q = tflite.engine.output_quantization
    assert out_q is not None and out_q.dtype == np.int8  # the comparison runs on int8 outputs
    assert decision_cut(manifest.head, threshold, out_q) == (-129 if threshold < 0.5 else 127)
    for vid in ("tflite-fp32", "tflite-int8", "onnx-fp32", "onnx-int8"):
        clf = runtime.load(tmp_path / "d", variant=vid)
        np.testing.assert_array_equal(clf.predict(x_val), expected, vid)
        got = _bare_class(tmp_path / "d" / manifest.variants[vid].file, x_val)
        np.testing.assert_array_equal(got, expected, vid)


@pytest.mark.parametrize("case", ["multilabel", "multiclass"])
def test_multilabel_and_multiclass_class_outputs(case, tmp_path):
    from keras_edge.benchmarks import zoo

    built = zoo.build(case)
    exporter.export(built.model, tmp_path / "d", quantize="int8", calibration=built.x_calib,
                    validation=(built.x_val, built.y_val), with_decision=True,
                    min_agreement=0.9)  # the class output is the point here  # fmt: skip
    x = np.concatenate([built.x_val] * 6)[:1000]
    for vid in ("tflite-fp32", "tflite-int8", "onnx-fp32", "onnx-int8"):
        got = _bare_class(tmp_path / "d" / f"{vid}.{vid.split('-')[0]}", x)
        np.testing.assert_array_equal(got, runtime.load(tmp_path / "d", variant=vid).predict(x), vid)


@pytest.mark.skipif(shutil.which("node") is None or shutil.which("npm") is None,
                    reason="node and npm are not installed here")  # fmt: skip
def test_a_nodejs_client_reads_the_class_and_the_threshold(seed_decision, wide_inputs, tmp_path):
    # onnxruntime-node from npm; --ignore-scripts: its install script fetches optional GPU
    # binaries from a host outside the registry, while the CPU binaries ship in the package.
    cache = Path(os.environ.get("KERAS_EDGE_NODE_MODULES", tmp_path / "npm"))
    if not (cache / "node_modules" / "onnxruntime-node").is_dir():
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "install", "--ignore-scripts", "--no-audit", "--no-fund",
                        "--prefix", str(cache), "onnxruntime-node"], check=True,
                       capture_output=True, timeout=600)  # fmt: skip
    x = wide_inputs[:10_000]
    (tmp_path / "x.f32").write_bytes(np.ascontiguousarray(x, dtype=np.float32).tobytes())
    proc = subprocess.run(
        ["node", str(NODE_SCRIPT), str(seed_decision / "onnx-int8.onnx"), str(tmp_path / "x.f32"),
         str(len(x)), "2"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "NODE_PATH": str(cache / "node_modules")},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout)
    clf = runtime.load(seed_decision, variant="onnx-int8")
    assert answer["threshold"] == clf.threshold == 0.3 and answer["rule"] == "p > threshold"
    np.testing.assert_array_equal(np.array(answer["classes"]), clf.predict(x))


def test_decision_outputs_stay_byte_reproducible(seed_dir, seed_val, tmp_path):
    for name in ("a", "b"):
        exporter.export(seed_dir / "seed.keras", tmp_path / name, validation=seed_val,
                        with_decision=True, tune="f1")  # fmt: skip
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
