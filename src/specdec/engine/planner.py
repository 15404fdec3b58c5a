"""The one speculation policy: how many tokens each row drafts, chosen per step from cost and
acceptance, for B rows at once (a single request is B = 1).

A step is one target forward over the B running rows' packed tokens plus each row's
drafting. Its cost is `CostSurface.forward(B, N)`, calibrated on this machine (N packed
tokens; a chain row drafting k sends k + 1, a tree row its root and every node), plus
sum_b k_b * d_b with d_b the seconds per draft level of row b's draft class (an n-gram
lookup ~0, an EAGLE head's step, a draft model's). Its value is the expected number of
committed tokens,

    sum_b E_b(k_b),   E_b(k) = 1 + sum_{i=1..k} prod_{j<=i} alpha_{b,j},

with alpha_{b,j} row b's online acceptance at draft position j for the coming draft's class
(controller.py's `AcceptanceEstimator`). The planner maximizes value / cost. Each extra
draft token adds its reach prod_{j<=i} alpha_{b,j} <= 1 to the value, and a row's reaches
only shrink with i, so adding tokens greedily by largest reach visits the best value for
every N; the plan is the best prefix of that order. Worked example: two chain rows, alphas
(0.9, 0.8) and (0.5, ...), the order is row 0 (0.9), row 0 (0.72), row 1 (0.5), ... and if
cost(N) = 1, 1.1, 1.2, 1.6, 2.0 for N = 2..6 the rates are 2/1, 2.9/1.1, 3.62/1.2, 4.12/1.6,
...: the plan drafts (2, 0). With one row this is argmax_k E(k) / step_seconds(k).

K = 0 for every row is always a candidate, so speculation never plans a step slower than
plain decoding. A row whose plan is K = 0 probes with one draft token now and then: after
`probe_interval` plain steps; a rejected probe doubles the interval up to a cap set so that
probing costs at most PROBE_BUDGET of a hopeless request's time; an accepted one probes
again at the next step.

Draft classes: a proposer that tells the class of its coming draft (proposers/base.py:
n-gram match lengths, the hybrid's EAGLE class) gets one acceptance estimate and draft cost
per class, and where several are open the row picks the class with the highest expected
tokens per second as if it ran alone.

Confidence pruning (`ConfidencePruner`, EAGLE drafts with auto K): after drafting, each row
verifies only the leading nodes whose promised tokens pay for their verify cost; a tree row
then plans as a chain of its depth and the pruner sizes the tree.

The surface is calibrated once per model, machine and thread count and cached as JSON
(`load_or_calibrate`), then corrected online: every step blends its measured time (the
forward with the verification and commits, everything but the drafting) into the surface at
its (B, N), and the points no step has measured yet take their calibrated value times the
running ratio of measured to calibrated times (`load`).
"""

from __future__ import annotations

import hashlib
import heapq
import json
import math
import os
import sys
import time
from dataclasses import dataclass

import torch

from specdec.config import SpeculativeConfig
from specdec.engine.controller import AcceptanceEstimator, ConfidencePruner, HeuristicController, blend_cost, fit_verify_curve
from specdec.models.gguf_file import cache_dir
from specdec.sampling import greedy

PROBE_BUDGET = 0.01  # of a hopeless request's time spent on probes, at most
CALIBRATION_CONTEXT = 256  # tokens each calibration row attends to
# Part of the cache key: bump it when the forward's kernels or the surface's shape change
# what a pass costs, so no stale surface is read.
KERNELS_VERSION = 11
# A cached surface whose one-token time is this many times the same time measured now was
# calibrated while other work loaded the machine: it is measured again.
STALE_RATIO = 1.5
# A quick surface (the first run's): passes up to this many tokens, at a shorter context,
# after which the engine's own steps refine it (CostSurface.observe_forward).
QUICK_MAX_TOKENS, QUICK_CONTEXT = 16, 64
PROBE_CONTEXT = 8  # tokens a staleness probe attends to: a few forwards, no long prefill


