"""Logit-level distillation: the loss against hand-computed KL and TRL's generalised JSD."""

from __future__ import annotations

import math

import pytest
import torch

from attune.errors import AttuneError
from attune.train.context import StageContext
from attune.train.objectives import distill
from conftest import make_tiny_model


def test_divergence_matches_hand_computed_kl():
    # two tokens over a 3-word vocabulary, written out by hand
    teacher_p = [[0.7, 0.2, 0.1], [0.25, 0.25, 0.5]]
    student_q = [[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]]
    t_logits = torch.tensor(teacher_p).log()
    s_logits = torch.tensor(student_q).log()
    expected = [sum(p * math.log(p / q) for p, q in zip(P, Q)) for P, Q in zip(teacher_p, student_q)]
    assert distill.divergence(s_logits, t_logits, beta=0.0).tolist() == pytest.approx(expected, rel=1e-5)
    reverse = [sum(q * math.log(q / p) for p, q in zip(P, Q)) for P, Q in zip(teacher_p, student_q)]
    assert distill.divergence(s_logits, t_logits, beta=1.0).tolist() == pytest.approx(reverse, rel=1e-5)


@pytest.mark.parametrize("beta", [0.0, 0.5, 0.9, 1.0])
def test_divergence_matches_trl_generalized_jsd(beta):
    from trl.experimental.gkd import GKDTrainer

    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(1, 5, 11, generator=g), torch.randn(1, 5, 11, generator=g)
    ours = distill.divergence(s[0], t[0], beta=beta, temperature=2.0).sum()
    theirs = GKDTrainer.generalized_jsd_loss(s, t, beta=beta, temperature=2.0, reduction="sum")
    assert float(ours) == pytest.approx(float(theirs), rel=1e-5)


def _batch(tokenizer):
    from attune.train.batching import pack_rows

    a = tokenizer("The hub restarts at night.", add_special_tokens=False)["input_ids"]
    b = tokenizer("Billing runs monthly.", add_special_tokens=False)["input_ids"]
    ex_a = {"input_ids": a, "labels": [-100, -100] + a[2:]}
    ex_b = {"input_ids": b, "labels": b}
    return pack_rows([[ex_a, ex_b]], tokenizer.pad_token_id), [ex_a, ex_b]


def test_logit_loss_equals_forward_kl_over_supervised_tokens(tokenizer):
    student, teacher = make_tiny_model(tokenizer, seed=1), make_tiny_model(tokenizer, seed=2)
    batch, examples = _batch(tokenizer)
    total, n = distill.logit_loss_sum(student, teacher, batch, beta=0.0, temperature=1.0, chunk=3)
    # reference: each document on its own, full logits, KL summed where the next label is supervised
    expected, count = 0.0, 0
    with torch.no_grad():
        for ex in examples:
            ids = torch.tensor([ex["input_ids"]])
            p = torch.softmax(teacher(ids).logits[0].double(), -1)
            q = torch.softmax(student(ids).logits[0].double(), -1)
            for t in range(len(ex["input_ids"]) - 1):
                if ex["labels"][t + 1] != -100:
                    expected += float((p[t] * (p[t].log() - q[t].log())).sum())
                    count += 1
    assert n == count == batch["num_loss_tokens"]
    assert float(total) == pytest.approx(expected, rel=1e-4)


def test_logit_loss_trains_only_the_student(tokenizer):
    student, teacher = make_tiny_model(tokenizer, seed=1), make_tiny_model(tokenizer, seed=2)
    objective = distill.Distill(StageContext(tokenizer=tokenizer, options=distill.Options(loss="logit", max_length=64)))
    objective.set_teacher(student, teacher)
    batch, _ = _batch(tokenizer)
    value, metrics = objective.loss(student, batch)
    value.backward()
    assert metrics["kd_loss"] == pytest.approx(float(value.detach()))
    assert student.model.embed_tokens.weight.grad is not None
    assert all(p.grad is None for p in teacher.parameters())


def test_logit_loss_refuses_a_teacher_with_another_vocabulary(tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    other = LlamaForCausalLM(LlamaConfig(vocab_size=1000, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1))
    objective = distill.Distill(StageContext(tokenizer=tokenizer, options=distill.Options(loss="logit")))
    with pytest.raises(AttuneError) as err:
        objective.set_teacher(make_tiny_model(tokenizer), other)
    assert str(err.value) == (
        f"logit distillation needs a shared vocabulary: the student's head has {len(tokenizer)} rows, the teacher's 1000; "
        "use `loss: sequence` for teachers with another tokenizer"
    )
