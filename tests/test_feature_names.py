"""Feature names travel with the model: a file's columns reach it by name, never by position.

A breast-cancer classifier (scikit-learn's data set, six named raw features) exported from CSV
files through the console script, as a user runs it; then CSV, Parquet and Arrow batches with
the columns in another order must give the same classes as the right order, and a missing or
unexpected column is exit 2 naming both lists.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from keras_edge import runtime
from keras_edge.runtime.errors import UsageError
from tests.test_cli import one_line_error, run

COLUMNS = (0, 1, 2, 3, 20, 22)  # mean radius/texture/perimeter/area, worst radius/perimeter


def _write_csv(path: Path, names: list[str], x: np.ndarray, order: list[int], y=None) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow([names[i] for i in order] + ([] if y is None else ["label"]))
        for i, row in enumerate(x):
            writer.writerow([repr(float(row[j])) for j in order] + ([] if y is None else [int(y[i])]))
    return path


@pytest.fixture(scope="module")
def named(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """(model, names, held-out x, folder): exported from a CSV header; validated on a CSV whose
    columns are in reverse order (matched by name at export too)."""
    import keras
    from sklearn.datasets import load_breast_cancer

    keras.utils.set_random_seed(0)
    data = load_breast_cancer()
    names = [str(data.feature_names[i]).replace(" ", "_") for i in COLUMNS]
    x = data.data[:, COLUMNS].astype(np.float32)
    y = data.target.astype(np.float32)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    norm = keras.layers.Normalization()
    norm.adapt(x[:400])
    model = keras.Sequential([keras.Input((6,)), norm, keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(1, activation="sigmoid")])  # fmt: skip
    model.compile("adam", "binary_crossentropy")
    model.fit(x[:400], y[:400], epochs=20, batch_size=32, verbose=0)
    folder = tmp_path_factory.mktemp("named")
    model.save(folder / "bc.keras")
    forward, backward = list(range(6)), list(reversed(range(6)))
    _write_csv(folder / "train.csv", names, x[:400], forward, y[:400])
    _write_csv(folder / "val.csv", names, x[400:], backward, y[400:])
    proc = run("export", folder / "bc.keras", "--out", folder / "dist", "--label-column", "label",
               "--calibration", folder / "train.csv", "--validation", folder / "val.csv")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return model, names, x[400:], folder


def _classes(stdout: str) -> list[str]:
    return [line.split(",")[1] for line in stdout.strip().splitlines()[1:]]


def test_a_reordered_header_gives_the_classes_of_the_right_order(named, tmp_path):
    model, names, x, folder = named
    manifest = json.loads((folder / "dist" / "manifest.json").read_text())
    assert manifest["inputs"][0]["features"] == names  # the training CSV's order
    keras_classes = [str(int(p > 0.5)) for p in model.predict(x, verbose=0)[:, 0]]
    right = run("predict", folder / "dist", _write_csv(tmp_path / "a.csv", names, x, list(range(6))))
    shuffled = _write_csv(tmp_path / "b.csv", names, x, [5, 2, 0, 4, 1, 3])
    swapped = run("predict", folder / "dist", shuffled)
    assert right.returncode == swapped.returncode == 0, swapped.stderr
    assert swapped.stdout == right.stdout
    assert _classes(right.stdout) == keras_classes
    # --columns still overrides: it names the features in the model's order.
    chosen = run("predict", folder / "dist", tmp_path / "b.csv", "--columns", ",".join(names))
    assert chosen.returncode == 0 and chosen.stdout == right.stdout, chosen.stderr
    # The parity at export ran on the reversed validation CSV, matched by name: it agreed.
    assert all(v["parity"]["label_agreement"] == 1.0 for v in manifest["variants"].values())


def test_a_missing_or_unexpected_column_exits_2_naming_both(named, tmp_path):
    _, names, x, folder = named
    five = _write_csv(tmp_path / "five.csv", names, x[:, :5], list(range(5)))
    line = one_line_error(proc := run("predict", folder / "dist", five))
    assert proc.returncode == 2
    assert f"missing ['{names[5]}']" in line and str(names) in line and str(names[:5]) in line
    extra = tmp_path / "extra.csv"
    with open(extra, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([*names, "id"])
        writer.writerows([*map(float, row), i] for i, row in enumerate(x[:20]))
    line = one_line_error(proc := run("predict", folder / "dist", extra))
    assert proc.returncode == 2 and "unexpected ['id']" in line and "--keep-columns" in line
    proc = run("predict", folder / "dist", extra, "--keep-columns", "id")
    assert proc.returncode == 0 and proc.stdout.splitlines()[0].startswith("id,"), proc.stderr
    # Without a header, the positional rule, as --help says.
    bare = tmp_path / "bare.csv"
    bare.write_text("".join(",".join(map(repr, map(float, r))) + "\n" for r in x[:20]))
    proc = run("predict", folder / "dist", bare, "--no-header")
    assert proc.returncode == 0, proc.stderr
    assert "taken by position" in " ".join(run("predict", "--help").stdout.split())


def test_parquet_and_batches_are_matched_by_name(named, tmp_path):
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    model, names, x, folder = named
    expected = (model.predict(x, verbose=0)[:, 0] > 0.5).astype(np.int64)
    frame = pd.DataFrame(x, columns=names)[list(reversed(names))]
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp_path / "r.parquet")
    proc = run("predict", folder / "dist", tmp_path / "r.parquet", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout)
    column = answer["columns"].index("class")
    np.testing.assert_array_equal([row[column] for row in answer["rows"]], expected)
    clf = runtime.load(folder / "dist")
    scored = clf.score_batch(frame)
    np.testing.assert_array_equal(scored["class"].to_numpy(), expected)
    with pytest.raises(UsageError, match=r"missing \['mean_radius'\]"):
        clf.score_batch(frame.drop(columns=["mean_radius"]))


def test_a_lone_artifact_carries_the_names(named):
    _, names, _, folder = named
    for file in ("tflite-fp32.tflite", "onnx-fp32.onnx"):
        assert runtime.load(folder / "dist" / file).manifest.input.features == tuple(names)


def test_names_from_python_and_a_dataframe(seed_dir, seed_model, seed_val, tmp_path):
    import pandas as pd

    from keras_edge import exporter

    x, y = seed_val
    frame = pd.DataFrame(x, columns=["b", "a"])[["a", "b"]]  # the model's order is b, a
    with pytest.raises(UsageError, match=r"Expected 2 distinct feature names .* got \['a'\]"):
        exporter.export(seed_model, tmp_path / "bad", formats=["tflite"], feature_names=["a"])
    assert not (tmp_path / "bad").exists()
    manifest = exporter.export(seed_model, tmp_path / "dist", formats=["tflite"],
                               validation=(frame, y), feature_names=["b", "a"]).manifest  # fmt: skip
    assert manifest.input.features == ("b", "a")
    assert manifest.variants["tflite-fp32"].parity.label_agreement == 1.0  # reordered by name
    clf = runtime.load(tmp_path / "dist")
    np.testing.assert_array_equal(clf.score_batch(frame)["class"].to_numpy(), clf.predict(x))


def test_predict_takes_a_dataframe_by_name(named):
    import pandas as pd

    _, names, x, folder = named
    clf = runtime.load(folder / "dist")
    right = clf.predict(x)
    np.testing.assert_array_equal(clf.predict(pd.DataFrame(x, columns=names)[names[::-1]]), right)
    frame = pd.DataFrame(x, columns=names)
    np.testing.assert_array_equal(clf.predict_proba(frame), clf.predict_proba(x))
    with pytest.raises(runtime.InputError, match=r"missing \['mean_radius'\]"):
        clf.predict(pd.DataFrame(x, columns=names).drop(columns=["mean_radius"]))


def test_a_dataframe_with_numbered_columns_is_positional(seed_model, seed_val, tmp_path):
    import pandas as pd

    from keras_edge import exporter

    x, y = seed_val
    manifest = exporter.export(seed_model, tmp_path / "dist", formats=["tflite"],
                               validation=(pd.DataFrame(x), y)).manifest  # fmt: skip
    assert manifest.input.features is None
    assert manifest.variants["tflite-fp32"].parity.label_agreement == 1.0
