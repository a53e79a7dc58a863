"""report.html renders in headless Chromium: the page is not blank and every embedded plot loads.

Chromium comes from `scripts/install_chromium.sh` (Debian's package, best effort); without it the
test skips and says why. The report is built from hand-made results, so no model is needed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from attune.evaluate.metrics import exact_match, json_valid
from attune.evaluate.report import write_report
from attune.evaluate.results import CandidateResult, CompareResult
from attune.evaluate.runner import TaskResult

ROOT = Path(__file__).resolve().parents[1]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run"]
BAR_RGB = (0x4C, 0x72, 0xB0)  # the score bars' colour in report.plots


def chromium() -> str:
    subprocess.run(["bash", str(ROOT / "scripts/install_chromium.sh")], capture_output=True, timeout=900)
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    pytest.skip("no Chromium: scripts/install_chromium.sh could not install Debian's `chromium` (needs apt-get, root and network)")


REFS = ['{"category": "billing", "priority": "high"}', '{"category": "shipping", "priority": "low"}'] * 10


def _result(run_dir: Path) -> CompareResult:
    def task(predictions: list[str]) -> TaskResult:
        rows = [{"prediction": p, "reference": r, "scores": {"exact_match": exact_match(p, r), "json_valid": json_valid(p)}}
                for p, r in zip(predictions, REFS)]
        means = {m: sum(r["scores"][m] for r in rows) / len(rows) for m in ("exact_match", "json_valid")}
        return TaskResult("tickets", "generate", means, rows)

    base = {"probe-knowledge/acc": 0.6, "probe-arithmetic/exact_match": 0.3, "probe-text/perplexity": 12.0}
    lora = {"probe-knowledge/acc": 0.5, "probe-arithmetic/exact_match": 0.3, "probe-text/perplexity": 13.5}
    cost = {"trainable_params": 0, "train_seconds": 0, "tokens_seen": 0, "prompt_tokens_per_query": 90, "latency_per_query": 0.5}
    candidates = [
        CandidateResult("zero-shot", "m", None, "zero-shot", [task(["Sure, it is billing"] * 20)], base, cost),
        CandidateResult("LoRA", "m", "a", "zero-shot", [task(REFS[:16] + ['{"category": "billing", "priority": "low"}'] * 4)], lora,
                        {**cost, "trainable_params": 4_884_480, "train_seconds": 200, "tokens_seen": 20_000}),
    ]
    curve = [{"step": s, "loss": 2.0 / s, "lr": 1e-3, "grad_norm": 1.0 / s, **({"eval_loss": 2.2 / s} if s % 5 == 0 else {})}
             for s in range(1, 21)]
    return CompareResult("render-test", run_dir, candidates, base, {"sft": curve})


def _run(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_report_html_renders_with_every_plot_loaded(tmp_path):
    browser = chromium()
    write_report(_result(tmp_path), tmp_path)
    page = (tmp_path / "report.html").read_text()
    assert len(re.findall(r"<img ", page)) == 3  # scores, forgetting, training: sft

    # 1. every <img> decoded: a copy of the page writes the check into its title, read back with --dump-dom
    probe = tmp_path / "check.html"
    probe.write_text(page.replace("</body>", "<script>window.onload = () => { const i = [...document.images]; "
                                  "document.title = 'IMAGES ' + i.filter(x => x.complete && x.naturalWidth > 0).length + '/' + i.length; };"
                                  "</script></body>"))
    dom = _run(browser, tmp_path / "profile-dom", "--dump-dom", probe.as_uri())
    assert "<title>IMAGES 3/3</title>" in dom.stdout, dom.stderr[-2000:]

    # the statistics and the per-field view are in the rendered DOM: verdict, intervals, ties, field accuracy, confusion
    text = re.sub(r"<[^>]+>", " ", dom.stdout)
    assert re.search(r"Verdict : LoRA scores best \(0\.80 ± 0\.\d\d\), significantly above every other candidate", text)
    assert re.search(r"LoRA\s+0\.800 ± 0\.\d{3}\s+best\s", text) and re.search(r"zero-shot\s+0\.000 ± 0\.000\s+below \(p=0\.00\)", text)
    assert re.search(r"tickets: accuracy per JSON field.*candidate\s+category\s+priority\s+zero-shot\s+0\.000\s+0\.000"
                     r"\s+LoRA\s+0\.900\s+0\.900", text, re.S)
    # LoRA's priority matrix: of 10 high, 8 right and 2 low; all 10 low right. zero-shot's answers are not JSON at all.
    assert re.search(r"tickets · LoRA · priority: reference \(rows\) vs predicted \(columns\)\s+priority\s+high\s+low"
                     r"\s+high\s+8\s+2\s+low\s+0\s+10", text), text[-3000:]
    assert re.search(r"tickets · zero-shot · category: .{0,40}\s+category\s+billing\s+shipping\s+\(not JSON\)"
                     r"\s+billing\s+0\s+0\s+10\s+shipping\s+0\s+0\s+10", text)

    # 2. the screenshot shows a page with content and the score chart's bars
    shot = tmp_path / "report.png"
    out = _run(browser, tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=1200,1600", (tmp_path / "report.html").as_uri())
    assert shot.is_file() and shot.stat().st_size > 10_000, out.stderr[-2000:]
    import matplotlib.image
    import numpy as np

    rgb = (matplotlib.image.imread(shot)[..., :3] * 255).round().astype(int)  # (H, W, 3)
    assert rgb.shape[:2] == (1600, 1200)
    assert (rgb.min(axis=-1) < 200).mean() > 0.02  # not blank: >2% of pixels are ink, not white
    bars = (np.abs(rgb - np.array(BAR_RGB)).max(axis=-1) <= 6).sum()
    assert bars > 2_000, f"only {bars} pixels of the bar colour: the score chart did not render"
