"""The user's situation: what they have (access, data, hardware, budget) and what they need.

Read from flags, interactive prompts or a YAML file; every field has a default, so a file
states only what it knows. Unknown keys fail with the nearest valid key suggested and the line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator

from attune.config import StrictModel
from attune.errors import AttuneError, did_you_mean, unknown

Goal = Literal["task", "format", "knowledge", "domain", "behaviour"]
GOALS: dict[str, str] = {
    "task": "a narrow task (classify, extract, route, answer in a fixed way)",
    "format": "an output format, tone or style",
    "knowledge": "answering from facts the model does not know (documents, products, policies)",
    "domain": "the language of a domain (medical, legal, code, a company's jargon)",
    "behaviour": "how it behaves: helpfulness, safety, preferred answers",
}


class Situation(StrictModel):
    """Everything the advisor weighs. Counts are totals the user has today."""

    goal: Goal = Field("task", description="what should change: " + "; ".join(f"{k} = {v}" for k, v in GOALS.items()))
    access: Literal["weights", "api"] = Field("weights", description="open weights, or API-only (prompting only)")
    model: str | None = Field(None, description="model reference (builtin:NAME, a local dir, a hub id, openai:M@URL)")
    model_size: str | None = Field(None, description="parameter count when the config cannot be read, e.g. 7b")
    student: str | None = Field(None, description="distillation: a smaller open model (reference or size); default ~1/10 of the model")
    labelled_examples: int = Field(0, ge=0, description="input -> desired output examples")
    tokens_per_example: int = Field(300, gt=0, description="average tokens of one example (prompt + answer)")
    unlabelled_tokens: int = Field(0, ge=0, description="tokens of domain documents / raw text")
    preference_pairs: int = Field(0, ge=0, description="(prompt, better answer, worse answer) rankings")
    prompts: int = Field(0, ge=0, description="inputs without answers (for online RL or distillation)")
    reward_function: bool = Field(False, description="a program can score answers (tests, a verifier, a checker)")
    hardware: str = Field("cpu", description="cpu, l4, rtx4090, a100-40gb, a100-80gb, h100, h200")
    gpu_count: int = Field(1, ge=1)
    gpu_memory_gb: float | None = Field(None, gt=0, description="override the profile's memory per device")
    budget_gpu_hours: float | None = Field(None, gt=0, description="training budget in device-hours")
    volatility: Literal["static", "yearly", "monthly", "weekly", "daily"] = Field(
        "static", description="how often the facts it must know change"
    )
    citations: bool = Field(False, description="answers must cite their sources")
    latency_ms: int | None = Field(None, gt=0, description="latency budget per query")
    queries_per_day: int | None = Field(None, gt=0)
    prompt_tokens: int = Field(200, gt=0, description="tokens of a bare query (instructions + input)")
    output_tokens: int = Field(100, gt=0, description="tokens of a typical answer")
    tasks: int = Field(1, ge=1, description="distinct tasks to serve")
    tenants: int = Field(1, ge=1, description="customers/teams needing their own specialisation")
    forgetting_tolerance: Literal["low", "medium", "high"] = Field(
        "medium", description="low: general skills must survive; high: only the narrow task matters"
    )
    seq_len: int = Field(1024, gt=8, description="training sequence length")
    batch_size: int = Field(1, gt=0, description="sequences per micro-batch")
    epochs: float = Field(3.0, gt=0, description="passes over labelled data")
    data: str | None = Field(
        None, description="your data file: examples, pairs or corpus tokens and tokens per example are counted from it "
        "(with the model's tokenizer), overriding the situation file's counts"
    )
    calibrate: Literal["cached", "fresh", "off"] = Field(
        "cached", description="hardware cpu: probe this machine (matmul, one prefill and decode step of the model) instead "
        "of the fixed profile: cached (measure once per machine), fresh (measure again now), off"
    )

    @field_validator("hardware")
    @classmethod
    def _hardware(cls, v: str) -> str:
        from attune.advise.hardware import PROFILES

        if v.lower() not in PROFILES:
            raise ValueError(str(unknown("hardware", v, PROFILES)))
        return v.lower()

    @field_validator("model_size")
    @classmethod
    def _size(cls, v: str | None) -> str | None:
        from attune.advise.shapes import parse_size

        if v is not None:
            try:
                parse_size(v)
            except AttuneError as exc:
                raise ValueError(str(exc)) from None
        return v

    @property
    def has_weights(self) -> bool:
        return self.access == "weights"


def parse_situation(data: dict[str, Any], source: str = "<situation>", root: yaml.Node | None = None) -> Situation:
    """Validate a mapping; every problem is reported as `source:line: field: message`."""
    from attune.recipe import _node_line

    try:
        return Situation.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            field = ".".join(str(p) for p in loc) or "(top level)"
            line = _node_line(root, loc) if root is not None else None
            if err["type"] == "extra_forbidden":
                msg = f"unknown key {field!r}" + did_you_mean(field, Situation.model_fields)
            else:
                msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"{source}:{line}: {field}: {msg}" if line else f"{source}: {field}: {msg}")
        raise AttuneError("invalid situation\n  " + "\n  ".join(lines)) from None


def load_situation(path: str | Path) -> Situation:
    """A situation YAML file (or `builtin:scenarios/NAME`)."""
    from attune.builtin import resolve_path

    file = resolve_path(str(path))
    if not file.is_file():
        raise AttuneError(f"{file}: situation file not found (builtin ones: builtin:scenarios/NAME)")
    text = file.read_text()
    try:
        root, data = yaml.compose(text), yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise AttuneError(f"{file}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise AttuneError(f"{file}: a situation is a YAML mapping (goal:, access:, labelled_examples: ...)")
    return parse_situation(data, str(file), root)
