"""Answer extraction: pull the answer out of a generation before scoring it."""

from __future__ import annotations

import re
from typing import Callable

from attune.errors import AttuneError

EXTRACTORS: dict[str, Callable[[str, str | None], str]] = {
    "none": lambda text, _: text.strip(),
    "last_line": lambda text, _: (text.strip().splitlines() or [""])[-1].strip(),
    "after_answer": lambda text, _: re.split(r"(?i)answer\s*:", text)[-1].strip(),
    "regex": lambda text, pattern: (m.group(1) if (m := re.search(pattern or "(.*)", text, re.S)) and m.groups() else text).strip(),
    "first_json": lambda text, _: (m.group(0) if (m := re.search(r"\{.*\}", text, re.S)) else text).strip(),
}


def extract(text: str, how: str = "none", pattern: str | None = None) -> str:
    """Pull the answer out of a generation (regex / last line / after "Answer:" / first JSON object)."""
    if how not in EXTRACTORS:
        raise AttuneError(f"unknown answer extraction {how!r}; known: {', '.join(EXTRACTORS)}")
    return EXTRACTORS[how](text, pattern)
