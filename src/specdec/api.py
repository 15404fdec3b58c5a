"""The Python API, in the shape vLLM users know.

    from specdec import LLM, SamplingParams
    llm = LLM(speculative_method="ngram", num_speculative_tokens="auto")
    out = llm.generate(["Repeat: the cat sat on the mat."], SamplingParams(temperature=0, max_tokens=64))
    print(out[0].outputs[0].text, out[0].spec)

`generate` takes raw prompts (no chat template, like vLLM); `chat` applies the template.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from specdec.config import EngineConfig, SamplingParams, SpeculativeConfig
from specdec.engine.build import build_engine
from specdec.engine.detokenizer import Detokenizer
from specdec.engine.engine import Engine, StepOutput
from specdec.engine.stats import SpecStats
from specdec.models.loader import LoadedModel, load_model
from specdec.options import make_configs


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    finish_reason: str


@dataclass
class RequestOutput:
    prompt: str | list[dict]
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    spec: SpecStats  # speculative statistics of this request
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.spec.tokens_per_second


@dataclass
class TextEvent:
    """One engine step as a streaming surface sees it."""

    step: StepOutput
    text: str  # new final text (may be empty while a character or stop string is pending)
    finish_reason: str | None = None


def encode_prompt(tokenizer, prompt: str | None = None, messages: list[dict] | None = None, chat: bool = True) -> list[int]:
    """Token ids for a raw prompt, or for messages through the chat template."""
    if messages is not None:
        if not messages:
            raise ValueError("messages is empty")
        if getattr(tokenizer, "chat_template", None) is None:
            raise ValueError("this model's tokenizer has no chat template; pass a raw prompt")
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        return list(ids["input_ids"] if hasattr(ids, "keys") else ids)
    if not prompt:
        raise ValueError("the prompt is empty")
    if chat and getattr(tokenizer, "chat_template", None) is not None:
        return encode_prompt(tokenizer, messages=[{"role": "user", "content": prompt}])
    return tokenizer.encode(prompt)


def stream_text(engine: Engine, tokenizer, prompt_ids: list[int], params: SamplingParams,
                stats: SpecStats | None = None) -> Iterator[TextEvent]:
    """One request step by step with the text each step completes; a stop string ends it
    (its row is freed and stats, if given, get its statistics)."""
    detok = Detokenizer(tokenizer, params.stop)
    steps = engine.stream(prompt_ids, params, stats)
    try:
        for step in steps:
            text = detok.add(step.token_ids)
            finish = step.finish_reason
            if detok.stopped:
                finish = "stop"
            elif finish:
                text += detok.flush()
            yield TextEvent(step, text, finish)
            if finish:
                return
    finally:
        steps.close()


def load_engine(engine_config: EngineConfig, spec: SpeculativeConfig) -> tuple[LoadedModel, Engine]:
    """The target an EngineConfig names, and the engine over it (every surface's route)."""
    if engine_config.threads:
        torch.set_num_threads(engine_config.threads)
    target = load_model(engine_config.model, engine_config.dtype, engine_config.device, engine_config.max_seq_len,
                        quant=engine_config.quant, batch_invariant=engine_config.batch_invariant)
    engine = build_engine(target, spec, engine_config.max_seq_len, engine_config.max_batch_size)
    return target, engine


class LLM:
    """vLLM's `LLM`: load once, then `generate` raw prompts or `chat` conversations. A list of
    prompts runs as one continuous batch of up to max_num_seqs rows."""

    def __init__(
        self,
        model: str | None = None,
        speculative_model: str | None = None,
        num_speculative_tokens: int | str = 4,
        speculative_method: str | None = None,
        dtype: str = "float32",
        device: str = "cpu",
        max_model_len: int = 4096,
        threads: int | None = None,
        ngram_min: int = 1,
        ngram_max: int = 4,
        adaptive: str = "cost",
        quant: str = "none",
        tree_nodes: int = 0,
        tree_top_k: int = 8,
        batch_invariant: str | bool = "auto",
        draft_prune: bool = True,
        graft: bool = True,
        max_num_seqs: int = 8,
        sampling_verify: str = "coupled",
    ) -> None:
        self.engine_config, self.spec_config = make_configs(
            model=model, dtype=dtype, device=device, threads=threads, max_model_len=max_model_len, quant=quant,
            batch_invariant=batch_invariant, max_batch_size=max_num_seqs,
            speculative=speculative_method or ("draft" if speculative_model else "none"), draft_model=speculative_model,
            draft_n=num_speculative_tokens, adaptive=adaptive, ngram_min=ngram_min, ngram_max=ngram_max,
            tree_nodes=tree_nodes, tree_top_k=tree_top_k, draft_prune=draft_prune, graft=graft,
            sampling_verify=sampling_verify,
        )
        self.target, self.engine = load_engine(self.engine_config, self.spec_config)
        self.tokenizer = self.target.tokenizer
        self.stats = SpecStats()  # aggregate over every request this LLM ran

    def stream(self, prompt_ids: list[int], params: SamplingParams) -> Iterator[TextEvent]:
        """One request, step by step: tokens with their fates, and the text they complete."""
        stats = SpecStats()
        try:
            yield from stream_text(self.engine, self.tokenizer, prompt_ids, params, stats)
        finally:
            self.stats.merge(stats)
            self.last_stats = stats

    def _run(self, prompts: list, prompt_ids: list[list[int]], params: SamplingParams | list[SamplingParams],
             use_tqdm: bool) -> list[RequestOutput]:
        """Every prompt as one continuous batch; stop strings end a request early (its row is
        freed at the step that completes the string)."""
        params = list(params) if isinstance(params, list) else [params] * len(prompts)
        detoks = [Detokenizer(self.tokenizer, p.stop) for p in params]
        texts: list[list[str]] = [[] for _ in prompts]
        tokens: list[list[int]] = [[] for _ in prompts]
        finishes = ["length"] * len(prompts)
        done = [False] * len(prompts)

        def on_step(i: int, step: StepOutput) -> None:
            if done[i]:
                return
            detok = detoks[i]
            text = detok.add(step.token_ids)
            tokens[i].extend(step.token_ids)
            if detok.stopped:
                finishes[i], done[i] = "stop", True
            elif step.finish_reason:
                text += detok.flush()
                finishes[i], done[i] = step.finish_reason, True
            texts[i].append(text)

        results = self.engine.generate_batch(prompt_ids, params, on_step, progress=use_tqdm and len(prompts) > 1,
                                              stop=lambda i: done[i])
        outputs = []
        for i, (prompt, ids, result) in enumerate(zip(prompts, prompt_ids, results)):
            self.stats.merge(result.stats)
            completion = CompletionOutput(0, "".join(texts[i]), tokens[i], finishes[i])
            outputs.append(RequestOutput(prompt, ids, [completion], result.stats, result.stats.prefill_seconds,
                                         result.stats.decode_seconds))
        self.last_stats = results[-1].stats if results else SpecStats()
        return outputs

    def generate(
        self, prompts: str | list[str], sampling_params: SamplingParams | list[SamplingParams] | None = None,
        use_tqdm: bool = True,
    ) -> list[RequestOutput]:
        params = sampling_params or SamplingParams()
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        return self._run(prompts, [encode_prompt(self.tokenizer, p, chat=False) for p in prompts], params, use_tqdm)

    def chat(
        self, messages: list[dict] | list[list[dict]], sampling_params: SamplingParams | list[SamplingParams] | None = None,
        use_tqdm: bool = True,
    ) -> list[RequestOutput]:
        params = sampling_params or SamplingParams()
        conversations = [messages] if messages and isinstance(messages[0], dict) else list(messages)
        return self._run(conversations, [encode_prompt(self.tokenizer, messages=m) for m in conversations], params, use_tqdm)
