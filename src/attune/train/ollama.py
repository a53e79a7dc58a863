"""An Ollama Modelfile for a base GGUF plus a GGUF LoRA adapter.

Ollama's TEMPLATE is a Go template, not the Jinja chat template the tokenizer carries, so the
chat-template *family* is recognised by its markers and written as the Go template of that family
(as Unsloth and LLaMA-Factory do). A family's default system prompt (SmolLM2 adds one when the
conversation has none) is found by rendering the Jinja template and becomes `SYSTEM`, so Ollama
sends the model the same prompt as attune. An unknown template family is an error that names it.
"""

from __future__ import annotations

from dataclasses import dataclass

from attune.errors import AttuneError


@dataclass(frozen=True)
class Family:
    marker: str
    template: str
    stops: tuple[str, ...]


FAMILIES = {
    "chatml": Family(
        "<|im_start|>",
        '{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}'
        '{{- range .Messages }}{{- if ne .Role "system" }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}{{ end }}'
        '<|im_start|>assistant\n',
        ("<|im_end|>", "<|im_start|>"),
    ),
    "gemma": Family(
        "<start_of_turn>",
        '{{- range $i, $m := .Messages }}{{- if ne $m.Role "system" }}<start_of_turn>'
        '{{ if eq $m.Role "assistant" }}model{{ else }}{{ $m.Role }}{{ end }}\n'
        '{{ if and $.System (le $i 1) (eq $m.Role "user") }}{{ $.System }}\n\n{{ end }}{{ $m.Content }}<end_of_turn>\n{{ end }}{{ end }}'
        '<start_of_turn>model\n',
        ("<end_of_turn>",),
    ),
    "llama3": Family(
        "<|start_header_id|>",
        '{{- if .System }}<|start_header_id|>system<|end_header_id|>\n\n{{ .System }}<|eot_id|>{{ end }}'
        '{{- range .Messages }}{{- if ne .Role "system" }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n'
        '{{ .Content }}<|eot_id|>{{ end }}{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n',
        ("<|eot_id|>", "<|start_header_id|>"),
    ),
}


def family_of(chat_template: str | None) -> str:
    for name, family in FAMILIES.items():
        if chat_template and family.marker in chat_template:
            return name
    raise AttuneError(
        "Modelfile: the tokenizer's chat template is not one of the families attune writes for Ollama "
        f"({', '.join(FAMILIES)}); write TEMPLATE by hand (https://github.com/ollama/ollama/blob/main/docs/template.md)"
    )


def default_system(tokenizer, family: str) -> str | None:
    """The system prompt the Jinja template adds when a conversation has none (ChatML's SmolLM2 does)."""
    text = tokenizer.apply_chat_template([{"role": "user", "content": "\x00"}], tokenize=False)
    opener = {"chatml": "<|im_start|>system\n", "llama3": "<|start_header_id|>system<|end_header_id|>\n\n"}.get(family)
    if opener is None or opener not in text.split("\x00")[0]:
        return None
    body = text.split(opener, 1)[1]
    return body.split({"chatml": "<|im_end|>", "llama3": "<|eot_id|>"}[family], 1)[0]


def _quote(text: str) -> str:
    return '"""' + text.replace('"""', '\\"\\"\\"') + '"""'


def modelfile(tokenizer, base: str, adapter: str | None) -> str:
    """The Modelfile text: FROM the base GGUF, ADAPTER the LoRA GGUF, TEMPLATE, SYSTEM, PARAMETER stop."""
    name = family_of(getattr(tokenizer, "chat_template", None))
    family = FAMILIES[name]
    lines = [f"FROM {base}"] + ([f"ADAPTER {adapter}"] if adapter else []) + [f"TEMPLATE {_quote(family.template)}"]
    system = default_system(tokenizer, name)
    if system:
        lines.append(f"SYSTEM {_quote(system)}")
    stops = list(dict.fromkeys([*family.stops, *([tokenizer.eos_token] if tokenizer.eos_token else [])]))
    lines += [f'PARAMETER stop "{s}"' for s in stops]
    return "\n".join(lines) + "\n"
