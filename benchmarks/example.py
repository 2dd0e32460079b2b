"""The bundled example: the model of the README's main job, trained on two moons the package
generates.

    keras-edge example build/seed

writes ``seed.keras`` (trained once, reused after), ``train.npz``, ``val.npz``,
``calib.npz`` and ``samples.csv`` into the folder. The data is made here with numpy and a
fixed seed: nothing is downloaded.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import numpy as np

from keras_edge.exporter import import_keras, import_tensorflow

logger = logging.getLogger(__name__)

SEED = 0
MODEL_NAME = "seed.keras"


def make_moons(n: int, noise: float = 0.15, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaving half circles (as scikit-learn's ``make_moons``), float32 x, int y."""
    rng = np.random.default_rng(seed)
    n_out = n // 2
    n_in = n - n_out
    t_out = np.linspace(0, np.pi, n_out)
    t_in = np.linspace(0, np.pi, n_in)
    x = np.concatenate(
        [
            np.stack([np.cos(t_out), np.sin(t_out)], axis=1),
            np.stack([1 - np.cos(t_in), 1 - np.sin(t_in) - 0.5], axis=1),
        ]
    )
    y = np.concatenate([np.zeros(n_out, dtype=np.int64), np.ones(n_in, dtype=np.int64)])
    x = x + rng.normal(scale=noise, size=x.shape)
    order = rng.permutation(n)
    return x[order].astype(np.float32), y[order]


def build_seed_model() -> Any:
    """The seed model: 2 -> 124 relu -> 124 relu -> 1 sigmoid, with dropout, trained with SGD and
    measured with ``BinaryAccuracy(threshold=0.5)``."""
    keras = import_keras()
    model = keras.Sequential(
        [
            keras.Input(shape=(2,), name="features"),
            keras.layers.Dense(124, activation="relu"),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(124, activation="relu"),
            keras.layers.Dropout(0.1),
            keras.layers.Dense(1, activation="sigmoid"),
        ],
        name="seed_mlp",
    )
    model.compile(
        loss="binary_crossentropy",
        optimizer=keras.optimizers.SGD(learning_rate=0.1, momentum=0.003),
        metrics=[keras.metrics.BinaryAccuracy(threshold=0.5)],
    )
    return model


def train_seed_model(folder: str | Path, epochs: int = 40) -> Path:
    """Train (or reuse) the seed model and write its data files into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    x_train, y_train = make_moons(2000, seed=SEED)
    x_val, y_val = make_moons(1000, seed=SEED + 1)
    np.savez(folder / "train.npz", x=x_train, y=y_train)
    np.savez(folder / "val.npz", x=x_val, y=y_val)
    np.savez(folder / "calib.npz", x=x_train)
    with open(folder / "samples.csv", "w", encoding="utf-8") as fh:
        fh.write("x0,x1\n")
        for a, b in [(-1.0, 0.5), (0.0, 1.0), (1.0, -0.5), (2.0, 0.0), (0.5, 0.25), (0.5, -0.1)]:
            fh.write(f"{a},{b}\n")
    path = folder / MODEL_NAME
    if path.is_file():
        logger.info("reusing %s", path)
        return path
    keras = import_keras()
    keras.utils.set_random_seed(SEED)
    import_tensorflow().config.experimental.enable_op_determinism()
    model = build_seed_model()
    model.fit(x_train, y_train, batch_size=32, epochs=epochs, verbose=0, shuffle=True)
    loss, acc = model.evaluate(x_val, y_val, verbose=0)
    logger.info("trained %s: validation loss %.4f, BinaryAccuracy %.4f", path, loss, acc)
    model.save(path)
    return path


def configure(name: str, p: argparse.ArgumentParser) -> None:
    """Add the arguments of ``keras-edge example`` to ``p``."""
    p.add_argument("folder", type=Path, help="where to write seed.keras and its data")
    p.add_argument("--epochs", type=int, default=40, help="training epochs (default 40)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Train (or reuse) the seed model, saying which, and print its path."""
    logger.setLevel(min(logger.getEffectiveLevel(), logging.INFO))
    path = train_seed_model(args.folder, epochs=args.epochs)
    print(path)
    return 0
