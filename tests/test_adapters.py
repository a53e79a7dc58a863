"""Every adapter shape trains on the tiny model; PEFT shapes round-trip through plain PEFT."""

from __future__ import annotations

import pytest
import torch

from attune.adapters import REGISTRY, apply_adapter, count_parameters, parse_adapter
from attune.errors import AttuneError

CONFIGS = {
    "full": {"type": "full"},
    "freeze": {"type": "freeze", "last_blocks": 1},
    "lora": {"type": "lora", "r": 4, "alpha": 8},
    "dora": {"type": "dora", "r": 4, "alpha": 8},
    "ia3": {"type": "ia3"},
    "prefix": {"type": "prefix", "virtual_tokens": 4},
    "prompt": {"type": "prompt", "virtual_tokens": 4},
    "bottleneck": {"type": "bottleneck", "variant": "houlsby", "reduction": 4},
}
LRS = {"full": 1e-2, "freeze": 1e-2, "lora": 2e-2, "dora": 2e-2, "ia3": 5e-2, "prefix": 5e-2, "prompt": 5e-2, "bottleneck": 1e-2}


def test_every_registered_shape_is_covered():
    assert set(CONFIGS) | {"qlora"} == set(REGISTRY)


def _batch():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 300, (4, 16), generator=g)
    return ids, torch.ones_like(ids)


def _train(model, steps: int, lr: float) -> list[float]:
    """A plain causal-LM loop on one fixed batch (independent of attune's loop, on purpose)."""
    ids, mask = _batch()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    losses = []
    for _ in range(steps):
        loss = model(input_ids=ids, attention_mask=mask, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(float(loss))
    return losses


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_shape_trains_changes_trainable_and_keeps_frozen(tiny_model, name):
    model = apply_adapter(tiny_model, parse_adapter(CONFIGS[name]))
    trainable, total = count_parameters(model)
    assert 0 < trainable <= total
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    losses = _train(model, steps=12, lr=LRS[name])
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]
    params = dict(model.named_parameters())
    unchanged = [n for n, p in params.items() if p.requires_grad and torch.equal(before[n], p.detach())]
    moved = [n for n, p in params.items() if not p.requires_grad and not torch.equal(before[n], p.detach())]
    assert not unchanged, f"trainable parameters that did not change: {unchanged}"
    assert not moved, f"frozen parameters that changed: {moved}"


@pytest.mark.parametrize("name", ["lora", "dora", "ia3", "prefix", "prompt"])
def test_peft_shapes_round_trip_through_plain_peft(tmp_path, tokenizer, name):
    from peft import PeftModel

    from conftest import make_tiny_model

    model = apply_adapter(make_tiny_model(tokenizer), parse_adapter(CONFIGS[name]))
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))  # make the adapter non-trivial
    ids, mask = _batch()
    model.eval()
    expected = model(input_ids=ids, attention_mask=mask).logits
    model.save_pretrained(tmp_path / "adapter")
    reloaded = PeftModel.from_pretrained(make_tiny_model(tokenizer), str(tmp_path / "adapter")).eval()
    assert torch.allclose(reloaded(input_ids=ids, attention_mask=mask).logits, expected, atol=1e-5)


def test_bottleneck_round_trip(tmp_path, tokenizer):
    from attune.adapters.bottleneck import load_bottleneck, save_bottleneck
    from conftest import make_tiny_model

    model = apply_adapter(make_tiny_model(tokenizer), parse_adapter(CONFIGS["bottleneck"]))
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    ids, _ = _batch()
    expected = model(input_ids=ids).logits
    save_bottleneck(model, tmp_path / "b")
    loaded = load_bottleneck(make_tiny_model(tokenizer), tmp_path / "b")
    assert torch.allclose(loaded(input_ids=ids).logits, expected, atol=1e-6)


def test_qlora_loads_4bit_and_trains(tiny_model_dir):
    pytest.importorskip("bitsandbytes")
    from transformers import AutoModelForCausalLM

    from attune.adapters import shape

    cfg = parse_adapter({"type": "qlora", "r": 4, "alpha": 8})
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, **shape("qlora").load_kwargs(cfg))
    assert any(p.__class__.__name__ == "Params4bit" for p in base.parameters())
    losses = _train(apply_adapter(base, cfg), steps=6, lr=2e-2)
    assert losses[-1] < losses[0]


def test_qlora_still_backpropagates_after_an_inference_forward(tiny_model_dir):
    """Validation or a rollout (eval mode, no grad) between steps must not cut the gradient: on CPUs with
    AVX512-BF16, bitsandbytes would repack the 4-bit weights into a layout whose kernel has no backward."""
    pytest.importorskip("bitsandbytes")
    from transformers import AutoModelForCausalLM

    from attune.adapters import shape

    cfg = parse_adapter({"type": "qlora", "r": 4, "alpha": 8})
    model = apply_adapter(AutoModelForCausalLM.from_pretrained(tiny_model_dir, **shape("qlora").load_kwargs(cfg)), cfg)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.normal_(0, 0.1)  # lora_B starts at 0, which would hide a missing gradient into lora_A
    ids = torch.tensor([[1, 20, 30, 40, 50, 60]])

    def gradients() -> dict[str, torch.Tensor]:
        model.train()
        model.zero_grad()
        model(input_ids=ids, labels=ids).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    before = gradients()
    model.eval()
    with torch.no_grad():
        model(input_ids=ids)
    after = gradients()
    assert all(torch.allclose(before[n], after[n], atol=1e-6) for n in before), \
        [n for n in before if not torch.allclose(before[n], after[n], atol=1e-6)]


def test_config_errors_are_clear(tiny_model):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="r\n  Input should be greater than 0"):
        parse_adapter({"type": "lora", "r": 0})
    with pytest.raises(AttuneError, match=r"unknown adapter type 'lorra' \(did you mean 'lora'\?\)"):
        parse_adapter({"type": "lorra"})
    with pytest.raises(AttuneError, match=r"adapter targets \['wq'\] not found in the model"):
        apply_adapter(tiny_model, parse_adapter({"type": "lora", "targets": ["wq"]}))
    with pytest.raises(AttuneError, match="freeze: last_blocks=5 but the model has 2 blocks"):
        apply_adapter(tiny_model, parse_adapter({"type": "freeze", "last_blocks": 5}))
