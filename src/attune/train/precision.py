"""Training precision chosen by measuring the machine, not by guessing from its kind.

CPUs differ more than their labels say: on an AMD EPYC (AVX2) a bf16 matmul ran ~400x slower than
fp32, on an Intel Xeon with AMX it ran ~7x faster. `precision: auto` therefore times a bf16 and an
fp32 matmul and one small forward + backward under each, and uses bf16 autocast (fp32 master weights,
adapters kept in fp32) only where bf16 is clearly faster. The probe takes about a second, is cached
per machine (CPU model, torch version, threads) under attune's cache dir, and its numbers go into
the stage summary so a run says which precision it used and why.

GPUs take bf16 when the device supports it (every GPU that does runs it at least as fast as fp32).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

#: bf16 is chosen when its matmul and its training step are at least this much faster than fp32;
#: below that the rounding is not worth it.
MIN_MATMUL_SPEEDUP = 1.3
MIN_STEP_SPEEDUP = 1.1
_PROBE_SECONDS = 0.25  # per measurement; a single rep slower than `_SLOW_REP` ends it early
_SLOW_REP = 0.5


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision a stage trains in (`fp32` / `bf16` / `fp16`) and why."""

    precision: str
    reason: str
    probe: dict | None = None

    @property
    def mixed_precision(self) -> str:
        """Accelerate's name for it."""
        return {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[self.precision]

    def as_dict(self) -> dict:
        return asdict(self)


def choose_precision(requested: str, device: str) -> PrecisionChoice:
    """Resolve `precision:` for `device` ("cpu" or "cuda"); `auto` measures, an explicit value is kept.

    An explicit bf16/fp16 on a machine where the probe finds it slow is honoured with the measured
    ratio in the reason (the caller prints it), since the user may want it for reasons of their own.
    """
    if device.startswith("cuda"):
        import torch

        if requested == "auto":
            if torch.cuda.is_bf16_supported():
                return PrecisionChoice("bf16", "GPU with bf16 support")
            return PrecisionChoice("fp16", "GPU without bf16 support")
        return PrecisionChoice(requested, "asked for in the recipe")
    if requested == "fp16":
        return PrecisionChoice("fp32", "fp16 autocast is not supported on CPU; bf16 is the CPU half precision")
    if requested == "fp32":
        return PrecisionChoice("fp32", "asked for in the recipe")
    probe = cpu_probe()
    fast = probe["matmul_speedup"] >= MIN_MATMUL_SPEEDUP and probe["step_speedup"] >= MIN_STEP_SPEEDUP
    measured = (f"measured on {probe['cpu']}: bf16 matmul {probe['bf16_gflops']:.1f} vs fp32 {probe['fp32_gflops']:.1f} "
                f"GFLOP/s, training step {probe['step_speedup']:.2f}x")
    if requested == "bf16":
        return PrecisionChoice("bf16", f"asked for in the recipe ({measured})", probe)
    if fast:
        return PrecisionChoice("bf16", f"bf16 is faster here ({measured})", probe)
    return PrecisionChoice("fp32", f"bf16 is not faster here ({measured})", probe)


def cpu_model() -> str:
    """The CPU's marketing name (`lscpu`'s "Model name"), for cache keys and benchmark lines."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_probe(refresh: bool = False) -> dict:
    """bf16 vs fp32 speed on this CPU, measured once per (CPU, torch, threads) and cached."""
    import torch
    from filelock import FileLock

    from attune.models.builtin import cache_root

    key = f"{cpu_model()}|{torch.__version__}|{torch.get_num_threads()}"
    path = cache_root() / "machine" / f"precision-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    # every process of a multi-process run must decide alike: the first measures, the others read
    with FileLock(str(path) + ".lock"):
        if path.is_file() and not refresh:
            try:
                return json.loads(path.read_text())
            except (OSError, ValueError):
                pass
        result = {"cpu": cpu_model(), "torch": torch.__version__, "threads": torch.get_num_threads(), **_measure()}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=2))
        os.replace(tmp, path)
    return result


def _rate(fn, work: float) -> float:
    """`work` units per second of `fn`, repeated for ~_PROBE_SECONDS (one warm-up call first)."""
    start = time.perf_counter()
    fn()
    if time.perf_counter() - start > _SLOW_REP:
        start = time.perf_counter()
        fn()
        return work / (time.perf_counter() - start)
    reps, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < _PROBE_SECONDS:
        fn()
        reps += 1
    return work * reps / elapsed


def _measure() -> dict:
    import torch

    n = 512
    a32, b32 = torch.randn(n, n), torch.randn(n, n)
    a16, b16 = a32.bfloat16(), b32.bfloat16()
    flops = 2 * n**3 / 1e9
    fp32 = _rate(lambda: a32 @ b32, flops)
    bf16 = _rate(lambda: a16 @ b16, flops)

    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(512, 1536), torch.nn.SiLU(), torch.nn.Linear(1536, 512))
    x = torch.randn(256, 512)

    def step(autocast: bool) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = mlp(x).float().pow(2).mean()
        loss.backward()
        mlp.zero_grad(set_to_none=True)

    step_fp32 = _rate(lambda: step(False), 1.0)
    step_bf16 = _rate(lambda: step(True), 1.0)
    return {
        "fp32_gflops": round(fp32, 2),
        "bf16_gflops": round(bf16, 2),
        "matmul_speedup": round(bf16 / fp32, 3),
        "step_speedup": round(step_bf16 / step_fp32, 3),
    }
