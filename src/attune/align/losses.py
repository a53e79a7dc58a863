"""Preference losses over sequence log-probabilities, and the pairwise reward-model loss.

Every function here is pure tensor maths: the objectives compute log-probs with
`attune.train.logprobs` and hand them in. Tests check each loss and its gradients against
TRL's implementation on the same model and batch (tests/test_align_trl_equivalence.py).

Notation: for a pair (prompt x, chosen y_w, rejected y_l), `logp_w = log pi(y_w | x)` summed over
the reply's tokens, `ref_w` the same under the frozen reference, and the implicit DPO reward
r(y) = beta * (logp - ref).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

PreferenceLossName = Literal["sigmoid", "ipo", "hinge", "simpo"]


@dataclass
class PairLogps:
    """Summed log-probs of the chosen and rejected replies of B pairs, and their token counts."""

    chosen: torch.Tensor  # (B,)
    rejected: torch.Tensor  # (B,)
    chosen_tokens: torch.Tensor  # (B,)
    rejected_tokens: torch.Tensor  # (B,)

    def averages(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token mean log-probs (the length normalisation of IPO and SimPO)."""
        return self.chosen / self.chosen_tokens.clamp(min=1), self.rejected / self.rejected_tokens.clamp(min=1)


@dataclass
class PreferenceSettings:
    beta: float
    label_smoothing: float = 0.0
    simpo_gamma: float = 0.5


def _smoothed_logistic(logits: torch.Tensor, eps: float) -> torch.Tensor:
    """-(1-eps) log sigma(z) - eps log sigma(-z): the label noise model of conservative DPO (Mitchell 2023)."""
    return -(1 - eps) * F.logsigmoid(logits) - eps * F.logsigmoid(-logits)


def _sigmoid(policy: PairLogps, ref: PairLogps | None, s: PreferenceSettings) -> torch.Tensor:
    """DPO (Rafailov et al. 2023, eq. 7), with cDPO label smoothing."""
    assert ref is not None
    delta = (policy.chosen - ref.chosen) - (policy.rejected - ref.rejected)
    return _smoothed_logistic(s.beta * delta, s.label_smoothing)


def _hinge(policy: PairLogps, ref: PairLogps | None, s: PreferenceSettings) -> torch.Tensor:
    """SLiC-HF's calibration hinge on the DPO log-ratio margin (Zhao et al. 2023)."""
    assert ref is not None
    delta = (policy.chosen - ref.chosen) - (policy.rejected - ref.rejected)
    return torch.relu(1 - s.beta * delta)


def _ipo(policy: PairLogps, ref: PairLogps | None, s: PreferenceSettings) -> torch.Tensor:
    """IPO (Azar et al. 2023, eq. 17): squared distance of the margin to 1/(2 tau), tau = beta.

    Log-ratios are averaged per token, as TRL does after confirming it with the IPO authors;
    otherwise the squared loss grows with reply length.
    """
    assert ref is not None
    chosen = (policy.chosen - ref.chosen) / policy.chosen_tokens.clamp(min=1)
    rejected = (policy.rejected - ref.rejected) / policy.rejected_tokens.clamp(min=1)
    return (chosen - rejected - 1 / (2 * s.beta)) ** 2


def _simpo(policy: PairLogps, ref: PairLogps | None, s: PreferenceSettings) -> torch.Tensor:
    """SimPO (Meng et al. 2024, eq. 6): reference-free, length-normalised, with a target margin gamma."""
    chosen, rejected = policy.averages()
    return _smoothed_logistic(s.beta * (chosen - rejected) - s.simpo_gamma, s.label_smoothing)


PREFERENCE_LOSSES: dict[str, Callable[[PairLogps, PairLogps | None, PreferenceSettings], torch.Tensor]] = {
    "sigmoid": _sigmoid,
    "hinge": _hinge,
    "ipo": _ipo,
    "simpo": _simpo,
}
REFERENCE_FREE = frozenset({"simpo"})


def preference_loss(
    name: str, policy: PairLogps, reference: PairLogps | None, settings: PreferenceSettings
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair losses (B,) and the implicit rewards of the chosen and rejected replies (B,), detached.

    Rewards are beta * log-ratio to the reference (DPO family) or beta * mean token log-prob
    (SimPO), the quantities whose margin and accuracy the objectives report.
    """
    losses = PREFERENCE_LOSSES[name](policy, reference, settings)
    if name in REFERENCE_FREE:
        chosen, rejected = policy.averages()
    else:
        assert reference is not None
        chosen, rejected = policy.chosen - reference.chosen, policy.rejected - reference.rejected
    return losses, settings.beta * chosen.detach(), settings.beta * rejected.detach()


def pairwise_reward_loss(
    chosen: torch.Tensor, rejected: torch.Tensor, margin: torch.Tensor | None = None, center_coef: float | None = None
) -> torch.Tensor:
    """Bradley-Terry loss of a reward model, -log sigma(r_w - r_l - m), mean over pairs.

    The optional per-pair margin m follows Llama 2 (Touvron et al. 2023, eq. 2); `center_coef`
    adds coef * mean((r_w + r_l)^2), which keeps rewards centred on zero (Eisenstein et al. 2023).
    """
    diff = chosen - rejected
    if margin is not None:
        diff = diff - margin
    loss = -F.logsigmoid(diff).mean()
    if center_coef:
        loss = loss + center_coef * torch.mean((chosen + rejected) ** 2)
    return loss
