"""Pure sampling: logits -> probabilities (temperature, top-k, top-p) -> token ids.

Every function here is a pure function of its tensor arguments; randomness comes only
from an explicit `torch.Generator`. The draft and the target must build q and p with the
same `logits_to_probs(..., temperature, top_k, top_p)` transform: the verifier is lossless
with respect to exactly that transformed p.

Order of the transforms: temperature, then top-k, then top-p on the distribution
renormalized after top-k (the order vLLM and transformers use).

Coupled sampling (`GumbelNoise`, `draw`): a token is argmax_v(log p(v) + g(v)), the
Gumbel-max trick, with g a pure function of (seed, absolute position, token id). Every pass
that chooses the token at a position (plain decoding, a drafter, the verifier) sees the same
g there, so speculation reproduces the plain decoder's sample for the seed; each token is
still an exact draw from p (Gumbel 1954; the coupling is Daliri, Musco and Suresh 2024,
"Coupling without Communication and Drafter-Invariant Speculative Decoding").

Ties at a top-k or top-p boundary go to the lower token id. This comes from a stable
descending sort rather than `torch.topk`, whose choice among tied values is not
documented. It also agrees with `torch.argmax`, which returns the first maximum, so
top_k=1 picks the same token as greedy decoding.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from specdec.config import SamplingParams
from specdec.models.native import native_argmax, native_argmax_supported


def process_logits(
    logits: torch.Tensor,  # [T, V] the target's raw logits at T positions
    params: SamplingParams,
    prompt_ids: list[int],
    output_ids: list[int],  # the tokens generated before position 0's
    continuations: list[list[int]],  # T lists: the draft tokens between output_ids and row i
    stop_ids: set[int],  # EOS and the request's stop_token_ids, masked until min_tokens
) -> torch.Tensor:  # [T, V] float32
    """The request's logits processors, row i seeing the history output_ids + continuations[i]:
    what plain decoding sees at that position, so verification stays lossless.

    logit_bias adds; presence / frequency penalties subtract per generated token (OpenAI's
    definition: presence once for a token already generated, frequency per occurrence);
    repetition_penalty divides a positive logit (multiplies a negative one) of any token in
    the prompt or the output (CTRL, Keskar et al. 2019, as vLLM applies it); min_tokens
    masks the stop tokens while fewer than min_tokens tokens precede the row. Each row is
    computed alone, elementwise, so a row's result never depends on the others.
    """
    x = logits.float().clone()
    num_rows, vocab_size = x.shape
    dev = x.device
    if params.logit_bias:
        ids = torch.tensor(list(params.logit_bias), device=dev)
        if int(ids.max()) >= vocab_size:
            raise ValueError(f"logit_bias names token {int(ids.max())}, outside the vocabulary of {vocab_size}")
        x[:, ids] += torch.tensor(list(params.logit_bias.values()), dtype=x.dtype, device=dev)
    if params.presence_penalty or params.frequency_penalty or params.repetition_penalty != 1.0:
        counts = torch.zeros(num_rows, vocab_size, dtype=torch.float32, device=dev)
        counts += torch.bincount(torch.tensor(output_ids, dtype=torch.long), minlength=vocab_size)[:vocab_size].to(dev)
        for i, cont in enumerate(continuations):
            if cont:
                counts[i].index_add_(0, torch.tensor(cont, device=dev), torch.ones(len(cont), device=dev))
        if params.presence_penalty or params.frequency_penalty:
            x -= params.frequency_penalty * counts + params.presence_penalty * (counts > 0).float()
        if params.repetition_penalty != 1.0:
            seen = counts > 0
            seen[:, torch.tensor(sorted(set(prompt_ids)), dtype=torch.long, device=dev)] = True
            r = params.repetition_penalty
            x = torch.where(seen, torch.where(x > 0, x / r, x * r), x)
    if params.min_tokens and stop_ids:
        stops = torch.tensor(sorted(stop_ids), device=dev)
        stops = stops[stops < vocab_size]
        for i, cont in enumerate(continuations):
            if len(output_ids) + len(cont) < params.min_tokens:
                x[i, stops] = float("-inf")
    return x


def token_logprobs(
    logits: torch.Tensor,  # [T, V] the target's raw logits
    token_ids: list[int],  # T chosen tokens
    num_top: int,
) -> list[dict]:
    """Each chosen token's log-probability under the model's raw distribution (vLLM's
    default "raw_logprobs": before penalties, temperature and truncation) and the num_top
    most likely tokens: [{"token_id", "logprob", "top": [(token_id, logprob), ...]}]."""
    logp = torch.log_softmax(logits.float(), dim=-1)  # [T, V]
    chosen = logp.gather(-1, torch.tensor(token_ids, device=logp.device)[:, None])[:, 0].tolist()
    top_ids, top_lp = ([], []) if not num_top else (t.tolist() for t in reversed(logp.topk(num_top, dim=-1)))
    return [{"token_id": t, "logprob": lp, "top": list(zip(top_ids[i], top_lp[i])) if num_top else []}
            for i, (t, lp) in enumerate(zip(token_ids, chosen))]


def logits_to_probs(
    logits: torch.Tensor,  # [..., V] any float dtype
    temperature: float,
    top_k: int = 0,
    top_p: float = 1.0,
    min_p: float = 0.0,
) -> torch.Tensor:  # [..., V] float32, each row sums to 1
    """Softmax of logits / temperature, cut by min-p, then to the top-k and then the top-p
    nucleus (vLLM's order).

    min_p > 0 drops tokens whose probability is below min_p times the top token's (Nguyen
    et al. 2024). top_k <= 0 or top_k >= V disables top-k. top_p == 1 disables top-p;
    otherwise keep the smallest set of highest-probability tokens whose mass is >= top_p
    (at least the top one).
    """
    if not temperature > 0:
        raise ValueError(
            f"temperature must be > 0 to build probabilities (0 means greedy), got {temperature!r}"
        )
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")
    logits = logits.float() / temperature  # [..., V]
    if min_p > 0:  # p(v) < min_p * p_max  <=>  logit(v) < logit_max + log(min_p)
        floor = logits.max(dim=-1, keepdim=True).values + math.log(min_p)
        logits = logits.masked_fill(logits < floor, float("-inf"))
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


_M32 = 0xFFFFFFFF


def _mix32(x):
    """A 32-bit integer finalizer (the two-multiply hash of C. Wellons' hash-prospector, whose
    constants are below 2^31): a bijection with full avalanche. Takes a Python int or an int32
    tensor holding uint32 bit patterns; int32 products wrap, and the shifts mask off the sign
    bits an arithmetic shift would copy in."""
    if isinstance(x, int):
        x ^= x >> 16
        x = (x * 0x21F0AAAD) & _M32
        x ^= x >> 15
        x = (x * 0x735A2D97) & _M32
        return x ^ (x >> 15)
    x = x ^ ((x >> 16) & 0xFFFF)
    x = x * 0x21F0AAAD
    x = x ^ ((x >> 15) & 0x1FFFF)
    x = x * 0x735A2D97
    return x ^ ((x >> 15) & 0x1FFFF)


def _as_int32(x: int) -> int:
    """A uint32 value as the int32 with the same bits (to XOR into an int32 tensor)."""
    return x - (1 << 32) if x >= 1 << 31 else x


@functools.lru_cache(maxsize=8)
def _token_hashes(vocab_size: int, device: torch.device) -> torch.Tensor:  # [V] int32
    """mix32(token id) for every token: the same for every request, so computed once."""
    return _mix32(torch.arange(vocab_size, dtype=torch.int32, device=device))


class GumbelNoise:
    """Gumbel noise g(seed, position, token) from a counter-based generator: a pure function
    of its keys, the same on every device and thread count and in any order of calls.

    u = (24 high bits of mix32(mix32(token) ^ key(seed, position)) + 0.5) / 2^24. The rows
    hold E = -log u, an Exponential(1) draw, so g = -log E; then argmax_v(log p(v) + g(v)) =
    argmax_v p(v) / E(v) (the exponential race), which costs one log per token, not three.
    Rows are kept per position (a chain's rejected positions are drawn again next step, and
    a drafter and the verifier share them); positions behind the newest request are dropped.
    """

    max_rows = 64

    def __init__(self, seed: int) -> None:
        seed &= (1 << 64) - 1
        self.seed = seed
        self._key = _mix32((seed & _M32) ^ _mix32(seed >> 32 ^ 0x9E3779B9))
        self._rows: dict[int, torch.Tensor] = {}

    def _row(self, position: int, vocab_size: int, device: torch.device) -> torch.Tensor:  # [V] float32
        row = self._rows.get(position)
        if row is not None and row.shape[0] == vocab_size and row.device == device:
            return row
        hashed = _token_hashes(vocab_size, device)
        key = _mix32(self._key ^ _mix32(position & _M32))
        bits = (_mix32(hashed ^ _as_int32(key)) >> 8) & 0xFFFFFF  # [V] in [0, 2^24)
        row = bits.float().add_(0.5).mul_(1.0 / (1 << 24)).log_().neg_()  # E = -log u > 0
        if len(self._rows) >= self.max_rows:
            del self._rows[min(self._rows)]
        self._rows[position] = row
        return row

    def __call__(self, positions, vocab_size: int, device: torch.device | str = "cpu") -> torch.Tensor:  # [T, V]
        """E = exp(-g) of the tokens at these absolute positions (ints, or an int tensor)."""
        positions = positions.tolist() if isinstance(positions, torch.Tensor) else list(positions)
        device = torch.device(device)
        if positions:
            for stale in [p for p in self._rows if p < min(positions)]:
                del self._rows[stale]
        return torch.stack([self._row(p, vocab_size, device) for p in positions]) if positions else \
            torch.empty(0, vocab_size, device=device)


def perturbed_scores(
    probs: torch.Tensor,  # [..., T, V] p (zeros outside a top-k / top-p / min-p set)
    noise: GumbelNoise,
    positions,  # T absolute positions
) -> torch.Tensor:  # [..., T, V]
    """p / E: ordered as log p + g, so its argmax is the Gumbel-max draw at each position."""
    return probs / noise(positions, probs.shape[-1], probs.device)


def perturbed_argmax(
    probs: torch.Tensor,  # [T, V] p
    noise: GumbelNoise,
    positions,  # T absolute positions
) -> torch.Tensor:  # [T] int64
    """argmax_v (log p(v) + g(position, v)): an exact draw from p, the same for every pass
    that draws the token at that position with this noise."""
    return greedy(perturbed_scores(probs, noise, positions))


def draw(
    probs: torch.Tensor,  # [T, V] q or p
    generator: torch.Generator,
    noise: GumbelNoise | None,
    positions,  # T absolute positions of the tokens drawn
) -> torch.Tensor:  # [T] int64
    """A token per row from probs: Gumbel-max on the position-keyed noise when coupled,
    else torch.multinomial from the generator (rejection sampling's drafts)."""
    if noise is None:
        return sample(probs, generator)
    return perturbed_argmax(probs, noise, positions)


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
    probs = logits_to_probs(logits, params.temperature, params.top_k, params.top_p, params.min_p)
    return sample(probs, generator)
