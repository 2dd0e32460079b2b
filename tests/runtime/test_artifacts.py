"""Manifests and artifact files that must be refused: missing, corrupt, replaced, escaping."""

from __future__ import annotations

import hashlib
import json

import pytest

from keras_edge import runtime
from keras_edge.runtime.errors import ArtifactError, ManifestError


def _edit_manifest(folder, edit):
    path = folder / "manifest.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_missing_folder_and_manifest(tmp_path):
    with pytest.raises(ManifestError, match="Expected a folder"):
        runtime.load(tmp_path / "nope")
    with pytest.raises(ManifestError, match="Expected a manifest at"):
        runtime.load(tmp_path)


def test_manifest_that_is_not_json(tmp_path):
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="Expected JSON"):
        runtime.load(tmp_path)


@pytest.mark.parametrize("variant", ["tflite-fp32", "onnx-fp32"])
def test_missing_artifact(export_copy, variant):
    (export_copy / f"{variant}.{variant.split('-')[0]}").unlink()
    with pytest.raises(ArtifactError, match="found none"):
        runtime.load(export_copy, variant=variant)


@pytest.mark.parametrize("variant", ["tflite-fp32", "onnx-fp32"])
def test_replaced_artifact_fails_its_hash(export_copy, variant):
    path = export_copy / f"{variant}.{variant.split('-')[0]}"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"has sha256 .* the manifest expects"):
        runtime.load(export_copy, variant=variant)


@pytest.mark.parametrize("variant", ["tflite-fp32", "onnx-fp32"])
def test_corrupt_artifact_with_matching_hash_is_an_artifact_error(export_copy, variant):
    path = export_copy / f"{variant}.{variant.split('-')[0]}"
    garbage = b"this is not a model" * 10
    path.write_bytes(garbage)

    def edit(data):
        data["variants"][variant]["sha256"] = hashlib.sha256(garbage).hexdigest()

    _edit_manifest(export_copy, edit)
    with pytest.raises(ArtifactError, match=r"could not load|well-formed TFLite"):
        runtime.load(export_copy, variant=variant)


@pytest.mark.parametrize("name", ["../evil.onnx", "/etc/passwd", "sub/dir.onnx", "..\\x.onnx"])
def test_file_name_leaving_the_folder_is_refused(export_copy, name):
    _edit_manifest(export_copy, lambda d: d["variants"]["onnx-fp32"].update(file=name))
    with pytest.raises(ManifestError, match="plain file name inside"):
        runtime.load(export_copy, variant="onnx-fp32")


def test_symlink_leaving_the_folder_is_refused(export_copy, tmp_path):
    outside = tmp_path / "outside.onnx"
    outside.write_bytes((export_copy / "onnx-fp32.onnx").read_bytes())
    (export_copy / "onnx-fp32.onnx").unlink()
    (export_copy / "onnx-fp32.onnx").symlink_to(outside)
    with pytest.raises(ArtifactError, match="leaves"):
        runtime.load(export_copy, variant="onnx-fp32")


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda d: d.update(format_version=2), "format_version 1, got 2"),
        (lambda d: d.update(decision_rule="p >= threshold"), "decision_rule"),
        (lambda d: d["head"].update(threshold=1.5), "strictly between 0 and 1, got 1.5"),
        (lambda d: d["head"].update(kind="ranking"), "head kind"),
        (lambda d: d.pop("inputs"), "missing the key 'inputs'"),
        (lambda d: d.update(default_variant="onnx-int8"), "default_variant"),
    ],
)
def test_malformed_manifest(export_copy, edit, match):
    _edit_manifest(export_copy, edit)
    with pytest.raises(ManifestError, match=match):
        runtime.load(export_copy)


def test_manifest_round_trips(fp32_export):
    manifest = runtime.Manifest.read(fp32_export)
    assert manifest.to_json() == (fp32_export / "manifest.json").read_text()
