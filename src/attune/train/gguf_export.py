"""Write a model as a GGUF file, and a PEFT LoRA as a GGUF LoRA adapter (for llama.cpp / Ollama).

transformers can read GGUF (`from_pretrained(dir, gguf_file=...)`) but does not write it, so this
module writes one with the `gguf` package. Metadata keys, tokenizer fields and tensor names follow
llama.cpp's own converter (`convert_hf_to_gguf.py`): per-architecture hyperparameters (`ARCHS`:
Llama, Gemma 3), a `gpt2` byte-level BPE tokenizer (tokens, token types, merges, special ids, chat
template), llama.cpp's q/k row permutation for Llama (the inverse of the one transformers' GGUF
loader applies) and Gemma's `norm + 1` weights. A LoRA adapter (`write_lora_gguf`) follows
`convert_lora_to_gguf.py`: `general.type = adapter`, `adapter.type = lora`, `adapter.lora.alpha`, and
each target's A and B as `<base tensor>.lora_a` / `.lora_b`, B's rows permuted like its base weight's.
Tensors are fp32 or f16 (no quantization); files are written to a temp name and renamed, so nothing
half-written is left.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from attune.errors import AttuneError

TOKEN_NORMAL, TOKEN_CONTROL, TOKEN_USER_DEFINED = 1, 3, 4


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k permutation (HF rotate-half layout -> interleaved); transformers reverses it on load."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _rope_theta(config, kind: str = "full_attention") -> float:
    params = getattr(config, "rope_parameters", None) or {}
    params = params.get(kind, params)
    return float(getattr(config, "rope_theta", None) or params.get("rope_theta", 10000.0))


def _llama_hparams(writer, config) -> None:
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    writer.add_rope_freq_base(_rope_theta(config))
    writer.add_rope_dimension_count(head_dim)


def _gemma3_hparams(writer, config) -> None:
    """As llama.cpp's Gemma3Model: key/value length = head_dim, the sliding window, linear rope scaling."""
    import gguf

    if config.query_pre_attn_scalar != config.head_dim:  # Gemma 3 27B: llama.cpp special-cases it by size
        raise AttuneError(f"GGUF export of Gemma 3 needs query_pre_attn_scalar == head_dim (llama.cpp scales queries by "
                          f"1/sqrt(head_dim)); this model has {config.query_pre_attn_scalar} and {config.head_dim}")
    writer.add_key_length(config.head_dim)
    writer.add_value_length(config.head_dim)
    writer.add_rope_freq_base(_rope_theta(config))
    writer.add_sliding_window(config.sliding_window)
    full = (getattr(config, "rope_parameters", None) or {}).get("full_attention", {})
    if full.get("rope_type") == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(full["factor"]))


@dataclass(frozen=True)
class Arch:
    """How one transformers architecture becomes llama.cpp's."""

    gguf: str  # gguf.MODEL_ARCH member
    hparams: Callable[[Any, Any], None]
    permute_qk: bool  # llama.cpp's Llama graph uses interleaved rope: q/k rows permuted
    norm_shift: float  # Gemma stores RMSNorm weights as w and computes (1 + w); llama.cpp wants 1 + w


ARCHS = {
    "llama": Arch("LLAMA", _llama_hparams, True, 0.0),  # LlamaForCausalLM (SmolLM2, Llama 2/3, ...)
    "gemma3_text": Arch("GEMMA3", _gemma3_hparams, False, 1.0),  # Gemma3ForCausalLM (Gemma 3 270M / 1B text)
}


def _arch(config) -> Arch:
    model_type = getattr(config, "model_type", None)
    if model_type not in ARCHS:
        raise AttuneError(f"GGUF export supports the architectures {', '.join(ARCHS)}, not {model_type!r}")
    return ARCHS[model_type]


