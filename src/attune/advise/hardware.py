"""Hardware profiles: the few figures the cost model needs, each with where it comes from.

A profile says how much memory one device has, how fast it multiplies in the dtype attune
trains in there (fp32 on CPU, bf16 on GPUs; see `train/pipeline.py`), what share of that peak a
fine-tuning run reaches (MFU), how fast it reads weights while decoding, and what the process
costs before the model loads. GPU peaks are the vendors' dense (non-sparse) tensor-core
figures; the CPU figures were measured on this project's 2-core machine (DESIGN.md, "Facts
measured on this machine", and `docs/training.md`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

from attune.errors import unknown


@dataclass(frozen=True)
class Hardware:
    """One device type and how many of them the user has."""

    name: str
    kind: str  # "cpu" | "gpu"
    memory_gb: float  # per device
    peak_tflops: float  # dense matmul throughput in the training dtype
    mfu: float  # model-FLOPs utilisation a fine-tuning run reaches (share of peak)
    bandwidth_gbs: float  # memory bandwidth, bounds decoding speed (weights read once per token)
    runtime_gb: float  # memory held before any weights: the Python/torch process or the CUDA context
    source: str
    count: int = 1

    @property
    def dtype_bytes(self) -> int:
        """Bytes per value of weights and activations: attune trains fp32 on CPU, bf16 on GPUs."""
        return 4 if self.kind == "cpu" else 2

    @property
    def effective_flops(self) -> float:
        """FLOP/s one device sustains on training matmuls."""
        return self.peak_tflops * 1e12 * self.mfu


# MFU 0.35 for GPUs: large pretraining runs report 40-55 % (PaLM 46 %, Chowdhery et al. 2022;
# Megatron-LM 52 %, Narayanan et al. 2021); fine-tuning with short sequences and small batches
# sits lower. It is an assumption, stated in docs/advisor.md, not a measurement.
_GPU_MFU = 0.35

PROFILES: dict[str, Hardware] = {
    "cpu": Hardware(
        "cpu", "cpu", memory_gb=0.0, peak_tflops=0.13, mfu=0.31, bandwidth_gbs=3.1, runtime_gb=0.45,
        source="this machine: fp32 matmul 130 GFLOP/s, attune SFT at 31 % of it (docs/training.md); memory = the "
        "machine's RAM; runtime = peak RSS after importing torch, transformers, peft, accelerate and attune.train "
        "(0.44 GB measured); decode bandwidth = greedy decoding at 5.8 tok/s x 0.54 GB of weights "
        "(benchmarks/advise_memory.py, on a loaded machine)",
    ),
    "l4": Hardware("l4", "gpu", 24, 121, _GPU_MFU, 300, 0.5, "NVIDIA L4 datasheet: 121 TFLOPS bf16 dense, 300 GB/s"),
    "rtx4090": Hardware("rtx4090", "gpu", 24, 165, _GPU_MFU, 1008, 0.5, "NVIDIA Ada whitepaper: 165 TFLOPS bf16 dense, 1008 GB/s"),
    "a100-40gb": Hardware("a100-40gb", "gpu", 40, 312, _GPU_MFU, 1555, 0.5, "NVIDIA A100 datasheet: 312 TFLOPS bf16 dense"),
    "a100-80gb": Hardware("a100-80gb", "gpu", 80, 312, _GPU_MFU, 2039, 0.5, "NVIDIA A100 datasheet: 312 TFLOPS bf16 dense"),
    "h100": Hardware("h100", "gpu", 80, 989, _GPU_MFU, 3350, 0.5, "NVIDIA H100 SXM datasheet: 989 TFLOPS bf16 dense"),
    "h200": Hardware("h200", "gpu", 141, 989, _GPU_MFU, 4800, 0.5, "NVIDIA H200 SXM datasheet: 989 TFLOPS bf16 dense"),
}


def machine_memory_gb() -> float:
    """Total RAM of this machine (the CPU profile's memory)."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9


def get_hardware(name: str, count: int = 1, memory_gb: float | None = None) -> Hardware:
    """A profile by name, with the device count and an optional memory override."""
    key = name.lower()
    if key not in PROFILES:
        raise unknown("hardware", name, PROFILES)
    hw = PROFILES[key]
    if hw.kind == "cpu":
        hw = replace(hw, memory_gb=memory_gb or round(machine_memory_gb(), 1), count=1)
    elif memory_gb:
        hw = replace(hw, memory_gb=memory_gb)
    return replace(hw, count=max(1, count)) if hw.kind == "gpu" else hw
