"""The exporter in a release build: killed at any moment it leaves the previous release whole,
it never replaces a folder that is not an export without --force, and it keeps what a failing
converter printed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from keras_edge import runtime
from keras_edge.exporter import release
from keras_edge.exporter.export import export
from keras_edge.runtime.errors import UsageError

CLI = [sys.executable, "-m", "keras_edge"]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}


def snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def siblings(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir() if p.name != folder.name)


@pytest.mark.slow
def test_an_export_killed_at_any_step_leaves_the_previous_release_whole(seed_dir, fp32_export, tmp_path):
    out = tmp_path / "dist"
    shutil.copytree(fp32_export, out)
    (out / "NOTES.md").write_text("release notes a user keeps beside the artifacts\n")
    before = snapshot(out)
    command = [
        *CLI, "export", seed_dir / "seed.keras", "--out", out, "--quantize", "fp16",
        "--validation", seed_dir / "val.npz",
    ]  # fmt: skip
    rng = np.random.default_rng(0)
    # Killed as each step begins, plus a random fraction of a second: converting, checking.
    for step in (1, 3, 5, 7, 8):
        proc = subprocess.Popen(
            [*map(str, command)], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=ENV, text=True
        )
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.startswith(f"[{step}/8]"):
                break
        else:
            pytest.fail(f"the export ended before step {step}: exit {proc.wait()}")
        time.sleep(float(rng.uniform(0, 0.3)))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        after = snapshot(out)
        # The previous release, byte for byte; or, killed after its last step, the whole new one.
        if after != before:
            assert step == 8, f"killed at step {step}: the previous release changed"
            assert_complete(out, NEW_VARIANTS)
        assert all(".staging-" in name for name in siblings(out)), siblings(out)
        runtime.load(out, variant="onnx-fp32", verify=True)  # still loads and decides as exported

    done = subprocess.run([*map(str, command)], capture_output=True, text=True, env=ENV, timeout=600)
    assert done.returncode == 0, done.stderr
    assert siblings(out) == [], "the next export removes what killed ones left"
    assert_complete(out, NEW_VARIANTS)
    assert (out / "NOTES.md").read_text() == before["NOTES.md"].decode()  # a user's file stays


NEW_VARIANTS = ["onnx-fp16", "onnx-fp32", "tflite-fp16", "tflite-fp32"]


def assert_complete(out: Path, variants: list[str]) -> None:
    manifest = runtime.Manifest.read(out)
    assert sorted(manifest.variants) == variants
    for vid in manifest.variants:
        runtime.load(out, variant=vid, verify=True)


def test_a_folder_that_is_not_an_export_is_kept_without_force(seed_dir, seed_val, tmp_path):
    out = tmp_path / "photos"
    out.mkdir()
    (out / "cat.jpg").write_bytes(b"\xff\xd8 not a model")
    proc = subprocess.run(
        [*map(str, [*CLI, "export", seed_dir / "seed.keras", "--out", out])],
        capture_output=True, text=True, env=ENV, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("keras-edge")]
    assert "previous keras-edge export" in line and "cat.jpg" in line and "--force" in line
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["cat.jpg"]
    assert siblings(out) == []  # refused before any staging folder was made

    (out / "album").mkdir()
    (out / "album" / "dog.jpg").write_bytes(b"woof")
    inode = (out / "album").stat().st_ino
    export(seed_dir / "seed.keras", out, validation=seed_val, force=True)
    assert (out / "cat.jpg").read_bytes() == b"\xff\xd8 not a model"
    assert runtime.load(out).variant == "tflite-fp32"
    # Written into the folder file by file: the user's tree is neither copied nor moved.
    assert (out / "album").stat().st_ino == inode and (out / "album" / "dog.jpg").read_bytes() == b"woof"
    assert siblings(out) == []


def test_an_unreadable_manifest_is_not_a_previous_export(seed_dir, tmp_path):
    out = tmp_path / "dist"
    out.mkdir()
    (out / "manifest.json").write_text("{ half written")
    with pytest.raises(UsageError, match="is not a keras-edge manifest"):
        export(seed_dir / "seed.keras", out)
    assert (out / "manifest.json").read_text() == "{ half written"


@pytest.mark.parametrize("atomic", [True, False], ids=["exchange", "two-renames"])
def test_install_swaps_the_whole_folder(tmp_path, monkeypatch, atomic):
    out, staging = tmp_path / "dist", tmp_path / ".dist.staging-1-x"
    out.mkdir()
    staging.mkdir()
    (out / "onnx-int8.onnx").write_bytes(b"old variant")  # the previous export's: dropped
    (out / "manifest.json").write_bytes(b"old")
    (out / "NOTES.md").write_bytes(b"kept")
    (staging / "manifest.json").write_bytes(b"new")
    if not atomic:
        monkeypatch.setattr(release, "_exchange", lambda a, b: False)
    out.chmod(0o750)
    release.install(staging, out, own={"manifest.json", "onnx-int8.onnx"})
    assert out.stat().st_mode & 0o777 == 0o750  # the folder's mode, not mkdtemp's 0700
    assert snapshot(out) == {"NOTES.md": b"kept", "manifest.json": b"new"}
    assert [p.name for p in tmp_path.iterdir()] == ["dist"]


def test_a_release_left_aside_by_a_kill_between_renames_is_restored(tmp_path):
    out = tmp_path / "dist"
    aside = tmp_path / ".dist.previous-999999"
    aside.mkdir()
    (aside / "manifest.json").write_bytes(b"previous")
    release.check_out(out, force=True)  # the first thing an export does
    assert (out / "manifest.json").read_bytes() == b"previous" and not aside.exists()


def test_a_stale_staging_folder_of_a_dead_export_is_removed(tmp_path):
    out = tmp_path / "dist"
    dead = tmp_path / ".dist.staging-999999-abc"  # no such process
    dead.mkdir()
    mine, whole = release.staging_for(out)
    assert whole
    assert not dead.exists() and mine.is_dir() and f"staging-{os.getpid()}-" in mine.name


def test_a_folder_that_cannot_be_swapped_is_installed_file_by_file(tmp_path, monkeypatch):
    """A volume or bind mount (EBUSY), another file system (EXDEV): the swap fails after every
    conversion ran, and the release goes in file by file, the manifest last, the user's files
    untouched."""
    import errno

    out, staging = tmp_path / "dist", tmp_path / ".dist.staging-1-x"
    out.mkdir()
    staging.mkdir()
    (out / "NOTES.md").write_bytes(b"kept")
    (out / "manifest.json").write_bytes(b"old")
    (staging / "manifest.json").write_bytes(b"new")
    (staging / "onnx-fp32.onnx").write_bytes(b"model")

    def busy(a: Path, b: Path) -> bool:
        raise OSError(errno.EBUSY, os.strerror(errno.EBUSY))

    monkeypatch.setattr(release, "_exchange", busy)
    release.install(staging, out, own={"manifest.json", "onnx-fp32.onnx"})
    assert snapshot(out) == {"NOTES.md": b"kept", "manifest.json": b"new", "onnx-fp32.onnx": b"model"}
    assert not staging.exists()


def test_a_hand_edited_export_is_still_a_previous_export(fp32_export, seed_dir, seed_val, tmp_path):
    """A manifest the runtime refuses (a head threshold edited by hand) still marks a previous
    export: a new export replaces it without --force, and loads."""
    out = tmp_path / "dist"
    shutil.copytree(fp32_export, out)
    data = json.loads((out / "manifest.json").read_text())
    data["head"]["threshold"] = 0.9
    (out / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(runtime.ManifestError, match="changed after the export"):
        runtime.load(out)
    export(seed_dir / "seed.keras", out, validation=seed_val)
    assert runtime.load(out).threshold == 0.5
