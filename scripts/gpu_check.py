"""One GPU check per call, printing one `CHECK <name> PASS|FAIL|SKIP <measurement>` line (scripts/gpu_check.sh runs them all).

    python scripts/gpu_check.py sft-lora --out /tmp/gpu-check --seconds 60

Every check trains or serves the builtin SmolLM2-135M-Instruct on builtin data, on CUDA, and measures
what it claims: steps, loss first -> last, supervised tokens/s, peak GPU memory (torch's allocator peak),
and for serving the answers of two LoRA adapters through the openai client.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
MODEL = "builtin:smollm2-135m-instruct"
LORA = {"type": "lora", "r": 16, "alpha": 32, "targets": "all-linear"}
CHECKS = ("sft-lora", "sft-full", "qlora", "dpo", "fsdp-1gpu", "zero3-1gpu", "vllm-serve", "sft-vs-trl", "unsloth")


def report(name: str, status: str, measurement: str) -> None:
    print(f"CHECK {name} {status} {measurement}", flush=True)


def _recipe(out: Path, name: str, objective: str, data: str, adapter: dict, seconds: float, **train) -> Path:
    recipe = {
        "name": name, "model": MODEL, "output_dir": str(out / "runs"),
        "stages": [{"name": objective, "objective": objective, "data": {"path": data}, "adapter": adapter,
                    "train": {"precision": "bf16", "epochs": 1, "max_seconds": seconds, "val_fraction": 0.0, **train}}],
    }
    path = out / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _metrics(run: Path, stage: str) -> list[dict]:
    return [json.loads(x) for x in (run / "stages" / stage / "metrics.jsonl").read_text().splitlines()]


def _summary(rows: list[dict]) -> str:
    seconds = sum(r["seconds"] for r in rows)
    sup = sum(r.get("loss_tokens", 0) for r in rows)
    return f"steps={len(rows)} loss={rows[0]['loss']:.3f}->{rows[-1]['loss']:.3f} sup_tok/s={sup / max(seconds, 1e-9):.0f}"


def train_in_process(out: Path, name: str, objective: str, data: str, adapter: dict, seconds: float, **train) -> str:
    """Train one stage here (so the allocator's peak is this run's) and describe it."""
    import torch

    from attune.recipe import load_recipe
    from attune.train.pipeline import run_recipe

    torch.cuda.reset_peak_memory_stats()
    run = run_recipe(load_recipe(_recipe(out, name, objective, data, adapter, seconds, **train)), show_progress=False)
    rows = _metrics(run, objective)
    if not rows or not all(r["loss"] == r["loss"] for r in rows):
        raise RuntimeError(f"{name}: no finite loss logged")
    peak = torch.cuda.max_memory_allocated() / 2**30
    sdpa = "flash" if torch.backends.cuda.flash_sdp_enabled() else "sdpa-math"
    return f"{_summary(rows)} peak_gpu={peak:.2f}GiB attention={sdpa}"


def check_launcher(out: Path, config: str, seconds: float) -> str:
    """A 1-GPU smoke of a shipped sharding config: trains, saves a complete adapter that plain PEFT loads."""
    from safetensors.torch import load_file

    name = f"smoke-{config}"
    recipe = _recipe(out, name, "sft", "builtin:tickets-train", LORA, seconds)
    config_file = subprocess.run([sys.executable, "-m", "attune", "launch-config", config], capture_output=True, text=True,
                                 check=True).stdout.strip()
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", config_file, "--num_processes", "1",
           "--main_process_port", "29690", "-m", "attune", "train", str(recipe), "--no-progress"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-1500:])
    run = (out / "runs" / name / "latest").resolve()
    weights = load_file(str(run / "stages" / "sft" / "adapter" / "adapter_model.safetensors"))
    empty = [k for k, v in weights.items() if v.numel() == 0]
    if empty or not weights:
        raise RuntimeError(f"adapter incomplete: {len(empty)} empty of {len(weights)} tensors")
    return f"{_summary(_metrics(run, 'sft'))} tensors={len(weights)} wall={time.perf_counter() - t0:.0f}s"


def check_vllm(out: Path, seconds: float) -> str:
    """Two LoRA adapters trained here, served by `attune serve --backend vllm`, asked through the openai client."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        raise LookupError("vllm is not installed (pip install vllm)")
    from openai import OpenAI

    adapters = []
    for name, data in (("tickets", "builtin:tickets-train"), ("support", "builtin:support-replies")):
        run_name = f"vllm-{name}"
        train_in_process(out, run_name, "sft", data, LORA, seconds / 2)
        adapters.append((name, (out / "runs" / run_name / "latest").resolve() / "stages" / "sft" / "adapter"))
    port = 8765
    cmd = [sys.executable, "-m", "attune", "serve", "--model", MODEL, "--backend", "vllm", "--port", str(port)]
    for name, path in adapters:
        cmd += ["--adapter", f"{name}={path}"]
    server = subprocess.Popen(cmd, stdout=open(out / "vllm.log", "w"), stderr=subprocess.STDOUT)
    try:
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none")
        deadline = time.time() + 240
        while time.time() < deadline:
            try:
                client.models.list()
                break
            except Exception:  # not up yet
                if server.poll() is not None:
                    raise RuntimeError((out / "vllm.log").read_text()[-1500:]) from None
                time.sleep(2)
        answers = {}
        t0 = time.perf_counter()
        for name, _ in adapters:
            reply = client.chat.completions.create(model=name, messages=[{"role": "user", "content": "My order is late."}],
                                                   max_tokens=32, temperature=0)
            answers[name] = reply.choices[0].message.content or ""
        if not all(answers.values()):
            raise RuntimeError(f"empty answer: {answers}")
        return f"adapters={len(answers)} latency={1000 * (time.perf_counter() - t0) / len(answers):.0f}ms/answer " \
               f"differ={answers['tickets'] != answers['support']}"
    finally:
        server.terminate()
        server.wait(timeout=60)


