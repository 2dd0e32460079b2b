"""Every argument of ``export()`` is checked in one place, before anything is read or written:
a wrong type is a one-line UsageError naming the value, never a TypeError from deep inside."""

from __future__ import annotations

import pytest

from keras_edge import exporter
from keras_edge.runtime.errors import UsageError


@pytest.mark.parametrize(
    ("arguments", "match"),
    [
        ({"min_agreement": "0.9"}, r"Expected min_agreement= a number or None, got '0.9'"),
        ({"formats": None}, r"Expected formats from \('tflite', 'onnx'\), got \[\]"),
        ({"formats": ["tflite", "coreml"]}, r"got \['tflite', 'coreml'\]"),
        ({"quantize": 5}, r"Expected quantize= a comma list or a list of strings, got 5"),
        ({"quantize": "int4"}, r"Expected quantizations from .* got \['int4'\]"),
        ({"labels": "ab"}, r"Expected labels= a list of strings, got 'ab'"),
        ({"feature_names": "abc"}, r"Expected feature_names= a list of strings, got 'abc'"),
        ({"tune": 5}, r"Expected tune= a string, got 5"),
        ({"tune": "f2"}, r"objective"),
        ({"threshold": "x"}, r"Expected a threshold number or list, got 'x'"),
        ({"strict": "yes"}, r"Expected strict=True or False, got 'yes'"),
        (
            {"head": "sigmoid"},
            r"Expected head from \('auto', 'binary', 'multilabel', 'multiclass', "
            r"'logit', 'regression'\).*got 'sigmoid'",
        ),
        ({"custom_objects": 5}, r"Expected custom_objects= \.py file paths or module names .* got 5"),
        ({"custom_objects": ["a.py", ""]}, r"Expected a \.py file or a module name .* got ''"),
        ({"int8_fallback": "some"}, r"Expected --int8-fallback from \('auto', 'none'\), got 'some'"),
    ],
)
def test_a_bad_argument_is_refused_before_anything_is_read(seed_dir, tmp_path, arguments, match):
    with pytest.raises(UsageError, match=match):
        exporter.export(seed_dir / "no-such-model.keras", tmp_path / "dist", **arguments)
    assert not (tmp_path / "dist").exists()
