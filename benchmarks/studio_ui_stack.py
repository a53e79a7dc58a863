"""Why the studio is FastAPI + server-rendered HTML + vanilla JS and not Gradio: install size, import time, page weight.

    python benchmarks/studio_ui_stack.py [--workdir /tmp/ui-stack]

Makes two fresh virtual environments from PyPI (`gradio`, and `fastapi uvicorn jinja2`, the
studio's stack) and measures, for each:
  - the bytes of installed packages, and the bytes Gradio would add to attune's own environment
    (its packages that this interpreter does not already have);
  - the import time (median of 3 fresh processes);
  - the page weight of a comparable page in headless Chromium (fresh profile): a Gradio Blocks
    app with a prompt, two answer boxes and three vote buttons, vs the studio's Arena page
    (all bytes the browser fetched, and the number of requests).
Needs network access to PyPI for the two installs, and Debian's chromium + chromedriver.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZES = """
import importlib.metadata as md, json, os
out = {}
for d in md.distributions():
    name = (d.metadata["Name"] or "").lower().replace("_", "-")
    if name in ("pip", "setuptools", "wheel"):
        continue
    size = 0
    for f in d.files or []:
        p = d.locate_file(f)
        if os.path.isfile(p):
            size += os.path.getsize(p)
    out[name] = size
print(json.dumps(out))
"""
GRADIO_APP = """
import gradio as gr, sys
with gr.Blocks() as demo:
    prompt = gr.Textbox(label="prompt")
    with gr.Row():
        a = gr.Textbox(label="A")
        b = gr.Textbox(label="B")
    with gr.Row():
        for label in ("A is better", "Tie", "B is better"):
            gr.Button(label)
demo.launch(server_name="127.0.0.1", server_port=int(sys.argv[1]))
"""
WEIGHT_JS = """
const nav = performance.getEntriesByType('navigation')[0];
const res = performance.getEntriesByType('resource');
return [nav.decodedBodySize + res.reduce((n, e) => n + e.decodedBodySize, 0), 1 + res.length];
"""


def venv(path: Path, packages: list[str]) -> Path:
    if not (path / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
        subprocess.run([str(path / "bin" / "python"), "-m", "pip", "install", "-q", *packages], check=True)
    return path / "bin" / "python"


def sizes(python: str) -> dict[str, int]:
    return json.loads(subprocess.run([python, "-c", SIZES], check=True, capture_output=True, text=True).stdout)


def import_seconds(python: str, modules: str) -> float:
    code = f"import time; t = time.perf_counter(); import {modules}; print(time.perf_counter() - t)"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    runs = [float(subprocess.run([python, "-c", code], check=True, capture_output=True, text=True, env=env).stdout) for _ in range(3)]
    return statistics.median(runs)


def page_weight(url: str) -> tuple[int, int]:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = shutil.which("chromium") or "chromium"
    with tempfile.TemporaryDirectory() as profile:
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
        try:
            driver.get(url)
            time.sleep(5)  # let a single-page app fetch what it fetches after load
            total, requests = driver.execute_script(WEIGHT_JS)
        finally:
            driver.quit()
    return int(total), int(requests)


def serve(cmd: list[str], url_pattern: str, env: dict) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.time() + 300
    while time.time() < deadline:
        line = proc.stdout.readline()
        if m := re.search(url_pattern, line):
            return proc, m.group(0)
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError(f"{cmd[:3]} did not start")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "ui-stack")
    args = parser.parse_args()
    gradio_py = str(venv(args.workdir / "gradio", ["gradio"]))
    stack_py = str(venv(args.workdir / "stack", ["fastapi", "uvicorn", "jinja2"]))
    ours = sizes(sys.executable)
    g, s = sizes(gradio_py), sizes(stack_py)
    added = {k: v for k, v in g.items() if k not in ours}
    version = subprocess.run([gradio_py, "-c", "import gradio; print(gradio.__version__)"], capture_output=True, text=True).stdout.strip()
    mb = 1 / 1e6
    print(f"gradio {version}: {len(g)} packages, {sum(g.values()) * mb:.1f} MB installed; "
          f"{len(added)} packages / {sum(added.values()) * mb:.1f} MB not already in attune's environment "
          f"(largest: {', '.join(f'{k} {v * mb:.1f}' for k, v in sorted(added.items(), key=lambda x: -x[1])[:4])})")
    print(f"fastapi + uvicorn + jinja2: {len(s)} packages, {sum(s.values()) * mb:.1f} MB installed; "
          f"{sum(v for k, v in s.items() if k not in ours) * mb:.1f} MB not already in attune's environment")
    print(f"import: gradio {import_seconds(gradio_py, 'gradio'):.2f} s; "
          f"fastapi + uvicorn + jinja2 {import_seconds(stack_py, 'fastapi, uvicorn, jinja2, fastapi.templating'):.2f} s; "
          f"attune.studio.app {import_seconds(sys.executable, 'attune.studio.app'):.2f} s (medians of 3)")
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        app = Path(tmp) / "app.py"
        app.write_text(GRADIO_APP)
        for name, cmd, pattern in [
            ("gradio Blocks (prompt, 2 answers, 3 buttons)", [gradio_py, str(app), "7990"], r"http://127\.0\.0\.1:7990"),
            ("attune studio /arena", [sys.executable, "-m", "attune", "studio", "--runs", f"{tmp}/runs", "--data", tmp, "--port", "7991"],
             r"http://127\.0\.0\.1:7991/"),
        ]:
            proc, url = serve(cmd, pattern, env)
            try:
                total, requests = page_weight(url.rstrip("/") + ("/arena" if "7991" in url else "/"))
            finally:
                proc.terminate()
                proc.wait(timeout=30)
            print(f"page weight: {name}: {total / 1e3:.0f} kB in {requests} requests")


if __name__ == "__main__":
    main()
