"""The llama.cpp contenders of `specdec bench --peer llamacpp` (llama-cpp-python, an optional extra).

- `llamacpp`: llama.cpp's `Llama.generate` on the target's own GGUF file, run as is (its own
  quantization, whatever --quant does to ours), fed the same prompt ids as the engine (already
  chat-templated, not re-tokenized), the same max_tokens and EOS ids, n_threads =
  torch.get_num_threads() for decode and prefill alike. Greedy at temperature 0 (llama.cpp's
  greedy sampler), else pure temperature sampling (top_k=0, top_p=1, min_p=0, typical_p=1,
  no repeat penalty) seeded with the run's seed.
- `llamacpp-prompt-lookup`: the same with llama-cpp-python's `LlamaPromptLookupDecoding`
  (num_pred_tokens=K, max_ngram_size=our ngram_max) as draft_model, one contender per K in
  --draft-n ("auto" is its default K of 10), when --speculative runs ngram (as hf-prompt-lookup).

Timing is by arrival (peers.measurement_from_arrivals): `generate` yields one token at a time,
and the tokens yielded between two model evaluations form one step (a verified draft yields
several at once), timed at the last of them. Each measure() starts from an empty KV cache, so
no prefix is reused from an earlier run and prefill is timed in full.

All contenders share two `Llama` objects over the one file: a plain one, and one built with a
draft model (llama-cpp-python then keeps logits for every position, which verification needs);
each prompt-lookup contender installs its own draft before it generates.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from specdec.bench.peers import Measurement, Peer, measurement_from_arrivals

LLAMACPP_DEFAULT_LOOKUP_TOKENS = 10  # LlamaPromptLookupDecoding's default num_pred_tokens
INSTALL_HINT = ("--peer llamacpp needs llama-cpp-python: scripts/setup_peers.sh llamacpp builds .venv-llamacpp "
                "(run the bench from there), or pip install 'specdec[llamacpp]'")


def import_llama_cpp():
    """(Llama, LlamaPromptLookupDecoding), or a ValueError that says how to install them."""
    try:
        from llama_cpp import Llama
        from llama_cpp.llama_speculative import LlamaPromptLookupDecoding
    except ImportError as e:
        raise ValueError(f"{INSTALL_HINT} ({e})") from e
    return Llama, LlamaPromptLookupDecoding


class LlamaCppSession:
    """The Llama objects the llama.cpp contenders share, and eval counters (steps, tokens evaluated)."""

    def __init__(self, path: Path, n_ctx: int, n_threads: int, lookup: bool) -> None:
        Llama, LlamaPromptLookupDecoding = import_llama_cpp()
        session = self

        class CountingLlama(Llama):
            def eval(self, tokens):  # one model evaluation = one step boundary
                session.num_evals += 1
                session.num_eval_tokens += len(tokens)
                super().eval(tokens)

        self.num_evals = 0
        self.num_eval_tokens = 0  # a fresh prefill evaluates every prompt token (tests check it)
        self.make_draft = LlamaPromptLookupDecoding
        kw = dict(n_ctx=n_ctx, n_threads=n_threads, n_threads_batch=n_threads, verbose=False)
        self.plain = CountingLlama(str(path), **kw)
        # a draft at construction makes llama-cpp-python keep every position's logits
        self.lookup = CountingLlama(str(path), draft_model=LlamaPromptLookupDecoding(), **kw) if lookup else None
        self.closed = False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            for llama in (self.plain, self.lookup):
                if llama is not None:
                    llama.close()


def sampling_kwargs(temperature: float) -> dict:
    """llama.cpp sampler settings: greedy at 0, else temperature alone (every filter off)."""
    if temperature == 0:
        return dict(temp=0.0, repeat_penalty=1.0)
    return dict(temp=temperature, top_k=0, top_p=1.0, min_p=0.0, typical_p=1.0, repeat_penalty=1.0)


class LlamaCppPeer(Peer):
    """llama.cpp over the target's GGUF file: plain, or with its prompt-lookup draft. A prompt
    it fails on (an error inside llama-cpp-python, a prompt past n_ctx) is a failed run (Peer)."""

    def __init__(self, name: str, session: LlamaCppSession, eos_ids: list[int], draft_n: int | str | None = None,
                 ngram_max: int = 4, ignore_eos: bool = False) -> None:
        self.name = name
        self.session = session
        self.eos_ids = set(eos_ids)
        self.draft_n = draft_n
        self.ignore_eos = ignore_eos
        if draft_n is None:
            self.llama, self.draft = session.plain, None
        else:
            if session.lookup is None:
                raise ValueError(f"{name}: the session was built without a prompt-lookup Llama")
            k = draft_n if isinstance(draft_n, int) else LLAMACPP_DEFAULT_LOOKUP_TOKENS
            self.llama = session.lookup
            self.draft = session.make_draft(max_ngram_size=ngram_max, num_pred_tokens=k)

    def measure_once(self, prompt, prompt_ids: list[int], temperature: float, max_tokens: int,
                     seed: int) -> Measurement:
        llama = self.llama
        if len(prompt_ids) + max_tokens > llama.n_ctx():
            raise ValueError(f"{self.name}: prompt ({len(prompt_ids)}) + max_tokens ({max_tokens}) tokens > "
                             f"llama.cpp n_ctx {llama.n_ctx()}")
        if self.draft is not None:
            llama.draft_model = self.draft
        llama.reset()  # n_tokens = 0: generate() skips its prefix-cache match and evaluates the whole prompt
        llama.set_seed(seed)
        tokens: list[int] = []
        times: list[float] = []
        counts: list[int] = []
        last_eval, finish = -1, "length"
        start = time.perf_counter()
        stream = llama.generate(prompt_ids, **sampling_kwargs(temperature))
        try:
            for token in stream:
                now = time.perf_counter()
                if self.session.num_evals != last_eval:  # the first token of a new step
                    last_eval = self.session.num_evals
                    times.append(now)
                    counts.append(1)
                else:  # one more token verified by the same evaluation
                    times[-1] = now
                    counts[-1] += 1
                tokens.append(int(token))
                if not self.ignore_eos and token in self.eos_ids:
                    finish = "stop"
                    break
                if len(tokens) >= max_tokens:
                    break
        finally:
            stream.close()
        return measurement_from_arrivals(start, times, counts, tokens, finish)

    def close(self) -> None:
        self.session.close()


def lookup_draft_ns(draft_ns: list) -> list:
    """--draft-n entries for prompt lookup, one per distinct K ("auto" = llama-cpp-python's 10)."""
    seen, out = set(), []
    for n in draft_ns:
        k = n if isinstance(n, int) else LLAMACPP_DEFAULT_LOOKUP_TOKENS
        if k not in seen:
            seen.add(k)
            out.append(n)
    return out


def llamacpp_peers(names: list[str], target, methods: list[str], draft_ns: list, ngram_max: int,
                   max_seq_len: int, ignore_eos: bool = False) -> list[LlamaCppPeer]:
    """The llama.cpp contenders for --peer llamacpp: plain, plus prompt lookup per K when ngram runs."""
    from specdec.models.gguf_file import is_gguf

    if "llamacpp" not in names:
        return []
    path = Path(target.path)
    if not path.is_file() or not is_gguf(path):
        raise ValueError(f"--peer llamacpp needs a GGUF target (llama.cpp runs the same file), "
                         f"but {path} is not a GGUF file")
    eos = sorted(set(target.config.eos_token_ids) | {getattr(target.tokenizer, "eos_token_id", None)} - {None})
    if not eos and not ignore_eos:
        raise ValueError("the target declares no EOS token id; the llamacpp peer needs one to stop (or --ignore-eos)")
    lookup_ns = lookup_draft_ns(draft_ns) if "ngram" in methods else []
    max_k = max([n if isinstance(n, int) else LLAMACPP_DEFAULT_LOOKUP_TOKENS for n in lookup_ns], default=0)
    session = LlamaCppSession(path, max_seq_len + max_k, torch.get_num_threads(), lookup=bool(lookup_ns))
    peers = [LlamaCppPeer("llamacpp", session, eos, ignore_eos=ignore_eos)]
    peers += [LlamaCppPeer("llamacpp-prompt-lookup", session, eos, draft_n=n, ngram_max=ngram_max,
                           ignore_eos=ignore_eos) for n in lookup_ns]
    return peers
