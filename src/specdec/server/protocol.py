"""The OpenAI wire format: request and response models, and errors.

Every request parameter is honoured or refused, never ignored. Requests are validated
strictly (a string where a number belongs is a 400, not a silent conversion; a lone UTF-16
surrogate in any text is a 400 naming the field). Unknown fields are refused with OpenAI's
"Unrecognized request argument supplied" 400. Parameters OpenAI defines that this server
does not implement (tools, response_format, audio, ...) are accepted only at a value that
changes nothing, else refused by `check()` with a 400 naming them; `user`, `metadata` and
the other bookkeeping fields that cannot change the output are accepted.

Extensions (vLLM's names): `top_k`, `min_p`, `repetition_penalty`, `stop_token_ids`,
`min_tokens`, `ignore_eos`; and two of our own, both off by default:
  - `spec_fates: true` streams each engine step's token fates in a `spec` field;
  - `speculative: false` runs this request without speculation (the playground's compare).
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, field_validator

from specdec.engine.stats import SpecStats
from specdec.server.logprobs import ChatLogprobs, CompletionLogprobs

Float = Annotated[float, Field(strict=True)]  # strict float still accepts an int
SEED_MIN, SEED_MAX = -(1 << 63), (1 << 64) - 1  # what torch.Generator.manual_seed takes
MAX_N = 16  # choices per request
MAX_LOGPROBS = 20


def _unicode(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"contains a lone surrogate U+{ord(text[e.start]):04X} at index {e.start}, which is not text") from None
    return text


Text = Annotated[StrictStr, AfterValidator(_unicode)]


class APIError(Exception):
    """An OpenAI-style error: {"error": {"message", "type", "param", "code"}} with a status."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type: str = "invalid_request_error", param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def refuse(param: str, message: str) -> APIError:
    return APIError(400, f"{param}: {message}", param=param, code="unsupported_parameter")


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: StrictBool = False


# Parameters accepted only at the value that changes nothing: name -> (is neutral, what is supported).
NEUTRAL: dict[str, tuple[Any, str]] = {
    "response_format": (lambda v: v is None or v == {"type": "text"}, 'only {"type": "text"} (no JSON mode or schemas)'),
    "tools": (lambda v: not v, "tool calling is not supported"),
    "functions": (lambda v: not v, "function calling is not supported"),
    "function_call": (lambda v: v in (None, "none"), 'function calling is not supported (only "none")'),
    "audio": (lambda v: v is None, "audio output is not supported"),
    "modalities": (lambda v: v in (None, ["text"]), 'only ["text"]'),
    "prediction": (lambda v: v is None, "predicted outputs are not supported"),
    "reasoning_effort": (lambda v: v is None, "this model does not reason"),
    "verbosity": (lambda v: v is None, "not supported"),
    "web_search_options": (lambda v: v is None, "web search is not supported"),
    "store": (lambda v: v in (None, False), "this server stores nothing"),
    "service_tier": (lambda v: v in (None, "auto", "default"), 'only "auto" or "default"'),
    "suffix": (lambda v: v in (None, ""), "insertion (suffix) is not supported"),
}


class SamplingFields(BaseModel):
    """What completions and chat share: model, sampling, logits processors, streaming."""

    model_config = ConfigDict(extra="forbid")

    model: Text | None = None
    max_tokens: StrictInt | None = Field(default=None, ge=1)
    temperature: Float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: Float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: StrictInt = Field(default=-1, ge=-1)
    min_p: Float = Field(default=0.0, ge=0.0, le=1.0)
    seed: StrictInt | None = Field(default=None, ge=SEED_MIN, le=SEED_MAX)
    stop: Text | list[Text] | None = None
    stop_token_ids: list[Annotated[StrictInt, Field(ge=0)]] | None = None
    min_tokens: StrictInt = Field(default=0, ge=0)
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    n: StrictInt = Field(default=1, ge=1, le=MAX_N)
    presence_penalty: Float = Field(default=0.0, ge=-2.0, le=2.0)
    frequency_penalty: Float = Field(default=0.0, ge=-2.0, le=2.0)
    repetition_penalty: Float = Field(default=1.0, gt=0.0, le=10.0)
    logit_bias: dict[StrictStr, Annotated[float, Field(strict=True, ge=-100.0, le=100.0)]] | None = None
    ignore_eos: StrictBool = False
    spec_fates: StrictBool = False
    speculative: StrictBool = True
    # bookkeeping that cannot change the output
    user: Text | None = None
    metadata: dict[StrictStr, StrictStr] | None = None
    prompt_cache_key: Text | None = None
    safety_identifier: Text | None = None
    # refused unless neutral (NEUTRAL)
    response_format: Any = None
    store: Any = None
    service_tier: Any = None

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

    def check(self) -> None:
        """Refuse (400, naming the parameter) what is set to something this server cannot honour."""
        for name, (neutral, supported) in NEUTRAL.items():
            if name in type(self).model_fields and not neutral(getattr(self, name)):
                raise refuse(name, supported)
        if self.stream_options is not None and not self.stream:
            raise refuse("stream_options", "only allowed when stream is true")


class CompletionRequest(SamplingFields):
    prompt: Text | list[StrictInt] | list[Text] | list[list[StrictInt]]
    echo: StrictBool = False
    logprobs: StrictInt | None = Field(default=None, ge=0, le=MAX_LOGPROBS)
    best_of: StrictInt | None = Field(default=None, ge=1)
    suffix: Any = None

    def check(self) -> None:
        super().check()
        if self.best_of is not None and self.best_of != self.n:
            raise refuse("best_of", f"only best_of == n ({self.n}): choices are not ranked")
        if self.echo and self.logprobs is not None:
            raise refuse("echo", "echo with logprobs (the prompt tokens' logprobs are not computed)")

    @property
    def num_logprobs(self) -> int | None:
        return self.logprobs


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: Text


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Text | list[TextPart] | None = None
    name: Text | None = None
    tool_call_id: Text | None = None
    tool_calls: list[Any] | None = Field(default=None, max_length=0)  # tool calling is not supported
    refusal: Text | None = None

    def as_template_dict(self) -> dict:
        content = self.content
        if isinstance(content, list):
            content = "".join(part.text for part in content)
        role = "system" if self.role == "developer" else self.role
        message = {"role": role, "content": content or ""}
        for key in ("name", "tool_call_id"):
            if getattr(self, key) is not None:
                message[key] = getattr(self, key)
        return message


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage]
    max_completion_tokens: StrictInt | None = Field(default=None, ge=1)
    logprobs: StrictBool | None = None
    top_logprobs: StrictInt | None = Field(default=None, ge=0, le=MAX_LOGPROBS)
    tool_choice: Any = None
    parallel_tool_calls: StrictBool | None = None  # no tools, so nothing to parallelize
    tools: Any = None
    functions: Any = None
    function_call: Any = None
    audio: Any = None
    modalities: Any = None
    prediction: Any = None
    reasoning_effort: Any = None
    verbosity: Any = None
    web_search_options: Any = None

    def check(self) -> None:
        super().check()
        if self.tool_choice not in (None, "none", "auto"):
            raise refuse("tool_choice", 'tool calling is not supported (only "none")')
        if self.top_logprobs is not None and not self.logprobs:
            raise refuse("top_logprobs", "needs logprobs: true")

    @property
    def num_logprobs(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None


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
    logprobs: CompletionLogprobs | None = None
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
    logprobs: ChatLogprobs | None = None
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
    logprobs: ChatLogprobs | None = None
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
