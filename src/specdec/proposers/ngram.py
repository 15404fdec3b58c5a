"""Prompt-lookup (n-gram) drafts: copy what followed the last time the context's suffix appeared.

Contract: `NgramIndex.lookup(num_tokens)` finds the longest n in [ngram_max .. ngram_min]
such that the last n tokens of the context occurred earlier, takes the most recent earlier
occurrence (never the suffix itself) and returns up to num_tokens tokens that followed it;
no match gives []. The index is updated incrementally, one committed token at a time, so
a step costs O(ngram_max - ngram_min + 1) dict operations, not a rescan of the context.

The draft is deterministic (`probs=None`): the verifier treats q as one-hot, which keeps
both greedy and sampled decoding lossless whatever the draft says.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch

from specdec.drafts import DraftProposal, SequenceState
from specdec.proposers.base import Proposer

if TYPE_CHECKING:
    from specdec.verify import VerifyResult


class NgramIndex:
    """n-gram -> position of the token that followed its most recent occurrence.

    An n-gram enters the table only once the token after it is known, so the suffix of
    the context (nothing follows it yet) is never its own match, and every match has at
    least one continuation token.

    periodic=True continues a match that runs into the end of the context by copying the
    draft itself (an LZ77-style overlapping copy), i.e. it assumes the text keeps
    repeating with period p = len(context) - start. Worked example, num_tokens=5:

        context   1 2 3 1 2          positions 0..4, suffix (1, 2) at 3..4
        match     (1, 2) at 0..1 -> continuation starts at position 2, p = 5 - 2 = 3
        context   3 1 2              positions 2..4, then the end of the context
        periodic  3 1 2 3 1          draft[i] = (context + draft)[2 + i]
        clipped   3 1 2              periodic=False (transformers' prompt lookup)

    A wrong guess only costs verify positions that are cheap next to the decode step
    itself; for repetitive text ("1 2 1 2 1 2", loops, tables) it is exactly right.
    """

    def __init__(self, ngram_min: int = 1, ngram_max: int = 4, periodic: bool = True) -> None:
        if not 1 <= ngram_min <= ngram_max:
            raise ValueError(
                f"need 1 <= ngram_min <= ngram_max, got ngram_min={ngram_min} ngram_max={ngram_max}"
            )
        self.ngram_min = ngram_min
        self.ngram_max = ngram_max
        self.periodic = periodic
        self.token_ids: list[int] = []
        # _follow[n - ngram_min][gram] = position right after the most recent earlier gram
        self._follow: list[dict[tuple[int, ...], int]] = [
            {} for _ in range(ngram_min, ngram_max + 1)
        ]

    def __len__(self) -> int:
        return len(self.token_ids)

    def extend(self, token_ids: Iterable[int]) -> None:
        """Append committed tokens; each one completes the n-grams that end just before it."""
        ids = self.token_ids
        for token in token_ids:
            ids.append(int(token))
            follow = len(ids) - 1  # the new token follows the n-grams ending at follow - 1
            for n, table in enumerate(self._follow, start=self.ngram_min):
                if follow < n:
                    break
                table[tuple(ids[follow - n : follow])] = follow

    def match_length(self) -> int:
        """n of the match `lookup` would use (the longest suffix seen before), 0 for none."""
        ids = self.token_ids
        size = len(ids)
        for n in range(min(self.ngram_max, size - 1), self.ngram_min - 1, -1):
            if tuple(ids[size - n :]) in self._follow[n - self.ngram_min]:
                return n
        return 0

    def lookup(self, num_tokens: int) -> list[int]:
        """Up to num_tokens tokens that followed the longest, most recent earlier suffix match."""
        if num_tokens <= 0:
            return []
        n = self.match_length()
        if n == 0:
            return []
        ids = self.token_ids
        size = len(ids)
        start = self._follow[n - self.ngram_min][tuple(ids[size - n :])]
        if not self.periodic:
            return ids[start : start + num_tokens]
        draft: list[int] = []
        for i in range(num_tokens):
            j = start + i  # index into context + draft; j - size < i once past the end
            draft.append(ids[j] if j < size else draft[j - size])
        return draft


class NgramProposer(Proposer):
    """Prompt lookup decoding as a Proposer (batch size 1: the state is one sequence)."""

    def __init__(self, ngram_min: int = 1, ngram_max: int = 4, periodic: bool = True) -> None:
        NgramIndex(ngram_min, ngram_max, periodic)  # validate now, not at the first request
        self.ngram_min = ngram_min
        self.ngram_max = ngram_max
        self.periodic = periodic
        self._index: NgramIndex | None = None

    def start(self, state: SequenceState) -> None:
        self._index = NgramIndex(self.ngram_min, self.ngram_max, self.periodic)
        self._index.extend(state.token_ids)

    def draft_bucket(self, state: SequenceState) -> int:
        """The length of the suffix match the next draft copies from (0: no draft)."""
        return self._synced(state).match_length()

    def draft_classes(self, state: SequenceState) -> tuple[int, ...]:
        return (self.draft_bucket(state),)

    def class_name(self, draft_class: int | None) -> str:
        return f"ngram:{draft_class}"

    def _synced(self, state: SequenceState) -> NgramIndex:
        index = self._index
        if index is None:
            raise RuntimeError("NgramProposer.propose called before start(state)")
        if len(state.token_ids) < len(index):
            raise ValueError(
                f"sequence has {len(state.token_ids)} tokens but the n-gram index already holds "
                f"{len(index)}; call start(state) for a new request"
            )
        index.extend(state.token_ids[len(index) :])
        return index

    def propose(self, state: SequenceState, num_tokens: int, draft_class: int | None = None) -> DraftProposal:
        draft = self._synced(state).lookup(num_tokens)
        token_ids = torch.tensor(draft, dtype=torch.long).reshape(1, len(draft))  # [B=1, K']
        return DraftProposal(token_ids=token_ids, probs=None)

    def observe(self, state: SequenceState, result: VerifyResult) -> None:
        """Nothing to do: committed tokens are indexed lazily at the next propose."""
