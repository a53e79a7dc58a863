"""Write a merged Llama-family model as a GGUF file (for llama.cpp / Ollama).

transformers can read GGUF (`from_pretrained(dir, gguf_file=...)`) but does not write it, so this
module writes one with the `gguf` package. Metadata keys, tokenizer fields and tensor names mirror a
real llama-family GGUF (the builtin SmolLM2 one): `llama.*` hyperparameters, a `gpt2` BPE tokenizer
(tokens, token types, merges, special ids, chat template), and llama.cpp's q/k row permutation
(the inverse of the one transformers' GGUF loader applies). Tensors are fp32 or f16 (no
quantization); the file is written to a temp name and renamed, so nothing half-written is left.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from attune.errors import AttuneError

SUPPORTED = ("llama",)  # the Llama family: LlamaForCausalLM (SmolLM2, Llama 2/3, ...)
TOKEN_NORMAL, TOKEN_CONTROL, TOKEN_USER_DEFINED = 1, 3, 4


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k permutation (HF rotate-half layout -> interleaved); transformers reverses it on load."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _tokenizer_fields(tokenizer) -> dict:
    backend = json.loads(tokenizer.backend_tokenizer.to_str())
    model = backend["model"]
    if model.get("type") != "BPE":
        raise AttuneError(f"GGUF export supports byte-level BPE tokenizers only, not {model.get('type')!r}")
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


def write_gguf(model, tokenizer, path: Path, *, dtype: str = "f32", name: str | None = None, tokenizer_pre: str = "smollm") -> Path:
    """Write `model` (a transformers Llama-family causal LM) and `tokenizer` to the GGUF file `path`."""
    import gguf
    import torch

    config = model.config
    arch = getattr(config, "model_type", None)
    if arch not in SUPPORTED:
        raise AttuneError(f"GGUF export supports the Llama architecture family only, not {arch!r} ({type(model).__name__})")
    if dtype not in ("f32", "f16"):
        raise AttuneError(f"GGUF dtype must be f32 or f16, not {dtype!r}")
    n_head, n_kv = config.num_attention_heads, config.num_key_value_heads or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_head
    path = Path(path)
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
    writer = gguf.GGUFWriter(str(tmp), arch)
    try:
        writer.add_type(gguf.GGUFType.MODEL)
        writer.add_name(name or path.stem)
        writer.add_block_count(config.num_hidden_layers)
        writer.add_context_length(config.max_position_embeddings)
        writer.add_embedding_length(config.hidden_size)
        writer.add_feed_forward_length(config.intermediate_size)
        writer.add_head_count(n_head)
        writer.add_head_count_kv(n_kv)
        writer.add_rope_freq_base(float(getattr(config, "rope_theta", None) or (config.rope_parameters or {}).get("rope_theta", 10000.0)))
        writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
        writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if dtype == "f16" else gguf.LlamaFileType.ALL_F32)
        writer.add_vocab_size(config.vocab_size)
        writer.add_rope_dimension_count(head_dim)

        fields = _tokenizer_fields(tokenizer)
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

        names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
        tied = bool(getattr(config, "tie_word_embeddings", False))
        for hf_name, tensor in model.state_dict().items():
            if tied and hf_name == "lm_head.weight":
                continue  # llama.cpp reuses token_embd.weight when output.weight is absent
            if "rotary_emb" in hf_name:
                continue
            gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
            if gguf_name is None:
                raise AttuneError(f"GGUF export: no llama.cpp name for tensor {hf_name!r}")
            data = tensor.detach().to(torch.float32).cpu().numpy()
            if hf_name.endswith("q_proj.weight"):
                data = _permute(data, n_head)
            elif hf_name.endswith("k_proj.weight"):
                data = _permute(data, n_kv)
            if dtype == "f16" and data.ndim > 1:  # norms stay f32, as in llama.cpp's converter
                data = data.astype(np.float16)
            writer.add_tensor(gguf_name, np.ascontiguousarray(data))

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