class CostSurface:
    """Seconds of one verify forward over B rows and N packed tokens (N >= B).

    forward(B, N) = f(N) + r(B): f the one-row curve over N tokens (`forward_seconds[N - 1]`),
    r the extra of B rows over one at the same tokens (`row_seconds[B - 1]`, r(1) = 0),
    both linear past their measured ends."""

    def __init__(self, forward_seconds: list[float], row_seconds: list[float] | None = None,
                 draft_seconds_per_token: float = 0.0) -> None:
        if not forward_seconds or any(not (math.isfinite(s) and s > 0) for s in forward_seconds):
            raise ValueError(f"forward_seconds must be a non-empty list of positive times, got {forward_seconds!r}")
        row_seconds = [0.0] if not row_seconds else [float(s) for s in row_seconds]
        if row_seconds[0] != 0.0 or any(not (math.isfinite(s) and s >= 0) for s in row_seconds):
            raise ValueError(f"row_seconds must start at 0 (one row) and be >= 0, got {row_seconds!r}")
        self.forward_seconds = [float(s) for s in forward_seconds]
        self.row_seconds = row_seconds
        self.draft_seconds_per_token = draft_seconds_per_token  # the default for a class not drafted yet
        self._measured: dict[tuple[int, int], float] = {}  # (B, N) -> running measured seconds
        self.load = 1.0  # running measured / calibrated over all steps: the machine now

    @classmethod
    def from_dict(cls, data: dict) -> CostSurface:
        if "forward_seconds" not in data:
            raise ValueError("a cost surface needs forward_seconds")
        return cls(list(data["forward_seconds"]), list(data.get("row_seconds") or [0.0]))

    def to_dict(self) -> dict:
        return {"forward_seconds": list(self.forward_seconds), "row_seconds": list(self.row_seconds)}

    @property
    def max_tokens(self) -> int:
        return len(self.forward_seconds)

    @staticmethod
    def _extrapolate(curve: list[float], i: int) -> float:
        if i < len(curve):
            return curve[i]
        slope = curve[-1] - curve[-2] if len(curve) > 1 else 0.0
        return curve[-1] + slope * (i - len(curve) + 1)

    def calibrated(self, num_rows: int, num_tokens: int) -> float:
        if num_rows < 1 or num_tokens < num_rows:
            raise ValueError(f"a forward needs >= 1 row and >= 1 token per row, got {num_rows} rows, {num_tokens} tokens")
        return self._extrapolate(self.forward_seconds, num_tokens - 1) + self._extrapolate(self.row_seconds, num_rows - 1)

    def forward(self, num_rows: int, num_tokens: int) -> float:
        """Measured where steps ran; elsewhere the calibrated value times the present load."""
        measured = self._measured.get((num_rows, num_tokens))
        return measured if measured is not None else self.calibrated(num_rows, num_tokens) * self.load

    def observe_forward(self, num_rows: int, num_tokens: int, seconds: float, weight: float = 0.2) -> None:
        """Blend a measured step into the surface at (B, N), and its ratio to the calibrated
        value into the load. Each ratio is clipped to 4x the load either way, so one
        preempted step moves the load by at most 1.6x."""
        if seconds <= 0:
            return
        old = self.forward(num_rows, num_tokens)
        ratio = min(max(seconds / self.calibrated(num_rows, num_tokens), self.load / 4), self.load * 4)
        self.load = (1 - weight) * self.load + weight * ratio
        self._measured[(num_rows, num_tokens)] = (1 - weight) * old + weight * min(max(seconds, old / 4), old * 4)


@dataclass
class Probe:
    """One draft class's probing while its plan is K = 0 (module docstring)."""

    interval: int  # plain steps between probes
    plain_steps: int = 0  # since the last probe or speculative step
    pending: bool = False  # a probe was planned and no draft has been verified since


def prunes(spec: SpeculativeConfig) -> bool:
    """Whether drafts are pruned by their own confidence: with the cost-aware auto K, unless
    spec.prune is off. A fixed K verifies every drafted token."""
    return spec.prune and spec.auto and spec.adaptive == "cost"


