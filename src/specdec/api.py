"""The Python API, in the shape vLLM users know.

    from specdec import LLM, SamplingParams
    llm = LLM(speculative_method="ngram", num_speculative_tokens="auto")
    out = llm.generate(["Repeat: the cat sat on the mat."], SamplingParams(temperature=0, max_tokens=64))
    print(out[0].outputs[0].text, out[0].spec)

`generate` takes raw prompts (no chat template, like vLLM); `chat` applies the template.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from specdec.config import EngineConfig, SamplingParams, SpeculativeConfig
from specdec.engine.calibrate import calibration_size, load_or_calibrate
from specdec.engine.detokenizer import Detokenizer
from specdec.engine.engine import Engine, StepOutput
from specdec.engine.stats import SpecStats
from specdec.models.loader import LoadedModel, load_model, resolve_batch_invariant
from specdec.proposers.factory import build_proposer


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


class LLM:
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
    ) -> None:
        if threads:
            torch.set_num_threads(threads)
        method = speculative_method or ("draft" if speculative_model else "none")
        self.spec_config = SpeculativeConfig(
            method=method,
            draft_model=speculative_model,
            num_speculative_tokens=num_speculative_tokens,
            ngram_min=ngram_min,
            ngram_max=ngram_max,
            adaptive=adaptive,
            tree_nodes=tree_nodes,
            tree_top_k=tree_top_k,
            prune=draft_prune,
            graft=graft,
        )
        self.engine_config = EngineConfig(model=model, dtype=dtype, device=device, threads=threads, max_seq_len=max_model_len)
        if tree_nodes > 0:  # trees are batch-invariant only with the C kernel: else "on" raises, "auto" is off
            batch_invariant = resolve_batch_invariant(batch_invariant, dtype, quant, device, trees=True)
        self.target: LoadedModel = load_model(model, dtype, device, max_model_len, quant=quant, batch_invariant=batch_invariant)
        self.tokenizer = self.target.tokenizer
        proposer = build_proposer(self.spec_config, self.target, dtype, device, max_model_len)
        cost = None
        if proposer is not None and self.spec_config.auto and self.spec_config.adaptive == "cost":
            cost = load_or_calibrate(self.target, calibration_size(self.spec_config))
        self.engine = Engine(self.target, proposer, self.spec_config, max_model_len, cost)
        self.stats = SpecStats()  # aggregate over every request this LLM ran

    def stream(self, prompt_ids: list[int], params: SamplingParams) -> Iterator[TextEvent]:
        """Step by step: tokens with their fates, and the text they complete."""
        detok = Detokenizer(self.tokenizer, params.stop)
        stats = SpecStats()
        try:
            for step in self.engine.stream(prompt_ids, params, stats):
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
            self.stats.merge(stats)
            self.last_stats = stats

    def _run(self, prompt, prompt_ids: list[int], params: SamplingParams) -> RequestOutput:
        text, tokens, finish = [], [], "length"
        for event in self.stream(prompt_ids, params):
            text.append(event.text)
            tokens.extend(event.step.token_ids)
            finish = event.finish_reason or finish
        stats = self.last_stats
        completion = CompletionOutput(0, "".join(text), tokens, finish)
        return RequestOutput(prompt, prompt_ids, [completion], stats, stats.prefill_seconds, stats.decode_seconds)

    def generate(
        self, prompts: str | list[str], sampling_params: SamplingParams | None = None
    ) -> list[RequestOutput]:
        params = sampling_params or SamplingParams()
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        return [self._run(p, encode_prompt(self.tokenizer, p, chat=False), params) for p in prompts]

    def chat(
        self, messages: list[dict] | list[list[dict]], sampling_params: SamplingParams | None = None
    ) -> list[RequestOutput]:
        params = sampling_params or SamplingParams()
        conversations = [messages] if messages and isinstance(messages[0], dict) else list(messages)
        return [self._run(m, encode_prompt(self.tokenizer, messages=m), params) for m in conversations]
