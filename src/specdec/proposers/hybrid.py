"""n-gram drafts where the context repeats itself, EAGLE drafts everywhere else.

Contract: each step drafts from exactly one class (an EAGLE tree step may carry the n-gram
draft grafted on, below). `draft_classes(state)` lists the
draft classes open to the coming step, from the n-gram match length n of the context's
suffix (`NgramIndex.match_length`), the default (for ties and fixed K) first:

    n >= min_match       (n,)                n-gram only (off by default: min_match is
                                             ngram_max + 1)
    2 <= n < min_match   (n, EAGLE_BUCKET)   either; the engine's planner picks the
    n == 1               (EAGLE_BUCKET, 1)   one with the higher expected tokens per
                                             second under this request's acceptance so far
    n == 0               (EAGLE_BUCKET,)     the head (no n-gram draft exists)

and `propose(state, k, draft_class)` drafts from that class. The planner keeps separate
acceptance estimates and draft costs for each n-gram match length and for EAGLE.

Why a choice: a 1-token n-gram match is right far less often than a longer one, and the
shipped head's first token is right about as often anywhere; but which is better depends on
the text: in a copy task a right 1-token match starts a long copy, in counting or free text
even 2-token matches (", 1") mislead. Letting the planner choose at every match length beat
forcing n-gram drafts from 2-token matches on in the bench's predictable and grounded
categories (`specdec bench --speculative hybrid` measures it).

The EAGLE proposer sees every step, whoever drafted it: it queues the target features of
every committed token (`observe`) and feeds them at its next draft, so its cache never
falls behind. The n-gram index syncs itself from state.token_ids. Each step is verified
on its own (n-gram drafts with q one-hot, EAGLE drafts with the head's q), and the class
depends only on the committed tokens and past steps, so greedy and sampled output are
lossless exactly as with either proposer alone.

With EAGLE trees (`EagleProposer.tree`), an EAGLE step also carries the n-gram draft: the
n-gram continuation of up to K tokens is grafted onto the head's tree as one more branch
(`proposers.tree.graft_chain`: merged where the head drafted the same tokens), so a step
whose text is copied from the context can take the copy even when the planner picked the
head, and a step where the copy breaks off still has the head's alternatives. Each grafted
token is scored with `CopyConfidence`'s estimate for the match length, the chance that an
n-gram token of such a match is right given the ones before it were, learned from this
request's own steps. Both drafts are deterministic and siblings stay distinct, so the tree
verifier (q one-hot) keeps greedy and sampled output lossless; the scores only decide which
nodes are verified (engine/planner.py: confidence pruning), and they read past steps only.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from specdec.drafts import DraftProposal, SequenceState
from specdec.proposers.base import Proposer
from specdec.proposers.eagle import EagleProposer
from specdec.proposers.ngram import NgramProposer
from specdec.proposers.tree import graft_chain

if TYPE_CHECKING:
    from specdec.verify import VerifyResult

EAGLE_BUCKET = -1  # n-gram classes are the match lengths 1..ngram_max


class CopyConfidence:
    """Per n-gram match length n, a decayed estimate of a_n = P(draft token i is right | the
    tokens before it were), read off the committed text: a draft [g_1 .. g_L] and the tokens
    [c_1 .. c_m] a step committed agree on a prefix of length j, which shows j right tokens
    and, when j < min(L, m), one wrong one at position j + 1 (the committed token is the
    target's own, whatever was verified or pruned).

    Priors (prior_strength pretend tokens, forgotten like real ones) from the default
    model's greedy output (bfloat16, grounded prompts; benchmarks/controller_replay.py): the first
    n-gram token is right about 1 time in 3 after a 1-token match and 9 in 10 after a
    2-token or longer one; the prior is set lower for n >= 2 because free text (creative
    prompts) matches less well than copying prompts.
    """

    PRIORS = {1: 0.3}
    PRIOR_LONG = 0.7  # n >= 2

    def __init__(self, prior_strength: float = 2.0, decay: float = 0.95) -> None:
        if not prior_strength > 0 or not 0.0 < decay <= 1.0:
            raise ValueError(f"need prior_strength > 0 and decay in (0, 1], got {prior_strength}, {decay}")
        self.prior_strength = prior_strength
        self.decay = decay
        self._counts: dict[int, list[float]] = {}  # n -> [right, seen]

    def _entry(self, n: int) -> list[float]:
        entry = self._counts.get(n)
        if entry is None:
            prior = self.PRIORS.get(n, self.PRIOR_LONG)
            entry = self._counts[n] = [prior * self.prior_strength, self.prior_strength]
        return entry

    def rate(self, n: int) -> float:
        right, seen = self._entry(n)
        return min(max(right / seen, 1e-3), 1.0 - 1e-3)

    def scores(self, n: int, length: int) -> list[float]:
        """Cumulative log-confidence of draft tokens 1..length after an n-token match."""
        log_rate = math.log(self.rate(n))
        return [log_rate * (i + 1) for i in range(length)]

    def observe(self, n: int, draft: list[int], committed: list[int]) -> None:
        known = min(len(draft), len(committed))  # draft positions the committed text decides
        right = 0
        while right < known and draft[right] == committed[right]:
            right += 1
        seen = right + (1 if right < known else 0)
        if seen == 0:
            return
        entry = self._entry(n)
        entry[0] = self.decay * entry[0] + right
        entry[1] = self.decay * entry[1] + seen


class HybridProposer(Proposer):
    def __init__(self, ngram: NgramProposer, eagle: EagleProposer, min_match: int | None = None,
                 graft: bool = True) -> None:
        """graft: on EAGLE tree steps, hang the n-gram continuation on the head's tree (module
        docstring); no effect on chain drafts."""
        if min_match is None:
            min_match = ngram.ngram_max + 1
        if min_match < ngram.ngram_min:
            raise ValueError(f"min_match {min_match} is below the n-gram proposer's ngram_min {ngram.ngram_min}")
        if min_match > ngram.ngram_max + 1:
            raise ValueError(
                f"min_match {min_match} exceeds the n-gram proposer's ngram_max {ngram.ngram_max} + 1 "
                "(ngram_max + 1: every match is a choice)"
            )
        self.ngram = ngram
        self.eagle = eagle
        self.min_match = min_match
        self.target_hidden_layers = eagle.target_hidden_layers
        self.graft = graft and eagle.tree is not None
        self.copy_confidence = CopyConfidence()
        # the step's n-gram draft, for copy_confidence: (match length, draft, context length)
        self._copy_draft: tuple[int, list[int], int] | None = None

    def start(self, state: SequenceState) -> None:
        self.ngram.start(state)
        self.eagle.start(state)
        self.copy_confidence = CopyConfidence()
        self._copy_draft = None

    def draft_classes(self, state: SequenceState) -> tuple[int, ...]:
        """The classes open to the coming draft (module docstring), the default first."""
        n = self.ngram.draft_bucket(state)
        if n >= self.min_match:
            return (n,)
        if n >= 2:
            return (n, EAGLE_BUCKET)
        return (EAGLE_BUCKET, n) if n > 0 else (EAGLE_BUCKET,)

    def class_name(self, draft_class: int | None) -> str:
        return "eagle" if draft_class == EAGLE_BUCKET else self.ngram.class_name(draft_class)

    def drafts_tree(self, draft_class: int | None) -> bool:
        return draft_class == EAGLE_BUCKET and self.eagle.tree is not None

    def propose(self, state: SequenceState, num_tokens: int, draft_class: int | None = None) -> DraftProposal:
        """Draft from one of draft_classes(state) (None: the first)."""
        bucket = draft_class
        options = self.draft_classes(state)
        if bucket is None:
            bucket = options[0]
        elif bucket not in options:
            raise ValueError(f"draft class {bucket} is not open to this step (options {options})")
        if bucket != EAGLE_BUCKET:
            proposal = self.ngram.propose(state, num_tokens)
            if self.graft:  # chains never graft: nothing to learn for
                self._copy_draft = (bucket, proposal.token_ids[0].tolist(), len(state.token_ids))
            return proposal
        proposal = self.eagle.propose(state, num_tokens)
        n = max(options)  # the match length, if an n-gram draft exists (EAGLE_BUCKET < 0 else)
        if not self.graft or n <= 0:
            return proposal
        draft = self.ngram.propose(state, num_tokens).token_ids[0].tolist()
        self._copy_draft = (n, draft, len(state.token_ids))
        tree = graft_chain(proposal.tree, draft, self.copy_confidence.scores(n, len(draft)))
        return DraftProposal(tree.token_ids[1:][None], None, tree)

    def observe(self, state: SequenceState, result: VerifyResult) -> None:
        self.ngram.observe(state, result)
        self.eagle.observe(state, result)
        if self._copy_draft is not None:  # every n-gram draft teaches the grafts' scores
            n, draft, context = self._copy_draft
            self.copy_confidence.observe(n, draft, state.token_ids[context:])
            self._copy_draft = None
