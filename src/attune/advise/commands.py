"""`attune advise`: a situation from a file, flags or prompts -> ranked advice (+ evidence).

Every `Situation` field is a flag (`--labelled-examples 500`), generated from the model so the
two never drift; a flag overrides the same key in `--situation FILE`. With neither, on a
terminal, the advisor asks the issue's questions one by one.
"""

from __future__ import annotations

import inspect
import json
import sys
import typing
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markdown import Markdown

from attune.advise.situation import GOALS, Situation, load_situation, parse_situation

console = Console()

QUESTIONS: list[tuple[str, str]] = [  # (field, question) in the order a person thinks about them
    ("goal", "What should change? " + "; ".join(f"{k}: {v}" for k, v in GOALS.items())),
    ("access", "Do you have the model's weights, or API access only?"),
    ("model", "Model (builtin:NAME, a local dir, a hub id) — or leave empty and give a size next"),
    ("model_size", "Model size if no model was given (e.g. 7b), else empty"),
    ("labelled_examples", "How many labelled examples (input -> desired output)?"),
    ("unlabelled_tokens", "How many tokens of unlabelled domain text (0 if none)?"),
    ("preference_pairs", "How many preference pairs (better/worse answers)?"),
    ("hardware", "Hardware: cpu, l4, rtx4090, a100-40gb, a100-80gb, h100, h200"),
    ("gpu_count", "How many of them?"),
    ("budget_gpu_hours", "Training budget in device-hours (empty = no limit)"),
    ("volatility", "How often do the facts change: static, yearly, monthly, weekly, daily?"),
    ("citations", "Must answers cite sources?"),
    ("latency_ms", "Latency budget per query in ms (empty = none)"),
    ("tenants", "How many tenants/teams need their own specialisation?"),
    ("forgetting_tolerance", "Tolerance for forgetting general skills: low, medium, high?"),
]


def _base_type(annotation: Any) -> type:
    """The CLI type of a Situation field: Literal -> str, Optional[X] -> X."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is typing.Literal:
        return str
    if args and typing.get_origin(annotation) is not None:
        return _base_type(args[0])
    return annotation if annotation in (int, float, bool, str) else str


def ask(console_in: Console) -> dict[str, Any]:
    """The interactive questionnaire; empty answers keep the defaults."""
    from rich.prompt import Confirm, Prompt

    answers: dict[str, Any] = {}
    for name, question in QUESTIONS:
        field = Situation.model_fields[name]
        typ = _base_type(field.annotation)
        choices = list(typing.get_args(field.annotation)) if typing.get_origin(field.annotation) is typing.Literal else None
        if typ is bool:
            answers[name] = Confirm.ask(question, default=bool(field.default), console=console_in)
            continue
        default = "" if field.default is None else str(field.default)
        text = Prompt.ask(question, default=default, choices=choices, console=console_in, show_default=bool(default))
        if text.strip():
            answers[name] = typ(text) if typ in (int, float) else text.strip()
    return answers


def _run(situation_file: Optional[str], evidence: Optional[str], top: int, max_examples: Optional[int],
         out: Optional[Path], as_json: bool, given: dict[str, Any]) -> None:
    from attune.advise import advise
    from attune.advise.render import advice_markdown, evidence_markdown

    data: dict[str, Any] = {}
    if situation_file:
        data = load_situation(situation_file).model_dump(exclude_unset=True)
    data.update(given)
    if not situation_file and not given and sys.stdin.isatty() and not as_json:
        data = ask(console)
    recipe = None
    if evidence:
        from attune.recipe import load_recipe

        recipe = load_recipe(evidence)
        data.setdefault("model", recipe.model)
    if data.get("data") or recipe is not None:
        from attune.advise.datacounts import counts_from_data, counts_from_recipe

        counted = counts_from_data(data["data"], data.get("model")) if data.get("data") else counts_from_recipe(recipe)
        data.update({k: v for k, v in counted.items() if k not in given})  # flags win; counts beat a file's guesses
        data.pop("data", None)  # counted once, here
    situation = parse_situation(data, situation_file or "flags")
    advice = advise(situation)
    text = advice_markdown(advice)
    ev = None
    if recipe is not None:
        from attune.advise.evidence import run_evidence

        ev = run_evidence(advice, recipe, top=top, max_examples=max_examples)
        text += "\n" + evidence_markdown(ev)
    if as_json:
        print(json.dumps(advice_json(advice, ev), indent=2, default=str))
    elif console.is_terminal:
        console.print(Markdown(text))
    else:
        print(text)
    if out:
        out.write_text(text)
        if ev is not None:
            (Path(ev.run_dir) / "advice.md").write_text(text)


def advice_json(advice, ev) -> dict[str, Any]:
    """Machine-readable advice: the ranked options with reasons, costs and blockers (+ the evidence)."""
    def opt(o):
        cost = o.cost
        return {"method": o.method.id, "score": o.score, "reasons": [r.__dict__ for r in o.reasons],
                "blockers": o.blockers, "risks": list(o.method.risks),
                "memory_gb": cost.memory.total_gb if cost and cost.memory else None,
                "train_hours": cost.time.seconds / 3600 if cost and cost.time else None,
                "prompt_tokens": cost.query.prompt_tokens if cost and cost.query else None}

    return {"situation": advice.situation.model_dump(), "ranked": [opt(o) for o in advice.ranked],
            "blocked": [opt(o) for o in advice.blocked], "evidence": ev.to_dict() if ev else None}


def _build_command():
    """The `advise` command, its flags generated from `Situation`'s fields."""
    K = inspect.Parameter.KEYWORD_ONLY
    fixed = [
        inspect.Parameter("situation_file", K, annotation=Optional[str], default=typer.Option(
            None, "--situation", "-s", help="situation YAML (or builtin:scenarios/NAME); flags override its keys")),
        inspect.Parameter("evidence", K, annotation=Optional[str], default=typer.Option(
            None, "--evidence", help="recipe with your data and held-out tasks: measure the top candidates and re-rank")),
        inspect.Parameter("top", K, annotation=int, default=typer.Option(3, "--top", help="candidates measured by --evidence")),
        inspect.Parameter("max_examples", K, annotation=Optional[int], default=typer.Option(
            None, "--max-examples", help="--evidence: cap held-out examples per task (quick runs)")),
        inspect.Parameter("out", K, annotation=Optional[Path], default=typer.Option(
            None, "--out", "-o", help="also write the advice as Markdown")),
        inspect.Parameter("as_json", K, annotation=bool, default=typer.Option(False, "--json", help="print JSON instead")),
    ]
    fields = []
    for name, f in Situation.model_fields.items():
        typ = _base_type(f.annotation)
        flag = "--" + name.replace("_", "-")
        decl = [f"{flag}/--no-{flag[2:]}"] if typ is bool else [flag]
        fields.append(inspect.Parameter(name, K, annotation=Optional[typ], default=typer.Option(None, *decl, help=f.description)))

    def advise_command(**kwargs: Any) -> None:
        """Recommend adaptation methods for your situation: ranked, with reasons, risks and costs on your hardware."""
        given = {k: v for k, v in kwargs.items() if k in Situation.model_fields and v is not None}
        _run(kwargs["situation_file"], kwargs["evidence"], kwargs["top"], kwargs["max_examples"], kwargs["out"],
             kwargs["as_json"], given)

    advise_command.__signature__ = inspect.Signature(fixed + fields)  # type: ignore[attr-defined]
    return advise_command


advise_command = _build_command()
