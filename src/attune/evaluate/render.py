"""Markdown tables and matplotlib figures as base64 PNG: the pieces every report is built from.

Shared by the compare report, the replay plot and the advisor's Markdown; imports nothing heavy
(matplotlib is imported by whoever draws the figure).
"""

from __future__ import annotations

import base64
import io


def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A GitHub-flavoured Markdown table, one string per line."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def png(fig) -> str:
    """The figure as a base64 PNG (for embedding in HTML); the figure is closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()
