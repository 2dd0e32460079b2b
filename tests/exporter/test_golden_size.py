"""The golden set stays small beside the artifacts it checks (issue 22, item 4): an image
model's rows are large, so it keeps fewer of them; a tabular model keeps all 256."""

from __future__ import annotations

import keras
import numpy as np

from keras_edge import exporter, runtime
from keras_edge.exporter.golden import FREE, MIN_ROWS, SHARE, SIZE, budget


def test_budget_keeps_tabular_rows_and_trims_image_rows():
    assert budget(8, 1_500) == SIZE  # 256 rows of two float32 features: 2 KiB
    row = 64 * 64 * 3 * 4  # one 64x64x3 float32 image: 48 KiB
    assert budget(row, 16_000_000) == MIN_ROWS  # 10% of 16 MB is 33 images: the floor wins
    assert budget(row, 50_000_000) == int(SHARE * 50_000_000 // row)  # 101 of the 256
    assert budget(32 * 32 * 3, 10_000) == FREE // (32 * 32 * 3)  # uint8 32x32x3, a tiny model
    assert budget(row, None) == SIZE


def test_an_image_model_ships_a_golden_set_within_its_budget(tmp_path):
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(300, 64, 64, 3)).astype("float32")
    model = keras.Sequential([
        keras.Input((64, 64, 3)), keras.layers.Conv2D(2, 3, strides=4, activation="relu"),
        keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(1, activation="sigmoid"),
    ])  # fmt: skip
    result = exporter.export(model, tmp_path / "d", formats=["onnx"], validation=x,
                             allow_constant=True)  # fmt: skip
    golden = result.manifest.golden
    # 300 rows of 48 KiB would be 14 MB beside a 1 KB model: MIN_ROWS are kept (one fewer when a
    # row nearest the decision is also one of the evenly spaced ones).
    assert MIN_ROWS - 8 <= golden.n <= MIN_ROWS
    size = (tmp_path / "d" / golden.file).stat().st_size
    assert size < MIN_ROWS * 64 * 64 * 3 * 4 * 1.1
    runtime.load(tmp_path / "d", verify=True)  # the device check still runs, on those rows