def _tokenizer_fields(tokenizer) -> dict:
    backend = json.loads(tokenizer.backend_tokenizer.to_str())
    model = backend["model"]
    if model.get("type") != "BPE" or model.get("byte_fallback"):
        kind = "SentencePiece-style (byte fallback)" if model.get("byte_fallback") else repr(model.get("type"))
        raise AttuneError(f"GGUF export writes byte-level BPE tokenizers (llama.cpp's gpt2 type) only, not {kind}")
    vocab = tokenizer.get_vocab()
    size = max(vocab.values()) + 1
    tokens = [""] * size
    for tok, i in vocab.items():
        tokens[i] = tok
    types = [TOKEN_NORMAL] * size
    for i, added in tokenizer.added_tokens_decoder.items():
        types[i] = TOKEN_CONTROL if added.special else TOKEN_USER_DEFINED
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    return {"tokens": tokens, "types": types, "merges": merges}


def _tensor_names(arch: Arch, config):
    import gguf

    return gguf.get_tensor_name_map(getattr(gguf.MODEL_ARCH, arch.gguf), config.num_hidden_layers)


def _gguf_name(names, hf_name: str) -> str:
    gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
    if gguf_name is None:
        raise AttuneError(f"GGUF export: no llama.cpp name for tensor {hf_name!r}")
    return gguf_name


def _atomic(path: Path, arch_name: str, fill: Callable[[Any], None]) -> Path:
    """Write a GGUF through `fill(writer)` to a temp name, then rename it into place."""
    import gguf

    path = Path(path)
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
    writer = gguf.GGUFWriter(str(tmp), arch_name)
    try:
        fill(writer)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, path)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    return path


def _check_dtype(dtype: str) -> None:
    if dtype not in ("f32", "f16"):
        raise AttuneError(f"GGUF dtype must be f32 or f16, not {dtype!r}")


def write_gguf(model, tokenizer, path: Path, *, dtype: str = "f32", name: str | None = None, tokenizer_pre: str = "smollm") -> Path:
    """Write `model` (a transformers causal LM of an architecture in `ARCHS`) and `tokenizer` to the GGUF file `path`."""
    import gguf
    import torch

    config = model.config
    arch = _arch(config)
    _check_dtype(dtype)
    n_head, n_kv = config.num_attention_heads, config.num_key_value_heads or config.num_attention_heads
    fields = _tokenizer_fields(tokenizer)

    def fill(writer) -> None:
        writer.add_type(gguf.GGUFType.MODEL)
        writer.add_name(name or Path(path).stem)
        writer.add_block_count(config.num_hidden_layers)
        writer.add_context_length(config.max_position_embeddings)
        writer.add_embedding_length(config.hidden_size)
        writer.add_feed_forward_length(config.intermediate_size)
        writer.add_head_count(n_head)
        writer.add_head_count_kv(n_kv)
        writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
        writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if dtype == "f16" else gguf.LlamaFileType.ALL_F32)
        writer.add_vocab_size(config.vocab_size)
        arch.hparams(writer, config)

        writer.add_add_space_prefix(False)
        writer.add_add_bos_token(False)
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(tokenizer_pre)
        writer.add_token_list(fields["tokens"])
        writer.add_token_types(fields["types"])
        writer.add_token_merges(fields["merges"])
        for token_id, add in (
            (tokenizer.bos_token_id, writer.add_bos_token_id),
            (tokenizer.eos_token_id, writer.add_eos_token_id),
            (tokenizer.unk_token_id, writer.add_unk_token_id),
            (tokenizer.pad_token_id, writer.add_pad_token_id),
        ):
            if token_id is not None:
                add(int(token_id))
        if getattr(tokenizer, "chat_template", None):
            writer.add_chat_template(tokenizer.chat_template)

        names = _tensor_names(arch, config)
        tied = bool(getattr(config, "tie_word_embeddings", False))
        for hf_name, tensor in model.state_dict().items():
            if tied and hf_name == "lm_head.weight":
                continue  # llama.cpp reuses token_embd.weight when output.weight is absent
            if "rotary_emb" in hf_name:
                continue
            gguf_name = _gguf_name(names, hf_name)
            data = tensor.detach().to(torch.float32).cpu().numpy()
            if arch.permute_qk and hf_name.endswith("q_proj.weight"):
                data = _permute(data, n_head)
            elif arch.permute_qk and hf_name.endswith("k_proj.weight"):
                data = _permute(data, n_kv)
            if arch.norm_shift and hf_name.endswith("norm.weight"):
                data = data + arch.norm_shift
            if dtype == "f16" and data.ndim > 1:  # norms stay f32, as in llama.cpp's converter
                data = data.astype(np.float16)
            writer.add_tensor(gguf_name, np.ascontiguousarray(data))

    return _atomic(Path(path), gguf.MODEL_ARCH_NAMES[getattr(gguf.MODEL_ARCH, arch.gguf)], fill)


