"""Teacher generations cached to JSONL, so a distillation run never asks the teacher twice.

Each line is `{"key", "teacher", "prompt", "params", "response"}`; the key is a SHA-256 of the
(teacher, prompt, generation params) triple, so changing any of them regenerates only what
changed. The file is append-only: an interrupted run keeps every response it already paid for.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

from attune.errors import AttuneError
from attune.models.generation import GenerationParams, Generator, Prompt

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".json")


def teacher_identity(reference: str) -> str:
    """What the cache keys a teacher by: a local model directory by its content, anything else by name.

    A stage teacher lives under a timestamped run dir, so its path changes every run even when its
    weights do not; hashing its weight and config files lets a rerun of the same recipe reuse the
    answers (and a retrained teacher with other weights regenerates them).
    """
    path = Path(reference)
    if not path.is_dir():
        return reference
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES):
        digest.update(str(file.relative_to(path)).encode())
        with open(file, "rb") as fh:
            while block := fh.read(1 << 24):
                digest.update(block)
    return f"dir-sha256:{digest.hexdigest()}"


def cache_key(teacher: str, prompt: Prompt, params: GenerationParams) -> str:
    """Stable hash of (teacher, prompt, params); JSON with sorted keys makes it order-independent."""
    blob = json.dumps({"teacher": teacher, "prompt": prompt, "params": asdict(params)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _read(path: Path) -> dict[str, str]:
    cached: dict[str, str] = {}
    if not path.is_file():
        return cached
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                cached[row["key"]] = row["response"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise AttuneError(f"{path}:{n}: not a teacher-cache line ({exc}); delete the file to regenerate") from exc
    return cached


def teacher_responses(
    generator: Generator | Callable[[], Generator],
    teacher: str,
    prompts: Sequence[Prompt],
    params: GenerationParams,
    cache_path: Path,
    batch_size: int = 16,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[list[str], int]:
    """Responses for `prompts`, generating only those missing from the cache.

    `generator` may be a zero-argument factory so the teacher is not even loaded when every
    response is cached. Returns (responses in prompt order, number of prompts sent to the teacher).
    """
    cached = _read(cache_path)
    keys = [cache_key(teacher, p, params) for p in prompts]
    missing = list(dict.fromkeys(k for k in keys if k not in cached))
    if missing:
        gen = generator() if callable(generator) and not hasattr(generator, "generate") else generator
        by_key = {k: p for k, p in zip(keys, prompts)}
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        with open(cache_path, "a", encoding="utf-8") as fh:
            for start in range(0, len(missing), batch_size):
                chunk = missing[start : start + batch_size]
                outs = gen.generate([by_key[k] for k in chunk], params)  # type: ignore[union-attr]
                for k, out in zip(chunk, outs):
                    cached[k] = out
                    row = {"key": k, "teacher": teacher, "prompt": by_key[k], "params": asdict(params), "response": out}
                    fh.write(json.dumps(row) + "\n")
                fh.flush()
                if on_batch:
                    on_batch(len(chunk))
    return [cached[k] for k in keys], len(missing)