def check_sft_vs_trl(out: Path, seconds: float) -> str:
    """attune vs TRL's fastest SFT setting on this GPU (bf16, no gradient checkpointing, padding-free packing),
    each in its own process for `seconds`, on the same records; supervised tokens/s and peak GPU memory."""
    results = {}
    modes = ["attune", "trl-best"]
    import importlib.util

    if importlib.util.find_spec("unsloth") is not None:
        modes.append("unsloth")
    for mode in modes:
        proc = subprocess.run([sys.executable, __file__, "_throughput", "--mode", mode, "--out", str(out), "--seconds", str(seconds)],
                              capture_output=True, text=True)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            raise RuntimeError(f"{mode}: {proc.stderr[-1500:]}")
        results[mode] = json.loads(line[7:])
    parts = [f"{m}={r['tok_s']:.0f}tok/s,{r['peak_gib']:.2f}GiB" for m, r in results.items()]
    ratio = results["attune"]["tok_s"] / max(results["trl-best"]["tok_s"], 1e-9)
    return " ".join(parts) + f" attune/trl={ratio:.2f}x"


def _throughput(mode: str, out: Path, seconds: float) -> None:
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from sft_throughput import build_records

    from attune.models import load_model, load_tokenizer

    records = out / "throughput.jsonl"
    if not records.is_file():
        records.write_text("".join(json.dumps(r) + "\n" for r in build_records(load_tokenizer(MODEL), 512)))
    torch.cuda.reset_peak_memory_stats()
    if mode == "attune":
        from attune.recipe import load_recipe
        from attune.train.pipeline import run_recipe

        recipe = _recipe(out, "tput", "sft", str(records), LORA, seconds, batch_tokens=16384, max_length=1024)
        rows = _metrics(run_recipe(load_recipe(recipe), show_progress=False), "sft")
        tok, secs = sum(r["loss_tokens"] for r in rows), sum(r["seconds"] for r in rows)
    else:
        from datasets import load_dataset
        from peft import LoraConfig
        from transformers import TrainerCallback

        if mode == "unsloth":
            from unsloth import FastLanguageModel  # noqa: F401  (patches transformers/TRL on import)
        from trl import SFTConfig, SFTTrainer

        clock = {"start": 0.0, "seconds": 0.0, "tokens": 0}

        class Counting(SFTTrainer):
            def training_step(self, model, inputs, *args, **kwargs):
                clock["tokens"] += int((inputs["labels"] != -100).sum())
                return super().training_step(model, inputs, *args, **kwargs)

        class Budget(TrainerCallback):
            def on_train_begin(self, args, state, control, **kwargs):
                clock["start"] = time.perf_counter()

            def on_step_end(self, args, state, control, **kwargs):
                clock["seconds"] = time.perf_counter() - clock["start"]
                control.should_training_stop = clock["seconds"] >= seconds

        loaded = load_model(MODEL, device="cuda")
        ds = load_dataset("json", data_files=str(records), split="train")
        ds = ds.map(lambda r: {"prompt": r["messages"][:1], "completion": r["messages"][1:]}, remove_columns=["messages"])
        args = SFTConfig(output_dir=str(out / "trl"), num_train_epochs=1, learning_rate=2e-4, report_to=[], save_strategy="no",
                         bf16=True, gradient_checkpointing=False, packing=True, padding_free=True, per_device_train_batch_size=16,
                         max_length=1024, logging_steps=1000)
        trainer = Counting(model=loaded.model, args=args, train_dataset=ds, processing_class=loaded.tokenizer, callbacks=[Budget()],
                           peft_config=LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"))
        trainer.train()
        tok, secs = clock["tokens"], clock["seconds"]
    print("RESULT " + json.dumps({"tok_s": tok / max(secs, 1e-9), "peak_gib": torch.cuda.max_memory_allocated() / 2**30}))


def run_check(name: str, out: Path, seconds: float) -> None:
    out.mkdir(parents=True, exist_ok=True)
    try:
        import torch

        if not torch.cuda.is_available():
            raise LookupError("no CUDA device visible to torch")
        if name == "sft-lora":
            result = train_in_process(out, name, "sft", "builtin:tickets-train", LORA, seconds)
        elif name == "sft-full":
            result = train_in_process(out, name, "sft", "builtin:tickets-train", {"type": "full"}, seconds, lr=2e-5)
        elif name == "qlora":
            result = train_in_process(out, name, "sft", "builtin:tickets-train", {**LORA, "type": "qlora"}, seconds)
        elif name == "dpo":
            result = train_in_process(out, name, "dpo", "builtin:support-prefs", LORA, seconds)
        elif name in ("fsdp-1gpu", "zero3-1gpu"):
            result = check_launcher(out, name.removesuffix("-1gpu"), seconds)
        elif name == "vllm-serve":
            result = check_vllm(out, seconds)
        elif name == "sft-vs-trl":
            result = check_sft_vs_trl(out, seconds)
        else:  # unsloth
            import importlib.util

            if importlib.util.find_spec("unsloth") is None:
                raise LookupError("unsloth is not installed (pip install unsloth); sft-vs-trl measures it when it is")
            result = "measured inside sft-vs-trl"
    except LookupError as exc:
        report(name, "SKIP", str(exc))
        return
    except Exception as exc:  # every failure is one line, with its reason
        report(name, "FAIL", f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}")
        raise SystemExit(1) from exc
    report(name, "PASS", result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("check", choices=[*CHECKS, "_throughput"])
    parser.add_argument("--out", type=Path, default=Path("gpu-check-out"))
    parser.add_argument("--seconds", type=float, default=20.0, help="training time per run")
    parser.add_argument("--mode", default="attune", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.check == "_throughput":
        _throughput(args.mode, args.out, args.seconds)
    else:
        run_check(args.check, args.out, args.seconds)


if __name__ == "__main__":
    main()
