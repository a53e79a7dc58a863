"""What an architecture pays for leaving attune's fast paths: one training step, fast vs fallback paths.

    python benchmarks/arch_paths.py [--family mistral] [--runs 3]

A small random model of the family (hidden 256, 4 layers, sliding window 64, the builtin
tokenizer's 49,152-token vocabulary) trains on the same ~2,000 tokens of SFT-shaped examples
(first third of each example unlabelled) three ways:
- fast: packed rows, attune's per-example attention, the fused chunked head + CE (a covered family);
- own attention: packed rows, the model's own attention over the block-diagonal mask, fused head
  (what a covered family with a feature the attention path does not implement gets, e.g. Gemma 2);
- safe: one example per padded row, the model's own attention and its own full logits (a family
  outside the matrix, `models/architecture.py`).
Each is timed as a median of `--runs` (forward + backward, after one warm-up step); the CPU is printed.
"""

from __future__ import annotations

import argparse
import statistics
import time
from contextlib import nullcontext


def build(family: str):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(
        family, hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=8,
        num_key_value_heads=4, head_dim=32, vocab_size=49152, sliding_window=64, max_position_embeddings=2048,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).float().train()


def examples(n_tokens: int = 2048) -> list[dict]:
    import torch

    g = torch.Generator().manual_seed(0)
    out, total = [], 0
    while total < n_tokens:
        n = int(torch.randint(32, 257, (1,), generator=g))
        ids = torch.randint(3, 49152, (n,), generator=g).tolist()
        out.append({"input_ids": ids, "labels": [-100] * (n // 3) + ids[n // 3 :]})
        total += n
    return out


def step_seconds(model, batch, attention, runs: int) -> float:
    from attune.train.logprobs import lm_loss_sum

    times = []
    for i in range(runs + 1):
        start = time.perf_counter()
        with attention(model):
            total, n = lm_loss_sum(model, batch["input_ids"], batch["labels"], position_ids=batch["position_ids"])
            (total / n).backward()
        model.zero_grad(set_to_none=True)
        if i:  # the first step warms up allocators and kernels
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="mistral", help="a covered family with a sliding window (default: mistral)")
    parser.add_argument("--runs", type=int, default=7, help="steps per path; the first is a warm-up (default: 7)")
    args = parser.parse_args()

    import attune.models.architecture as arch
    from attune.train.attention import packed_attention
    from attune.train.batching import pack_rows
    from attune.train.precision import cpu_model

    model = build(args.family)
    exs = examples()
    tokens = sum(len(e["input_ids"]) for e in exs)
    rows, row, width = [], [], 512
    for ex in exs:  # first-fit rows of up to 512 tokens
        if row and sum(len(e["input_ids"]) for e in row) + len(ex["input_ids"]) > width:
            rows.append(row)
            row = []
        row.append(ex)
    rows.append(row)
    packed = pack_rows(rows, pad_id=0)
    unpacked = pack_rows([[ex] for ex in exs], pad_id=0)

    fast = step_seconds(model, packed, packed_attention, args.runs)
    own_attention = step_seconds(model, packed, lambda m: nullcontext(), args.runs)
    arch.COVERED = arch.COVERED - {args.family}  # what a family outside the matrix gets
    safe = step_seconds(model, unpacked, lambda m: nullcontext(), args.runs)

    print(f"{args.family}: {tokens} tokens in {len(exs)} examples; CPU: {cpu_model()}; median of {args.runs} steps")
    for name, s in (("fast (packed, per-example attention, fused head)", fast),
                    ("own attention (packed, block-diagonal mask, fused head)", own_attention),
                    ("safe (unpacked, own attention, own logits)", safe)):
        print(f"  {name:56s} {s:7.3f} s/step  {tokens / s:8.1f} tok/s  {s / fast:5.2f}x the fast path's time")


if __name__ == "__main__":
    main()
