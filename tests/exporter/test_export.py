"""The exporter on real models: parity, determinism, file formats, safe mode and every head."""

from __future__ import annotations

import json

import numpy as np
import pytest

from keras_edge import exporter, runtime
from keras_edge.exporter.errors import UnsafeModelError, UnsupportedModelError
from keras_edge.runtime.errors import UsageError


def test_seed_export_agrees_with_keras_on_10000_inputs(seed_dir, seed_model, wide_inputs, tmp_path):
    manifest = exporter.export(seed_dir / "seed.keras", tmp_path / "dist", validation=wide_inputs)
    assert set(manifest.variants) == {"tflite-fp32", "onnx-fp32"}
    assert sorted(p.name for p in (tmp_path / "dist").iterdir()) == [
        "golden.npz",
        "manifest.json",
        "onnx-fp32.onnx",
        "parity.json",
        "tflite-fp32.tflite",
    ]
    expected = seed_model.predict(wide_inputs, batch_size=1024, verbose=0)
    for vid, variant in manifest.variants.items():
        parity = variant.parity
        assert parity.n == 10_000 and parity.flips == 0 and parity.label_agreement == 1.0
        assert parity.max_abs_diff <= 1e-5 and parity.passed, vid  # fp32's bound for the seed
        clf = runtime.load(tmp_path / "dist", variant=vid)
        np.testing.assert_array_equal(clf.predict(wide_inputs), (expected[:, 0] > 0.5).astype(int))


def test_probe_set_is_used_without_validation_data(seed_dir, tmp_path, caplog):
    with caplog.at_level("WARNING", logger="keras_edge"):
        manifest = exporter.export(seed_dir / "seed.keras", tmp_path / "dist", formats=["onnx"]).manifest
    parity = manifest.variants["onnx-fp32"].parity
    assert parity.n == exporter.export.__globals__["PROBE_SIZE"] == 10_000
    assert "probe" in parity.data and "seed 0" in parity.data
    assert parity.accuracy is None
    # It says so everywhere: the manifest, the table's gate line, the warning, inspect.
    assert parity.source == "synthetic" and parity.synthetic and "not your data" in parity.data
    on_disk = json.loads((tmp_path / "dist" / "manifest.json").read_text())
    assert on_disk["variants"]["onnx-fp32"]["parity"]["source"] == "synthetic"
    summary = runtime.report.gate_summary(manifest)
    assert summary.startswith("gate: on SYNTHETIC inputs only") and "not the decisions" in summary
    warned = " ".join(r.message for r in caplog.records)
    assert "not the decisions on the inputs the device will see" in warned
    from tests.test_cli import run

    assert "SYNTHETIC inputs" in run("inspect", tmp_path / "dist").stdout


def test_require_data_refuses_an_export_without_data(seed_dir, seed_val, tmp_path):
    from tests.test_cli import one_line_error, run

    proc = run("export", seed_dir / "seed.keras", "--out", tmp_path / "dist", "--require-data")
    assert proc.returncode == 2 and not (tmp_path / "dist").exists()
    assert "Expected validation or calibration data" in one_line_error(proc)
    manifest = exporter.export(seed_dir / "seed.keras", tmp_path / "ok", formats=["tflite"],
                               validation=seed_val, require_data=True).manifest  # fmt: skip
    parity = manifest.variants["tflite-fp32"].parity
    assert parity.source == "validation" and not parity.synthetic
    assert "SYNTHETIC" not in runtime.report.gate_summary(manifest)


def test_manifest_contract(fp32_export, seed_dir):
    data = json.loads((fp32_export / "manifest.json").read_text())
    assert data["format_version"] == 1 and data["decision_rule"] == "p > threshold"
    assert data["inputs"] == [{"dtype": "float32", "name": "features", "shape": [None, 2]}]
    assert data["head"] == {
        "kind": "binary",
        "labels": ["0", "1"],
        "output": "probability",
        "threshold": 0.5,
        "units": 1,
    }
    assert data["model"]["source_sha256"] == runtime.manifest.sha256_file(seed_dir / "seed.keras")
    assert {"tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "ai-edge-litert"} <= set(
        data["tools"]
    )
    assert data["default_variant"] in data["variants"]
    for variant in data["variants"].values():
        assert {"file", "format", "precision", "sha256", "bytes", "threshold", "parity"} <= set(variant)
        assert {
            "n",
            "max_abs_diff",
            "mean_abs_diff",
            "label_agreement",
            "flips",
            "tolerance",
            "passed",
        } <= set(variant["parity"])
    text = (fp32_export / "manifest.json").read_text()
    assert text == json.dumps(data, sort_keys=True, indent=2) + "\n"  # keys sorted
    assert str(fp32_export) not in text and "/tmp" not in text  # no temp or absolute paths


