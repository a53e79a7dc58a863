"""Did alignment work? Judge each stage of an alignment run on the held-out preference data.

    python benchmarks/align_outcome.py --run runs/align-dpo/latest [--judge-rm runs/other/latest/stages/reward]

For the base model and each stage named (default: every sft/dpo/ppo/grpo stage of the run), on the
prompts of builtin:support-prefs-heldout (issues never seen in training):
  house_style    share of greedy replies that follow the data's rule (open with "Thanks for reaching
                 out", under 60 words: every chosen reply does, every rejected one does not), with
                 its 95 % bootstrap interval and a paired bootstrap p-value against the first candidate
  pref_accuracy  share of held-out pairs whose chosen reply the model finds likelier than the rejected
                 one, per token (reference-free, so base, SFT and DPO are comparable)
  judge_score    mean score of the greedy replies under an independent reward model (--judge-rm)
  judge_win_rate share of prompts where the reply outscores the first candidate's (ties count half)

The judge must be independent of what was optimised. The rule-based house-style check is: no stage
trains against it (PPO maximises a learned reward model, DPO the pairs). A reward model is accepted
as a judge only if no judged stage optimised it and it was trained on none of the pairs the run's
own reward models saw; otherwise the script refuses (a policy scores well under the reward model it
maximised whether or not it improved: reward hacking, Gao et al. 2023, "Scaling Laws for Reward
Model Overoptimization").
Prints a table and writes benchmarks/out/align_outcome-<run name>.json. Run it under the heavy lock.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

HELDOUT = "builtin:support-prefs-heldout"
ALIGN_OBJECTIVES = ("sft", "dpo", "ppo", "grpo")


def candidates(run: Path, stages: list[str] | None, base: bool = True) -> list[tuple[str, str, str | None]]:
    """(label, base model, adapter dir) for the base model and each stage to judge."""
    import yaml

    from attune.runs import stage_output

    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    names = stages or [s["name"] for s in recipe["stages"] if s["objective"] in ALIGN_OBJECTIVES]
    out: list[tuple[str, str, str | None]] = [("base", recipe["model"], None)] if base else []
    for name in names:
        so = stage_output(run, name)
        out.append((name, so.summary["base_model"], str(so.adapter) if so.adapter else str(so.model)))
    return out


def _stage_dirs(run: Path, recipe: dict, objective: str) -> list[Path]:
    from attune.runs import stage_dir

    return [stage_dir(run, s["name"]).resolve() for s in recipe["stages"] if s["objective"] == objective]


def _pairs(stage: Path) -> set[tuple]:
    """The (prompt, chosen, rejected) pairs a reward stage trained on, read from its run's recipe."""
    import yaml

    from attune.data import load_records
    from attune.recipe import DataSource

    run = stage.parents[1]
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    spec = next(s for s in recipe["stages"] if s["name"] == stage.name)
    sources = spec["data"] if isinstance(spec["data"], list) else [spec["data"]]
    pairs = set()
    for src in sources:
        src = {"path": src} if isinstance(src, str) else src
        for r in load_records(DataSource(**src), base_dir=run):
            pairs.add((json.dumps(r.prompt), r.chosen, r.rejected))
    return pairs


def check_independent_judge(run: Path, judge: Path) -> None:
    """Refuse a judge reward model the run optimised, or one trained on pairs the run's reward models saw."""
    import yaml

    judge = judge.resolve()
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    own = _stage_dirs(run, recipe, "reward")
    if judge in own:
        raise SystemExit(f"--judge-rm {judge}: this is the run's own reward model, which its RL stages maximised; "
                         "judge with the house-style check or a reward model trained on other pairs")
    overlap = set().union(*(_pairs(d) for d in own)) & _pairs(judge) if own else set()
    if overlap:
        raise SystemExit(f"--judge-rm {judge}: trained on {len(overlap)} of the pairs the run's reward model saw; "
                         "an independent judge needs disjoint pairs")


