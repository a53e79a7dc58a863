"""Did alignment work? Judge each stage of an alignment run on the held-out preference data.

    python benchmarks/align_outcome.py --run runs/align-dpo/latest [--rm runs/align-ppo/latest/stages/reward]

For the base model and each stage named (default: every sft/dpo/ppo/grpo stage of the run), on the
prompts of builtin:support-prefs-heldout (issues never seen in training):
  house_style    share of greedy replies that follow the data's rule (open with "Thanks for reaching
                 out", under 60 words: every chosen reply does, every rejected one does not)
  pref_accuracy  share of held-out pairs whose chosen reply the model finds likelier than the rejected
                 one, per token (reference-free, so base, SFT and DPO are comparable)
  rm_score       mean score of the greedy replies under a trained reward model (--rm)
  rm_win_rate    share of prompts where the reply outscores the first candidate's (ties count half)
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


def preference_accuracy(model, tokenizer, records) -> float:
    """Share of pairs with a higher mean per-token log-prob for chosen than for rejected."""
    import torch

    from attune.align.pairs import collate_pairs, per_document_sums, prepare_pairs
    from attune.train.logprobs import token_logprobs

    examples, _ = prepare_pairs(records, tokenizer, 512)
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
    parser.add_argument("--rm", type=Path, help="a reward stage dir to score replies with")
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
    if args.rm:
        from attune.align.reward_model import load_reward_model

        rm = load_reward_model(args.rm)
        scores = {label: rm.score(prompts, texts) for label, texts in replies.items()}
        first = results[1]["candidate"] if len(results) > 1 and results[0]["candidate"] == "base" else results[0]["candidate"]
        for row in results:
            mine, theirs = scores[row["candidate"]], scores[first]
            row["rm_score"] = sum(mine) / len(mine)
            row[f"rm_win_rate_vs_{first}"] = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(mine, theirs)) / len(mine)
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
