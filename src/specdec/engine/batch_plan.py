"""How many tokens each row of a batch drafts, chosen once per step from cost and acceptance.

A batch step is one ragged target forward over N = sum_b (k_b + 1) packed tokens plus each
row's drafting. Its cost is `BatchCostModel.forward(N)`, measured on this machine over N
(not over B and K separately: the matmuls, which dominate, see only the packed tokens),
plus sum_b k_b * d_b with d_b the seconds per draft token of row b's draft class (n-gram
~0, an EAGLE head's step, a draft model's). Its value is the expected number of
committed tokens,

    sum_b E_b(k_b),   E_b(k) = 1 + sum_{i=1..k} prod_{j<=i} alpha_{b,j},

with alpha_{b,j} row b's own online acceptance at draft position j (controller.py's
`AcceptanceEstimator`). The planner maximizes value / cost. Each extra draft token adds
its reach prod_{j<=i} alpha_{b,j} <= 1 to the value, and the per-row reaches only shrink
with i, so adding tokens greedily by largest reach gives the best value for every N; the
plan is the best prefix of that order. Worked example: two rows, alphas (0.9, 0.8) and
(0.5, ...), the order is row 0 (0.9), row 0 (0.72), row 1 (0.5), ... and if
cost(N) = 1, 1.1, 1.2, 1.6, 2.0 for N = 1..5 the rates for N = 2..5 are 2/1.1, 2.9/1.2,
3.62/1.6, 4.12/2.0: the plan drafts (2, 0).

The curve is calibrated at start-up (fastest of a few runs, cached per model, machine and
thread count) and then corrected online: every step blends its measured time (the forward
with the per-row verification and commits, everything but the drafting, which is costed
per draft token) into the curve at its N, so the points the server actually uses track the
machine's present load; the points no step has measured yet take their calibrated value
times the running ratio of measured to calibrated times (`BatchCostModel.load`), so they
are neither left at an idle machine's cost nor at a busy calibration's.

This is what turns speculation off at larger batch: once a forward is compute-bound,
cost(N + 1) - cost(N) ~ cost(N) / N, and a token whose reach is below value / N (~1 at
full acceptance) no longer pays. A row whose plan is K = 0 probes with one draft token
now and then (doubling the interval after a rejection), as the solo controller does.
"""

from __future__ import annotations

import hashlib
import heapq
import time

import torch

from specdec.config import SpeculativeConfig
from specdec.engine.calibrate import cached_curve, calibration_context, cost_key
from specdec.engine.controller import AcceptanceEstimator, HeuristicController, blend_cost, fit_verify_curve
from specdec.models.gguf_file import cache_dir
from specdec.sampling import greedy


class BatchCostModel:
    """Seconds of one batch step as a function of the packed token count N."""

    def __init__(self, forward_seconds: list[float], draft_seconds_per_token: float = 0.0) -> None:
        if not forward_seconds or any(not s > 0 for s in forward_seconds):
            raise ValueError(f"forward_seconds must be a non-empty list of positive times, got {forward_seconds!r}")
        self.forward_seconds = [float(s) for s in forward_seconds]  # [N_max]: index N - 1, as calibrated
        self.draft_seconds_per_token = draft_seconds_per_token
        self._measured: dict[int, float] = {}  # index -> running measured seconds, where steps ran
        self.load = 1.0  # running measured / calibrated over all steps: the machine now

    def _at(self, index: int) -> float:
        """Measured where steps ran; elsewhere the calibrated value times the present load."""
        measured = self._measured.get(index)
        return measured if measured is not None else self.forward_seconds[index] * self.load

    def forward(self, num_tokens: int) -> float:
        if num_tokens < 1:
            raise ValueError(f"a forward needs >= 1 token, got {num_tokens}")
        n = len(self.forward_seconds)
        if num_tokens <= n:
            return self._at(num_tokens - 1)
        slope = (self._at(n - 1) - self._at(n - 2)) if n > 1 else self._at(0)
        return self._at(n - 1) + slope * (num_tokens - n)

    def observe_forward(self, num_tokens: int, seconds: float, weight: float = 0.2) -> None:
        """Blend a measured step into the curve at N, and its ratio to the calibrated value
        into the load that scales the points no step has measured yet (a point's first
        measurement blends into that scaled value). Both follow the machine now, not at
        start-up: without the load, every point not yet visited would look as cheap as the
        idle calibration and the planner would keep trying them."""
        if 1 <= num_tokens <= len(self.forward_seconds) and seconds > 0:
            i = num_tokens - 1
            old = self._at(i)
            ratio = min(max(seconds / self.forward_seconds[i], self.load / 4), self.load * 4)  # one outlier moves it <= 1.6x
            self.load = (1 - weight) * self.load + weight * ratio
            self._measured[i] = (1 - weight) * old + weight * seconds

    def observe_draft(self, seconds_per_token: float) -> None:
        self.draft_seconds_per_token = blend_cost(self.draft_seconds_per_token, seconds_per_token)

    def to_dict(self) -> dict:
        return {"forward_seconds": self.forward_seconds}


