"""What packing's block-diagonal mask costs: one LoRA training step at several row shapes.

    python benchmarks/packed_attention.py

Each shape runs in its own process (fresh peak RSS) on the builtin SmolLM2-135M-Instruct with
LoRA r=16 all-linear: the same 3072 tokens as 3 rows x 1024 (packed, 4 examples per row), as
6 x 512 (packed, 2 per row), as 12 x 256 (one example per row: plain causal attention), and as
3 x 1024 packed with attune's per-example causal attention (`attune.train.attention`).
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time

SHAPES = [(3, 1024, 0), (6, 512, 0), (12, 256, 0), (3, 1024, 1)]  # last: attune's per-example kernel


def child(rows: int, width: int, segment: int, kernel: int) -> None:
    import torch
    from peft import LoraConfig, get_peft_model

    from attune.models import load_model
    from attune.train.logprobs import lm_loss_sum

    model = get_peft_model(load_model("builtin:smollm2-135m-instruct", device="cpu").model,
                           LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"))
    ids = torch.randint(3, 40000, (rows, width), generator=torch.Generator().manual_seed(0))
    positions = torch.arange(width).remainder(segment).repeat(rows, 1)
    from contextlib import nullcontext

    from attune.train.attention import packed_attention

    start = time.perf_counter()
    with packed_attention(model) if kernel else nullcontext():
        for _ in range(2):
            total, n = lm_loss_sum(model, ids, ids, position_ids=positions)
            (total / n).backward()
    seconds = (time.perf_counter() - start) / 2
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    how = "per-example causal kernel" if kernel else "SDPA + block-diagonal mask" if width > segment else "plain causal"
    print(f"{rows:2d} rows x {width:4d} (examples of {segment}), {how:26s}: {rows * width / seconds:6.1f} tok/s  peak RSS {rss:6.0f} MB")


def main() -> None:
    if len(sys.argv) == 5:
        child(*map(int, sys.argv[1:]))
        return
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for rows, width, kernel in SHAPES:
        args = [sys.executable, __file__, str(rows), str(width), "256", str(kernel)]
        out = subprocess.run(args, env=env, capture_output=True, text=True)
        print(out.stdout.strip().splitlines()[-1] if out.returncode == 0 else out.stderr[-2000:])


if __name__ == "__main__":
    main()
