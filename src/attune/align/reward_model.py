"""A sequence-scoring head on a causal LM: the reward model of RLHF, and PPO's value head.

The head is one `nn.Linear(hidden, 1)` read off the decoder's final hidden states, so the
reward model is the base model (plus the stage's adapter) and a few hundred extra weights; it
is the same architecture as transformers' `*ForSequenceClassification` with one label, which
TRL's RewardTrainer trains (tests check our loss and gradients against it). The head is
registered as a submodule of the model so the optimizer, checkpoints and DDP see it.

A trained reward stage leaves `reward_head.safetensors` and `reward_model.json` next to its
adapter (or full weights); `load_reward_model(path)` rebuilds the scorer from a stage dir.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from attune.errors import AttuneError
from attune.train.logprobs import final_hidden, unwrap

HEAD_FILE = "reward_head.safetensors"
INFO_FILE = "reward_model.json"


def attach_head(model: nn.Module, name: str) -> nn.Linear:
    """Add a trainable (hidden -> 1) head called `name` to the transformers model under `model`.

    Initialised like transformers' classification heads (normal, std = initializer_range), so a
    fresh reward model scores everything near 0.
    """
    inner = unwrap(model)
    if hasattr(inner, name):
        return getattr(inner, name)
    width = inner.get_output_embeddings().weight.shape[1]
    head = nn.Linear(width, 1, bias=False)
    nn.init.normal_(head.weight, std=getattr(inner.config, "initializer_range", 0.02))
    weight = inner.get_output_embeddings().weight
    head.to(device=weight.device, dtype=torch.float32)
    inner.add_module(name, head)
    return head


def score_positions(head: nn.Module, hidden: torch.Tensor, flat_index: torch.Tensor) -> torch.Tensor:
    """Head outputs (N,) at flat indices into the (B, T) positions of `hidden` (B, T, C)."""
    h = hidden.reshape(-1, hidden.shape[-1]).index_select(0, flat_index)
    return head(h.float()).squeeze(-1)


def save_head(head: nn.Module, file: Path) -> None:
    from safetensors.torch import save_file

    save_file({"weight": head.weight.detach().cpu().contiguous()}, str(file))


@dataclass
class RewardModel:
    """A loaded reward model: score (prompt, reply) pairs, higher is better."""

    model: nn.Module
    head: nn.Module
    tokenizer: Any
    max_length: int = 1024

    def score_ids(self, sequences: list[list[int]], batch_size: int = 8) -> list[float]:
        """Scores of token sequences (prompt + reply, ending with the end-of-turn token)."""
        out: list[float] = []
        device = next(self.model.parameters()).device
        for s in range(0, len(sequences), batch_size):
            chunk = [seq[-self.max_length :] for seq in sequences[s : s + batch_size]]
            width = max(len(q) for q in chunk)
            ids = torch.full((len(chunk), width), self.tokenizer.pad_token_id or 0, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for i, q in enumerate(chunk):
                ids[i, : len(q)] = torch.tensor(q)
                mask[i, : len(q)] = 1
            last = torch.tensor([i * width + len(q) - 1 for i, q in enumerate(chunk)])
            with torch.no_grad():
                hidden = final_hidden(self.model, ids.to(device), mask.to(device))
                out += score_positions(self.head, hidden, last.to(device)).tolist()
        return out

    def score(self, prompts: list[list[dict[str, str]]], replies: list[str], batch_size: int = 8) -> list[float]:
        """Scores of replies to chat prompts, encoded exactly as the reward stage encoded its pairs."""
        from attune.data import PreferenceRecord, encode_preference

        sequences = []
        for prompt, reply in zip(prompts, replies):
            # a pair with the reply on both sides: the same prompt/reply encoding training used
            enc = encode_preference(self.tokenizer, PreferenceRecord(prompt, reply, reply, ""), max_length=self.max_length)
            sequences.append(enc.prompt_ids + enc.chosen_ids)
        return self.score_ids(sequences, batch_size)


def load_reward_model(path: str | Path, device: str = "cpu") -> RewardModel:
    """Rebuild the scorer from a reward stage's directory (or a folder holding its files)."""
    from safetensors.torch import load_file

    from attune.models import load_model

    root = Path(path).expanduser()
    info_file = root / INFO_FILE
    if not info_file.is_file():
        raise AttuneError(f"{root}: not a reward model (no {INFO_FILE}; train one with `objective: reward`)")
    info = json.loads(info_file.read_text())
    adapter = root / "adapter"
    weights = root / "model"
    if (weights / "config.json").is_file():
        loaded = load_model(str(weights), device=device)
        model = loaded.model
    else:
        from attune.models.adapters_io import load_adapter

        summary = root / "summary.json"
        base = info.get("base_model") or (json.loads(summary.read_text()).get("base_model") if summary.is_file() else None)
        if not base:
            raise AttuneError(f"{root}: reward model without its base model (no summary.json with base_model)")
        loaded = load_model(base, device=device)
        model = load_adapter(loaded.model, adapter)
    model = model.float().eval()
    head = nn.Linear(unwrap(model).get_output_embeddings().weight.shape[1], 1, bias=False)
    head.load_state_dict(load_file(str(root / HEAD_FILE)))
    head.to(device).eval()
    return RewardModel(model, head, loaded.tokenizer, max_length=int(info.get("max_length", 1024)))
