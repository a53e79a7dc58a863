"""Token log-probabilities and the LM loss, computed only where a label exists, in chunks.

The LM head is the widest layer of a small model (SmolLM2-135M: 576 x 49152). A plain forward
computes `tokens x vocab` logits for every position and keeps them for backward; on SFT data
most positions are prompt tokens that carry no loss. Here the decoder runs once, its final hidden
states are gathered at labelled positions only, and the head + cross-entropy run over those in
chunks, so the full logits matrix never exists.

The model is still called through its top-level `forward` (with `logits_to_keep` selecting no
position) so DDP/FSDP wrappers and PEFT hooks see a normal forward; the final hidden states are
captured with a forward hook on the decoder body.

The head is the model's: its bias, a logit multiplier (Cohere, Granite) and final soft-capping
(Gemma 2) are applied as the model applies them (`output_head`). A family outside attune's tested
matrix (`models/architecture.py`) takes the model's own forward and its full logits instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from attune.models.architecture import chunked_head_ok, features, unwrap

IGNORE = -100
__all__ = ["IGNORE", "decoder_body", "final_hidden", "lm_loss_sum", "logprobs_from_hidden", "output_head",
           "sequence_logprobs", "token_logprobs", "unwrap"]


def decoder_body(model: nn.Module) -> nn.Module:
    """The module whose output is the final normed hidden states (`get_decoder`, else `.model`)."""
    inner = unwrap(model)
    body = inner.get_decoder()
    if body is inner and isinstance(getattr(inner, "model", None), nn.Module):  # e.g. Llama4ForCausalLM
        body = inner.model
    return body


@contextmanager
def _captured_hidden(model: nn.Module) -> Iterator[list[torch.Tensor]]:
    box: list[torch.Tensor] = []
    body = decoder_body(model)

    def hook(_module: nn.Module, _args: object, output: object) -> None:
        box.append(output[0] if isinstance(output, tuple) else output.last_hidden_state)

    handle = body.register_forward_hook(hook)
    try:
        yield box
    finally:
        handle.remove()


def final_hidden(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Final (normed) hidden states (B, T, C), without computing any logits."""
    no_logits = torch.empty(0, dtype=torch.long, device=input_ids.device)
    with _captured_hidden(model) as box:
        model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            logits_to_keep=no_logits,
            use_cache=False,
        )
    hidden = box[-1]
    # prompt tuning prepends virtual tokens inside PEFT's forward: keep the real positions only
    return hidden[:, -input_ids.shape[1] :]


class OutputHead(nn.Module):
    """The LM head followed by what the model does to its logits: `softcap(multiplier * head(h))`."""

    def __init__(self, head: nn.Module, multiplier: float | None, softcap: float | None) -> None:
        super().__init__()
        self.head, self.multiplier, self.softcap = head, multiplier, softcap

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        logits = self.head(h)
        if self.multiplier is not None:
            logits = logits * self.multiplier
        if self.softcap is not None:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits


def output_head(model: nn.Module) -> OutputHead:
    """The model's head as a module mapping final hidden states to the logits its forward returns."""
    f = features(model)
    return OutputHead(unwrap(model).get_output_embeddings(), f.logit_multiplier, f.final_softcap)


def _own_logits(model: nn.Module, input_ids, attention_mask, position_ids) -> torch.Tensor:
    """The model's own forward logits (B, T, V) in fp32: the path for families outside the matrix."""
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
    return out.logits[:, -input_ids.shape[1] :].float()


