"""`DataSource`: one dataset as a recipe (or `attune data`) names it; the data layer's input."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from attune.config import StrictModel

DataFormat = Literal["auto", "chat", "instruction", "completion", "text", "preference", "prompt"]


class DataSource(StrictModel):
    """One dataset: a file, a folder of text files, or a `builtin:NAME`."""

    path: str
    format: DataFormat = Field("auto", description="auto-detected from the first records when 'auto'")
    weight: float = Field(1.0, gt=0, description="sampling weight when a stage mixes several datasets")
    name: str | None = Field(None, description="task name for per-task reporting (default: file stem)")
    text_field: str = Field("text", description="field holding raw text in JSONL/CSV (text format)")
    text_split: Literal["file", "blank-line"] = Field(
        "file", description="plain-text files: one document per file, or per blank-line-separated block"
    )
    limit: int | None = Field(None, gt=0, description="use only the first N records")
