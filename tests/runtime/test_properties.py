"""Bad input, systematically: hypothesis feeds the runtime inputs of every shape, dtype, size,
layout and content, and each one gets either the reference answer or a typed one-line error.

The oracle is written from the contract, not from the runtime's code: an input is answered
when numpy turns it into a numeric (float, int, uint or bool) array of shape (n, 2) whose
values are finite once cast to float32; the answer is then the same, bit for bit, as for the
same values given as a fresh C-contiguous float32 array, and for ``onnx-fp32`` equal to a bare
ONNX Runtime session's. Everything else raises :class:`InputError` (a ``ValueError``), one line
that says what was expected and what was received. Nothing else may escape: no engine error,
no crash, no silent answer.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from keras_edge import runtime
from keras_edge.runtime.errors import InputError, KerasEdgeError

VARIANTS = ["onnx-fp32", "tflite-fp32", "tflite-int8", "onnx-int8", "onnx-dynamic"]
# Derandomized: CI sees the same examples on every run, and a failure reproduces.
SETTINGS = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

NUMERIC = [
    np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64,
    np.uint8, np.uint16, np.uint32, np.uint64, np.bool_,
]  # fmt: skip
OTHER = [np.complex64, np.dtype("U3"), np.dtype("S2"), np.dtype("datetime64[s]"), np.dtype("O")]
F32_MAX = float(np.finfo(np.float32).max)


def _elements(dtype: np.dtype) -> st.SearchStrategy[Any]:
    """Every value a dtype holds: NaN, Inf, its extremes, subnormals, signed zeros."""
    if dtype.kind == "f":
        return hnp.from_dtype(dtype, allow_nan=True, allow_infinity=True, allow_subnormal=True)
    return hnp.from_dtype(dtype)


@st.composite
def numeric_arrays(draw: st.DrawFn) -> np.ndarray:
    """Arrays of the model's shape (n, 2), n from 0, in any numeric dtype and memory layout."""
    # Half float32, the dtype devices pass; a quarter other floats; a quarter the rest.
    pool = draw(st.sampled_from([[np.float32], [np.float32], [np.float16, np.float64], NUMERIC]))
    dtype = np.dtype(draw(st.sampled_from(pool)))
    n = draw(st.one_of(st.integers(1, 4), st.integers(0, 40)))  # a device passes a few rows
    values = draw(st.sampled_from(["any", "typical", "huge", "special", "special"]))
    if values in ("typical", "special") and dtype.kind == "f":
        elements: Any = st.floats(-3, 3, width=min(dtype.itemsize * 8, 64))
    elif values == "huge" and dtype.kind == "f" and dtype.itemsize == 8:
        elements = st.floats(-1e300, 1e300)  # finite in float64, beyond float32's range
    else:
        elements = _elements(dtype)
    layout = draw(st.sampled_from(["C", "F", "strided", "transposed", "readonly"]))
    if layout == "strided":  # every other row of a bigger array: not contiguous
        x = draw(hnp.arrays(dtype, (2 * n, 2), elements=elements))[::2]
    elif layout == "transposed":  # a (2, n) array's transpose: Fortran-ordered view
        x = draw(hnp.arrays(dtype, (2, n), elements=elements)).T
    else:
        x = draw(hnp.arrays(dtype, (n, 2), elements=elements))
    if values == "special" and dtype.kind == "f" and x.size:  # a few specials among typical
        x = x.copy()
        for _ in range(draw(st.integers(1, 3))):
            at = (draw(st.integers(0, x.shape[0] - 1)), draw(st.integers(0, 1)))
            x[at] = draw(st.sampled_from(specials(dtype)))
    if layout == "F":
        x = np.asfortranarray(x)
    elif layout == "readonly":
        x.setflags(write=False)
    return x


def specials(dtype: np.dtype) -> list[float]:
    """The values a float input may hold that break engines or checks."""
    info = np.finfo(dtype)
    return [
        np.nan, np.inf, -np.inf, float(info.max), float(info.min), float(info.smallest_subnormal),
        -float(info.smallest_subnormal), -0.0, float(info.tiny),
    ]  # fmt: skip


def containers(x: np.ndarray) -> st.SearchStrategy[Any]:
    """The array, or the same values as nested lists or tuples."""
    return st.sampled_from(["array", "list", "tuple"]).map(
        lambda kind: x if kind == "array" else x.tolist() if kind == "list" else tuple(map(tuple, x))
    )


