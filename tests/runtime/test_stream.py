"""keras-edge predict streams: every input format, chunk by chunk, into every output format,
gives the classes and probabilities of one predict() over the whole file; bad rows are refused
with their place, skipped or given nulls, and counted; labels give the metrics."""

from __future__ import annotations

import csv
import io
import json
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn import metrics as skm

from keras_edge import runtime
from keras_edge.cli import main
from keras_edge.runtime.batch.metrics import Metrics
from keras_edge.runtime.batch.stream import MAX_CHUNK, Progress, auto_chunk_size
from keras_edge.runtime.manifest import Head

ROWS = 301  # 7 and 4096 do not divide it: a short last chunk


@pytest.fixture(scope="module")
def data(seed_val) -> dict:
    """Rows of the seed's validation split with an id and the label."""
    x, y = seed_val
    return {"x": x[:ROWS], "y": y[:ROWS].astype(np.int64), "id": np.arange(1000, 1000 + ROWS)}


def _write_inputs(folder: Path, data: dict) -> dict[str, Path]:
    x, y, ids = data["x"], data["y"], data["id"]
    paths = {k: folder / f"in.{k}" for k in ("npy", "npz", "csv", "parquet", "arrow")}
    np.save(paths["npy"], x)
    np.savez_compressed(paths["npz"], x=x, y=y, id=ids)
    with open(paths["csv"], "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "x0", "y", "x1"])  # the label between the features
        w.writerows(
            [i, repr(float(a)), int(t), repr(float(b))] for i, (a, b), t in zip(ids, x, y, strict=True)
        )
    table = pa.table({"id": ids, "x0": x[:, 0], "x1": x[:, 1], "y": y})
    pq.write_table(table, paths["parquet"], row_group_size=100)
    with pa.ipc.new_file(paths["arrow"], table.schema) as writer:
        writer.write_table(table, max_chunksize=64)
    parts = folder / "parts"
    parts.mkdir()
    for i, start in enumerate(range(0, ROWS, 120)):
        pq.write_table(table.slice(start, 120), parts / f"part-{i}.parquet")
    (parts / "_SUCCESS").write_text("")  # a writer's marker: not data
    paths["folder"] = parts
    paths["glob"] = Path(str(parts / "part-*.parquet"))
    return paths


def _read_output(path: Path) -> tuple[np.ndarray, np.ndarray, list | None]:
    """(probabilities as float32, classes, ids or None) from any output format."""
    if path.suffix == ".npy":
        out = np.load(path)
        ids = out["id"].tolist() if "id" in out.dtype.names else None
        return out["probability"], out["class"], ids
    if path.suffix == ".parquet":
        t = pq.read_table(path)
        ids = t["id"].to_pylist() if "id" in t.column_names else None
        return t["probability"].to_numpy(), t["class"].to_numpy(), ids
    if path.suffix == ".csv":
        rows = list(csv.DictReader(path.open()))
        assert all(r["label"] == r["class"] for r in rows)  # default labels "0", "1"
    elif path.suffix == ".jsonl":
        rows = [json.loads(line) for line in path.read_text().splitlines()]
    else:  # one JSON document
        doc = json.loads(path.read_text())
        rows = [dict(zip(doc["columns"], r, strict=True)) for r in doc["rows"]]
    return (
        np.array([float(r["probability"]) for r in rows], dtype=np.float32),
        np.array([int(r["class"]) for r in rows]),
        [r["id"] for r in rows] if rows and "id" in rows[0] else None,
    )


@pytest.mark.parametrize("chunk", [1, 7, 4096])
@pytest.mark.parametrize("source", ["npy", "npz", "csv", "parquet", "arrow", "folder", "glob"])
def test_streaming_equals_whole_file(fp32_export, data, tmp_path, capsys, source, chunk):
    clf = runtime.load(fp32_export)
    whole_p, whole_c = clf.predict_proba(data["x"])[:, 0], clf.predict(data["x"])
    path = _write_inputs(tmp_path, data)[source]
    keep = [] if source == "npy" else ["--keep-columns", "id"]
    label = ["--label-column", "y"] if source not in ("npy", "npz") else []
    for suffix in (".csv", ".jsonl", ".json", ".npy", ".parquet"):
        out = tmp_path / f"out{suffix}"
        args = ["--output", str(out), "--chunk-size", str(chunk), *keep, *label]
        code = main(["predict", str(fp32_export), str(path), *args])
        assert code == 0, capsys.readouterr().err
        p, c, ids = _read_output(out)
        if source != "npy":  # every row, in order (CSV ids are text, and stay text)
            assert [int(i) for i in ids] == data["id"].tolist(), suffix  # type: ignore[union-attr]
        np.testing.assert_array_equal(p, whole_p, suffix)  # bit for bit
        np.testing.assert_array_equal(c, whole_c, suffix)
    assert [f.name for f in tmp_path.iterdir() if f.name.startswith(".")] == []  # no temp left


def test_stdout_formats_are_unchanged(fp32_export, data, tmp_path, capsys):
    """csv and json on stdout are what predict always printed; jsonl is one object a line."""
    clf = runtime.load(fp32_export)
    np.save(tmp_path / "x.npy", data["x"])
    p, c = clf.predict_proba(data["x"])[:, 0].tolist(), clf.predict(data["x"]).tolist()
    assert main(["predict", str(fp32_export), str(tmp_path / "x.npy"), "--chunk-size", "50"]) == 0
    expected = "probability,class,label\n" + "".join(
        f"{a:.9g},{b},{b}\n" for a, b in zip(p, c, strict=True)
    )
    assert capsys.readouterr().out == expected
    assert main(["predict", str(fp32_export), str(tmp_path / "x.npy"), "--format", "json"]) == 0
    doc = {"variant": clf.variant, "threshold": clf.threshold, "decision_rule": "p > threshold",
           "columns": ["probability", "class", "label"],
           "rows": [[a, b, str(b)] for a, b in zip(p, c, strict=True)]}  # fmt: skip
    assert capsys.readouterr().out == json.dumps(doc, indent=2) + "\n"
    assert (
        main(["predict", str(fp32_export), str(tmp_path / "x.npy"), "--format", "jsonl", "--proba"]) == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line) for line in lines] == [{"probability": a} for a in p]


