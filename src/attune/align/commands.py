"""`attune reward score`: score replies with a trained reward model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

app = typer.Typer(help="Reward models: score replies with a trained one.", no_args_is_help=True)
err = Console(stderr=True)


def replies_of(records: list) -> tuple[list, list[str], list[str], list[str]]:
    """(prompts as messages, replies, labels, sources) for every reply in the records.

    Preference records give two replies each (labels "chosen" / "rejected"); chat records their
    last assistant turn; completion records the completion as the answer to the prompt.
    """
    from attune.data import ChatRecord, CompletionRecord, PreferenceRecord
    from attune.errors import AttuneError

    prompts, replies, labels, sources = [], [], [], []
    for r in records:
        if isinstance(r, PreferenceRecord):
            prompts += [r.prompt, r.prompt]
            replies += [r.chosen, r.rejected]
            labels += ["chosen", "rejected"]
            sources += [r.source, r.source]
        elif isinstance(r, ChatRecord) and r.messages[-1]["role"] == "assistant":
            prompts.append(r.messages[:-1])
            replies.append(r.messages[-1]["content"])
            labels.append("reply")
            sources.append(r.source)
        elif isinstance(r, CompletionRecord):
            prompts.append([{"role": "user", "content": r.prompt}])
            replies.append(r.completion)
            labels.append("reply")
            sources.append(r.source)
        else:
            raise AttuneError(f"{r.source}: a {r.kind} record has no reply to score (use preference, chat or prompt/completion rows)")
    return prompts, replies, labels, sources


@app.command("score")
def score(
    file: str = typer.Argument(..., help="JSONL/CSV/Parquet of preference pairs, chats, or prompt/completion rows (or builtin:NAME)"),
    model: Path = typer.Option(..., "--model", "-m", help="a reward stage dir (runs/NAME/TIME/stages/reward)"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="write scores as JSONL here (default: stdout)"),
    limit: Optional[int] = typer.Option(None, "--limit", help="score only the first N records"),
) -> None:
    """Score every reply; for preference pairs also print how often chosen outscores rejected."""
    from attune.align.reward_model import load_reward_model
    from attune.data import load_records
    from attune.data.source import DataSource

    records = load_records(DataSource(path=file, limit=limit))
    prompts, replies, labels, sources = replies_of(records)
    rm = load_reward_model(model)
    scores = rm.score(prompts, replies)
    rows = [{"record": src, "reply": label, "score": round(s, 6)} for src, label, s in zip(sources, labels, scores)]
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if out:
        out.write_text(text)
    else:
        print(text, end="")
    pairs = [(scores[i], scores[i + 1]) for i in range(len(labels) - 1) if labels[i] == "chosen" and labels[i + 1] == "rejected"]
    summary = f"scored {len(scores)} replies, mean {sum(scores) / max(len(scores), 1):.4f}"
    if pairs:
        right = sum(c > r for c, r in pairs)
        summary += f"; chosen > rejected in {right}/{len(pairs)} pairs ({100 * right / len(pairs):.1f}%)"
    err.print(summary)
