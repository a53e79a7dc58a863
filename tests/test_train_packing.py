"""Packing must be invisible to the model: a packed batch equals its examples run one by one."""

from __future__ import annotations

import torch

from attune.train.batching import pack_rows, plan_epoch
from attune.train.logprobs import lm_loss_sum, token_logprobs


def _examples(n: int, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        length = int(torch.randint(5, 40, (1,), generator=g))
        ids = torch.randint(3, 900, (length,), generator=g).tolist()
        cut = length // 3
        out.append({"input_ids": ids, "labels": [-100] * cut + ids[cut:], "num_tokens": length})
    return out


def test_packed_loss_and_grads_equal_one_by_one(tiny_model):
    tiny_model.eval()  # no dropout in the tiny config anyway; be explicit
    examples = _examples(6)
    batch = pack_rows([examples[:3], examples[3:]], pad_id=0)
    assert batch["position_ids"][0, len(examples[0]["input_ids"])] == 0  # positions restart per example

    packed_sum, packed_n = lm_loss_sum(tiny_model, batch["input_ids"], batch["labels"], position_ids=batch["position_ids"])
    packed_sum.backward()
    packed_grad = tiny_model.model.layers[0].self_attn.q_proj.weight.grad.clone()
    tiny_model.zero_grad()

    single_sum, single_n = 0.0, 0
    for ex in examples:
        ids = torch.tensor([ex["input_ids"]])
        s, n = lm_loss_sum(tiny_model, ids, torch.tensor([ex["labels"]]))
        s.backward()
        single_sum += float(s)
        single_n += n
    single_grad = tiny_model.model.layers[0].self_attn.q_proj.weight.grad

    assert packed_n == single_n == batch["num_loss_tokens"]
    assert abs(float(packed_sum) / packed_n - single_sum / single_n) < 1e-5
    assert torch.allclose(packed_grad, single_grad, atol=1e-5)


def test_fused_loss_matches_transformers_loss_and_grads(tiny_model):
    ids = torch.randint(3, 900, (2, 24), generator=torch.Generator().manual_seed(1))
    labels = ids.clone()
    labels[:, :10] = -100
    reference = tiny_model(input_ids=ids, labels=labels).loss
    reference.backward()
    ref_grads = [p.grad.clone() for p in tiny_model.parameters()]
    tiny_model.zero_grad()
    total, n = lm_loss_sum(tiny_model, ids, labels, chunk=7)  # chunks that do not divide N
    (total / n).backward()
    assert abs(float(total / n) - float(reference)) < 1e-5
    for ref, p in zip(ref_grads, tiny_model.parameters()):
        assert torch.allclose(ref, p.grad, atol=1e-6)


def test_token_logprobs_match_log_softmax(tiny_model):
    ids = torch.randint(3, 900, (2, 16), generator=torch.Generator().manual_seed(2))
    labels = ids.clone()
    labels[0, :5] = -100
    got = token_logprobs(tiny_model, ids, None, labels, chunk=5)
    logits = tiny_model(input_ids=ids).logits.float()
    expected = torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    expected = torch.nn.functional.pad(expected * (labels[:, 1:] != -100), (1, 0))
    assert torch.allclose(got, expected, atol=1e-5)


def test_plan_uses_every_example_once_within_budget():
    lengths = [int(x) for x in torch.randint(5, 120, (200,), generator=torch.Generator().manual_seed(3))]
    for packing in (True, False):
        plan = plan_epoch(lengths, batch_tokens=512, max_length=128, packing=packing, seed=7)
        seen = sorted(i for mb in plan for row in mb for i in row)
        assert seen == list(range(200))
        for mb in plan:
            assert all(sum(lengths[i] for i in row) <= 128 for row in mb)
            width = max(sum(lengths[i] for i in row) for row in mb)
            assert len(mb) * width <= 512 or len(mb) == 1
        assert plan == plan_epoch(lengths, batch_tokens=512, max_length=128, packing=packing, seed=7)


def test_packing_wastes_little():
    lengths = [int(x) for x in torch.randint(20, 300, (300,), generator=torch.Generator().manual_seed(4))]
    plan = plan_epoch(lengths, batch_tokens=2048, max_length=512, packing=True, seed=0)
    padded = sum(len(mb) * max(sum(lengths[i] for i in row) for row in mb) for mb in plan)
    assert sum(lengths) / padded > 0.9


def test_packed_attention_kernel_matches_one_by_one(tiny_model):
    """The per-example causal attention the loop uses for packed rows gives the same loss and grads."""
    from attune.train.attention import packed_attention

    examples = _examples(5, seed=3)
    batch = pack_rows([examples[:2], examples[2:]], pad_id=0)
    with packed_attention(tiny_model):
        total, n = lm_loss_sum(tiny_model, batch["input_ids"], batch["labels"], position_ids=batch["position_ids"])
        total.backward()
    grad = tiny_model.model.layers[1].self_attn.k_proj.weight.grad.clone()
    tiny_model.zero_grad()
    single = 0.0
    for ex in examples:
        s, _ = lm_loss_sum(tiny_model, torch.tensor([ex["input_ids"]]), torch.tensor([ex["labels"]]))
        s.backward()
        single += float(s)
    assert abs(float(total) - single) / n < 1e-5
    assert torch.allclose(grad, tiny_model.model.layers[1].self_attn.k_proj.weight.grad, atol=1e-5)
    assert tiny_model.config._attn_implementation == "sdpa"  # restored
