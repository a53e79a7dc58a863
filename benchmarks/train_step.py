"""Where one SFT training step spends its time: forward / backward / optimizer, and the top ops.

    python benchmarks/train_step.py                 # builtin SmolLM2-135M (run under the heavy lock)
    python benchmarks/train_step.py --layers 4      # a random model of the same shape with 4 blocks
    python benchmarks/train_step.py --profile       # torch.profiler table of one step

The batch is the first micro-batch attune trains on the records of `benchmarks/sft_throughput.py`
(`benchmarks/out/sft_records.jsonl`, written by that script; 8 records there are one packed
micro-batch), LoRA r=16 all-linear, fp32, packed rows with attune's per-example attention.
Steps alternate between PEFT's own LoRA forward and attune's fused LoRA layer
(`attune.train.lora_fused`) so that machine noise hits both alike; medians are printed.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time
from contextlib import nullcontext
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL = "builtin:smollm2-135m-instruct"


def build(layers: int):
    import torch
    from accelerate import Accelerator

    from attune.adapters import apply_adapter, parse_adapter
    from attune.data import load_records
    from attune.models import load_model, load_tokenizer
    from attune.train.batching import plan_epoch
    from attune.train.context import StageContext
    from attune.train.objectives import sft

    torch.manual_seed(0)
    if layers:
        from transformers import AutoModelForCausalLM

        config = _builtin_config()
        config.num_hidden_layers = layers
        base, tokenizer = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").float(), load_tokenizer(MODEL)
    else:
        loaded = load_model(MODEL, device="cpu")
        base, tokenizer = loaded.model, loaded.tokenizer
    model = apply_adapter(base, parse_adapter({"type": "lora", "r": 16, "alpha": 32, "targets": "all-linear"}))
    opts = sft.Options(epochs=1, lr=2e-4, batch_tokens=4096, max_length=1024, val_fraction=0.0)
    objective = sft.SFT(StageContext(tokenizer=tokenizer, options=opts, accelerator=Accelerator(cpu=True)))
    records = ROOT / "benchmarks/out/sft_records.jsonl"
    if not records.is_file():
        raise SystemExit(f"{records} is missing: run benchmarks/sft_throughput.py once to write it")
    examples = objective.prepare(load_records(str(records)))
    plan = plan_epoch([e["num_tokens"] for e in examples], batch_tokens=4096, max_length=1024, packing=True, seed=0)
    batch = objective.collate([[examples[i] for i in row] for row in plan[0]])
    return model, batch, objective


def _builtin_config():
    """The builtin model's config without loading its weights (the cached safetensors dir)."""
    from transformers import AutoConfig

    from attune.models.loading import model_source

    return AutoConfig.from_pretrained(model_source(MODEL))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=0, help="random model with this many blocks (0: the builtin weights)")
    parser.add_argument("--steps", type=int, default=3, help="steps per variant (medians are printed)")
    parser.add_argument("--profile", action="store_true", help="print a torch.profiler table of one fused step")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    from attune.train.attention import packed_attention
    from attune.train.lora_fused import fused_lora

    model, batch, objective = build(args.layers)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=2e-4, fused=True)
    model.train()
    print(f"batch {tuple(batch['input_ids'].shape)}: {batch['num_tokens']} tokens, {batch['num_loss_tokens']} supervised; "
          f"{torch.get_num_threads()} threads")

    def step() -> tuple[float, float, float]:
        t0 = time.perf_counter()
        loss, _ = objective.loss(model, batch)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return t1 - t0, t2 - t1, time.perf_counter() - t2

    with packed_attention(model):
        if args.profile:
            from torch.profiler import ProfilerActivity, profile

            with fused_lora(model):
                step()
                with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
                    step()
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
            print(prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=25))
            return
        times: dict[str, list[tuple[float, float, float]]] = {"peft LoRA": [], "fused LoRA": []}
        for _ in range(args.steps):
            for name in times:
                with fused_lora(model) if name == "fused LoRA" else nullcontext():
                    times[name].append(step())
    for name, ts in times.items():
        f, b, o = (statistics.median(t[i] for t in ts) for i in range(3))
        total = statistics.median(sum(t) for t in ts)
        print(f"{name:11s} forward {f:6.2f} s  backward {b:6.2f} s  optimizer {o:5.2f} s  step {total:6.2f} s  "
              f"{batch['num_tokens'] / total:6.1f} tok/s")
    peft, fused = (statistics.median(sum(t) for t in ts) for ts in times.values())
    print(f"fused LoRA vs PEFT LoRA: {peft / fused:.2f}x; peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