def lora_tensors(adapter_dir: Path, config) -> dict[str, np.ndarray]:
    """The GGUF tensors of a PEFT LoRA: `<llama.cpp base tensor>.lora_a` (r, in) and `.lora_b` (out, r), fp32.

    Raises for what llama.cpp's LoRA format cannot hold: DoRA, bias, embedding or LM-head targets.
    """
    from safetensors.numpy import load_file

    adapter_dir = Path(adapter_dir)
    cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    if cfg.get("peft_type") != "LORA" or cfg.get("use_dora"):
        kind = "DoRA" if cfg.get("use_dora") else cfg.get("peft_type")
        raise AttuneError(f"{adapter_dir}: GGUF adapters hold plain LoRA only (llama.cpp), not {kind}")
    arch = _arch(config)
    names = _tensor_names(arch, config)
    n_head, n_kv = config.num_attention_heads, config.num_key_value_heads or config.num_attention_heads
    out: dict[str, np.ndarray] = {}
    for key, value in load_file(str(adapter_dir / "adapter_model.safetensors")).items():
        part = ".lora_A.weight" if ".lora_A." in key else ".lora_B.weight" if ".lora_B." in key else None
        if part is None:
            raise AttuneError(f"{adapter_dir}: tensor {key!r} is not a LoRA A/B matrix (llama.cpp adapters hold only those)")
        hf_name = key.removeprefix("base_model.model.").replace(part, ".weight")
        if "embed_tokens" in hf_name or "lm_head" in hf_name:
            raise AttuneError(f"{adapter_dir}: LoRA on {hf_name} (embeddings / LM head) is not supported in GGUF adapters")
        data = value.astype(np.float32)
        if part == ".lora_B.weight" and arch.permute_qk and hf_name.endswith("q_proj.weight"):
            data = _permute(data, n_head)  # B's rows are the base weight's rows: the same permutation
        elif part == ".lora_B.weight" and arch.permute_qk and hf_name.endswith("k_proj.weight"):
            data = _permute(data, n_kv)
        out[_gguf_name(names, hf_name) + (".lora_a" if part == ".lora_A.weight" else ".lora_b")] = data
    return out


def lora_alpha(adapter_dir: Path) -> float:
    """llama.cpp scales by alpha / r; for rsLoRA (alpha / sqrt(r)) the equivalent alpha is alpha * sqrt(r)."""
    cfg = json.loads((Path(adapter_dir) / "adapter_config.json").read_text())
    if cfg.get("rank_pattern") or cfg.get("alpha_pattern"):
        raise AttuneError(f"{adapter_dir}: per-module ranks / alphas cannot be written as one GGUF adapter.lora.alpha")
    alpha = float(cfg["lora_alpha"])
    return alpha * float(cfg["r"]) ** 0.5 if cfg.get("use_rslora") else alpha


def write_lora_gguf(adapter_dir: Path, config, path: Path, *, dtype: str = "f32", name: str | None = None) -> Path:
    """Write the PEFT LoRA in `adapter_dir` (trained on a model with `config`) as a llama.cpp GGUF LoRA adapter."""
    import gguf

    _check_dtype(dtype)
    arch = _arch(config)
    tensors = lora_tensors(adapter_dir, config)
    alpha = lora_alpha(adapter_dir)

    def fill(writer) -> None:
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
        writer.add_name(name or Path(path).stem)
        writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if dtype == "f16" else gguf.LlamaFileType.ALL_F32)
        for tensor_name, data in tensors.items():
            writer.add_tensor(tensor_name, data.astype(np.float16) if dtype == "f16" else data)

    return _atomic(Path(path), gguf.MODEL_ARCH_NAMES[getattr(gguf.MODEL_ARCH, arch.gguf)], fill)