class RowPolicy:
    """One row's speculation state for its request: fixed K, transformers' heuristic, or the
    cost-aware estimates (per draft class) with probing and the confidence pruner."""

    def __init__(self, spec: SpeculativeConfig, enabled: bool, max_probe_interval: int = 32,
                 min_probe_interval: int = 4) -> None:
        self.enabled = enabled and spec.enabled
        self.max_k = spec.max_speculative_tokens
        self.fixed_k = None if spec.auto else int(spec.num_speculative_tokens)
        self.heuristic = HeuristicController(min(4, self.max_k), self.max_k) if spec.auto and spec.adaptive == "heuristic" else None
        self.pruner = ConfidencePruner(self.max_k) if self.enabled and prunes(spec) else None
        # a tree row sends its root and every node (tree_nodes + 1 tokens) whatever its depth,
        # unless the pruner sizes the tree after drafting: then it plans as a chain
        self.tree_tokens = spec.tree_nodes + 1 if spec.tree_nodes and self.pruner is None else 0
        self.estimators: dict[int | None, AcceptanceEstimator] = {}
        self.draft_costs: dict[int | None, float] = {}  # seconds per draft level, per class
        self.draft_class: int | None = None
        self.trees = False  # the selected class drafts trees
        self.min_probe_interval = min_probe_interval
        self.max_probe_interval = max(max_probe_interval, min_probe_interval)
        self.probes: dict[int | None, Probe] = {}  # per class: one that turned off is probed on its own
        self.num_probes = 0

    def estimator(self, draft_class: int | None = None) -> AcceptanceEstimator:
        estimator = self.estimators.get(draft_class)
        if estimator is None:
            estimator = self.estimators[draft_class] = AcceptanceEstimator(self.max_k)
        return estimator

    def select(self, draft_class: int | None, trees: bool) -> None:
        self.draft_class, self.trees = draft_class, trees

    @property
    def probe(self) -> Probe:
        """The selected class's probing state."""
        probe = self.probes.get(self.draft_class)
        if probe is None:
            probe = self.probes[self.draft_class] = Probe(self.min_probe_interval)
        return probe

    def num_tokens(self, k: int) -> int:
        """Tokens this row sends to the verify forward when drafting k levels."""
        if k == 0:
            return 1
        return self.tree_tokens if self.trees and self.tree_tokens else k + 1

    def draft_seconds(self, default: float) -> float:
        return self.draft_costs.get(self.draft_class, default)

    def pick(self, options: tuple, trees: list[bool], cost: CostSurface | None) -> int:
        """The index of the class with the highest expected tokens per second as if the row
        ran alone (E(k) / (forward(1, tokens(k)) + k d), best k); ties, fixed K and no
        cost surface: the first."""
        if len(options) == 1 or cost is None or self.fixed_k is not None or self.heuristic is not None:
            return 0
        rates = []
        for draft_class, tree in zip(options, trees):
            d = self.draft_costs.get(draft_class, cost.draft_seconds_per_token)
            tokens = (lambda k: 1 if k == 0 else self.tree_tokens) if tree and self.tree_tokens else (lambda k: k + 1)
            rates.append(self.estimator(draft_class).best_rate(lambda k, t=tokens, d=d: cost.forward(1, t(k)) + k * d)[1])
        return max(range(len(options)), key=lambda i: (rates[i], -i))

    def observe_draft_cost(self, seconds_per_level: float) -> None:
        self.draft_costs[self.draft_class] = blend_cost(self.draft_costs.get(self.draft_class), seconds_per_level)

    def observe(self, num_draft: int, num_accepted: int) -> None:
        """This step's verified draft levels (a tree's depth) and accepted tokens."""
        if self.heuristic is not None:
            self.heuristic.observe(num_draft, num_accepted)
        self.estimator(self.draft_class).observe(num_draft, num_accepted)
        probe = self.probe
        if probe.pending and num_draft > 0:
            probe.pending = False
            probe.plain_steps = 0
            if num_accepted > 0:
                probe.interval = 0
            else:
                doubled = max(self.min_probe_interval, 2 * probe.interval)
                probe.interval = min(doubled, self.max_probe_interval)


