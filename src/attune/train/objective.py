"""The objective seam: one `Objective` subclass per training objective, with declared capabilities.

The loop and the pipeline read only what is declared here; an objective overrides `prepare`,
`collate` and `loss`, and any hook whose default does not fit. It keeps its own state (caches,
controllers, running sums) as attributes: one instance trains one stage.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from attune.adapters.base import AdapterConfig
from attune.train.config import TrainConfig
from attune.train.context import StageContext

Example = dict[str, Any]
"""One tokenized training example; `num_tokens` (what it costs in a micro-batch) is required."""
Batch = dict[str, Any]
"""One micro-batch; `num_loss_tokens` weighs it against the other micro-batches of a step."""


class Objective:
    """Base class: capabilities as class attributes, hooks as methods (defaults do nothing)."""

    Options: ClassVar[type[TrainConfig]] = TrainConfig
    """The objective's settings: the stage's `train:` mapping is validated against this class."""
    record_kinds: ClassVar[tuple[str, ...]] = ()
    """Canonical record kinds it trains on (see `attune.data.records`)."""
    packable: ClassVar[bool] = False
    """Several examples may share a row (position ids restart per example): `collate` gets packed rows."""
    online: ClassVar[bool] = False
    """Each batch of prompts becomes rollout minibatches through `expand`, one optimizer step each."""
    changes_policy: ClassVar[bool] = True
    """False for a reward model: the next stage starts from the weights this one started from."""
    takes_teacher: ClassVar[bool] = False
    """The stage names a `teacher:` (required when true, refused when false)."""
    takes_reward: ClassVar[bool] = False
    """The stage scores replies: exactly one of `reward_model:` and `train.reward_function`."""
    streams: ClassVar[bool] = False
    """`iter_examples` tokenizes records one at a time, so the stage can read its data while training
    (its `Options` then has `streaming` and `stream_val_docs`)."""

    def __init__(self, context: StageContext) -> None:
        self.context = context

    @classmethod
    def check(cls, options: Any, adapter: AdapterConfig) -> None:
        """Refuse settings that cannot work together, when the recipe loads (raise ValueError)."""

    @property
    def options(self) -> Any:
        """The stage's validated `Options` (typed `Any` so subclasses read their own fields)."""
        return self.context.options

    def needs_reference(self) -> bool:
        """Whether the loop freezes a reference policy before the first step (DPO, PPO, GRPO with KL)."""
        return False

    def student(self, model: nn.Module) -> nn.Module:
        """The model the stage trains, made from the starting one (distillation builds a smaller student)."""
        return model

    def iter_examples(self, records: Iterable) -> Iterator[Example]:
        """Streaming objectives: the examples of `records`, produced as they are read."""
        raise NotImplementedError(f"{type(self).__name__} does not stream")

    def prepare(self, records: list) -> list[Example]:
        """Tokenize canonical records into examples."""
        raise NotImplementedError

    def collate(self, rows: list[list[Example]]) -> Batch:
        """One micro-batch from rows of examples (one example per row unless `packable` and packing is on)."""
        raise NotImplementedError

    def setup(self, model: nn.Module) -> None:
        """Before the optimizer is built: add trainable heads, load extra models."""

    def expand(self, model: nn.Module, batch: Batch) -> list[Batch]:
        """Online objectives: turn a batch of prompts into rollout minibatches."""
        return [batch]

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        """(the loss to minimise, metrics to log); under `model.eval()` it is a validation batch."""
        raise NotImplementedError

    def evaluate(self, model: nn.Module, batches: list[Batch]) -> dict[str, float]:
        """Extra validation metrics after the validation batches went through `loss` (logged as eval_<name>)."""
        return {}

    def save(self, model: nn.Module, out_dir: Path) -> None:
        """Files beside the adapter/model (a reward head, the teacher-call count)."""


class RunningMeans:
    """Sums of per-batch statistics over one evaluation, and their means weighted by a count."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.count = 0.0

    def add(self, stats: dict[str, float], count: float) -> None:
        for k, v in stats.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
        self.count += count

    def pop(self) -> dict[str, float]:
        """The means since the last pop, and start again."""
        out = {k: v / self.count for k, v in self.sums.items()} if self.count else {}
        self.sums, self.count = {}, 0.0
        return out
