"""Streaming continued pretraining: a corpus larger than the memory budget trains without being loaded."""

from __future__ import annotations

import json
import random
import tracemalloc
from collections import Counter
from pathlib import Path

import pytest
import torch

from attune.data import iter_records, load_records
from attune.data.stream import StreamSource, interleave
from attune.errors import AttuneError
from attune.recipe import DataSource, parse_recipe
from attune.train.batching import ExampleStream, plan_epoch, window_seed
from attune.train.context import StageContext
from attune.train.loop import train_loop
from attune.train.objectives import get_objective
from attune.train.stage_data import stream_stage

WORDS = "the of a battery hub sensor river mountain light sound cell energy water plant door alarm north wind".split()


def _corpus(path: Path, megabytes: float, seed: int = 0) -> Path:
    """Random-word documents written line by line until the file has `megabytes` of JSONL."""
    rng = random.Random(seed)
    size = 0
    with open(path, "w") as fh:
        while size < megabytes * 1e6:
            line = json.dumps({"text": " ".join(rng.choice(WORDS) for _ in range(rng.randint(40, 400)))}) + "\n"
            fh.write(line)
            size += len(line)
    return path


def _stage(data: str, replay: str | None = None, **train):
    stage = {"objective": "cpt", "data": data, "train": {"streaming": True, "batch_tokens": 512, "max_length": 128, **train}}
    if replay:
        stage["replay"] = {"path": replay, "ratio": 0.25}
    recipe = parse_recipe({"name": "s", "model": "unused", "stages": [stage]})
    return recipe, recipe.stages[0]


def _context(stage, tokenizer):
    """The stage's cpt objective, ready to train."""
    from accelerate import Accelerator

    acc = Accelerator(cpu=True)
    context = StageContext(tokenizer=tokenizer, options=stage.train, stage=str(stage.name), accelerator=acc, device=acc.device)
    return get_objective("cpt")(context)


def test_interleave_mixes_by_weight_cycles_replay_and_ends_with_the_domain():
    domain = StreamSource("domain", lambda: iter(f"d{i}" for i in range(300)), weight=0.75)
    replay = StreamSource("replay", lambda: iter(f"r{i}" for i in range(7)), weight=0.25, ends_pass=False)
    items = list(interleave([domain, replay], seed=1))
    kinds = Counter(x[0] for x in items)
    assert [x for x in items if x[0] == "d"] == [f"d{i}" for i in range(300)]  # every domain doc once, in order
    assert items[-1] == "d299"  # the pass ends when the domain stream does
    assert 0.2 < kinds["r"] / len(items) < 0.3  # ~25% replay, the small replay set cycled
    assert items == list(interleave([domain, replay], seed=1))  # deterministic
    with pytest.raises(AttuneError) as err:
        list(interleave([domain, StreamSource("empty", lambda: iter([]), ends_pass=False)], seed=0))
    assert str(err.value) == "stream 'empty' yielded no records"


def test_a_stream_is_batched_exactly_like_the_same_examples_in_memory():
    """A stream that fits one window gives the micro-batches `plan_epoch` gives for the same examples."""
    rng = random.Random(0)
    examples = [{"input_ids": [i] * n, "labels": [i] * n, "num_tokens": n} for i, n in enumerate(rng.randint(5, 60) for _ in range(40))]
    _, stage = _stage("unused.jsonl", epochs=1, batch_tokens=128, max_length=64)
    opts = stage.train
    stream = ExampleStream(lambda epoch: iter(examples)).plan(opts, 1)
    lengths = [ex["num_tokens"] for ex in examples]
    memory = plan_epoch(lengths, batch_tokens=128, max_length=64, packing=True, seed=window_seed(opts.seed, 0, 0))
    assert stream.per_epoch == len(memory) > 5
    as_ids = [[[ex["input_ids"][0] for ex in row] for row in stream.rows(g)] for g in range(stream.per_epoch)]
    assert as_ids == memory
    assert stream.rows(3) == [[examples[j] for j in row] for row in memory[3]]  # an earlier micro-batch (resume) re-reads
    # the second pass is planned with another seed: same examples, another order
    second = [[[ex["input_ids"][0] for ex in row] for row in stream.rows(stream.per_epoch + g)] for g in range(stream.per_epoch)]
    assert second != as_ids and sorted(j for mb in second for row in mb for j in row) == list(range(40))


def test_with_max_steps_the_stream_is_read_for_as_long_as_the_run_lasts():
    examples = [{"input_ids": [i] * 30, "labels": [i] * 30, "num_tokens": 30} for i in range(10)]
    opened: list[int] = []

    def open_pass(epoch: int):
        opened.append(epoch)
        return iter(examples)

    _, stage = _stage("unused.jsonl", max_steps=50, batch_tokens=64, max_length=32)
    plan = ExampleStream(open_pass).plan(stage.train, per_step=1)
    assert opened == []  # no counting pass when max_steps says how long to train
    rows = [plan.rows(g) for g in range(12)]
    assert opened == [0, 1, 2]  # one example per row, two rows per micro-batch: 5 micro-batches per pass
    assert sorted(ex["input_ids"][0] for mb in rows[:5] for row in mb for ex in row) == list(range(10))


