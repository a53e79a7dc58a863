"""The base of every typed config: unknown keys are errors, with the nearest valid key suggested."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """A pydantic model that rejects unknown fields (typos must fail loudly, not silently)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
