"""The loop itself: loss falls, logs, NaN stops with a message, early stopping, resume replays."""

from __future__ import annotations

import json
import math

import pytest
import torch
from accelerate import Accelerator

from attune.errors import AttuneError
from attune.train.checkpoint import list_checkpoints
from attune.train.context import StageContext
from attune.train.loop import train_loop
from attune.train.objectives import sft


def _examples(n: int, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    pattern = torch.randint(3, 200, (12,), generator=g).tolist()  # a learnable repeated pattern
    out = []
    for _ in range(n):
        reps = int(torch.randint(1, 4, (1,), generator=g))
        ids = pattern * reps
        out.append({"input_ids": ids, "labels": ids, "num_tokens": len(ids)})
    return out


def _context(tokenizer, **options) -> sft.SFT:
    opts = sft.Options(**{"lr": 5e-3, "batch_tokens": 128, "max_length": 64, "warmup_ratio": 0.0, **options})
    return sft.SFT(StageContext(tokenizer=tokenizer, options=opts, accelerator=Accelerator(cpu=True)))


def _lora(model):
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=4, target_modules="all-linear"))


def test_loss_falls_and_metrics_are_logged(tiny_model, tokenizer, tmp_path):
    ctx = _context(tokenizer, epochs=6, lr=1e-2)
    result = train_loop(tiny_model, ctx, _examples(24), _examples(4, seed=1), tmp_path, show_progress=False)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["loss"] < rows[0]["loss"] * 0.8
    assert {"step", "loss", "lr", "grad_norm", "tokens_per_s", "loss_tokens_per_s"} <= set(rows[0])
    assert any("eval_loss" in r for r in rows)
    assert result.steps == rows[-1]["step"] and result.tokens_seen > 0
    assert list_checkpoints(tmp_path / "checkpoints")  # at least the final one
    assert len(list_checkpoints(tmp_path / "checkpoints")) <= ctx.options.keep_checkpoints


def test_non_finite_loss_stops_with_a_clear_message(tiny_model, tokenizer, tmp_path):
    ctx = _context(tokenizer, epochs=3, lr=1e30, grad_clip=None, save_every=1)
    with pytest.raises(AttuneError, match=r"loss became (nan|inf) at step \d+; training stopped \(last good checkpoint: .*step-"):
        train_loop(_lora(tiny_model), ctx, _examples(24), [], tmp_path, show_progress=False)
    assert list_checkpoints(tmp_path / "checkpoints")


def test_too_little_data_is_a_clear_error(tiny_model, tokenizer, tmp_path):
    ctx = _context(tokenizer, grad_accum=50)
    with pytest.raises(AttuneError, match="not enough training data for one optimizer step"):
        train_loop(_lora(tiny_model), ctx, _examples(3), [], tmp_path, show_progress=False)


def test_early_stopping(tiny_model, tokenizer, tmp_path):
    # eval on data unlike the training pattern: eval loss rises, patience 1 stops early
    ctx = _context(tokenizer, epochs=20, lr=3e-2, eval_every=1, early_stopping_patience=1)
    g = torch.Generator().manual_seed(9)
    noise = [{"input_ids": (ids := torch.randint(300, 900, (30,), generator=g).tolist()), "labels": ids, "num_tokens": 30}]
    result = train_loop(_lora(tiny_model), ctx, _examples(24), noise * 2, tmp_path, show_progress=False)
    assert result.stopped_early
    assert result.steps < 20 * 3


def test_resume_from_checkpoint_matches_uninterrupted(tokenizer, tmp_path, monkeypatch):
    """In-process version of the resume guarantee (the SIGKILL version runs `attune train` in a subprocess)."""
    from conftest import make_tiny_model

    def run(out, resume=False):
        torch.manual_seed(0)
        model = _lora(make_tiny_model(tokenizer))
        ctx = _context(tokenizer, max_steps=6, save_every=2)
        train_loop(model, ctx, _examples(40), [], out, resume=resume, show_progress=False)
        return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    full = run(tmp_path / "full")
    import attune.train.checkpoint as checkpoint_module  # the loop saves through train/distributed.py

    real_save = checkpoint_module.save_checkpoint

    def save_then_die(root, model, optimizer, scheduler, state, keep):
        path = real_save(root, model, optimizer, scheduler, state, keep)
        if state.step == 4:
            raise KeyboardInterrupt  # killed right after the step-4 checkpoint
        return path

    monkeypatch.setattr(checkpoint_module, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "cut")
    monkeypatch.setattr(checkpoint_module, "save_checkpoint", real_save)
    resumed = run(tmp_path / "cut", resume=True)
    for name, value in full.items():
        assert torch.allclose(value, resumed[name], atol=1e-6), name


@pytest.mark.parametrize(
    "adapter",
    [{"type": "full"}, {"type": "freeze", "last_blocks": 1}, {"type": "dora", "r": 4}, {"type": "ia3"},
     {"type": "prefix", "virtual_tokens": 4}, {"type": "prompt", "virtual_tokens": 4}, {"type": "bottleneck"}],
)
def test_loop_trains_every_shape(tiny_model, tokenizer, tmp_path, adapter):
    """The loop's hidden-state capture and packing rules hold for every shape (prompt-learning ones unpacked)."""
    from attune.adapters import apply_adapter, parse_adapter

    model = apply_adapter(tiny_model, parse_adapter(adapter))
    ctx = _context(tokenizer, max_steps=4, lr=1e-2)
    result = train_loop(model, ctx, _examples(16), _examples(2, seed=5), tmp_path, show_progress=False)
    assert result.steps == 4 and result.eval_loss is not None and math.isfinite(result.final_loss)


def test_time_budget_stops_at_a_step_boundary_with_a_checkpoint(tiny_model, tokenizer, tmp_path):
    ctx = _context(tokenizer, epochs=50, max_seconds=1e-6)
    result = train_loop(_lora(tiny_model), ctx, _examples(24), [], tmp_path, show_progress=False)
    assert result.out_of_time and result.steps == 1
    assert [c.name for c in list_checkpoints(tmp_path / "checkpoints")] == ["step-00000001"]
    row = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert row["step"] == 1 and row["loss_tokens"] > 0 and row["seconds"] > 0
