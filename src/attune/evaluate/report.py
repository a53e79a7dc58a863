"""compare.json, report.md and a self-contained report.html (PNG plots embedded as base64)."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from attune.evaluate.fields import FieldBreakdown, field_breakdown
from attune.evaluate.render import md_table, png
from attune.evaluate.replay_plot import replay_plots
from attune.evaluate.results import CandidateResult, CompareResult, forgetting
from attune.evaluate.significance import label, metric_interval, standings, verdict


def general_perplexity(probe: dict[str, float]) -> float | None:
    """The probe's general-text perplexity (reported beside forgetting, not averaged into it)."""
    return next((v for k, v in probe.items() if k.endswith("/perplexity")), None)


def _value(task, metric: str) -> str:
    """`0.483 ± 0.120`: the metric and half its 95 % bootstrap interval (a bare value when it has none)."""
    iv = metric_interval(task, metric)
    return f"{task.metrics[metric]:.3f}" if iv is None else f"{iv.mean:.3f} ± {iv.half_width:.3f}"


def table_rows(result: CompareResult) -> tuple[list[str], list[list[str]]]:
    """The compare table: headline score with its interval, the paired test against the best, every metric, costs."""
    metric_names = [f"{t.task}/{m}" for t in result.candidates[0].tasks for m in t.metrics]
    header = ["candidate", "score", "vs best", *metric_names, "forgetting", "general ppl", "trainable params", "train s",
              "tokens seen", "prompt tok/query", "latency s/query"]
    rows = []
    for c, st in zip(result.candidates, standings(result.candidates)):
        scores = [_value(t, m) for t in c.tasks for m in t.metrics]
        drop, ppl = forgetting(c, result.base_probe), general_perplexity(c.probe)
        rows.append([
            c.name, f"{st.interval.mean:.3f} ± {st.interval.half_width:.3f}", label(st), *scores,
            "—" if drop is None else f"{drop:+.3f}", "—" if ppl is None else f"{ppl:.2f}",
            f"{c.cost.get('trainable_params') or 0:,}", f"{c.cost.get('train_seconds') or 0:.0f}",
            f"{c.cost.get('tokens_seen') or 0:,}", f"{c.cost.get('prompt_tokens_per_query', 0):.0f}",
            f"{c.cost.get('latency_per_query', 0):.2f}",
        ])
    return header, rows


def probe_rows(result: CompareResult) -> tuple[list[str], list[list[str]]]:
    """The probe's scores per set of weights: candidates sharing weights share a row, the base first."""
    if not result.base_probe:
        return [], []
    keys = list(result.base_probe)
    groups: dict[tuple[str, str | None], list[CandidateResult]] = {}
    for c in result.candidates:
        groups.setdefault((c.model, c.adapter), []).append(c)
    base_names = next((", ".join(x.name for x in cs) for cs in groups.values() if cs[0].probe == result.base_probe
                       and cs[0].adapter is None), "")
    rows = [[f"base ({base_names})" if base_names else "base", *(f"{result.base_probe[k]:.3f}" for k in keys)]]
    for cs in groups.values():
        if cs[0].probe and not (cs[0].adapter is None and cs[0].probe == result.base_probe):
            rows.append([", ".join(x.name for x in cs), *(f"{cs[0].probe.get(k, float('nan')):.3f}" for k in keys)])
    return ["weights", *keys], rows


