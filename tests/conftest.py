"""Shared fixtures: a tiny random Llama model on the builtin tokenizer, built in-process.

Unit tests never download anything and never load the builtin weights; tests marked `slow`
use the builtin SmolLM2-135M-Instruct.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

BUILTIN = "builtin:smollm2-135m-instruct"


@pytest.fixture(autouse=True)
def _accelerate_back_to_fp32():
    """Accelerate keeps one process-wide mixed-precision setting: a stage whose `precision: auto` chose bf16
    (on a CPU with fast bf16, e.g. AVX512-BF16 or AMX) would leave it to every later `Accelerator(cpu=True)`
    in this process. Each test starts from fp32, as it would in a process of its own."""
    yield
    from attune.train.pipeline import allow_new_precision

    allow_new_precision("no")


@pytest.fixture(autouse=True)
def _bitsandbytes_gate_opened():
    """A CLI call made in this process (CliRunner) keeps bitsandbytes out of it (attune.bitsandbytes_gate);
    open the gate again after each test, so that tests which import bitsandbytes see it installed."""
    yield
    from attune.bitsandbytes_gate import let_bitsandbytes_in

    try:
        let_bitsandbytes_in()
    except ImportError:  # not installed: nothing was hidden
        pass


@pytest.fixture(scope="session")
def tokenizer():
    """The builtin SmolLM2 tokenizer (with its ChatML chat template)."""
    from attune.models import load_tokenizer

    return load_tokenizer(BUILTIN)


def make_tiny_model(tokenizer, seed: int = 0, hidden: int = 64, layers: int = 2):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config).float()


@pytest.fixture
def tiny_model(tokenizer):
    """A fresh random 2-layer Llama (hidden 64) sharing the builtin tokenizer's vocabulary."""
    return make_tiny_model(tokenizer)


@pytest.fixture
def tiny_model_dir(tmp_path, tiny_model, tokenizer):
    """The tiny model saved as a local model directory (a valid `--model` reference)."""
    path = tmp_path / "tiny-model"
    tiny_model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
