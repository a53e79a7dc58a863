"""Deterministic train/validation split and multi-task mixing."""

from __future__ import annotations

import math
import random
from typing import Literal, TypeVar

T = TypeVar("T")


def train_val_split(records: list[T], val_fraction: float, seed: int) -> tuple[list[T], list[T]]:
    """Shuffle with `seed`, hold out round(n * fraction) records (at least 1 when fraction > 0 and n > 1)."""
    if val_fraction <= 0 or len(records) < 2:
        return list(records), []
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    n_val = min(len(records) - 1, max(1, round(len(records) * val_fraction)))
    val = set(order[:n_val])
    return [r for i, r in enumerate(records) if i not in val], [r for i, r in enumerate(records) if i in val]


def mix_datasets(
    datasets: list[list[T]],
    weights: list[float],
    *,
    strategy: Literal["weights", "temperature", "concat"] = "weights",
    temperature: float = 2.0,
    seed: int = 0,
) -> list[T]:
    """Mix several datasets into one list of records.

    - concat: all records of every dataset.
    - weights: dataset i contributes a share weights[i] / sum(weights) of the mixture; the
      mixture has as many records as all datasets together, small ones are repeated.
    - temperature: share proportional to size ** (1 / T), which up-samples small tasks
      (T5, Raffel et al. 2020, section 3.5.2; T=1 is proportional, large T tends to uniform).
    """
    if len(datasets) != len(weights):
        raise ValueError("one weight per dataset")
    if strategy == "concat":
        mixed = [r for d in datasets for r in d]
        random.Random(seed).shuffle(mixed)
        return mixed
    sizes = [len(d) for d in datasets]
    if strategy == "temperature":
        shares = [s ** (1.0 / temperature) for s in sizes]
    else:
        shares = list(weights)
    total_share = sum(shares)
    total = sum(sizes)
    rng = random.Random(seed)
    mixed: list[T] = []
    for data, share in zip(datasets, shares):
        want = max(1, math.floor(total * share / total_share + 0.5))
        pool = list(data)
        rng.shuffle(pool)
        mixed += (pool * (want // len(pool) + 1))[:want]
    rng.shuffle(mixed)
    return mixed