def preference_accuracy(model, tokenizer, records) -> float:
    """Share of pairs with a higher mean per-token log-prob for chosen than for rejected."""
    import torch

    from attune.align.pairs import collate_pairs, per_document_sums, prepare_pairs
    from attune.train.context import ObjectiveContext
    from attune.train.logprobs import token_logprobs

    ctx = ObjectiveContext(tokenizer=tokenizer, options=None)
    examples = prepare_pairs(records, tokenizer, 512, ctx)
    right = 0
    for s in range(0, len(examples), 8):
        batch = collate_pairs([[ex] for ex in examples[s : s + 8]], tokenizer.pad_token_id, packing=False)
        with torch.no_grad():
            logp = token_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["labels"], batch["position_ids"])
        chosen, rejected, nc, nr = per_document_sums(logp, batch)
        right += int((chosen / nc > rejected / nr).sum())
    return right / len(examples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="an alignment run dir (runs/NAME/latest)")
    parser.add_argument("--stages", nargs="*", help="stages to judge (default: sft/dpo/ppo/grpo stages)")
    parser.add_argument("--judge-rm", type=Path, help="an independent reward stage dir to score replies with (checked: "
                        "not the run's own reward model, no pairs in common with it)")
    parser.add_argument("--no-base", action="store_true", help="skip the base model (e.g. judged already)")
    parser.add_argument("--limit", type=int, default=50, help="held-out prompts (50 in the builtin set)")
    parser.add_argument("--max-new-tokens", type=int, default=80)
    args = parser.parse_args()

    import torch

    from attune.align.rewards import follows_house_style
    from attune.data import load_records
    from attune.models import GenerationParams, load_generator
    from attune.recipe import DataSource

    torch.manual_seed(0)
    run = args.run.resolve()
    if args.judge_rm:
        check_independent_judge(run, args.judge_rm)
    records = load_records(DataSource(path=HELDOUT, limit=args.limit))
    prompts = [r.prompt for r in records]
    params = GenerationParams(max_new_tokens=args.max_new_tokens, temperature=0.0)
    results, replies = [], {}
    for label, base, adapter in candidates(run, args.stages, base=not args.no_base):
        is_dir = adapter is not None and not (Path(adapter) / "adapter_config.json").is_file()
        gen = load_generator(adapter if is_dir else base, None if is_dir else adapter, batch_size=10)
        texts = [t.strip() for t in gen.generate(prompts, params)]
        replies[label] = texts
        row = {
            "candidate": label,
            "house_style": sum(map(follows_house_style, texts)) / len(texts),
            "pref_accuracy": preference_accuracy(gen.model, gen.tokenizer, records),
            "mean_words": sum(len(t.split()) for t in texts) / len(texts),
            "example": texts[0][:160],
        }
        results.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
        del gen
    from attune.evaluate.stats import bootstrap_interval, paired_test

    first = results[0]["candidate"]
    styles = {label: [float(follows_house_style(t)) for t in texts] for label, texts in replies.items()}
    for row in results:
        row["house_style_ci"] = bootstrap_interval([styles[row["candidate"]]]).half_width
        row[f"house_style_p_vs_{first}"] = paired_test([styles[row["candidate"]]], [styles[first]]).p_value
    if args.judge_rm:
        from attune.align.reward_model import load_reward_model

        rm = load_reward_model(args.judge_rm)
        scores = {label: rm.score(prompts, texts) for label, texts in replies.items()}
        for row in results:
            mine, theirs = scores[row["candidate"]], scores[first]
            row["judge_score"] = sum(mine) / len(mine)
            row[f"judge_win_rate_vs_{first}"] = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(mine, theirs)) / len(mine)
    out = Path(__file__).parent / "out" / f"align_outcome-{run.parent.name}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"run": str(run), "heldout": HELDOUT, "prompts": len(prompts), "results": results,
                               "replies": replies}, indent=2))
    keys = [k for k in results[0] if k != "example"]
    print(" | ".join(keys))
    for row in results:
        print(" | ".join(f"{row[k]:.3f}" if isinstance(row[k], float) else str(row[k]) for k in keys))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
