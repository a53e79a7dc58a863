"""What an objective sees of the running stage: `StageContext`, and the frozen reference policy.

Everything here is typed and named; an objective keeps its own state (a reference cache, a KL
controller, running evaluation sums) as attributes of its instance, never in a shared bag.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from attune.train.config import TrainConfig
from attune.train.logprobs import unwrap

if TYPE_CHECKING:
    from accelerate import Accelerator


class ReferencePolicy:
    """The frozen starting policy that DPO, PPO and GRPO compare against.

    For a PEFT model it is the same model with the adapter disabled (no second copy in memory);
    otherwise a frozen deep copy, made by `freeze` before the first optimizer step (the loop calls
    it for objectives whose `needs_reference()` is true) or on first use.
    """

    def __init__(self) -> None:
        self.copy: nn.Module | None = None

    def freeze(self, model: nn.Module) -> None:
        if not hasattr(unwrap(model, keep_peft=True), "disable_adapter") and self.copy is None:
            ref = copy.deepcopy(unwrap(model)).eval()
            for p in ref.parameters():
                p.requires_grad_(False)
            self.copy = ref

    @contextmanager
    def __call__(self, model: nn.Module) -> Iterator[nn.Module]:
        """`with context.reference(model) as ref:` run `ref` for reference log-probs (no grad)."""
        inner = unwrap(model, keep_peft=True)
        if hasattr(inner, "disable_adapter"):
            with inner.disable_adapter(), torch.no_grad():
                yield model
            return
        self.freeze(model)
        assert self.copy is not None
        with torch.no_grad():
            yield self.copy


@dataclass
class StageContext:
    """One stage as its objective sees it: settings, tokenizer, devices, and the resolved extra models.

    `teacher` and `reward_model` are resolved by the pipeline before training (an earlier stage's
    name becomes its weights' directory), so an objective never looks up runs or recipes.
    """

    tokenizer: Any
    options: TrainConfig
    accelerator: Accelerator | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    stage: str = "stage"
    base_dir: Path | None = None  # the recipe's folder: relative paths in options resolve against it
    cache_dir: Path | None = None  # what outlives one run (the distillation teacher cache): <output_dir>/<recipe>/
    teacher: str | None = None
    reward_model: Path | None = None
    step: int = 0
    reference: ReferencePolicy = field(default_factory=ReferencePolicy)

    def path(self, p: str | Path) -> Path:
        """A path written in the recipe, relative to the recipe's folder."""
        path = Path(p).expanduser()
        return path if path.is_absolute() or self.base_dir is None else self.base_dir / path
