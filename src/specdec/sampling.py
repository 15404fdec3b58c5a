"""Pure sampling: logits -> probabilities (temperature, top-k, top-p) -> token ids.

Every function here is a pure function of its tensor arguments; randomness comes only
from an explicit `torch.Generator`. The draft and the target must build q and p with the
same `logits_to_probs(..., temperature, top_k, top_p)` transform: the verifier is lossless
with respect to exactly that transformed p.

Order of the transforms: temperature, then top-k, then top-p on the distribution
renormalized after top-k (the order vLLM and transformers use).

Ties at a top-k or top-p boundary go to the lower token id. This comes from a stable
descending sort rather than `torch.topk`, whose choice among tied values is not
documented. It also agrees with `torch.argmax`, which returns the first maximum, so
top_k=1 picks the same token as greedy decoding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from specdec.config import SamplingParams
from specdec.models.native import native_argmax, native_argmax_supported


def logits_to_probs(
    logits: torch.Tensor,  # [..., V] any float dtype
    temperature: float,
    top_k: int = 0,
    top_p: float = 1.0,
) -> torch.Tensor:  # [..., V] float32, each row sums to 1
    """Softmax of logits / temperature, truncated to the top-k and then the top-p nucleus.

    top_k <= 0 or top_k >= V disables top-k. top_p == 1 disables top-p; otherwise keep the
    smallest set of highest-probability tokens whose mass is >= top_p (at least the top one).
    """
    if not temperature > 0:
        raise ValueError(
            f"temperature must be > 0 to build probabilities (0 means greedy), got {temperature!r}"
        )
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")
    logits = logits.float() / temperature  # [..., V]
    vocab_size = logits.shape[-1]
    use_top_k = 0 < top_k < vocab_size
    use_top_p = top_p < 1.0
    if not (use_top_k or use_top_p):
        return torch.softmax(logits, dim=-1)

    sorted_logits, sorted_ids = torch.sort(logits, dim=-1, descending=True, stable=True)
    if use_top_k:
        sorted_logits[..., top_k:] = float("-inf")
    sorted_probs = torch.softmax(sorted_logits, dim=-1)  # [..., V] by descending rank
    if use_top_p:
        # Mass of the strictly higher-ranked tokens: rank r is kept while that is < top_p,
        # so the kept set is the smallest prefix reaching top_p, and rank 0 (mass 0) stays.
        mass_before = F.pad(sorted_probs.cumsum(dim=-1)[..., :-1], (1, 0))  # [..., V]
        sorted_probs = sorted_probs.masked_fill(mass_before >= top_p, 0.0)
        sorted_probs = sorted_probs / sorted_probs.sum(dim=-1, keepdim=True)
    return torch.zeros_like(sorted_probs).scatter_(-1, sorted_ids, sorted_probs)


def sample(
    probs: torch.Tensor,  # [B, V] (or [..., V]) non-negative, rows with positive mass
    generator: torch.Generator,
) -> torch.Tensor:  # [B] int64
    """One token per row, drawn with torch.multinomial from the given generator."""
    vocab_size = probs.shape[-1]
    token_ids = torch.multinomial(probs.reshape(-1, vocab_size), 1, generator=generator)
    return token_ids.view(probs.shape[:-1])


def greedy(logits: torch.Tensor) -> torch.Tensor:  # [..., V] -> [...] int64
    """Argmax over the vocabulary; ties go to the lowest token id (a NaN wins, as in torch).
    On CPU the C kernel's two vector passes replace torch's scalar loop, which is slow on a
    verify block of the default model's 49152-logit rows; the same answer."""
    if native_argmax_supported(logits):
        return native_argmax(logits)
    return logits.argmax(dim=-1)


def sample_next(
    logits: torch.Tensor,  # [B, V]
    params: SamplingParams,
    generator: torch.Generator,
) -> torch.Tensor:  # [B] int64
    """The plain decode step's token choice: greedy at temperature 0, else sampled."""
    if params.temperature == 0:
        return greedy(logits)
    probs = logits_to_probs(logits, params.temperature, params.top_k, params.top_p)
    return sample(probs, generator)
