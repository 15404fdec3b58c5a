"""The proposer side of the proposer/verifier seam.

A proposer makes drafts; the engine never asks which kind it is. Each step the engine
calls `propose(state, num_tokens)` and gets a `DraftProposal`; after verification and
commit it calls `observe(state, result)` so the proposer can roll back its own cache,
extend its index, or adapt. A proposal may hold fewer tokens than asked for (an n-gram
miss gives zero), and then the engine runs a plain decode step.

A proposer that can tell cheaply, before drafting, what kind of draft it would make may
also define `draft_bucket(state) -> int`: the adaptive controller then keeps a separate
acceptance estimate per class (engine/controller.py). The n-gram proposer returns the
length of the matched suffix. The method is optional and changes no output, only K.
A proposer with several kinds of draft defines `draft_options(state) -> tuple[int, ...]`
instead (the classes open to the coming step, the default first) and takes the one the
controller picked as `propose(state, num_tokens, bucket=...)` (proposers/hybrid.py).
Either may define `class_name(bucket) -> str` so statistics count drafts per class.

`probs is None` marks a deterministic draft (n-gram): the verifier treats q as one-hot,
which keeps sampling lossless.

A proposal may carry its own confidence, `scores` (a tree's in `DraftTree.scores`): the
cumulative draft log-probability of each prefix. With auto K the engine then verifies only
the prefix whose promised tokens pay for their verify cost (engine/controller.py:
ConfidencePruner). Only deterministic drafts (probs None) may carry scores: any rule that
picks which of them to verify is lossless, since q is one-hot at whatever is verified.
A sampled draft token pruned by its own q(x) would no longer be distributed as q (the
distribution test of a sampled EAGLE chain pruned that way fails, p ~ 1e-6).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch

from specdec.config import SamplingParams

if TYPE_CHECKING:
    from specdec.verify import VerifyResult


@dataclass
class DraftProposal:
    token_ids: torch.Tensor  # [B, K] int64
    probs: torch.Tensor | None = None  # [B, K, V] float32 draft distribution q, or None
    tree: object | None = None  # a proposers.tree.DraftTree for tree drafts
    # [B, K] float32 cumulative draft log-probability of each chain prefix (the draft's own
    # confidence in tokens 1..i), or None; the engine may verify a shorter prefix
    scores: torch.Tensor | None = None

    @property
    def num_tokens(self) -> int:
        return self.token_ids.shape[1]


@dataclass
class SequenceState:
    """What a proposer may read about one running request."""

    token_ids: list[int]  # prompt + every committed token
    num_prompt_tokens: int
    params: SamplingParams
    generator: torch.Generator
    # Target features for committed tokens the proposer has not consumed yet
    # (EAGLE heads); [T, D * num_feature_layers] or None.
    target_hidden: torch.Tensor | None = None


@runtime_checkable
class Proposer(Protocol):
    def start(self, state: SequenceState) -> None:
        """Prepare for a new request whose prompt is state.token_ids (prefill, index)."""

    def propose(self, state: SequenceState, num_tokens: int) -> DraftProposal:
        """Draft up to num_tokens tokens that continue state.token_ids."""

    def observe(self, state: SequenceState, result: VerifyResult) -> None:
        """Feedback after commit: state.token_ids now includes the committed tokens."""
