"""The planner's parts that hold no policy: acceptance estimates, the confidence pruner,
transformers' heuristic schedule, and the fits of measured costs (engine/planner.py uses them).

Contract of every `observe(num_draft, num_accepted)`: num_draft is the draft length actually
verified (a proposer may return fewer tokens than asked; an n-gram miss gives 0; a tree
counts its depth) and num_accepted in 0..num_draft counts accepted draft tokens, without
the bonus or recovered token. K = 0 is a plain decode step.

The expected tokens of a step that drafts K, under acceptance alpha_j at draft position j
(conditional on reaching it), are E[tokens](K) = 1 + sum_{i=1..K} prod_{j<=i} alpha_j.
Drafts of different classes (n-gram match lengths, EAGLE) are accepted at very different
rates, so the planner keeps one `AcceptanceEstimator` per class (benchmarks/controller_replay.py
replays recorded runs to compare policies).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from typing import Any


def _check_step(num_draft: int, num_accepted: int) -> None:
    if num_draft < 0 or not 0 <= num_accepted <= num_draft:
        raise ValueError(
            f"need 0 <= num_accepted <= num_draft, got num_draft={num_draft} "
            f"num_accepted={num_accepted}"
        )


def blend_cost(old: float | None, seconds: float) -> float:
    """A measured per-token draft cost folded into the running one (unset: 0 or None).

    Each measurement is first clipped to [old / 4, 4 old]: on a shared machine one draft
    call whose thread was preempted can take 100x its cost, and unclipped it would make
    drafting look expensive for many steps (the estimate only moves when drafts run, and
    the controller drafts less when they look expensive). A real change still comes
    through, by up to 1.6x per measurement."""
    if not old:
        return seconds
    return 0.8 * old + 0.2 * min(max(seconds, old / 4), old * 4)


def _count(histogram: dict[int, int], num_draft: int) -> None:
    histogram[num_draft] = histogram.get(num_draft, 0) + 1


def fit_verify_curve(ks: Sequence[int], seconds: Sequence[float]) -> list[float]:
    """Measured (K, seconds) points -> a monotone non-decreasing verify_seconds[0..max(ks)].

    Repeated K's are reduced to their median (robust to a noisy neighbour), the medians
    are made monotone by weighted isotonic regression (pool adjacent violators), and
    unmeasured K's in between are interpolated linearly. K = 0 must be measured: it is
    the plain decode step every other cost is compared with.
    """
    if len(ks) != len(seconds) or not ks:
        raise ValueError(f"need as many K's as timings (> 0), got {len(ks)} and {len(seconds)}")
    if any(k < 0 for k in ks) or 0 not in ks:
        raise ValueError(f"K's must be >= 0 and include 0 (plain decode), got {sorted(set(ks))}")
    if any(not (math.isfinite(s) and s > 0) for s in seconds):
        raise ValueError("timings must be finite and > 0")
    by_k: dict[int, list[float]] = {}
    for k, s in zip(ks, seconds):
        by_k.setdefault(int(k), []).append(float(s))
    # Pool adjacent violators: blocks of [value, weight, K's], merged while decreasing.
    blocks: list[list[Any]] = []
    for k in sorted(by_k):
        blocks.append([statistics.median(by_k[k]), len(by_k[k]), [k]])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            value, weight, members = blocks.pop()
            prev = blocks[-1]
            prev[0] = (prev[0] * prev[1] + value * weight) / (prev[1] + weight)
            prev[1] += weight
            prev[2].extend(members)
    fitted = {k: value for value, _, members in blocks for k in members}
    measured = sorted(fitted)
    curve = []
    for lo, hi in zip(measured, measured[1:]):
        for k in range(lo, hi):
            curve.append(fitted[lo] + (fitted[hi] - fitted[lo]) * (k - lo) / (hi - lo))
    curve.append(fitted[measured[-1]])
    return curve


class AcceptanceEstimator:
    """Online per-position acceptance alpha_i (i = 1..max_k) for one request.

    Counts are exponentially weighted: each step with a draft multiplies all counts by
    `decay` and then adds this step's evidence (positions 1..num_accepted reached and
    accepted, position num_accepted + 1 reached and rejected). decay=0.85 forgets half
    the evidence in ~4 steps, so a prompt that turns (un)predictable is followed quickly.

    The prior is Beta-like pseudo-counts of strength `prior_strength`:
    - position 1, reached by every speculative step, starts from prior_mean as pretend
      history that decays like real evidence, so it is forgotten after a few steps and
      does not bias a long-run estimate (alpha_1 can reach ~0 and turn speculation off);
    - position i >= 2 is reached only when everything before it was accepted and may go
      unobserved for long stretches, so its prior mean is the current estimate of
      alpha_{i-1} (shrinkage toward the position before), with a fixed strength.
    prior_mean=0.6 sits at the low end of what decent draft models reach per token: a new
    request speculates (K=3 on a CPU-like curve 1.0, 1.3, 1.4, ...) but two or three
    rejections at position 1 are enough to turn speculation off.
    """

    def __init__(
        self,
        max_k: int,
        prior_mean: float = 0.6,
        prior_strength: float = 2.0,
        decay: float = 0.85,
    ) -> None:
        if max_k < 1:
            raise ValueError(f"max_k must be >= 1, got {max_k}")
        if not 0.0 <= prior_mean <= 1.0:
            raise ValueError(f"prior_mean must be in [0, 1], got {prior_mean}")
        if not prior_strength > 0:
            raise ValueError(f"prior_strength must be > 0, got {prior_strength}")
        if not 0.0 < decay <= 1.0:
            raise ValueError(f"decay must be in (0, 1], got {decay}")
        self.max_k = max_k
        self.prior_strength = prior_strength
        self.decay = decay
        # index i - 1 holds position i
        self._accepted = [0.0] * max_k
        self._reached = [0.0] * max_k
        self._accepted[0] = prior_strength * prior_mean
        self._reached[0] = prior_strength

    def observe(self, num_draft: int, num_accepted: int) -> None:
        _check_step(num_draft, num_accepted)
        if num_draft == 0:
            return
        for i in range(self.max_k):
            self._accepted[i] *= self.decay
            self._reached[i] *= self.decay
        for i in range(min(num_accepted + 1, num_draft, self.max_k)):
            self._reached[i] += 1.0
            self._accepted[i] += 1.0 if i < num_accepted else 0.0

    def alphas(self) -> list[float]:
        """[alpha_1 .. alpha_max_k], each in [0, 1]."""
        out = [self._accepted[0] / self._reached[0]]
        s = self.prior_strength
        for i in range(1, self.max_k):
            out.append((self._accepted[i] + s * out[-1]) / (self._reached[i] + s))
        return out

    def best_rate(self, seconds: Callable[[int], float], max_k: int | None = None) -> tuple[int, float]:
        """(K, E[tokens](K) / seconds(K)) for the K in 0..max_k with the highest rate
        (ties: the smaller K); seconds(k) is one step's cost at draft length k."""
        best, best_rate = 0, 1.0 / seconds(0)
        total, reach = 1.0, 1.0
        for k, alpha in enumerate(self.alphas()[: self.max_k if max_k is None else max_k], start=1):
            reach *= alpha
            total += reach
            rate = total / seconds(k)
            if rate > best_rate:
                best, best_rate = k, rate
        return best, best_rate

    def expected_tokens(self, k: int) -> float:
        """1 + sum_{i=1..k} prod_{j<=i} alpha_j: tokens committed per step with K = k."""
        if not 0 <= k <= self.max_k:
            raise ValueError(f"draft length {k} outside 0..{self.max_k}")
        total, reach = 1.0, 1.0
        for alpha in self.alphas()[:k]:
            reach *= alpha
            total += reach
        return total


