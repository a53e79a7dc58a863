"""What a method costs on the user's hardware: training memory, tokens/s, time, per-query prompt cost.

Memory per device (bytes), following attune's own precision policy (`train/pipeline.py`: fp32 on
CPU; on GPUs the model loads in bf16, PEFT keeps adapter weights in fp32):

  weights      frozen or trained parameters x bytes per value; QLoRA: the decoder's linear
               weights in 4-bit NF4 plus 0.127 bit/param of double-quantized scales (Dettmers et
               al. 2023, §3), everything else upcast to fp32 by `prepare_model_for_kbit_training`
  gradients    one value per trainable parameter; with one micro-batch per step they are written
               while backward frees the activations, so the peak holds the larger of the two
  optimizer    AdamW's two moments per trainable parameter (Rajbhandari et al. 2020, ZeRO §3:
               "K" bytes of optimizer state per parameter; here 2 x the trainable dtype)
  activations  tensors autograd keeps for the backward pass, counted tensor by tensor for a
               Llama-style block as Korthikanti et al. 2022 (§4) count them for GPT: per token
               and layer 11h + 4i values for full fine-tuning (9h + 4i when the norm weights are
               frozen); with gradient checkpointing h per layer plus one block recomputed
  loss head    attune's chunked LM head: two (chunk x vocab) fp32 buffers, the hidden-state
               gradient, and for full fine-tuning an fp32 gradient of the head
  runtime      the process before any weights (Python + torch, or the CUDA context)

Time: training FLOPs per token = 6N for full fine-tuning (Kaplan et al. 2020, §2.1) and 4N with
a frozen base (no weight-gradient matmuls, Hu et al. 2021 §4.2), plus the attention term
6·layers·seq·hidden; N counts matmul parameters (the LM head, not the embedding lookup).
Seconds = FLOPs / (peak x MFU x devices). `benchmarks/advise_memory.py` checks the memory model
against measured peak RSS for the builtin model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from attune.advise.hardware import Hardware
from attune.advise.shapes import ModelShape

GB = 1e9
NF4_BITS = 4.0 + 0.127  # 4-bit weights + double-quantized block scales (Dettmers et al. 2023)
NF4_BITS_SINGLE = 4.0 + 0.5  # one fp32 scale per 64 weights when double quantization is off
GC_SLOWDOWN = 4 / 3  # gradient checkpointing recomputes the forward: ~1 extra forward per step

ADAPTERS = ("full", "lora", "qlora", "ia3")


@dataclass(frozen=True)
class TrainSetup:
    """How a method trains: the adapter shape and the batch it sees."""

    adapter: str = "lora"  # full | lora | qlora | ia3
    seq_len: int = 512
    batch_size: int = 1  # sequences per micro-batch
    lora_r: int = 16
    gradient_checkpointing: bool = False
    frozen_copies: int = 0  # extra frozen models held at once (a reward model for PPO)
    grad_accum: int = 1  # micro-batches per optimizer step
    loss_chunk: int = 1024  # attune's `train.loss_chunk_tokens`


@dataclass
class MemoryEstimate:
    """Per-device training memory, by part, in GB."""

    parts: dict[str, float] = field(default_factory=dict)
    setup: TrainSetup = field(default_factory=TrainSetup)

    @property
    def total_gb(self) -> float:
        """The peak. With one micro-batch per step, gradients are set to None before the forward pass
        and written during backward as each layer's activations are freed, so the two never peak
        together: the peak holds the larger of (activations + loss head) and the gradients. With
        gradient accumulation the gradients of earlier micro-batches are alive through the forward."""
        p = self.parts
        total = sum(p.values())
        if self.setup.grad_accum == 1:
            total -= min(p.get("gradients", 0.0), p.get("activations", 0.0) + p.get("loss head", 0.0))
        return total

    def fits(self, hw: Hardware) -> bool:
        return self.total_gb <= hw.memory_gb

    def describe(self) -> str:
        shown = ", ".join(f"{k} {v:.2f}" for k, v in self.parts.items() if v >= 0.005)
        overlap = "; gradients and activations peak at different times" if self.setup.grad_accum == 1 else ""
        return f"{self.total_gb:.1f} GB ({shown}{overlap})"


def trainable_params(shape: ModelShape, setup: TrainSetup) -> int:
    """Parameters the optimizer updates."""
    if setup.adapter == "full":
        return shape.params
    if setup.adapter in ("lora", "qlora"):
        return shape.lora_params(setup.lora_r)
    if setup.adapter == "ia3":  # PEFT's Llama IA3: scales on k, v outputs and the down-projection input
        return shape.layers * (2 * shape.kv_dim + shape.intermediate)
    raise ValueError(f"unknown adapter {setup.adapter!r}; known: {ADAPTERS}")


def activation_values_per_token(shape: ModelShape, setup: TrainSetup) -> float:
    """Values autograd keeps per token, summed over layers.

    One Llama block keeps: norm input + normed value (full FT only, for the norm weight's gradient)
    + norm output, for both norms (6h / 4h); q, repeated k, repeated v and the attention output
    for SDPA's backward, the o-projection's input (5h); the gate and up outputs, SiLU(gate) and
    their product, the down-projection's input (4i). Three more h at the final norm.
    """
    h, i = shape.hidden, shape.intermediate
    norms = 6 * h if setup.adapter == "full" else 4 * h
    per_layer = norms + 5 * h + 4 * i
    if setup.adapter in ("lora", "qlora"):
        per_layer += len(shape.block_linears) * setup.lora_r  # each LoRA's A·x, kept for B's gradient
    if setup.gradient_checkpointing:
        return shape.layers * h + per_layer + 3 * h  # block inputs + one block recomputed at a time
    return shape.layers * per_layer + 3 * h


def estimate_memory(shape: ModelShape, hw: Hardware, setup: TrainSetup) -> MemoryEstimate:
    """Peak training memory on one device (data-parallel: every device holds a full replica)."""
    act_bytes = hw.dtype_bytes
    trainable = trainable_params(shape, setup)
    peft_bytes = 4  # PEFT keeps adapter weights in fp32 whatever the base dtype
    if setup.adapter == "full":
        weights = shape.params * hw.dtype_bytes
        state_bytes = hw.dtype_bytes
    elif setup.adapter == "qlora":
        quantized = shape.linear_params
        weights = quantized * NF4_BITS / 8 + (shape.params - quantized) * 4 + trainable * peft_bytes
        state_bytes = peft_bytes
    else:
        weights = shape.params * hw.dtype_bytes + trainable * peft_bytes
        state_bytes = peft_bytes
    tokens = setup.seq_len * setup.batch_size
    loss_tokens = min(tokens, setup.loss_chunk)
    loss_head = 2 * loss_tokens * shape.vocab * 4 + tokens * shape.hidden * act_bytes
    if setup.adapter == "full":
        loss_head += shape.vocab * shape.hidden * 4
    parts = {
        "weights": weights / GB,
        "frozen copies": setup.frozen_copies * shape.params * hw.dtype_bytes / GB,
        "gradients": trainable * state_bytes / GB,
        "optimizer": 2 * trainable * state_bytes / GB,
        "activations": activation_values_per_token(shape, setup) * tokens * act_bytes / GB,
        "loss head": loss_head / GB,
        "runtime": hw.runtime_gb,
    }
    return MemoryEstimate({k: v for k, v in parts.items() if v > 0}, setup)


def train_flops_per_token(shape: ModelShape, setup: TrainSetup) -> float:
    """Forward + backward FLOPs per trained token (see the module docstring)."""
    weights = (6 if setup.adapter == "full" else 4) * shape.compute_params
    attention = 6 * shape.layers * setup.seq_len * shape.hidden
    flops = weights + attention
    if setup.gradient_checkpointing:
        flops += 2 * shape.compute_params + 2 * shape.layers * setup.seq_len * shape.hidden
    return flops


@dataclass(frozen=True)
class TimeEstimate:
    tokens: float
    tokens_per_s: float
    seconds: float
    device_hours: float

    def describe(self) -> str:
        return (f"{self.tokens:,.0f} tokens at ~{self.tokens_per_s:,.0f} tok/s: {_duration(self.seconds)} "
                f"({self.device_hours:,.2f} device-hours)")


def estimate_time(shape: ModelShape, hw: Hardware, setup: TrainSetup, tokens: float) -> TimeEstimate:
    """Wall time for `tokens` trained tokens on all of the user's devices."""
    per_s = hw.effective_flops * hw.count / train_flops_per_token(shape, setup)
    seconds = tokens / per_s
    return TimeEstimate(tokens, per_s, seconds, seconds * hw.count / 3600)


def forward_flops(shape: ModelShape, tokens: float) -> float:
    """Inference FLOPs for `tokens` tokens (2N per token; no backward)."""
    return 2 * shape.compute_params * tokens


@dataclass(frozen=True)
class QueryCost:
    """One query at inference: tokens sent and an estimate of latency."""

    prompt_tokens: int
    added_tokens: int  # what the method adds to the bare prompt (examples, passages)
    output_tokens: int
    latency_s: float | None  # None for API-only models (no hardware to model)
    devices: int = 1  # devices needed to hold the weights

    def describe(self) -> str:
        lat = f", ~{self.latency_s * 1000:,.0f} ms" if self.latency_s is not None else ""
        more = f" (+{self.added_tokens} added)" if self.added_tokens else ""
        return f"{self.prompt_tokens} prompt tokens{more}{lat}"


def query_cost(shape: ModelShape | None, hw: Hardware | None, prompt: int, added: int, output: int) -> QueryCost:
    """Prefill is compute-bound (2N FLOPs per prompt token); each output token reads every weight once."""
    total = prompt + added
    if shape is None or hw is None:
        return QueryCost(total, added, output, None)
    weight_bytes = shape.params * hw.dtype_bytes
    devices = max(1, math.ceil((weight_bytes / GB + hw.runtime_gb) / hw.memory_gb)) if hw.memory_gb else 1  # tensor-parallel
    prefill = forward_flops(shape, total) / (hw.effective_flops * devices)
    decode = output * weight_bytes / (hw.bandwidth_gbs * GB * devices)
    return QueryCost(total, added, output, prefill + decode, devices)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
