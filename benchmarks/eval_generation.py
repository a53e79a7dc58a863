"""Evaluation generation speed: zero-shot on the builtin held-out tickets, by source tree and batch size.

    OMP_NUM_THREADS=1 python benchmarks/eval_generation.py --src /path/to/main/src --src src --batch 8 --batch 16 --repeats 3

What `attune eval builtin:tickets` runs (builtin SmolLM2-135M-Instruct, fp32, zero-shot, greedy,
24 new tokens at most, 80 tickets; `--task` picks another generate task), timed as the eval reports it: `TaskResult.seconds`, the
generation of all 80 answers (model load and scoring excluded). Each (source tree, batch size)
runs in a fresh process with `PYTHONPATH=<src>`, so one checkout's code can be measured against
another's (`HFGenerator` of that tree, its `batch_size`). The configurations run in turn, one
after the other, `--repeats` rounds (so a machine whose load drifts weighs on all of them alike).
Printed: the median and all seconds, the scores, and how many of the 80 outputs equal the first
configuration's (in every round). On a machine shared with other jobs, `OMP_NUM_THREADS=1` (the
children inherit it) keeps torch's threads from spinning against them (docs/evaluation.md).
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

task = load_task(sys.argv[2])
generator = load_generator("builtin:smollm2-135m-instruct", batch_size=int(sys.argv[1]))
strategy = build_strategy("zero-shot", {}, StrategyContext(system=task.spec.system, template=task.spec.template))
result = run_task(generator, task, strategy)
print(json.dumps({"seconds": result.seconds, "scores": result.metrics, "outputs": [r["output"] for r in result.rows]}))
"""


def measure(src: str, batch: int, task: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(Path(src).resolve())}
    out = subprocess.run([sys.executable, "-c", CHILD, str(batch), task], env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{src} batch {batch} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", action="append", help="a source tree (the folder holding attune/); repeatable")
    parser.add_argument("--batch", action="append", type=int, help="HFGenerator batch_size; repeatable")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--task", default="builtin:tickets", help="a generate task (builtin:instructions: replies of mixed length)")
    args = parser.parse_args()
    srcs, batches = args.src or ["src"], args.batch or [16]
    configs = [(src, batch) for src in srcs for batch in batches]
    runs: dict[tuple[str, int], list[dict]] = {c: [] for c in configs}
    for round_ in range(args.repeats):
        for src, batch in configs:
            r = measure(src, batch, args.task)
            runs[(src, batch)].append(r)
            print(f"round {round_ + 1}: {src} batch {batch}: {r['seconds']:.1f} s, load average {os.getloadavg()}",
                  flush=True)
    first = runs[configs[0]][0]["outputs"]
    names = list(runs[configs[0]][0]["scores"])
    print(f"{args.task}, {len(first)} examples")
    print(f"| source | batch | median s | runs s | {' | '.join(names)} | outputs equal to first |")
    print("|---|---|---|---|" + "---|" * len(names) + "---|")
    for config in configs:
        rs = runs[config]
        same = min(sum(a == b for a, b in zip(first, r["outputs"])) for r in rs)
        scores = {json.dumps(r["scores"], sort_keys=True) for r in rs}
        s = rs[0]["scores"] if len(scores) == 1 else {k: float("nan") for k in rs[0]["scores"]}  # nan: rounds differ
        seconds = [r["seconds"] for r in rs]
        print(f"| {config[0]} | {config[1]} | {statistics.median(seconds):.1f} | {' / '.join(f'{x:.1f}' for x in seconds)} | "
              + "".join(f"{s[n]:.4f} | " for n in names) + f"{same}/{len(first)} |")


if __name__ == "__main__":
    main()
