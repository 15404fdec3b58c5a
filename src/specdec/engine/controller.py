"""How many tokens to draft next step: fixed, transformers' heuristic, or cost-aware.

Contract: each engine step calls `choose(bucket)` once, asks the proposer for that many tokens,
verifies, and then calls `observe(num_draft, num_accepted, bucket)` once, where num_draft is the
draft length actually verified (a proposer may return fewer tokens than asked; an n-gram
miss gives 0) and num_accepted in 0..num_draft counts accepted draft tokens, without the
bonus or recovered token. K = 0 is a plain decode step. `k_histogram[k]` counts steps by
the draft length actually verified, so n-gram misses count as K = 0.

bucket is the proposer's class of the coming draft, when it can tell before drafting
(`Proposer.draft_bucket`; None otherwise): for n-gram drafts the length of the matched
suffix. Drafts of different classes are accepted at very different rates (measured on
the default model's plain greedy output, bfloat16, grounded prompts: the first drafted
token is right 0.33 of the time after a 1-token match and 0.92 after a 4-token one;
creative prompts 0.11 and 0.90), so `BucketedController` keeps one cost-aware controller,
with its own acceptance estimate, probing and (from the engine) draft cost, per class. A
proposer with several kinds of draft open to a step (`draft_options`, the hybrid proposer)
lets `BucketedController.pick` choose the class with the highest expected tokens per second.

The cost-aware controller maximizes expected tokens per second,
    E[tokens](K) / step_seconds(K),   E[tokens](K) = 1 + sum_{i=1..K} prod_{j<=i} alpha_j,
with alpha_j this request's acceptance at draft position j (conditional on reaching it)
and step_seconds from a `CostModel` measured once per machine and model by the engine.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


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


@dataclass
class CostModel:
    """Seconds per engine step as a function of the draft length K."""

    verify_seconds: list[float]  # [K_max + 1]: one target forward over K + 1 tokens
    draft_seconds_per_token: float = 0.0  # 0 for n-gram; per depth level for trees
    draft_overhead_seconds: float = 0.0  # fixed cost of one proposal
    # Tree drafts: every speculative step verifies the root and tree_nodes nodes whatever
    # the depth K, so the verify term is verify_seconds[tree_nodes] (extrapolated linearly
    # past the measured curve); K only sets how many depth levels are drafted.
    tree_nodes: int = 0

    def __post_init__(self) -> None:
        self.verify_seconds = [float(s) for s in self.verify_seconds]
        if not self.verify_seconds:
            raise ValueError("verify_seconds needs at least the K=0 (plain decode) time")
        bad = [s for s in self.verify_seconds if not (math.isfinite(s) and s > 0)]
        if bad:
            raise ValueError(f"verify_seconds must be finite and > 0, got {bad[0]!r}")
        if not (self.draft_seconds_per_token >= 0 and self.draft_overhead_seconds >= 0):
            raise ValueError(
                f"draft costs must be >= 0, got draft_seconds_per_token="
                f"{self.draft_seconds_per_token} "
                f"draft_overhead_seconds={self.draft_overhead_seconds}"
            )

    @property
    def max_k(self) -> int:
        return len(self.verify_seconds) - 1

    def step_seconds(self, k: int) -> float:
        if not 0 <= k <= self.max_k:
            raise ValueError(f"draft length {k} outside the cost model's 0..{self.max_k}")
        draft = self.draft_overhead_seconds + k * self.draft_seconds_per_token if k > 0 else 0.0
        return self.verify_cost(self.tree_nodes if self.tree_nodes and k > 0 else k) + draft

    def verify_cost(self, num_draft: int) -> float:
        """One forward over num_draft + 1 tokens; linear past the measured curve."""
        v = self.verify_seconds
        if num_draft < len(v):
            return v[num_draft]
        slope = v[-1] - v[-2] if len(v) > 1 else 0.0
        return v[-1] + slope * (num_draft - (len(v) - 1))

    def to_dict(self) -> dict[str, Any]:
        return {
            "verify_seconds": list(self.verify_seconds),
            "draft_seconds_per_token": self.draft_seconds_per_token,
            "draft_overhead_seconds": self.draft_overhead_seconds,
            "tree_nodes": self.tree_nodes,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CostModel:
        missing = {"verify_seconds"} - data.keys()
        if missing:
            raise ValueError(f"cost model is missing {sorted(missing)}")
        return cls(
            verify_seconds=list(data["verify_seconds"]),
            draft_seconds_per_token=float(data.get("draft_seconds_per_token", 0.0)),
            draft_overhead_seconds=float(data.get("draft_overhead_seconds", 0.0)),
            tree_nodes=int(data.get("tree_nodes", 0)),
        )


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


@runtime_checkable
class SpeculationController(Protocol):
    k_histogram: dict[int, int]

    def choose(self, bucket: int | None = None) -> int:
        """Draft length for the next step, 0 for a plain decode step."""

    def observe(self, num_draft: int, num_accepted: int, bucket: int | None = None) -> None:
        """This step's verified draft length and accepted draft tokens."""


class FixedController:
    """Always K = k."""

    def __init__(self, k: int) -> None:
        if k < 0:
            raise ValueError(f"draft length must be >= 0, got {k}")
        self.k = k
        self.k_histogram: dict[int, int] = {}

    def choose(self, bucket: int | None = None) -> int:
        return self.k

    def observe(self, num_draft: int, num_accepted: int, bucket: int | None = None) -> None:
        _check_step(num_draft, num_accepted)
        _count(self.k_histogram, num_draft)


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


