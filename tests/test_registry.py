"""Every registered objective x every adapter shape it supports: two steps of `train_loop` on the tiny model.

Each case checks what the seams promise: the loss is finite, every trainable parameter changed,
every frozen one did not, and the artefact the shape saves loads back (by the directory's own
shape) and computes the same logits. A new objective or shape is covered here with no edit.
"""

from __future__ import annotations

import math

import pytest
import torch
from accelerate import Accelerator

from attune.adapters import REGISTRY, apply_adapter, parse_adapter, shape
from attune.data import ChatRecord, PreferenceRecord, PromptRecord, TextRecord
from attune.train.context import StageContext
from attune.train.loop import train_loop
from attune.train.objectives import OBJECTIVES, get_objective
from conftest import make_tiny_model

SMALL = {"lora": {"r": 4}, "dora": {"r": 4}, "qlora": {"r": 4}, "freeze": {"last_blocks": 1}, "prefix": {"virtual_tokens": 4},
         "prompt": {"virtual_tokens": 4}, "bottleneck": {"reduction": 8}}
"""Shape settings that keep the tiny model tiny (everything else is the shape's default)."""


def even_tokens(prompts, completions, completion_ids, **_):
    """A reward that differs between sampled replies, so GRPO's group advantages are not all zero."""
    return [sum(t % 2 == 0 for t in ids) / max(len(ids), 1) for ids in completion_ids]


def _records(kinds: tuple[str, ...]) -> list:
    user = [{"role": "user", "content": "Where is my parcel?"}]
    make = {
        "chat": lambda i: ChatRecord(user + [{"role": "assistant", "content": f"It ships on day {i}."}], f"r:{i}"),
        "text": lambda i: TextRecord(f"The hub {i} stores energy for the house. " * 3, f"r:{i}"),
        "preference": lambda i: PreferenceRecord(user, f"Thanks for asking! Day {i}.", "No idea.", f"r:{i}"),
        "prompt": lambda i: PromptRecord(user, None, f"r:{i}"),
    }[next(k for k in ("chat", "text", "prompt", "preference") if k in kinds)]
    return [make(i) for i in range(8)]


def _cases():
    for objective in OBJECTIVES:
        for name in REGISTRY:
            marks = [pytest.mark.skipif(not _has_bitsandbytes(), reason="qlora needs bitsandbytes")] if name == "qlora" else []
            yield pytest.param(objective, name, id=f"{objective}-{name}", marks=marks)


def _has_bitsandbytes() -> bool:
    import importlib.util

    return importlib.util.find_spec("bitsandbytes") is not None


def _base(tokenizer, adapter_shape, cfg, tmp_path):
    if adapter_shape.load_kwargs(cfg):  # a shape that changes how the base loads (QLoRA: 4-bit) loads it from a dir
        from attune.models import load_model

        path = tmp_path / "base"
        if not path.is_dir():
            make_tiny_model(tokenizer, seed=7).save_pretrained(path)
            tokenizer.save_pretrained(path)
        model = load_model(str(path), device="cpu", model_kwargs=adapter_shape.load_kwargs(cfg)).model
        from attune.adapters.qlora import keep_trainable_layout

        keep_trainable_layout(model)  # as training has it: the reloaded copy computes like the trained one
        return model
    return make_tiny_model(tokenizer, seed=7)


@pytest.mark.parametrize("objective_name,shape_name", _cases())
def test_every_objective_trains_every_shape_two_steps(objective_name, shape_name, tokenizer, tmp_path):
    cls = get_objective(objective_name)
    cfg = parse_adapter({"type": shape_name, **SMALL.get(shape_name, {})})
    adapter_shape = shape(shape_name)
    try:
        cls.check(cls.Options(), cfg)
    except ValueError as exc:
        pytest.skip(f"{objective_name} does not take {shape_name}: {exc}")
    extra = {"reward_function": f"{__name__}:even_tokens", "max_new_tokens": 4, "group_size": 2} if cls.takes_reward else {}
    if objective_name == "distill":
        extra = {"loss": "logit"}
    options = cls.Options(max_steps=2, lr=1e-2, warmup_ratio=0.0, batch_tokens=256, max_length=64, val_fraction=0.0,
                          grad_clip=None, **{k: v for k, v in extra.items() if k in cls.Options.model_fields})
    torch.manual_seed(0)
    objective = cls(StageContext(tokenizer=tokenizer, options=options, accelerator=Accelerator(cpu=True)))
    model = apply_adapter(objective.student(_base(tokenizer, adapter_shape, cfg, tmp_path)), cfg)
    if objective_name == "distill":
        objective.set_teacher(model, make_tiny_model(tokenizer, seed=8))
    objective.setup(model)  # heads first, so their parameters are in the before/after picture
    before = {n: p.detach().clone() for n, p in model.named_parameters()}

    result = train_loop(model, objective, objective.prepare(_records(cls.record_kinds)), [], tmp_path / "run",
                        show_progress=False)

    assert result.steps == 2 and math.isfinite(result.final_loss)
    params = dict(model.named_parameters())
    assert params.keys() == before.keys()
    still = [n for n, p in params.items() if p.requires_grad and torch.equal(before[n], p.detach())]
    moved = [n for n, p in params.items() if not p.requires_grad and not torch.equal(before[n], p.detach())]
    assert not still, f"trainable parameters that did not change: {still}"
    assert not moved, f"frozen parameters that changed: {moved}"

    out = tmp_path / adapter_shape.output
    adapter_shape.save(model, out)
    if adapter_shape.output == "adapter":
        from attune.models.adapters_io import load_adapter

        loaded = load_adapter(_base(tokenizer, adapter_shape, cfg, tmp_path), out)  # by the directory's own shape
    else:
        from transformers import AutoModelForCausalLM

        loaded = AutoModelForCausalLM.from_pretrained(out)
    ids = torch.tensor([[1, 20, 30, 40, 50, 60]])
    model.eval()
    loaded.eval()
    with torch.no_grad():
        assert torch.allclose(loaded(input_ids=ids).logits, model(input_ids=ids).logits, atol=1e-5)
