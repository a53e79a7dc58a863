"""DPO throughput: attune vs TRL DPOTrainer (default and tuned), same model, pairs, LoRA, machine.

    python benchmarks/dpo_throughput.py --runs 3 --pairs 32

Each run's rows are appended to benchmarks/out/dpo_throughput.jsonl and the medians are taken over
every row there with the same --pairs, so `--runs 1` three times (e.g. each under the shared lock,
to keep each hold short) reports the same medians as `--runs 3` once; `--fresh` starts the file over.

Every measurement runs in a fresh subprocess (so peak RSS is its own) on the builtin
SmolLM2-135M-Instruct with LoRA r=16 on all linear layers (dropout 0), fp32, sigmoid DPO with
beta 0.1, one epoch over the first N pairs of builtin:support-prefs, the reference being the base
with the adapter disabled in both. Throughput counts real tokens (prompt + reply, both sides of
every pair, no padding; counted with attune's encoding) over training wall time (model load and
TRL's dataset tokenization excluded). Batches hold about 8 pairs in both: attune by token budget
(batch_tokens 1024), TRL by count (per_device_train_batch_size 8).
TRL default = DPOConfig defaults except bf16=False (its bf16 default is ~400x slower on this CPU);
TRL tuned = also gradient checkpointing off (DPOConfig turns it on). attune packs the pairs'
documents into rows (no padding), TRL pads each batch to its longest sequence.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODEL = "builtin:smollm2-135m-instruct"
DATA = "builtin:support-prefs"
ROOT = Path(__file__).resolve().parents[1]
LORA = {"r": 16, "alpha": 32}


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


def run_attune(n: int) -> dict:
    import torch
    from accelerate import Accelerator

    from attune.adapters import apply_adapter, parse_adapter
    from attune.models import load_model
    from attune.train.context import StageContext
    from attune.train.loop import train_loop
    from attune.train.objectives import dpo

    torch.manual_seed(0)
    loaded = load_model(MODEL, device="cpu")
    model = apply_adapter(loaded.model, parse_adapter({"type": "lora", **LORA, "targets": "all-linear"}))
    opts = dpo.Options(epochs=1, lr=5e-5, beta=0.1, batch_tokens=1024, max_length=1024, val_fraction=0.0)
    objective = dpo.DPO(StageContext(tokenizer=loaded.tokenizer, options=opts, accelerator=Accelerator(cpu=True)))
    examples = objective.prepare(load_pairs(n))
    t = time.perf_counter()
    result = train_loop(model, objective, examples, [], Path(tempfile.mkdtemp()), show_progress=False)
    return {"seconds": time.perf_counter() - t, "steps": result.steps}


def run_trl(n: int, tuned: bool) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    from attune.models import load_model

    torch.manual_seed(0)
    loaded = load_model(MODEL, device="cpu")
    rows = [{"prompt": r.prompt, "chosen": [{"role": "assistant", "content": r.chosen}],
             "rejected": [{"role": "assistant", "content": r.rejected}]} for r in load_pairs(n)]
    kwargs = dict(
        output_dir=tempfile.mkdtemp(), num_train_epochs=1, learning_rate=5e-5, beta=0.1, report_to=[], save_strategy="no",
        logging_steps=1000, use_cpu=True, per_device_train_batch_size=8, dataloader_num_workers=0, bf16=False,
        max_length=1024,
    )
    if tuned:
        kwargs.update(gradient_checkpointing=False)
    trainer = DPOTrainer(
        model=loaded.model, args=DPOConfig(**kwargs), train_dataset=Dataset.from_list(rows), processing_class=loaded.tokenizer,
        peft_config=LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=0.0, target_modules="all-linear",
                               task_type="CAUSAL_LM"),
    )
    t = time.perf_counter()
    out = trainer.train()
    return {"seconds": time.perf_counter() - t, "steps": out.global_step}


def child(mode: str, n: int) -> None:
    result = run_attune(n) if mode == "attune" else run_trl(n, tuned=mode == "trl-tuned")
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="repetitions per system (medians are reported)")
    parser.add_argument("--pairs", type=int, default=32, help="preference pairs per run (200 in the builtin set)")
    parser.add_argument("--fresh", action="store_true", help="forget the rows of earlier invocations")
    parser.add_argument("--modes", default="attune,trl-default,trl-tuned")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.child:
        child(args.child, args.pairs)
        return

    from attune.models import load_tokenizer

    records = load_pairs(args.pairs)
    tokens = pair_tokens(load_tokenizer(MODEL), records)
    print(f"{len(records)} pairs, {tokens} tokens (prompt + reply, both sides)")
    log = ROOT / "benchmarks/out/dpo_throughput.jsonl"
    log.parent.mkdir(parents=True, exist_ok=True)
    if args.fresh:
        log.unlink(missing_ok=True)
    modes = args.modes.split(",")
    for rep in range(args.runs):
        for mode in modes:  # interleaved, so machine noise hits every system alike
            proc = subprocess.run([sys.executable, __file__, "--child", mode, "--pairs", str(args.pairs)],
                                  capture_output=True, text=True)
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                print(proc.stdout[-2000:], proc.stderr[-4000:])
                raise SystemExit(f"{mode} failed")
            r = json.loads(line[7:])
            r.update(mode=mode, pairs=len(records), tok_s=tokens / r["seconds"], pairs_s=len(records) / r["seconds"])
            with log.open("a") as f:
                f.write(json.dumps(r) + "\n")
            print(f"run {rep + 1} {mode:12s} {r['tok_s']:8.1f} tok/s  {r['pairs_s']:6.2f} pairs/s  {r['seconds']:7.1f} s  "
                  f"{r['steps']} steps  peak RSS {r['peak_rss_mb']:7.0f} MB", flush=True)

    results: dict[str, list[dict]] = {}
    for line in log.read_text().splitlines():
        row = json.loads(line)
        if row["pairs"] == len(records) and row["mode"] in modes:
            results.setdefault(row["mode"], []).append(row)
    print(f"\nmedians over {', '.join(f'{len(v)} {m}' for m, v in results.items())} runs ({log.name})")
    print(f"{'system':14s} {'tok/s':>8s} {'pairs/s':>8s} {'peak RSS MB':>12s}")
    med = {m: statistics.median(r["tok_s"] for r in rs) for m, rs in results.items()}
    for m, rs in results.items():
        print(f"{m:14s} {med[m]:8.1f} {statistics.median(r['pairs_s'] for r in rs):8.2f} "
              f"{statistics.median(r['peak_rss_mb'] for r in rs):12.0f}")
    for peer in ("trl-default", "trl-tuned"):
        if "attune" in med and peer in med:
            print(f"attune vs {peer}: {med['attune'] / med[peer]:.2f}x tokens/s")


if __name__ == "__main__":
    main()
