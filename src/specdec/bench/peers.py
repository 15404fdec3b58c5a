"""Contenders `specdec bench` runs beside its own engine, measured the same way.

Every contender answers `measure(prompt, prompt_ids, temperature, max_tokens, seed) ->
Measurement`. Timing is by token arrival: the first token's arrival ends the prefill
(time to first token), and decode time runs from the first token to the last, so
decode tokens/s = (generated - 1) / decode seconds, exactly as SpecStats defines it for
the engine. Each later arrival is one *step* (several tokens for assisted generation or
an SSE chunk) whose wall time is spread evenly over its tokens for inter-token latency.

- `hf`: transformers' `generate()` on the target's weights (models.convert.to_transformers),
  same dtype, device and threads, same prompt ids, max_new_tokens and EOS ids; greedy at
  temperature 0, else pure temperature sampling (top_k=0, top_p=1, like ours), seeded
  with torch.manual_seed. Arrival times come from a streamer (`put` per step).
- `hf-prompt-lookup`: the same with prompt_lookup_num_tokens=K (max_matching_ngram_size =
  our ngram_max).
- `hf-assisted`: the same with assistant_model = the converted draft, num_assistant_tokens=K
  with the "constant" schedule; for K = "auto" transformers' own defaults.
- `endpoint`: an OpenAI-compatible server, POST /v1/chat/completions with stream=true;
  tokens are counted with the target's tokenizer on the returned text (per chunk: the
  growth of the token count of the text so far).
- `llamacpp`, `llamacpp-prompt-lookup`: llama-cpp-python on the target's GGUF file, an
  optional extra; see llamacpp.py.

Every peer derives from `Peer`, whose `measure` turns an exception on one prompt into a
failed Measurement (no tokens, finish_reason "error: TYPE: message", `error` set), reported
on stderr, so the bench records the run as failed and goes on with the next one; the
summary's speeds skip runs without a decode token. Each peer implements `measure_once`.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field

import torch

HF_DEFAULT_LOOKUP_TOKENS = 10  # transformers' documented prompt_lookup_num_tokens


@dataclass
class Measurement:
    """One generation as the bench records it (see summary.py for the record schema)."""

    token_ids: list[int]
    prefill_seconds: float  # time to first token
    decode_seconds: float  # first token -> last token
    step_seconds: list[float] = field(default_factory=list)  # each arrival after the first
    step_tokens: list[int] = field(default_factory=list)
    finish_reason: str = "length"
    spec: dict | None = None  # stats_to_record(SpecStats) for the engine; None for peers
    error: str | None = None  # why a peer's run failed (then token_ids is empty)

    @property
    def num_generated_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def tokens_per_second(self) -> float:
        decode = self.num_generated_tokens - 1
        return decode / self.decode_seconds if decode > 0 and self.decode_seconds > 0 else 0.0


MAX_ERROR_CHARS = 300


def failed_measurement(name: str, error: Exception) -> Measurement:
    message = f"{type(error).__name__}: {error}"[:MAX_ERROR_CHARS]
    print(f"bench: {name} failed on this prompt ({message}); recorded as failed, going on", file=sys.stderr)
    return Measurement([], 0.0, 0.0, finish_reason=f"error: {message}", error=message)


class Peer:
    """A contender beside our engine (module docstring): one failing prompt does not end the run."""

    kind = "peer"
    name = "peer"

    def measure(self, prompt, prompt_ids: list[int], temperature: float, max_tokens: int, seed: int) -> Measurement:
        try:
            return self.measure_once(prompt, prompt_ids, temperature, max_tokens, seed)
        except Exception as e:  # noqa: BLE001 (any failure of the peer on this prompt is its record)
            return failed_measurement(self.name, e)

    def measure_once(self, prompt, prompt_ids: list[int], temperature: float, max_tokens: int,
                     seed: int) -> Measurement:
        raise NotImplementedError


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class ArrivalTimer:
    """A transformers streamer that timestamps each `put` after the prompt's."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.prompt_seen = False
        self.times: list[float] = []
        self.counts: list[int] = []

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        synchronize(self.device)
        self.times.append(time.perf_counter())
        self.counts.append(int(value.numel()))

    def end(self) -> None:
        pass


def measurement_from_arrivals(start: float, times: list[float], counts: list[int], token_ids: list[int],
                              finish_reason: str) -> Measurement:
    if not times:
        return Measurement(token_ids, 0.0, 0.0, finish_reason=finish_reason)
    steps = [b - a for a, b in zip(times, times[1:])]
    return Measurement(token_ids, times[0] - start, times[-1] - times[0], steps, counts[1:], finish_reason)


