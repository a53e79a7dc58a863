"""Few-shot example pools: solved examples from a task file or from training data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from attune.errors import AttuneError


def pool_from_path(path: str, base_dir: Path | None = None) -> list[dict[str, Any]]:
    """Examples {input, query, reference} from a task YAML or a chat/instruction/completion data file."""
    from attune.builtin import resolve_path

    file = resolve_path(path, base_dir)
    if file.suffix in (".yaml", ".yml"):
        from attune.evaluate.tasks import load_task

        return [ex for ex in load_task(file).examples if "reference" in ex]
    from attune.data import ChatRecord, CompletionRecord, load_records

    pool = []
    for record in load_records(file):
        if isinstance(record, ChatRecord) and record.messages[-1]["role"] == "assistant":
            turns = record.messages[:-1]
            pool.append({"input": turns, "query": turns[-1]["content"], "reference": record.messages[-1]["content"]})
        elif isinstance(record, CompletionRecord):
            pool.append({"input": record.prompt, "query": record.prompt, "reference": record.completion})
    if not pool:
        raise AttuneError(f"{file}: no solved examples to use as a few-shot pool")
    return pool
