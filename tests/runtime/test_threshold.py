"""A variant's threshold is validated wherever it comes from (the manifest, or a user setting
``clf.threshold``), and the one set is the one ``predict`` decides with."""

from __future__ import annotations

import json

import numpy as np
import pytest

from keras_edge import runtime
from keras_edge.runtime.manifest import MANIFEST_NAME


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (None, "Expected a number for the threshold of variant 'onnx-fp32', got None"),
        (0, "strictly between 0 and 1, got 0"),
        (1.0, "strictly between 0 and 1, got 1.0"),
        ([0.4, 0.6], "Expected a number for the threshold of variant 'onnx-fp32', got"),
        ("0.5", "Expected a number"),
    ],
)
def test_a_variant_threshold_in_the_manifest_is_validated_on_load(export_copy, value, match):
    path = export_copy / MANIFEST_NAME
    data = json.loads(path.read_text())
    data["variants"]["onnx-fp32"]["threshold"] = value
    path.write_text(json.dumps(data))
    with pytest.raises(runtime.ManifestError, match=match):
        runtime.load(export_copy, variant="tflite-fp32")  # any load reads the whole manifest


@pytest.mark.parametrize("where", ["head", "variant"])
def test_one_threshold_decides_and_every_reader_reports_it(export_copy, seed_dir, where):
    """A hand edit of the head's threshold (or of one variant's) is refused alike by load(),
    ``inspect`` and ``predict``, naming both values: never one answer at 0.9, another at 0.5."""
    from tests.test_cli import one_line_error, run

    path = export_copy / MANIFEST_NAME
    data = json.loads(path.read_text())
    if where == "head":
        data["head"]["threshold"] = 0.9
    else:
        data["variants"]["onnx-fp32"]["threshold"] = 0.9
    path.write_text(json.dumps(data))
    expected = r"threshold 0\.5, but the head's threshold is 0\.9" if where == "head" else (
        r"'onnx-fp32' decides with threshold 0\.9, but the head's threshold is 0\.5"
    )  # fmt: skip
    with pytest.raises(runtime.ManifestError, match=expected):
        runtime.load(export_copy)
    for command in (["inspect", export_copy], ["predict", export_copy, seed_dir / "samples.csv"]):
        proc = run(*command)
        assert proc.returncode == 2 and proc.stdout == ""
        assert "changed after the export" in one_line_error(proc)


def test_unedited_exports_report_the_threshold_that_decides(fp32_export, seed_dir):
    from tests.test_cli import run

    clf = runtime.load(fp32_export)
    assert clf.threshold == clf.manifest.head.threshold == 0.5
    assert "with threshold 0.5\n" in run("inspect", fp32_export).stdout
    proc = run("predict", fp32_export, seed_dir / "samples.csv", "--format", "json")
    assert json.loads(proc.stdout)["threshold"] == 0.5


@pytest.mark.parametrize("variant", ["tflite-fp32", "onnx-fp32"])
def test_setting_the_threshold_changes_the_decision(fp32_export, wide_inputs, variant):
    clf = runtime.load(fp32_export, variant=variant)
    p = clf.predict_proba(wide_inputs)[:, 0]
    assert clf.threshold == 0.5
    clf.threshold = 0.9
    assert clf.threshold == 0.9
    for x in (wide_inputs, wide_inputs[:1], wide_inputs[:7]):  # fast path and general path
        expected = (clf.predict_proba(x)[:, 0] > np.float32(0.9)).astype(np.int64)
        np.testing.assert_array_equal(clf.predict(x), expected)
    assert (clf.predict(wide_inputs) != (p > 0.5)).any()  # it did change something


@pytest.mark.parametrize("value", [0.0, 1.0, -0.1, float("nan"), (0.2, 0.3), None, True])
def test_a_bad_threshold_is_refused_and_the_old_one_kept(fp32_export, value):
    clf = runtime.load(fp32_export, variant="onnx-fp32")
    with pytest.raises(runtime.InputError, match="variant 'onnx-fp32'"):
        clf.threshold = value
    assert clf.threshold == 0.5


def test_the_gate_sees_the_decision_that_ships(seed_dir, seed_val, seed_all, tmp_path, monkeypatch):
    # Plant a wrong integer cut (p > 0.97 instead of 0.5) in the runtime's decision for int8
    # outputs: predict_proba is untouched, so only a gate that runs predict() can notice.
    from keras_edge import exporter
    from keras_edge.runtime import classifier

    real = classifier.integer_cut
    monkeypatch.setattr(classifier, "integer_cut", lambda q, cut: min(real(q, cut) + 120, 126))
    with pytest.raises(exporter.ParityError, match="tflite-int8: label agreement"):
        exporter.export(
            seed_dir / "seed.keras",
            tmp_path / "dist",
            formats=["tflite"],
            quantize="int8",
            calibration=seed_all[2],
            validation=seed_val,
            int8_io=True,
            int8_fallback="none",  # the planted cut breaks every candidate alike
            strict=True,
        )
    manifest = runtime.Manifest.read(tmp_path / "dist")
    assert manifest.variants["tflite-fp32"].parity.passed
    assert manifest.variants["tflite-int8"].parity.flips > 10


def test_label_names(two_inputs, tmp_path):
    # Labels as users expect them: classes_ and names, from a model exported with --labels.
    from keras_edge import exporter

    model, x, _, _ = two_inputs
    exporter.export(model, tmp_path / "d", formats=["onnx"], validation=x, labels=["cat", "dog"])
    clf = runtime.load(tmp_path / "d")
    assert clf.classes_ == ("cat", "dog")
    names = clf.predict_labels(x)
    np.testing.assert_array_equal(names, np.array(["cat", "dog"], dtype=object)[clf.predict(x)])


def test_a_linear_output_trained_from_logits_is_a_logit_head(tmp_path):
    import keras

    from keras_edge import exporter

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="relu"),
                              keras.layers.Dense(1)])  # fmt: skip
    model.compile("adam", keras.losses.BinaryCrossentropy(from_logits=True))
    model.save(tmp_path / "m.keras")  # loaded with compile=False: the file says from_logits
    x = np.random.default_rng(0).standard_normal((200, 3)).astype(np.float32)
    manifest = exporter.export(tmp_path / "m.keras", tmp_path / "d", validation=x)
    assert (manifest.head.kind, manifest.head.output) == ("binary", "logit")
    z = model.predict(x, verbose=0)[:, 0]
    clf = runtime.load(tmp_path / "d")
    np.testing.assert_array_equal(clf.predict(x), (z > 0).astype(int))  # logit cut of 0.5
