"""The advisor's memory (and speed) estimate vs what attune's trainer really uses on this machine.

For each adapter shape, a fresh process trains the builtin SmolLM2-135M-Instruct for a few steps
with attune's own pipeline (`run_recipe`, continued pretraining on full `--seq`-token blocks,
`--batch` blocks per micro-batch, so every step sees exactly seq x batch tokens) and reports its
peak RSS (`ru_maxrss`) and the trained tokens/s of the steps after the first. The estimate is
`attune.advise.costs.estimate_memory` / `estimate_time` for the same shape on the `cpu` profile.

    flock /tmp/attune-heavy.lock python benchmarks/advise_memory.py --adapters full lora --runs 3

Prints one row per (adapter, run) and a summary with the median measured peak and the ratio
estimate / measured (the issue's bar: within 25 %). It also measures greedy decoding speed
(batch 1), the CPU profile's effective memory bandwidth for per-query latency estimates.
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

BUILTIN = "builtin:smollm2-135m-instruct"


def _corpus(path: Path, tokens_wanted: int) -> None:
    """One long plain-text document made of the builtin tickets' text (real text; its content is irrelevant here)."""
    from attune.builtin import builtin_path

    lines = [json.loads(line)["messages"][0]["content"] for line in builtin_path("builtin:tickets-train").read_text().splitlines()]
    text, words = [], 0
    while words < tokens_wanted:  # ~1.3 tokens per word: asking for `tokens_wanted` words leaves margin
        for line in lines:
            text.append(line)
            words += len(line.split())
    path.write_text("\n\n".join(text))


def child(adapter: str, seq: int, batch: int, steps: int) -> None:
    """Train `steps` steps in this process and print {peak_gb, baseline_gb, tokens_per_s} as JSON."""
    from attune.recipe import parse_recipe
    from attune.train import pipeline

    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KiB -> GB, imports done
    tmp = Path(tempfile.mkdtemp(prefix="advise-mem-"))
    _corpus(tmp / "corpus.txt", seq * batch * (steps + 1))
    recipe = parse_recipe({
        "name": "advise-memory",
        "model": BUILTIN,
        "output_dir": str(tmp / "runs"),
        "stages": [{
            "objective": "cpt",
            "data": {"path": str(tmp / "corpus.txt"), "format": "text"},
            "adapter": {"type": adapter},
            "train": {"max_steps": steps, "batch_tokens": seq * batch, "max_length": seq, "val_fraction": 0.0,
                      "warmup_ratio": 0.0, "lr": 1e-5},
        }],
    })
    run_dir = pipeline.run_recipe(recipe, show_progress=False)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    rows = [json.loads(r) for r in next(run_dir.glob("stages/*/metrics.jsonl")).read_text().splitlines()]
    timed = [r for r in rows if "tokens_per_s" in r and r["step"] > 1] or [r for r in rows if "tokens_per_s" in r]
    tps = statistics.median(r["tokens_per_s"] for r in timed) if timed else None
    print(json.dumps({"peak_gb": peak, "baseline_gb": baseline, "tokens_per_s": tps}))


def decode_child(new_tokens: int) -> None:
    """Greedy decoding speed of the builtin model (fp32, batch 1): the CPU profile's effective bandwidth."""
    import torch

    from attune.models import load_model

    loaded = load_model(BUILTIN, device="cpu")
    ids = loaded.tokenizer("Write a short note about the weather in spring.", return_tensors="pt").input_ids
    with torch.no_grad():
        loaded.model.generate(ids, max_new_tokens=8, do_sample=False)  # warm-up
        t0 = time.perf_counter()
        out = loaded.model.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
        seconds = time.perf_counter() - t0
    made = out.shape[1] - ids.shape[1]
    weight_bytes = sum(p.numel() * p.element_size() for p in loaded.model.parameters())
    print(json.dumps({"tokens_per_s": made / seconds, "bandwidth_gbs": weight_bytes * made / seconds / 1e9}))


def estimate(adapter: str, seq: int, batch: int) -> tuple[float, float, str]:
    from attune.advise.costs import TrainSetup, estimate_memory, estimate_time
    from attune.advise.hardware import get_hardware
    from attune.advise.shapes import resolve_shape

    shape = resolve_shape(BUILTIN, None)
    hw = get_hardware("cpu")
    setup = TrainSetup(adapter=adapter, seq_len=seq, batch_size=batch)
    mem = estimate_memory(shape, hw, setup)
    return mem.total_gb, estimate_time(shape, hw, setup, 1.0).tokens_per_s, mem.describe()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--adapters", nargs="+", default=["lora", "full"])
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child == "decode":
        decode_child(64)
        return
    if args.child:
        child(args.child, args.seq, args.batch, args.steps)
        return
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    measured: dict[str, list[dict]] = {a: [] for a in args.adapters}
    for run in range(args.runs):
        for adapter in args.adapters:  # interleaved, so a busy spell on the machine hits both
            cmd = [sys.executable, __file__, "--child", adapter, "--seq", str(args.seq), "--batch", str(args.batch),
                   "--steps", str(args.steps)]
            t0 = time.perf_counter()
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
            result = json.loads(out.strip().splitlines()[-1])
            measured[adapter].append(result)
            est_gb = estimate(adapter, args.seq, args.batch)[0]
            print(f"run {run + 1} {adapter:>5}: peak RSS {result['peak_gb']:.2f} GB (estimate {est_gb:.2f}, "
                  f"x{est_gb / result['peak_gb']:.2f}), after imports {result['baseline_gb']:.2f} GB, "
                  f"{result['tokens_per_s'] or 0:.0f} tok/s ({time.perf_counter() - t0:.0f} s)", flush=True)
    decodes = [json.loads(subprocess.run([sys.executable, __file__, "--child", "decode"], env=env, capture_output=True, text=True,
                                         check=True).stdout.strip().splitlines()[-1]) for _ in range(args.runs)]
    print(f"decode (batch 1, fp32): {statistics.median(d['tokens_per_s'] for d in decodes):.1f} tok/s = "
          f"{statistics.median(d['bandwidth_gbs'] for d in decodes):.1f} GB/s of weights read (median of {args.runs})")
    print(f"\nbuiltin SmolLM2-135M, cpt, {args.batch} x {args.seq} tokens per step, {args.steps} steps, fp32 on CPU")
    print(f"{'adapter':>8} {'measured GB':>12} {'estimate GB':>12} {'est/meas':>9} {'meas tok/s':>11} {'est tok/s':>10}")
    for adapter, results in measured.items():
        peak = statistics.median(r["peak_gb"] for r in results)
        tps = statistics.median(r["tokens_per_s"] or 0 for r in results)
        est_gb, est_tps, parts = estimate(adapter, args.seq, args.batch)
        print(f"{adapter:>8} {peak:>12.2f} {est_gb:>12.2f} {est_gb / peak:>9.2f} {tps:>11.0f} {est_tps:>10.0f}   {parts}")


if __name__ == "__main__":
    main()