BAD_CSV = """id,x0,x1,y
1,0.5,0.25,1
2,abc,0.1,0
3,0.1,0.2,1
4,0.3
5,nan,0.2,1
6,0.7,0.1,cat
7,,0.5,0
8,1.5,-0.2,1
"""
# Lines (the header is line 1) and why each bad row is bad.
BAD_LINES = {3: "expected a number in column 'x0', got 'abc'", 5: "expected 4 fields, got 2",
             6: "NaN or Inf", 7: "label 'cat' is not one of the classes", 8: "got ''"}  # fmt: skip
GOOD = [0, 2, 7]  # their rows


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".npy"])
def test_a_bad_row_is_refused_with_its_line_and_nothing_is_left(fp32_export, tmp_path, capsys, suffix):
    (tmp_path / "in.csv").write_text(BAD_CSV)
    out = tmp_path / "out" / f"scores{suffix}"
    out.parent.mkdir()
    args = ["predict", str(fp32_export), str(tmp_path / "in.csv"), "--label-column", "y",
            "--keep-columns", "id", "--output", str(out), "--chunk-size", "2"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Bad row at line 3 of" in err and "expected a number in column 'x0', got 'abc'" in err, err
    assert list(out.parent.iterdir()) == []  # no output, no temporary file


def test_bad_rows_skipped_or_null_are_counted(fp32_export, tmp_path, capsys):
    (tmp_path / "in.csv").write_text(BAD_CSV)
    clf = runtime.load(fp32_export)
    rows = [line.split(",") for line in BAD_CSV.splitlines()[1:]]
    good_x = np.array([[float(rows[i][1]), float(rows[i][2])] for i in GOOD], np.float32)
    base = [
        "predict",
        str(fp32_export),
        str(tmp_path / "in.csv"),
        "--label-column",
        "y",
        "--keep-columns",
        "id",
    ]
    for chunk in ("1", "3", "100"):
        out = tmp_path / f"skip{chunk}.csv"
        assert main([*base, "--on-bad-row", "skip", "--chunk-size", chunk, "--output", str(out)]) == 0
        captured = capsys.readouterr()
        assert "skipped 5 bad row(s) of 8; the first at line 3 of" in captured.err, captured.err
        p, _c, ids = _read_output(out)
        assert ids == ["1", "3", "8"]
        np.testing.assert_array_equal(p, clf.predict_proba(good_x)[:, 0])
        assert "metrics on 3 labelled rows" in captured.err  # the bad rows are not counted
    out = tmp_path / "null.parquet"
    assert main([*base, "--on-bad-row", "null", "--chunk-size", "3", "--output", str(out)]) == 0
    assert "gave empty outputs to 5 bad row(s) of 8" in capsys.readouterr().err
    t = pq.read_table(out)
    assert t["id"].to_pylist() == [str(i) for i in range(1, 9)]  # CSV text stays text
    nulls = [i for i, v in enumerate(t["probability"].to_pylist()) if v is None]
    assert nulls == [1, 3, 4, 5, 6] and t["class"].null_count == 5
    np.testing.assert_array_equal(t["probability"].to_numpy(zero_copy_only=False)[GOOD],
                                  clf.predict_proba(good_x)[:, 0])  # fmt: skip
    # Each bad row's reason, as the refusal names it.
    for line, reason in BAD_LINES.items():
        lines = BAD_CSV.splitlines()
        (tmp_path / "one.csv").write_text("\n".join([lines[0], lines[line - 1]]) + "\n")
        assert main(["predict", str(fp32_export), str(tmp_path / "one.csv"), "--label-column", "y",
                     "--keep-columns", "id"]) == 2  # fmt: skip
        err = capsys.readouterr().err
        assert "line 2 of" in err and reason in err, (line, err)


def test_bad_rows_in_arrays_and_parquet(fp32_export, data, tmp_path, capsys):
    x = data["x"].copy()
    x[[5, 40]] = np.nan
    np.save(tmp_path / "nan.npy", x)
    assert main(["predict", str(fp32_export), str(tmp_path / "nan.npy"), "--chunk-size", "16"]) == 2
    err = capsys.readouterr().err
    assert "Bad row at row 5 of" in err and "NaN or Inf" in err and capsys.readouterr().out == ""
    out = tmp_path / "o.npy"
    assert main(["predict", str(fp32_export), str(tmp_path / "nan.npy"), "--on-bad-row", "skip",
                 "--output", str(out)]) == 0  # fmt: skip
    assert "skipped 2 bad row(s) of 301" in capsys.readouterr().err
    assert len(np.load(out)) == ROWS - 2
    assert main(["predict", str(fp32_export), str(tmp_path / "nan.npy"), "--on-bad-row", "null",
                 "--output", str(out)]) == 2  # fmt: skip
    assert "no nulls" in capsys.readouterr().err
    table = pa.table({"a": pa.array([0.5, None, 1.0, 2.0]), "b": pa.array([0.1, 0.2, np.inf, 0.3])})
    pq.write_table(table, tmp_path / "t.parquet")
    assert main(["predict", str(fp32_export), str(tmp_path / "t.parquet")]) == 2
    err = capsys.readouterr().err
    assert "Bad row at row 1 of" in err and "null in column 'a'" in err, err
    assert main(["predict", str(fp32_export), str(tmp_path / "t.parquet"), "--on-bad-row", "skip"]) == 0
    captured = capsys.readouterr()
    assert "skipped 2 bad row(s) of 4" in captured.err and len(captured.out.splitlines()) == 3


def test_a_csv_without_a_header_is_refused_or_read_whole(fp32_export, data, tmp_path, capsys):
    path = tmp_path / "noheader.csv"
    path.write_text("".join(f"{a!r},{b!r}\n" for a, b in data["x"].tolist()))
    assert main(["predict", str(fp32_export), str(path)]) == 2
    err = capsys.readouterr().err
    assert (
        "Expected a header row" in err and "got a first row of numbers" in err and "--no-header" in err
    )
    assert main(["predict", str(fp32_export), str(path), "--no-header", "--format", "jsonl"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == ROWS  # the first row too
    clf = runtime.load(fp32_export)
    np.testing.assert_array_equal([json.loads(r)["class"] for r in lines], clf.predict(data["x"]))


def test_table_columns_are_checked_before_scoring(fp32_export, data, tmp_path, capsys):
    paths = _write_inputs(tmp_path, data)
    out = tmp_path / "o.parquet"
    # Without --keep-columns, the numeric id is a feature: three columns for two features.
    assert (
        main(
            [
                "predict",
                str(fp32_export),
                str(paths["parquet"]),
                "--label-column",
                "y",
                "--output",
                str(out),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "Expected 2 feature columns" in err and "['id', 'x0', 'x1']" in err, err
    assert not out.exists() and not [f for f in tmp_path.iterdir() if f.name.startswith(".")]
    assert (
        main(
            [
                "predict",
                str(fp32_export),
                str(paths["parquet"]),
                "--columns",
                "x0,x1",
                "--output",
                str(out),
            ]
        )
        == 0
    )
    assert pq.read_table(out).column_names == ["probability", "class"]
    for args, match in [
        (["--keep-columns", "nope"], "Expected columns ['nope']"),
        (["--columns", "x0,id,y"], None),
        (["--format", "jsonl", "--output", str(tmp_path / "o.csv")], "Expected --format csv"),
        (["--address", "x"], "only with --ray"),
        (["--chunk-size", "0"], "positive chunk size"),
    ]:
        code = main(["predict", str(fp32_export), str(paths["parquet"]), "--label-column", "y", *args])
        err = capsys.readouterr().err
        assert code == 2, (args, err)
        if match:
            assert match in err, err
    assert main(["predict", str(fp32_export), str(paths["npy"]), "--keep-columns", "id"]) == 2
    assert "a .npy file holds features only" in capsys.readouterr().err


def test_metrics_equal_scikit_learn(fp32_export, seed_val, tmp_path, capsys):
    x, y = seed_val
    np.savez(tmp_path / "val.npz", x=x, y=y)
    clf = runtime.load(fp32_export)
    clf.threshold = 0.3
    pred = clf.predict(x)
    args = ["--threshold", "0.3", "--chunk-size", "64", "--output", str(tmp_path / "o.csv"),
            "--metrics", str(tmp_path / "m.json")]  # fmt: skip
    assert main(["predict", str(fp32_export), str(tmp_path / "val.npz"), *args]) == 0
    printed = capsys.readouterr().err  # stdout carries only scores
    got = json.loads((tmp_path / "m.json").read_text())
    assert got["n"] == len(y) and got["threshold"] == 0.3
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y, pred), abs=1e-12)
    assert got["precision"] == pytest.approx(skm.precision_score(y, pred), abs=1e-12)
    assert got["recall"] == pytest.approx(skm.recall_score(y, pred), abs=1e-12)
    assert got["f1"] == pytest.approx(skm.f1_score(y, pred), abs=1e-12)
    tn, fp, fn, tp = skm.confusion_matrix(y, pred).ravel().tolist()
    assert got["counts"] == {"tp": tp, "fp": fp, "fn": fn, "tn": tn}
    assert f"tp {tp:,}  fp {fp:,}  fn {fn:,}  tn {tn:,}" in printed and "threshold 0.3" in printed


def test_multiclass_and_multilabel_metrics_equal_scikit_learn():
    rng = np.random.default_rng(3)
    head = Head("multiclass", "probability", 4, ("a", "b", "c", "d"), 0.4)
    y, pred = rng.integers(0, 4, 500), rng.integers(-1, 4, 500)  # -1: below the minimum confidence
    m = Metrics(head, 0.4)
    for part in np.array_split(np.arange(500), 7):
        m.add(y[part], pred[part])
    got = m.to_dict()
    labels = [0, 1, 2, 3]
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    for key, fn in (
        ("precision", skm.precision_score),
        ("recall", skm.recall_score),
        ("f1", skm.f1_score),
    ):
        assert got[key] == pytest.approx(fn(y, pred, labels=labels, average="macro", zero_division=0)), (
            key
        )
    assert np.array_equal(
        np.array(got["confusion"]["rows"])[:, :4], skm.confusion_matrix(y, pred, labels=labels)
    )
    assert "unknown" in m.format()
    head = Head("multilabel", "probability", 3, ("x", "y", "z"), (0.5, 0.5, 0.5))
    y, pred = rng.integers(0, 2, (200, 3)), rng.integers(0, 2, (200, 3))
    m = Metrics(head, (0.5, 0.5, 0.5)).merge(Metrics(head))
    m.add(y, pred)
    got = m.to_dict()
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))  # every label right
    assert got["f1"] == pytest.approx(skm.f1_score(y, pred, average="micro"))
    assert got["counts"]["y"]["tp"] == int(((y[:, 1] == 1) & (pred[:, 1] == 1)).sum())


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_shows_on_a_terminal_only(fp32_export):
    quiet = io.StringIO()
    progress = Progress(1000, stream=quiet)
    time.sleep(0.25)
    progress.update(500)
    progress.close()
    assert quiet.getvalue() == ""
    tty = _Terminal()
    progress = Progress(1000, stream=tty)
    time.sleep(0.25)
    progress.update(500)
    assert (
        "500 rows of 1,000 (50%)" in tty.getvalue()
        and "rows/s" in tty.getvalue()
        and "ETA" in tty.getvalue()
    )
    progress.close()
    assert tty.getvalue().endswith("\r")  # the line is cleared for what follows
    assert auto_chunk_size(runtime.load(fp32_export)) == MAX_CHUNK  # two features: small rows


def test_a_model_with_two_inputs_streams_from_an_npz(two_inputs, tmp_path, capsys):
    """One array per input name, read member by member; the image input is 4-d."""
    _, x, folder, _ = two_inputs
    np.savez(tmp_path / "two.npz", **x, id=np.arange(len(x["numeric"])))
    clf = runtime.load(folder, variant="tflite-fp32")
    out = tmp_path / "two.parquet"
    data = str(tmp_path / "two.npz")
    args = ["--variant", "tflite-fp32", "--chunk-size", "7", "--keep-columns", "id", "--output",
            str(out)]  # fmt: skip
    assert main(["predict", str(folder), data, *args]) == 0
    table = pq.read_table(out)
    assert table["id"].to_pylist() == list(range(len(x["numeric"])))
    np.testing.assert_array_equal(table["probability"].to_numpy(), clf.predict_proba(x)[:, 0])
    np.testing.assert_array_equal(table["class"].to_numpy(), clf.predict(x))
    assert main(["predict", str(folder), data, "--metrics", str(tmp_path / "m.json")]) == 2
    assert "Expected labels for --metrics" in capsys.readouterr().err
    assert not (tmp_path / "m.json").exists()


def test_reading_ahead_stops_when_scoring_stops():
    """The reading thread, its items queued and its end marker waiting for room, must not hang
    the run when the consumer stops at the first item (a bad row)."""
    from keras_edge.runtime.batch.stream import _Background

    stopped = []

    def consume_one() -> None:
        try:
            for _ in _Background(depth=1).read(iter(range(2))):
                time.sleep(0.1)  # the reader queues the last item and waits to say it is done
                raise ValueError("a bad row")
        except ValueError:
            stopped.append(True)

    worker = threading.Thread(target=consume_one, daemon=True)
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive() and stopped
    items = list(_Background().read(iter(range(1000))))
    assert items == list(range(1000))  # in order, every one
