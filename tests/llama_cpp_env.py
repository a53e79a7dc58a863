"""llama-cpp-python for the llama.cpp round-trip test: imported if installed, else built once into the user cache.

PyPI ships llama-cpp-python as an sdist only; building it compiles llama.cpp (~7 min on 2 cores). The
build goes to `<user cache>/attune/llama-cpp-python-<version>` (outside the repo, reused by later runs);
where cmake or a C++ compiler is missing, or the build fails, the test is skipped with the reason.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

VERSION = "0.3.36"
CMAKE_ARGS = "-DLLAVA_BUILD=OFF -DMTMD_BUILD=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF"


def cache_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("attune")) / f"llama-cpp-python-{VERSION}"


def llama_cpp():
    """The `llama_cpp` module, or pytest.skip with the reason it cannot be had here."""
    try:
        return importlib.import_module("llama_cpp")
    except ImportError:
        pass
    target = cache_dir()
    if not target.is_dir():
        missing = [tool for tool in ("cmake", "c++") if shutil.which(tool) is None]
        if missing:
            pytest.skip(f"llama-cpp-python is not installed and cannot be built here: {', '.join(missing)} not found")
        tmp = target.with_name(target.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        env = {**os.environ, "CMAKE_ARGS": CMAKE_ARGS, "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 2)}
        cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(tmp), f"llama-cpp-python=={VERSION}", "diskcache"]
        try:  # ~7 min on 2 idle cores; bounded so a starved machine skips instead of eating the CI budget
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200)
        except subprocess.TimeoutExpired:
            pytest.skip(f"building llama-cpp-python {VERSION} took over 20 minutes here; skipped")
        if done.returncode != 0:
            pytest.skip(f"building llama-cpp-python {VERSION} failed: {done.stderr[-800:]}")
        os.replace(tmp, target)
    sys.path.insert(0, str(target))
    return importlib.import_module("llama_cpp")