class CostAwareController:
    """Pick K in 0..max_k maximizing E[tokens](K) / step_seconds(K), and probe when at 0.

    At K = 0 no acceptance evidence arrives, so the controller probes: after
    `probe_interval` plain steps it drafts `probe_k` tokens once. A probe whose first token
    is rejected doubles the interval (from `min_probe_interval` up to a cap); an accepted
    one probes again at the next step, so a prompt that turns predictable is back to
    speculating a few steps after the next probe. The cap is set from the cost model so
    probing costs at most `probe_budget` of the time on a hopeless prompt:
        cap = ceil((step_seconds(probe_k) - step_seconds(0)) / (probe_budget * step_seconds(0)))
    e.g. 30 plain steps per probe for verify_seconds 1.0, 1.3, ... and a 1% budget.
    A probe that gets no draft (n-gram miss, num_draft = 0) costs a plain step and stays
    pending: the next step probes again.
    """

    def __init__(
        self,
        cost: CostModel,
        max_k: int,
        prior_mean: float = 0.6,
        prior_strength: float = 2.0,
        decay: float = 0.85,
        probe_k: int = 1,
        probe_budget: float = 0.01,
        min_probe_interval: int = 4,
    ) -> None:
        if not 1 <= max_k <= cost.max_k:
            raise ValueError(f"max_k must be in 1..{cost.max_k} (the cost model's), got {max_k}")
        if not 1 <= probe_k <= max_k:
            raise ValueError(f"probe_k must be in 1..{max_k}, got {probe_k}")
        if not probe_budget > 0:
            raise ValueError(f"probe_budget must be > 0, got {probe_budget}")
        if min_probe_interval < 1:
            raise ValueError(f"min_probe_interval must be >= 1, got {min_probe_interval}")
        self.cost = cost
        self.max_k = max_k
        self.probe_k = probe_k
        self.estimator = AcceptanceEstimator(max_k, prior_mean, prior_strength, decay)
        extra = cost.step_seconds(probe_k) - cost.step_seconds(0)
        cap = math.ceil(max(extra, 0.0) / (probe_budget * cost.step_seconds(0)) - 1e-9)
        self.max_probe_interval = max(min_probe_interval, cap)
        self.min_probe_interval = min_probe_interval
        self.probe_interval = min_probe_interval
        self.k_histogram: dict[int, int] = {}
        self.num_probes = 0
        self._plain_steps = 0  # plain steps chosen since the last probe or speculative step
        self._probe_pending = False

    def best_k(self) -> int:
        """argmax_K E[tokens](K) / step_seconds(K) under the current estimate (ties: smaller K)."""
        return self.best()[0]

    def best(self) -> tuple[int, float]:
        """(best K, its expected tokens per second)."""
        return self.estimator.best_rate(self.cost.step_seconds)

    def choose(self, bucket: int | None = None) -> int:
        if self._probe_pending:
            return self.probe_k
        k = self.best_k()
        if k > 0:
            self._plain_steps = 0
            self.probe_interval = self.min_probe_interval
            return k
        if self._plain_steps >= self.probe_interval:
            self._probe_pending = True
            self.num_probes += 1
            return self.probe_k
        self._plain_steps += 1
        return 0

    def observe(self, num_draft: int, num_accepted: int, bucket: int | None = None) -> None:
        _check_step(num_draft, num_accepted)
        _count(self.k_histogram, num_draft)
        self.estimator.observe(num_draft, num_accepted)
        if self._probe_pending and num_draft > 0:
            self._probe_pending = False
            self._plain_steps = 0
            if num_accepted > 0:
                self.probe_interval = 0
            else:
                doubled = max(self.min_probe_interval, 2 * self.probe_interval)
                self.probe_interval = min(doubled, self.max_probe_interval)


class BucketedController:
    """One `CostAwareController` per draft class (module docstring), made at first use
    by `make(bucket)`, so each class may also have its own cost model (the engine gives
    each class its own measured draft cost: a hybrid proposer's n-gram drafts are free,
    its EAGLE drafts are not).

    A class seen for the first time starts from the prior, like a new request; steps
    without a class (bucket None) share one controller. `k_histogram` counts every step.
    """

    def __init__(self, make: Callable[[int | None], CostAwareController]) -> None:
        self._make = make
        self.controllers: dict[int | None, CostAwareController] = {}
        self.k_histogram: dict[int, int] = {}

    def _controller(self, bucket: int | None) -> CostAwareController:
        controller = self.controllers.get(bucket)
        if controller is None:
            controller = self.controllers[bucket] = self._make(bucket)
        return controller

    def choose(self, bucket: int | None = None) -> int:
        return self._controller(bucket).choose()

    def pick(self, options: Sequence[int]) -> int:
        """The class with the highest expected tokens per second at its best K (ties: the
        first). A class not tried yet in this request starts from the prior, so each is
        tried once another has done worse than the prior promises."""
        if not options:
            raise ValueError("pick needs at least one draft class")
        rates = [self._controller(b).best()[1] for b in options]
        return options[max(range(len(options)), key=lambda i: (rates[i], -i))]

    def observe(self, num_draft: int, num_accepted: int, bucket: int | None = None) -> None:
        self._controller(bucket).observe(num_draft, num_accepted)
        _count(self.k_histogram, num_draft)

    @property
    def num_probes(self) -> int:
        return sum(c.num_probes for c in self.controllers.values())


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
