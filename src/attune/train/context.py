"""What an objective sees of the running stage (see `objectives/__init__.py` for the seam)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from attune.train.logprobs import unwrap


@dataclass
class ObjectiveContext:
    """Shared state for one stage's objective.

    `state` is the objective's own scratch space (a loaded reward model, cached reference
    log-probs, a value head). `reference(model)` runs the frozen reference policy: for PEFT
    models the adapter is disabled (no second copy in memory); otherwise a frozen deep copy
    made on first use.
    """

    tokenizer: Any
    options: Any
    stage: Any = None
    accelerator: Any = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    state: dict[str, Any] = field(default_factory=dict)
    step: int = 0

    def prepare_reference(self, model: nn.Module) -> None:
        """Freeze a copy of the starting policy when the adapter cannot simply be disabled.

        The loop calls this before step 1 for objectives that set `USES_REFERENCE = True`.
        """
        if not hasattr(_inner(model), "disable_adapter") and "reference_model" not in self.state:
            ref = copy.deepcopy(unwrap(model)).eval()
            for p in ref.parameters():
                p.requires_grad_(False)
            self.state["reference_model"] = ref

    @contextmanager
    def reference(self, model: nn.Module) -> Iterator[nn.Module]:
        """`with ctx.reference(model) as ref:` run `ref` for reference log-probs (no grad)."""
        inner = _inner(model)
        if hasattr(inner, "disable_adapter"):
            with inner.disable_adapter(), torch.no_grad():
                yield model
            return
        self.prepare_reference(model)
        with torch.no_grad():
            yield self.state["reference_model"]


def _inner(model: nn.Module) -> nn.Module:
    while hasattr(model, "module") and isinstance(model.module, nn.Module):
        model = model.module
    return model
