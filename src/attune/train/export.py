"""Merge an adapter into its base and prove the merged model is the same function.

`attune export RUN --merge` writes a plain transformers model directory (safetensors +
tokenizer + chat template) that any server can load. Before anything is written, the merged
model's logits on a few prompts are compared with base+adapter; beyond the tolerance nothing is
written and the command fails.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from attune.errors import AttuneError

PROBE_PROMPTS = (
    "The capital of France is",
    "Triage this support ticket: my invoice was charged twice.",
    "def fibonacci(n):",
)
TOLERANCE = 1e-4  # fp32 max |logit difference|; merging reorders float additions only


def _probe_logits(model, tokenizer) -> torch.Tensor:
    enc = tokenizer(list(PROBE_PROMPTS), return_tensors="pt", padding=True).to(model.device)
    with torch.no_grad():
        return model(**enc).logits.float() * enc["attention_mask"][..., None]


def merge_adapter(base_model: str, adapter_dir: str, out_dir: Path, *, verify: bool = True) -> float | None:
    """Write base+adapter merged into `out_dir`; returns the max logit difference checked."""
    from attune.adapters import shape_of_dir
    from attune.models import load_model
    from attune.models.adapters_io import load_adapter

    adapter_shape = shape_of_dir(Path(adapter_dir))
    loaded = load_model(base_model, device="cpu")
    model = load_adapter(loaded.model, adapter_dir)
    diff = None
    before = _probe_logits(model, loaded.tokenizer) if verify else None
    merged = adapter_shape.merged(model)
    if verify:
        after = _probe_logits(merged, loaded.tokenizer)
        diff = float((before - after).abs().max())
        if diff > TOLERANCE:
            raise AttuneError(
                f"merged model differs from base+adapter (max |logit diff| {diff:.2e} > {TOLERANCE:.0e}); nothing written"
            )
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".tmp-{out_dir.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(str(tmp), safe_serialization=True)
    loaded.tokenizer.save_pretrained(str(tmp))
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)
    return diff
