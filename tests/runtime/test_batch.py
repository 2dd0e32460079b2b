"""``clf.score_batch``: Arrow tables and record batches, pandas frames and dicts of numpy arrays
come back the same kind, with the outputs of one predict() over the same rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from keras_edge import runtime
from keras_edge.runtime.errors import InputError, UsageError


@pytest.fixture(scope="module")
def scored(fp32_export, seed_val):
    x = seed_val[0][:200]
    clf = runtime.load(fp32_export, variant="onnx-fp32")
    return clf, x, clf.predict_proba(x)[:, 0], clf.predict(x)


def _columns(x: np.ndarray) -> dict[str, np.ndarray]:
    return {"id": np.arange(len(x)), "x0": x[:, 0], "x1": x[:, 1]}


def test_every_container_comes_back_as_it_came(scored):
    clf, x, p, c = scored
    table = pa.table(_columns(x))
    for batch in (table, table.to_batches()[0], pd.DataFrame(_columns(x)), _columns(x)):
        out = clf.score_batch(batch, columns=["x0", "x1"])
        assert type(out) is type(batch)
        got = {k: np.asarray(out[k]) for k in ("id", "probability", "class")}
        np.testing.assert_array_equal(got["id"], np.arange(len(x)))
        np.testing.assert_array_equal(got["probability"], p)
        np.testing.assert_array_equal(got["class"], c)
    # Default features: every numeric column but those excluded or kept; keep= selects what
    # comes back.
    out = clf.score_batch(table, keep=["id"], classes=False)
    assert out.column_names == ["id", "probability"]
    np.testing.assert_array_equal(out["probability"].to_numpy(), p)
    out = clf.score_batch(pd.DataFrame(_columns(x)), exclude=["id"])
    assert list(out.columns) == ["id", "x0", "x1", "probability", "class"]
    np.testing.assert_array_equal(out["class"].to_numpy(), c)
    # Tensor columns named as the model's input (Ray's numpy batches).
    out = clf.score_batch({"features": x, "id": np.arange(len(x))})
    np.testing.assert_array_equal(out["class"], c)


def test_bad_rows_in_a_batch(scored):
    clf, x, p, _ = scored
    values = _columns(x)
    values["x0"] = values["x0"].astype(np.float64)
    values["x0"][[3, 50]] = np.nan
    x1 = [None if i == 7 else v for i, v in enumerate(x[:, 1].tolist())]  # a null at row 7
    table = pa.table(values).set_column(2, "x1", pa.array(x1, pa.float32()))
    with pytest.raises(InputError, match=r"row 3 of the batch \(id=3\): NaN or Inf in 'features'"):
        clf.score_batch(table, columns=["x0", "x1"], keep=["id"])
    out = clf.score_batch(table, columns=["x0", "x1"], on_bad_row="skip")
    assert out["id"].to_pylist() == [i for i in range(len(x)) if i not in (3, 7, 50)]
    np.testing.assert_array_equal(out["probability"].to_numpy(), np.delete(p, [3, 7, 50]))
    out = clf.score_batch(table, columns=["x0", "x1"], on_bad_row="null")
    assert out["probability"].null_count == 3 and out["class"].null_count == 3
    assert out["probability"][7].as_py() is None and out["probability"][8].as_py() == pytest.approx(p[8])
    with pytest.raises(UsageError, match="nulls need Arrow"):
        clf.score_batch(pd.DataFrame(values), columns=["x0", "x1"], on_bad_row="null")
    with pytest.raises(UsageError, match=r"already has output columns \['class'\]"):
        clf.score_batch({**_columns(x), "class": np.zeros(len(x))}, columns=["x0", "x1"])
    with pytest.raises(UsageError, match="Expected a pyarrow Table"):
        clf.score_batch([1, 2, 3])
