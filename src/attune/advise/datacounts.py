"""Counts from the user's own data instead of default token counts: examples, tokens per example,
prompt and reply tokens, pairs, corpus tokens, measured with the model's tokenizer the way
training encodes them (`data.render`: chat template, reply + end-of-turn)."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from attune.recipe import DataSource, Recipe


def _tokenizer(model: str | None):
    from attune.models.loading import load_tokenizer

    return load_tokenizer(model or "builtin:smollm2-135m-instruct")


def counts_from_data(source: DataSource | str | Path, model: str | None, base_dir: Path | None = None) -> dict[str, Any]:
    """Situation fields measured on a data file (the `limit` of a recipe source respected)."""
    from attune.data import load_records
    from attune.data.render import IGNORE, encode_preference, encode_record

    records = load_records(source, base_dir=base_dir)
    tokenizer = _tokenizer(model)
    kinds = {r.kind for r in records}
    if kinds & {"chat", "completion"}:
        totals, replies = [], []
        for r in records:
            if r.kind not in ("chat", "completion"):
                continue
            enc = encode_record(tokenizer, r, max_length=1 << 20)
            totals.append(len(enc.input_ids))
            replies.append(sum(label != IGNORE for label in enc.labels))
        prompt = [t - o for t, o in zip(totals, replies)]
        return {"labelled_examples": len(totals), "tokens_per_example": round(statistics.mean(totals)),
                "prompt_tokens": max(1, round(statistics.mean(prompt))), "output_tokens": max(1, round(statistics.mean(replies)))}
    if "preference" in kinds:
        pairs = [encode_preference(tokenizer, r, max_length=1 << 20) for r in records if r.kind == "preference"]
        per = [len(p.prompt_ids) + (len(p.chosen_ids) + len(p.rejected_ids)) / 2 for p in pairs]
        return {"preference_pairs": len(pairs), "tokens_per_example": round(statistics.mean(per))}
    if "text" in kinds:
        return {"unlabelled_tokens": sum(len(tokenizer(r.text, add_special_tokens=False)["input_ids"]) for r in records)}
    return {}


def counts_from_recipe(recipe: Recipe) -> dict[str, Any]:
    """Counts from the stages an `--evidence` recipe trains: its sft data (limit respected), epochs and
    sequence length, its dpo pairs and its cpt corpus."""
    out: dict[str, Any] = {}
    for objective in ("cpt", "dpo", "sft"):  # sft last: its tokens_per_example wins
        stage = next((s for s in recipe.stages if s.objective == objective and s.sources), None)
        if stage is None:
            continue
        out.update(counts_from_data(stage.sources[0], recipe.model, recipe.base_dir))
        if objective == "sft":
            out.update(epochs=float(stage.train.epochs), seq_len=int(stage.train.max_length))
    return out
