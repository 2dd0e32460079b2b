"""``export()`` in Python: a variant that misses its gate is a result, not a traceback. The
result carries the table the CLI prints and names the failed variants; ``strict=True`` and
``raise_for_gate()`` raise the ParityError the CLI exits 3 with."""

from __future__ import annotations

import logging

import pytest

from keras_edge import exporter, runtime
from keras_edge.cli import main

# The seed's onnx-int8 flips at least one of its 1,000 validation samples: with every variant
# held to 100% agreement and no mixed-precision fallback, it fails its gate (test_failures.py).
FAILING = {"formats": ["onnx"], "quantize": "int8", "min_agreement": 1.0, "int8_fallback": "none"}


@pytest.fixture(scope="module")
def failed_export(seed_dir, seed_val, tmp_path_factory):
    out = tmp_path_factory.mktemp("result") / "dist"
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    log = logging.getLogger("keras_edge.exporter")  # the export's modules log under it
    log.addHandler(handler)
    try:
        result = exporter.export(
            seed_dir / "seed.keras", out, calibration=seed_val[0], validation=seed_val, **FAILING
        )
    finally:
        log.removeHandler(handler)
    return out, result, records


def test_python_export_returns_its_table_with_the_failed_variant(failed_export):
    out, result, records = failed_export
    assert isinstance(result, exporter.ExportResult)
    assert result.failed == ("onnx-int8",) and not result.passed and result.refused == {}
    assert result.out == out
    # The manifest on disk is the one returned; the failed variant is in it, never the default.
    on_disk = runtime.Manifest.read(out)
    assert on_disk.to_json() == result.manifest.to_json()
    assert not result.variants["onnx-int8"].passed and result.default_variant == "onnx-fp32"
    assert result.head.kind == "binary"
    # The table: one row per variant, the failed one ends in "NO", and print() shows it.
    rows = {line.split()[0]: line.split() for line in result.table.splitlines()[2:4]}
    assert rows["onnx-int8"][-1] == "NO" and rows["onnx-fp32*"][-1] == "yes"
    assert "gate: 1000 samples" in result.table and "calibration: " in result.table
    assert str(result) == result.table
    # One warning names the failed variant.
    warned = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert any("failed the parity gate" in m and "onnx-int8" in m for m in warned), warned


def test_raise_for_gate_raises_what_strict_raises(failed_export, seed_dir, seed_val, tmp_path):
    _, result, _ = failed_export
    with pytest.raises(exporter.ParityError, match="onnx-int8: label agreement") as info:
        result.raise_for_gate()
    assert info.value.failed == ["onnx-int8"]
    with pytest.raises(exporter.ParityError) as strict:
        exporter.export(seed_dir / "seed.keras", tmp_path / "d", calibration=seed_val[0],
                        validation=seed_val, strict=True, **FAILING)  # fmt: skip
    assert strict.value.failed == ["onnx-int8"]
    assert str(strict.value).replace(str(tmp_path / "d"), "OUT") == str(info.value).replace(
        str(result.out), "OUT"
    )
    assert not runtime.Manifest.read(tmp_path / "d").variants["onnx-int8"].passed  # written


def test_the_cli_prints_the_same_table_then_exits_3(failed_export, seed_dir, tmp_path, capsys):
    _, result, _ = failed_export
    code = main(["export", str(seed_dir / "seed.keras"), "--out", str(tmp_path / "d"),
                 "--formats", "onnx", "--quantize", "int8", "--calibration", str(seed_dir / "val.npz"),
                 "--validation", str(seed_dir / "val.npz"), "--min-agreement", "1",
                 "--int8-fallback", "none"])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 3, captured.err
    assert captured.out == result.table
    gate = [line for line in captured.err.splitlines() if line.startswith("keras-edge")]
    assert len(gate) == 1 and gate[0].startswith("keras-edge: gate failed: 1 variant(s) failed")


def test_every_variant_passing_raises_nothing(seed_dir, seed_val, tmp_path):
    result = exporter.export(seed_dir / "seed.keras", tmp_path / "d", formats=["onnx"],
                             validation=seed_val, strict=True)  # fmt: skip
    assert result.passed and result.failed == () and result.gate_error() is None
    result.raise_for_gate()
    assert "onnx-fp32*" in str(result)