class Planner:
    """Per-row draft lengths for one step (module docstring)."""

    def __init__(self, cost: CostSurface | None) -> None:
        self.cost = cost

    def max_probe_interval(self, probe_k: int = 1) -> int:
        """Plain steps between probes on a hopeless request, so probing costs <= PROBE_BUDGET."""
        if self.cost is None:
            return 32
        plain = self.cost.calibrated(1, 1)
        extra = self.cost.calibrated(1, probe_k + 1) - plain
        return max(1, math.ceil(max(extra, 0.0) / (PROBE_BUDGET * plain) - 1e-9))

    def plan(self, rows: list[RowPolicy], rooms: list[int]) -> list[int]:
        """rooms[b]: the most levels row b may draft (max_tokens and cache room)."""
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
                raise ValueError("adaptive K needs a calibrated CostSurface (planner.load_or_calibrate)")
            self._plan_auto(rows, rooms, ks, auto)
        return ks

    def _plan_auto(self, rows: list[RowPolicy], rooms: list[int], ks: list[int], auto: list[int]) -> None:
        cost, num_rows = self.cost, len(rows)
        alphas = {b: rows[b].estimator(rows[b].draft_class).alphas()[: min(rooms[b], rows[b].max_k)] for b in auto}
        tokens = [row.num_tokens(k) for row, k in zip(rows, ks)]
        num_tokens = sum(tokens)
        value = float(sum(1 + k for k in ks))  # fixed-K rows counted at full acceptance: cost only
        per_level = [row.draft_seconds(cost.draft_seconds_per_token) for row in rows]
        draft_seconds = sum(k * d for k, d in zip(ks, per_level))
        best_rate, best_len, order = value / (cost.forward(num_rows, num_tokens) + draft_seconds), 0, []
        heap = [(-alphas[b][0], b) for b in auto if alphas[b]]  # (-reach of the next token, row)
        heapq.heapify(heap)
        drafted = dict.fromkeys(auto, 0)
        while heap:
            neg_reach, b = heapq.heappop(heap)
            order.append(b)
            drafted[b] += 1
            value -= neg_reach
            draft_seconds += per_level[b]
            num_tokens += rows[b].num_tokens(drafted[b]) - rows[b].num_tokens(drafted[b] - 1)
            rate = value / (cost.forward(num_rows, num_tokens) + draft_seconds)
            if rate > best_rate:
                best_rate, best_len = rate, len(order)
            if drafted[b] < len(alphas[b]):
                heapq.heappush(heap, (neg_reach * alphas[b][drafted[b]], b))
        for b in order[:best_len]:
            ks[b] += 1
        for b in auto:  # probing (module docstring), per draft class
            row = rows[b]
            probe = row.probe
            if probe.pending:
                ks[b] = max(ks[b], 1)
            elif ks[b] > 0:
                probe.plain_steps = 0
                probe.interval = row.min_probe_interval
            elif probe.plain_steps >= probe.interval:
                probe.pending = True
                row.num_probes += 1
                ks[b] = 1
            else:
                probe.plain_steps += 1

    def prune_cost(self, num_rows: int, other_tokens: int):
        """verify_cost(n) for one row's pruner: the step's forward with n of its drafted nodes."""
        return lambda n: self.cost.forward(num_rows, other_tokens + n + 1)


# --- calibration --------------------------------------------------------------------------


def cost_key(loaded, max_tokens: int, max_rows: int) -> str:
    path = loaded.path
    stat = path.stat() if path.is_file() else (path / "config.json").stat()
    parts = [
        f"kernels={KERNELS_VERSION}",
        str(path.resolve()),
        str(stat.st_size),
        str(int(stat.st_mtime)),
        str(loaded.model.dtype),
        str(loaded.model.device),
        str(torch.get_num_threads()),
        torch.__version__,
        f"tokens={max_tokens}",
        f"rows={max_rows}",
        str(calibration_context(loaded.model, max_tokens)),
        str(getattr(loaded, "quant", "none")),
        f"invariant={getattr(loaded, 'batch_invariant', False)}",
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:24]


