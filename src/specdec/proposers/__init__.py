"""Proposers: draft model, n-gram (prompt lookup), EAGLE-style heads."""

from specdec.proposers.base import DraftProposal, Proposer, SequenceState

__all__ = ["DraftProposal", "Proposer", "SequenceState"]
