"""A multiclass head's minimum confidence: below it the class is -1 ("unknown"). It is the head's
threshold: tuned like one, validated like one, embedded and decided in the graph like one."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
from sklearn import metrics

from keras_edge import exporter, runtime
from keras_edge.exporter.tuning import Objective, confusion_at_candidates, tune
from keras_edge.runtime.errors import InputError, ManifestError, UsageError

VARIANTS = ("tflite-fp32", "tflite-int8", "onnx-fp32", "onnx-int8")


@pytest.fixture(scope="module")
def digits():
    from keras_edge.benchmarks import zoo

    return zoo.build("multiclass")  # Dense 64-32-10 softmax on scikit-learn's digits


@pytest.fixture(scope="module")
def tuned(digits, tmp_path_factory):
    out = tmp_path_factory.mktemp("minconf") / "d"
    manifest = exporter.export(digits.model, out, quantize="int8", calibration=digits.x_calib,
                               validation=(digits.x_val, digits.y_val), with_decision=True,
                               tune="precision>=0.99", min_agreement=0.95).manifest  # fmt: skip
    return out, manifest


def _brute_force(proba: np.ndarray, y: np.ndarray, floor: float) -> tuple[float, float]:
    """Best recall of right answers with at least ``floor`` of the answered ones right, over
    every candidate cut of the top probability; scikit-learn scores each cut."""
    top, right = proba.max(axis=1), (proba.argmax(axis=1) == y).astype(int)
    best = (-np.inf, np.nan)
    for cut in confusion_at_candidates(top, right)[0]:
        answered = (top > np.float32(cut)).astype(int)
        if answered.sum() and metrics.precision_score(right, answered) >= floor:
            best = max(best, (metrics.recall_score(right, answered), cut), key=lambda b: b[0])
    return best


def test_tuned_minimum_confidence_is_the_brute_force_optimum(digits, tuned):
    out, manifest = tuned
    keras_p = digits.model.predict(digits.x_val, verbose=0)
    value, _ = _brute_force(keras_p, digits.y_val, 0.99)
    assert manifest.tuning["keras"][0]["value"] == pytest.approx(value, abs=1e-12)
    assert manifest.tuning["positive"] == "the top class is right"
    for vid in VARIANTS:
        clf = runtime.load(out, variant=vid)
        own = np.concatenate([clf.predict_proba(digits.x_val[i : i + 1])
                              for i in range(len(digits.x_val))])  # fmt: skip
        mine = tune(own.max(axis=1), (own.argmax(axis=1) == digits.y_val).astype(int),
                    Objective.parse("precision>=0.99"))  # fmt: skip
        assert manifest.variants[vid].threshold == pytest.approx(mine.threshold), (vid, mine)
        assert manifest.variants[vid].threshold == clf.threshold
        assert mine.value == pytest.approx(_brute_force(own, digits.y_val, 0.99)[0], abs=1e-12)
        pred = clf.predict(digits.x_val)
        answered = pred != -1
        assert 0 < (~answered).sum() < len(pred), vid  # some refused, most answered
        assert (pred[answered] == digits.y_val[answered]).mean() >= 0.99, vid


def test_class_output_and_labels_say_unknown_below_the_minimum(digits, tuned):
    from tests.exporter.test_decision import _bare_class

    out, _ = tuned
    x = np.concatenate([digits.x_val, digits.x_val * 0.6, digits.x_val[:, ::-1]])  # some unsure
    for vid in VARIANTS:
        clf = runtime.load(out, variant=vid)
        pred = clf.predict(x)
        assert (pred == -1).sum() > 20, vid
        np.testing.assert_array_equal(_bare_class(out / f"{vid}.{vid.split('-')[0]}", x), pred, vid)
        names = clf.predict_labels(x)
        assert (names[pred == -1] == "unknown").all() and "unknown" not in clf.classes_
        np.testing.assert_array_equal(names[pred >= 0], np.asarray(clf.classes_)[pred[pred >= 0]])
        top = clf.predict_proba(x).max(axis=1)
        np.testing.assert_array_equal(pred == -1, top <= np.float32(clf.threshold), vid)


def test_lone_artifact_decides_with_its_minimum_confidence(digits, tuned, tmp_path):
    out, _ = tuned
    x = np.concatenate([digits.x_val, digits.x_val * 0.6])
    for name in ("onnx-int8.onnx", "tflite-fp32.tflite"):
        (tmp_path / name).write_bytes((out / name).read_bytes())
        lone = runtime.load(tmp_path / name)
        folder = runtime.load(out, variant=name.split(".")[0])
        np.testing.assert_array_equal(lone.predict(x), folder.predict(x), name)


def test_cli_min_confidence_and_unknown_label(digits, tmp_path):
    digits.model.save(tmp_path / "m.keras")
    np.savez(tmp_path / "val.npz", x=digits.x_val, y=digits.y_val)
    np.save(tmp_path / "x.npy", np.concatenate([digits.x_val[:20], digits.x_val[:20] * 0.3]))
    cli = [sys.executable, "-m", "keras_edge"]
    proc = subprocess.run([*cli, "export", str(tmp_path / "m.keras"), "--out", str(tmp_path / "d"),
                           "--formats", "onnx", "--validation", str(tmp_path / "val.npz"),
                           "--min-confidence", "0.9"], capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "d" / "manifest.json").read_text())["head"]["threshold"] == 0.9
    proc = subprocess.run([*cli, "predict", str(tmp_path / "d"), str(tmp_path / "x.npy"),
                           "--format", "json"], capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout)
    rows = [dict(zip(answer["columns"], r, strict=True)) for r in answer["rows"]]
    unknown = [r for r in rows if r["class"] == -1]
    assert unknown and all(r["label"] == "unknown" for r in unknown)
    assert all(max(v for k, v in r.items() if k.startswith("p_")) <= 0.9 for r in unknown)
    proc = subprocess.run([*cli, "predict", str(tmp_path / "d"), str(tmp_path / "x.npy"),
                           "--format", "json", "--min-confidence", "0.1"],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0 and -1 not in [r[-2] for r in json.loads(proc.stdout)["rows"]]
    proc = subprocess.run([*cli, "predict", str(tmp_path / "d"), str(tmp_path / "x.npy"),
                           "--min-confidence", "1"], capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 2 and "strictly between 0 and 1, got 1.0" in proc.stderr


def test_bad_minimum_confidences_are_refused(digits, tmp_path, seed_dir):
    with pytest.raises(UsageError, match=r"only for a multiclass .* got a binary head"):
        exporter.export(seed_dir / "seed.keras", tmp_path / "a", min_confidence=0.7)
    for bad in (0.0, 1.0, 1.5, "high"):
        with pytest.raises(UsageError, match=re.escape(f"strictly between 0 and 1, got {bad!r}")):
            exporter.export(digits.model, tmp_path / "b", formats=["onnx"], min_confidence=bad)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    exporter.export(digits.model, tmp_path / "c", formats=["onnx"], validation=digits.x_val)
    clf = runtime.load(tmp_path / "c")
    assert clf.threshold is None and (clf.predict(digits.x_val) >= 0).all()  # plain argmax
    with pytest.raises(InputError, match="strictly between 0 and 1, got 0"):
        clf.threshold = 0
    clf.threshold = 0.99
    assert (clf.predict(digits.x_val * 0.3) == -1).any()
    data = json.loads((tmp_path / "c" / "manifest.json").read_text())
    data["variants"]["onnx-fp32"]["threshold"] = 1.0
    (tmp_path / "c" / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ManifestError, match=r"variant 'onnx-fp32' strictly between 0 and 1, got 1\.0"):
        runtime.load(tmp_path / "c")
