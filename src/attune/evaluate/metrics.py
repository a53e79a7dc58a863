"""Eval metrics: one function each, `metric(prediction, reference, **options) -> float` in [0, 1].

Text is normalised the way SQuAD's evaluation does for exact_match and f1 (lower case, strip
punctuation and articles, collapse whitespace). BLEU is sacrebleu's sentence BLEU / 100.
"""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from typing import Any, Callable

from attune.errors import AttuneError, unknown

Metric = Callable[..., float]
METRICS: dict[str, Metric] = {}


def metric(fn: Metric) -> Metric:
    METRICS[fn.__name__] = fn
    return fn


def normalize(text: str) -> str:
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _json(text: str) -> Any:
    """Parse JSON, tolerating a ```json fence around it; raises ValueError when it is not JSON."""
    body = text.strip()
    fence = re.match(r"^```(?:json)?\s*(.*?)\s*```$", body, re.S)
    return json.loads(fence.group(1) if fence else body)


@metric
def exact_match(prediction: str, reference: str) -> float:
    """1 if equal after normalisation; JSON on both sides is compared as parsed values."""
    try:
        return float(_json(prediction) == _json(reference))
    except ValueError:
        return float(normalize(prediction) == normalize(reference))


@metric
def contains(prediction: str, reference: str) -> float:
    return float(normalize(reference) in normalize(prediction))


@metric
def regex(prediction: str, reference: str, pattern: str | None = None) -> float:
    """1 if `pattern` (default: the reference itself, as a regex) matches the prediction."""
    return float(re.search(pattern or reference, prediction) is not None)


@metric
def f1(prediction: str, reference: str) -> float:
    """Token-overlap F1 (SQuAD)."""
    p, r = normalize(prediction).split(), normalize(reference).split()
    if not p or not r:
        return float(p == r)
    return _f_measure(sum((Counter(p) & Counter(r)).values()), len(p), len(r))


def _f_measure(overlap: int, n_pred: int, n_ref: int) -> float:
    """Harmonic mean of precision (overlap / n_pred) and recall (overlap / n_ref)."""
    if overlap == 0:
        return 0.0
    precision, recall = overlap / n_pred, overlap / n_ref
    return 2 * precision * recall / (precision + recall)


@metric
def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure from the longest common subsequence of normalised tokens."""
    p, r = normalize(prediction).split(), normalize(reference).split()
    if not p or not r:
        return float(p == r)
    prev = [0] * (len(r) + 1)
    for a in p:
        cur = [0]
        for j, b in enumerate(r):
            cur.append(prev[j] + 1 if a == b else max(prev[j + 1], cur[j]))
        prev = cur
    return _f_measure(prev[-1], len(p), len(r))


@metric
def bleu(prediction: str, reference: str) -> float:
    import sacrebleu

    return sacrebleu.sentence_bleu(prediction, [reference]).score / 100.0


@metric
def json_valid(prediction: str, reference: str = "") -> float:
    try:
        _json(prediction)
        return 1.0
    except ValueError:
        return 0.0


@metric
def json_schema(prediction: str, reference: str = "", schema: dict | None = None) -> float:
    """1 if the prediction is JSON valid against `schema` (from the task YAML)."""
    import jsonschema

    if schema is None:
        raise AttuneError("metric json_schema needs a `schema:` in the task")
    try:
        jsonschema.validate(_json(prediction), schema)
        return 1.0
    except (ValueError, jsonschema.ValidationError):
        return 0.0


@metric
def json_fields(prediction: str, reference: str) -> float:
    """Share of the reference JSON object's fields the prediction gets right (partial credit)."""
    try:
        ref = _json(reference)
    except ValueError:
        return 0.0
    try:
        pred = _json(prediction)
    except ValueError:
        return 0.0
    if not isinstance(ref, dict) or not isinstance(pred, dict) or not ref:
        return float(pred == ref)
    return sum(pred.get(k) == v for k, v in ref.items()) / len(ref)


def _words(text: str) -> list[str]:
    return re.findall(r"[\w'-]+", text)


def json_value(text: str) -> Any:
    """The parsed JSON of a text (a ```json fence tolerated), or None when it is not JSON."""
    try:
        return _json(text)
    except ValueError:
        return None


# Verifiable instruction checks (Zhou et al. 2023, "Instruction-Following Evaluation for LLMs"):
# each takes the reply and the check's argument from the reference and says pass or fail.
CHECKS: dict[str, Callable[[str, Any], bool]] = {
    "one_of": lambda text, options: normalize(text) in {normalize(o) for o in options},
    "equals": lambda text, want: normalize(text) == normalize(want),
    "lowercase": lambda text, on: (text == text.lower()) == on and any(c.isalpha() for c in text),
    "uppercase": lambda text, on: (text == text.upper()) == on and any(c.isalpha() for c in text),
    "min_words": lambda text, n: len(_words(text)) >= n,
    "max_words": lambda text, n: 0 < len(_words(text)) <= n,
    "starts_with": lambda text, prefix: text.strip().lower().startswith(prefix.lower()),
    "ends_with": lambda text, suffix: text.strip().lower().endswith(suffix.lower()),
    "contains": lambda text, needles: all(n.lower() in text.lower() for n in needles),
    "excludes": lambda text, needles: not any(n.lower() in text.lower() for n in needles),
    "lines": lambda text, n: len([line for line in text.splitlines() if line.strip()]) == n,
    "bullets": lambda text, n: len([line for line in text.splitlines() if line.lstrip().startswith(("- ", "* "))]) == n,
    "matches": lambda text, pattern: re.search(pattern, text) is not None,
    "json_list_length": lambda text, n: isinstance(v := json_value(text), list) and len(v) == n,
    "json_keys": lambda text, keys: isinstance(v := json_value(text), dict) and all(k in v for k in keys),
}


def parse_checks(reference: str) -> dict[str, Any]:
    """The checks a `follows_instructions` reference asks for; an AttuneError when it is malformed."""
    try:
        checks = json.loads(reference)
    except json.JSONDecodeError:
        checks = None
    if not isinstance(checks, dict) or not checks:
        raise AttuneError(f"follows_instructions: the reference must be a non-empty JSON object of checks, got {reference[:80]!r}")
    for name in checks:
        if name not in CHECKS:
            raise unknown("instruction check", name, CHECKS)
    return checks


@metric
def follows_instructions(prediction: str, reference: str) -> float:
    """1 if the reply passes every check of the reference (a JSON object {check: argument}), else 0.

    This is IFEval's strict prompt-level accuracy; the checks are in `CHECKS`.
    """
    checks = parse_checks(reference)
    return float(all(CHECKS[name](prediction, arg) for name, arg in checks.items()))


# Metrics whose reference has a format of its own, checked when the task loads (before any model).
REFERENCE_CHECKS: dict[str, Callable[[str], Any]] = {"follows_instructions": parse_checks}


def get_metric(name: str) -> Metric:
    if name not in METRICS:
        raise unknown("metric", name, METRICS)
    return METRICS[name]
