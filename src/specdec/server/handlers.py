"""Completions and chat completions: request -> prompt ids -> scheduler -> OpenAI response.

Validation that needs the model (model name, context length, token ids, chat template)
happens here, before anything is queued or streamed, so a bad request never reaches the
engine and is a 4xx, never an error inside a 200 stream.
A request with n choices runs n rows; when seeded, choice i uses seed + i (wrapped into the
seed range), so a seeded request gives the same n choices every time.
Streaming sends one SSE chunk per engine step and choice that produced text (every step
with `spec_fates`), then `data: [DONE]`. A watcher waits on the connection for the client's
disconnect, streamed or not: it cancels the request's rows, which the scheduler frees before
its next engine step.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

from fastapi import Request as HTTPRequest
from fastapi.responses import JSONResponse, StreamingResponse

from specdec.api import encode_prompt
from specdec.config import SamplingParams
from specdec.engine.stats import SpecStats
from specdec.server.logprobs import TokenText, chat_logprobs, completion_logprobs
from specdec.server.metrics import ServerMetrics
from specdec.server.protocol import (
    SEED_MAX,
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
from specdec.server.scheduler import Event, QueueFull, Request, Scheduler, ShuttingDown

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
    token_text: TokenText = field(init=False)

    def __post_init__(self) -> None:
        self.token_text = TokenText(self.tokenizer)


def check_model(state: ServerState, name: str | None) -> None:
    if name is not None and name not in state.model_aliases:
        raise APIError(404, f"The model `{name}` does not exist; this server serves `{state.model_id}`", param="model", code="model_not_found")


def check_token_ids(state: ServerState, ids, param: str) -> None:
    bad = [t for t in ids if not 0 <= t < state.vocab_size]
    if bad:
        raise APIError(400, f"token id {bad[0]} outside the vocabulary 0..{state.vocab_size - 1}", param=param)


def completion_prompt(state: ServerState, body: CompletionRequest) -> tuple[list[int], str]:
    """The prompt's ids and its text (what echo prepends)."""
    prompt = body.prompt
    if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int):
        if len(prompt) != 1:
            raise APIError(400, "batched prompts are not supported; send one request per prompt", param="prompt")
        prompt = prompt[0]
    if not prompt:
        raise APIError(400, "the prompt is empty", param="prompt")
    if isinstance(prompt, str):
        return encode_prompt(state.tokenizer, prompt, chat=False), prompt
    check_token_ids(state, prompt, "prompt")
    return list(prompt), state.tokenizer.decode(prompt) if body.echo else ""


def chat_prompt_ids(state: ServerState, body: ChatCompletionRequest) -> list[int]:
    if not body.messages:
        raise APIError(400, "messages is empty", param="messages")
    try:
        return encode_prompt(state.tokenizer, messages=[m.as_template_dict() for m in body.messages])
    except ValueError as e:
        raise APIError(400, str(e), param="messages") from e
    except Exception as e:  # a template that rejects this conversation (jinja raise_exception)
        raise APIError(400, f"the chat template rejected the messages: {e}", param="messages") from e


def choice_seed(seed: int | None, i: int) -> int | None:
    """Choice i's seed: seed + i, wrapped to stay within what a generator takes."""
    if seed is None:
        return None
    seed += i
    return seed - (SEED_MAX + 1) if seed > SEED_MAX else seed


def sampling_params(state: ServerState, body, num_prompt: int, max_tokens: int | None, default_max: int | None) -> list[SamplingParams]:
    """One SamplingParams per choice."""
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
    if body.min_tokens > max_tokens:
        raise APIError(400, f"min_tokens {body.min_tokens} is over max_tokens {max_tokens}", param="min_tokens")
    check_token_ids(state, body.stop_token_ids or [], "stop_token_ids")
    logit_bias = {}
    for key, bias in (body.logit_bias or {}).items():
        if not key.isdigit():
            raise APIError(400, f"logit_bias keys are token ids, got {key!r}", param="logit_bias")
        check_token_ids(state, [int(key)], "logit_bias")
        logit_bias[int(key)] = float(bias)
    base = dict(
        temperature=float(body.temperature), top_p=float(body.top_p), top_k=max(body.top_k, 0), min_p=float(body.min_p),
        max_tokens=max_tokens, min_tokens=body.min_tokens, stop=list(body.stop or []), stop_token_ids=list(body.stop_token_ids or []),
        ignore_eos=body.ignore_eos, presence_penalty=float(body.presence_penalty), frequency_penalty=float(body.frequency_penalty),
        repetition_penalty=float(body.repetition_penalty), logit_bias=logit_bias, logprobs=body.num_logprobs,
    )
    try:
        return [SamplingParams(seed=choice_seed(body.seed, i), **base) for i in range(body.n)]
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


