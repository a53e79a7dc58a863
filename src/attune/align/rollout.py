"""Online RL plumbing shared by PPO and GRPO: sample replies to prompts, score them, read log-probs back.

Layout of a rollout (B sequences): prompts left-padded to width P, then the sampled replies,
each cut after its first end-of-turn token, so every reply starts at column P. Shapes:
  input_ids, attention_mask, position_ids   (B, P + R)
  response, response_mask                   (B, R)   the sampled tokens; 1 up to and including end-of-turn
Replies are sampled at temperature 1 from the full distribution, so the log-probs of the
sampled tokens are those of the policy itself (no temperature or top-p correction needed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from attune.errors import AttuneError
from attune.train.logprobs import IGNORE, final_hidden, logprobs_from_hidden, unwrap


@dataclass
class Rollout:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    response: torch.Tensor
    response_mask: torch.Tensor
    prompt_width: int
    prompts: list[str] = field(default_factory=list)
    messages: list[list[dict[str, str]]] = field(default_factory=list)
    completions: list[str] = field(default_factory=list)
    answers: list[str | None] = field(default_factory=list)

    @property
    def labels(self) -> torch.Tensor:
        """Labels for `token_logprobs`: the reply tokens, -100 on prompt and padding."""
        labels = torch.full_like(self.input_ids, IGNORE)
        labels[:, self.prompt_width :] = self.response.masked_fill(self.response_mask == 0, IGNORE)
        return labels

    def select(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """The model inputs of sequences `index`, trimmed to their longest reply."""
        width = self.prompt_width + max(1, int(self.response_mask[index].sum(1).max()))
        return {
            "input_ids": self.input_ids[index, :width],
            "attention_mask": self.attention_mask[index, :width],
            "position_ids": self.position_ids[index, :width],
            "labels": self.labels[index, :width],
        }


def shuffled_minibatches(
    rollout: Rollout, mask: torch.Tensor, size: int, passes: int, seed: int
) -> Iterator[tuple[torch.Tensor, int, dict[str, Any]]]:
    """`passes` shuffled passes over a rollout in minibatches of `size` sequences.

    Yields (sequence index, reply width, batch with the fields every online objective needs);
    the objective adds its own per-token tensors sliced by index and width. Seeded by the caller
    (seed + step) so a resumed run replays the same order.
    """
    generator = torch.Generator().manual_seed(seed)
    n = mask.shape[0]
    for _ in range(passes):
        order = torch.randperm(n, generator=generator).to(mask.device)
        for s in range(0, n, size):
            idx = order[s : s + size]
            mb = rollout.select(idx)
            width = mb["input_ids"].shape[1] - rollout.prompt_width
            yield idx, width, {
                **mb,
                "prompt_width": rollout.prompt_width,
                "mask": mask[idx, :width],
                "num_tokens": int(mb["attention_mask"].sum()),
                "num_loss_tokens": int(mask[idx].sum()),
            }

def stop_ids(tokenizer: Any, model: nn.Module) -> list[int]:
    """End-of-turn ids: the tokenizer's EOS and whatever the model's generation config stops on."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    configured = getattr(getattr(unwrap(model, keep_peft=True), "generation_config", None), "eos_token_id", None)
    ids |= set(configured if isinstance(configured, list) else [configured] if configured is not None else [])
    if not ids:
        raise AttuneError("the tokenizer has no end-of-sequence token: replies could never end")
    return sorted(ids)