def test_streaming_cpt_trains_a_corpus_larger_than_the_memory_budget(tmp_path, tokenizer):
    """6 MB of text, a 4 MB budget on Python allocations: a whole counting pass plus training steps stay under it,
    while merely loading the same corpus as records (the non-streaming path) goes over it. (The streaming peak
    is a constant ~3 MB of the loop's own bookkeeping since the objective/checkpoint refactors, not per-document.)"""
    from conftest import make_tiny_model

    budget = 4_000_000
    corpus = _corpus(tmp_path / "big.jsonl", 6.0)
    warm_recipe, warm_stage = _stage(str(_corpus(tmp_path / "small.jsonl", 0.02)), max_steps=1, val_fraction=0)
    warm = _context(warm_stage, tokenizer)
    train_loop(make_tiny_model(tokenizer), warm, stream_stage(warm_recipe, warm_stage, warm)[0], [],
               tmp_path / "warm", show_progress=False)  # imports happen here, not below

    recipe, stage = _stage(str(corpus), epochs=0.004, lr=1e-3, stream_val_docs=4)
    model = make_tiny_model(tokenizer)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    objective = _context(stage, tokenizer)
    tracemalloc.start()
    try:
        stream, val = stream_stage(recipe, stage, objective)
        result = train_loop(model, objective, stream, val, tmp_path / "out", show_progress=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < budget, f"streaming peak {peak / 1e6:.2f} MB"
    assert result.steps >= 2 and torch.isfinite(torch.tensor(result.final_loss)) and result.eval_loss is not None
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())

    tracemalloc.start()
    try:
        loaded = load_records(corpus)
        _, loaded_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert loaded_peak > budget and len(loaded) > 1000


def test_streaming_recipe_with_replay_runs_end_to_end(tmp_path, tiny_model_dir):
    from attune.runs import stage_output
    from attune.train.pipeline import run_recipe

    corpus = _corpus(tmp_path / "docs.jsonl", 0.05)
    general = tmp_path / "general.txt"
    general.write_text("\n\n".join(f"General paragraph {i} about rivers and mountains." for i in range(20)))
    recipe = parse_recipe({
        "name": "stream", "model": str(tiny_model_dir), "output_dir": str(tmp_path / "runs"),
        "stages": [{"objective": "cpt", "data": {"path": str(corpus)},
                    "replay": {"path": str(general), "ratio": 0.3},
                    "train": {"streaming": True, "max_steps": 3, "batch_tokens": 256, "max_length": 64, "min_block": 4,
                              "stream_val_docs": 2}}],
    })
    run = run_recipe(recipe, show_progress=False)
    summary = stage_output(run, "cpt").summary
    assert summary["steps"] == 3 and summary["train_examples"] is None and summary["val_examples"] >= 2


def test_streaming_refuses_temperature_mixing(tokenizer):
    recipe = parse_recipe({"name": "s", "model": "unused", "stages": [{
        "objective": "cpt", "data": [{"path": "a.jsonl"}, {"path": "b.jsonl"}], "mixing": {"strategy": "temperature"},
        "train": {"streaming": True}}]})
    with pytest.raises(AttuneError) as err:
        stream_stage(recipe, recipe.stages[0], _context(recipe.stages[0], tokenizer))
    assert "temperature mixing needs every dataset's size" in str(err.value)


def test_blank_line_text_files_stream_block_by_block(tmp_path):
    path = tmp_path / "book.txt"
    with open(path, "w") as fh:
        for i in range(20_000):
            fh.write(f"Paragraph {i} first line.\nParagraph {i} second line.\n\n")
    tracemalloc.start()
    try:
        first = None
        count = 0
        for record in iter_records(DataSource(path=str(path), text_split="blank-line")):
            first = first or record
            count += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 20_000 and first.text == "Paragraph 0 first line.\nParagraph 0 second line."
    assert first.source == f"{path}:1"
    assert peak < path.stat().st_size / 10



def test_a_resumed_streaming_run_ends_with_the_weights_of_an_uninterrupted_one(tmp_path, tokenizer):
    """Checkpoint at step 2 of 4, resume from it in a fresh model: the stream is re-read and skipped to step 2."""
    import shutil

    from attune.train.checkpoint import list_checkpoints
    from conftest import make_tiny_model

    corpus = _corpus(tmp_path / "docs.jsonl", 0.03)

    def train(out: Path, resume: bool) -> dict[str, torch.Tensor]:
        recipe, stage = _stage(str(corpus), max_steps=4, save_every=2, lr=1e-3, warmup_ratio=0.0, val_fraction=0)
        model = make_tiny_model(tokenizer)
        objective = _context(stage, tokenizer)
        stream, _ = stream_stage(recipe, stage, objective)
        train_loop(model, objective, stream, [], out, resume=resume, show_progress=False)
        return {n: p.detach().clone() for n, p in model.named_parameters()}

    whole = train(tmp_path / "whole", resume=False)
    partial = tmp_path / "partial"
    shutil.copytree(tmp_path / "whole", partial)
    shutil.rmtree(list_checkpoints(partial / "checkpoints")[-1])  # as if killed after the step-2 checkpoint
    resumed = train(partial, resume=True)
    assert all(torch.allclose(whole[n], resumed[n], atol=1e-6) for n in whole)
