"""`mix:` model names: a weighted combination of served LoRA adapters, built with PEFT.

    mix:support=0.7,legal=0.3          linear: exactly 0.7 * delta(support) + 0.3 * delta(legal) (the default)
    mix:ties:support=0.5,legal=0.5     TIES merging (Yadav et al. 2023): trim, elect sign, merge
    mix:svd:support=0.5,legal=0.5      the weighted sum of the full deltas, re-factored by SVD

`linear` is PEFT's `cat` combination: the adapters' A matrices (scaled by weight and LoRA
scaling) and B matrices are stacked into one adapter of rank sum(r), whose delta is exactly the
weighted sum of the deltas, so `mix:a=0.5,b=0.5` with b == a is a, and ranks may differ. (PEFT's
own `linear` scales A and B by sqrt(w) each and sums them, which is not a linear combination of
deltas.) `ties` needs adapters of the same rank; `svd` works on the full deltas. The combination
itself is PEFT's `add_weighted_adapter`; this module only parses the name and picks its options.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

from attune.errors import AttuneError

METHODS = ("linear", "ties", "svd")
PEFT_COMBINATION = {"linear": "cat", "ties": "ties", "svd": "svd"}
TIES_DENSITY = 0.2  # keep the top 20% of each delta by magnitude, the TIES paper's default (k = 20)


@dataclass(frozen=True)
class MixSpec:
    """A parsed `mix:` name: the method and (adapter, weight) pairs in the order written."""

    method: str
    parts: tuple[tuple[str, float], ...]

    @property
    def key(self) -> str:
        """Canonical text (sorted, normalized numbers): `mix:a=0.5,b=0.5` and `mix:b=.5,a=.5` are one adapter."""
        body = ",".join(f"{n}={w:g}" for n, w in sorted(self.parts))
        return f"{self.method}:{body}"

    @property
    def peft_name(self) -> str:
        """A PEFT adapter name for the combination (PEFT names may not contain '.')."""
        return "mix-" + hashlib.sha1(self.key.encode()).hexdigest()[:12]


def parse_mix(model: str) -> MixSpec:
    """Parse `mix:[METHOD:]name=weight,...`; errors say what was expected."""
    body = model.removeprefix("mix:")
    method = "linear"
    head, sep, rest = body.partition(":")
    if sep and "=" not in head:
        method, body = head, rest
    if method not in METHODS:
        raise AttuneError(f"model {model!r}: unknown mix method {method!r}; use one of {', '.join(METHODS)}")
    parts: list[tuple[str, float]] = []
    for item in filter(None, (p.strip() for p in body.split(","))):
        name, eq, weight = item.partition("=")
        try:
            value = float(weight)
        except ValueError:
            value = math.nan
        if not eq or not name.strip() or not math.isfinite(value):
            raise AttuneError(f"model {model!r}: expected NAME=WEIGHT, got {item!r} (e.g. mix:support=0.7,legal=0.3)")
        parts.append((name.strip(), value))
    if not parts:
        raise AttuneError(f"model {model!r}: no adapters to mix (e.g. mix:support=0.7,legal=0.3)")
    if len({n for n, _ in parts}) != len(parts):
        raise AttuneError(f"model {model!r}: an adapter is named twice")
    return MixSpec(method, tuple(parts))


def build_mix(peft_model, spec: MixSpec, peft_names: list[str]) -> None:
    """Add the combination to `peft_model` as adapter `spec.peft_name` (components already loaded)."""
    weights = [w for _, w in spec.parts]
    kwargs = {"density": TIES_DENSITY} if spec.method == "ties" else {}
    try:
        peft_model.add_weighted_adapter(
            adapters=peft_names, weights=weights, adapter_name=spec.peft_name, combination_type=PEFT_COMBINATION[spec.method],
            **kwargs
        )
    except ValueError as exc:  # PEFT's message says what is incompatible (ranks, target modules)
        if spec.peft_name in peft_model.peft_config:
            peft_model.delete_adapter(spec.peft_name)
        raise AttuneError(f"cannot build mix:{spec.key}: {exc}") from exc
    peft_model.eval()
