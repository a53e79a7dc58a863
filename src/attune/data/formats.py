"""Detect a row's format and convert it into a canonical record, or say exactly what is wrong.

Accepted shapes (one JSON object per record):
  chat         {"messages": [{"role": "user", "content": "..."}, {"role": "assistant", ...}]}
               or ShareGPT {"conversations": [{"from": "human", "value": "..."}, {"from": "gpt", ...}]}
  instruction  {"instruction": "...", "input": "...", "output": "..."}  (alpaca)               -> chat
  completion   {"prompt": "...", "completion": "..."}
  preference   {"prompt": "..." | [messages], "chosen": "..." | [messages], "rejected": ...}
  prompt       {"prompt": "..." | [messages], "answer": "..."?}
  text         {"text": "..."} (or the field named by `text_field`), or a .txt/.md document
"""

from __future__ import annotations

from typing import Any

from attune.data.records import (
    ChatRecord,
    CompletionRecord,
    DataError,
    Message,
    PreferenceRecord,
    Problem,
    PromptRecord,
    Record,
    TextRecord,
)

FORMATS = ("chat", "instruction", "completion", "preference", "prompt", "text")
_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
_ROLES = ("system", "user", "assistant")


def guess_format(row: dict[str, Any], text_field: str = "text") -> str | None:
    """The format a row's fields suggest, or None."""
    keys = set(row)
    if "messages" in keys or "conversations" in keys:
        return "chat"
    if {"chosen", "rejected"} & keys:
        return "preference"
    if "instruction" in keys:
        return "instruction"
    if "completion" in keys:
        return "completion"
    if "prompt" in keys:
        return "prompt"
    if text_field in keys:
        return "text"
    return None


def detect_format(row: dict[str, Any], text_field: str = "text", source: str = "") -> str:
    """The format a row's fields imply: chat, instruction, completion, preference, prompt or text.

    Raises `DataError` (naming `source`, the row's "path:line") when the fields fit none.
    """
    fmt = guess_format(row, text_field) if isinstance(row, dict) else None
    if fmt is None:
        fields = sorted(row) if isinstance(row, dict) else type(row).__name__
        raise DataError([Problem(
            source or "record", "",
            f"cannot tell the format from fields {fields}; expected messages, conversations, "
            f"instruction/output, prompt/completion, prompt/chosen/rejected, prompt or {text_field} "
            "(or set format:)",
        )])
    return fmt


class _Faults(list):
    def add(self, source: str, field: str, message: str, droppable: bool = False) -> None:
        self.append(Problem(source, field, message, droppable))


def _text(row: dict, key: str, source: str, faults: _Faults, *, required: bool = True, empty_ok: bool = False) -> str | None:
    if key not in row or row[key] is None:
        if required:
            faults.add(source, key, "missing field")
        return None
    value = row[key]
    if not isinstance(value, str):
        faults.add(source, key, f"expected a string, got {type(value).__name__}")
        return None
    if not value.strip() and not empty_ok:
        reply = key in ("output", "completion", "chosen", "rejected", "answer")
        faults.add(source, key, "empty response" if reply else "empty text", droppable=key != "text")
        return None
    return value


def _messages(value: Any, field: str, source: str, faults: _Faults, roles: dict[str, str] | None = None) -> list[Message] | None:
    if not isinstance(value, list) or not value:
        faults.add(source, field, "expected a non-empty list of messages")
        return None
    out: list[Message] = []
    role_key, content_key = ("from", "value") if roles else ("role", "content")
    for i, msg in enumerate(value):
        where = f"{field}[{i}]"
        if not isinstance(msg, dict):
            faults.add(source, where, "expected an object with role and content")
            return None
        role = msg.get(role_key)
        role = roles.get(role, role) if roles else role
        if role not in _ROLES:
            faults.add(source, f"{where}.{role_key}", f"unknown role {msg.get(role_key)!r} (expected system, user or assistant)")
            return None
        content = msg.get(content_key)
        if not isinstance(content, str):
            faults.add(source, f"{where}.{content_key}", "missing field" if content is None else "expected a string")
            return None
        out.append({"role": role, "content": content})
    return out


