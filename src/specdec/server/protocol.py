"""The OpenAI wire format: request and response models, and errors.

Requests are validated strictly (a string where a number belongs is a 400, not a silent
conversion); fields OpenAI defines that we do not implement are rejected when set to
something that would change the output (logprobs, echo, n > 1, penalties), and unknown
fields are ignored as OpenAI does. Two extensions, both off by default:
  - `spec_fates: true` streams each engine step's token fates in a `spec` field;
  - `speculative: false` runs this request without speculation (the playground's compare).
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, field_validator

from specdec.engine.stats import SpecStats

Float = Annotated[float, Field(strict=True)]  # strict float still accepts an int


class APIError(Exception):
    """An OpenAI-style error: {"error": {"message", "type", "param", "code"}} with a status."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type: str = "invalid_request_error", param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


class StreamOptions(BaseModel):
    include_usage: StrictBool = False


class SamplingFields(BaseModel):
    """What completions and chat share: model, sampling, streaming, extensions."""

    model_config = ConfigDict(extra="ignore")

    model: StrictStr | None = None
    max_tokens: StrictInt | None = Field(default=None, ge=1)
    temperature: Float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: Float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: StrictInt = Field(default=-1, ge=-1)
    seed: StrictInt | None = None
    stop: StrictStr | list[StrictStr] | None = None
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    n: StrictInt = Field(default=1, ge=1, le=1)
    presence_penalty: Float = Field(default=0.0, ge=0.0, le=0.0)
    frequency_penalty: Float = Field(default=0.0, ge=0.0, le=0.0)
    ignore_eos: StrictBool = False
    spec_fates: StrictBool = False
    speculative: StrictBool = True

    @field_validator("stop")
    @classmethod
    def _stop(cls, v):
        stops = [v] if isinstance(v, str) else (v or [])
        if len(stops) > 16 or any(not s for s in stops):
            raise ValueError("stop takes up to 16 non-empty strings")
        return stops

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class CompletionRequest(SamplingFields):
    prompt: StrictStr | list[StrictInt] | list[StrictStr] | list[list[StrictInt]]
    echo: Literal[False] = False
    logprobs: None = None
    suffix: None = None


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: StrictStr


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: StrictStr | list[TextPart] | None = None

    def as_template_dict(self) -> dict:
        content = self.content
        if isinstance(content, list):
            content = "".join(part.text for part in content)
        role = "system" if self.role == "developer" else self.role
        return {"role": role, "content": content or ""}


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage]
    max_completion_tokens: StrictInt | None = Field(default=None, ge=1)
    logprobs: Literal[False] | None = None


# Responses ----------------------------------------------------------------------------


class SpecUsage(BaseModel):
    """SGLang's meta_info names, read from SpecStats (stats.py defines them)."""

    spec_verify_ct: int  # verify passes (target forwards after prefill), plain steps included
    spec_accepted_tokens: int  # draft tokens that passed
    spec_accept_length: float  # mean tokens committed per drafting step (bonus/recovered included)
    spec_draft_tokens: int
    spec_acceptance_rate: float

    @classmethod
    def from_stats(cls, stats: SpecStats) -> SpecUsage:
        return cls(
            spec_verify_ct=stats.num_steps,
            spec_accepted_tokens=stats.num_accepted_tokens,
            spec_accept_length=round(stats.mean_acceptance_length, 4),
            spec_draft_tokens=stats.num_draft_tokens,
            spec_acceptance_rate=round(stats.acceptance_rate, 4),
        )


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    speculative: SpecUsage | None = None

    @classmethod
    def build(cls, num_prompt: int, num_completion: int, stats: SpecStats | None) -> Usage:
        spec = SpecUsage.from_stats(stats) if stats is not None else None
        return cls(prompt_tokens=num_prompt, completion_tokens=num_completion, total_tokens=num_prompt + num_completion, speculative=spec)


class SpecChunk(BaseModel):
    """The `spec_fates` extension: one engine step."""

    fates: list[str]
    draft_ids: list[int]
    num_accepted: int
    tokens: list[str]  # the committed tokens, one string each
    draft_tokens: list[str]  # the proposed tokens, rejected ones included


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    logprobs: None = None
    finish_reason: str | None = None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    spec: SpecChunk | None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    logprobs: None = None
    finish_reason: str | None = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatChoice]
    usage: Usage


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    logprobs: None = None
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None
    spec: SpecChunk | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=lambda: int(time.time()))
    owned_by: str = "specdec"
    max_model_len: int
    speculative: str  # the server's speculative algorithm


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


def dump(model: BaseModel) -> dict[str, Any]:
    """JSON-ready dict; the `spec` extension and an unset `speculative` usage block are left out."""
    data = model.model_dump()
    if data.get("spec") is None:
        data.pop("spec", None)
    usage = data.get("usage")
    if isinstance(usage, dict) and usage.get("speculative") is None:
        usage.pop("speculative")
    return data