class HeuristicController:
    """transformers' assisted-generation schedule: +2 when all drafts pass, else -1 (min 1)."""

    def __init__(self, initial_k: int = 4, max_k: int = 8) -> None:
        if not 1 <= initial_k <= max_k:
            raise ValueError(
                f"need 1 <= initial_k <= max_k, got initial_k={initial_k} max_k={max_k}"
            )
        self.k = initial_k
        self.max_k = max_k
        self.k_histogram: dict[int, int] = {}

    def choose(self, bucket: int | None = None) -> int:
        return self.k

    def observe(self, num_draft: int, num_accepted: int, bucket: int | None = None) -> None:
        _check_step(num_draft, num_accepted)
        _count(self.k_histogram, num_draft)
        if num_draft == 0:
            return
        if num_accepted == num_draft:
            self.k = min(self.k + 2, self.max_k)
        else:
            self.k = max(self.k - 1, 1)


class ConfidencePruner:
    """How much of a drafted chain or tree to verify, from the draft's own confidence.

    A draft that gives each of its nodes a cumulative log-probability s_i (a chain prefix's
    sum of log q, or an EAGLE-2 tree node's path score) promises that node i passes with
    probability ~exp(s_i); that is what EAGLE-2 ranks its tree by. This request's calibration
    c_d per depth turns the promise into pi_i = min(1, c_d exp(s_i)), and the pruner verifies
    the n best nodes (any prefix of a rank-ordered tree or a chain) maximizing this step's
        (1 + sum_{i<=n} pi_i) / (draft_seconds + verify_cost(n)),
    n = 0 being a plain decode step. The draft is spent by now, so it only weighs the verify
    pass: a 16-node tree whose tail the draft doubts verifies as a 3-node one.

    Calibration: decayed counts of how often depth d was accepted against the sum of exp(s_i)
    of the depth-d nodes verified (at most one node per depth passes). As AcceptanceEstimator
    does for positions, depth 1 starts from prior_strength pretend steps that kept their
    promise (c_1 = 1), forgotten like real ones, and a deeper depth shrinks toward the one
    above it: c_d = (accepted_d + s * c_{d-1}) / (promised_d + s). Pruning reads only the
    draft, never the target, so verification stays lossless.
    """

    def __init__(self, max_depth: int, prior_strength: float = 2.0, decay: float = 0.9) -> None:
        if max_depth < 1:
            raise ValueError(f"max_depth must be >= 1, got {max_depth}")
        if not prior_strength > 0 or not 0.0 < decay <= 1.0:
            raise ValueError(f"need prior_strength > 0 and decay in (0, 1], got {prior_strength}, {decay}")
        self.max_depth = max_depth
        self.prior_strength = prior_strength
        self.decay = decay
        self._accepted = [0.0] * (max_depth + 1)  # index d: depth d (index 0 unused)
        self._promised = [0.0] * (max_depth + 1)
        self._accepted[1] = self._promised[1] = prior_strength

    def calibration(self) -> list[float]:
        """[c_0 = 1, c_1 .. c_max_depth]."""
        out = [1.0, self._accepted[1] / self._promised[1]]
        s = self.prior_strength
        for d in range(2, self.max_depth + 1):
            out.append((self._accepted[d] + s * out[-1]) / (self._promised[d] + s))
        return out

    def promised(self, scores: Sequence[float], depths: Sequence[int]) -> list[float]:
        """pi_i for each draft node (scores and depths without the root)."""
        c = self.calibration()
        return [min(1.0, c[min(d, self.max_depth)] * math.exp(s)) for s, d in zip(scores, depths)]

    def keep(self, scores: Sequence[float], depths: Sequence[int], verify_cost: Callable[[int], float],
             draft_seconds: float = 0.0) -> int:
        """How many leading draft nodes to verify (0..len(scores)); ties: fewer nodes."""
        best, best_rate, total = 0, 1.0 / (draft_seconds + verify_cost(0)), 1.0
        for n, pi in enumerate(self.promised(scores, depths), start=1):
            total += pi
            rate = total / (draft_seconds + verify_cost(n))
            if rate > best_rate:
                best, best_rate = n, rate
        return best

    def observe(self, scores: Sequence[float], depths: Sequence[int], num_accepted: int) -> None:
        """The verified nodes (without the root) and how deep the accepted path went."""
        if not 0 <= num_accepted <= max(depths, default=0):
            raise ValueError(f"accepted depth {num_accepted} outside the verified draft's 0..{max(depths, default=0)}")
        if not scores:
            return
        for d in range(1, self.max_depth + 1):
            self._accepted[d] *= self.decay
            self._promised[d] *= self.decay
        for s, d in zip(scores, depths):
            if d <= self.max_depth:
                self._promised[d] += math.exp(s)
        for d in range(1, min(num_accepted, self.max_depth) + 1):
            self._accepted[d] += 1.0
