"""compare.json, report.md and a self-contained report.html (PNG plots embedded as base64)."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

from attune.evaluate.compare import CandidateResult, CompareResult


def forgetting(c: CandidateResult, base: dict[str, float]) -> float | None:
    """Mean drop of the probe scores against the base model (positive = skill lost)."""
    common = [k for k in base if k in c.probe and not k.endswith(("perplexity", "/loss", "bits_per_byte"))]
    if not common:
        return None
    return sum(base[k] - c.probe[k] for k in common) / len(common)


def table_rows(result: CompareResult) -> tuple[list[str], list[list[str]]]:
    metric_names = [f"{t.task}/{m}" for t in result.candidates[0].tasks for m in t.metrics]
    header = ["candidate", *metric_names, "forgetting", "trainable params", "train s", "tokens seen", "prompt tok/query", "latency s/query"]
    rows = []
    for c in result.candidates:
        scores = [f"{v:.3f}" for t in c.tasks for v in t.metrics.values()]
        drop = forgetting(c, result.base_probe)
        rows.append([
            c.name, *scores, "—" if drop is None else f"{drop:+.3f}",
            f"{c.cost.get('trainable_params') or 0:,}", f"{c.cost.get('train_seconds') or 0:.0f}",
            f"{c.cost.get('tokens_seen') or 0:,}", f"{c.cost.get('prompt_tokens_per_query', 0):.0f}",
            f"{c.cost.get('latency_per_query', 0):.2f}",
        ])
    return header, rows


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def plots(result: CompareResult) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = {}
    names = [c.name for c in result.candidates]
    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.45 * len(names)))
    ax.barh(names, [c.score for c in result.candidates], color="#4C72B0")
    ax.set_xlabel("score (first metric of each task, averaged)")
    ax.set_xlim(0, 1)
    ax.invert_yaxis()
    out["scores"] = _png(fig)
    drops = [(c.name, c.score, forgetting(c, result.base_probe)) for c in result.candidates]
    if any(d is not None for _, _, d in drops):
        fig, ax = plt.subplots(figsize=(6, 4))
        for name, score, drop in drops:
            if drop is not None:
                ax.scatter(drop, score)
                ax.annotate(name, (drop, score), fontsize=8, xytext=(4, 4), textcoords="offset points")
        ax.set_xlabel("forgetting (probe drop vs base)")
        ax.set_ylabel("task score")
        out["forgetting"] = _png(fig)
    curves = [c for c in result.candidates if c.loss_curve]
    if curves:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for c in curves:
            steps, losses = zip(*c.loss_curve)
            ax.plot(steps, losses, label=c.name)
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
        ax.legend(fontsize=8)
        out["loss"] = _png(fig)
    return out


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


def write_report(result: CompareResult, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    header, rows = table_rows(result)
    data = {
        "recipe": result.recipe,
        "base_probe": result.base_probe,
        "candidates": [
            {"name": c.name, "model": c.model, "adapter": c.adapter, "strategy": c.strategy, "score": c.score,
             "forgetting": forgetting(c, result.base_probe), "probe": c.probe, "cost": c.cost,
             "tasks": [t.to_dict() for t in c.tasks]}
            for c in result.candidates
        ],
    }
    (out_dir / "compare.json").write_text(json.dumps(data, indent=2, default=str))
    md = [f"# attune compare: {result.recipe}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(r) + " |" for r in rows]
    md += ["", "Forgetting = mean drop of the general-skills probe against the base model (positive = lost skill).", ""]
    for c in result.candidates:
        bad = failures(c)
        if bad:
            md += [f"## Failed examples: {c.name}", ""]
            md += [f"- **{b['task']}** predicted `{b['prediction'][:120]}`, expected `{b['reference'][:120]}`" for b in bad]
            md.append("")
    (out_dir / "report.md").write_text("\n".join(md))
    images = plots(result)
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(x)}</td>" for x in r) + "</tr>" for r in rows)
    figs = "".join(f'<h2>{html.escape(k)}</h2><img alt="{k}" src="data:image/png;base64,{v}">' for k, v in images.items())
    fails = ""
    for c in result.candidates:
        items = "".join(
            f"<li><b>{html.escape(b['task'])}</b>: predicted <code>{html.escape(b['prediction'][:160])}</code>, "
            f"expected <code>{html.escape(b['reference'][:160])}</code></li>" for b in failures(c)
        )
        if items:
            fails += f"<h3>{html.escape(c.name)}</h3><ul>{items}</ul>"
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>attune compare: {html.escape(result.recipe)}</title>
<style>{STYLE}</style>
</head><body><h1>attune compare: {html.escape(result.recipe)}</h1><table><tr>{cells}</tr>{body}</table>
<p>Forgetting = mean drop of the general-skills probe against the base model (positive = lost skill).</p>
{figs}<h2>Failed examples</h2>{fails or "<p>none</p>"}</body></html>"""
    (out_dir / "report.html").write_text(page)