def sample(model: nn.Module, tokenizer: Any, prompts: list[dict], max_new_tokens: int, seed: int) -> Rollout:
    """Sample one reply per prompt example ({"prompt_ids", "messages", "answer"}), in one batch."""
    device = next(model.parameters()).device
    P = max(len(ex["prompt_ids"]) for ex in prompts)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_ids(tokenizer, model)[0]
    ids = torch.full((len(prompts), P), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, ex in enumerate(prompts):
        n = len(ex["prompt_ids"])
        ids[i, P - n :] = torch.tensor(ex["prompt_ids"])
        mask[i, P - n :] = 1
    stops = stop_ids(tokenizer, model)
    inner = unwrap(model, keep_peft=True)
    was_training = inner.training
    inner.eval()
    torch.manual_seed(seed)
    with torch.no_grad():
        out = inner.generate(
            input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
            max_new_tokens=max_new_tokens, eos_token_id=stops, pad_token_id=pad,
        )
    inner.train(was_training)
    response = out[:, P:].cpu()
    if response.shape[1] == 0:
        response = torch.full((len(prompts), 1), pad, dtype=torch.long)
    is_stop = torch.isin(response, torch.tensor(stops))
    # 1 up to and including the first stop token; replies that never stop keep every token
    before_stop = (is_stop.long().cumsum(1) - is_stop.long()) == 0
    response_mask = before_stop.long()
    response = response.masked_fill(response_mask == 0, pad)
    full_mask = torch.cat([mask, response_mask], dim=1)
    positions = (full_mask.cumsum(1) - 1).clamp(min=0)
    texts = tokenizer.batch_decode(
        [r[m.bool()].tolist() for r, m in zip(response, response_mask)], skip_special_tokens=True
    )
    return Rollout(
        input_ids=torch.cat([ids, response], dim=1).to(device),
        attention_mask=full_mask.to(device),
        position_ids=positions.to(device),
        response=response.to(device),
        response_mask=response_mask.to(device),
        prompt_width=P,
        prompts=[ex["messages"][-1]["content"] for ex in prompts],
        messages=[ex["messages"] for ex in prompts],
        completions=[t.strip() for t in texts],
        answers=[ex.get("answer") for ex in prompts],
    )


def response_logprobs(
    model: nn.Module, inputs: dict[str, torch.Tensor], prompt_width: int, chunk: int, value_head: nn.Module | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs (B, R) of the reply tokens and, with a value head, the values (B, R) of the states before them.

    One forward serves both: the value of the state before reply token t is read off the hidden
    state at the position that predicts t.
    """
    hidden = final_hidden(model, inputs["input_ids"], inputs["attention_mask"], inputs["position_ids"])
    logp = logprobs_from_hidden(model, hidden, inputs["labels"], chunk)[:, prompt_width:]
    if value_head is None:
        return logp, None
    values = value_head(hidden[:, prompt_width - 1 : -1].float()).squeeze(-1)
    return logp, values


def prepare_prompts(records: list, tokenizer: Any, max_length: int, max_new_tokens: int, copies: int) -> tuple[list[dict], int]:
    """(examples, prompts dropped): tokenize prompt (or preference) records for rollouts; prompts leaving
    no room to reply are dropped."""
    from attune.data import encode_prompt

    examples, dropped = [], 0
    for record in records:
        ids = encode_prompt(tokenizer, record.prompt)
        if len(ids) + max_new_tokens > max_length:
            dropped += 1
            continue
        examples.append({
            "prompt_ids": ids,
            "messages": record.prompt,
            "answer": getattr(record, "answer", None),
            "num_tokens": copies * (len(ids) + max_new_tokens),
        })
    if dropped:
        from rich.console import Console

        Console(stderr=True).print(f"[yellow]{dropped} prompt(s) leave no room for {max_new_tokens} new tokens "
                                   f"within max_length {max_length}: dropped[/yellow]")
    return examples, dropped


def held_out_reward(
    model: nn.Module, batch: dict, tokenizer: Any, max_new_tokens: int, seed: int, score: Callable[[Rollout], list[float]]
) -> tuple[torch.Tensor, list[float]]:
    """Validation for online RL: sample replies to held-out prompts; (minus the mean reward, every score).

    The loop reports the loss as `eval_loss`; the objective averages the scores into `eval_reward`.
    """
    rollout = sample(model, tokenizer, batch["prompts"], max_new_tokens, seed=seed)
    scores = score(rollout)
    return torch.tensor(-sum(scores) / max(len(scores), 1)), scores
