"""Calibrate the cost model to the machine it runs on: a few-second probe, cached per machine.

A fixed CPU profile is wrong twice over: CPUs of the same kind differ by 3x (an AVX2 EPYC vs
an AMX Xeon, DESIGN.md), and a profile measured on a loaded machine is slow for a quiet one.
So for `hardware: cpu` (this machine) the advisor measures:

- **matmul**: fp32 (attune's CPU training dtype) 1024 x 1024 matmuls, best of a few: the peak;
- **prefill**: the fastest of three forward passes of the chosen model over `PREFILL_TOKENS`
  tokens: the FLOP/s a real forward of *this* model reaches (2N per token), whose share of the
  peak is the MFU the time estimate uses;
- **decode**: one next-token step with the KV cache: seconds per output token, i.e. the
  weight-reading bandwidth of decoding.

The model steps run only when the model's weights are a local directory (builtin models
included) and fit comfortably in memory; otherwise the probe keeps the matmul figure and the
profile's MFU. Results are cached per (host, CPU, threads, model) in attune's cache directory,
so only the first `attune advise` on a machine pays the few seconds.
"""

from __future__ import annotations

import hashlib
import json
import platform
import statistics
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from attune.advise.hardware import Hardware
from attune.train.precision import cpu_model

PREFILL_TOKENS = 128
PREFILL_REPEATS = 3
MATMUL_SIZE = 1024
PROBE_MAX_PARAMS = 2_000_000_000  # larger models are not loaded just to be timed on a CPU


@dataclass(frozen=True)
class Probe:
    """What the probe measured; model fields are None when the model was not loaded."""

    cpu: str
    threads: int
    matmul_gflops: float
    model: str | None = None
    prefill_tokens_per_s: float | None = None
    forward_gflops: float | None = None  # 2N x tokens / prefill seconds
    decode_s_per_token: float | None = None
    measured_at: str = ""


def matmul_gflops(size: int = MATMUL_SIZE, repeats: int = 5) -> float:
    """fp32 matmul throughput: the best of `repeats` timed (size x size) @ (size x size) products."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up: thread pool and caches
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * size**3 / min(times) / 1e9


def model_steps(model_ref: str, compute_params: int) -> tuple[float, float, float]:
    """(prefill tokens/s, forward GFLOP/s, decode seconds per token) of the best prefill and the median decode step."""
    import torch

    from attune.models.loading import load_model

    loaded = load_model(model_ref, device="cpu")
    model = loaded.model.eval()
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (1, PREFILL_TOKENS))
    with torch.no_grad():
        model(input_ids=ids[:, :8])  # warm-up
        prefills = []
        for _ in range(PREFILL_REPEATS):  # the best of a few: one pass is easily slowed by a neighbour on a shared machine
            t0 = time.perf_counter()
            out = model(input_ids=ids, use_cache=True)
            prefills.append(time.perf_counter() - t0)
        prefill = min(prefills)
        step = torch.randint(0, vocab, (1, 1))
        decode = []
        for _ in range(3):
            t0 = time.perf_counter()
            model(input_ids=step, cache=out.cache, use_cache=True)
            decode.append(time.perf_counter() - t0)
    return PREFILL_TOKENS / prefill, 2 * compute_params * PREFILL_TOKENS / prefill / 1e9, statistics.median(decode)


def _cache_file(model_ref: str | None) -> Path:
    import torch

    from attune.models.builtin import cache_root

    key = json.dumps([platform.node(), cpu_model(), torch.get_num_threads(), model_ref])
    return cache_root() / "advise" / f"probe-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"


def probe_machine(model_ref: str | None = None, compute_params: int | None = None, *, fresh: bool = False) -> Probe:
    """The cached probe of this machine (and model), measured now when there is none or `fresh`."""
    import torch

    file = _cache_file(model_ref)
    if file.is_file() and not fresh:
        return Probe(**json.loads(file.read_text()))
    probe = Probe(cpu_model(), torch.get_num_threads(), round(matmul_gflops(), 1),
                  measured_at=time.strftime("%Y-%m-%d %H:%M", time.gmtime()))
    if model_ref and compute_params and compute_params <= PROBE_MAX_PARAMS:
        try:
            tps, gflops, decode = model_steps(model_ref, compute_params)
            probe = replace(probe, model=model_ref, prefill_tokens_per_s=round(tps, 1), forward_gflops=round(gflops, 1),
                            decode_s_per_token=round(decode, 4))
        except (OSError, ValueError, RuntimeError) as exc:  # no local weights, an odd architecture: matmul only
            probe = replace(probe, model=f"{model_ref} (not probed: {type(exc).__name__})")
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(probe), indent=1))
    tmp.replace(file)
    return probe


def calibrated(hw: Hardware, probe: Probe, weight_bytes: float | None) -> Hardware:
    """The CPU profile with the probe's figures in place of the fixed ones."""
    peak = probe.matmul_gflops / 1e3
    changes: dict = {"peak_tflops": peak}
    what = [f"fp32 matmul {probe.matmul_gflops:,.0f} GFLOP/s"]
    if probe.forward_gflops:
        changes["mfu"] = min(1.0, probe.forward_gflops / probe.matmul_gflops)
        what.append(f"a {PREFILL_TOKENS}-token prefill of {probe.model} at {probe.forward_gflops:,.0f} GFLOP/s "
                    f"({changes['mfu']:.0%} of the peak, the MFU used)")
    if probe.decode_s_per_token and weight_bytes:
        changes["bandwidth_gbs"] = weight_bytes / probe.decode_s_per_token / 1e9
        what.append(f"one decode step {probe.decode_s_per_token * 1000:,.0f} ms")
    source = f"probed on this machine ({probe.cpu}, torch threads: {probe.threads}, {probe.measured_at} UTC): " + "; ".join(what)
    return replace(hw, **changes, source=source)
