"""SFT throughput: attune vs TRL SFTTrainer (default and tuned), same model, data, LoRA, machine.

    python benchmarks/sft_throughput.py --runs 3                       # 256 records, 240 s per system
    python benchmarks/sft_throughput.py --runs 3 --records 8 --seconds 0   # one whole (tiny) epoch

Every measurement runs in a fresh subprocess (so peak RSS is its own) on the builtin
SmolLM2-135M-Instruct with LoRA r=16 on all linear layers, fp32, over the same chat records
(mixed lengths, 50-600 tokens, built deterministically from the text shipped in
src/attune/builtin). An epoch over 256 records takes 5-20 minutes per system on 2 cores, so
each system trains on the whole set for a time budget (`--seconds`) and stops at the first
optimizer step that ends past it (attune's `max_seconds`; a TrainerCallback for TRL).
Throughput = real supervised tokens (assistant tokens, no padding) of the completed steps /
the time of those steps (model load excluded; the first, slower steps included for every
system alike). TRL's tokens are counted from the labels its collator built (`labels != -100`),
attune's from its metrics.jsonl. TRL default = SFTConfig defaults (gradient checkpointing on,
no packing, batch 8); TRL tuned = gradient checkpointing off, packing with its padding-free BFD
strategy, batch 4 rows of 1024. Both TRL runs set bf16=False (TRL defaults to bf16, which is
~400x slower on this CPU): every system trains in fp32. attune's MFU is against the measured
fp32 matmul peak, with LoRA training ~= 4 * N FLOPs per token (forward 2N, backward w.r.t.
activations 2N).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

MODEL = "builtin:smollm2-135m-instruct"
ROOT = Path(__file__).resolve().parents[1]


def chat_length(tokenizer, messages: list[dict]) -> int:
    from attune.data import render_chat

    return len(tokenizer(render_chat(tokenizer, messages), add_special_tokens=False)["input_ids"])


def build_records(tokenizer, n: int, seed: int = 0) -> list[dict]:
    """Chat records of 50-600 tokens from the project's shipped text (deterministic)."""
    words: list[str] = []
    for path in sorted((ROOT / "src/attune/builtin").rglob("*")):
        if path.suffix in (".md", ".txt", ".jsonl", ".html") and path.is_file():
            words += re.sub(r"<[^>]+>|[{}\"\\]", " ", path.read_text(errors="ignore")).split()
    if len(words) < 2000:
        raise SystemExit("not enough shipped text to build benchmark records")
    rng = random.Random(seed)
    records = []
    while len(records) < n:
        total = rng.randint(50, 600)
        prompt_len = rng.randint(15, max(16, total // 3))
        start = rng.randrange(0, len(words) - 1000)
        prompt = " ".join(words[start : start + prompt_len])
        answer = " ".join(words[start + prompt_len : start + prompt_len + (total - prompt_len) * 3 // 4])
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
        length = chat_length(tokenizer, messages)
        if 50 <= length <= 600:
            records.append({"messages": messages})
    return records


def supervised_tokens(tokenizer, records: list[dict]) -> int:
    from attune.data import ChatRecord, encode_record

    total = 0
    for r in records:
        enc = encode_record(tokenizer, ChatRecord(messages=r["messages"], source="bench"), max_length=1024)
        total += sum(1 for label in enc.labels[1:] if label != -100)
    return total


def matmul_peak_gflops() -> float:
    import torch

    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    for _ in range(3):
        a @ b
    t = time.perf_counter()
    reps = 20
    for _ in range(reps):
        a @ b
    return 2 * 2048**3 * reps / (time.perf_counter() - t) / 1e9


def run_attune(records_file: Path, seconds: float) -> dict:
    import torch
    from accelerate import Accelerator

    from attune.adapters import apply_adapter, parse_adapter
    from attune.data import load_records
    from attune.models import load_model
    from attune.train.context import StageContext
    from attune.train.loop import train_loop
    from attune.train.objectives import sft

    torch.manual_seed(0)
    loaded = load_model(MODEL, device="cpu")
    model = apply_adapter(loaded.model, parse_adapter({"type": "lora", "r": 16, "alpha": 32, "targets": "all-linear"}))
    opts = sft.Options(
        epochs=1, lr=2e-4, batch_tokens=4096, max_length=1024, val_fraction=0.0, max_seconds=seconds or None
    )
    objective = sft.SFT(StageContext(tokenizer=loaded.tokenizer, options=opts, accelerator=Accelerator(cpu=True)))
    examples = objective.prepare(load_records(str(records_file)))
    import tempfile

    out = Path(tempfile.mkdtemp())
    train_loop(model, objective, examples, [], out, show_progress=False)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {"seconds": sum(r["seconds"] for r in rows), "sup_tokens": sum(r["loss_tokens"] for r in rows), "steps": len(rows)}


def run_trl(records_file: Path, tuned: bool, seconds: float) -> dict:
    import tempfile

    import torch
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    clock = {"start": 0.0, "seconds": 0.0, "tokens": 0, "steps": 0}

    class CountingTrainer(SFTTrainer):
        def training_step(self, model, inputs, *args, **kwargs):
            clock["tokens"] += int((inputs["labels"] != -100).sum())
            return super().training_step(model, inputs, *args, **kwargs)

    class TimeBudget(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            clock["start"] = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            clock["seconds"] = time.perf_counter() - clock["start"]
            clock["steps"] += 1
            if seconds and clock["seconds"] >= seconds:
                control.should_training_stop = True

    from attune.models import load_model

    torch.manual_seed(0)
    loaded = load_model(MODEL, device="cpu")
    ds = load_dataset("json", data_files=str(records_file), split="train")
    # prompt-completion form: TRL then supervises the completion only, like attune's assistant-only loss
    ds = ds.map(lambda r: {"prompt": r["messages"][:1], "completion": r["messages"][1:]}, remove_columns=["messages"])
    kwargs = dict(
        output_dir=tempfile.mkdtemp(), num_train_epochs=1, learning_rate=2e-4, report_to=[], save_strategy="no",
        logging_steps=1000, use_cpu=True, max_length=1024, dataloader_num_workers=0,
        # TRL's SFTConfig turns bf16 on by default; on this CPU bf16 matmuls are ~400x slower, so both
        # TRL runs use fp32 like attune (otherwise "default" would measure the bf16 trap, not TRL).
        bf16=False,
    )
    if tuned:
        kwargs.update(gradient_checkpointing=False, packing=True, per_device_train_batch_size=4)
    trainer = CountingTrainer(
        model=loaded.model, callbacks=[TimeBudget()], args=SFTConfig(**kwargs), train_dataset=ds, processing_class=loaded.tokenizer,
        peft_config=LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"),
    )
    trainer.train()
    return {"seconds": clock["seconds"], "sup_tokens": clock["tokens"], "steps": clock["steps"]}


def child(mode: str, records_file: Path, seconds: float) -> None:
    if mode == "attune":
        result = run_attune(records_file, seconds)
    else:
        result = run_trl(records_file, tuned=mode == "trl-tuned", seconds=seconds)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="repetitions per system (medians are reported)")
    parser.add_argument("--records", type=int, default=256, help="chat records in the training set")
    parser.add_argument("--seconds", type=float, default=240.0,
                        help="training time per system and run; 0 trains one whole epoch")
    parser.add_argument("--modes", default="attune,trl-default,trl-tuned")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--records-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.child:
        child(args.child, Path(args.records_file), args.seconds)
        return

    from attune.models import load_tokenizer

    tokenizer = load_tokenizer(MODEL)
    records = build_records(tokenizer, args.records)
    out_dir = ROOT / "benchmarks/out"
    out_dir.mkdir(parents=True, exist_ok=True)
    records_file = out_dir / "sft_records.jsonl"
    records_file.write_text("".join(json.dumps(r) + "\n" for r in records))
    sup = supervised_tokens(tokenizer, records)
    lengths = [chat_length(tokenizer, r["messages"]) for r in records]
    print(f"{len(records)} records, {sum(lengths)} tokens (min {min(lengths)}, max {max(lengths)}), {sup} supervised")
    peak = matmul_peak_gflops()
    results: dict[str, list[dict]] = {}
    modes = args.modes.split(",")
    for rep in range(args.runs):
        for mode in modes:  # interleaved, so machine noise hits every system alike
            proc = subprocess.run(
                [sys.executable, __file__, "--child", mode, "--records-file", str(records_file),
                 "--seconds", str(args.seconds)],
                capture_output=True, text=True,
            )
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                print(proc.stdout[-2000:], proc.stderr[-4000:])
                raise SystemExit(f"{mode} failed")
            r = json.loads(line[7:])
            r["tok_s"] = r["sup_tokens"] / r["seconds"]
            if not args.seconds and r["sup_tokens"] != sup:
                print(f"  note: {mode} counted {r['sup_tokens']} supervised tokens in the epoch, the data has {sup}")
            results.setdefault(mode, []).append(r)
            print(f"run {rep + 1} {mode:12s} {r['tok_s']:8.1f} sup tok/s  {r['sup_tokens']:6d} tokens in {r['steps']:3d} steps, "
                  f"{r['seconds']:7.1f} s  peak RSS {r['peak_rss_mb']:7.0f} MB", flush=True)

    n_params = 134_515_008  # SmolLM2-135M
    print(f"\nmedian of {args.runs} runs; fp32 matmul peak {peak:.0f} GFLOP/s")
    print(f"{'system':14s} {'sup tok/s':>10s} {'peak RSS MB':>12s}")
    med = {m: statistics.median(r["tok_s"] for r in rs) for m, rs in results.items()}
    for m, rs in results.items():
        print(f"{m:14s} {med[m]:10.1f} {statistics.median(r['peak_rss_mb'] for r in rs):12.0f}")
    if "attune" in med:
        total_tok_s = med["attune"] * sum(lengths) / sup  # all tokens computed, at the data's supervised share
        print(f"attune MFU: {100 * 4 * n_params * total_tok_s / (peak * 1e9):.1f}% (4N FLOPs/token over all tokens)")
    if "attune" in med and "trl-default" in med:
        print(f"attune vs TRL default: {med['attune'] / med['trl-default']:.2f}x")
    if "attune" in med and "trl-tuned" in med:
        print(f"attune vs TRL tuned: {med['attune'] / med['trl-tuned']:.2f}x")


if __name__ == "__main__":
    main()
