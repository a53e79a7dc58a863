"""The advisor in the browser: its questions as a form, its ranking as page data, a method as a draft recipe.

The form is generated from `attune.advise.situation.Situation` (as `attune advise`'s flags are),
the questions' wording comes from `attune.advise.commands.QUESTIONS`, and the ranking is
`attune.advise.advise`. A recommended method becomes a draft recipe: the objective and adapter
shape `attune.advise.evidence` would measure it with, on the situation's model, with the data
path left for the user to fill in (New run then validates it like any recipe).
"""

from __future__ import annotations

import typing
from typing import Any

import yaml

from attune.advise import advise, parse_situation
from attune.advise.commands import QUESTIONS
from attune.advise.evidence import ADAPTER_OF, OBJECTIVE_OF
from attune.advise.methods import METHODS
from attune.advise.situation import Situation

DATA_PLACEHOLDER = "PATH/TO/YOUR/DATA.jsonl"


def form_fields() -> list[dict[str, Any]]:
    """One entry per Situation field: name, question, kind (text/number/bool/select), choices, default."""
    questions = dict(QUESTIONS)
    out = []
    for name, f in Situation.model_fields.items():
        ann = f.annotation
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        inner = args[0] if args and typing.get_origin(ann) is not typing.Literal else ann
        if typing.get_origin(ann) is typing.Literal or typing.get_origin(inner) is typing.Literal:
            kind, choices = "select", list(typing.get_args(inner if typing.get_origin(inner) is typing.Literal else ann))
        elif inner is bool:
            kind, choices = "bool", []
        elif inner in (int, float):
            kind, choices = "number", []
        else:
            kind, choices = "text", []
        out.append({"name": name, "question": questions.get(name, f.description or name), "help": f.description or "",
                    "kind": kind, "choices": choices, "default": f.default, "main": name in questions})
    return out


def _clean(form: dict[str, Any]) -> dict[str, Any]:
    """Drop empty fields (the Situation's defaults apply) and turn checkbox values into booleans."""
    kinds = {f["name"]: f["kind"] for f in form_fields()}
    data: dict[str, Any] = {}
    for key, value in form.items():
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        if kinds.get(key) == "bool":
            value = value in (True, "true", "on", "1", 1)
        data[key] = value
    return data


def advice_data(form: dict[str, Any]) -> dict[str, Any]:
    """The ranked recommendation with reasons, risks, costs, and what was ruled out (raises AttuneError)."""
    situation = parse_situation(_clean(form), "form")
    result = advise(situation)

    def option(o) -> dict[str, Any]:
        return {"method": o.method.id, "title": o.method.title, "summary": o.method.summary, "score": o.score,
                "reasons": [{"rule": r.rule, "delta": r.delta, "text": r.text} for r in o.reasons],
                "risks": list(o.method.risks), "costs": o.cost.lines() if o.cost else [], "blockers": o.blockers,
                "doc": o.method.doc}

    return {"ranked": [option(o) for o in result.ranked], "blocked": [option(o) for o in result.blocked]}


def draft_recipe(method: str, form: dict[str, Any]) -> str:
    """A draft recipe that tries `method` on the situation's model (the data path is the user's to fill)."""
    from attune.errors import unknown

    if method not in METHODS:
        raise unknown("method", method, METHODS)
    situation = parse_situation(_clean(form), "form")
    model = situation.model or "builtin:smollm2-135m-instruct"
    m = METHODS[method]
    recipe: dict[str, Any] = {"name": f"advised-{method}".replace("+", "-"), "model": model}
    if not m.trains:
        candidate = {"strategy": method} if method != "few-shot" else {"strategy": "few-shot", "k": 4, "pool": DATA_PLACEHOLDER}
        recipe.update(evaluate={"tasks": ["PATH/TO/HELDOUT-TASK.yaml"]}, compare=[{"strategy": "zero-shot"}, candidate])
        return yaml.safe_dump(recipe, sort_keys=False)
    cost = advise(situation)
    fitted = next((o.cost.setup.adapter for o in cost.ranked + cost.blocked
                   if o.method.id == method and o.cost and o.cost.setup), None)
    adapter = fitted or ADAPTER_OF.get(method) or m.shapes[0]
    objective = OBJECTIVE_OF.get(method, ("sft",))[0]
    recipe["stages"] = [{"objective": objective, "data": {"path": DATA_PLACEHOLDER}, "adapter": {"type": adapter}}]
    return yaml.safe_dump(recipe, sort_keys=False)
