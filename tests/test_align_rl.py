"""PPO/GRPO maths against values computed by hand (the arithmetic is in each test's comments)."""

from __future__ import annotations

import math

import pytest
import torch

from attune.align import rl


def test_gae_full_sequence():
    # gamma 0.9, lam 0.8: t2 delta = 2 - 1.5 = 0.5; t1 delta = 0.9*1.5 - 1 = 0.35, A1 = 0.35 + 0.72*0.5 = 0.71;
    # t0 delta = 1 + 0.9*1 - 0.5 = 1.4, A0 = 1.4 + 0.72*0.71 = 1.9112
    adv, ret = rl.gae(torch.tensor([[1.0, 0.0, 2.0]]), torch.tensor([[0.5, 1.0, 1.5]]), torch.ones(1, 3), 0.9, 0.8)
    assert torch.allclose(adv, torch.tensor([[1.9112, 0.71, 0.5]]), atol=1e-6)
    assert torch.allclose(ret, torch.tensor([[2.4112, 1.71, 2.0]]), atol=1e-6)


def test_gae_stops_at_the_end_of_each_sequence():
    # the third token is padding: V and A past the end count as 0 -> A1 = 0 - 1 = -1, A0 = 1.4 + 0.72*(-1) = 0.68
    adv, ret = rl.gae(torch.tensor([[1.0, 0.0, 7.0]]), torch.tensor([[0.5, 1.0, 9.0]]), torch.tensor([[1, 1, 0]]), 0.9, 0.8)
    assert torch.allclose(adv, torch.tensor([[0.68, -1.0, 0.0]]), atol=1e-6)
    assert torch.allclose(ret, torch.tensor([[1.18, 0.0, 0.0]]), atol=1e-6)


def test_masked_whiten_uses_masked_entries_and_unbiased_variance():
    # [1,2,3,4]: mean 2.5, unbiased var 5/3
    out = rl.masked_whiten(torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.ones(4))
    assert torch.allclose(out, torch.tensor([-1.5, -0.5, 0.5, 1.5]) / math.sqrt(5 / 3), atol=1e-5)
    # the masked-out 100 is ignored: mean 2, var 1
    out = rl.masked_whiten(torch.tensor([1.0, 2.0, 3.0, 100.0]), torch.tensor([1, 1, 1, 0]))
    assert torch.allclose(out, torch.tensor([-1.0, 0.0, 1.0, 0.0]), atol=1e-5)
    kept = rl.masked_whiten(torch.tensor([1.0, 2.0, 3.0, 100.0]), torch.tensor([1, 1, 1, 0]), shift_mean=False)
    assert torch.allclose(kept, torch.tensor([1.0, 2.0, 3.0, 0.0]), atol=1e-5)


def test_group_advantages():
    # group 1 [1,0,0,1]: mean 0.5, unbiased std sqrt(1/3); group 2 is constant -> 0
    adv = rl.group_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0]), group_size=4)
    s = 0.5 / (math.sqrt(1 / 3) + 1e-4)
    assert torch.allclose(adv, torch.tensor([s, -s, -s, s, 0, 0, 0, 0]), atol=1e-6)
    unscaled = rl.group_advantages(torch.tensor([1.0, 0.0, 3.0, 1.0]), group_size=2, scale=False)
    assert torch.allclose(unscaled, torch.tensor([0.5, -0.5, 1.0, -1.0]))


def test_clipped_policy_loss():
    # ratios 1.5 (A=1), 0.5 (A=-1), 1.1 (A=2), clip 0.2: max(-A r, -A clip(r)) = -1.2, 0.8, -2.2
    logp = torch.log(torch.tensor([[1.5, 0.5, 1.1]]))
    out = rl.clipped_policy_loss(logp, torch.zeros(1, 3), torch.tensor([[1.0, -1.0, 2.0]]), torch.ones(1, 3), 0.2)
    assert out.loss.item() == pytest.approx((-1.2 + 0.8 - 2.2) / 3, abs=1e-6)
    assert out.clip_fraction == pytest.approx(2 / 3)
    # k3 of KL(old||new) per token: r - 1 - log r with r = old/new = 1/ratio
    expected_kl = sum(1 / r - 1 + math.log(r) for r in (1.5, 0.5, 1.1)) / 3
    assert out.approx_kl == pytest.approx(expected_kl, abs=1e-6)


def test_clipped_policy_loss_gradient_is_zero_where_clipped():
    logp = torch.log(torch.tensor([[1.5, 1.1]])).requires_grad_()
    rl.clipped_policy_loss(logp, torch.zeros(1, 2), torch.tensor([[1.0, 1.0]]), torch.ones(1, 2), 0.2).loss.backward()
    # d/dlogp of -A r / 2 at r=1.1 is -1.1/2; the clipped token contributes nothing
    assert torch.allclose(logp.grad, torch.tensor([[0.0, -0.55]]), atol=1e-6)


def test_clipped_value_loss():
    # V 1.5, V_old 1.0, R 2.0, clip 0.2: unclipped (1.5-2)^2 = .25, clipped (1.2-2)^2 = .64 -> 0.5 * .64
    loss, frac = rl.clipped_value_loss(torch.tensor([[1.5, 1.1]]), torch.tensor([[1.0, 1.0]]), torch.tensor([[2.0, 1.0]]),
                                       torch.tensor([[1, 0]]), 0.2)
    assert loss.item() == pytest.approx(0.32)
    assert frac == 1.0


def test_kl_estimators():
    logp, ref = torch.log(torch.tensor(0.5)), torch.log(torch.tensor(0.25))
    assert rl.per_token_kl(logp, ref, "k1").item() == pytest.approx(math.log(2))
    assert rl.per_token_kl(logp, ref, "k2").item() == pytest.approx(0.5 * math.log(2) ** 2)
    assert rl.per_token_kl(logp, ref, "k3").item() == pytest.approx(0.5 - 1 + math.log(2))  # r - 1 - log r, r = 0.5
    assert rl.per_token_kl(ref, logp, "k3").item() >= 0


def test_token_rewards_put_the_score_on_the_last_real_token():
    r = rl.token_rewards(torch.tensor([2.0]), torch.tensor([[0.1, 0.2, 0.3]]), torch.tensor([[1, 1, 0]]), kl_coef=0.5)
    assert torch.allclose(r, torch.tensor([[-0.05, 1.9, 0.0]]))


def test_adaptive_kl_controller():
    # error = clip(KL/target - 1, +-0.2); beta *= 1 + error * n / horizon
    c = rl.AdaptiveKLController(0.1, target=6.0, horizon=10_000)
    c.update(12.0, n_steps=100)
    assert c.value == pytest.approx(0.1 * 1.002)
    c = rl.AdaptiveKLController(0.1, target=6.0, horizon=10_000)
    c.update(5.7, n_steps=100)  # error -0.05
    assert c.value == pytest.approx(0.1 * (1 - 0.05 * 100 / 10_000))
    fixed = rl.FixedKLController(0.1)
    fixed.update(100.0, 10)
    assert fixed.value == 0.1
