"""The harness the training benchmarks share: peers in their own processes, under a time budget,
medians, and the ratio against the *fastest* peer measured in the same invocation.

A peer runs at its real defaults and at its best configurations on the machine at hand; a
configuration that cannot finish one optimizer step within the hard limit (e.g. bf16 autocast on
a CPU without bf16 units) is reported as such and not repeated, so it cannot be "the fastest".
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Measurement:
    """One child run: tokens counted over the completed steps and the time of those steps."""

    mode: str
    tokens: int = 0
    seconds: float = 0.0
    steps: int = 0
    peak_rss_mb: float = 0.0
    note: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def tok_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


def cpu_model() -> str:
    """`lscpu`'s "Model name": every benchmark line says which CPU it ran on."""
    from attune.train.precision import cpu_model as attune_cpu_model

    return attune_cpu_model()


def matmul_peak_gflops(dtype: str = "fp32", n: int = 2048, seconds: float = 2.0) -> float:
    """Dense matmul throughput of this machine in `dtype` (the MFU denominator for that precision)."""
    import torch

    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    a, b = torch.randn(n, n, dtype=torch_dtype), torch.randn(n, n, dtype=torch_dtype)
    a @ b
    reps, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds or reps == 0:
        a @ b
        reps += 1
    return 2 * n**3 * reps / elapsed / 1e9


def report_child(result: dict) -> None:
    """Print a child's result on one `RESULT` line, with its own peak RSS."""
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result), flush=True)


def run_child(script: Path, mode: str, args: list[str], limit_s: float) -> Measurement:
    """Run `script --child MODE ARGS` in a fresh process; a run past `limit_s` is killed and says so."""
    try:
        proc = subprocess.run([sys.executable, str(script), "--child", mode, *args], capture_output=True, text=True,
                              timeout=limit_s)
    except subprocess.TimeoutExpired:
        return Measurement(mode, note=f"killed after {limit_s:.0f} s without finishing")
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        print(proc.stdout[-2000:], proc.stderr[-4000:])
        raise SystemExit(f"{mode} failed (exit {proc.returncode})")
    r = json.loads(line[7:])
    m = Measurement(mode, r.pop("tokens"), r.pop("seconds"), r.pop("steps"), r.pop("peak_rss_mb"), extra=r)
    if not m.steps:
        m.note = "no optimizer step finished within the time budget"
    return m


def measure(script: Path, modes: list[str], args: list[str], runs: int, limit_s: float) -> dict[str, list[Measurement]]:
    """`runs` rounds over `modes`, interleaved so machine noise hits every system alike."""
    results: dict[str, list[Measurement]] = {m: [] for m in modes}
    skipped: set[str] = set()
    for rep in range(runs):
        for mode in modes:
            if mode in skipped:
                continue
            m = run_child(script, mode, args, limit_s)
            results[mode].append(m)
            if m.note:
                skipped.add(mode)
                print(f"run {rep + 1} {mode:18s} {m.note}; not repeated", flush=True)
                continue
            print(f"run {rep + 1} {mode:18s} {m.tok_s:8.1f} tok/s  {m.tokens:7d} tokens in {m.steps:3d} steps, "
                  f"{m.seconds:7.1f} s  peak RSS {m.peak_rss_mb:7.0f} MB", flush=True)
    return results


def summarize(results: dict[str, list[Measurement]], unit: str, peer_label: str) -> dict[str, float]:
    """Print the median table and `attune vs fastest <peer_label> (<config>): N.NNx`; return the medians."""
    med: dict[str, float] = {}
    print(f"\nCPU: {cpu_model()}; medians of {max(len(v) for v in results.values())} runs")
    print(f"{'system':18s} {unit:>12s} {'peak RSS MB':>12s}  note")
    for mode, rs in results.items():
        done = [r for r in rs if not r.note]
        if not done:
            print(f"{mode:18s} {'-':>12s} {'-':>12s}  {rs[0].note if rs else 'not run'}")
            continue
        med[mode] = statistics.median(r.tok_s for r in done)
        print(f"{mode:18s} {med[mode]:12.1f} {statistics.median(r.peak_rss_mb for r in done):12.0f}")
    peers = {m: v for m, v in med.items() if m != "attune"}
    if "attune" in med:
        for mode, value in peers.items():
            print(f"attune vs {mode}: {med['attune'] / value:.2f}x")
        if peers:
            fastest = max(peers, key=peers.get)
            print(f"attune vs fastest {peer_label} ({fastest}): {med['attune'] / peers[fastest]:.2f}x")
    return med
