"""Eval tasks: a small YAML file pointing at a JSONL file, validated before any model loads.

    name: tickets
    kind: generate                 # generate | choice | perplexity
    data: ../data/tickets-heldout.jsonl
    input: messages                # chat data: input = all turns but the last, reference = the last reply
    metrics: [exact_match, json_valid]
    max_new_tokens: 32

Field mapping: `input` (text or messages), `reference` (generate), `choices` + `label`
(choice: a list of options and the index or text of the right one), `text` (perplexity).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError

from attune.config import StrictModel
from attune.errors import AttuneError
from attune.evaluate.metrics import REFERENCE_CHECKS, get_metric
from attune.prompting.extraction import EXTRACTORS


class TaskSpec(StrictModel):
    name: str
    kind: Literal["generate", "choice", "perplexity"] = "generate"
    data: str = Field(description="JSONL file, relative to the task file (or builtin:NAME)")
    input: str = Field("input", description="field with the prompt text, or 'messages' for chat data")
    reference: str = Field("reference", description="field with the expected answer (generate)")
    choices: str = Field("choices", description="field with the list of options (choice)")
    label: str = Field("label", description="field with the right option: its index or its text (choice)")
    text: str = Field("text", description="field with raw text (perplexity)")
    metrics: list[str] = Field(default_factory=lambda: ["exact_match"])
    extract: str = Field("none", description="answer extraction: none | last_line | after_answer | regex | first_json")
    pattern: str | None = Field(None, description="regex for extract: regex / the regex metric")
    schema_: dict | None = Field(None, alias="schema", description="JSON schema for the json_schema metric")
    system: str | None = Field(None, description="system prompt added by the zero-shot strategy")
    template: str = Field("{input}", description="how a text input becomes the user message")
    max_new_tokens: int = Field(64, gt=0)
    limit: int | None = Field(None, gt=0, description="use only the first N examples")
    choice_prefix: str | None = Field(
        None, description="text between the context and each option (choice); default ' ', or '' after a chat template (as lm-eval)"
    )
    max_length: int = Field(1024, gt=1, description="perplexity: tokens per scoring window (longer texts roll over windows)")

    model_config = {**StrictModel.model_config, "populate_by_name": True}


class Task:
    """A validated task with its examples loaded."""

    def __init__(self, spec: TaskSpec, examples: list[dict[str, Any]], path: Path) -> None:
        self.spec = spec
        self.examples = examples
        self.path = path

    @property
    def name(self) -> str:
        return self.spec.name


def _read_jsonl(path: Path) -> list[tuple[int, dict]]:
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise AttuneError(f"{path}:{n}: malformed JSON ({exc.msg})") from exc
        rows.append((n, row))
    return rows


def _example(spec: TaskSpec, row: dict, where: str) -> dict[str, Any]:
    def need(field: str) -> Any:
        if field not in row:
            raise AttuneError(f"{where}: field {field!r} (mapped in task {spec.name!r}) is not in the data; fields: {sorted(row)}")
        return row[field]

    if spec.kind == "perplexity":
        return {"text": need(spec.text), "raw": row}
    value = need(spec.input)
    if spec.input == "messages":
        if not isinstance(value, list) or len(value) < 2 or value[-1].get("role") != "assistant":
            raise AttuneError(f"{where}: 'messages' must end with the assistant reply used as the reference")
        ex = {"input": value[:-1], "query": value[-2]["content"], "reference": value[-1]["content"], "raw": row}
    else:
        ex = {"input": str(value), "query": str(value), "raw": row}
        if spec.kind == "generate":
            ex["reference"] = str(need(spec.reference))
    if spec.kind == "choice":
        choices = need(spec.choices)
        label = need(spec.label)
        if not isinstance(choices, list) or len(choices) < 2:
            raise AttuneError(f"{where}: {spec.choices!r} must be a list of at least two options")
        index = label if isinstance(label, int) else choices.index(label) if label in choices else None
        if index is None or not 0 <= index < len(choices):
            raise AttuneError(f"{where}: label {label!r} is not an index into or an item of {spec.choices!r}")
        ex.update(choices=[str(c) for c in choices], label=index, reference=str(choices[index]))
    return ex


def load_task(path: str | Path) -> Task:
    """Read and validate a task file and its data; every problem is an AttuneError naming the file."""
    from attune.builtin import resolve_path

    file = resolve_path(str(path))
    if not file.is_file():
        raise AttuneError(f"{file}: task file not found")
    try:
        raw = yaml.safe_load(file.read_text())
    except yaml.YAMLError as exc:
        raise AttuneError(f"{file}: not valid YAML: {exc}") from exc
    try:
        spec = TaskSpec.model_validate(raw or {})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise AttuneError(f"{file}: invalid task: {problems}") from None
    for name in spec.metrics:
        get_metric(name)
    if spec.extract not in EXTRACTORS:
        raise AttuneError(f"{file}: unknown extract {spec.extract!r}; known: {', '.join(EXTRACTORS)}")
    data = resolve_path(spec.data, file.parent)
    if not data.is_file():
        raise AttuneError(f"{file}: data file {data} not found")
    rows = _read_jsonl(data)
    if not rows:
        raise AttuneError(f"{file}: task {spec.name!r} has no examples ({data} is empty)")
    examples = [_example(spec, row, f"{data}:{n}") for n, row in rows]
    for name in spec.metrics:
        if name in REFERENCE_CHECKS:
            for (n, _), ex in zip(rows, examples):
                try:
                    REFERENCE_CHECKS[name](ex["reference"])
                except AttuneError as exc:
                    raise AttuneError(f"{data}:{n}: {exc}") from None
    return Task(spec, examples[: spec.limit] if spec.limit else examples, file)
