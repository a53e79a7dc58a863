"""Per-field accuracy and confusion matrices for JSON answers (which field of a triage answer is wrong?).

A field is categorical when the references give it text, booleans or integers with at most
`MAX_CATEGORIES` distinct values, and values repeat (at most one distinct value per two
examples): a category, a priority, a product. Free-text fields get no matrix. A prediction
that is not a JSON object counts as "(not JSON)" for every field, a missing key as "(missing)".
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

from attune.evaluate.metrics import json_value

MAX_CATEGORIES = 12
NOT_JSON = "(not JSON)"
MISSING = "(missing)"


@dataclass
class FieldBreakdown:
    """One JSON field: accuracy over the examples whose reference has it, and reference x prediction counts."""

    field: str
    accuracy: float
    n: int
    labels: list[str]  # reference values (rows of the matrix)
    predicted: list[str]  # predicted values (columns): the labels first, then anything else predicted
    matrix: list[list[int]]

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def _label(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def field_breakdown(rows: list[dict[str, Any]]) -> list[FieldBreakdown]:
    """Per categorical field of the references' JSON objects (empty when references are not all objects)."""
    refs = [json_value(str(r.get("reference", ""))) for r in rows]
    if not refs or not all(isinstance(ref, dict) for ref in refs):
        return []
    preds = [json_value(str(r.get("prediction", ""))) for r in rows]
    out = []
    for field in dict.fromkeys(k for ref in refs for k in ref):
        values = [ref[field] for ref in refs if field in ref]
        distinct = len(set(map(_label, values)))
        if any(isinstance(v, (dict, list, float)) or v is None for v in values) or distinct > min(MAX_CATEGORIES, max(2, len(values) // 2)):
            continue
        pairs: Counter[tuple[str, str]] = Counter()
        right = 0
        for ref, pred in zip(refs, preds):
            if field not in ref:
                continue
            got = NOT_JSON if not isinstance(pred, dict) else _label(pred[field]) if field in pred else MISSING
            pairs[(_label(ref[field]), got)] += 1
            right += isinstance(pred, dict) and pred.get(field) == ref[field]
        labels = sorted({r for r, _ in pairs})
        predicted = labels + sorted({p for _, p in pairs} - set(labels))
        matrix = [[pairs[(r, p)] for p in predicted] for r in labels]
        out.append(FieldBreakdown(field, right / len(values), len(values), labels, predicted, matrix))
    return out
