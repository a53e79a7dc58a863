"""The studio used as a person uses it: headless Chromium driven by Selenium against a real `attune studio`.

One pass over the whole loop on the tiny test model (a local model dir, not the builtin):
a recipe with a typo is refused with recipe check's did-you-mean; the fixed recipe starts; Resume
on the running run is refused (one trainer per run dir); the loss curve grows to >= 3 points with
no page reload; the finished run's compare report opens; the Data page lists a malformed line
with its line number and text; one arena round between the base and the adapter appends exactly
one valid preference pair to a file that already held one, which is kept; the advisor's top
recommendation opens New run as a draft recipe. Screenshots are kept
under the test's tmp dir (printed) and must not be blank.

Chromium and chromedriver are Debian's (`scripts/install_chromium.sh`); without them the test
skips and says why.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
ORDERS = [{"messages": [{"role": "user", "content": f"Where is order {i} going?"},
                        {"role": "assistant", "content": f"Order {i} ships to {['Oslo', 'Rome'][i % 2]}."}]} for i in range(24)]
EXISTING_PAIR = {"prompt": "Say hi", "chosen": "Hi!", "rejected": "No."}


def browser_and_driver() -> tuple[str, str]:
    subprocess.run(["bash", str(ROOT / "scripts/install_chromium.sh")], capture_output=True, timeout=900)
    browser = next((p for n in ("chromium", "chromium-browser", "google-chrome") if (p := shutil.which(n))), None)
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        pytest.skip("no Chromium + chromedriver: scripts/install_chromium.sh could not install Debian's `chromium` and "
                    "`chromium-driver` (needs apt-get, root and network)")
    return browser, driver


def _write_inputs(tmp_path: Path, model_dir: Path) -> tuple[Path, str, str]:
    data = tmp_path / "data"
    data.mkdir()
    (data / "orders.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ORDERS))
    (data / "heldout.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ORDERS[:2]))
    (data / "orders-task.yaml").write_text("name: orders\nkind: generate\ndata: heldout.jsonl\ninput: messages\n"
                                           "metrics: [exact_match]\nmax_new_tokens: 4\n")
    (data / "bad.jsonl").write_text(json.dumps(ORDERS[0]) + "\n" + '{"messages": [{"role": "user", "content": "cut off"\n')
    (data / "arena").mkdir()
    (data / "arena" / "preferences.jsonl").write_text(json.dumps(EXISTING_PAIR) + "\n")
    good = f"""name: tiny
model: {model_dir}
stages:
  - objective: sft
    data: {{path: {data / 'orders.jsonl'}}}
    adapter: {{type: lora, r: 4, alpha: 8}}
    train: {{lr: 2.0e-2, max_steps: 6, batch_tokens: 192, max_length: 64, log_every: 1, val_fraction: 0.1}}
evaluate: {{tasks: [{data / 'orders-task.yaml'}], forgetting: null, max_examples: 2}}
compare:
  - {{strategy: zero-shot}}
  - {{stage: sft}}
