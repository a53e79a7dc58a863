"""`attune export --gguf-adapter`: a PEFT LoRA as a llama.cpp GGUF LoRA adapter, a Modelfile, and Gemma 3 GGUF.

Fast tests read the files back with the `gguf` package and transformers; the slow test loads base +
adapter in llama.cpp itself (llama-cpp-python, built once into the user cache) and compares greedy answers.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from test_serve_engine import save_lora


def test_adapter_gguf_tensors_equal_the_peft_weights(tmp_path, tiny_model):
    import gguf
    from safetensors.numpy import load_file

    from attune.train.gguf_export import _permute, write_lora_gguf

    adapter = save_lora(tiny_model, tmp_path / "lora", seed=1, targets=("q_proj", "k_proj", "v_proj", "down_proj"), r=4)
    path = write_lora_gguf(adapter, tiny_model.config, tmp_path / "adapter.gguf")
    reader = gguf.GGUFReader(str(path))
    assert reader.fields["general.type"].contents() == "adapter"
    assert reader.fields["general.architecture"].contents() == "llama"
    assert reader.fields["adapter.type"].contents() == "lora"
    assert reader.fields["adapter.lora.alpha"].contents() == pytest.approx(8.0)
    got = {t.name: np.array(t.data) for t in reader.tensors}
    peft = load_file(str(adapter / "adapter_model.safetensors"))
    gguf_names = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "down_proj": "ffn_down"}
    expected = {}
    for key, value in peft.items():
        layer = int(key.split(".layers.")[1].split(".")[0])
        module = next(m for m in gguf_names if f".{m}." in key)
        ab = "lora_a" if ".lora_A." in key else "lora_b"
        if ab == "lora_b" and module in ("q_proj", "k_proj"):  # rows permuted like the base q/k weights
            value = _permute(value, 4 if module == "q_proj" else 2)
        expected[f"blk.{layer}.{gguf_names[module]}.weight.{ab}"] = value
    assert set(got) == set(expected) and len(got) == 2 * 2 * 4
    for name, value in expected.items():
        assert got[name].shape == value.shape and np.array_equal(got[name], value), name
    # the permutation is the base weight's: llama.cpp's permuted q weight + B_perm @ A * alpha / r is the permuted merge
    q = tiny_model.model.layers[0].self_attn.q_proj.weight.detach().numpy()
    prefix = "base_model.model.model.layers.0.self_attn.q_proj"
    a, b = peft[f"{prefix}.lora_A.weight"], peft[f"{prefix}.lora_B.weight"]
    merged = _permute(q + b @ a * 8.0 / 4, 4)
    assert np.allclose(_permute(q, 4) + got["blk.0.attn_q.weight.lora_b"] @ got["blk.0.attn_q.weight.lora_a"] * 2.0, merged, atol=1e-6)


def test_rslora_alpha_and_unsupported_adapters(tmp_path, tiny_model):
    from attune.errors import AttuneError
    from attune.train.gguf_export import lora_alpha, write_lora_gguf

    adapter = save_lora(tiny_model, tmp_path / "lora", seed=1, r=4)
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**cfg, "use_rslora": True}))
    assert lora_alpha(adapter) == pytest.approx(8.0 * 2.0)  # llama.cpp's alpha / r == PEFT's alpha / sqrt(r)
    (adapter / "adapter_config.json").write_text(json.dumps({**cfg, "use_dora": True}))
    with pytest.raises(AttuneError, match="plain LoRA only"):
        write_lora_gguf(adapter, tiny_model.config, tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists()


def tiny_gemma3(tokenizer):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, sliding_window=8, max_position_embeddings=512,  # head_dim = query_pre_attn_scalar = 256
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id,
    )
    model = Gemma3ForCausalLM(config).float()
    with torch.no_grad():  # random norms: a +1 shift that went missing would show in the logits
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.normal_(0, 0.3)
    return model


def test_gemma3_gguf_roundtrip_logits(tmp_path, tokenizer):
    """Gemma 3 (sliding windows, q/k norms, norm + 1, tied embeddings): the GGUF loads back with the same logits."""
    import gguf
    from transformers import AutoModelForCausalLM

    from attune.train.gguf_export import write_gguf

    model = tiny_gemma3(tokenizer).eval()
    path = write_gguf(model, tokenizer, tmp_path / "gemma.gguf")
    fields = gguf.GGUFReader(str(path)).fields
    assert fields["general.architecture"].contents() == "gemma3" and fields["gemma3.attention.sliding_window"].contents() == 8
    assert fields["gemma3.attention.key_length"].contents() == 256
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=path.name, dtype=torch.float32).eval()
    ids = torch.tensor([tokenizer("a sliding window longer than eight tokens, so that it matters here")["input_ids"]])
    assert ids.shape[1] > 8
    with torch.no_grad():
        assert float((model(input_ids=ids).logits - loaded(input_ids=ids).logits).abs().max()) <= 1e-4


def test_modelfile_for_chatml(tokenizer):
    from attune.train.ollama import modelfile

    text = modelfile(tokenizer, "./base.gguf", "./adapter.gguf")
    lines = text.splitlines()
    assert lines[:2] == ["FROM ./base.gguf", "ADAPTER ./adapter.gguf"] and lines[2].startswith('TEMPLATE """')
    default = tokenizer.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False)
    system = default.split("<|im_start|>system\n")[1].split("<|im_end|>")[0]
    assert f'SYSTEM """{system}"""' in text
    assert 'PARAMETER stop "<|im_end|>"' in lines


