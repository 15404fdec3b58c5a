"""The engine worker: one thread owns the `Engine`; the event loop talks to it by queues.

Contract:
- `submit` (event loop) puts requests (a request's n choices) in a bounded FIFO, all or
  none, and returns a `Handle` for each whose asyncio queue receives `Event`s; a full FIFO
  raises `QueueFull` (a request's choices may overfill it by n - 1), a stopping scheduler `ShuttingDown`. `merge` reads
  several handles' events as one stream of (choice index, event).
- The worker loops: apply cancellations, admit waiting requests into free rows (prefill,
  first token), run one batched step, detokenize and deliver. Requests join and leave
  between steps. Every request ends with exactly one event whose `finish_reason` is set
  ("stop", "length", "abort" or "error"), unless it was cancelled by its client.
- `cancel` (any thread) frees the request's row or queue entry before the next step.
- An engine exception fails the requests in flight, not the server.
- `request_stop` only sets a flag (safe inside a signal handler): the worker aborts
  everything and exits; `join` waits for it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from specdec.config import SamplingParams
from specdec.engine.engine import Engine
from specdec.engine.detokenizer import Detokenizer
from specdec.engine.engine import StepOutput
from specdec.engine.stats import SpecStats
from specdec.server.metrics import ServerMetrics

log = logging.getLogger("specdec.server")


class QueueFull(Exception):
    pass


class ShuttingDown(Exception):
    pass


@dataclass
class Event:
    text: str
    step: StepOutput | None = None
    finish_reason: str | None = None
    token_texts: list[str] | None = None  # with spec_fates
    draft_texts: list[str] | None = None
    num_generated: int = 0
    stats: SpecStats | None = None  # on the final event
    error: str | None = None
    logprobs: list[dict] = field(default_factory=list)  # entries of tokens whose text is out (see Scheduler._release_logprobs)


@dataclass
class Request:
    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    speculative: bool = True
    want_fates: bool = False
    arrival: float = field(default_factory=time.perf_counter)


class Handle:
    """The event loop's side of one request (one choice): its events go, as (index, event),
    to the asyncio queue it shares with the other choices of its HTTP request."""

    def __init__(self, request: Request, index: int, queue: asyncio.Queue, loop: asyncio.AbstractEventLoop, scheduler: Scheduler) -> None:
        self.request, self.index, self.queue, self.loop, self.scheduler = request, index, queue, loop, scheduler
        self.finished = False  # set by the reader when it takes the final event

    def cancel(self) -> None:
        if not self.finished:
            self.scheduler.cancel(self.request.request_id)


@dataclass
class _Running:
    handle: Handle
    detok: Detokenizer
    num_generated: int = 0
    last_emit: float = 0.0
    held_logprobs: list[dict] = field(default_factory=list)  # entries of the tokens from num_released on
    num_released: int = 0  # tokens whose logprobs have gone out


class Scheduler:
    def __init__(self, engine: Engine, tokenizer, metrics: ServerMetrics, max_queue: int = 64) -> None:
        self.engine = engine
        self.tokenizer = tokenizer
        self.metrics = metrics
        self.max_queue = max_queue
        self._waiting: deque[Handle] = deque()
        self._running: dict[str, _Running] = {}
        self._cancelled: set[str] = set()
        self._cond = threading.Condition()
        self._stop = False
        self._ids = itertools.count()
        self._thread = threading.Thread(target=self._run, name="specdec-engine", daemon=True)

    # --- event loop side -------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._stop

    @property
    def num_waiting(self) -> int:
        return len(self._waiting)

    @property
    def num_running(self) -> int:
        return len(self._running)

    def new_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self._ids)}-{int(time.time() * 1000) % 10**8}"

    def submit(self, requests: list[Request], loop: asyncio.AbstractEventLoop) -> list[Handle]:
        queue: asyncio.Queue[tuple[int, Event]] = asyncio.Queue()
        handles = [Handle(r, i, queue, loop, self) for i, r in enumerate(requests)]
        with self._cond:
            if not self.alive:
                raise ShuttingDown("the server is shutting down")
            if len(self._waiting) >= self.max_queue:  # a request's choices are queued together
                raise QueueFull(f"the request queue is full ({self.max_queue} waiting); retry later")
            self._waiting.extend(handles)
            self._cond.notify()
        return handles

    def cancel(self, request_id: str) -> None:
        with self._cond:
            self._cancelled.add(request_id)
            self._cond.notify()

    def request_stop(self) -> None:
        self._stop = True  # no lock: may run inside a signal handler

    def join(self, timeout: float = 10.0) -> None:
        self._stop = True
        with self._cond:
            self._cond.notify()
        self._thread.join(timeout)

    # --- worker side -----------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop:
            with self._cond:
                self._apply_cancellations()
                if not self._waiting and not self._running:
                    self._cond.wait(timeout=0.1)
                    continue
            while self.engine.num_free:  # one at a time: a request cancelled meanwhile is not prefilled
                with self._cond:
                    self._apply_cancellations()
                    handle = self._waiting.popleft() if self._waiting else None
                if handle is None:
                    break
                self._admit(handle)
            if self._running:
                self._step()
        self._abort_all("abort", "the server is shutting down")

    def _apply_cancellations(self) -> None:
        """Under the lock: drop cancelled requests from the queue and the batch."""
        if not self._cancelled:
            return
        self._waiting = deque(h for h in self._waiting if h.request.request_id not in self._cancelled)
        for rid in self._cancelled:
            if self._running.pop(rid, None) is not None:
                self.engine.cancel(rid)
        self._cancelled.clear()

    def _admit(self, handle: Handle) -> None:
        req = handle.request
        try:
            batch_req, step = self.engine.add(req.request_id, req.prompt_ids, req.params, req.speculative)
        except Exception as e:  # a bad request must not take the worker down
            log.exception("prefill failed for %s", req.request_id)
            self._deliver(handle, Event("", finish_reason="error", error=f"{type(e).__name__}: {e}"))
            return
        now = time.perf_counter()
        self.metrics.prompt_tokens.inc(len(req.prompt_ids))
        if batch_req.shared_prefill:
            self.metrics.prompt_tokens_shared.inc(len(req.prompt_ids))
        self.metrics.ttft.observe(now - req.arrival)
        self.metrics.generation_tokens.inc(len(step.token_ids))
        running = _Running(handle, Detokenizer(self.tokenizer, req.params.stop), last_emit=now)
        self._running[req.request_id] = running
        self._emit(running, step, batch_req.stats)

    def _step(self) -> None:
        try:
            outputs = self.engine.step()
        except Exception as e:
            log.exception("engine step failed")
            self._abort_all("error", f"{type(e).__name__}: {e}")
            return
        now = time.perf_counter()
        for batch_req, step in outputs:
            running = self._running.get(batch_req.request_id)
            if running is None:  # cancelled while the step ran
                self.engine.cancel(batch_req.request_id)
                continue
            if step.token_ids:
                self.metrics.observe_tokens(len(step.token_ids), now - running.last_emit)
            running.last_emit = now
            self._emit(running, step, batch_req.stats)

    def _emit(self, running: _Running, step: StepOutput, stats: SpecStats) -> None:
        handle = running.handle
        rid = handle.request.request_id
        text = running.detok.add(step.token_ids)
        finish = step.finish_reason
        if running.detok.stopped:
            finish = "stop"
        elif finish:
            text += running.detok.flush()
        running.num_generated += len(step.token_ids)
        event = Event(text, step, finish, num_generated=running.num_generated)
        if step.logprobs or running.held_logprobs:
            running.held_logprobs += step.logprobs or []
            event.logprobs = self._release_logprobs(running, finish)
        if handle.request.want_fates:
            decode = self.tokenizer.decode
            event.token_texts = [decode([t]) for t in step.token_ids]
            event.draft_texts = [decode([t]) for t in step.draft_ids]
        if finish:
            event.stats = stats
            self._running.pop(rid, None)
            self.engine.cancel(rid)  # a stop string ends a row the engine still runs
        self._deliver(handle, event)

    def _release_logprobs(self, running: _Running, finish: str | None) -> list[dict]:
        """The held logprob entries whose tokens' text has gone out, as the text goes.

        Without stop strings every token's entry goes at once. With them, text that might
        start a stop string is held back, and so are the entries of its tokens: a token goes
        once the text decoded up to it is a prefix of the text sent. When a stop string
        matches, the tokens needed to spell the returned text go (one the stop string starts
        inside included) and the rest are dropped. Example: stop " cat", tokens " the", " c",
        "at": " c" is held after step 2; "at" completes the stop; the text is " the" and
        only " the"'s entry is ever sent.
        """
        detok = running.detok
        ids, sent = detok.token_ids, running.num_released

        def decode(n: int) -> str:  # the text of the first n tokens, as the detokenizer spells it
            return self.tokenizer.decode(ids[:n], skip_special_tokens=True)

        if detok.stopped:
            keep = sent
            while keep < len(ids) and len(decode(keep)) < len(detok.text):
                keep += 1
        elif finish or not detok.stop:
            keep = sent + len(running.held_logprobs)
        else:
            keep = sent + len(running.held_logprobs)
            while keep > sent and not detok.text.startswith(decode(keep)):
                keep -= 1
        out = running.held_logprobs[: keep - sent]
        running.held_logprobs = [] if detok.stopped else running.held_logprobs[keep - sent :]
        running.num_released = keep
        return out

    def _deliver(self, handle: Handle, event: Event) -> None:
        try:
            handle.loop.call_soon_threadsafe(handle.queue.put_nowait, (handle.index, event))
        except RuntimeError:  # the event loop is gone (shutdown)
            pass

    def _abort_all(self, reason: str, message: str) -> None:
        with self._cond:
            waiting, self._waiting = list(self._waiting), deque()
        for rid, running in list(self._running.items()):
            self.engine.cancel(rid)
            self._deliver(running.handle, Event("", finish_reason=reason, error=message, num_generated=running.num_generated))
        self._running.clear()
        for handle in waiting:
            self._deliver(handle, Event("", finish_reason=reason, error=message))