def plots(result: CompareResult) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = {}
    names = [c.name for c in result.candidates]
    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.45 * len(names)))
    ivs = [st.interval for st in standings(result.candidates)]
    errors = [[iv.mean - iv.low for iv in ivs], [iv.high - iv.mean for iv in ivs]]
    ax.barh(names, [iv.mean for iv in ivs], xerr=errors, capsize=3, color="#4C72B0")
    ax.set_xlabel("score (first metric of each task, averaged) with its 95 % bootstrap interval")
    ax.set_xlim(0, 1)
    ax.invert_yaxis()
    out["scores"] = png(fig)
    drops = [(c.name, c.score, forgetting(c, result.base_probe)) for c in result.candidates]
    if any(d is not None for _, _, d in drops):
        fig, ax = plt.subplots(figsize=(6, 4))
        for name, score, drop in drops:
            if drop is not None:
                ax.scatter(drop, score)
                ax.annotate(name, (drop, score), fontsize=8, xytext=(4, 4), textcoords="offset points")
        ax.set_xlabel("forgetting (probe drop vs base)")
        ax.set_ylabel("task score")
        out["forgetting"] = png(fig)
    for stage, rows in result.training.items():
        series = training_series(rows)
        if series:
            out[f"training: {stage}"] = png(_curves_figure(plt, stage, series))
    out.update(replay_plots(result))  # cpt stages with/without replay: domain gain vs what was lost
    return out


def training_series(rows: list[dict[str, Any]]) -> dict[str, tuple[list[float], list[float]]]:
    """metric -> (steps, values) for every numeric metric a stage logged (loss first, then as logged).

    Metrics logged only at some steps (eval_loss, an objective's validation accuracy) keep just
    the steps they have, so sparse and dense series plot side by side.
    """
    series: dict[str, tuple[list[float], list[float]]] = {}
    for row in rows:
        step = row.get("step")
        if not isinstance(step, (int, float)):
            continue
        for name, value in row.items():
            if name in ("step", "epoch") or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            steps, values = series.setdefault(name, ([], []))
            steps.append(step)
            values.append(value)
    return dict(sorted(series.items(), key=lambda kv: kv[0] != "loss"))


def _curves_figure(plt, stage: str, series: dict[str, tuple[list[float], list[float]]]):
    """One small panel per metric (each keeps its own scale: loss, kl and tokens/s do not share an axis)."""
    cols = min(3, len(series))
    rows = (len(series) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.6 * rows), squeeze=False)
    for ax, (name, (steps, values)) in zip(axes.flat, series.items()):
        ax.plot(steps, values, marker="o" if len(steps) < 12 else None, markersize=3, color="#4C72B0")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(series):]:
        ax.axis("off")
    fig.suptitle(f"stage {stage}", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.97))  # keep the title clear of the top row of panels
    return fig


def failures(c: CandidateResult, n: int = 3) -> list[dict[str, Any]]:
    bad = []
    for t in c.tasks:
        for row in t.rows:
            first = next(iter(row["scores"].values()), 1.0)
            if first < 1.0:
                bad.append({"task": t.task, "prediction": row["prediction"], "reference": row["reference"]})
            if len(bad) >= n:
                return bad
    return bad


STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse}"
    "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:first-child{text-align:left}img{max-width:100%}"
)


STATS_NOTE = (
    "score = the mean of each task's first metric ± half its 95 % bootstrap interval (examples resampled within each task); "
    "vs best = paired bootstrap test against the best candidate on the same examples: tied when the 95 % interval of the "
    "difference contains 0."
)


def verdict_text(result: CompareResult) -> str:
    return verdict(result.candidates, standings(result.candidates))


def field_tables(result: CompareResult) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) tables: per task with JSON references, each field's accuracy per candidate,
    then each candidate's confusion matrix per field (rows: reference value, columns: predicted)."""
    out = []
    for i, task in enumerate(result.candidates[0].tasks):
        per = [(c.name, {f.field: f for f in field_breakdown(c.tasks[i].rows)}) for c in result.candidates]
        names = list(per[0][1])
        if not names:
            continue
        rows = [[name, *(f"{fields[f].accuracy:.3f}" if f in fields else "—" for f in names)] for name, fields in per]
        out.append((f"{task.task}: accuracy per JSON field", ["candidate", *names], rows))
        for name, fields in per:
            for f in fields.values():
                out.append((f"{task.task} · {name} · {f.field}: reference (rows) vs predicted (columns)", *_matrix(f)))
    return out


