"""Configuration dataclasses: the model's shape, sampling, speculation and the engine.

Every surface (CLI, Python API, server, bench) builds these and hands them to the
library; nothing below the surfaces takes loose kwargs. Validation happens here, once,
with messages that name the bad field and the accepted range.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DTYPES = ("float32", "bfloat16", "float16")
SPECULATIVE_METHODS = ("none", "draft", "ngram", "eagle", "hybrid")
QUANTS = ("none", "int8", "int4")
SAMPLING_VERIFY = ("coupled", "rejection")


@dataclass
class ModelConfig:
    """Shape of a Llama-family transformer (Llama 2/3, SmolLM, Mistral, Qwen2)."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None
    tie_word_embeddings: bool = False
    attention_bias: bool = False  # qkv bias (Qwen2)
    max_position_embeddings: int = 2048
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    architecture: str = "llama"

    def __post_init__(self) -> None:
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads {self.num_heads} is not a multiple of num_kv_heads {self.num_kv_heads}"
            )

    @property
    def num_params(self) -> int:
        """Parameter count (embeddings counted once when tied)."""
        d, f, v = self.hidden_size, self.intermediate_size, self.vocab_size
        q = self.num_heads * self.head_dim
        kv = self.num_kv_heads * self.head_dim
        attn = d * q + 2 * d * kv + q * d + (q + 2 * kv if self.attention_bias else 0)
        per_layer = attn + 3 * d * f + 2 * d
        head = 0 if self.tie_word_embeddings else v * d
        return v * d + self.num_layers * per_layer + d + head


