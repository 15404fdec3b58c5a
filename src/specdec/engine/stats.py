"""Speculative decoding statistics, defined once; every surface reads them from here.

Conventions follow vLLM's spec-decode metrics:
- a *draft* is one verify step that carried K >= 1 draft tokens (K = 0 steps are plain);
- acceptance rate = accepted draft tokens / draft tokens;
- mean acceptance length = 1 + accepted / drafts: tokens committed per verify step,
  counting the recovered or bonus token;
- acceptance rate at position i = accepted at i / drafts that reached position i;
- by class: the same counters per draft class, where the proposer names its drafts
  (`class_name`: "ngram:3" after a 3-token n-gram match, "eagle" for the head's drafts).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class SpecStats:
    num_drafts: int = 0
    num_draft_tokens: int = 0
    num_accepted_tokens: int = 0
    num_plain_steps: int = 0
    num_generated_tokens: int = 0
    num_pruned_tokens: int = 0  # drafted, then dropped unverified by the confidence pruner
    accepted_per_position: list[int] = field(default_factory=list)
    drafted_per_position: list[int] = field(default_factory=list)
    k_histogram: Counter = field(default_factory=Counter)  # draft length chosen -> steps
    # draft class -> [drafts, draft tokens, accepted tokens]
    by_class: dict[str, list[int]] = field(default_factory=dict)
    draft_seconds: float = 0.0
    verify_seconds: float = 0.0
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0

    def observe(self, num_draft: int, num_accepted: int, draft_class: str | None = None) -> None:
        """Record one verify step that proposed num_draft tokens and accepted num_accepted."""
        if not 0 <= num_accepted <= num_draft:
            raise ValueError(f"accepted {num_accepted} outside 0..{num_draft}")
        self.k_histogram[num_draft] += 1
        if num_draft == 0:
            self.num_plain_steps += 1
            return
        if draft_class is not None:
            counts = self.by_class.setdefault(draft_class, [0, 0, 0])
            counts[0] += 1
            counts[1] += num_draft
            counts[2] += num_accepted
        self.num_drafts += 1
        self.num_draft_tokens += num_draft
        self.num_accepted_tokens += num_accepted
        grow = num_draft - len(self.drafted_per_position)
        if grow > 0:
            self.drafted_per_position.extend([0] * grow)
            self.accepted_per_position.extend([0] * grow)
        for i in range(num_draft):
            self.drafted_per_position[i] += 1
        for i in range(num_accepted):
            self.accepted_per_position[i] += 1

    @property
    def num_steps(self) -> int:
        return self.num_drafts + self.num_plain_steps

    @property
    def acceptance_rate(self) -> float:
        return self.num_accepted_tokens / self.num_draft_tokens if self.num_draft_tokens else 0.0

    @property
    def mean_acceptance_length(self) -> float:
        return 1.0 + self.num_accepted_tokens / self.num_drafts if self.num_drafts else 1.0

    @property
    def acceptance_rate_per_position(self) -> list[float]:
        return [a / d if d else 0.0 for a, d in zip(self.accepted_per_position, self.drafted_per_position)]

    @property
    def tokens_per_second(self) -> float:
        return self.num_generated_tokens / self.decode_seconds if self.decode_seconds > 0 else 0.0

    def class_summary(self) -> dict[str, dict]:
        """Per draft class: drafts, share of all drafts, acceptance rate, mean acceptance length."""
        out = {}
        for name, (drafts, tokens, accepted) in sorted(self.by_class.items()):
            out[name] = {
                "num_drafts": drafts,
                "share": round(drafts / self.num_drafts, 4) if self.num_drafts else 0.0,
                "acceptance_rate": round(accepted / tokens, 4) if tokens else 0.0,
                "mean_acceptance_length": round(1 + accepted / drafts, 4) if drafts else 1.0,
            }
        return out

    def merge(self, other: SpecStats) -> None:
        """Add another request's statistics into this aggregate."""
        self.num_drafts += other.num_drafts
        self.num_draft_tokens += other.num_draft_tokens
        self.num_accepted_tokens += other.num_accepted_tokens
        self.num_plain_steps += other.num_plain_steps
        self.num_generated_tokens += other.num_generated_tokens
        self.num_pruned_tokens += other.num_pruned_tokens
        for mine, theirs in (
            (self.accepted_per_position, other.accepted_per_position),
            (self.drafted_per_position, other.drafted_per_position),
        ):
            mine.extend([0] * (len(theirs) - len(mine)))
            for i, n in enumerate(theirs):
                mine[i] += n
        self.k_histogram.update(other.k_histogram)
        for name, theirs in other.by_class.items():
            mine = self.by_class.setdefault(name, [0, 0, 0])
            for i, n in enumerate(theirs):
                mine[i] += n
        self.draft_seconds += other.draft_seconds
        self.verify_seconds += other.verify_seconds
        self.prefill_seconds += other.prefill_seconds
        self.decode_seconds += other.decode_seconds

    def to_dict(self) -> dict:
        return {
            "num_drafts": self.num_drafts,
            "num_draft_tokens": self.num_draft_tokens,
            "num_accepted_tokens": self.num_accepted_tokens,
            "num_plain_steps": self.num_plain_steps,
            "num_pruned_tokens": self.num_pruned_tokens,
            "acceptance_rate": round(self.acceptance_rate, 4),
            "mean_acceptance_length": round(self.mean_acceptance_length, 4),
            "acceptance_rate_per_position": [round(a, 4) for a in self.acceptance_rate_per_position],
            "k_histogram": {str(k): v for k, v in sorted(self.k_histogram.items())},
            "by_class": self.class_summary(),
            "draft_seconds": round(self.draft_seconds, 4),
            "verify_seconds": round(self.verify_seconds, 4),
            "tokens_per_second": round(self.tokens_per_second, 3),
        }
