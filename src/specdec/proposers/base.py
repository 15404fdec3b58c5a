"""The proposer side of the proposer/verifier seam.

A proposer makes drafts; the engine never asks which kind it is. Each step the engine
calls `propose(state, num_tokens, draft_class)` and gets a `DraftProposal` (specdec/drafts.py);
after verification and commit it calls `observe(state, result)` so the proposer can roll
back its own cache, extend its index, or adapt. A proposal may hold fewer tokens than asked
for (an n-gram miss gives zero), and then the engine runs a plain decode step.

Every optional capability is a method with a default here, never an attribute the engine
probes for:

- `target_hidden_layers`: the target layers whose features the proposer reads (EAGLE
  heads); the engine returns them from every forward as `state.target_hidden`.
- `draft_classes(state)`: the kinds of draft open to the coming step, cheaply told before
  drafting, the default first. The planner keeps one acceptance estimate and draft cost per
  class (engine/planner.py) and, when several are open (the hybrid), picks the one with the
  highest expected tokens per second; `propose` then drafts from that class. The n-gram
  proposer's class is the length of the matched suffix. Classes change no output, only K.
- `class_name(draft_class)`: how statistics name a class ("ngram:3", "eagle").
- `drafts_tree(draft_class)`: whether that class drafts trees, which the cost model
  verifies whole (every node) whatever the depth.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

from specdec.drafts import DraftProposal, SequenceState

if TYPE_CHECKING:
    from specdec.verify import VerifyResult


class Proposer(ABC):
    target_hidden_layers: tuple[int, ...] = ()

    def start(self, state: SequenceState) -> None:
        """Prepare for a new request whose prompt is state.token_ids (prefill, index)."""

    @abstractmethod
    def propose(self, state: SequenceState, num_tokens: int, draft_class: int | None = None) -> DraftProposal:
        """Draft up to num_tokens tokens that continue state.token_ids, from draft_class
        (one of `draft_classes(state)`; None: the first)."""

    def observe(self, state: SequenceState, result: VerifyResult) -> None:
        """Feedback after commit: state.token_ids now includes the committed tokens."""

    def draft_classes(self, state: SequenceState) -> tuple[int | None, ...]:
        return (None,)

    def class_name(self, draft_class: int | None) -> str | None:
        return None

    def drafts_tree(self, draft_class: int | None) -> bool:
        return False
