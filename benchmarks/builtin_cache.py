"""First vs cached load of the builtin model (the GGUF is dequantized once into safetensors).

    python benchmarks/builtin_cache.py

Uses a fresh temporary cache dir, so the first load really dequantizes; each load runs in its
own process so nothing is shared in memory.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

CODE = "from attune.models import load_model; load_model('builtin:smollm2-135m-instruct')"


def timed(env: dict) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", CODE], env=env, check=True, capture_output=True)
    return time.perf_counter() - t


def main() -> None:
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "ATTUNE_CACHE": cache, "HF_HUB_OFFLINE": "1"}
        first = timed(env)
        cached = sorted(timed(env) for _ in range(3))[1]
    print(f"first load (dequantize + cache): {first:.1f} s")
    print(f"cached load (median of 3):        {cached:.1f} s")
    print(f"speed-up: {first / cached:.1f}x (process start + imports included in both)")


if __name__ == "__main__":
    main()
