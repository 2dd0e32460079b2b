"""The console script, run as a user runs it: exit codes, one-line errors, outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from keras_edge import runtime

CLI = [sys.executable, "-m", "keras_edge"]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def run(*args: object, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *map(str, args)], capture_output=True, text=True, env=ENV, cwd=cwd, timeout=600
    )


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.startswith(("keras-edge", "usage"))]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def test_export_predict_inspect(seed_dir, tmp_path):
    out = tmp_path / "dist"
    proc = run("export", seed_dir / "seed.keras", "--out", out, "--validation", seed_dir / "val.npz")
    assert proc.returncode == 0, proc.stderr
    assert "tflite-fp32" in proc.stdout and "onnx-fp32" in proc.stdout
    assert "[1/4]" in proc.stderr and "[4/4]" in proc.stderr  # progress while it works

    proc = run("predict", out, seed_dir / "samples.csv")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0] == "probability,class,label" and len(lines) == 7
    for line in lines[1:]:
        p, label, name = line.split(",")
        assert int(label) == int(float(p) > 0.5) and name == label  # default labels "0", "1"

    # --threshold decides for this run only, checked like the manifest's.
    proc = run("predict", out, seed_dir / "samples.csv", "--threshold", "0.999999")
    assert proc.returncode == 0, proc.stderr
    for line in proc.stdout.strip().splitlines()[1:]:
        p, label, _ = line.split(",")
        assert int(label) == int(float(p) > 0.999999)
    proc = run("predict", out, seed_dir / "samples.csv", "--threshold", "1.5")
    assert proc.returncode == 2 and "strictly between 0 and 1, got 1.5" in proc.stderr

    proc = run("predict", out, seed_dir / "val.npz", "--variant", "onnx-fp32", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["variant"] == "onnx-fp32"
    assert data["columns"] == ["probability", "class", "label"]
    assert len(data["rows"]) == 1000

    proc = run("predict", out, seed_dir / "val.npz", "--proba", "--output", tmp_path / "p.csv")
    assert proc.returncode == 0 and proc.stdout == ""
    assert (tmp_path / "p.csv").read_text().splitlines()[0] == "probability"

    proc = run("inspect", out)
    assert proc.returncode == 0, proc.stderr
    assert "p > threshold" in proc.stdout and "tflite-fp32*" in proc.stdout
    proc = run("inspect", out, "--json")
    assert json.loads(proc.stdout)["format_version"] == 1


def test_csv_with_a_label_column(fp32_export, tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("a,label,b\n2.0,1,0.0\n-1.0,0,0.5\n")
    proc = run("predict", fp32_export, path, "--label-column", "label")
    assert proc.returncode == 0, proc.stderr
    clf = runtime.load(fp32_export)
    expected = clf.predict(np.array([[2.0, 0.0], [-1.0, 0.5]], np.float32))
    assert [int(r.split(",")[1]) for r in proc.stdout.splitlines()[1:]] == list(expected)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["export", "{seed}/nope.keras", "--out", "{tmp}/d"], "Expected a Keras model file at"),
        (["export", "{seed}/seed.keras", "--out", "{tmp}/d", "--threshold", "abc"], "--threshold"),
        (["export", "{seed}/seed.keras", "--out", "{tmp}/d", "--threshold", "2"], "between 0 and 1"),
        (["export", "{seed}/seed.keras", "--out", "{tmp}/d", "--formats", "pb"], "formats from"),
        (
            ["export", "{seed}/seed.keras", "--out", "{tmp}/d", "--validation", "{tmp}/x.txt"],
            "ending in",
        ),
        (["export", "{seed}/seed.keras"], "--out"),
        (
            ["export", "{tmp}/empty.keras", "--out", "{tmp}/d"],
            r"Expected a Keras zip archive in '.*empty.keras', got an empty file \(0 bytes\)",
        ),
        (
            ["export", "{tmp}/text.keras", "--out", "{tmp}/d"],
            r"Expected a Keras zip archive in .*, got 12 bytes that are not a zip archive",
        ),
        (
            ["export", "{tmp}/text.h5", "--out", "{tmp}/d"],
            r"Expected an HDF5 file in '.*text.h5', got 12 bytes that are not HDF5",
        ),
        (["predict", "{tmp}/none", "{seed}/samples.csv"], "Expected a folder"),
        (["predict", "{dist}", "{seed}/nope.csv"], "Expected a data file at"),
        (["predict", "{dist}", "{tmp}/bad.npy"], r"Expected input of shape \(None, 2\), got \(3, 5\)"),
        (["predict", "{dist}", "{tmp}/nan.npy"], "NaN or Inf"),
        (["predict", "{dist}", "{seed}/samples.csv", "--variant", "x"], "Unknown variant 'x'"),
        (
            ["predict", "{dist}", "{tmp}/bad.csv", "--output", "{tmp}/d.csv"],
            "Bad row at line 3 of .*'abc'",
        ),
        (
            ["predict", "{dist}", "{seed}/samples.csv", "--output", "{tmp}/d.txt"],
            r"Expected --output to end in one of \.csv, \.jsonl, \.json, \.npy, \.parquet \(the "
            r"suffix decides the format\), got '\.txt' in '.*d\.txt'",
        ),
        (["predict", "{dist}", "{seed}/samples.csv", "--output", "{tmp}/d"], "got no suffix in"),
        (["predict", "{dist}", "{tmp}/noheader.csv"], "Expected a header row .* --no-header"),
        (["inspect", "{tmp}"], "Expected a manifest at"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_usage_exits_2_with_one_line(seed_dir, fp32_export, tmp_path, args, match):
    np.save(tmp_path / "bad.npy", np.zeros((3, 5), np.float32))
    np.save(tmp_path / "nan.npy", np.array([[np.nan, 0.0]], np.float32))
    (tmp_path / "bad.csv").write_text("a,b\n1,2\nabc,3\n")
    (tmp_path / "noheader.csv").write_text("1,2\n3,4\n")
    (tmp_path / "empty.keras").write_bytes(b"")
    for name in ("text.keras", "text.h5"):
        (tmp_path / name).write_text("not a model\n")
    fmt = {"seed": seed_dir, "tmp": tmp_path, "dist": fp32_export}
    proc = run(*[a.format(**fmt) for a in args])
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    line = one_line_error(proc)
    assert __import__("re").search(match, line), line
    written = [p.name for p in tmp_path.iterdir() if p.name.lstrip(".").startswith("d")]
    assert not written  # nothing half-written: no d, d.csv or d.txt, nor their temporary files


def test_lambda_model_is_refused_then_accepted_with_unsafe(tmp_path):
    import keras

    model = keras.Sequential(
        [
            keras.Input((2,)),
            keras.layers.Lambda(lambda x: x + 1.0),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.save(tmp_path / "m.keras")
    proc = run("export", tmp_path / "m.keras", "--out", tmp_path / "d", "--formats", "onnx")
    assert proc.returncode == 2 and "--unsafe" in one_line_error(proc)
    proc = run("export", tmp_path / "m.keras", "--out", tmp_path / "d", "--formats", "onnx", "--unsafe")
    assert proc.returncode == 0, proc.stderr


def test_linear_model_needs_head(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.save(tmp_path / "m.keras")
    proc = run("export", tmp_path / "m.keras", "--out", tmp_path / "d", "--formats", "onnx")
    assert proc.returncode == 2 and "--head logit or --head regression" in one_line_error(proc)
    proc = run(
        "export", tmp_path / "m.keras", "--out", tmp_path / "d", "--formats", "onnx", "--head", "logit"
    )
    assert proc.returncode == 0, proc.stderr


def test_one_line_errors_carry_no_terminal_escape_codes():
    """Keras and TensorFlow colour their messages (``\\x1b[1m``); an error line, a converter's
    first error and a manifest's reason are read in logs, CI output and JSON: plain text."""
    from keras_edge.exporter.errors import first_error
    from keras_edge.runtime.console import _one_line
    from keras_edge.runtime.errors import UsageError, plain

    coloured = "\x1b[1mThe structure of inputs doesn't match\x1b[0m: Expected \x1b[31m{'a': x}\x1b[0m"
    assert plain(coloured) == "The structure of inputs doesn't match: Expected {'a': x}"
    assert "\x1b" not in _one_line(UsageError(coloured + "\nsecond line"))
    assert first_error("noise\n\x1b[1merror:\x1b[0m op X") == "error: op X"
