"""Records -> token ids and labels: chat templates and loss masks.

Assistant spans are found generically, not by hard-coding any template: the conversation is
rendered with the tokenizer's chat template, and each assistant turn's character span is the
text between "everything before it + generation prompt" and "everything up to and including
it" (so the span holds the reply and the template's end-of-turn marker, which teaches the model
to stop; whitespace after the marker is left out). The text is tokenized piece by piece, cut at
those span edges.

A model without a chat template (a pretrained-only base such as Gemma-3-270M) gets attune's plain
template, the same in training, generation, evaluation and serving, so a base model instruction-tuned
here answers in the format it was trained on:

    User: What is the capital of France?
    Assistant: Paris.<eos>

The generation prompt ends at "Assistant:" (no trailing space: a base model predicts " Paris" after
"Assistant:", but nothing sensible after "Assistant: "), and "\nUser:" is a stop string, because a
base model that never learned to emit EOS goes on writing the next turn itself.

Every token sequence that starts a document gets the special prefix the tokenizer adds on its own
(Gemma's and Llama's BOS; nothing for SmolLM2): Gemma without BOS produces garbage. Text rendered by
a chat template that already writes the BOS is not given a second one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from attune.data.records import ChatRecord, CompletionRecord, Message, PreferenceRecord, Record, TextRecord
from attune.errors import AttuneError

IGNORE = -100
Supervise = Literal["assistant", "all", "last"]


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    truncated: bool


@dataclass
class EncodedPreference:
    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]
    truncated: bool


PLAIN_ROLES = {"system": "System", "user": "User", "assistant": "Assistant"}
PLAIN_STOP = "\nUser:"


def has_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def render_chat(tokenizer: Any, messages: list[Message], add_generation_prompt: bool = False) -> str:
    """The exact text a model sees for `messages`: its chat template, else the plain template above."""
    if has_template(tokenizer):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    eos = tokenizer.eos_token or ""
    text = "".join(
        f"{PLAIN_ROLES[m['role']]}: {m['content']}" + (eos if m["role"] == "assistant" else "") + "\n" for m in messages
    )
    return text + ("Assistant:" if add_generation_prompt else "")


def chat_stop(tokenizer: Any) -> list[str]:
    """Stop strings a chat prompt needs beyond EOS: the plain template's next-turn marker."""
    return [] if has_template(tokenizer) else [PLAIN_STOP]


def special_prefix(tokenizer: Any) -> list[int]:
    """The special token ids the tokenizer puts before any text (a BOS), found by asking it."""
    plain = _plain_ids(tokenizer, "a")
    full = tokenizer("a")["input_ids"]
    for i in range(len(full) - len(plain) + 1):
        if full[i : i + len(plain)] == plain:
            return list(full[:i])
    return []


def missing_prefix(tokenizer: Any, ids: list[int]) -> list[int]:
    """The special prefix, unless `ids` already start with it (a template that writes the BOS itself)."""
    prefix = special_prefix(tokenizer)
    return [] if ids[: len(prefix)] == prefix else prefix


def document_ids(tokenizer: Any, text: str) -> list[int]:
    """Token ids of `text` as the start of a document: the tokenizer's special prefix, then the text."""
    ids = _plain_ids(tokenizer, text)
    return missing_prefix(tokenizer, ids) + ids


def _assistant_spans(tokenizer: Any, messages: list[Message], supervise: Supervise) -> tuple[str, list[tuple[int, int]]]:
    full = render_chat(tokenizer, messages)
    if supervise == "all":
        return full, [(0, len(full))]
    turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if supervise == "last":
        turns = turns[-1:]
    spans = []
    for i in turns:
        start = len(render_chat(tokenizer, messages[:i], add_generation_prompt=True))
        upto = render_chat(tokenizer, messages[: i + 1])
        if not full.startswith(upto) or start > len(upto):
            raise AttuneError(
                "this chat template does not render conversations prefix-consistently; "
                "use supervise: all or a completion-format dataset"
            )
        # The reply and its end-of-turn marker; whitespace the template puts after the marker
        # (ChatML's and Gemma's "\n") is never generated, so it carries no loss.
        spans.append((start, max(start, len(upto.rstrip()))))
    return full, spans


