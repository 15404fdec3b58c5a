"""n-gram drafts where the context repeats itself, EAGLE drafts everywhere else.

Contract: each step drafts from exactly one proposer. `draft_options(state)` lists the
draft classes open to the coming step, from the n-gram match length n of the context's
suffix (`NgramIndex.match_length`), the default (for ties and fixed K) first:

    n >= min_match       (n,)                n-gram only (off by default: min_match is
                                             ngram_max + 1)
    2 <= n < min_match   (n, EAGLE_BUCKET)   either; the engine's controller picks the
    n == 1               (EAGLE_BUCKET, 1)   one with the higher expected tokens per
                                             second under this request's acceptance so far
    n == 0               (EAGLE_BUCKET,)     the head (no n-gram draft exists)

and `propose(state, k, bucket)` drafts from that class. The controller keeps separate
acceptance estimates and draft costs for each n-gram match length and for EAGLE.

Why a choice: on the default model's greedy output (bfloat16, grounded prompts) the
first n-gram token is right 0.35 of the time after a 1-token match and 0.94 after a
2-token one; the shipped head's first token is right about half the time anywhere. But
which is better depends on the text: in a copy task a right 1-token match starts a long
copy, in counting or free text even 2-token matches (", 1") mislead. On 12 bench
prompts (bfloat16, the same bench command run once per setting) letting the controller
choose at every match length beat forcing n-gram drafts from 2-token matches on:
predictable 1.96x against 1.66x, grounded 2.89x against 2.51x, the rest within noise.

The EAGLE proposer sees every step, whoever drafted it: it queues the target features of
every committed token (`observe`) and feeds them at its next draft, so its cache never
falls behind. The n-gram index syncs itself from state.token_ids. Each step is verified
on its own (n-gram drafts with q one-hot, EAGLE drafts with the head's q), and the class
depends only on the committed tokens and past steps, so greedy and sampled output are
lossless exactly as with either proposer alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from specdec.proposers.base import DraftProposal, SequenceState
from specdec.proposers.eagle import EagleProposer
from specdec.proposers.ngram import NgramProposer

if TYPE_CHECKING:
    from specdec.verify import VerifyResult

EAGLE_BUCKET = -1  # n-gram classes are the match lengths 1..ngram_max


class HybridProposer:
    def __init__(self, ngram: NgramProposer, eagle: EagleProposer, min_match: int | None = None) -> None:
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

    def start(self, state: SequenceState) -> None:
        self.ngram.start(state)
        self.eagle.start(state)

    def draft_options(self, state: SequenceState) -> tuple[int, ...]:
        """The classes open to the coming draft (module docstring), the default first."""
        n = self.ngram.draft_bucket(state)
        if n >= self.min_match:
            return (n,)
        if n >= 2:
            return (n, EAGLE_BUCKET)
        return (EAGLE_BUCKET, n) if n > 0 else (EAGLE_BUCKET,)

    def class_name(self, bucket: int) -> str:
        return "eagle" if bucket == EAGLE_BUCKET else self.ngram.class_name(bucket)

    def propose(self, state: SequenceState, num_tokens: int, bucket: int | None = None) -> DraftProposal:
        """Draft from class bucket (one of draft_options; None: the first)."""
        options = self.draft_options(state)
        if bucket is None:
            bucket = options[0]
        elif bucket not in options:
            raise ValueError(f"draft class {bucket} is not open to this step (options {options})")
        if bucket == EAGLE_BUCKET:
            return self.eagle.propose(state, num_tokens)
        return self.ngram.propose(state, num_tokens)

    def observe(self, state: SequenceState, result: VerifyResult) -> None:
        self.ngram.observe(state, result)
        self.eagle.observe(state, result)