@dataclass
class SamplingParams:
    """How to pick tokens, in vLLM's vocabulary.

    temperature == 0 means greedy. top_k <= 0, top_p == 1 and min_p == 0 disable those
    filters. The logits processors (penalties, logit_bias, min_tokens) change the target's
    logits at each position from the tokens before it, so the verifier applies them at each
    drafted position exactly as plain decoding would there (sampling.py).
    """

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0  # drop tokens below min_p * (the top token's probability)
    max_tokens: int = 16
    min_tokens: int = 0  # EOS and stop_token_ids are masked until this many tokens exist
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)  # end the request like EOS (kept in the output)
    ignore_eos: bool = False
    presence_penalty: float = 0.0  # OpenAI's: minus this once for every token already generated
    frequency_penalty: float = 0.0  # OpenAI's: minus this times the token's count in the output
    repetition_penalty: float = 1.0  # CTRL's / vLLM's: divide positive logits (multiply negative) of seen tokens
    logit_bias: dict[int, float] = field(default_factory=dict)  # token id -> added to its logit
    logprobs: int | None = None  # None: none; n >= 0: the chosen token's logprob and the top n

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        if not isinstance(self.temperature, (int, float)) or self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature!r}")
        if not isinstance(self.top_p, (int, float)) or not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if not isinstance(self.top_k, int) or isinstance(self.top_k, bool):
            raise ValueError(f"top_k must be an integer (<= 0 disables it), got {self.top_k!r}")
        if not isinstance(self.max_tokens, int) or self.max_tokens <= 0:
            raise ValueError(f"max_tokens must be a positive integer, got {self.max_tokens!r}")
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise ValueError(f"stop strings must be non-empty strings, got {self.stop!r}")
        if not isinstance(self.min_p, (int, float)) or not 0.0 <= self.min_p <= 1.0:
            raise ValueError(f"min_p must be in [0, 1], got {self.min_p!r}")
        if not isinstance(self.min_tokens, int) or not 0 <= self.min_tokens <= self.max_tokens:
            raise ValueError(f"min_tokens must be an integer in [0, max_tokens={self.max_tokens}], got {self.min_tokens!r}")
        if any(not isinstance(t, int) or isinstance(t, bool) or t < 0 for t in self.stop_token_ids):
            raise ValueError(f"stop_token_ids must be non-negative token ids, got {self.stop_token_ids!r}")
        for name in ("presence_penalty", "frequency_penalty"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not -2.0 <= value <= 2.0:
                raise ValueError(f"{name} must be in [-2, 2], got {value!r}")
        if not isinstance(self.repetition_penalty, (int, float)) or not 0.0 < self.repetition_penalty <= 10.0:
            raise ValueError(f"repetition_penalty must be in (0, 10], got {self.repetition_penalty!r}")
        for token, bias in self.logit_bias.items():
            if not isinstance(token, int) or isinstance(token, bool) or token < 0:
                raise ValueError(f"logit_bias keys must be non-negative token ids, got {token!r}")
            if not isinstance(bias, (int, float)) or not -100.0 <= bias <= 100.0:
                raise ValueError(f"logit_bias values must be in [-100, 100], got {bias!r} for token {token}")
        if self.logprobs is not None and (not isinstance(self.logprobs, int) or not 0 <= self.logprobs <= 20):
            raise ValueError(f"logprobs must be an integer in [0, 20], got {self.logprobs!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def processes_logits(self) -> bool:
        """Whether a logits processor changes the target's logits before the choice."""
        return bool(self.presence_penalty or self.frequency_penalty or self.repetition_penalty != 1.0
                    or self.logit_bias or self.min_tokens)


@dataclass
class SpeculativeConfig:
    """Which proposer drafts, and how many tokens per step.

    num_speculative_tokens is an int K >= 1, or "auto" for the cost-aware controller.
    """

    method: str = "none"
    draft_model: str | None = None
    num_speculative_tokens: int | str = 4
    ngram_min: int = 1
    ngram_max: int = 4
    # auto K's ceiling: long copy stretches pay for long drafts when a verify pass over many
    # tokens costs little more than a decode step (bench --draft-n auto measures it)
    max_speculative_tokens: int = 32
    adaptive: str = "cost"  # "cost" (expected tokens/s) or "heuristic" (transformers' +2/-1)
    # eagle, hybrid: > 0 drafts EAGLE-2 trees of this many nodes (depth <= K); hybrid grafts
    # the n-gram continuation onto them (proposers/hybrid.py)
    tree_nodes: int = 0
    tree_top_k: int = 8  # eagle trees: children per expanded node, nodes expanded per depth
    # auto K: verify only the drafted tokens (chain prefix, best tree nodes) whose own draft
    # confidence pays for their verify cost (engine/planner.py); EAGLE
    prune: bool = True
    # hybrid trees: graft the n-gram continuation onto the EAGLE tree (proposers/hybrid.py)
    graft: bool = True
    # how sampled drafts are verified (verify.py): "coupled" draws every token by the
    # Gumbel-max trick with noise keyed by (seed, position), so a seed gives the plain
    # decoder's sample whatever the proposer, K or batch; "rejection" is Leviathan et al.'s
    # rejection sampling, exact in distribution only
    sampling_verify: str = "coupled"

    def __post_init__(self) -> None:
        if self.method not in SPECULATIVE_METHODS:
            raise ValueError(
                f"speculative method {self.method!r} is not one of {', '.join(SPECULATIVE_METHODS)}"
            )
        k = self.num_speculative_tokens
        if isinstance(k, str):
            if k == "auto":
                pass
            elif k.isdigit():
                self.num_speculative_tokens = int(k)
            else:
                raise ValueError(f"draft length must be a positive integer or 'auto', got {k!r}")
        k = self.num_speculative_tokens
        if isinstance(k, int) and k < 1:
            raise ValueError(f"draft length must be >= 1, got {k}")
        if isinstance(k, int) and k > self.max_speculative_tokens:
            self.max_speculative_tokens = k
        if self.method == "draft" and not self.draft_model:
            raise ValueError("--speculative draft needs --draft-model PATH (or self:bfloat16)")
        if not 1 <= self.ngram_min <= self.ngram_max:
            raise ValueError(
                f"need 1 <= ngram_min <= ngram_max, got ngram_min={self.ngram_min} "
                f"ngram_max={self.ngram_max}"
            )
        if self.tree_nodes < 0 or self.tree_top_k < 1:
            raise ValueError(f"need tree_nodes >= 0 and tree_top_k >= 1, got {self.tree_nodes}, {self.tree_top_k}")
        if self.tree_nodes and self.method not in ("eagle", "hybrid"):
            raise ValueError(f"tree drafts (tree_nodes={self.tree_nodes}) need --speculative eagle or hybrid")
        if self.sampling_verify not in SAMPLING_VERIFY:
            raise ValueError(f"sampling_verify must be one of {', '.join(SAMPLING_VERIFY)}, got {self.sampling_verify!r}")
        if self.adaptive not in ("cost", "heuristic"):
            raise ValueError(f"adaptive must be 'cost' or 'heuristic', got {self.adaptive!r}")

    @property
    def enabled(self) -> bool:
        return self.method != "none"

    @property
    def auto(self) -> bool:
        return self.num_speculative_tokens == "auto"


@dataclass
class EngineConfig:
    """Where and how the target runs, and how many requests decode together."""

    model: str | None = None  # None = the embedded default model
    dtype: str = "float32"
    device: str = "cpu"
    threads: int | None = None
    max_seq_len: int = 4096  # per request (each row of the KV cache)
    quant: str = "none"  # weight-only quantization: none, int8, int4
    batch_invariant: str | bool = "auto"  # auto, on, off (or a bool)
    max_batch_size: int = 1  # rows of the KV cache: requests decoded together

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.max_seq_len < 16:
            raise ValueError(f"max_seq_len must be >= 16, got {self.max_seq_len}")
        if self.quant not in QUANTS:
            raise ValueError(f"quant must be one of {', '.join(QUANTS)}, got {self.quant!r}")
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {self.max_batch_size}")
