"""Model references, the builtin GGUF cache, generation, chat and clear errors."""

from __future__ import annotations

import io

import pytest

from attune.errors import AttuneError
from attune.models import parse_model_ref
from attune.models.adapters_io import load_adapter, write_fingerprint


def test_reference_kinds(tmp_path, tiny_model_dir):
    assert parse_model_ref("builtin:smollm2-135m-instruct").kind == "builtin"
    assert parse_model_ref(str(tiny_model_dir)).kind == "local"
    assert parse_model_ref("HuggingFaceTB/SmolLM2-135M").kind == "hub"
    api = parse_model_ref("openai:gpt-x@http://127.0.0.1:8000/v1")
    assert (api.kind, api.name, api.base_url, api.has_weights) == ("openai", "gpt-x", "http://127.0.0.1:8000/v1", False)
    with pytest.raises(AttuneError, match="directory has no config.json"):
        parse_model_ref(str(tmp_path))
    with pytest.raises(AttuneError, match="expected openai:MODEL@http://host:port/v1"):
        parse_model_ref("openai:gpt-x")
    with pytest.raises(AttuneError, match="GGUF file not found"):
        parse_model_ref(str(tmp_path / "m.gguf"))


def test_hub_id_without_network_says_how_to_use_a_local_copy(monkeypatch):
    from attune.models import load_tokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    expected = r"could not load 'no-such-org/no-such-model' from the Hugging Face hub .* pass the directory instead"
    with pytest.raises(AttuneError, match=expected):
        load_tokenizer("no-such-org/no-such-model")


def test_unknown_builtin_lists_known():
    from attune.models import load_model

    with pytest.raises(AttuneError, match=r"unknown builtin model 'builtin:nope'; known: builtin:smollm2-135m-instruct"):
        load_model("builtin:nope")


def test_api_only_model_refuses_weights():
    from attune.models import load_model

    with pytest.raises(AttuneError, match="is API-only"):
        load_model("openai:m@http://127.0.0.1:1/v1")


def test_generation_and_stop_strings(tiny_model, tokenizer):
    from attune.models import GenerationParams, HFGenerator

    gen = HFGenerator(tiny_model, tokenizer, "tiny", batch_size=2)
    prompts = [[{"role": "user", "content": "hi"}], "raw text", [{"role": "user", "content": "a longer question here"}]]
    outs = gen.generate(prompts, GenerationParams(max_new_tokens=5))
    assert len(outs) == 3 and all(isinstance(o, str) for o in outs)
    assert gen.generate(prompts[:1], GenerationParams(max_new_tokens=5)) == outs[:1]  # batching does not change greedy output
    assert "<|im_start|>assistant" in gen.render(prompts[0])


def test_wrong_base_adapter_is_refused(tmp_path, tiny_model, tokenizer):
    from peft import LoraConfig, get_peft_model

    from conftest import make_tiny_model

    other = make_tiny_model(tokenizer, hidden=32)
    peft_model = get_peft_model(other, LoraConfig(r=2, target_modules=["q_proj"]))
    peft_model.save_pretrained(tmp_path / "a")
    write_fingerprint(tmp_path / "a", other)
    with pytest.raises(AttuneError, match=r"was made for another base model \(hidden_size: adapter 32 vs model 64"):
        load_adapter(tiny_model, tmp_path / "a")
    (tmp_path / "a" / "attune_adapter.json").unlink()  # a plain PEFT adapter: PEFT's shape check, as a clear error
    with pytest.raises(AttuneError, match="does not fit this base model"):
        load_adapter(make_tiny_model(tokenizer), tmp_path / "a")


def test_chat_session_commands(tiny_model_dir):
    from rich.console import Console

    from attune.chat import run_chat

    out = io.StringIO()
    run_chat(str(tiny_model_dir), None, None, 4, 0.0, stdin=io.StringIO("hello\n/system be brief\n/reset\nhi\n/exit\nnever\n"),
             out=Console(file=out, width=200))
    text = out.getvalue()
    assert text.count("bot>") == 2 and "(system prompt set; conversation reset)" in text and "never" not in text


@pytest.mark.slow
def test_builtin_model_answers_and_cache_is_fast():
    """The builtin model answers a simple question sensibly; a cached load takes well under a second or two."""
    import time

    from attune.models import GenerationParams, load_generator, load_model

    t = time.perf_counter()
    load_model("builtin:smollm2-135m-instruct")
    assert time.perf_counter() - t < 5  # cache hit (the one-time GGUF dequantization takes ~17 s)
    gen = load_generator("builtin:smollm2-135m-instruct")
    answer = gen.generate([[{"role": "user", "content": "What is the capital of France?"}]], GenerationParams(max_new_tokens=16))[0]
    assert "Paris" in answer
