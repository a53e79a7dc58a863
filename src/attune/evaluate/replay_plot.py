"""The replay plot: what continued pretraining gained on the domain against what it cost in general.

Drawn by the report when a compare scores `cpt` stages of the run on two perplexity tasks: the
first perplexity task in `evaluate.tasks` is the domain, the last one is general text (as in
builtin:recipes/cpt-replay). Each cpt stage is a point: y = domain gain (base loss - stage loss,
nats per token), x = general loss increase (stage loss - base loss) in the left panel and the
forgetting probe's drop in the right one. Marker shape is the adapter shape (LoRA vs full), colour
is replay or not; an arrow joins a stage without replay to its replay twin of the same shape.
"""

from __future__ import annotations

from dataclasses import dataclass

from attune.evaluate.render import png
from attune.evaluate.results import CandidateResult, CompareResult, forgetting


@dataclass(frozen=True)
class ReplayPoint:
    stage: str
    adapter: str
    replay: bool
    domain_gain: float
    general_increase: float
    forgetting: float | None


def _loss(candidate: CandidateResult, task: str) -> float | None:
    return next((t.metrics.get("loss") for t in candidate.tasks if t.task == task), None)


def replay_points(result: CompareResult) -> list[ReplayPoint]:
    """One point per compared cpt stage; empty when the compare is not a replay experiment."""
    if not result.candidates:
        return []
    perplexity = [t.task for t in result.candidates[0].tasks if t.kind == "perplexity"]
    base = next((c for c in result.candidates if c.adapter is None and c.stage is None), None)
    if len(perplexity) < 2 or base is None:
        return []
    domain, general = perplexity[0], perplexity[-1]
    points = []
    for c in result.candidates:
        stage = result.stages.get(c.stage) if c.stage else None
        if stage is None or stage.objective != "cpt":
            continue
        points.append(ReplayPoint(
            stage=c.stage, adapter=stage.adapter.type if stage.adapter else "lora", replay=stage.replay is not None,
            domain_gain=_loss(base, domain) - _loss(c, domain),
            general_increase=_loss(c, general) - _loss(base, general),
            forgetting=forgetting(c, result.base_probe),
        ))
    return points


def replay_plots(result: CompareResult) -> dict[str, str]:
    """{title: base64 PNG} for the report; nothing when there are no cpt stages to compare."""
    points = replay_points(result)
    if not points:
        return {}
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("general loss increase (nats/token, held-out general text)", "general_increase")]
    if any(p.forgetting is not None for p in points):
        panels.append(("forgetting (probe drop vs base)", "forgetting"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.6), squeeze=False)
    for ax, (label, field) in zip(axes[0], panels):
        drawn = [p for p in points if getattr(p, field) is not None]
        for p in drawn:
            x = getattr(p, field)
            ax.scatter(x, p.domain_gain, marker="o" if p.adapter != "full" else "s", s=60,
                       color="#2A9D58" if p.replay else "#C8423B", label=f"{p.adapter}{' + replay' if p.replay else ''}")
            ax.annotate(f"{p.stage}\n({x:+.3f}, {p.domain_gain:+.3f})", (x, p.domain_gain), fontsize=7,
                        xytext=(5, 4), textcoords="offset points")
        for a in drawn:
            twin = next((b for b in drawn if b.replay and not a.replay and b.adapter == a.adapter), None)
            if twin is not None:
                ax.annotate("", (getattr(twin, field), twin.domain_gain), (getattr(a, field), a.domain_gain),
                            arrowprops={"arrowstyle": "->", "color": "#888888"})
        ax.axvline(0, color="#bbbbbb", linewidth=0.8)
        ax.set_xlabel(label)
        ax.set_ylabel("domain gain (base loss - stage loss, nats/token)")
        ax.margins(0.2)  # room for the point labels
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=4, frameon=False)
    fig.suptitle("continued pretraining: domain gain vs what was lost, with and without replay")
    fig.tight_layout()
    return {"replay: domain gain vs general loss": png(fig)}
