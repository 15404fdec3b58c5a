"""Verification of chain drafts: pure functions of tensors and an explicit generator.

Glossary (vLLM's token vocabulary, the papers' letters):
  draft      a token the proposer suggested; K per row, `draft_ids [B, K]`
  accepted   a draft token that passed; the accepted tokens are always a prefix of the draft
  recovered  the token emitted at the first rejection, sampled from norm(max(p - q, 0))
             (greedy: the target's argmax at that position)
  bonus      the token sampled from p at position K when all K drafts pass
  p          target probabilities `[B, K+1, V]`; p[:, i] is the target's distribution for
             the token after the context plus drafts 0..i-1
  q          draft probabilities `[B, K, V]`; None marks a deterministic draft (n-gram), which
             is verified as q one-hot at the draft token, through the same code path

Each step emits num_accepted + 1 tokens: the accepted drafts, then one recovered or bonus
token. The acceptance length counts that last token, so it is 1..K+1. K = 0 is a plain
decode step: the bonus token is sampled from p[:, 0].

Stochastic verification is the modified rejection sampling of Leviathan et al. 2023 ("Fast
Inference from Transformers via Speculative Decoding") and Chen et al. 2023 ("Accelerating
Large Language Model Decoding with Speculative Sampling"): accept x_i with probability
min(1, p_i(x_i) / q_i(x_i)), and at the first rejection sample from norm(max(p_i - q_i, 0)).
If each x_i was drawn from q_i (or q_i is one-hot at x_i), the emitted tokens are
distributed exactly as sampling from p token by token. The draws come from the generator
in a fixed order, B*K uniforms (row-major) and then one multinomial draw per row, so a
seed fixes the result.

Coupled verification (`verify_coupled`, the engine's default when sampling): the token at
absolute position t is argmax_v(log p_t(v) + g_t(v)) with Gumbel noise g_t keyed by the
request's seed and t (sampling.py's GumbelNoise), the rule plain decoding draws by too. So
a draft token is accepted exactly when it equals that perturbed argmax, the first mismatch
emits it, and a fully accepted draft's bonus is the perturbed argmax at position K: greedy
verification of log p + g. The output is the plain decoder's for that seed whatever the
proposer, K or batch, and each token is an exact draw from p (Daliri, Musco and Suresh 2024).
A drafter that samples should draw with the same g (sampling.draw) to be accepted often;
q plays no part in the decision.

Worked example, K = 3, draft [a, b, c], a and b accepted, c rejected, r recovered:
  num_accepted = 2, output_ids = [a, b, r, -1], bonus = False, emitted = [a, b, r]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from specdec.config import SamplingParams
from specdec.sampling import GumbelNoise, greedy, logits_to_probs, perturbed_scores


@dataclass
class VerifyResult:
    output_ids: torch.Tensor  # [B, K+1] int64; row b: first num_accepted[b]+1 valid, -1 after
    num_accepted: torch.Tensor  # [B] int64, accepted draft tokens, 0..K
    bonus: torch.Tensor  # [B] bool, all K drafts passed and the last emitted token is the bonus

    @property
    def num_emitted(self) -> torch.Tensor:  # [B] int64, the acceptance length, 1..K+1
        return self.num_accepted + 1

    def emitted(self, b: int) -> list[int]:
        """Tokens to commit for row b."""
        return self.output_ids[b, : int(self.num_accepted[b]) + 1].tolist()


def _check_shapes(draft_ids: torch.Tensor, target: torch.Tensor, name: str) -> tuple[int, int]:
    if draft_ids.dim() != 2:
        raise ValueError(f"draft_ids must be [B, K], got shape {tuple(draft_ids.shape)}")
    if draft_ids.dtype.is_floating_point or draft_ids.dtype == torch.bool:
        raise ValueError(f"draft_ids must be an integer tensor, got {draft_ids.dtype}")
    batch_size, num_draft = draft_ids.shape
    if target.dim() != 3 or target.shape[:2] != (batch_size, num_draft + 1):
        raise ValueError(
            f"{name} must be [B, K+1, V] = [{batch_size}, {num_draft + 1}, V] for draft_ids "
            f"[{batch_size}, {num_draft}], got shape {tuple(target.shape)}"
        )
    return batch_size, num_draft


def _build_result(
    draft_ids: torch.Tensor,  # [B, K]
    num_accepted: torch.Tensor,  # [B] int64
    next_ids: torch.Tensor,  # [B] int64, the recovered or bonus token
) -> VerifyResult:
    batch_size, num_draft = draft_ids.shape
    positions = torch.arange(num_draft + 1, device=draft_ids.device)  # [K+1]
    output_ids = torch.full(
        (batch_size, num_draft + 1), -1, dtype=torch.long, device=draft_ids.device
    )  # [B, K+1]
    accepted_mask = positions[:num_draft] < num_accepted[:, None]  # [B, K]
    output_ids[:, :num_draft] = torch.where(accepted_mask, draft_ids.long(), -1)
    output_ids.scatter_(1, num_accepted[:, None], next_ids[:, None])
    return VerifyResult(output_ids, num_accepted, num_accepted == num_draft)


def verify_greedy(
    draft_ids: torch.Tensor,  # [B, K]
    target_logits: torch.Tensor,  # [B, K+1, V]
) -> VerifyResult:
    """Accept the longest draft prefix that equals the target's argmax, then emit the
    target's argmax at the first mismatch (recovered) or at position K (bonus)."""
    _check_shapes(draft_ids, target_logits, "target_logits")
    num_draft = draft_ids.shape[1]
    target_ids = greedy(target_logits)  # [B, K+1]
    matches = draft_ids.long() == target_ids[:, :num_draft]  # [B, K]
    num_accepted = matches.long().cumprod(dim=1).sum(dim=1)  # [B]
    next_ids = target_ids.gather(1, num_accepted[:, None]).squeeze(1)  # [B]
    return _build_result(draft_ids, num_accepted, next_ids)


