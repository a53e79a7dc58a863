"""Building blocks of online RL for language models (PPO and GRPO), each a small pure function.

Shapes: B sequences, T response tokens. Per-token tensors are aligned with the response
(position t is the t-th generated token) and `mask` (B, T) is 1 on real tokens, 0 after the end.
Tests check every function against hand-computed values (tests/test_align_rl.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / std over masked entries (unbiased variance); `shift_mean=False` keeps the mean.

    PPO whitens advantages per batch (Schulman et al. 2017; the `whiten` of Ziegler et al. 2019),
    which makes the step size independent of the reward scale.
    """
    mean = masked_mean(x, mask)
    n = mask.sum().clamp(min=2)
    var = masked_mean((x - mean) ** 2, mask) * n / (n - 1)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask.to(x.dtype)


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016): (advantages, returns), both (B, T).

    delta_t = r_t + gamma * V_{t+1} - V_t and A_t = delta_t + gamma * lam * A_{t+1}, with V and A
    taken as 0 past each sequence's last token. Returns are A + V (the value targets).
    """
    mask = mask.to(values.dtype)
    rewards, values = rewards * mask, values * mask
    advantages = torch.zeros_like(values)
    running = torch.zeros_like(values[:, 0])
    T = values.shape[1]
    for t in reversed(range(T)):
        next_value = values[:, t + 1] if t + 1 < T else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * mask[:, t]
        advantages[:, t] = running
    return advantages, (advantages + values) * mask


def group_advantages(rewards: torch.Tensor, group_size: int, scale: bool = True, eps: float = 1e-4) -> torch.Tensor:
    """GRPO's advantages (Shao et al. 2024, sec. 4.1): each reward minus its group's mean, over its std.

    `rewards` (N * group_size,) holds consecutive groups of completions of the same prompt.
    `scale=False` skips the division (Dr. GRPO, Liu et al. 2025, which removes a difficulty bias).
    The std is unbiased and eps = 1e-4 as in TRL's GRPOTrainer.
    """
    grouped = rewards.view(-1, group_size)
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    if scale:
        std = grouped.std(dim=1, keepdim=True) if group_size > 1 else torch.zeros_like(grouped[:, :1])
        centred = centred / (std + eps)
    return centred.reshape(-1)


@dataclass
class PolicyLoss:
    loss: torch.Tensor
    clip_fraction: float
    approx_kl: float


def clipped_policy_loss(
    logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, clip: float = 0.2
) -> PolicyLoss:
    """PPO's clipped surrogate (Schulman et al. 2017, eq. 7), as a loss, mean over masked tokens.

    `advantages` is (B, T) per token (PPO) or (B, 1) per sequence (GRPO). `approx_kl` is the k3
    estimate of KL(old || new) over this minibatch, a diagnostic for too-large updates.
    """
    log_ratio = logp - old_logp
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - clip, 1 + clip)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        clip_fraction = float(masked_mean((clipped > unclipped).float(), mask))
        approx_kl = float(masked_mean(torch.expm1(-log_ratio) + log_ratio, mask))
    return PolicyLoss(loss, clip_fraction, approx_kl)


def clipped_value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, clip: float = 0.2
) -> tuple[torch.Tensor, float]:
    """0.5 * max((V - R)^2, (clip(V, V_old +- clip) - R)^2), masked mean, and the clipped share.

    The value clipping of OpenAI baselines' PPO2, kept by Ziegler et al. 2019 for language models.
    """
    clipped_values = old_values + torch.clamp(values - old_values, -clip, clip)
    unclipped = (values - returns) ** 2
    clipped = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped, clipped), mask)
    return loss, float(masked_mean((clipped > unclipped).float(), mask))


def _k1(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    return logp - ref_logp


def _k2(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    return 0.5 * (logp - ref_logp) ** 2


def _k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    log_ratio = ref_logp - logp
    return torch.expm1(log_ratio) - log_ratio


KL_ESTIMATORS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {"k1": _k1, "k2": _k2, "k3": _k3}
"""Per-token estimators of KL(pi || ref) from samples of pi (Schulman 2020, "Approximating KL
divergence"): k1 = log pi/ref is unbiased but noisy and can be negative; k3 = ref/pi - 1 - log(ref/pi)
is unbiased and never negative (GRPO's choice); k2 is biased with low variance."""


def per_token_kl(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    return KL_ESTIMATORS[estimator](logp, ref_logp)


def token_rewards(scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kl_coef: float) -> torch.Tensor:
    """PPO's per-token reward (Ziegler et al. 2019, eq. 2): -kl_coef * KL_t, plus the score on the last token."""
    rewards = -kl_coef * kl * mask.to(kl.dtype)
    last = (mask.sum(dim=1) - 1).clamp(min=0).long()
    rewards[torch.arange(rewards.shape[0]), last] += scores.to(rewards.dtype)
    return rewards


class FixedKLController:
    """A constant KL coefficient."""

    def __init__(self, value: float) -> None:
        self.value = value

    def update(self, current_kl: float, n_steps: int) -> None:
        return None


class AdaptiveKLController:
    """The proportional controller of Ziegler et al. 2019 (sec. 2.2) that steers KL towards a target.

    error = clip(KL / target - 1, -0.2, 0.2); beta <- beta * (1 + error * n_steps / horizon).
    """

    def __init__(self, init: float, target: float, horizon: int) -> None:
        self.value = init
        self.target = target
        self.horizon = horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        error = min(max(current_kl / self.target - 1, -0.2), 0.2)
        self.value *= 1 + error * n_steps / self.horizon
