"""llama.cpp's `llama-server` as the CPU serving peer: built from source here, serving attune's GGUF.

    python benchmarks/llamacpp.py --build      # build (or find) llama-server and print its path

The sources are the llama.cpp tree vendored in the `llama-cpp-python` sdist (a registry package:
`pip download --no-binary :all:`), configured with CMake for this CPU (`GGML_NATIVE`) and built for
the `llama-server` target only; the build is cached under benchmarks/out/llama.cpp/ and timed. No
binary is downloaded. The model is the builtin SmolLM2 written by attune's own GGUF exporter
(`attune.train.gguf_export.write_gguf`, f32 or f16), so llama.cpp and attune serve the same weights.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out" / "llama.cpp"
SDIST = "llama-cpp-python"


class Unavailable(Exception):
    """llama.cpp cannot be built or started on this machine; the message says why."""


def build_llama_server(out: Path = OUT) -> tuple[Path, float]:
    """Path of a llama-server built from source, and the build's seconds (0 for a cached build)."""
    exe = out / "build" / "bin" / "llama-server"
    if exe.is_file():
        return exe, 0.0
    for tool in ("cmake", "c++"):
        if shutil.which(tool) is None:
            raise Unavailable(f"no `{tool}` on PATH (apt-get install cmake g++)")
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    sdists = sorted(out.glob("llama_cpp_python-*.tar.gz"))
    if not sdists:
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", SDIST,
                               "-d", str(out)], capture_output=True, text=True)
        sdists = sorted(out.glob("llama_cpp_python-*.tar.gz"))
        if proc.returncode or not sdists:
            raise Unavailable(f"could not download the {SDIST} sdist: {proc.stderr.strip()[-300:]}")
    src = out / sdists[-1].name.removesuffix(".tar.gz") / "vendor" / "llama.cpp"
    if not src.is_dir():
        with tarfile.open(sdists[-1]) as tar:
            tar.extractall(out, filter="data")
    build = out / "build"
    steps = [
        ["cmake", "-S", str(src), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=ON", "-DLLAMA_CURL=OFF",
         "-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DBUILD_SHARED_LIBS=OFF"],
        ["cmake", "--build", str(build), "--target", "llama-server", "-j", str(os.cpu_count() or 2)],
    ]
    for cmd in steps:
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            raise Unavailable(f"`{' '.join(cmd[:3])} ...` failed: {(proc.stderr or proc.stdout).strip()[-600:]}")
    if not exe.is_file():
        raise Unavailable(f"the build finished but {exe} is missing")
    return exe, time.perf_counter() - start


def export_gguf(model_ref: str, path: Path, dtype: str = "f32") -> Path:
    """The model written as GGUF by attune's exporter (the file llama.cpp serves)."""
    if path.is_file():
        return path
    from attune.models import load_model
    from attune.train.gguf_export import write_gguf

    loaded = load_model(model_ref)
    return write_gguf(loaded.model, loaded.tokenizer, path, dtype=dtype)


def start_llama_server(exe: Path, gguf: Path, port: int, slots: int, ctx_per_slot: int) -> subprocess.Popen:
    """`llama-server` with `slots` parallel slots (continuous batching) on 127.0.0.1, once healthy."""
    import httpx

    threads = str(os.cpu_count() or 2)
    cmd = [str(exe), "-m", str(gguf), "--host", "127.0.0.1", "--port", str(port), "-np", str(slots),
           "-c", str(slots * ctx_per_slot), "-t", threads, "-tb", threads, "--cont-batching", "--no-webui"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise Unavailable(f"llama-server exited: {proc.stderr.read()[-1500:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.terminate()
    raise Unavailable("llama-server did not become healthy in 300 s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", action="store_true", help="build (or find) llama-server and print its path")
    args = ap.parse_args()
    if args.build:
        try:
            exe, seconds = build_llama_server()
        except Unavailable as err:
            raise SystemExit(f"llama.cpp unavailable: {err}") from None
        print(f"{exe} ({'cached' if not seconds else f'built in {seconds:.0f} s'})")


if __name__ == "__main__":
    main()
