"""A stage's data as its objective trains on it: loaded and split, or streamed while training.

Each dataset (and the replay set) is split before mixing, so a record repeated by up-sampling
never lands on both sides, and every task keeps its own validation share.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

from attune.data.source import DataSource
from attune.errors import AttuneError
from attune.recipe import Recipe, Stage
from attune.train.batching import ExampleStream
from attune.train.objective import Example, Objective


def _task_name(src: DataSource, taken: set[str]) -> str:
    name = src.name or Path(src.path.removeprefix("builtin:")).stem
    while name in taken:
        name += "'"
    taken.add(name)
    return name


def load_stage_records(recipe: Recipe, stage: Stage, kinds: tuple[str, ...]) -> tuple[list, list, dict[str, list]]:
    """(train records, validation records, validation records per task).

    The loop logs `eval_loss/<task>` for each task when a stage mixes several datasets (replay
    counts as the task "replay").
    """
    from attune.data import load_records, mix_datasets, train_val_split

    if not stage.sources:
        raise AttuneError(f"stage {stage.name!r}: no data (add `data: {{path: ...}}`)")
    seed, frac = stage.train.seed, 0.0 if stage.validation is not None else stage.train.val_fraction
    taken: set[str] = set()
    train_sets, val_sets, weights = [], {}, []
    for src in stage.sources:
        records = load_records(src, base_dir=recipe.base_dir)
        bad = sorted({r.kind for r in records} - set(kinds))
        if bad:
            raise AttuneError(
                f"stage {stage.name!r}: objective {stage.objective!r} trains on {', '.join(kinds)} records, "
                f"but {src.path} holds {', '.join(bad)} records"
            )
        train, val = train_val_split(records, frac, seed)
        train_sets.append(train)
        val_sets[_task_name(src, taken)] = val
        weights.append(src.weight)
    if stage.replay is not None:
        replay = load_records(DataSource(path=stage.replay.path, format="text"), base_dir=recipe.base_dir)
        train, val = train_val_split(replay, frac, seed)
        domain_records = sum(len(d) for d in train_sets)
        want = max(1, round(domain_records * stage.replay.ratio / (1 - stage.replay.ratio)))
        train_sets.append((train * (want // len(train) + 1))[:want])
        val_sets[_task_name(DataSource(path="replay"), taken)] = val
        weights.append(1.0)
    if len(train_sets) == 1:
        records = train_sets[0]
    else:
        records = mix_datasets(train_sets, weights, strategy=stage.mixing.strategy, temperature=stage.mixing.temperature, seed=seed)
    if stage.validation is not None:
        return records, load_records(stage.validation, base_dir=recipe.base_dir), {}
    per_task = val_sets if len(val_sets) > 1 else {}
    return records, [r for v in val_sets.values() for r in v], {k: v for k, v in per_task.items() if v}


def stream_stage(recipe: Recipe, stage: Stage, objective: Objective) -> tuple[ExampleStream, list[Example]]:
    """(a stream of training examples, validation examples): the stage's data and replay, never loaded whole.

    Sources are interleaved by weight (`attune.data.stream.interleave`); the replay set takes a
    share `replay.ratio` of the documents and is cycled; each pass reshuffles the draw order.
    """
    from attune.data import iter_records, load_records
    from attune.data.stream import StreamSource, interleave

    options = stage.train
    if not stage.sources:
        raise AttuneError(f"stage {stage.name!r}: no data (add `data: {{path: ...}}`)")
    if stage.mixing.strategy == "temperature":
        raise AttuneError(
            f"stage {stage.name!r}: temperature mixing needs every dataset's size, which a stream does not know; "
            "use `mixing: {strategy: weights}` with streaming"
        )
    base = recipe.base_dir
    skip = [0] * len(stage.sources)
    if stage.validation is not None:
        val_records = load_records(stage.validation, base_dir=base)
    elif options.val_fraction > 0 and options.stream_val_docs > 0:
        val_records = list(itertools.islice(iter_records(stage.sources[0], base_dir=base), options.stream_val_docs))
        skip[0] = len(val_records)
    else:
        val_records = []
    total = sum(s.weight for s in stage.sources)
    share = 1.0 - (stage.replay.ratio if stage.replay else 0.0)

    def opener(src: DataSource, n_skip: int):
        return lambda: itertools.islice(iter_records(src, base_dir=base), n_skip, None)

    sources = [
        StreamSource(src.path, opener(src, n), weight=share * src.weight / total) for src, n in zip(stage.sources, skip)
    ]
    if stage.replay is not None:
        replay = DataSource(path=stage.replay.path, format="text")
        sources.append(StreamSource("replay", opener(replay, 0), weight=stage.replay.ratio, ends_pass=False))

    def open_pass(epoch: int) -> Iterator[Example]:
        return objective.iter_examples(interleave(sources, seed=options.seed * 7919 + epoch))

    return ExampleStream(open_pass), list(objective.iter_examples(val_records))