def test_export_is_byte_for_byte_reproducible(seed_dir, seed_val, fp32_export, tmp_path):
    exporter.export(seed_dir / "seed.keras", tmp_path / "again", validation=seed_val)
    names = sorted(p.name for p in fp32_export.iterdir())
    assert names == sorted(p.name for p in (tmp_path / "again").iterdir())
    for name in names:
        assert (fp32_export / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name


def test_h5_model_exports_like_keras(seed_model, seed_val, tmp_path):
    seed_model.save(tmp_path / "seed.h5")
    manifest = exporter.export(tmp_path / "seed.h5", tmp_path / "dist", validation=seed_val)
    assert all(v.parity.passed and v.parity.flips == 0 for v in manifest.variants.values())
    clf = runtime.load(tmp_path / "dist", variant="tflite-fp32")
    expected = (seed_model.predict(seed_val[0], verbose=0)[:, 0] > 0.5).astype(int)
    np.testing.assert_array_equal(clf.predict(seed_val[0]), expected)


@pytest.fixture(scope="module")
def lambda_model_files(tmp_path_factory):
    import keras

    keras.utils.set_random_seed(3)
    model = keras.Sequential(
        [
            keras.Input((2,), name="features"),
            keras.layers.Lambda(lambda x: x * 2.0),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    folder = tmp_path_factory.mktemp("lambda")
    model.save(folder / "lambda.keras")
    model.save(folder / "lambda.h5")
    return folder


@pytest.mark.parametrize("name", ["lambda.keras", "lambda.h5"])
def test_lambda_layer_is_refused_in_safe_mode(lambda_model_files, tmp_path, name):
    with pytest.raises(UnsafeModelError, match=r"--unsafe \(CLI\) or safe_mode=False"):
        exporter.export(lambda_model_files / name, tmp_path / "dist")
    assert not (tmp_path / "dist").exists()  # nothing half-written


def test_lambda_layer_exports_with_explicit_opt_in(lambda_model_files, tmp_path):
    manifest = exporter.export(lambda_model_files / "lambda.keras", tmp_path / "dist", safe_mode=False)
    assert all(v.parity.passed for v in manifest.variants.values())


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"formats": ["coreml"]}, UsageError, r"formats from \('tflite', 'onnx'\), got \['coreml'\]"),
        ({"quantize": "int4"}, UsageError, r"quantizations from .* got \['int4'\]"),
        ({"threshold": 1.0}, UsageError, "strictly between 0 and 1, got 1.0"),
        ({"validation": np.zeros((4, 3))}, UsageError, r"shape \(None, 2\), got \(4, 3\)"),
        ({"validation": np.full((4, 2), np.nan)}, UsageError, "finite validation"),
        ({"head": "logit"}, UsageError, "--head logit contradicts the model: its output ends in sig"),
    ],
)
def test_bad_options_write_nothing(seed_dir, tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        exporter.export(seed_dir / "seed.keras", tmp_path / "dist", **kwargs)
    assert not (tmp_path / "dist").exists()
    assert list(tmp_path.iterdir()) == []  # no staging folder left behind


def test_missing_model_file(tmp_path):
    with pytest.raises(UsageError, match="Expected a Keras model file at"):
        exporter.export(tmp_path / "nope.keras", tmp_path / "dist")
    with pytest.raises(UsageError, match=r"ending in \.keras, \.h5, \.hdf5"):
        exporter.export(tmp_path / "model.pb", tmp_path / "dist")


def test_an_input_of_unknown_size_is_refused(tmp_path):
    import keras

    a = keras.Input((None,), name="ragged")
    out = keras.layers.Dense(1, activation="sigmoid")(keras.layers.Reshape((1,))(a[:, :1]))
    with pytest.raises(UnsupportedModelError, match="every feature dimension known"):
        exporter.export(keras.Model(a, out), tmp_path / "dist")
    assert not (tmp_path / "dist").exists()


def test_onnx_bytes_do_not_depend_on_earlier_conversions_in_the_process():
    """tf2onnx numbers the ops it inserts ('new_shape__10') from a process-wide counter; a
    second conversion of the same model in one process gave other bytes (MobileNetV3Small's
    onnx-fp32 too)."""
    import keras

    from keras_edge.exporter import model as model_io
    from keras_edge.exporter import to_onnx

    keras.utils.set_random_seed(0)
    i = keras.Input((8, 8, 1), name="image")
    h = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, activation="relu")(i))
    model = keras.Model(i, keras.layers.Dense(1, activation="sigmoid")(h))
    specs = model_io.input_specs(model)
    first, second = (
        to_onnx.to_fp32_proto(model, specs).SerializeToString(deterministic=True) for _ in range(2)
    )
    assert first == second