def _chat(messages: list[Message] | None, field: str, source: str, faults: _Faults) -> ChatRecord | None:
    if messages is None:
        return None
    replies = [m for m in messages if m["role"] == "assistant"]
    if not replies:
        faults.add(source, field, "no assistant message to learn from")
        return None
    if any(not m["content"].strip() for m in replies):
        faults.add(source, field, "empty response", droppable=True)
        return None
    return ChatRecord(messages, source)


def _reply(value: Any, field: str, source: str, faults: _Faults) -> str | None:
    """A preference side given as text or as messages (the last assistant turn is the reply)."""
    if isinstance(value, list):
        msgs = _messages(value, field, source, faults)
        if msgs is None:
            return None
        replies = [m["content"] for m in msgs if m["role"] == "assistant"]
        if not replies:
            faults.add(source, field, "no assistant message")
            return None
        value = replies[-1]
    if value is None:
        faults.add(source, field, "missing field")
        return None
    if not isinstance(value, str):
        faults.add(source, field, f"expected a string or messages, got {type(value).__name__}")
        return None
    if not value.strip():
        faults.add(source, field, "empty response", droppable=True)
        return None
    return value


def _prompt(value: Any, source: str, faults: _Faults) -> list[Message] | None:
    if isinstance(value, str):
        if not value.strip():
            faults.add(source, "prompt", "empty prompt")
            return None
        return [{"role": "user", "content": value}]
    if value is None:
        faults.add(source, "prompt", "missing field")
        return None
    return _messages(value, "prompt", source, faults)


def convert(row: dict[str, Any], fmt: str, source: str, text_field: str = "text") -> tuple[Record | None, list[Problem]]:
    """Turn one row into a record of format `fmt`; returns (record or None, problems)."""
    faults = _Faults()
    record: Record | None = None
    if fmt == "chat" and "messages" not in row and "conversations" in row:
        msgs = _messages(row.get("conversations"), "conversations", source, faults, roles=_SHAREGPT_ROLES)
        record = _chat(msgs, "conversations", source, faults)
    elif fmt == "chat":
        record = _chat(_messages(row.get("messages"), "messages", source, faults), "messages", source, faults)
    elif fmt == "instruction":
        instruction = _text(row, "instruction", source, faults)
        extra = _text(row, "input", source, faults, required=False, empty_ok=True)
        output = _text(row, "output", source, faults)
        if instruction is not None and output is not None:
            user = instruction + (f"\n\n{extra}" if extra and extra.strip() else "")
            msgs = ([{"role": "system", "content": row["system"]}] if isinstance(row.get("system"), str) else []) + [
                {"role": "user", "content": user},
                {"role": "assistant", "content": output},
            ]
            record = ChatRecord(msgs, source)
    elif fmt == "completion":
        prompt = _text(row, "prompt", source, faults, empty_ok=True)
        completion = _text(row, "completion", source, faults)
        if prompt is not None and completion is not None:
            record = CompletionRecord(prompt, completion, source)
    elif fmt == "preference":
        prompt = _prompt(row.get("prompt"), source, faults)
        chosen = _reply(row.get("chosen"), "chosen", source, faults)
        rejected = _reply(row.get("rejected"), "rejected", source, faults)
        if prompt is not None and chosen is not None and rejected is not None:
            if chosen.strip() == rejected.strip():
                faults.add(source, "chosen", "chosen and rejected are identical", droppable=True)
            else:
                record = PreferenceRecord(prompt, chosen, rejected, source)
    elif fmt == "prompt":
        prompt = _prompt(row.get("prompt"), source, faults)
        answer = _text(row, "answer", source, faults, required=False)
        if prompt is not None and not faults:
            record = PromptRecord(prompt, answer, source)
    elif fmt == "text":
        text = _text(row, text_field, source, faults)
        if text is not None:
            record = TextRecord(text, source)
    else:
        raise ValueError(f"unknown format {fmt!r}")
    return (record if not faults else None), list(faults)