def calibration_context(model, max_tokens: int) -> int:
    """CALIBRATION_CONTEXT, shortened when the model's context window cannot hold it plus a pass."""
    context = min(CALIBRATION_CONTEXT, model.max_seq_len - max_tokens)
    if context < 1:
        raise ValueError(
            f"max_seq_len {model.max_seq_len} is too short to calibrate passes of {max_tokens} tokens; "
            "raise --max-model-len or lower the maximum draft length"
        )
    return context


def calibration_points(max_tokens: int, quick: bool = False) -> list[int]:
    """Pass widths measured: every width a draft commonly sends, or for a quick surface the
    powers of two up to QUICK_MAX_TOKENS (wider passes extrapolate linearly until steps measure them)."""
    widths = (1, 2, 4, 8, 16) if quick else (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 48, 64, 96, 128, 192, 256)
    points = [n for n in widths if n < max_tokens and (not quick or n <= QUICK_MAX_TOKENS)]
    return points if quick and max_tokens > QUICK_MAX_TOKENS else points + [max_tokens]


def calibration_tokens(spec: SpeculativeConfig, max_rows: int) -> int:
    """The widest pass the surface must cover: every row at its longest draft or tree."""
    return max_rows * (max(spec.max_speculative_tokens, spec.tree_nodes) + 1)


def _timed(model, fn) -> float:
    if model.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


@torch.inference_mode()
def measure_surface(model, max_rows: int, max_tokens: int, repeats: int = 3, quick: bool = False,
                    progress: bool = False) -> CostSurface:
    """The fastest of `repeats` timings (after a warm-up round) of one-row passes over N tokens
    and of B-row passes of one token each, rows at the calibration context (QUICK_CONTEXT for
    a quick surface, which measures `calibration_points(max_tokens, quick=True)` and extends
    its curve linearly to max_tokens). progress: a bar on stderr (a terminal only).

    The minimum, not the median: on a shared machine other work only ever adds time, and a
    transient burst must not end up cached as this model's cost."""
    from tqdm import tqdm

    dev = model.device
    context = calibration_context(model, max_tokens)
    if quick:
        context = min(context, QUICK_CONTEXT)
    rows = max_rows
    cache = model.new_cache(rows, context + max_tokens)
    prefix = torch.arange(context, device=dev)[None] % 1000 + 100
    for b in range(rows):
        view = cache.row_view(b, 0) if rows > 1 else cache
        model(prefix, torch.arange(context, device=dev)[None], view, logits_indices=slice(-1, None))
    points = calibration_points(max_tokens, quick)
    row_points = sorted({b for b in (2, 4, 8, 16, 32, 64) if b < rows} | ({rows} if rows > 1 else set()))
    one: dict[int, list[float]] = {n: [] for n in points}
    many: dict[int, list[float]] = {b: [] for b in row_points}

    def one_row(n: int) -> None:
        view = cache.row_view(0, context) if rows > 1 else cache
        if rows == 1:
            cache.truncate(context)
        out = model(torch.full((1, n), 200, device=dev), torch.arange(context, context + n, device=dev)[None], view)
        greedy(out.logits).tolist()  # what a verify step reads back

    def batch(b: int) -> None:
        ids = torch.full((b, 1), 200, device=dev)
        seq_lens = torch.full((b,), context, device=dev)
        out = model(ids, seq_lens[:, None].clone(), cache, seq_lens=seq_lens, num_new=torch.ones(b, dtype=torch.long, device=dev))
        greedy(out.logits).tolist()

    bar = tqdm(total=(repeats + 1) * (len(points) + len(row_points)), desc="specdec: calibrating", unit="pass",
               file=sys.stderr, disable=not progress or None, leave=False)
    for _ in range(repeats + 1):  # the first round warms up and is dropped
        for n in points:
            one[n].append(_timed(model, lambda n=n: one_row(n)))
            bar.update()
        for b in row_points:
            many[b].append(_timed(model, lambda b=b: batch(b)))
            bar.update()
    bar.close()
    forward = fit_verify_curve([n - 1 for n in points], [min(one[n][1:]) for n in points])
    forward += [CostSurface._extrapolate(forward, i) for i in range(len(forward), max_tokens)]
    extra = {1: 0.0} | {b: max(0.0, min(many[b][1:]) - forward[b - 1]) for b in row_points}
    known = sorted(extra)
    row_seconds = [0.0]
    for lo, hi in zip(known, known[1:]):
        for b in range(lo + 1, hi + 1):
            row_seconds.append(extra[lo] + (extra[hi] - extra[lo]) * (b - lo) / (hi - lo))
    return CostSurface(forward, row_seconds)


