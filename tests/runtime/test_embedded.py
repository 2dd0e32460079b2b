"""The decision travels inside the artifact: every .onnx and .tflite carries the head, labels,
threshold, rule and format version; a lone file decides as its folder does; a manifest that
disagrees with its artifact is refused naming both values."""

from __future__ import annotations

import json
import re
import shutil
import sys

import numpy as np
import pytest

from keras_edge import runtime
from keras_edge.cli import main
from keras_edge.runtime import embedded
from keras_edge.runtime.manifest import MANIFEST_NAME, sha256_file

VARIANTS = ["tflite-fp32", "tflite-int8", "onnx-fp32", "onnx-int8"]


@pytest.mark.parametrize("vid", VARIANTS)
def test_every_artifact_carries_its_decision(seed_all, vid):
    folder, manifest, _ = seed_all
    data = (folder / manifest.variants[vid].file).read_bytes()
    if vid.startswith("onnx"):
        import onnx

        props = {p.key: p.value for p in onnx.load_from_string(data).metadata_props}
        record = json.loads(props["keras_edge"])
    else:
        record = embedded.read_tflite(data)
    assert record["head"]["threshold"] == 0.5 and record["head"]["labels"] == ["0", "1"]
    assert record["head"]["kind"] == "binary" and record["decision_rule"] == "p > threshold"
    assert record["format_version"] == 1 and record["variant"]["id"] == vid
    assert record["inputs"] == [s.to_dict() for s in manifest.inputs]


@pytest.mark.parametrize("vid", VARIANTS)
def test_a_lone_artifact_decides_as_its_folder(seed_all, wide_inputs, tmp_path, vid):
    folder, manifest, _ = seed_all
    lone = tmp_path / manifest.variants[vid].file
    shutil.copy(folder / manifest.variants[vid].file, lone)  # an empty folder, no manifest
    alone, together = runtime.load(lone), runtime.load(folder, variant=vid)
    assert (alone.variant, alone.threshold) == (vid, together.threshold)
    np.testing.assert_array_equal(alone.predict(wide_inputs), together.predict(wide_inputs))
    np.testing.assert_array_equal(alone.predict_proba(wide_inputs), together.predict_proba(wide_inputs))


@pytest.mark.parametrize(
    ("vid", "module", "extra"),
    [("tflite-fp32", "ai_edge_litert", "litert"), ("onnx-fp32", "onnxruntime", "onnx")],
)
def test_a_lone_artifact_whose_engine_is_absent_names_the_extra(
    fp32_export, seed_dir, tmp_path, monkeypatch, capsys, vid, module, extra
):
    lone = tmp_path / f"{vid}.{vid.split('-')[0]}"
    shutil.copy(fp32_export / lone.name, lone)
    for name in [m for m in sys.modules if m == module or m.startswith(module + ".")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, module, None)  # what an absent package looks like to import
    needs = f"pip install 'keras-edge[{extra}]'"
    with pytest.raises(runtime.BackendUnavailableError, match=re.escape(needs)):
        runtime.load(lone)
    assert main(["predict", str(lone), str(seed_dir / "samples.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("keras-edge: error: ") and needs in err and "\n" not in err, err


def test_a_lone_multi_input_artifact_keeps_its_input_order(two_inputs, tmp_path):
    _, x, folder, _ = two_inputs
    for name in ("onnx-fp32.onnx", "tflite-fp32.tflite"):
        shutil.copy(folder / name, tmp_path / name)
        alone = runtime.load(tmp_path / name)
        assert [s.name for s in alone.manifest.inputs] == ["numeric", "image"]
        together = runtime.load(folder, variant=name.split(".")[0])
        np.testing.assert_array_equal(alone.predict([x["numeric"], x["image"]]), together.predict(x))


def test_a_manifest_that_disagrees_with_its_artifact_is_refused(seed_all, tmp_path):
    folder = tmp_path / "dist"
    shutil.copytree(seed_all[0], folder)
    data = json.loads((folder / MANIFEST_NAME).read_text())
    data["variants"]["onnx-fp32"]["threshold"] = 0.7  # valid, but not what the file says
    # With a tuning record that agrees, the manifest is consistent with itself (a manifest that
    # is not is refused whole: test_threshold); only the artifact's own record disagrees.
    data["variants"]["onnx-fp32"]["tuning"] = {"objective": "f1", "labels": [{"threshold": 0.7}]}
    (folder / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(
        runtime.ManifestError,
        match=r"embedded head is .*'threshold': 0.5.*manifest says .*'threshold': 0.7",
    ):
        runtime.load(folder, variant="onnx-fp32")
    runtime.load(folder, variant="tflite-fp32")  # the other variants still load


def test_a_file_without_a_record_is_refused_alone(fp32_export, seed_dir, tmp_path):
    # An ONNX file of the same model with its record removed, as another tool would write it.
    import onnx

    model = onnx.load(str(fp32_export / "onnx-fp32.onnx"))
    del model.metadata_props[:]
    onnx.save(model, str(tmp_path / "plain.onnx"))
    with pytest.raises(runtime.ArtifactError, match="Expected a keras-edge decision record"):
        runtime.load(tmp_path / "plain.onnx")
    assert sha256_file(tmp_path / "plain.onnx")  # the file itself is fine
    with pytest.raises(runtime.InputError, match="no variant= or verify="):
        runtime.load(fp32_export / "onnx-fp32.onnx", variant="onnx-fp32")
