"""What packing's block-diagonal mask costs: one LoRA training step at several row shapes.

    python benchmarks/packed_attention.py

Each shape runs in its own process (fresh peak RSS) on the builtin SmolLM2-135M-Instruct with
LoRA r=16 all-linear: the same 3072 tokens as 3 rows x 1024 (packed, 4 examples per row), as
6 x 512 (packed, 2 per row) and as 12 x 256 (one example per row: plain causal attention).
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time

SHAPES = [(3, 1024), (6, 512), (12, 256)]


def child(rows: int, width: int, segment: int) -> None:
    import torch
    from peft import LoraConfig, get_peft_model

    from attune.models import load_model
    from attune.train.logprobs import lm_loss_sum

    model = get_peft_model(load_model("builtin:smollm2-135m-instruct", device="cpu").model,
                           LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"))
    ids = torch.randint(3, 40000, (rows, width), generator=torch.Generator().manual_seed(0))
    positions = torch.arange(width).remainder(segment).repeat(rows, 1)
    start = time.perf_counter()
    for _ in range(2):
        total, n = lm_loss_sum(model, ids, ids, position_ids=positions)
        (total / n).backward()
    seconds = (time.perf_counter() - start) / 2
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{rows:2d} rows x {width:4d} (examples of {segment}): {rows * width / seconds:6.1f} tok/s  peak RSS {rss:6.0f} MB")


def main() -> None:
    if len(sys.argv) == 4:
        child(*map(int, sys.argv[1:]))
        return
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for rows, width in SHAPES:
        out = subprocess.run([sys.executable, __file__, str(rows), str(width), "256"], env=env, capture_output=True, text=True)
        print(out.stdout.strip().splitlines()[-1] if out.returncode == 0 else out.stderr[-2000:])


if __name__ == "__main__":
    main()