def _gather_targets(hidden: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hidden states that predict a label (position t predicts labels[t+1]), their targets, and flat indices."""
    targets = labels[:, 1:]
    mask = targets != IGNORE  # (B, T-1)
    flat = mask.reshape(-1).nonzero().squeeze(-1)
    h = hidden[:, :-1].reshape(-1, hidden.shape[-1]).index_select(0, flat)  # (N, C)
    return h, targets.reshape(-1).index_select(0, flat), flat


class _FusedLinearCrossEntropy(torch.autograd.Function):
    """sum CE(m * (h @ W^T + b), y) over chunks; gradients are computed in forward, chunk by chunk.

    Why our own: the autograd graph of a chunked head keeps every chunk's (n x vocab) logits for
    backward, and checkpointing recomputes them. Computing d/dh and d/dW during forward keeps
    peak memory at one chunk and costs no recompute (the same idea as Liger's fused linear CE).
    """

    @staticmethod
    def forward(ctx, h, weight, bias, targets, chunk: int, multiplier: float):  # type: ignore[override]
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        grad_h = torch.empty_like(h) if h.requires_grad else None
        grad_w = torch.zeros_like(weight, dtype=torch.float32) if weight.requires_grad else None
        grad_b = torch.zeros_like(bias, dtype=torch.float32) if bias is not None and bias.requires_grad else None
        # One (chunk, V) fp32 buffer for the whole loop, turned into softmax in place: CE = logsumexp - z_y
        # and d CE / d logits = softmax - onehot. A log_softmax per chunk would allocate (and, on CPU,
        # page-fault) a second (chunk, V) tensor every chunk.
        buffer = torch.empty(min(chunk, h.shape[0]), weight.shape[0], dtype=torch.float32, device=h.device)
        for start in range(0, h.shape[0], chunk):
            hc = h[start : start + chunk]
            yc = targets[start : start + chunk]
            rows = torch.arange(yc.shape[0], device=yc.device)
            z = buffer[: hc.shape[0]]
            if hc.dtype == torch.float32 and weight.dtype == torch.float32:
                torch.mm(hc, weight.t(), out=z)
            else:
                z.copy_(hc @ weight.t())
            if bias is not None:
                z.add_(bias)
            if multiplier != 1.0:
                z.mul_(multiplier)
            top = z.amax(dim=-1, keepdim=True)
            target_logits = z[rows, yc]
            z.sub_(top).exp_()
            norm = z.sum(dim=-1, keepdim=True)
            total += (top.squeeze(1) + norm.squeeze(1).log() - target_logits).sum()
            if grad_h is None and grad_w is None and grad_b is None:
                continue
            z.div_(norm)
            z[rows, yc] -= 1.0
            if multiplier != 1.0:
                z.mul_(multiplier)  # d logits / d (h W^T + b)
            if grad_b is not None:
                grad_b += z.sum(0)
            grad_logits = z.to(h.dtype)
            if grad_h is not None:
                torch.mm(grad_logits, weight, out=grad_h[start : start + chunk])
            if grad_w is not None:
                grad_w += (grad_logits.t() @ hc).float()
        none = torch.empty(0)
        ctx.save_for_backward(*(g if g is not None else none for g in (grad_h, grad_w, grad_b)))
        ctx.has = (grad_h is not None, grad_w is not None, grad_b is not None)
        ctx.weight_dtype = weight.dtype
        return total

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        grad_h, grad_w, grad_b = ctx.saved_tensors
        gh = grad_h * grad_out.to(grad_h.dtype) if ctx.has[0] else None
        gw = (grad_w * grad_out).to(ctx.weight_dtype) if ctx.has[1] else None
        gb = (grad_b * grad_out).to(ctx.weight_dtype) if ctx.has[2] else None
        return gh, gw, gb, None, None, None


def lm_loss_sum(
    model: nn.Module,
    input_ids: torch.Tensor,
    labels: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
    chunk: int = 1024,
) -> tuple[torch.Tensor, int]:
    """(sum of token cross-entropies over labelled positions, number of labelled positions)."""
    if not chunked_head_ok(model):
        logits, targets, _ = _gather_targets(_own_logits(model, input_ids, attention_mask, position_ids), labels)
        return F.cross_entropy(logits, targets, reduction="sum"), int(targets.shape[0])
    hidden = final_hidden(model, input_ids, attention_mask, position_ids)
    h, targets, _ = _gather_targets(hidden, labels)
    n = int(targets.shape[0])
    if n == 0:
        return hidden.sum() * 0.0, 0
    head = output_head(model)
    if type(head.head) is nn.Linear and head.softcap is None and not hasattr(head.head.weight, "ds_id"):  # ZeRO-3: not gathered here
        linear = head.head
        multiplier = 1.0 if head.multiplier is None else head.multiplier
        return _FusedLinearCrossEntropy.apply(h, linear.weight, linear.bias, targets, chunk, multiplier), n
    # Wrapped heads (e.g. PEFT modules_to_save) and soft-capped logits: chunk with recomputation instead.
    total = h.new_zeros((), dtype=torch.float32)
    for start in range(0, n, chunk):
        total = total + _recomputed(_chunk_ce, head, h[start : start + chunk], targets[start : start + chunk])
    return total, n


def _recomputed(fn, head: nn.Module, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """`fn(head, h, y)` with its logits recomputed in backward; a ZeRO-3 head runs plainly, because its
    partitioned weight is not gathered again for the recomputation."""
    if hasattr(getattr(head, "head", head).weight, "ds_id"):
        return fn(head, h, y)
    return torch.utils.checkpoint.checkpoint(fn, head, h, y, use_reentrant=False)


def _chunk_ce(head: nn.Module, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(head(h).float(), y, reduction="sum")


def _chunk_logp(head: nn.Module, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    logits = head(h).float()
    return logits.gather(1, y[:, None]).squeeze(1) - torch.logsumexp(logits, dim=-1)


def token_logprobs(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    labels: torch.Tensor,
    position_ids: torch.Tensor | None = None,
    chunk: int = 1024,
) -> torch.Tensor:
    """log p(labels[t] | tokens < t) as a (B, T) tensor aligned with `labels`; 0 where label == -100.

    Differentiable; each chunk's logits are recomputed in backward rather than stored.
    """
    if not chunked_head_ok(model):
        logits, targets, flat = _gather_targets(_own_logits(model, input_ids, attention_mask, position_ids), labels)
        return _scatter(logits.gather(1, targets[:, None]).squeeze(1) - torch.logsumexp(logits, dim=-1), flat, labels)
    return logprobs_from_hidden(model, final_hidden(model, input_ids, attention_mask, position_ids), labels, chunk)


def logprobs_from_hidden(model: nn.Module, hidden: torch.Tensor, labels: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """`token_logprobs` from final hidden states already computed (PPO reads its value head off the same ones)."""
    h, targets, flat = _gather_targets(hidden, labels)
    head = output_head(model)
    pieces = [
        _recomputed(_chunk_logp, head, h[s : s + chunk], targets[s : s + chunk])
        for s in range(0, targets.shape[0], chunk)
    ]
    return _scatter(torch.cat(pieces) if pieces else None, flat, labels)


def _scatter(values: torch.Tensor | None, flat: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-label values at flat (B*(T-1)) indices -> (B, T) aligned with `labels`, 0 elsewhere."""
    B, T = labels.shape
    out = torch.zeros(B * (T - 1), dtype=torch.float32, device=labels.device)
    if values is not None:
        out = out.index_put((flat,), values)
    return F.pad(out.view(B, T - 1), (1, 0))


def sequence_logprobs(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    labels: torch.Tensor,
    position_ids: torch.Tensor | None = None,
    chunk: int = 1024,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of label log-probs per row (B,), number of labelled tokens per row (B,))."""
    logp = token_logprobs(model, input_ids, attention_mask, labels, position_ids, chunk)
    return logp.sum(-1), (labels != IGNORE).sum(-1)
