"""`attune serve --backend vllm`: the same CLI, served by vLLM's OpenAI server on a GPU.

attune builds the `vllm serve` command line (base model directory, `--enable-lora` and one
`--lora-modules name=path` per adapter) and replaces itself with it. vLLM does the batching,
paged KV cache and multi-LoRA kernels; what attune adds on the transformers backend (`mix:`,
`route:`, `rag:`, runtime adapter loading with directory limits) is not available there and is
refused up front rather than silently missing.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from attune.errors import AttuneError
from attune.serve.settings import ServeSettings

LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the values vLLM accepts for --max-lora-rank


def vllm_command(settings: ServeSettings, model_dir: str) -> list[str]:
    """The `vllm serve` argv for these settings (pure: no vLLM needed, unit-tested)."""
    unsupported = {
        "--route": settings.routes, "--rag": settings.rag, "--adapter-dir": settings.adapter_dirs,
        "--admin-key": settings.admin_keys, "--describe": settings.describe,
    }
    given = [flag for flag, value in unsupported.items() if value]
    if given:
        raise AttuneError(f"--backend vllm does not support {', '.join(given)} (they need the transformers backend)")
    if len(settings.api_keys) > 1:
        raise AttuneError("--backend vllm takes a single API key")
    cmd = ["vllm", "serve", model_dir, "--host", settings.host, "--port", str(settings.port),
           "--max-num-seqs", str(settings.max_batch), "--served-model-name", *settings.base_names]
    if settings.adapters:
        ranks = [_rank(Path(p)) for p in settings.adapters.values()]
        max_rank = next((r for r in LORA_RANKS if r >= max(ranks)), None)
        if max_rank is None:
            raise AttuneError(f"adapter rank {max(ranks)} is above vLLM's largest --max-lora-rank ({LORA_RANKS[-1]})")
        cmd += ["--enable-lora", "--max-loras", str(min(settings.max_adapters, len(settings.adapters))),
                "--max-lora-rank", str(max_rank), "--lora-modules"]
        cmd += [f"{n}={Path(p).resolve()}" for n, p in settings.adapters.items()]
    if settings.api_keys:
        cmd += ["--api-key", settings.api_keys[0]]
    return cmd


def _rank(path: Path) -> int:
    from attune.serve.registry import lora_rank

    return lora_rank(path)


def exec_vllm(settings: ServeSettings, dry_run: bool = False) -> list[str]:
    """Check that vLLM can run here, then exec it (or just return the command with `dry_run`)."""
    from attune.models.loading import model_source

    cmd = vllm_command(settings, model_source(settings.model))
    shown = " ".join(cmd if not settings.api_keys else [*cmd[:-1], "***"])
    if dry_run:
        return cmd
    if shutil.which("vllm") is None:
        raise AttuneError(
            "--backend vllm: vLLM is not installed here. It needs an NVIDIA GPU with CUDA: `pip install vllm` there. "
            f"The command attune would run:\n  {shown}\nOn this machine use the default backend (transformers)."
        )
    import torch

    if not torch.cuda.is_available():
        raise AttuneError(f"--backend vllm: no CUDA GPU is visible (vLLM serves on GPUs). The command would be:\n  {shown}")
    print(f"attune: exec {shown}", flush=True)
    os.execvp(cmd[0], cmd)
    return cmd  # not reached

