"""Eval tasks: a small YAML file pointing at a JSONL file, validated before any model loads.

    name: tickets
    kind: generate                 # generate | choice | perplexity
    data: ../data/tickets-heldout.jsonl
    metrics: [exact_match, json_valid]
    max_new_tokens: 32

Data in any format training reads (chat `messages`, ShareGPT `conversations`, alpaca
instruction/input/output, prompt/completion, preference, prompt/answer) needs no mapping: the
format is detected by `data.formats` (the one implementation training uses) and the input is what
training conditions on, the reference what it learns (the last assistant reply, the completion,
the chosen reply, the answer). Other data maps fields: `input` (text), `reference` (generate),
`choices` + `label` (choice: a list of options and the index or text of the right one), `text`
(perplexity).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError

from attune.config import StrictModel
from attune.data.formats import convert, detect_format
from attune.data.readers import iter_rows
from attune.data.records import (
    ChatRecord,
    CompletionRecord,
    DataError,
    PreferenceRecord,
    Problem,
    PromptRecord,
    Record,
)
from attune.errors import AttuneError
from attune.evaluate.metrics import REFERENCE_CHECKS, get_metric
from attune.prompting.extraction import EXTRACTORS


class TaskSpec(StrictModel):
    name: str
    kind: Literal["generate", "choice", "perplexity"] = "generate"
    data: str = Field(description="JSONL file, relative to the task file (or builtin:NAME)")
    input: str | None = Field(
        None, description="field with the prompt text; unset: inferred from the data's format (chat, ShareGPT, alpaca, "
        "prompt/completion, preference, prompt/answer), else the field 'input'"
    )
    reference: str | None = Field(
        None, description="field with the expected answer (generate); unset: inferred as for input, else 'reference'"
    )
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
    answer: Literal["auto", "extractive", "generative"] = Field(
        "auto", description="rag strategy: generate the answer, quote the best retrieved sentence, or auto (by reader size)"
    )
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


CHAT_FIELDS = ("messages", "conversations")


def _last_user(turns: list[dict[str, str]]) -> str:
    users = [m["content"] for m in turns if m["role"] == "user"]
    return users[-1] if users else turns[-1]["content"]


def example_from_record(record: Record) -> dict[str, Any]:
    """The eval example training would make of a record: `input` is what training conditions on,
    `reference` what it learns (the last assistant reply, the completion, the chosen reply, the answer).

    `query` is the text a retriever or a few-shot selector looks at: the last user message.
    """
    if isinstance(record, ChatRecord):
        turns = record.messages[:-1]
        if record.messages[-1]["role"] != "assistant" or not turns:
            raise AttuneError(f"{record.source}: the conversation must end with an assistant reply (the reference) after at least one turn")
        return {"input": turns, "query": _last_user(turns), "reference": record.messages[-1]["content"]}
    if isinstance(record, CompletionRecord):
        return {"input": record.prompt, "query": record.prompt, "reference": record.completion}
    if isinstance(record, PreferenceRecord):
        return {"input": list(record.prompt), "query": _last_user(record.prompt), "reference": record.chosen}
    if isinstance(record, PromptRecord):
        ex: dict[str, Any] = {"input": list(record.prompt), "query": _last_user(record.prompt)}
        if record.answer is not None:
            ex["reference"] = record.answer
        return ex
    raise AttuneError(f"{record.source}: a {record.kind} record has no prompt to answer (score raw text with kind: perplexity)")


def _rows(path: Path) -> list[tuple[str, dict]]:
    """Every row of a data file the way training reads it (JSONL, JSON, CSV, Parquet); a text
    document becomes {"text": ...}. Unreadable rows are reported together."""
    rows, problems = [], []
    for source, row in iter_rows(path):
        if isinstance(row, Problem):
            problems.append(row)
        else:
            rows.append((source, row if isinstance(row, dict) else {"text": row}))
    if problems:
        raise DataError(problems)
    return rows


def _format_of(spec: TaskSpec, rows: list[tuple[str, dict]]) -> str | None:
    """The training format the task's rows are read in, or None when fields are mapped by name."""
    if spec.kind == "perplexity" or spec.reference is not None or spec.input not in (None, *CHAT_FIELDS):
        return None
    source, first = rows[0]
    try:
        fmt = detect_format(first, source=source)
    except DataError:
        if spec.input is not None:
            raise
        return None
    return None if fmt == "text" else fmt


def _mapped(spec: TaskSpec, row: dict, where: str) -> dict[str, Any]:
    def need(field: str) -> Any:
        if field not in row:
            raise AttuneError(f"{where}: field {field!r} (mapped in task {spec.name!r}) is not in the data; fields: {sorted(row)}")
        return row[field]

    if spec.kind == "perplexity":
        return {"text": need(spec.text), "raw": row}
    value = str(need(spec.input or "input"))
    ex = {"input": value, "query": value, "raw": row}
    if spec.kind == "generate":
        ex["reference"] = str(need(spec.reference or "reference"))
    return ex


def _add_choices(spec: TaskSpec, ex: dict[str, Any], row: dict, where: str) -> None:
    for field in (spec.choices, spec.label):
        if field not in row:
            raise AttuneError(f"{where}: field {field!r} (mapped in task {spec.name!r}) is not in the data; fields: {sorted(row)}")
    choices, label = row[spec.choices], row[spec.label]
    if not isinstance(choices, list) or len(choices) < 2:
        raise AttuneError(f"{where}: {spec.choices!r} must be a list of at least two options")
    index = label if isinstance(label, int) else choices.index(label) if label in choices else None
    if index is None or not 0 <= index < len(choices):
        raise AttuneError(f"{where}: label {label!r} is not an index into or an item of {spec.choices!r}")
    ex.update(choices=[str(c) for c in choices], label=index, reference=str(choices[index]))


def _examples(spec: TaskSpec, data: Path) -> list[dict[str, Any]]:
    rows = _rows(data)
    if not rows:
        return []
    fmt = _format_of(spec, rows)
    examples, problems, dropped = [], [], 0
    for source, row in rows:
        if fmt is None:
            ex = _mapped(spec, row, source)
        else:
            record, faults = convert(row, fmt, source)
            problems += [p for p in faults if not p.droppable]
            dropped += bool(faults) and all(p.droppable for p in faults)
            if record is None:
                continue
            ex = {**example_from_record(record), "raw": row}
            if spec.kind == "generate" and "reference" not in ex:
                raise AttuneError(f"{source}: no reference to score against: a {fmt} row needs an 'answer' (or map `reference:`)")
        if spec.kind == "choice":
            _add_choices(spec, ex, row, source)
        examples.append({**ex, "source": source})
    if problems:
        raise DataError(problems)
    if dropped:
        print(f"attune: {data}: dropped {dropped} record(s) training would drop too (empty reply, chosen == rejected)", file=sys.stderr)
    return examples


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
    examples = _examples(spec, data)
    if not examples:
        raise AttuneError(f"{file}: task {spec.name!r} has no examples ({data} is empty)")
    for name in spec.metrics:
        if name in REFERENCE_CHECKS:
            for ex in examples:
                try:
                    REFERENCE_CHECKS[name](ex["reference"])
                except AttuneError as exc:
                    raise AttuneError(f"{ex['source']}: {exc}") from None
    return Task(spec, examples[: spec.limit] if spec.limit else examples, file)
