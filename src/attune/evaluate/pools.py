"""Few-shot example pools: solved examples from a task file or from training data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from attune.errors import AttuneError


def pool_from_path(path: str, base_dir: Path | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    """Examples {input, query, reference} from a task YAML or a training data file (any format
    training reads, made into examples as a task makes them); `limit` keeps the first N records,
    as the training stage's `limit:` does, so shots come only from what training saw."""
    from attune.builtin import resolve_path
    from attune.evaluate.tasks import example_from_record, load_task

    file = resolve_path(path, base_dir)
    if file.suffix in (".yaml", ".yml"):
        examples = [ex for ex in load_task(file).examples if "reference" in ex]
        return examples[:limit] if limit else examples
    from attune.data import load_records

    pool = []
    for record in load_records(file, limit=limit):
        if record.kind == "text":
            continue
        try:
            example = example_from_record(record)
        except AttuneError:
            continue
        if "reference" in example:
            pool.append(example)
    if not pool:
        raise AttuneError(f"{file}: no solved examples to use as a few-shot pool")
    return pool
