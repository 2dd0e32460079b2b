"""Scoring on a real local Ray instance (2 CPUs): ``predict --ray`` with an actor pool of 2 and
the Python form with ``map_batches`` give, row for row, what one process gives, and the same
metrics; a bad row fails the run with one typed error and leaves no folder behind."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from keras_edge import runtime
from keras_edge.cli import main
from keras_edge.runtime.batch.cluster import BatchScorer

pytestmark = pytest.mark.slow  # a Ray instance and its actors start in ~10-20 s on 2 cores

ROWS, FILES = 120_000, 4


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def parts(tmp_path_factory) -> tuple:
    """ROWS seeded rows over the seed's domain in FILES Parquet files: id, x0, x1 and y."""
    rng = np.random.default_rng(7)
    x = rng.uniform(low=[-2.5, -2.0], high=[3.5, 2.5], size=(ROWS, 2)).astype(np.float32)
    y = rng.integers(0, 2, ROWS)
    folder = tmp_path_factory.mktemp("parts")
    table = pa.table({"id": np.arange(ROWS), "x0": x[:, 0], "x1": x[:, 1], "y": y})
    for i, part in enumerate(np.array_split(np.arange(ROWS), FILES)):
        pq.write_table(table.slice(int(part[0]), len(part)), folder / f"part-{i}.parquet")
    return folder, x, y


def _sorted(path) -> pa.Table:
    return pq.read_table(path).sort_by("id")


def test_ray_scores_as_one_process_does(fp32_export, ray_local, parts, tmp_path, capsys):
    folder, x, _ = parts
    clf = runtime.load(fp32_export)
    p, c = clf.predict_proba(x)[:, 0], clf.predict(x)
    common = [
        str(fp32_export),
        str(folder),
        "--keep-columns",
        "id",
        "--label-column",
        "y",
        "--chunk-size",
        "5000",
    ]
    assert main(["predict", *common, "--output", str(tmp_path / "one.parquet")]) == 0
    one_process = capsys.readouterr().err
    out = tmp_path / "scored"
    assert main(["predict", *common, "--ray", "--concurrency", "2", "--output", str(out)]) == 0
    captured = capsys.readouterr()
    assert "metrics on 120,000 labelled rows" in one_process
    assert one_process.splitlines()[-2:] == captured.err.splitlines()[-2:]  # the same metrics
    assert not [f for f in tmp_path.iterdir() if f.name.startswith(".")]  # the temporary folder went
    table = _sorted(out)
    assert table.column_names == ["id", "probability", "class"]
    assert table["id"].to_pylist() == list(range(ROWS))  # every row once
    np.testing.assert_array_equal(table["probability"].to_numpy(), p)
    np.testing.assert_array_equal(table["class"].to_numpy(), c)
    assert pq.read_table(tmp_path / "one.parquet")["class"].to_pylist() == c.tolist()

    # The Python form: an actor pool of BatchScorer, the classifier pickled to each actor.
    ray = ray_local
    ds = ray.data.read_parquet(str(folder)).map_batches(
        BatchScorer,
        fn_constructor_args=(clf,),
        fn_constructor_kwargs={"columns": ["x0", "x1"], "keep": ["id"]},
        compute=ray.data.ActorPoolStrategy(size=2),
        num_cpus=0.5,  # two actors on two CPUs would leave reading none
        batch_size=7_000,
        batch_format="pyarrow",
    )
    ds.write_parquet(str(tmp_path / "python"))
    table = _sorted(tmp_path / "python")
    np.testing.assert_array_equal(table["probability"].to_numpy(), p)
    np.testing.assert_array_equal(table["class"].to_numpy(), c)

    # A bound method as a task function, on pandas batches.
    frame = (
        ray.data.read_parquet(str(folder))
        .map_batches(
            clf.score_batch, fn_kwargs={"columns": ["x0", "x1"], "keep": ["id"]}, batch_format="pandas"
        )
        .to_pandas()
        .sort_values("id")
    )
    np.testing.assert_array_equal(frame["class"].to_numpy(), c)


def test_a_bad_row_fails_the_ray_run_and_leaves_nothing(fp32_export, ray_local, tmp_path, capsys):
    x = np.zeros((1_000, 2), np.float32)
    x[617, 1] = np.inf
    pq.write_table(
        pa.table({"id": np.arange(1_000), "x0": x[:, 0], "x1": x[:, 1]}), tmp_path / "in.parquet"
    )
    out = tmp_path / "scored"
    args = ["predict", str(fp32_export), str(tmp_path / "in.parquet"), "--ray", "--keep-columns", "id",
            "--output", str(out)]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "keras-edge: error: Bad row at row" in err and "(id=617): NaN or Inf" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.parquet"]
    assert main([*args, "--on-bad-row", "skip"]) == 0
    assert "skipped 1 bad row(s) of 1,000" in capsys.readouterr().err
    assert pq.read_table(out).num_rows == 999
    assert main([*args[:-1], str(tmp_path / "scored.csv")]) == 2
    assert "Expected --output to be a folder with --ray" in capsys.readouterr().err
