"""The advice as Markdown: what the terminal shows (rendered by rich) and what `--out` writes."""

from __future__ import annotations

from attune.advise.evidence import Evidence
from attune.advise.rules import Advice, Option
from attune.evaluate.render import md_table


def _situation_line(a: Advice) -> str:
    s, f = a.situation, a.facts
    model = f.shape.describe() if f.shape else (s.model or "model unknown (costs need `model` or `model_size`)")
    hw = f.hardware
    devices = f"{hw.count} x {hw.name}" if hw.kind == "gpu" else f"{hw.name} ({hw.memory_gb:,.0f} GB RAM)"
    data = (f"{s.labelled_examples:,} labelled, {s.unlabelled_tokens:,} unlabelled tokens, "
            f"{s.preference_pairs:,} preference pairs" + (f", {s.prompts:,} prompts" if s.prompts else ""))
    return f"goal **{s.goal}**, access **{s.access}**, {model}; {devices}; data: {data}"


def _option(i: int, o: Option) -> list[str]:
    lines = [f"### {i}. {o.method.title} — score {o.score:+.1f}", "", f"{o.method.summary}. Guide: `{o.method.doc}`.", ""]
    pros = [r for r in o.reasons if r.delta > 0]
    cons = [r for r in o.reasons if r.delta < 0]
    lines += [f"- **why** ({r.rule}, {r.delta:+.1f}): {r.text}" for r in sorted(pros, key=lambda r: -r.delta)]
    lines += [f"- **against** ({r.rule}, {r.delta:+.1f}): {r.text}" for r in sorted(cons, key=lambda r: r.delta)]
    lines += [f"- **risk**: {r}" for r in o.method.risks]
    if o.cost is not None:
        lines += [f"- **cost**: {c}" for c in o.cost.lines()]
    return lines + [""]


def advice_markdown(a: Advice, top: int = 5) -> str:
    """The ranked list (the first `top` in full), then what was ruled out and why."""
    lines = ["# attune advise", "", _situation_line(a), ""]
    lines += ["## Recommended (ranked by rules; `--evidence RECIPE` measures them)", ""]
    for i, o in enumerate(a.ranked[:top], 1):
        lines += _option(i, o)
    if len(a.ranked) > top:
        rest = ", ".join(f"{o.method.id} ({o.score:+.1f})" for o in a.ranked[top:])
        lines += [f"Also feasible, lower: {rest}.", ""]
    if a.blocked:
        lines += ["## Ruled out", ""]
        lines += [f"- **{o.method.id}**: {'; '.join(o.blockers)}" for o in a.blocked]
        lines.append("")
    return "\n".join(lines)


def evidence_markdown(ev: Evidence) -> str:
    header = ["method", "rules rank", "score ± 95 %", "forgetting", "utility", "vs best", "train s", "prompt tok/query",
              "latency s", "evidence rank"]
    rows = [[m.method, str(m.rule_rank or "baseline"), f"{m.score:.3f} ± {m.ci:.3f}",
             "—" if m.forgetting is None else f"{m.forgetting:+.3f}", f"{m.utility:.3f}",
             "best" if m.p_vs_best is None else f"{'tied' if m.tied else 'below'} (p={m.p_vs_best:.2f})",
             f"{m.cost.get('train_seconds') or 0:.0f}", f"{m.cost.get('prompt_tokens_per_query') or 0:.0f}",
             f"{m.cost.get('latency_per_query') or 0:.2f}", str(m.evidence_rank)] for m in ev.measured]
    lines = ["## Evidence (measured on your held-out data)", "", *md_table(header, rows), "", f"**Verdict**: {ev.verdict}.", ""]
    lines += [f"- not measured: **{k}**: {v}" for k, v in ev.skipped.items()]
    lines += ["", f"Run: `{ev.run_dir}` (report.html, compare.json, advice-evidence.json)", ""]
    return "\n".join(lines)