class HFPeer(Peer):
    """transformers' generate() over the same weights (plain, prompt lookup or assisted)."""

    ignore_eos = False

    def __init__(self, name: str, hf_model, eos_ids: list[int], device: torch.device,
                 assistant=None, draft_n: int | str | None = None, ngram_max: int = 4) -> None:
        self.name = name
        self.hf_model = hf_model
        self.eos_ids = list(eos_ids)
        self.device = device
        self.assistant = assistant
        self.draft_n = draft_n
        self.ngram_max = ngram_max
        if assistant is not None and isinstance(draft_n, int):
            assistant.generation_config.num_assistant_tokens = draft_n
            assistant.generation_config.num_assistant_tokens_schedule = "constant"

    def generation_kwargs(self, temperature: float, max_tokens: int) -> dict:
        kw = dict(max_new_tokens=max_tokens, eos_token_id=self.eos_ids, pad_token_id=self.eos_ids[0])
        if self.ignore_eos:
            kw["min_new_tokens"] = max_tokens
        if temperature > 0:
            kw.update(do_sample=True, temperature=temperature, top_k=0, top_p=1.0)
        else:
            kw.update(do_sample=False)
        if self.name == "hf-prompt-lookup":
            k = self.draft_n if isinstance(self.draft_n, int) else HF_DEFAULT_LOOKUP_TOKENS
            kw.update(prompt_lookup_num_tokens=k, max_matching_ngram_size=self.ngram_max)
        if self.assistant is not None:
            kw["assistant_model"] = self.assistant
        return kw

    @torch.inference_mode()
    def measure_once(self, prompt, prompt_ids: list[int], temperature: float, max_tokens: int,
                seed: int) -> Measurement:
        ids = torch.tensor([prompt_ids], device=self.device)
        timer = ArrivalTimer(self.device)
        torch.manual_seed(seed)
        kwargs = self.generation_kwargs(temperature, max_tokens)
        synchronize(self.device)
        start = time.perf_counter()
        out = self.hf_model.generate(ids, attention_mask=torch.ones_like(ids), streamer=timer, **kwargs)
        tokens = out[0, len(prompt_ids):].tolist()
        finish = "stop" if tokens and tokens[-1] in self.eos_ids else "length"
        return measurement_from_arrivals(start, timer.times, timer.counts, tokens, finish)


def hf_peers(names: list[str], target, draft, methods: list[str], draft_ns: list, ngram_max: int) -> list[HFPeer]:
    """The HF contenders for --peer hf: plain, plus prompt lookup / assisted when ngram / draft run.

    K for the assisted ones is the first integer in --draft-n (else transformers' defaults)."""
    from specdec.models.convert import to_transformers

    if "hf" not in names:
        return []
    device = target.model.device
    hf_target = _as_transformers(target, to_transformers)
    eos = sorted(set(target.config.eos_token_ids) | {getattr(target.tokenizer, "eos_token_id", None)} - {None})
    if not eos:
        raise ValueError("the target declares no EOS token id; transformers' generate needs one")
    k = next((n for n in draft_ns if isinstance(n, int)), "auto")
    peers = [HFPeer("hf", hf_target, eos, device)]
    if "ngram" in methods:
        peers.append(HFPeer("hf-prompt-lookup", hf_target, eos, device, draft_n=k, ngram_max=ngram_max))
    if "draft" in methods and draft is not None:
        hf_draft = _as_transformers(draft, to_transformers)
        peers.append(HFPeer("hf-assisted", hf_target, eos, device, assistant=hf_draft, draft_n=k))
    return peers


def _as_transformers(loaded, convert):
    hf_model = getattr(loaded.model, "hf_model", None)  # the adapter already wraps one
    return hf_model if hf_model is not None else convert(loaded.model, loaded.config)


class EndpointPeer(Peer):
    """An OpenAI-compatible server, streamed over /v1/chat/completions."""

    name = "endpoint"
    draft_n = None

    def __init__(self, url: str, model: str | None, tokenizer, ignore_eos: bool = False,
                 timeout: float = 600.0) -> None:
        try:
            import httpx
        except ImportError as e:
            raise ValueError("--endpoint needs httpx: pip install httpx") from e
        base = url.rstrip("/")
        self.url = base if base.endswith("/chat/completions") else (
            base + ("/chat/completions" if base.endswith("/v1") else "/v1/chat/completions"))
        self.model = model or "default"
        self.tokenizer = tokenizer
        self.ignore_eos = ignore_eos
        self.client = httpx.Client(timeout=timeout)

    def measure_once(self, prompt, prompt_ids: list[int], temperature: float, max_tokens: int,
                     seed: int) -> Measurement:
        body = {"model": self.model, "messages": prompt.as_messages(), "max_tokens": max_tokens,
                "temperature": temperature, "seed": seed, "stream": True}
        if self.ignore_eos:
            body["ignore_eos"] = True  # vLLM's extension; other servers ignore it
        chunks: list[str] = []
        times: list[float] = []
        finish = "length"
        start = time.perf_counter()
        with self.client.stream("POST", self.url, json=body) as response:
            if response.status_code != 200:
                raise ValueError(f"endpoint {self.url} answered {response.status_code}: "
                                 f"{response.read().decode(errors='replace')[:200]}")
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                choice = (json.loads(data).get("choices") or [{}])[0]
                text = (choice.get("delta") or {}).get("content") or ""
                if text:
                    times.append(time.perf_counter())
                    chunks.append(text)
                finish = choice.get("finish_reason") or finish
        counts, token_ids, so_far = [], [], ""
        for text in chunks:  # tokens each chunk added to the text so far
            so_far += text
            ids = self.tokenizer.encode(so_far, add_special_tokens=False)
            counts.append(max(len(ids) - len(token_ids), 0))
            token_ids = ids
        kept = [(t, n) for t, n in zip(times, counts) if n > 0] or list(zip(times, counts))
        return measurement_from_arrivals(start, [t for t, _ in kept], [n for _, n in kept], token_ids, finish)

    def close(self) -> None:
        self.client.close()
