"""Request bodies of the OpenAI API subset attune serves, validated strictly.

Unknown fields are refused (a misspelt `max_token` must not silently mean "default length").
Fields OpenAI has but attune does not implement are accepted only at their neutral value
(`n=1`, penalties 0), so clients that always send them keep working.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from attune.models.generation import GenerationParams


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StreamOptions(_Body):
    include_usage: bool = False


class ChatMessage(_Body):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[dict[str, Any]]
    name: str | None = None

    def text(self) -> str:
        """The message's text; content parts other than text are refused."""
        if isinstance(self.content, str):
            return self.content
        pieces = []
        for part in self.content:
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ValueError(f"only text content parts are supported, got type {part.get('type')!r}")
            pieces.append(part["text"])
        return "".join(pieces)


class _Sampling(_Body):
    """Fields shared by chat and text completions (defaults as in OpenAI's API)."""

    model: str
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: Literal[1] = 1
    presence_penalty: Literal[0, 0.0] = 0
    frequency_penalty: Literal[0, 0.0] = 0
    user: str | None = None

    @field_validator("stop")
    @classmethod
    def _stop(cls, v: str | list[str] | None) -> list[str]:
        stops = [v] if isinstance(v, str) else list(v or [])
        if len(stops) > 4:
            raise ValueError("at most 4 stop sequences")
        return stops

    def params(self, max_tokens: int) -> GenerationParams:
        return GenerationParams(
            max_new_tokens=max_tokens, temperature=self.temperature, top_p=self.top_p, stop=list(self.stop or []), seed=self.seed
        )


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)

    def requested_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def chat(self) -> list[dict[str, str]]:
        """Messages as attune prompts them (`developer` is OpenAI's newer name for `system`)."""
        return [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in self.messages]


class CompletionRequest(_Sampling):
    prompt: str | list[str]
    max_tokens: int | None = Field(16, ge=1)  # OpenAI's default for text completions
    echo: Literal[False] = False

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, v: str | list[str]) -> str:
        if isinstance(v, list):
            if len(v) != 1:
                raise ValueError("send one prompt per request (the server batches concurrent requests itself)")
            return v[0]
        return v

    def requested_tokens(self) -> int | None:
        return self.max_tokens


class AdapterLoad(_Body):
    """POST /v1/adapters: serve the adapter at `path` (inside an --adapter-dir) as model `name`."""

    name: str
    path: str
    description: str | None = None