@st.composite
def wrong_inputs(draw: st.DrawFn) -> Any:
    """What the model cannot take: other shapes and ranks, scalars, 0-d arrays, other dtypes,
    ragged lists, strings, None, dicts."""
    kind = draw(st.sampled_from(["shape", "scalar", "0-d", "dtype", "ragged", "other"]))
    if kind == "shape":
        shape = draw(
            hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5).filter(
                lambda s: not (len(s) == 2 and s[1] == 2)
            )
        )
        return draw(hnp.arrays(np.float32, shape, elements=st.floats(-3, 3, width=32)))
    if kind == "scalar":
        return draw(st.one_of(st.floats(), st.integers(-(2**70), 2**70), st.booleans()))
    if kind == "0-d":
        return np.array(draw(st.floats(-3, 3)), dtype=np.float32)
    if kind == "dtype":
        dtype = np.dtype(draw(st.sampled_from(OTHER)))
        n = draw(st.integers(1, 5))
        if dtype.kind == "O":
            return np.array([[object(), 1.0]] * n, dtype=object)
        return draw(hnp.arrays(dtype, (n, 2)))
    if kind == "ragged":
        return [[0.1, 0.2], [0.3]]
    return draw(st.sampled_from([None, "0.1,0.2", {"x": [[0.1, 0.2]]}, b"\x00\x01", [[]]]))


def expected(x: Any) -> np.ndarray | None:
    """The contract: the float32 input the answer must equal, or None where an error is due."""
    if x is None or isinstance(x, (str, bytes, dict)):
        return None
    try:
        array = np.asarray(x)
    except (ValueError, TypeError):
        return None
    if array.dtype.kind not in "fiub" or array.ndim != 2 or array.shape[1] != 2:
        return None
    with np.errstate(over="ignore", invalid="ignore"):
        x32 = np.ascontiguousarray(array, dtype=np.float32)
    return x32 if np.isfinite(x32).all() else None


@pytest.fixture(scope="module")
def classifiers(seed_all) -> dict[str, runtime.Classifier]:
    folder, _, _ = seed_all
    return {vid: runtime.load(folder, variant=vid) for vid in VARIANTS}


@pytest.fixture(scope="module")
def bare_session(seed_all) -> Any:
    import onnxruntime as ort

    folder, manifest, _ = seed_all
    path = folder / manifest.variants["onnx-fp32"].file
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def check(clf: runtime.Classifier, x: Any) -> None:
    want = expected(x)
    for method in (clf.predict_proba, clf.predict):
        if want is None:
            with pytest.raises(InputError) as caught:
                method(x)
            message = str(caught.value)
            assert "\n" not in message and "Expected" in message and "got" in message, message
            continue
        try:
            got = method(x)
        except KerasEdgeError as exc:  # a typed refusal of a valid input is a bug too
            raise AssertionError(f"{clf.variant} refused a valid input: {exc}") from exc
        np.testing.assert_array_equal(got, method(want))
        assert len(got) == len(want)


@pytest.mark.parametrize("variant", VARIANTS)
@SETTINGS
@given(data=st.data())
def test_numeric_input_gets_the_reference_answer_or_a_typed_error(classifiers, variant, data):
    x = data.draw(numeric_arrays())
    check(classifiers[variant], data.draw(containers(x)))


@pytest.mark.parametrize("variant", ["onnx-fp32", "tflite-int8"])
@SETTINGS
@given(x=wrong_inputs())
def test_wrong_input_gets_a_typed_one_line_error(classifiers, variant, x):
    check(classifiers[variant], x)


@SETTINGS
@given(x=numeric_arrays())
def test_answers_equal_a_bare_onnx_runtime_session(classifiers, bare_session, x):
    want = expected(x)
    if want is None or len(want) == 0:
        return
    (reference,) = bare_session.run(None, {bare_session.get_inputs()[0].name: want})
    np.testing.assert_array_equal(classifiers["onnx-fp32"].predict_proba(x), reference)
    np.testing.assert_array_equal(
        classifiers["onnx-fp32"].predict(x), (reference[:, 0] > 0.5).astype(np.int64)
    )


def test_the_oracle_covers_both_outcomes():
    """The property tests above would pass vacuously if the oracle always said 'error' or
    always 'answer': pin a few inputs of each."""
    assert expected(np.zeros((3, 2), dtype=np.int64)) is not None
    assert expected(np.zeros((0, 2), dtype=np.float16)) is not None
    assert expected(np.array([[1e300, 0.0]])) is None  # beyond float32: Inf once cast
    assert expected(np.array([[np.nan, 0.0]], dtype=np.float32)) is None
    assert expected(np.zeros((3, 3))) is None and expected(0.5) is None
    assert expected([[0.1, 0.2], [0.3]]) is None and expected(np.zeros((2, 2), complex)) is None


def test_float64_beyond_float32_is_named_as_such(classifiers):
    with pytest.raises(InputError, match=r"within float32's range .*largest \|x\| 1e\+300"):
        classifiers["onnx-fp32"].predict(np.array([[1e300, 0.0]]))