@dataclass
class Choice:
    """What one choice has produced so far."""

    text: str = ""  # the echoed prompt included
    logprobs: list[dict] = field(default_factory=list)
    last: Event | None = None
    text_offset: int = 0  # where the next streamed logprob entry's token starts in text

    def __post_init__(self) -> None:
        self.text_offset = len(self.text)


class Generation:
    """One request's n choices through the scheduler, streamed or collected."""

    def __init__(self, state: ServerState, http: HTTPRequest, chat: bool, body, prompt_ids: list[int], params: list[SamplingParams], echo: str = "") -> None:
        self.state, self.http, self.chat, self.body = state, http, chat, body
        self.prompt_ids, self.echo = prompt_ids, echo
        self.want_logprobs = params[0].logprobs is not None
        self.id = state.scheduler.new_id("chatcmpl" if chat else "cmpl")
        ids = [self.id] if len(params) == 1 else [f"{self.id}-{i}" for i in range(len(params))]
        requests = [Request(rid, prompt_ids, p, body.speculative, body.spec_fates) for rid, p in zip(ids, params)]
        try:
            self.handles = state.scheduler.submit(requests, asyncio.get_running_loop())
        except QueueFull as e:
            raise APIError(429, str(e), type="rate_limit_error", code="queue_full") from e
        except ShuttingDown as e:
            raise APIError(503, str(e), type="service_unavailable", code="shutting_down") from e
        self.choices = [Choice(text=echo) for _ in params]

    def cancel(self) -> None:
        for handle in self.handles:
            handle.cancel()

    async def _disconnected(self) -> None:
        """Returns when the client hangs up (the body is read: the next message is the disconnect)."""
        while (await self.http.receive())["type"] != "http.disconnect":
            pass

    async def events(self):
        """(choice index, event) until every choice ends or the client leaves (then it just stops)."""
        queue = self.handles[0].queue  # the choices share it
        watcher = asyncio.ensure_future(self._disconnected())
        pending: asyncio.Future | None = None
        try:
            while not all(h.finished for h in self.handles):
                pending = asyncio.ensure_future(queue.get())
                await asyncio.wait({pending, watcher}, return_when=asyncio.FIRST_COMPLETED)
                if not pending.done():
                    return
                i, event = pending.result()
                self.handles[i].finished = event.finish_reason is not None
                choice = self.choices[i]
                choice.text += event.text
                choice.logprobs += event.logprobs
                choice.last = event
                yield i, event
        finally:
            watcher.cancel()
            if pending is not None:
                pending.cancel()
            self.cancel()

    def usage(self) -> Usage:
        finals = [c.last for c in self.choices if c.last is not None]
        stats = None
        if any(e.stats is not None for e in finals):
            stats = SpecStats()
            for e in finals:
                if e.stats is not None:
                    stats.merge(e.stats)
        return Usage.build(len(self.prompt_ids), sum(e.num_generated for e in finals), stats)

    def _logprobs(self, entries: list[dict], offset: int):
        if not self.want_logprobs:
            return None
        if self.chat:
            return chat_logprobs(entries, self.state.token_text)
        return completion_logprobs(entries, self.state.token_text, offset)

    def chunk(self, i: int, event: Event | None, text: str | None, finish: str | None, role: bool = False, offset: int = 0) -> dict:
        spec = spec_chunk(event) if event is not None else None
        logprobs = self._logprobs(event.logprobs, offset) if event is not None else None
        model = self.state.model_id
        if self.chat:
            delta = Delta(role="assistant" if role else None, content=text)
            choice = ChatChunkChoice(index=i, delta=delta, logprobs=logprobs, finish_reason=finish)
            return dump(ChatCompletionChunk(id=self.id, model=model, choices=[choice], spec=spec))
        choice = CompletionChoice(index=i, text=text or "", logprobs=logprobs, finish_reason=finish)
        return dump(CompletionResponse(id=self.id, model=model, choices=[choice], spec=spec))

    def usage_chunk(self) -> dict:
        cls = ChatCompletionChunk if self.chat else CompletionResponse
        return dump(cls(id=self.id, model=self.state.model_id, choices=[], usage=self.usage()))

    def stream(self) -> StreamingResponse:
        return StreamingResponse(self._sse(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    async def _sse(self):
        finishes: list[str] = []
        try:
            for i in range(len(self.choices)):
                if self.chat:
                    yield sse(self.chunk(i, None, "", None, role=True))
                elif self.echo:
                    yield sse(self.chunk(i, None, self.echo, None))
            async for i, event in self.events():
                if event.finish_reason == "error":
                    finishes.append("error")
                    yield sse(error_body(event.error or "generation failed", type="server_error", code="engine_error"))
                    break
                if event.text or event.finish_reason or self.body.spec_fates or event.logprobs:
                    # a token's entry may follow its text (held back while a stop string could match)
                    choice = self.choices[i]
                    yield sse(self.chunk(i, event, event.text, event.finish_reason, offset=choice.text_offset))
                    choice.text_offset += sum(len(self.state.token_text(e["token_id"])[0]) for e in event.logprobs)
                if event.finish_reason:
                    finishes.append(event.finish_reason)
            if len(finishes) == len(self.choices) and "error" not in finishes and self.body.include_usage:
                yield sse(self.usage_chunk())
            if len(finishes) == len(self.choices) or "error" in finishes:
                yield sse("[DONE]")
        finally:
            ended = len(finishes) == len(self.choices) or "error" in finishes
            status = 500 if "error" in finishes else 503 if "abort" in finishes else 200 if ended else 499
            self.state.metrics.request_done(status)

    async def collect(self) -> JSONResponse:
        """Run every choice to its end; a client that disconnects meanwhile cancels them."""
        async for _ in self.events():
            pass
        lasts = [c.last for c in self.choices]
        if any(e is None or not e.finish_reason for e in lasts):
            self.state.metrics.request_done(499)
            return JSONResponse(error_body("client disconnected"), status_code=499)
        failed = next((e for e in lasts if e.finish_reason in ("error", "abort")), None)
        if failed is not None:
            raise APIError(500 if failed.finish_reason == "error" else 503, failed.error or "generation failed", type="server_error")
        model = self.state.model_id
        if self.chat:
            choices = [ChatChoice(index=i, message=AssistantMessage(content=c.text), logprobs=self._logprobs(c.logprobs, 0),
                                  finish_reason=c.last.finish_reason) for i, c in enumerate(self.choices)]
            response = ChatCompletionResponse(id=self.id, model=model, choices=choices, usage=self.usage())
        else:
            choices = [CompletionChoice(index=i, text=c.text, logprobs=self._logprobs(c.logprobs, len(self.echo)),
                                        finish_reason=c.last.finish_reason) for i, c in enumerate(self.choices)]
            response = CompletionResponse(id=self.id, model=model, choices=choices, usage=self.usage())
        self.state.metrics.request_done(200)
        return JSONResponse(dump(response))


async def handle_generation(state: ServerState, http: HTTPRequest, body, chat: bool):
    body.check()
    check_model(state, body.model)
    echo = ""
    if chat:
        prompt_ids = chat_prompt_ids(state, body)
        max_tokens, default_max = body.max_completion_tokens or body.max_tokens, None
    else:
        prompt_ids, prompt_text = completion_prompt(state, body)
        echo = prompt_text if body.echo else ""
        max_tokens, default_max = body.max_tokens, COMPLETIONS_DEFAULT_MAX_TOKENS
    params = sampling_params(state, body, len(prompt_ids), max_tokens, default_max)
    generation = Generation(state, http, chat, body, prompt_ids, params, echo)
    if body.stream:
        return generation.stream()
    return await generation.collect()
