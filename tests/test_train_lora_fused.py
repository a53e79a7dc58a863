"""The loop's fused LoRA layer computes exactly PEFT's LoRA: same loss, same gradients."""

from __future__ import annotations

import pytest
import torch

from attune.train.logprobs import lm_loss_sum
from attune.train.lora_fused import fused_lora


def _lora(model, **kwargs):
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", **kwargs))


def _loss_and_grads(model, ids, labels):
    model.zero_grad()
    total, n = lm_loss_sum(model, ids, labels)
    (total / n).backward()
    return float(total / n), {k: p.grad.clone() for k, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("rslora", [False, True])
def test_fused_lora_matches_peft(tiny_model, rslora):
    model = _lora(tiny_model, use_rslora=rslora)
    g = torch.Generator().manual_seed(0)
    for p in model.parameters():  # lora_B starts at zero: make both factors matter
        if p.requires_grad:
            p.data.normal_(0, 0.05, generator=g)
    ids = torch.randint(3, 900, (2, 20), generator=g)
    labels = ids.clone()
    labels[:, :6] = -100
    ref_loss, ref_grads = _loss_and_grads(model, ids, labels)
    with fused_lora(model) as n_fused:
        loss, grads = _loss_and_grads(model, ids, labels)
    assert n_fused == 2 * 7  # every linear layer of both blocks (q k v o gate up down)
    assert abs(loss - ref_loss) < 1e-6
    for name, ref in ref_grads.items():
        assert torch.allclose(grads[name], ref, atol=1e-6), name
    assert "forward" not in vars(next(m for m in model.modules() if hasattr(m, "lora_A")))  # restored


@pytest.mark.parametrize("kwargs", [{"use_dora": True}, {"lora_dropout": 0.5}])
def test_fused_lora_leaves_other_cases_to_peft(tiny_model, kwargs):
    """DoRA, dropout and disabled adapters (a reference model) run PEFT's own forward, unchanged."""
    model = _lora(tiny_model, **kwargs)
    for p in model.parameters():
        if p.requires_grad:
            p.data.normal_(0, 0.05, generator=torch.Generator().manual_seed(2))
    model.eval()
    ids = torch.randint(3, 900, (1, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(input_ids=ids).logits
        base = model.get_base_model()
        with model.disable_adapter():
            plain = base(input_ids=ids).logits
        with fused_lora(model):
            assert torch.allclose(model(input_ids=ids).logits, expected, atol=1e-6)
            with model.disable_adapter():
                assert torch.allclose(model(input_ids=ids).logits, plain, atol=1e-6)
    assert not torch.allclose(expected, plain, atol=1e-4)  # the adapter does change the output


def test_fused_lora_leaves_autocast_to_peft(tiny_model):
    """Under autocast (bf16 on CPU/GPU) PEFT's forward runs, so matmuls keep autocast's dtype."""
    model = _lora(tiny_model)
    ids = torch.randint(3, 900, (1, 12), generator=torch.Generator().manual_seed(3))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = model(input_ids=ids).logits
        with fused_lora(model):
            got = model(input_ids=ids).logits
    assert got.dtype == expected.dtype and torch.equal(got, expected)