def encode_chat(tokenizer: Any, messages: list[Message], *, max_length: int, supervise: Supervise = "assistant") -> Encoded:
    """Token ids of the rendered conversation; labels only inside supervised spans.

    The text is tokenized segment by segment, cut at span edges, exactly as generation sees it:
    the prompt up to the assistant header alone, then the reply. (Tokenizing the whole text at
    once can merge the header's newline with the reply's first word into one token that never
    occurs at inference.)
    """
    text, spans = _assistant_spans(tokenizer, messages, supervise)
    ids: list[int] = []
    labels: list[int] = []
    at = 0
    for start, end in [*spans, (len(text), len(text))]:
        for lo, hi, learn in ((at, start, False), (start, end, True)):
            if hi > lo:
                piece = _plain_ids(tokenizer, text[lo:hi])
                ids += piece
                labels += piece if learn else [IGNORE] * len(piece)
        at = end
    prefix = missing_prefix(tokenizer, ids)
    ids, labels = prefix + ids, [IGNORE] * len(prefix) + labels
    truncated = len(ids) > max_length
    return Encoded(ids[:max_length], labels[:max_length], truncated)


def _plain_ids(tokenizer: Any, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _eos(tokenizer: Any) -> list[int]:
    return [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []


def encode_completion(tokenizer: Any, prompt: str, completion: str, *, max_length: int) -> Encoded:
    """Raw prompt + completion + EOS; loss on the completion and EOS only."""
    p = document_ids(tokenizer, prompt)
    c = _plain_ids(tokenizer, completion) + _eos(tokenizer)
    ids, labels = p + c, [IGNORE] * len(p) + c
    return Encoded(ids[:max_length], labels[:max_length], len(ids) > max_length)


def encode_text(tokenizer: Any, text: str, *, max_length: int) -> Encoded:
    """Raw text + EOS, every token after the special prefix supervised (continued pretraining)."""
    body = _plain_ids(tokenizer, text) + _eos(tokenizer)
    prefix = missing_prefix(tokenizer, body)
    ids, labels = prefix + body, [IGNORE] * len(prefix) + body
    return Encoded(ids[:max_length], labels[:max_length], len(ids) > max_length)


def encode_record(tokenizer: Any, record: Record, *, max_length: int, supervise: Supervise = "assistant") -> Encoded:
    """Dispatch on the record kind (chat, completion, text)."""
    if isinstance(record, ChatRecord):
        return encode_chat(tokenizer, record.messages, max_length=max_length, supervise=supervise)
    if isinstance(record, CompletionRecord):
        return encode_completion(tokenizer, record.prompt, record.completion, max_length=max_length)
    if isinstance(record, TextRecord):
        return encode_text(tokenizer, record.text, max_length=max_length)
    raise AttuneError(f"{record.source}: a {record.kind} record cannot be encoded for language modelling")


def encode_prompt(tokenizer: Any, messages: list[Message]) -> list[int]:
    """The generation prompt (template + assistant header) for RL rollouts and distillation."""
    return document_ids(tokenizer, render_chat(tokenizer, messages, add_generation_prompt=True))


def _reply_ids(tokenizer: Any, prompt: list[Message], prompt_text: str, reply: str) -> list[int]:
    full = render_chat(tokenizer, prompt + [{"role": "assistant", "content": reply}])
    if full.startswith(prompt_text):
        return _plain_ids(tokenizer, full[len(prompt_text) :].rstrip())
    return _plain_ids(tokenizer, reply) + _eos(tokenizer)


def encode_preference(tokenizer: Any, record: PreferenceRecord, *, max_length: int) -> EncodedPreference:
    """Prompt ids and the two reply ids (with end-of-turn); the prompt is cut from the left first."""
    prompt_text = render_chat(tokenizer, record.prompt, add_generation_prompt=True)
    prompt = document_ids(tokenizer, prompt_text)
    chosen = _reply_ids(tokenizer, record.prompt, prompt_text, record.chosen)
    rejected = _reply_ids(tokenizer, record.prompt, prompt_text, record.rejected)
    longest = max(len(chosen), len(rejected))
    truncated = len(prompt) + longest > max_length
    if truncated:
        keep = max(0, max_length - longest)
        prompt = prompt[len(prompt) - keep :] if keep else []
        room = max_length - len(prompt)
        chosen, rejected = chosen[:room], rejected[:room]
    return EncodedPreference(prompt, chosen, rejected, truncated)
