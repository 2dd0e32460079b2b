"""The one timing loop every benchmark target goes through, and its statistics.

Warm-up first; then rounds that interleave the targets (A B C, C A B, ...: a seeded shuffle
each round), so that drift of a shared machine, and whose caches the previous call left warm,
hit them all alike. In a round each target makes a chunk of calls sized to take
about ``round_ms`` (2 ms: a 2 us call makes ~1,000 calls a round, a 40 ms call one); every
call is timed on its own with ``perf_counter_ns`` and fed the next array of a pool of distinct
inputs, never one tensor reused. A target is done when it has spent ``seconds`` in calls and
made at least ``min_samples`` of them.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

MAX_SAMPLES = 200_000  # per target and batch size: enough for a p99, bounded memory


@dataclass(frozen=True)
class Timed:
    """One target's calls: a function and the pool of inputs it cycles through."""

    name: str
    call: Callable[[np.ndarray], object]
    inputs: Sequence[np.ndarray]


@dataclass(frozen=True)
class Stats:
    p50_us: float
    p90_us: float
    p99_us: float
    mean_us: float
    std_us: float
    n: int
    throughput_per_s: float

    @classmethod
    def of(cls, samples_ns: Sequence[int], batch_size: int) -> Stats:
        us = np.asarray(samples_ns, dtype=np.float64) / 1e3
        p50, p90, p99 = np.percentile(us, [50, 90, 99])
        mean = float(us.mean())
        return cls(
            p50_us=float(p50),
            p90_us=float(p90),
            p99_us=float(p99),
            mean_us=mean,
            std_us=float(us.std()),
            n=len(us),
            throughput_per_s=batch_size / (mean / 1e6),
        )


def measure(
    targets: Sequence[Timed],
    seconds: float,
    min_samples: int,
    warmup: int = 5,
    round_ms: float = 2.0,
    on_round: Callable[[int, dict[str, int]], None] | None = None,
) -> dict[str, list[int]]:
    """Per-call times in nanoseconds for every target, measured interleaved."""
    clock = time.perf_counter_ns
    chunk: dict[str, int] = {}
    for target in targets:
        pool, call = target.inputs, target.call
        times = []
        for i in range(max(warmup, 1)):
            x = pool[i % len(pool)]
            t0 = clock()
            call(x)
            times.append(clock() - t0)
        estimate_ns = max(float(np.median(times[len(times) // 2 :])), 1.0)
        chunk[target.name] = int(min(max(round_ms * 1e6 / estimate_ns, 1), 5_000))
    samples: dict[str, list[int]] = {t.name: [] for t in targets}
    spent: dict[str, int] = dict.fromkeys(samples, 0)
    budget_ns = int(seconds * 1e9)
    cursor: dict[str, int] = dict.fromkeys(samples, 0)
    active = list(targets)
    order = random.Random(0)
    rounds = 0
    while active:
        rounds += 1
        # A fresh order each round: a target that always ran right after a target of the same
        # artifact would find its caches warm, one after another artifact would not.
        order.shuffle(active)
        for target in active:
            pool, call, out = target.inputs, target.call, samples[target.name]
            i = cursor[target.name]
            total = 0
            for _ in range(chunk[target.name]):
                x = pool[i % len(pool)]
                i += 1
                t0 = clock()
                call(x)
                dt = clock() - t0
                out.append(dt)
                total += dt
            cursor[target.name] = i
            spent[target.name] += total
        active = [
            t
            for t in active
            if not (
                (spent[t.name] >= budget_ns and len(samples[t.name]) >= min_samples)
                or len(samples[t.name]) >= MAX_SAMPLES
            )
        ]
        if on_round is not None:
            on_round(rounds, {name: len(v) for name, v in samples.items()})
    logger.debug("measured %d targets in %d rounds", len(targets), rounds)
    return samples
