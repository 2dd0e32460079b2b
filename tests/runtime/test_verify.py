"""``keras-edge verify`` and ``load(..., verify=True)``: the device checks that its own engine
still decides as the export did, on the golden set kept beside the artifacts. Real exports,
real engines; the failures are real tampering and a real repackaging mistake."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from keras_edge import exporter, runtime
from keras_edge.runtime.manifest import MANIFEST_NAME, sha256_file

CLI = [sys.executable, "-m", "keras_edge"]


def _verify(folder, *extra):
    return subprocess.run([*CLI, "verify", str(folder), *extra], capture_output=True, text=True)


@pytest.fixture
def all_copy(seed_all, tmp_path):
    dst = tmp_path / "dist"
    shutil.copytree(seed_all[0], dst)
    return dst


def _rehash(folder, name, key="variants"):
    """Update the manifest's sha256 (and size) of ``name`` to the file's new bytes, as a
    repackaging script would."""
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    digest, size = sha256_file(folder / name), (folder / name).stat().st_size
    if key == "golden":
        manifest["golden"]["sha256"] = digest
    else:
        for v in manifest["variants"].values():
            if v["file"] == name:
                v["sha256"], v["bytes"] = digest, size
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True))


def test_every_variant_of_a_fresh_export_verifies(seed_all):
    folder, manifest, _ = seed_all
    proc = _verify(folder, "--json")
    assert proc.returncode == 0, proc.stderr
    checks = json.loads(proc.stdout)
    assert [c["variant"] for c in checks][:2] == ["tflite-fp32", "tflite-fp16"]  # export order
    assert sorted(c["variant"] for c in checks) == sorted(manifest.variants)
    for c in checks:
        assert c["status"] == "passed", c
        assert c["n"] == manifest.golden.n
        assert c["drift"] == 0.0  # the same artifact on the same machine: bit for bit
        assert c["max_abs_diff"] <= c["tolerance"]
        assert c["flips"] == c["flips_at_export"]
    text = _verify(folder)
    assert text.returncode == 0 and "verified 8 variant(s)" in text.stdout, text.stderr
    clf = runtime.load(folder, variant="onnx-int8", verify=True)
    assert clf.variant == "onnx-int8"


def test_golden_set_holds_the_rows_nearest_the_threshold(seed_all, seed_model, seed_val):
    folder, manifest, _ = seed_all
    info = manifest.golden
    assert info.file == "golden.npz" and 200 <= info.n <= 256 and info.nearest == 64
    with np.load(folder / info.file) as golden:
        x, keras_p = golden["x"], golden["keras"]
        assert {f"variant.{v}" for v in manifest.variants} <= set(golden.files)
    p = seed_model.predict(seed_val[0], verbose=0)[:, 0]
    nearest = seed_val[0][np.argsort(np.abs(p - 0.5), kind="stable")[:64]]
    rows = {tuple(r) for r in x.tolist()}
    assert all(tuple(r) in rows for r in nearest.tolist())
    np.testing.assert_allclose(keras_p[:, 0], seed_model.predict(x, verbose=0)[:, 0], atol=1e-6)


def test_tampered_golden_set_exits_3(all_copy):
    path = all_copy / "golden.npz"
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    proc = _verify(all_copy)
    assert proc.returncode == 3, proc.stderr
    assert "golden.npz" in proc.stderr and "tflite-fp32" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


@pytest.mark.parametrize("damage", ["corrupt", "missing"])
def test_a_tampered_artifact_fails_its_own_row_and_every_other_is_checked(all_copy, damage):
    # Once the first bad file stopped verify (exit 2, one line), the other variants unchecked.
    path = all_copy / "onnx-fp16.onnx"
    if damage == "corrupt":
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
        reason = "has sha256"
    else:
        path.unlink()
        reason = "found none"
    proc = _verify(all_copy, "--json")
    assert proc.returncode == 3, proc.stderr
    checks = {c["variant"]: c for c in json.loads(proc.stdout)}
    assert len(checks) == 8
    tampered = checks.pop("onnx-fp16")
    assert tampered["status"] == "FAILED" and tampered["n"] == 0, tampered
    assert tampered["failures"] == [tampered["failures"][0]] and reason in tampered["failures"][0]
    assert {vid: c["status"] for vid, c in checks.items()} == {vid: "passed" for vid in checks}
    ours = [line for line in proc.stderr.splitlines() if line.startswith("keras-edge:")]
    assert len(ours) == 1 and "onnx-fp16" in ours[0] and reason in ours[0], proc.stderr
    text = _verify(all_copy)
    assert text.returncode == 3, text.stderr
    rows: dict = {}
    for line in text.stdout.splitlines():  # the table's row, not the reason line under it
        if line.strip():
            rows.setdefault(line.split()[0], line.split())
    assert rows["onnx-fp16"][-1] == "FAILED" and rows["tflite-int8"][-1] == "passed", text.stdout
    assert "onnx-fp16 FAILED: integrity: Variant 'onnx-fp16'" in text.stdout and reason in text.stdout
    assert "verified 7 variant(s)" in text.stdout


def test_a_tampered_manifest_stops_verify_with_exit_2(all_copy):
    (all_copy / MANIFEST_NAME).write_text("{not json")
    proc = _verify(all_copy)
    assert proc.returncode == 2 and "manifest" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stdout == ""


def test_golden_set_changed_with_its_hash_names_every_variant(all_copy):
    path = all_copy / "golden.npz"
    with np.load(path) as golden:
        arrays = {name: golden[name] for name in golden.files}
    arrays["x"] = arrays["x"] + np.float32(0.25)  # other inputs, the same recorded answers
    with zipfile.ZipFile(path, "w") as archive:
        for name, value in arrays.items():
            with archive.open(f"{name}.npy", "w") as fh:
                np.lib.format.write_array(fh, value)
    _rehash(all_copy, "golden.npz", key="golden")
    proc = _verify(all_copy)
    assert proc.returncode == 3, proc.stderr
    for vid in ("tflite-fp32", "onnx-fp32", "tflite-int8", "onnx-int8"):
        assert vid in proc.stderr


def test_int8_file_of_another_export_fails_verify(seed_dir, seed_val, seed_all, all_copy, tmp_path):
    # Another export of the same model, calibrated on a different sample: a repackaging script
    # copies its int8 file over ours and updates the hash. The load succeeds; verify must not.
    calib = seed_all[2]
    other = tmp_path / "other"
    exporter.export(
        seed_dir / "seed.keras",
        other,
        formats=["tflite"],
        quantize="int8",
        calibration=calib[calib[:, 0] < 0.5],
        min_agreement=0.0,
    )
    assert sha256_file(other / "tflite-int8.tflite") != sha256_file(all_copy / "tflite-int8.tflite")
    shutil.copy(other / "tflite-int8.tflite", all_copy / "tflite-int8.tflite")
    _rehash(all_copy, "tflite-int8.tflite")
    runtime.load(all_copy, variant="tflite-int8")  # the hash matches: nothing else notices
    proc = _verify(all_copy, "--json")
    assert proc.returncode == 3
    assert "tflite-int8" in proc.stderr and "answers moved" in proc.stderr
    status = {c["variant"]: c["status"] for c in json.loads(proc.stdout)}
    assert status.pop("tflite-int8") == "FAILED"
    assert set(status.values()) == {"passed"}
    with pytest.raises(runtime.VerificationError, match="tflite-int8"):
        runtime.load(all_copy, variant="tflite-int8", verify=True)


def test_export_without_golden_set_is_refused_with_exit_2(export_copy):
    manifest = json.loads((export_copy / MANIFEST_NAME).read_text())
    manifest.pop("golden")
    (export_copy / MANIFEST_NAME).write_text(json.dumps(manifest))
    proc = _verify(export_copy)
    assert proc.returncode == 2 and "export again" in proc.stderr, proc.stderr
    unknown = _verify(export_copy, "--variants", "tflite-int4")
    assert unknown.returncode == 2 and "tflite-int4" in unknown.stderr


def test_verify_holds_a_variant_to_the_limits_recorded_at_export(all_copy):
    """One gate: verify takes the tolerance the export applied from the manifest, not its own."""
    manifest = json.loads((all_copy / MANIFEST_NAME).read_text())
    manifest["variants"]["tflite-int8"]["parity"]["tolerance"] = 1e-6  # as if set at export
    (all_copy / MANIFEST_NAME).write_text(json.dumps(manifest))
    proc = _verify(all_copy, "--json")
    assert proc.returncode == 3, proc.stderr
    checks = {c["variant"]: c for c in json.loads(proc.stdout)}
    assert checks["tflite-int8"]["status"] == "FAILED" and checks["tflite-int8"]["tolerance"] == 1e-6
    assert "exceeds tolerance 1e-06" in checks["tflite-int8"]["failures"][0]
    assert all(c["status"] == "passed" for vid, c in checks.items() if vid != "tflite-int8")


def test_the_one_gate_counts_flips_as_the_export_does():
    """judge(): flips within the near-tie band, and flips the export already accepted, are not
    held against the agreement minimum; the same flips farther out are."""
    from keras_edge.runtime.gate import Limits, judge
    from keras_edge.runtime.manifest import Head

    head = Head("binary", "probability", 1, ("0", "1"), 0.5)
    keras = np.linspace(0.01, 0.99, 200, dtype=np.float32).reshape(-1, 1)
    outputs = keras.copy()
    outputs[[0, 199]] = 1 - keras[[0, 199]]  # two far flips
    strict = Limits(tolerance=1.0, min_agreement=1.0)
    verdict = judge(head, keras, outputs, "fp32", 0.5, limits=strict)
    assert verdict.flips == 2 and not verdict.passed
    assert "below the required 100.00%" in verdict.failures[0]
    excused = np.zeros(200, dtype=bool)
    excused[[0, 199]] = True  # both flipped at export too: the export accepted them
    assert judge(head, keras, outputs, "fp32", 0.5, limits=strict, excused=excused).passed
    near = np.full((200, 1), 0.5, dtype=np.float32)
    near[:2] = [[0.5 + 1e-5], [0.5 - 1e-5]]  # Keras on the threshold's edge
    flipped = near.copy()
    flipped[:2] = [[0.5 - 1e-5], [0.5 + 1e-5]]
    tie = judge(head, near, flipped, "fp32", 0.5, limits=strict)
    assert tie.flips == 2 and tie.near_ties == 2 and tie.passed
