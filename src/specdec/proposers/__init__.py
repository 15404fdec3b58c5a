"""Proposers: draft model, n-gram (prompt lookup), EAGLE-style heads."""

from specdec.drafts import DraftProposal, SequenceState
from specdec.proposers.base import Proposer

__all__ = ["DraftProposal", "Proposer", "SequenceState"]
