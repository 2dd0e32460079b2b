"""Threshold tuning against a brute-force search over every candidate cut, with scikit-learn's
metrics as the reference."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn import metrics

from keras_edge.exporter.errors import TuningError
from keras_edge.exporter.tuning import Objective, confusion_at_candidates, tune
from keras_edge.runtime.errors import UsageError


def _sk(objective: Objective, y: np.ndarray, pred: np.ndarray) -> float:
    """The objective by scikit-learn (or -inf where a floor is not met)."""
    if objective.kind == "f1":
        return metrics.f1_score(y, pred, zero_division=0)
    if objective.kind == "fbeta":
        return metrics.fbeta_score(y, pred, beta=objective.beta, zero_division=0)
    if objective.kind == "balanced-accuracy":
        return metrics.balanced_accuracy_score(y, pred)
    if objective.kind == "mcc":
        return metrics.matthews_corrcoef(y, pred)
    tn, fp, fn, tp = metrics.confusion_matrix(y, pred, labels=[0, 1]).ravel()
    if objective.kind == "youden":
        return metrics.recall_score(y, pred, zero_division=0) + tn / (tn + fp) - 1
    if objective.kind == "precision>=":
        ok = tp + fp > 0 and metrics.precision_score(y, pred, zero_division=0) >= objective.floor
        return metrics.recall_score(y, pred, zero_division=0) if ok else -np.inf
    if objective.kind == "recall>=":
        ok = metrics.recall_score(y, pred, zero_division=0) >= objective.floor
        return metrics.precision_score(y, pred, zero_division=0) if ok else -np.inf
    return -(objective.fp_cost * fp + objective.fn_cost * fn) / len(y)


def _scores(kind: str, n: int = 600) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    y = (rng.random(n) < 0.12).astype(int)  # imbalanced, as fraud or defects are
    z = rng.normal(0, 1, n) + 1.6 * y
    p = 1 / (1 + np.exp(-z))
    if kind == "int8":  # the steps of a full-int8 sigmoid output: many exact ties
        p = np.round(p * 256) / 256
    return p.astype(np.float32), y


OBJECTIVES = ["f1", "fbeta:2", "fbeta:0.5", "youden", "balanced-accuracy", "mcc",
              "precision>=0.6", "recall>=0.9", "cost:fp=1,fn=10"]  # fmt: skip


@pytest.mark.parametrize("kind", ["float", "int8"])
@pytest.mark.parametrize("text", OBJECTIVES)
def test_tuned_threshold_is_the_brute_force_optimum(text, kind):
    objective = Objective.parse(text)
    p, y = _scores(kind)
    tuned = tune(p, y, objective)
    cuts = confusion_at_candidates(p, y)[0]
    best = max(_sk(objective, y, (p > c).astype(int)) for c in cuts)
    at_ours = _sk(objective, y, (p > np.float32(tuned.threshold)).astype(int))
    sign = -1 if objective.kind == "cost" else 1
    assert at_ours == pytest.approx(best, abs=1e-12)
    assert tuned.value == pytest.approx(sign * best, abs=1e-12)
    tn, fp, fn, tp = metrics.confusion_matrix(y, (p > tuned.threshold).astype(int)).ravel()
    assert (tuned.tp, tuned.fp, tuned.tn, tuned.fn) == (tp, fp, tn, fn)
    # The cut lies strictly between two adjacent distinct scores, never on one.
    assert 0 < tuned.threshold < 1 and not np.isclose(p, tuned.threshold, atol=1e-9).any()


def test_ties_go_to_the_threshold_nearest_half():
    p = np.array([0.1, 0.2, 0.8, 0.9], np.float32)
    y = np.array([0, 0, 1, 1])
    # Every cut in (0.2, 0.8) is perfect: the midpoint candidate is 0.5 itself.
    assert tune(p, y, Objective.parse("f1")).threshold == pytest.approx(0.5)


def test_an_objective_that_cannot_be_met_is_a_clear_error():
    p = np.array([0.95, 0.9, 0.6, 0.4, 0.3], np.float32)  # the most confident one is wrong
    y = np.array([0, 1, 1, 0, 1])
    with pytest.raises(TuningError, match=r"reaches precision >= 0.9 .*the best is 0\.6667"):
        tune(p, y, Objective.parse("precision>=0.9"))


@pytest.mark.parametrize("text", ["f2", "fbeta:0", "precision>=1.5", "cost:fp=0,fn=0", "auc", ""])
def test_bad_objectives_are_refused(text):
    with pytest.raises(UsageError, match="Expected a tuning objective"):
        Objective.parse(text)


@pytest.fixture(scope="module")
def is_it_a_three(tmp_path_factory):
    """An MLP on scikit-learn's digits, "is it a 3?": about 1 positive in 10."""
    import keras
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = (digits.target == 3).astype(np.float32)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(1, activation="sigmoid")])  # fmt: skip
    model.compile("adam", "binary_crossentropy")
    model.fit(x[:900], y[:900], epochs=4, batch_size=64, verbose=0)  # short: imperfect on purpose
    return model, (x[900:1350], y[900:1350]), (x[1350:], y[1350:])


