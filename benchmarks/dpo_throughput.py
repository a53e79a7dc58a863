"""DPO throughput at steady state: attune vs TRL DPOTrainer at its real defaults and best configurations.

    python benchmarks/dpo_throughput.py --runs 3                  # 128 pairs, 240 s per system

Every measurement runs in a fresh subprocess (so peak RSS is its own) on the builtin
SmolLM2-135M-Instruct with LoRA r=16 on all linear layers (dropout 0), sigmoid DPO with beta 0.1,
over the first N pairs of builtin:support-prefs (N >= 64), the reference being the base with the
adapter disabled in both. Each system trains for a time budget (`--seconds`) and stops at the first
optimizer step that ends past it, so the measurement is steady-state training, not the first cold
steps. Throughput counts real tokens of the completed steps (prompt + reply, both sides of every
pair, no padding): attune's from its metrics.jsonl, TRL's from its collator's attention masks;
step time excludes model load and TRL's dataset tokenization. Batches hold about 8 pairs in both:
attune by token budget (batch_tokens 1024), TRL by count (per_device_train_batch_size 8).

attune runs as a user runs it (`attune train` on a recipe, `precision: auto`). TRL runs in every
configuration in `TRL_CONFIGS`: DPOConfig as it ships (bf16 autocast, gradient checkpointing) and
the variants that are faster on some machine; the ratio printed last is against the fastest one
measured in the same invocation. attune packs the pairs' documents into rows (no padding), TRL pads
each batch to its longest sequence.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import measure, report_child, summarize  # noqa: E402

MODEL = "builtin:smollm2-135m-instruct"
DATA = "builtin:support-prefs"
LORA = {"r": 16, "alpha": 32}
#: TRL configurations: overrides of DPOConfig's defaults (the empty one is TRL as it ships)
TRL_CONFIGS: dict[str, dict] = {
    "trl-default": {},
    "trl-no-ckpt": {"gradient_checkpointing": False},
    "trl-fp32": {"bf16": False},
    "trl-fp32-no-ckpt": {"bf16": False, "gradient_checkpointing": False},
}


def load_pairs(n: int) -> list:
    from attune.data import load_records
    from attune.recipe import DataSource

    return load_records(DataSource(path=DATA, limit=n))


def pair_tokens(tokenizer, records) -> int:
    from attune.data import encode_preference

    total = 0
    for r in records:
        enc = encode_preference(tokenizer, r, max_length=10**6)
        total += 2 * len(enc.prompt_ids) + len(enc.chosen_ids) + len(enc.rejected_ids)
    return total


def run_attune(n: int, seconds: float) -> dict:
    """`attune train` on a one-stage DPO recipe, as a user runs it; tokens and time from metrics.jsonl."""
    import json

    import yaml

    from attune.recipe import load_recipe
    from attune.runs import stage_output
    from attune.train.pipeline import run_recipe

    tmp = Path(tempfile.mkdtemp())
    recipe = tmp / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "bench-dpo", "model": MODEL, "output_dir": str(tmp / "runs"),
        "stages": [{"objective": "dpo", "data": {"path": DATA, "limit": n}, "adapter": {"type": "lora", **LORA, "targets": "all-linear"},
                    "train": {"epochs": 1, "lr": 5e-5, "beta": 0.1, "batch_tokens": 1024, "max_length": 1024,
                              "val_fraction": 0.0, "max_seconds": seconds or None}}],
    }))
    out = stage_output(run_recipe(load_recipe(recipe), show_progress=False), "dpo")
    rows = [json.loads(line) for line in out.metrics_file.read_text().splitlines() if '"tokens"' in line]
    return {"seconds": sum(r["seconds"] for r in rows), "tokens": sum(r["tokens"] for r in rows), "steps": len(rows),
            "precision": out.summary.get("precision", {}).get("precision", "fp32")}


def run_trl(n: int, overrides: dict, seconds: float) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from attune.models import load_model

    clock = {"start": 0.0, "seconds": 0.0, "tokens": 0, "steps": 0, "counted": 0}

    class CountingTrainer(DPOTrainer):
        def training_step(self, model, inputs, *args, **kwargs):
            clock["counted"] += int(inputs["attention_mask"].sum())
            return super().training_step(model, inputs, *args, **kwargs)

    class TimeBudget(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            clock["start"] = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            clock.update(seconds=time.perf_counter() - clock["start"], steps=clock["steps"] + 1, tokens=clock["counted"])
            if seconds and clock["seconds"] >= seconds:
                control.should_training_stop = True

    torch.manual_seed(0)
    loaded = load_model(MODEL, device="cpu")
    rows = [{"prompt": r.prompt, "chosen": [{"role": "assistant", "content": r.chosen}],
             "rejected": [{"role": "assistant", "content": r.rejected}]} for r in load_pairs(n)]
    args = DPOConfig(
        output_dir=tempfile.mkdtemp(), num_train_epochs=1, learning_rate=5e-5, beta=0.1, report_to=[], save_strategy="no",
        logging_steps=1000, use_cpu=True, per_device_train_batch_size=8, dataloader_num_workers=0, max_length=1024,
        **overrides,
    )
    trainer = CountingTrainer(
        model=loaded.model, args=args, callbacks=[TimeBudget()], train_dataset=Dataset.from_list(rows),
        processing_class=loaded.tokenizer,
        peft_config=LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=0.0, target_modules="all-linear",
                               task_type="CAUSAL_LM"),
    )
    trainer.train()
    return {"seconds": clock["seconds"], "tokens": clock["tokens"], "steps": clock["steps"],
            "precision": "bf16" if args.bf16 else "fp32"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="repetitions per system (medians are reported)")
    parser.add_argument("--pairs", type=int, default=128, help="preference pairs (64-200; 200 in the builtin set)")
    parser.add_argument("--seconds", type=float, default=240.0, help="training time per system and run")
    parser.add_argument("--modes", default=",".join(["attune", *TRL_CONFIGS]), help="systems to run, comma-separated")
    parser.add_argument("--limit", type=float, default=0, help="hard limit per child in seconds (default: 3 x --seconds + 300)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.child:
        if args.child == "attune":
            report_child(run_attune(args.pairs, args.seconds))
        else:
            report_child(run_trl(args.pairs, TRL_CONFIGS[args.child], args.seconds))
        return
    if not 64 <= args.pairs <= 200:
        raise SystemExit("--pairs must be 64-200: steady state needs at least 64 pairs, the builtin set has 200")
    if args.seconds <= 0:
        raise SystemExit("--seconds must be > 0 (a time budget measures the steady state)")
    modes = args.modes.split(",")
    unknown = [m for m in modes if m != "attune" and m not in TRL_CONFIGS]
    if unknown:
        raise SystemExit(f"unknown modes {unknown}; choose from attune, {', '.join(TRL_CONFIGS)}")

    from attune.models import load_tokenizer

    records = load_pairs(args.pairs)
    print(f"{len(records)} pairs, {pair_tokens(load_tokenizer(MODEL), records)} tokens (prompt + reply, both sides)")
    child_args = ["--pairs", str(args.pairs), "--seconds", str(args.seconds)]
    results = measure(Path(__file__), modes, child_args, args.runs, args.limit or 3 * args.seconds + 300)
    summarize(results, "tok/s", "TRL DPO")


if __name__ == "__main__":
    main()