def verify_stochastic(
    draft_ids: torch.Tensor,  # [B, K]
    draft_probs: torch.Tensor | None,  # [B, K, V] q, or None for a deterministic draft
    target_probs: torch.Tensor,  # [B, K+1, V] p
    generator: torch.Generator,
) -> VerifyResult:
    """Modified rejection sampling; the emitted tokens follow p exactly.

    Edge cases: q(x) = 0 < p(x) accepts (the ratio is +inf); p(x) = 0 always rejects.
    If max(p - q, 0) is all zero at the rejection, the recovered token is sampled from p.
    That needs p <= q everywhere, so p == q, where rejection has probability 0 for any x
    drawn from q: the branch only runs for an x outside q's support with p(x) = 0 (then p
    is the right distribution given the rejected x) or when float rounding leaves p ~= q.
    """
    batch_size, num_draft = _check_shapes(draft_ids, target_probs, "target_probs")
    vocab_size = target_probs.shape[-1]
    if draft_probs is not None and draft_probs.shape != (batch_size, num_draft, vocab_size):
        raise ValueError(
            f"draft_probs must be [B, K, V] = [{batch_size}, {num_draft}, {vocab_size}], "
            f"got shape {tuple(draft_probs.shape)}"
        )
    device = target_probs.device
    draft_ids = draft_ids.long()
    rows = torch.arange(batch_size, device=device)  # [B]

    # 1) Accept x_i with probability min(1, p_i(x_i) / q_i(x_i)).
    p_draft = target_probs[:, :num_draft].gather(-1, draft_ids[..., None]).squeeze(-1)  # [B, K]
    if draft_probs is None:
        q_draft = torch.ones_like(p_draft)  # [B, K]
    else:
        q_draft = draft_probs.gather(-1, draft_ids[..., None]).squeeze(-1).to(p_draft.dtype)
    accept_prob = torch.where(
        q_draft > 0, p_draft / q_draft, (p_draft > 0).to(p_draft.dtype)
    ).clamp(max=1.0)  # [B, K]
    uniforms = torch.rand((batch_size, num_draft), generator=generator, device=device)
    accepted = uniforms < accept_prob  # [B, K]; prob 1 always passes, prob 0 never does
    num_accepted = accepted.long().cumprod(dim=1).sum(dim=1)  # [B]

    # 2) One more token per row from norm(max(p_j - q_j, 0)) at j = num_accepted; for the
    # bonus (j = K) there is no draft, q_K = 0, and the residual is p_K itself.
    p_next = target_probs[rows, num_accepted]  # [B, V]
    if num_draft == 0:
        q_next = torch.zeros_like(p_next)
    else:
        first_rejected = num_accepted.clamp(max=num_draft - 1)  # [B]
        if draft_probs is None:
            q_next = F.one_hot(draft_ids[rows, first_rejected], vocab_size)
        else:
            q_next = draft_probs[rows, first_rejected]
        is_rejected = (num_accepted < num_draft)[:, None]  # [B, 1]
        q_next = q_next.to(p_next.dtype) * is_rejected  # [B, V]
    residual = (p_next - q_next).clamp(min=0.0)  # [B, V], unnormalized
    residual_empty = residual.sum(dim=-1, keepdim=True) <= 0  # [B, 1]
    residual = torch.where(residual_empty, p_next, residual)
    # torch.multinomial normalizes each row itself.
    next_ids = torch.multinomial(residual, 1, generator=generator).squeeze(1)  # [B]
    return _build_result(draft_ids, num_accepted, next_ids)


def verify_coupled(
    draft_ids: torch.Tensor,  # [B, K]
    target_probs: torch.Tensor,  # [B, K+1, V] p
    noise: GumbelNoise,
    position: int,  # absolute position of the token after the context (output column 0)
) -> VerifyResult:
    """Accept the longest draft prefix equal to argmax(log p + g) position by position, then
    emit that argmax at the first mismatch or at position K. Every row reads the same noise
    rows (the engine verifies one request per call)."""
    _check_shapes(draft_ids, target_probs, "target_probs")
    num_positions = target_probs.shape[1]
    scores = perturbed_scores(target_probs, noise, range(position, position + num_positions))  # [B, K+1, V]
    return verify_greedy(draft_ids, scores)


def verify(
    draft_ids: torch.Tensor,  # [B, K]
    draft_probs: torch.Tensor | None,  # [B, K, V] q, built with the same params, or None
    target_logits: torch.Tensor,  # [B, K+1, V]
    params: SamplingParams,
    generator: torch.Generator,
    noise: GumbelNoise | None = None,
    position: int = 0,
) -> VerifyResult:
    """Greedy verification at temperature 0; otherwise p = logits_to_probs(target_logits)
    with the same temperature / top-k / top-p / min-p the draft used for q, then coupled
    verification when given the request's noise (and the absolute position of output
    column 0), else rejection sampling."""
    if params.temperature == 0:
        return verify_greedy(draft_ids, target_logits)
    target_probs = logits_to_probs(
        target_logits, params.temperature, params.top_k, params.top_p, params.min_p
    )  # [B, K+1, V]
    if noise is not None:
        return verify_coupled(draft_ids, target_probs, noise, position)
    return verify_stochastic(draft_ids, draft_probs, target_probs, generator)