"""
    return data, good.replace("lr: 2.0e-2", "lrr: 2.0e-2"), good


def _start_studio(tmp_path: Path, data: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "attune", "studio", "--runs", str(tmp_path / "runs"), "--data", str(data),
                             "--port", "0"], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = ""
    deadline = time.time() + 240
    while time.time() < deadline and not (m := re.search(r"http://127\.0\.0\.1:(\d+)/", line)):
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            pytest.fail("attune studio exited before serving")
    assert m, "attune studio printed no URL"
    return proc, m.group(0)


def _not_blank(path: Path) -> None:
    import numpy as np
    from PIL import Image

    gray = np.asarray(Image.open(path).convert("L"), dtype=float)
    assert gray.std() > 10 and (gray < 200).mean() > 0.01, f"{path} looks blank"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_studio_in_a_browser(tmp_path, tiny_model_dir):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from attune.data import load_records

    browser, chromedriver = browser_and_driver()
    model_dir = tmp_path / "data-model"
    shutil.copytree(tiny_model_dir, model_dir)
    data, bad_recipe, good_recipe = _write_inputs(tmp_path, model_dir)
    shots = tmp_path / "screenshots"
    shots.mkdir()
    print(f"screenshots: {shots}")
    studio, url = _start_studio(tmp_path, data)
    options = Options()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    started = time.time()

    def wait(cond, timeout=300.0, what=""):
        return WebDriverWait(driver, timeout, poll_frequency=0.2).until(lambda d: cond(), message=what)

    def text(css: str) -> str:
        return driver.find_element(By.CSS_SELECTOR, css).text

    def shot(name: str) -> None:
        driver.save_screenshot(str(shots / name))
        _not_blank(shots / name)

    try:
        # New run: the typo gets recipe check's error, live; nothing starts until it is fixed
        driver.get(url + "new")
        box = driver.find_element(By.ID, "recipe-text")
        box.send_keys(bad_recipe)
        wait(lambda: "did you mean 'lr'" in text("#check"), 120, "no did-you-mean for the typo")
        assert "stages[0].train.lrr: unknown key 'lrr'" in text("#check") and not driver.find_element(By.ID, "start").is_enabled()
        shot("new-run-error.png")
        box.clear()
        box.send_keys(good_recipe)
        wait(lambda: "ok: recipe tiny" in text("#check"), 120, "the fixed recipe did not validate")
        assert not (tmp_path / "runs" / "tiny").exists()
        driver.find_element(By.ID, "start").click()
        wait(lambda: "/run/tiny/" in driver.current_url, 60, "Start did not open the run page")
        run_id = driver.current_url.split("/run/", 1)[1]
        run_dir = tmp_path / "runs" / run_id
        loaded_at = driver.execute_script("return window.studioLoadedAt")

        # a second trainer on this run dir is refused with the CLI's message
        driver.find_element(By.ID, "resume").click()
        wait(lambda: "already being trained" in text("#message"), 30, "Resume on a running run was not refused")

        # the loss curve grows while the page stays loaded
        seen = []
        def points() -> int:
            seen.append(int(driver.find_element(By.ID, "chart-loss").get_attribute("data-points")))
            return seen[-1] >= 3
        wait(points, 400, "the loss curve never reached 3 points")
        assert min(seen) < 3 <= seen[-1] and driver.execute_script("return window.studioLoadedAt") == loaded_at  # no reload
        wait(lambda: text("#status") == "finished", 400, "the run did not finish")
        assert driver.execute_script("return window.studioLoadedAt") == loaded_at
        rows = (run_dir / "stages" / "sft" / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(r)["step"] for r in rows] == [1, 2, 3, 4, 5, 6]  # the refused resume changed nothing
        shot("run-curves.png")

        # compare -> report.html, opened from the run page
        driver.find_element(By.ID, "compare").click()
        wait(lambda: driver.find_element(By.ID, "report").is_displayed(), 400, "no report appeared: " + text("#message"))
        driver.find_element(By.ID, "report").click()
        wait(lambda: driver.current_url.endswith("/report.html"), 30)
        assert "zero-shot" in driver.page_source and "sft" in driver.page_source
        shot("report.png")

        # Data: the malformed line, with its number and text
        driver.get(url + "data")
        driver.find_element(By.ID, "data-path").send_keys("bad.jsonl")
        model_box = driver.find_element(By.ID, "data-model")
        model_box.clear()
        model_box.send_keys(str(model_dir))
        driver.find_element(By.ID, "data-open").click()
        wait(lambda: driver.find_elements(By.CSS_SELECTOR, "#data-problems li"), 60, "no problems listed")
        problem = text("#data-problems li")
        assert f"{data / 'bad.jsonl'}:2: malformed JSON" in problem
        assert 'line 2: {"messages": [{"role": "user", "content": "cut off"' in problem
        wait(lambda: driver.find_elements(By.CSS_SELECTOR, "#data-examples .example .sup"), 120, "no rendered example")
        shot("data.png")

        # Arena: base vs the run's adapter, one vote -> one more valid pair, the old one kept
        driver.get(url + "arena")
        form = driver.find_element(By.ID, "arena-load")
        model_in = form.find_element(By.NAME, "model")
        model_in.clear()
        model_in.send_keys(str(model_dir))
        form.find_element(By.NAME, "adapters").send_keys(f"tuned={run_dir / 'stages' / 'sft' / 'adapter'}")
        driver.find_element(By.ID, "arena-load-btn").click()
        wait(lambda: "served: data-model, tuned" in text("#arena-msg"), 180, "the arena did not load: " + text("#arena-msg"))
        driver.find_element(By.ID, "arena-prompt").send_keys("Where is order 7 going?")
        for side, name in (("a", "data-model"), ("b", "tuned")):
            driver.find_element(By.CSS_SELECTOR, f".cand[data-side={side}] input[name=model]").send_keys(name)
        for css, value in (("#arena-max", "12"), ("#arena-temp", "1.0")):
            field = driver.find_element(By.CSS_SELECTOR, css)
            field.clear()
            field.send_keys(value)
        driver.find_element(By.ID, "arena-go").click()
        vote_b = driver.find_element(By.CSS_SELECTOR, "#votes button[data-choice=b]")
        wait(vote_b.is_enabled, 180, "the answers did not finish: " + text("#arena-msg"))
        answers = {s: driver.execute_script(f"return document.getElementById('answer-{s}').textContent") for s in "ab"}
        vote_b.click()
        wait(lambda: "appended a preference pair" in text("#arena-msg"), 30, "the vote failed: " + text("#arena-msg"))
        pairs = data / "arena" / "preferences.jsonl"
        lines = pairs.read_text().splitlines()
        assert len(lines) == 2 and json.loads(lines[0]) == EXISTING_PAIR
        assert json.loads(lines[1]) == {"prompt": "Where is order 7 going?", "chosen": answers["b"], "rejected": answers["a"]}
        records = load_records(pairs)  # what a dpo / reward stage reads
        assert [r.kind for r in records] == ["preference", "preference"] and records[1].chosen == answers["b"]
        row = driver.find_element(By.CSS_SELECTOR, "#arena-table tbody tr").text
        assert "data-model · zero-shot" in row and "tuned · zero-shot" in row
        shot("arena.png")

        # Advise: the questions as a form; a recommendation becomes a recipe in New run
        driver.get(url + "advise")
        driver.find_element(By.NAME, "labelled_examples").send_keys("2000")
        driver.find_element(By.ID, "advise-go").click()
        wait(lambda: driver.find_elements(By.CSS_SELECTOR, "#advice > li button"), 120, "no advice: " + text("#advise-msg"))
        first = driver.find_element(By.CSS_SELECTOR, "#advice > li")
        assert "why (" in first.text and "cost:" in first.text
        first.find_element(By.TAG_NAME, "button").click()
        wait(lambda: driver.current_url.endswith("/new") and text("#check"), 60, "the recommendation did not open New run")
        assert driver.find_element(By.ID, "recipe-text").get_attribute("value").startswith("name: advised-")
        assert driver.execute_script("return window.studioLoadedAt") is not None  # every page's script ran
        print(f"browser test: {time.time() - started:.0f} s from the first page to the last")
    finally:
        driver.quit()
        studio.terminate()
        studio.wait(timeout=30)