def test_export_tunes_keras_and_every_variant_on_its_own_scores(is_it_a_three, tmp_path):
    from keras_edge import exporter, runtime

    model, tune_data, validation = is_it_a_three
    manifest = exporter.export(model, tmp_path / "d", quantize="int8", calibration=tune_data[0],
                               validation=validation, tune="f1", tune_data=tune_data,
                               min_agreement=0.95).manifest  # the gate is not the point  # fmt: skip
    keras_p = model.predict(tune_data[0], verbose=0)[:, 0]
    expected = tune(keras_p, tune_data[1], Objective.parse("f1"))
    assert manifest.head.threshold == pytest.approx(expected.threshold)
    assert manifest.tuning["optimistic"] is False and manifest.tuning["objective"] == "f1"
    assert manifest.tuning["keras"][0]["value"] == pytest.approx(expected.value)
    for vid, variant in manifest.variants.items():
        clf = runtime.load(tmp_path / "d", variant=vid)
        own = np.concatenate([clf.predict_proba(tune_data[0][i : i + 1]) for i in range(len(keras_p))])
        mine = tune(own[:, 0], tune_data[1], Objective.parse("f1"))
        assert variant.threshold == pytest.approx(mine.threshold) == clf.threshold, vid
        assert variant.tuning["labels"][0]["value"] == pytest.approx(mine.value)
        pred = clf.predict(tune_data[0])
        assert metrics.f1_score(tune_data[1], pred) == pytest.approx(mine.value)


def test_tuning_on_the_validation_data_says_it_is_optimistic(is_it_a_three, tmp_path, caplog):
    from keras_edge import exporter

    model, _, validation = is_it_a_three
    manifest = exporter.export(model, tmp_path / "d", formats=["onnx"], validation=validation,
                               tune="cost:fp=1,fn=10").manifest  # fmt: skip
    assert manifest.tuning["optimistic"] is True
    assert "optimistic" in caplog.text
    assert manifest.head.threshold < 0.5  # misses cost 10x false alarms: the cut goes down


def test_cli_refuses_an_objective_no_threshold_reaches(is_it_a_three, tmp_path):
    import subprocess
    import sys

    model, _, validation = is_it_a_three
    model.save(tmp_path / "m.keras")
    np.savez(tmp_path / "val.npz", x=validation[0], y=validation[1])
    proc = subprocess.run(
        [sys.executable, "-m", "keras_edge", "export", str(tmp_path / "m.keras"), "--out",
         str(tmp_path / "d"), "--validation", str(tmp_path / "val.npz"), "--tune-threshold",
         "recall>=1.0", "--formats", "onnx"],
        capture_output=True, text=True,
    )  # fmt: skip
    # recall >= 1 is always reachable (call everything positive); precision >= 1 may not be.
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "keras_edge", "export", str(tmp_path / "m.keras"), "--out",
         str(tmp_path / "e"), "--validation", str(tmp_path / "val.npz"), "--tune-threshold",
         "precision>=1.1"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 2 and "Expected a tuning objective" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "e").exists()


def test_plot_draws_the_objective_for_keras_and_each_variant(is_it_a_three, tmp_path):
    import subprocess
    import sys

    model, tune_data, validation = is_it_a_three
    model.save(tmp_path / "m.keras")
    np.savez(tmp_path / "val.npz", x=validation[0], y=validation[1])
    np.savez(tmp_path / "tune.npz", x=tune_data[0], y=tune_data[1])
    cli = [sys.executable, "-m", "keras_edge", "export", str(tmp_path / "m.keras"), "--out",
           str(tmp_path / "d"), "--validation", str(tmp_path / "val.npz"),
           "--formats", "onnx"]  # fmt: skip
    proc = subprocess.run([*cli, "--plot", str(tmp_path / "t.png")], capture_output=True, text=True)
    assert proc.returncode == 2 and "Expected --tune-threshold with --plot" in proc.stderr
    proc = subprocess.run([*cli, "--tune-threshold", "f1", "--plot", str(tmp_path / "t.txt")],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 2 and "Expected a .png, .svg or .pdf file for --plot" in proc.stderr
    assert not (tmp_path / "d").exists()
    tuned = ["--tune-threshold", "f1", "--tune-data", str(tmp_path / "tune.npz")]
    proc = subprocess.run([*cli, *tuned, "--plot", str(tmp_path / "t.svg")],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    svg = (tmp_path / "t.svg").read_text()
    manifest = json.loads((tmp_path / "d" / "manifest.json").read_text())
    for name, threshold in [("keras", manifest["head"]["threshold"]),
                            ("onnx-fp32", manifest["variants"]["onnx-fp32"]["threshold"])]:  # fmt: skip
        assert f"{name}: t={threshold:.4g}" in svg  # each curve's legend names its chosen cut
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
