"""Serving throughput: `attune serve` (continuous batching) vs a plain one-request-at-a-time transformers loop.

    flock /tmp/attune-heavy.lock python benchmarks/serve.py --repeats 3

Same model (builtin SmolLM2-135M-Instruct, fp32), same prompts (chat requests asking for long
answers), greedy decoding, the same max_tokens. Tokens counted are the completion tokens each
side really generated (the engine's greedy output equals `generate`'s, so both write the same).

- attune: `python -m attune serve` in a subprocess with 4 LoRA adapters (r=8 on q/k/v/o, made
  here with PEFT's default init, so their compute runs but B=0 keeps the text equal to the
  base's); N closed-loop clients (httpx, asyncio) on 127.0.0.1, each sending its next request
  when its previous one returns.
- baseline: `model.generate` on one request at a time (the same LoRA on the model, so both
  sides pay for one adapter). Its service time per request is measured; its latency at
  concurrency N is that of a FIFO server handling N closed-loop clients one at a time,
  computed from those measured service times (it cannot overlap requests).
- mixed: at the highest concurrency, requests cycle over 4 adapters vs all on one adapter.
- llama.cpp: `llama-server` built from source in this environment (benchmarks/llamacpp.py; the
  build time is printed, a cached build is reused) with 16 parallel slots (continuous batching),
  serving the same model as the GGUF attune's exporter writes (`--gguf-dtype`, f32 by default:
  the precision attune serves in on CPU), the same chat requests and clients. Skipped, with the
  reason printed, where it cannot be built (`--no-llamacpp` skips it on purpose).

Each configuration runs `--repeats` times; the table shows the median of each column.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import llamacpp  # noqa: E402

MODEL = "builtin:smollm2-135m-instruct"
TOPICS = ["the history of the printing press", "how bridges carry load", "why the sky is blue", "the water cycle",
          "how vaccines train the immune system", "the rules of chess", "how a CPU executes instructions", "volcanoes"]


def messages(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Write a long, detailed essay about {TOPICS[i % len(TOPICS)]}."}]


def make_adapters(root: Path, n: int) -> list[Path]:
    """n LoRA adapters (identical weights, distinct names: the server still runs each one's modules)."""
    import shutil

    from peft import LoraConfig, get_peft_model

    from attune.models import load_model
    from attune.models.adapters_io import write_fingerprint

    base = load_model(MODEL).model
    peft = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    peft.save_pretrained(str(root / "ad0"))
    write_fingerprint(root / "ad0", base)
    for i in range(1, n):
        shutil.copytree(root / "ad0", root / f"ad{i}")
    return [root / f"ad{i}" for i in range(n)]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summarize(latencies: list[float], tokens: int, wall: float) -> dict[str, float]:
    return {"req_s": len(latencies) / wall, "tok_s": tokens / wall, "p50": percentile(latencies, 0.5),
            "p95": percentile(latencies, 0.95)}


# ---- attune serve ----
def start_server(adapters: list[Path], port: int, max_tokens: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "attune", "serve", "-m", MODEL, "--port", str(port), "--max-batch", "16",
           "--max-queue", "256", "--max-output-tokens", str(max_tokens)]
    for i, path in enumerate(adapters):
        cmd += ["-a", f"ad{i}={path}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    import httpx

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"attune serve exited: {proc.stderr.read()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.terminate()
    raise SystemExit("attune serve did not start in 300 s")


async def run_clients(port: int, concurrency: int, n: int, models: list[str], max_tokens: int) -> tuple[dict, list[str]]:
    import httpx

    latencies: list[float] = []
    outputs: dict[int, str] = {}
    tokens = 0
    next_i = 0

    async def worker(http: httpx.AsyncClient) -> None:
        nonlocal tokens, next_i
        while next_i < n:
            i = next_i
            next_i += 1
            body = {"model": models[i % len(models)], "messages": messages(i), "max_tokens": max_tokens, "temperature": 0}
            t0 = time.perf_counter()
            r = await http.post("/v1/chat/completions", json=body)
            latencies.append(time.perf_counter() - t0)
            r.raise_for_status()
            data = r.json()
            tokens += data["usage"]["completion_tokens"]
            outputs[i] = data["choices"][0]["message"]["content"]

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=600) as http:
        t0 = time.perf_counter()
        await asyncio.gather(*[worker(http) for _ in range(concurrency)])
        wall = time.perf_counter() - t0
    return summarize(latencies, tokens, wall), [outputs[i] for i in range(n)]


# ---- baseline ----
def load_baseline(adapter: Path):
    """The same model with the same adapter, for the one-at-a-time `generate` loop."""
    from attune.models import load_model
    from attune.models.adapters_io import load_adapter

    loaded = load_model(MODEL)
    return load_adapter(loaded.model, adapter).eval(), loaded.tokenizer


def baseline_service_times(model, tok, n_prompts: int, max_tokens: int) -> tuple[list[float], list[int], list[str]]:
    import torch

    times, counts, texts = [], [], []
    for step, i in enumerate([0, *range(n_prompts)]):  # the first is a warm-up; then prompt i is request i's
        text = tok.apply_chat_template(messages(i), tokenize=False, add_generation_prompt=True)
        enc = tok(text, return_tensors="pt", add_special_tokens=False)
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=max_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
        elapsed = time.perf_counter() - t0
        new = out[0, enc["input_ids"].shape[1]:]
        if step:
            times.append(elapsed)
            counts.append(len(new))  # batch of one: no padding; an EOS counts, as in the server's usage
            texts.append(tok.decode(new, skip_special_tokens=True))
    return times, counts, texts


def fifo(service: list[float], counts: list[int], concurrency: int, n: int) -> dict[str, float]:
    """Latency and throughput of a one-at-a-time server under `concurrency` closed-loop clients."""
    submit = [0.0] * min(concurrency, n)
    done, latencies, clock, tokens = [], [], 0.0, 0
    for j in range(n):
        s = service[j % len(service)]
        arrival = submit[j] if j < len(submit) else done[j - concurrency]
        clock = max(clock, arrival) + s
        done.append(clock)
        latencies.append(clock - arrival)
        tokens += counts[j % len(counts)]
    return summarize(latencies, tokens, clock)


def main() -> None:
    global MODEL
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--concurrency", default="1,4,16")
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--requests", type=int, default=2, help="requests per client at each concurrency (at least 8 in all)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--model", default="builtin:smollm2-135m-instruct", help="model reference (a tiny local dir checks the script quickly)")
    ap.add_argument("--llamacpp", action=argparse.BooleanOptionalAction, default=True, help="also measure llama.cpp's llama-server")
    ap.add_argument("--gguf-dtype", choices=["f32", "f16"], default="f32", help="precision of the GGUF llama.cpp serves")
    args = ap.parse_args()
    MODEL = args.model
    levels = [int(c) for c in args.concurrency.split(",")]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # so `finally` stops the server subprocess under `timeout`
    os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    import torch

    print(f"torch threads: {torch.get_num_threads()}, cores: {os.cpu_count()}, max_tokens {args.max_tokens}, "
          f"repeats {args.repeats} (medians shown)", flush=True)
    n_of = {c: max(8, args.requests * c) for c in levels}
    rows: dict[str, list[dict]] = {}
    same = 0
    with tempfile.TemporaryDirectory() as tmp:
        adapters = make_adapters(Path(tmp), 4)
        baseline = load_baseline(adapters[0])
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        proc = start_server(adapters, port, args.max_tokens)
        try:
            asyncio.run(run_clients(port, 1, 2, ["ad0"], args.max_tokens))  # warm-up
            for rep in range(1, args.repeats + 1):  # a table after every repeat: a cut-short run still reports
                texts_of = {}
                for c in levels:
                    stats, texts_of[c] = asyncio.run(run_clients(port, c, n_of[c], ["ad0"], args.max_tokens))
                    rows.setdefault(f"attune c={c}", []).append(stats)
                    print(f"attune c={c}: {stats}", flush=True)
                top = max(levels)
                stats, _ = asyncio.run(run_clients(port, top, n_of[top], ["ad0", "ad1", "ad2", "ad3"], args.max_tokens))
                rows.setdefault(f"attune c={top} 4 adapters", []).append(stats)
                print(f"attune c={top} 4 adapters: {stats}", flush=True)
                service, counts, base_texts = baseline_service_times(*baseline, len(TOPICS), args.max_tokens)
                print(f"baseline: {statistics.median(service):.2f} s per request, {sum(counts)} tokens", flush=True)
                for c in levels:
                    rows.setdefault(f"baseline c={c}", []).append(fifo(service, counts, c, n_of[c]))
                    same += sum(t == base_texts[i % len(TOPICS)] for i, t in enumerate(texts_of[c]))
                if rep < args.repeats:
                    table(rows, levels, n_of, same, rep * sum(n_of.values()), rep)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
        if args.llamacpp:
            measure_llamacpp(rows, levels, n_of, args)
        table(rows, levels, n_of, same, args.repeats * sum(n_of.values()), args.repeats)


def measure_llamacpp(rows: dict[str, list[dict]], levels: list[int], n_of: dict[int, int], args) -> None:
    """llama-server at every concurrency, `--repeats` times, into `rows` (or the reason it was skipped)."""
    try:
        exe, build_s = llamacpp.build_llama_server()
        print(f"llama-server: {exe} ({f'built in {build_s:.0f} s' if build_s else 'cached build'})", flush=True)
        gguf = llamacpp.export_gguf(MODEL, llamacpp.OUT / f"{MODEL.replace(':', '_').replace('/', '_')}-{args.gguf_dtype}.gguf",
                                    args.gguf_dtype)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = llamacpp.start_llama_server(exe, gguf, port, slots=max(levels), ctx_per_slot=512 + args.max_tokens)
    except llamacpp.Unavailable as err:
        print(f"llama.cpp row skipped: {err}", flush=True)
        return
    try:
        asyncio.run(run_clients(port, 1, 2, ["model"], args.max_tokens))  # warm-up
        for _ in range(args.repeats):
            for c in levels:
                stats, _texts = asyncio.run(run_clients(port, c, n_of[c], ["model"], args.max_tokens))
                rows.setdefault(f"llama.cpp c={c}", []).append(stats)
                print(f"llama.cpp c={c}: {stats}", flush=True)
    finally:
        server.terminate()
        server.wait(timeout=60)


def table(rows: dict[str, list[dict]], levels: list[int], n_of: dict[int, int], same: int, total: int, reps: int) -> None:
    med = {k: {m: statistics.median(r[m] for r in v) for m in v[0]} for k, v in rows.items()}
    top = max(levels)
    print(f"\nmedians of {reps} run(s)")
    print("| run | requests | req/s | tokens/s | p50 latency s | p95 latency s | tokens/s vs baseline |")
    print("|---|---|---|---|---|---|---|")

    def row(label: str, m: dict, n: int, base: dict) -> None:
        print(f"| {label} | {n} | {m['req_s']:.2f} | {m['tok_s']:.1f} | {m['p50']:.2f} | {m['p95']:.2f} | "
              f"{m['tok_s'] / base['tok_s']:.2f}x |")

    for c in levels:
        for key in (f"baseline c={c}", f"llama.cpp c={c}", f"attune c={c}"):
            if key in med:
                row(key, med[key], n_of[c], med[f"baseline c={c}"])
    mixed, single = med[f"attune c={top} 4 adapters"], med[f"attune c={top}"]
    row(f"attune c={top}, 4 adapters mixed", mixed, n_of[top], med[f"baseline c={top}"])
    print(f"mixed 4 adapters / single adapter tokens/s at c={top}: {mixed['tok_s'] / single['tok_s']:.2f}")
    print(f"attune outputs identical to the baseline's generate: {same}/{total}", flush=True)
    if f"llama.cpp c={top}" in med:
        print(f"attune vs llama.cpp at {top} clients: {single['tok_s'] / med[f'llama.cpp c={top}']['tok_s']:.2f}x")
    print(f"attune tok/s at {min(levels)} / {top} clients: {med[f'attune c={min(levels)}']['tok_s']:.1f} / {single['tok_s']:.1f}",
          flush=True)


if __name__ == "__main__":
    main()