def calibration_points(max_tokens: int) -> list[int]:
    points = [n for n in (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128) if n < max_tokens]
    return points + [max_tokens]


@torch.inference_mode()
def measure_forward_seconds(model, max_batch_size: int, max_k: int, repeats: int = 3) -> list[float]:
    """Fastest seconds of a ragged forward over N packed tokens, rows at the calibration context."""
    max_tokens = max_batch_size * (max_k + 1)
    dev = model.device
    context = calibration_context(model, max_k)
    cache = model.new_cache(max_batch_size, context + max_k + 1)
    prefix = torch.arange(context, device=dev)[None] % 1000 + 100
    for b in range(max_batch_size):
        model(prefix, torch.arange(context, device=dev)[None], cache.row_view(b, 0), logits_indices=slice(-1, None))
    points = calibration_points(max_tokens)
    times: dict[int, list[float]] = {n: [] for n in points}
    for _ in range(repeats + 1):  # the first round warms up and is dropped
        for n in points:
            b = min(n, max_batch_size)
            t = -(-n // b)
            num_new = torch.tensor([n // b + (1 if i < n % b else 0) for i in range(b)], device=dev)
            ids = torch.full((b, t), 200, device=dev)
            positions = context + torch.arange(t, device=dev)[None].expand(b, t)
            seq_lens = torch.full((b,), context, device=dev)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            out = model(ids, positions, cache, seq_lens=seq_lens, num_new=num_new)
            greedy(out.logits).tolist()
            times[n].append(time.perf_counter() - start)
    # The minimum, not the median: on a shared machine other work only ever adds time,
    # and a transient burst must not end up cached as this model's cost curve.
    best = [min(times[n][1:]) for n in points]
    return fit_verify_curve([n - 1 for n in points], best)


def load_or_calibrate_batch(loaded, max_batch_size: int, max_k: int, refresh: bool = False) -> BatchCostModel:
    """The batch cost curve, measured once per model/machine/threads and cached as JSON."""
    key = hashlib.sha256(f"{cost_key(loaded, max_k)}|batch{max_batch_size}".encode()).hexdigest()[:24]
    path = cache_dir() / "costs" / f"batch-{key}.json"
    data = cached_curve(path, refresh, lambda data: data["forward_seconds"][0],
                        lambda: measure_forward_seconds(loaded.model, 1, 0, repeats=2)[0],
                        lambda: BatchCostModel(measure_forward_seconds(loaded.model, max_batch_size, max_k)).to_dict())
    return BatchCostModel(data["forward_seconds"])


class RowSpeculation:
    """One row's acceptance estimates and probe state (or its fixed/heuristic controller).

    As in the solo engine (controller.py's `BucketedController`), drafts of different
    classes (n-gram match lengths, EAGLE) keep separate acceptance estimates and draft
    costs: `select(bucket)` before planning names the coming draft's class, and
    `estimator` and `draft_seconds_per_token` are that class's. For a proposer with
    several classes open (hybrid), `pick` chooses one first.
    """

    def __init__(self, spec: SpeculativeConfig, enabled: bool, min_probe_interval: int = 4, max_probe_interval: int = 32) -> None:
        self.enabled = enabled and spec.enabled
        self.max_k = spec.max_speculative_tokens
        self.fixed_k = None if spec.auto else int(spec.num_speculative_tokens)
        self.heuristic = HeuristicController(min(4, self.max_k), self.max_k) if spec.auto and spec.adaptive == "heuristic" else None
        self.estimators: dict[int | None, AcceptanceEstimator] = {}
        self.draft_costs: dict[int | None, float] = {}  # seconds per draft token, per class
        self.bucket: int | None = None
        self.min_probe_interval = min_probe_interval
        self.max_probe_interval = max_probe_interval
        self.probe_interval = min_probe_interval
        self.plain_steps = 0
        self.probe_pending = False

    def _estimator(self, bucket: int | None) -> AcceptanceEstimator:
        estimator = self.estimators.get(bucket)
        if estimator is None:
            estimator = self.estimators[bucket] = AcceptanceEstimator(self.max_k)
        return estimator

    @property
    def estimator(self) -> AcceptanceEstimator:
        return self._estimator(self.bucket)

    @property
    def draft_seconds_per_token(self) -> float | None:
        """This class's measured draft cost, None before its first draft."""
        return self.draft_costs.get(self.bucket)

    def select(self, bucket: int | None) -> None:
        self.bucket = bucket

    def pick(self, options, cost: BatchCostModel | None) -> int:
        """The class with the highest expected tokens per second as if the row ran alone
        (E(k) / (forward(k + 1) + k * its draft cost), best k); ties and no cost model: the first."""
        if len(options) == 1 or cost is None or self.fixed_k is not None or self.heuristic is not None:
            return options[0]
        rates = []
        for bucket in options:
            draft = self.draft_costs.get(bucket, cost.draft_seconds_per_token)
            rates.append(self._estimator(bucket).best_rate(lambda k, d=draft: cost.forward(k + 1) + k * d)[1])
        return options[max(range(len(options)), key=lambda i: (rates[i], -i))]

    def observe_draft_cost(self, bucket: int | None, seconds_per_token: float) -> None:
        self.draft_costs[bucket] = blend_cost(self.draft_costs.get(bucket), seconds_per_token)

    def observe(self, num_draft: int, num_accepted: int) -> None:
        if self.heuristic is not None:
            self.heuristic.observe(num_draft, num_accepted)
        self.estimator.observe(num_draft, num_accepted)
        if num_draft > 0:
            self.plain_steps = 0
            if self.probe_pending:
                self.probe_pending = False
                doubled = min(2 * self.probe_interval, self.max_probe_interval)
                self.probe_interval = self.min_probe_interval if num_accepted else doubled


class BatchPlanner:
    """Per-row draft lengths for one step (see the module docstring)."""

    def __init__(self, cost: BatchCostModel | None) -> None:
        self.cost = cost

    def plan(self, rows: list[RowSpeculation], rooms: list[int]) -> list[int]:
        """rooms[b]: the most tokens row b may draft (max_tokens and cache room)."""
        ks = [0] * len(rows)
        auto = []
        for b, (row, room) in enumerate(zip(rows, rooms)):
            if not row.enabled or room <= 0:
                continue
            if row.fixed_k is not None:
                ks[b] = min(row.fixed_k, room)
            elif row.heuristic is not None:
                ks[b] = min(row.heuristic.choose(), room)
            else:
                auto.append(b)
        if auto:
            if self.cost is None:
                raise ValueError("adaptive K needs a BatchCostModel (load_or_calibrate_batch)")
            self._plan_auto(rows, rooms, ks, auto)
        return ks

    def _plan_auto(self, rows, rooms, ks, auto) -> None:
        alphas = {b: rows[b].estimator.alphas()[: min(rooms[b], rows[b].max_k)] for b in auto}
        heap = [(-alphas[b][0], b) for b in auto if alphas[b]]  # (-reach of the next token, row)
        heapq.heapify(heap)
        num_tokens = len(rows) + sum(ks)
        value = float(len(rows)) + sum(ks)  # fixed-K rows counted at full acceptance: cost only
        default = self.cost.draft_seconds_per_token
        per_token = [default if row.draft_seconds_per_token is None else row.draft_seconds_per_token for row in rows]
        draft_seconds = sum(k * c for k, c in zip(ks, per_token))
        best_rate, order, best_len = value / (self.cost.forward(num_tokens) + draft_seconds), [], 0
        drafted = dict.fromkeys(auto, 0)
        while heap:
            neg_reach, b = heapq.heappop(heap)
            order.append(b)
            drafted[b] += 1
            value -= neg_reach
            draft_seconds += per_token[b]
            rate = value / (self.cost.forward(num_tokens + len(order)) + draft_seconds)
            if rate > best_rate:
                best_rate, best_len = rate, len(order)
            if drafted[b] < len(alphas[b]):
                heapq.heappush(heap, (neg_reach * alphas[b][drafted[b]], b))
        for b in order[:best_len]:
            ks[b] += 1
        for b in auto:
            row = rows[b]
            if ks[b] > 0:
                row.probe_interval = row.min_probe_interval
            elif row.probe_pending or row.plain_steps >= row.probe_interval:
                row.probe_pending = True
                ks[b] = 1
            else:
                row.plain_steps += 1