def test_export_command_writes_base_adapter_and_modelfile(tmp_path, tiny_model_dir):
    import gguf
    from typer.testing import CliRunner

    from attune.cli import app
    from attune.recipe import load_recipe
    from attune.train.pipeline import run_recipe
    from test_train_pipeline import _recipe

    run = run_recipe(load_recipe(_recipe(tmp_path, tiny_model_dir, max_steps=1)), show_progress=False)
    res = CliRunner().invoke(app, ["export", str(run), "--gguf-adapter", "-o", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["Modelfile", "adapter.gguf", "base.gguf"]
    assert gguf.GGUFReader(str(out / "base.gguf")).fields["general.type"].contents() == "model"
    names = {t.name for t in gguf.GGUFReader(str(out / "adapter.gguf")).tensors}
    assert "blk.1.ffn_down.weight.lora_b" in names  # targets: all-linear
    res = CliRunner().invoke(app, ["export", str(run), "--gguf-dtype", "f8"])
    assert res.exit_code == 2 and "f32" in res.output and "f16" in res.output


PROMPTS = ["What is the capital of France?", "Write one sentence about the sea.", "List three colours."]


@pytest.mark.slow
def test_llama_cpp_base_plus_adapter_answers_like_attune(tmp_path):
    """The builtin SmolLM2 and a LoRA on it, as base.gguf + adapter.gguf in llama.cpp: the same greedy answers as
    attune's base + PEFT adapter (fp32 both), and the adapter changes the answers (so it is applied)."""
    from llama_cpp_env import llama_cpp

    llama = llama_cpp()
    from peft import LoraConfig, get_peft_model

    from attune.models import GenerationParams, load_generator, load_model
    from attune.train.gguf_export import write_gguf, write_lora_gguf

    loaded = load_model("builtin:smollm2-135m-instruct")
    model, tokenizer = loaded.model.float().eval(), loaded.tokenizer
    torch.manual_seed(0)
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=False))
    with torch.no_grad():  # a moderate change: the answers move, the logits stay far from ties
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.mul_(0.1)
    peft_model.save_pretrained(str(tmp_path / "lora"))
    base = peft_model.unload()
    write_gguf(base, tokenizer, tmp_path / "base.gguf")
    write_lora_gguf(tmp_path / "lora", base.config, tmp_path / "adapter.gguf")

    params = GenerationParams(max_new_tokens=24)
    chats = [[{"role": "user", "content": p}] for p in PROMPTS]
    want = load_generator("builtin:smollm2-135m-instruct", str(tmp_path / "lora")).generate(chats, params)
    plain = load_generator("builtin:smollm2-135m-instruct").generate(chats, params)
    assert want != plain

    llm = llama.Llama(model_path=str(tmp_path / "base.gguf"), lora_path=str(tmp_path / "adapter.gguf"), n_ctx=512,
                      n_threads=2, verbose=False)
    got = []
    for chat in chats:
        ids = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True, return_dict=False)
        out: list[int] = []
        for token in llm.generate(list(ids), top_k=1, temp=0.0, repeat_penalty=1.0, reset=True):
            if token == tokenizer.eos_token_id or len(out) == params.max_new_tokens:
                break
            out.append(token)
        got.append(tokenizer.decode(out, skip_special_tokens=True))
    assert [g.strip() for g in got] == [w.strip() for w in want]
