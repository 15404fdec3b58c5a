"""Completions and chat completions: request -> prompt ids -> scheduler -> OpenAI response.

Validation that needs the model (model name, context length, token ids, chat template)
happens here, before anything is queued, so a bad request never reaches the engine.
Streaming sends one SSE chunk per engine step that produced text (every step with
`spec_fates`), then `data: [DONE]`. A client that goes away mid-stream or mid-request
cancels its generation; its row is freed before the next engine step.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

from fastapi import Request as HTTPRequest
from fastapi.responses import JSONResponse, StreamingResponse

from specdec.api import encode_prompt
from specdec.config import SamplingParams
from specdec.server.metrics import ServerMetrics
from specdec.server.protocol import (
    APIError,
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    Delta,
    SpecChunk,
    Usage,
    dump,
    error_body,
)
from specdec.server.scheduler import Event, Handle, QueueFull, Request, Scheduler, ShuttingDown

COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions


@dataclass
class ServerState:
    model_id: str
    model_aliases: set[str]
    tokenizer: object
    vocab_size: int
    max_seq_len: int
    scheduler: Scheduler
    metrics: ServerMetrics
    speculative: str  # the server's speculative algorithm, for /v1/models and the playground


def check_model(state: ServerState, name: str | None) -> None:
    if name is not None and name not in state.model_aliases:
        raise APIError(404, f"The model `{name}` does not exist; this server serves `{state.model_id}`", param="model", code="model_not_found")


def completion_prompt_ids(state: ServerState, body: CompletionRequest) -> list[int]:
    prompt = body.prompt
    if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int):
        if len(prompt) != 1:
            raise APIError(400, "batched prompts are not supported; send one request per prompt", param="prompt")
        prompt = prompt[0]
    if isinstance(prompt, str):
        if not prompt:
            raise APIError(400, "the prompt is empty", param="prompt")
        return encode_prompt(state.tokenizer, prompt, chat=False)
    if not prompt:
        raise APIError(400, "the prompt is empty", param="prompt")
    bad = [t for t in prompt if not 0 <= t < state.vocab_size]
    if bad:
        raise APIError(400, f"token id {bad[0]} outside the vocabulary 0..{state.vocab_size - 1}", param="prompt")
    return list(prompt)


def chat_prompt_ids(state: ServerState, body: ChatCompletionRequest) -> list[int]:
    if not body.messages:
        raise APIError(400, "messages is empty", param="messages")
    try:
        return encode_prompt(state.tokenizer, messages=[m.as_template_dict() for m in body.messages])
    except ValueError as e:
        raise APIError(400, str(e), param="messages") from e
    except Exception as e:  # a template that rejects this conversation (jinja raise_exception)
        raise APIError(400, f"the chat template rejected the messages: {e}", param="messages") from e


def sampling_params(state: ServerState, body, num_prompt: int, max_tokens: int | None, default_max: int | None) -> SamplingParams:
    room = state.max_seq_len - num_prompt - 1
    if room < 1:
        raise APIError(400, f"prompt of {num_prompt} tokens exceeds the context of {state.max_seq_len} tokens", param="prompt", code="context_length_exceeded")
    if max_tokens is None:
        max_tokens = min(default_max, room) if default_max else room
    if max_tokens > room:
        raise APIError(
            400,
            f"max_tokens {max_tokens} + prompt of {num_prompt} tokens exceeds the context of {state.max_seq_len} tokens",
            param="max_tokens",
            code="context_length_exceeded",
        )
    try:
        return SamplingParams(
            temperature=float(body.temperature),
            top_p=float(body.top_p),
            top_k=max(body.top_k, 0),
            max_tokens=max_tokens,
            seed=body.seed,
            stop=list(body.stop or []),
            ignore_eos=body.ignore_eos,
        )
    except ValueError as e:
        raise APIError(400, str(e)) from e


def sse(data: dict | str) -> str:
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return f"data: {payload}\n\n"


def spec_chunk(event: Event) -> SpecChunk | None:
    if event.token_texts is None or event.step is None:
        return None
    step = event.step
    return SpecChunk(fates=step.fates, draft_ids=step.draft_ids, num_accepted=step.num_accepted, tokens=event.token_texts, draft_tokens=event.draft_texts or [])


class Generation:
    """One request through the scheduler, streamed or collected."""

    def __init__(self, state: ServerState, http: HTTPRequest, chat: bool, body, prompt_ids: list[int], params: SamplingParams) -> None:
        self.state, self.http, self.chat, self.body = state, http, chat, body
        self.prompt_ids = prompt_ids
        self.id = state.scheduler.new_id("chatcmpl" if chat else "cmpl")
        request = Request(self.id, prompt_ids, params, body.speculative, body.spec_fates)
        try:
            self.handle: Handle = state.scheduler.submit(request, asyncio.get_running_loop())
        except QueueFull as e:
            raise APIError(429, str(e), type="rate_limit_error", code="queue_full") from e
        except ShuttingDown as e:
            raise APIError(503, str(e), type="service_unavailable", code="shutting_down") from e

    def usage(self, event: Event) -> Usage:
        return Usage.build(len(self.prompt_ids), event.num_generated, event.stats)

    def chunk(self, event: Event | None, text: str | None, finish: str | None, role: bool = False) -> dict:
        spec = spec_chunk(event) if event is not None else None
        model = self.state.model_id
        if self.chat:
            delta = Delta(role="assistant" if role else None, content=text)
            return dump(ChatCompletionChunk(id=self.id, model=model, choices=[ChatChunkChoice(delta=delta, finish_reason=finish)], spec=spec))
        return dump(CompletionResponse(id=self.id, model=model, choices=[CompletionChoice(text=text or "", finish_reason=finish)], spec=spec))

    def usage_chunk(self, event: Event) -> dict:
        cls = ChatCompletionChunk if self.chat else CompletionResponse
        return dump(cls(id=self.id, model=self.state.model_id, choices=[], usage=self.usage(event)))

    def stream(self) -> StreamingResponse:
        return StreamingResponse(self._sse(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    async def _sse(self):
        status = 499
        try:
            if self.chat:
                yield sse(self.chunk(None, "", None, role=True))
            async for event in self.handle.events():
                if event.error is not None and event.finish_reason == "error":
                    status = 500
                    yield sse(error_body(event.error, type="server_error", code="engine_error"))
                    break
                if event.text or event.finish_reason or self.body.spec_fates:
                    yield sse(self.chunk(event, event.text, event.finish_reason))
                if event.finish_reason:
                    status = 503 if event.finish_reason == "abort" else 200
                    if self.body.include_usage:
                        yield sse(self.usage_chunk(event))
            yield sse("[DONE]")
        finally:
            self.handle.cancel()
            self.state.metrics.request_done(status)

    async def collect(self) -> JSONResponse:
        """Run to the end; a client that disconnects meanwhile cancels the generation."""
        text, last = [], None
        events = self.handle.events().__aiter__()
        try:
            pending = asyncio.ensure_future(events.__anext__())
            while last is None or not last.finish_reason:
                done, _ = await asyncio.wait({pending}, timeout=0.5)
                if not done:
                    if await self.http.is_disconnected():
                        pending.cancel()
                        self.state.metrics.request_done(499)
                        return JSONResponse(error_body("client disconnected"), status_code=499)
                    continue
                last = pending.result()
                text.append(last.text)
                if not last.finish_reason:
                    pending = asyncio.ensure_future(events.__anext__())
        finally:
            self.handle.cancel()
        if last.finish_reason in ("error", "abort"):
            raise APIError(500 if last.finish_reason == "error" else 503, last.error or "generation failed", type="server_error")
        usage = self.usage(last)
        model, content = self.state.model_id, "".join(text)
        if self.chat:
            choice = ChatChoice(message=AssistantMessage(content=content), finish_reason=last.finish_reason)
            response = ChatCompletionResponse(id=self.id, model=model, choices=[choice], usage=usage)
        else:
            choice = CompletionChoice(text=content, finish_reason=last.finish_reason)
            response = CompletionResponse(id=self.id, model=model, choices=[choice], usage=usage)
        self.state.metrics.request_done(200)
        return JSONResponse(dump(response))


async def handle_generation(state: ServerState, http: HTTPRequest, body, chat: bool):
    check_model(state, body.model)
    if chat:
        prompt_ids = chat_prompt_ids(state, body)
        max_tokens, default_max = body.max_completion_tokens or body.max_tokens, None
    else:
        prompt_ids = completion_prompt_ids(state, body)
        max_tokens, default_max = body.max_tokens, COMPLETIONS_DEFAULT_MAX_TOKENS
    params = sampling_params(state, body, len(prompt_ids), max_tokens, default_max)
    generation = Generation(state, http, chat, body, prompt_ids, params)
    if body.stream:
        return generation.stream()
    return await generation.collect()
