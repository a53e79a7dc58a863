"""SFT throughput: attune vs TRL SFTTrainer at its real defaults and its best configurations.

    python benchmarks/sft_throughput.py --runs 3                       # 256 records, 240 s per system
    python benchmarks/sft_throughput.py --runs 3 --records 8 --seconds 0   # one whole (tiny) epoch

Every measurement runs in a fresh subprocess (so peak RSS is its own) on the builtin
SmolLM2-135M-Instruct with LoRA r=16 on all linear layers over the same chat records (mixed
lengths, 50-600 tokens, built deterministically from the text shipped in src/attune/builtin). An
epoch over 256 records takes 5-20 minutes per system on 2 cores, so each system trains on the
whole set for a time budget (`--seconds`) and stops at the first optimizer step that ends past it
(attune's `max_seconds`; a TrainerCallback for TRL). Throughput = real supervised tokens
(assistant tokens, no padding) of the completed steps / the time of those steps (model load
excluded). TRL's tokens are counted from the labels its collator built (`labels != -100`),
attune's from its metrics.jsonl.

attune runs as a user runs it (`attune train` on a recipe, `precision: auto`, which measures the
machine). TRL runs in every configuration in `TRL_CONFIGS`: its real defaults (SFTConfig as it
ships: bf16 autocast, gradient checkpointing, no packing, batch 8) and the variants that are
faster on some machine (checkpointing off, fp32, packing with its padding-free BFD strategy).
The ratio printed last is against the fastest TRL configuration measured in the same invocation.
A configuration that cannot finish one step within the hard limit (bf16 on a CPU without bf16
units) is reported and not repeated. attune's MFU is against the measured matmul peak of the
precision it chose, with LoRA training ~= 4 * N FLOPs per token (forward 2N, backward w.r.t.
activations 2N), counted over all tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import matmul_peak_gflops, measure, report_child, summarize  # noqa: E402

MODEL = "builtin:smollm2-135m-instruct"
ROOT = Path(__file__).resolve().parents[1]
LORA = {"type": "lora", "r": 16, "alpha": 32, "targets": "all-linear"}
#: TRL configurations: overrides of SFTConfig's defaults (the empty one is TRL as it ships)
TRL_CONFIGS: dict[str, dict] = {
    "trl-default": {},
    "trl-no-ckpt": {"gradient_checkpointing": False},
    "trl-fp32": {"bf16": False},
    "trl-fp32-no-ckpt": {"bf16": False, "gradient_checkpointing": False},
    "trl-packed": {"gradient_checkpointing": False, "packing": True, "per_device_train_batch_size": 4},
    "trl-packed-fp32": {"gradient_checkpointing": False, "packing": True, "per_device_train_batch_size": 4, "bf16": False},
}
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




def run_attune(records_file: Path, seconds: float) -> dict:
    """`attune train` on a one-stage recipe, as a user runs it; tokens and time from metrics.jsonl."""
    import yaml

    from attune.recipe import load_recipe
    from attune.runs import stage_output
    from attune.train.pipeline import run_recipe

    tmp = Path(tempfile.mkdtemp())
    recipe = tmp / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "bench-sft", "model": MODEL, "output_dir": str(tmp / "runs"),
        "stages": [{"objective": "sft", "data": {"path": str(records_file)}, "adapter": LORA,
                    "train": {"epochs": 1, "lr": 2e-4, "batch_tokens": 4096, "max_length": 1024, "val_fraction": 0.0,
                              "max_seconds": seconds or None}}],
    }))
    out = stage_output(run_recipe(load_recipe(recipe), show_progress=False), "sft")
    rows = [json.loads(line) for line in out.metrics_file.read_text().splitlines() if '"loss_tokens"' in line]
    return {"seconds": sum(r["seconds"] for r in rows), "tokens": sum(r["loss_tokens"] for r in rows), "steps": len(rows),
            "all_tokens": sum(r["tokens"] for r in rows), "precision": out.summary.get("precision", {}).get("precision", "fp32")}


def run_trl(records_file: Path, overrides: dict, seconds: float) -> dict:
    import torch
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    clock = {"start": 0.0, "seconds": 0.0, "tokens": 0, "steps": 0, "counted": 0}

    class CountingTrainer(SFTTrainer):
        def training_step(self, model, inputs, *args, **kwargs):
            clock["counted"] += int((inputs["labels"] != -100).sum())
            return super().training_step(model, inputs, *args, **kwargs)

    class TimeBudget(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            clock["start"] = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            clock.update(seconds=time.perf_counter() - clock["start"], steps=clock["steps"] + 1, tokens=clock["counted"])
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
        logging_steps=1000, use_cpu=True, max_length=1024, dataloader_num_workers=0, **overrides,
    )
    args = SFTConfig(**kwargs)
    trainer = CountingTrainer(
        model=loaded.model, callbacks=[TimeBudget()], args=args, train_dataset=ds, processing_class=loaded.tokenizer,
        peft_config=LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"),
    )
    trainer.train()
    return {"seconds": clock["seconds"], "tokens": clock["tokens"], "steps": clock["steps"],
            "precision": "bf16" if args.bf16 else "fp32"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="repetitions per system (medians are reported)")
    parser.add_argument("--records", type=int, default=256, help="chat records in the training set")
    parser.add_argument("--seconds", type=float, default=240.0,
                        help="training time per system and run; 0 trains one whole epoch")
    parser.add_argument("--modes", default=",".join(["attune", *TRL_CONFIGS]), help="systems to run, comma-separated")
    parser.add_argument("--limit", type=float, default=0,
                        help="hard limit per child in seconds (default: 3 x --seconds + 300, or 3600 for a whole epoch)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--records-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.child:
        records_file = Path(args.records_file)
        if args.child == "attune":
            report_child(run_attune(records_file, args.seconds))
        else:
            report_child(run_trl(records_file, TRL_CONFIGS[args.child], args.seconds))
        return

    modes = args.modes.split(",")
    unknown = [m for m in modes if m != "attune" and m not in TRL_CONFIGS]
    if unknown:
        raise SystemExit(f"unknown modes {unknown}; choose from attune, {', '.join(TRL_CONFIGS)}")
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
    limit = args.limit or (3 * args.seconds + 300 if args.seconds else 3600)
    child_args = ["--records-file", str(records_file), "--seconds", str(args.seconds)]
    results = measure(Path(__file__), modes, child_args, args.runs, limit)
    if not args.seconds:
        for mode, rs in results.items():
            for r in rs:
                if r.steps and r.tokens != sup:
                    print(f"  note: {mode} counted {r.tokens} supervised tokens in the epoch, the data has {sup}")
    med = summarize(results, "sup tok/s", "TRL")
    done = [r for r in results.get("attune", []) if not r.note]
    if "attune" in med and done:
        precision = done[0].extra["precision"]
        peak = matmul_peak_gflops(precision)
        all_tok_s = med["attune"] * sum(r.extra["all_tokens"] for r in done) / sum(r.tokens for r in done)
        n_params = 134_515_008  # SmolLM2-135M
        print(f"attune precision {precision}; {precision} matmul peak {peak:.0f} GFLOP/s; "
              f"MFU {100 * 4 * n_params * all_tok_s / (peak * 1e9):.1f}% (4N FLOPs/token over all tokens)")


if __name__ == "__main__":
    main()