def _matrix(f: FieldBreakdown) -> tuple[list[str], list[list[str]]]:
    return [f.field, *f.predicted], [[ref, *map(str, counts)] for ref, counts in zip(f.labels, f.matrix)]


FORGETTING_NOTE = (
    "Forgetting = mean drop of the general-skills probe's scored tasks against the base model (positive = lost skill); "
    "general ppl = the probe's general-text perplexity (lower is better)."
)


def _html_table(header: list[str], rows: list[list[str]], title: str | None = None) -> str:
    if not rows:
        return ""
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(x)}</td>" for x in r) + "</tr>" for r in rows)
    return (f"<h2>{html.escape(title)}</h2>" if title else "") + f"<table><tr>{cells}</tr>{body}</table>"


def compare_json(result: CompareResult) -> dict[str, Any]:
    """Everything the report shows, every example included, as plain JSON."""
    return {
        "recipe": result.recipe,
        "base_probe": result.base_probe,
        "verdict": verdict_text(result),
        "candidates": [
            {"name": c.name, "model": c.model, "adapter": c.adapter, "strategy": c.strategy, "score": c.score,
             "significance": st.to_dict(), "forgetting": forgetting(c, result.base_probe), "probe": c.probe, "cost": c.cost,
             "fields": [[f.to_dict() for f in field_breakdown(t.rows)] for t in c.tasks],
             "tasks": [t.to_dict() for t in c.tasks]}
            for c, st in zip(result.candidates, standings(result.candidates))
        ],
    }


def markdown(result: CompareResult) -> str:
    header, rows = table_rows(result)
    md = [f"# attune compare: {result.recipe}", "", f"**Verdict**: {verdict_text(result)}", "", *md_table(header, rows), "",
          STATS_NOTE, "", FORGETTING_NOTE, ""]
    for title, fheader, frows in field_tables(result):
        md += [f"### {title}", "", *md_table(fheader, frows), ""]
    probe_header, probe_table = probe_rows(result)
    if probe_table:
        md += ["## General-skills probe", "", *md_table(probe_header, probe_table), ""]
    for c in result.candidates:
        bad = failures(c)
        if bad:
            md += [f"## Failed examples: {c.name}", ""]
            md += [f"- **{b['task']}** predicted `{b['prediction'][:120]}`, expected `{b['reference'][:120]}`" for b in bad]
            md.append("")
    return "\n".join(md)


def html_page(result: CompareResult) -> str:
    """A self-contained page: tables, PNG plots inlined as base64, failed examples."""
    header, rows = table_rows(result)
    figs = "".join(
        f'<h2>{html.escape(k)}</h2><img alt="{html.escape(k)}" src="data:image/png;base64,{v}">' for k, v in plots(result).items()
    )
    fails = ""
    for c in result.candidates:
        items = "".join(
            f"<li><b>{html.escape(b['task'])}</b>: predicted <code>{html.escape(b['prediction'][:160])}</code>, "
            f"expected <code>{html.escape(b['reference'][:160])}</code></li>" for b in failures(c)
        )
        if items:
            fails += f"<h3>{html.escape(c.name)}</h3><ul>{items}</ul>"
    title = html.escape(f"attune compare: {result.recipe}")
    fields = "".join(_html_table(h, r, t) for t, h, r in field_tables(result))
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<style>{STYLE}</style>
</head><body><h1>{title}</h1><p id="verdict"><b>Verdict</b>: {html.escape(verdict_text(result))}</p>{_html_table(header, rows)}
<p>{html.escape(STATS_NOTE)}</p><p>{html.escape(FORGETTING_NOTE)}</p>{fields}{_html_table(*probe_rows(result), "General-skills probe")}
{figs}<h2>Failed examples</h2>{fails or "<p>none</p>"}</body></html>"""


def write_report(result: CompareResult, out_dir: Path) -> None:
    """compare.json, report.md and report.html into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "compare.json").write_text(json.dumps(compare_json(result), indent=2, default=str))
    (out_dir / "report.md").write_text(markdown(result))
    (out_dir / "report.html").write_text(html_page(result))
