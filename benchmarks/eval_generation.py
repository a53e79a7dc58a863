"""Evaluation generation speed: zero-shot on the builtin held-out tickets, by source tree and batch size.

    python benchmarks/eval_generation.py --src /path/to/main/src --src src --batch 8 --batch 16 --repeats 3

What `attune eval builtin:tickets` runs (builtin SmolLM2-135M-Instruct, fp32, zero-shot, greedy,
24 new tokens at most, 80 tickets), timed as the eval reports it: `TaskResult.seconds`, the
generation of all 80 answers (model load and scoring excluded). Each (source tree, batch size)
runs in a fresh process with `PYTHONPATH=<src>`, so one checkout's code can be measured against
another's (`HFGenerator` of that tree, its `batch_size`); the process loads the model once and
generates `--repeats` times. Printed: the median and all seconds, the scores, and how many of the
80 outputs equal the first configuration's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

CHILD = """
import json, sys
from attune.evaluate.runner import run_task
from attune.evaluate.tasks import load_task
from attune.models import load_generator
from attune.prompting import StrategyContext, build_strategy

batch, repeats = int(sys.argv[1]), int(sys.argv[2])
task = load_task("builtin:tickets")
generator = load_generator("builtin:smollm2-135m-instruct", batch_size=batch)
strategy = build_strategy("zero-shot", {}, StrategyContext(system=task.spec.system, template=task.spec.template))
seconds, result = [], None
for _ in range(repeats):
    result = run_task(generator, task, strategy)
    seconds.append(result.seconds)
print(json.dumps({"seconds": seconds, "scores": result.scores, "outputs": [r["output"] for r in result.rows]}))
"""


def measure(src: str, batch: int, repeats: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(Path(src).resolve())}
    out = subprocess.run([sys.executable, "-c", CHILD, str(batch), str(repeats)], env=env, check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", action="append", help="a source tree (the folder holding attune/); repeatable")
    parser.add_argument("--batch", action="append", type=int, help="HFGenerator batch_size; repeatable")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    srcs, batches = args.src or ["src"], args.batch or [16]
    print(f"load average before: {os.getloadavg()}", flush=True)
    first = None
    print("| source | batch | median s | runs s | exact_match | json_valid | json_fields | outputs equal to first |")
    print("|---|---|---|---|---|---|---|---|")
    for src in srcs:
        for batch in batches:
            r = measure(src, batch, args.repeats)
            first = first or r["outputs"]
            same = sum(a == b for a, b in zip(first, r["outputs"]))
            s = r["scores"]
            runs = " / ".join(f"{x:.1f}" for x in r["seconds"])
            print(f"| {src} | {batch} | {statistics.median(r['seconds']):.1f} | {runs} | {s['exact_match']:.4f} | "
                  f"{s['json_valid']:.4f} | {s['json_fields']:.4f} | {same}/{len(first)} |", flush=True)
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