def probe_seconds(model, repeats: int = 3) -> float:
    """The fastest of a few one-token forwards at PROBE_CONTEXT: the machine's speed now, cheap
    enough to take at every load and compared with the same probe taken at calibration."""
    with torch.inference_mode():
        cache = model.new_cache(1, PROBE_CONTEXT + 1)
        dev = model.device
        model(torch.arange(PROBE_CONTEXT, device=dev)[None] + 100, torch.arange(PROBE_CONTEXT, device=dev)[None], cache)

        def step() -> None:
            cache.truncate(PROBE_CONTEXT)
            out = model(torch.full((1, 1), 200, device=dev), torch.full((1, 1), PROBE_CONTEXT, device=dev), cache)
            greedy(out.logits).tolist()

        step()  # warm-up
        return min(_timed(model, step) for _ in range(repeats))


def load_or_calibrate(loaded, spec: SpeculativeConfig, max_rows: int = 1, refresh: bool = False,
                      full: bool = False) -> CostSurface:
    """The cost surface of this model, machine and thread count, cached as JSON.

    Without a cached surface, a quick one is measured (`measure_surface(quick=True)`, a few
    narrow passes) so a first run answers soon; the engine refines it from its own steps. full:
    a quick cached surface is replaced by a full calibration (bench and doctor ask for it).
    A cached surface whose probe (`probe_seconds`) is more than STALE_RATIO times the same probe
    now was calibrated under load and is measured again; a machine busier now than at
    calibration keeps the cache: the idle surface is the one to plan with."""
    max_tokens = calibration_tokens(spec, max_rows)
    path = cache_dir() / "costs" / f"surface-{cost_key(loaded, max_tokens, max_rows)}.json"
    model = loaded.model
    if path.exists() and not refresh:
        data = json.loads(path.read_text())
        surface = CostSurface.from_dict(data)
        if "probe_seconds" in data:
            then, now = data["probe_seconds"], probe_seconds(model)
        else:  # a surface cached before probes: its one-token pass against one measured now
            then, now = surface.forward_seconds[0], measure_surface(model, 1, 1, repeats=2).forward_seconds[0]
        if then <= STALE_RATIO * now and not (full and data.get("quick")):
            return surface
        if then > STALE_RATIO * now:
            print(f"specdec: the cached cost surface {path.name} was measured on a busier machine "
                  f"({then * 1e3:.1f} ms a probe step, {now * 1e3:.1f} ms now): calibrating again", file=sys.stderr)
    quick = not full
    rows = max_rows if loaded.is_native else 1  # the adapter runs one row
    print(f"specdec: {'measuring' if quick else 'calibrating'} the verify cost ({rows} row{'s' if rows > 1 else ''}, "
          f"{'a few passes; refined as it runs' if quick else f'passes up to {max_tokens} tokens'}; cached in "
          f"{path.parent})", file=sys.stderr)
    surface = measure_surface(model, rows, max_tokens, repeats=2 if quick else 3, quick=quick, progress=True)
    data = surface.to_dict() | {"probe_seconds": probe_seconds(model), "quick": quick}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)  # atomic: a concurrent run reads the old surface or the new one
    return surface
