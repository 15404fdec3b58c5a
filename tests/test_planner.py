"""The planner over several rows (engine/planner.py): one cost surface over rows and packed
tokens, the rows' acceptance, probing, fixed and disabled rows, draft classes and the
surface's online correction. One row alone: tests/test_controller.py."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specdec.config import SpeculativeConfig
from specdec.engine.planner import CostSurface, Planner, RowPolicy

AUTO = SpeculativeConfig(method="ngram", num_speculative_tokens="auto")


def rows(n: int, spec=None) -> list[RowPolicy]:
    return [RowPolicy(spec or AUTO, True) for _ in range(n)]


def trained(row: RowPolicy, accept: bool) -> RowPolicy:
    for _ in range(20):
        row.observe(4, 4 if accept else 0)
    return row


class Alphas:
    """An estimate pinned to given alphas (the planner reads only `alphas()`)."""

    def __init__(self, *alphas: float) -> None:
        self._alphas = list(alphas)

    def alphas(self) -> list[float]:
        return list(self._alphas)


def pinned(*alphas: float) -> RowPolicy:
    row = RowPolicy(AUTO, True)
    row.estimators[None] = Alphas(*alphas)
    return row


# ---------------------------------------------------------------- the surface


def test_surface_adds_the_rows_extra_to_the_token_curve_and_extrapolates_both():
    cost = CostSurface([1.0, 1.1, 1.3], [0.0, 0.5, 0.7])
    assert cost.forward(1, 3) == 1.3
    assert cost.forward(2, 3) == pytest.approx(1.3 + 0.5)  # f(N) + r(B)
    assert cost.forward(3, 5) == pytest.approx(1.3 + 2 * 0.2 + 0.7)
    assert cost.forward(5, 5) == pytest.approx(1.7 + 0.7 + 2 * 0.2)  # r past its end: its last slope
    assert CostSurface([1.0, 1.1]).forward(8, 8) == pytest.approx(1.7)  # a one-row surface: r = 0
    with pytest.raises(ValueError, match="1 token per row"):
        cost.forward(3, 2)
    with pytest.raises(ValueError, match=">= 1 row"):
        cost.calibrated(0, 1)


def test_unvisited_step_sizes_follow_the_load_measured_at_the_visited_ones():
    """Calibrated on an idle machine: steps now take 3x longer at the sizes that ran, so
    the sizes no step has run are taken as 3x their calibrated value, not as cheap as then;
    a point's own measurements take over once it runs, and one outlier moves the load by
    at most 1.6x."""
    cost = CostSurface([1.0 + 0.1 * n for n in range(16)])
    for _ in range(60):
        for n in (1, 2, 3):
            cost.observe_forward(1, n, 3.0 * (1.0 + 0.1 * (n - 1)))
    assert cost.load == pytest.approx(3.0, rel=1e-3)
    assert cost.forward(1, 2) == pytest.approx(3.3, rel=1e-3)  # measured
    assert cost.forward(1, 10) == pytest.approx(3.0 * 1.9, rel=1e-3)  # never ran: calibrated x load
    assert cost.forward(1, 18) == pytest.approx(3.0 * 2.7, rel=1e-3)  # past the curve: extrapolated, x load
    assert cost.forward(2, 2) == pytest.approx(3.0 * 1.1, rel=1e-3)  # two rows: their own point, never ran
    assert cost.calibrated(1, 2) == pytest.approx(1.1)  # the calibration itself is kept
    cost.observe_forward(1, 10, 9.0)  # its first step blends into the scaled value
    assert cost.forward(1, 10) == pytest.approx(0.8 * 5.7 + 0.2 * 9.0, rel=1e-3)
    load = cost.load
    before = cost.forward(1, 1)
    cost.observe_forward(1, 1, 1000.0)  # one preempted step
    assert cost.load == pytest.approx(0.8 * load + 0.2 * 4 * load)
    assert cost.forward(1, 1) == pytest.approx(0.8 * before + 0.2 * 4 * before)  # clipped to 4x too
    cost.observe_forward(1, 1, 0.0)  # no time: ignored
    cost.observe_forward(1, 1, -1.0)
    assert cost.forward(1, 1) == pytest.approx(0.8 * before + 0.2 * 4 * before)


def test_prune_cost_is_the_step_forward_with_n_of_the_rows_nodes():
    cost = CostSurface([1.0 + 0.1 * n for n in range(16)], [0.0, 0.5, 0.7])
    verify = Planner(cost).prune_cost(3, 4)  # 3 rows, 4 tokens besides this row's root and nodes
    assert [verify(n) for n in range(3)] == [cost.forward(3, 4 + n + 1) for n in range(3)]
    assert verify(0) == pytest.approx(1.4 + 0.7)


# ---------------------------------------------------------------- planning


def test_worked_example_of_the_greedy_order():
    """planner.py's docstring: alphas (0.9, 0.8) and (0.5, 0.5), cost(N) = 1, 1.1, 1.2, 1.6,
    2.0 for N = 2..6: rates 2/1, 2.9/1.1, 3.62/1.2 = 3.02, 4.12/1.6, 4.37/2.0: (2, 0)."""
    cost = CostSurface([0.5, 1.0, 1.1, 1.2, 1.6, 2.0])
    assert Planner(cost).plan([pinned(0.9, 0.8), pinned(0.5, 0.5)], [8, 8]) == [2, 0]
    # a cheaper fourth token: 4.12 / 1.3 = 3.17 beats 3.02
    cost = CostSurface([0.5, 1.0, 1.1, 1.2, 1.3, 2.0])
    assert Planner(cost).plan([pinned(0.9, 0.8), pinned(0.5, 0.5)], [8, 8]) == [2, 1]


def test_planner_drafts_when_verification_is_cheap_and_stops_when_compute_bound():
    cheap = Planner(CostSurface([1.0 + 0.02 * n for n in range(1, 80)]))
    good = [trained(r, True) for r in rows(4)]
    assert all(k >= 4 for k in cheap.plan(good, [8] * 4))
    compute_bound = Planner(CostSurface([float(n) for n in range(1, 80)]))
    assert compute_bound.plan([trained(r, True) for r in rows(8)], [8] * 8) == [0] * 8


def test_planner_prefers_rows_that_accept_and_respects_room():
    planner = Planner(CostSurface([1.0 + 0.05 * n for n in range(1, 80)]))
    ks = planner.plan([trained(rows(1)[0], True), trained(rows(1)[0], False)], [2, 8])
    assert ks[0] == 2 and ks[1] == 0
    assert planner.plan([trained(rows(1)[0], True)], [0]) == [0]  # no room: a plain step


def test_planner_probes_a_plain_row_and_honours_fixed_and_disabled_rows():
    planner = Planner(CostSurface([1.0 + 0.05 * n for n in range(1, 80)]))
    row = trained(rows(1)[0], False)
    history = [planner.plan([row], [8])[0] for _ in range(6)]
    assert history[:4] == [0, 0, 0, 0] and history[4] == 1
    fixed = RowPolicy(SpeculativeConfig(method="ngram", num_speculative_tokens=5), True)
    off = RowPolicy(SpeculativeConfig(method="ngram", num_speculative_tokens=5), False)
    assert planner.plan([fixed, off], [3, 8]) == [3, 0]
    assert Planner(None).plan([fixed, off], [8, 8]) == [5, 0]  # no surface needed without auto rows


def test_fixed_rows_tokens_are_charged_to_the_auto_rows_beside_them():
    """A forward cheap up to 4 tokens and steep past them: alone, a row that always
    passes drafts 3; beside a fixed K = 2 row (3 tokens) one more token no longer pays."""
    steep = Planner(CostSurface([1.0, 1.05, 1.1, 1.15, 3.0, 5.0, 7.0, 9.0]))
    fixed = RowPolicy(SpeculativeConfig(method="ngram", num_speculative_tokens=2), True)
    assert steep.plan([trained(rows(1)[0], True)], [8]) == [3]
    assert steep.plan([trained(rows(1)[0], True), fixed], [8, 8]) == [0, 2]


def test_the_rows_extra_cost_makes_drafting_relatively_cheaper():
    tokens = [1.0 + 0.6 * n for n in range(20)]
    assert Planner(CostSurface(tokens)).plan(rows(2), [8, 8]) == [0, 0]  # at the prior
    assert Planner(CostSurface(tokens, [0.0, 3.0])).plan(rows(2), [8, 8]) == [2, 2]


TREE = SpeculativeConfig(method="eagle", num_speculative_tokens="auto", max_speculative_tokens=6, tree_nodes=6, prune=False)


def tree_and_chain() -> tuple[RowPolicy, RowPolicy]:
    tree = RowPolicy(TREE, True)
    tree.select(None, True)
    chain = RowPolicy(TREE, True)
    chain.select(None, False)
    return tree, chain


def test_a_tree_row_sends_all_its_nodes_at_any_depth():
    """On a curve of 0.1 per token, at the prior: a tree row's first level pays for its 6
    nodes and each further level adds its reach for free (no draft cost here), so alone it
    drafts the full depth; beside a chain row both draft."""
    cost = CostSurface([1.0 + 0.1 * n for n in range(32)])
    tree, chain = tree_and_chain()
    assert [tree.num_tokens(k) for k in range(3)] == [1, 7, 7]
    assert Planner(cost).plan([tree], [6]) == [6]
    assert Planner(cost).plan([tree], [2]) == [2]
    ks = Planner(cost).plan([tree, chain], [6, 6])
    assert ks[0] > 0 and ks[1] > 0
    assert _rate(cost, [tree, chain], ks) > _rate(cost, [tree, chain], [0, 0])
    # the same with a draft cost per level: deep levels must now pay for their drafting
    costly = CostSurface([1.0 + 0.1 * n for n in range(32)], draft_seconds_per_token=0.1)
    assert 0 < Planner(costly).plan([tree], [6])[0] < 6


def test_planner_follows_measured_step_times():
    cost = CostSurface([1.0] * 16)  # calibrated: drafting looks free
    planner = Planner(cost)
    row = trained(rows(1)[0], True)
    assert planner.plan([row], [8]) == [8]
    for _ in range(30):  # but a forward over more than one token turns out 20x slower
        cost.observe_forward(1, 1, 1.0)
        for n in range(2, 10):
            cost.observe_forward(1, n, 20.0)
    assert planner.plan([row], [8]) == [0]


def test_row_keeps_one_estimate_and_draft_cost_per_class_and_picks_the_one_that_pays():
    cost = CostSurface([1.0 + 0.05 * n for n in range(1, 80)])
    row = rows(1)[0]
    row.select(4, False)
    trained(row, True)  # 4-token matches: always right
    row.select(-1, False)
    trained(row, False)  # the head: always wrong
    assert row.estimators[4].alphas()[0] > 0.9 and row.estimators[-1].alphas()[0] < 0.1
    assert row.pick((4, -1), [False, False], cost) == 0 and row.pick((-1, 4), [False, False], cost) == 1
    assert row.pick((-1, 1), [False, False], cost) == 1  # an untried class starts from the prior, beating a failing one
    # equal acceptance: the class whose drafts cost more loses
    fresh = rows(1)[0]
    for draft_class, seconds in ((2, 0.0), (-1, 0.5)):
        fresh.select(draft_class, False)
        trained(fresh, True)
        fresh.observe_draft_cost(seconds)
    assert fresh.pick((-1, 2), [False, False], cost) == 1
    # and the planner charges a row its class's draft cost: at 2 s per draft token (two
    # forwards) even drafts that always pass do not pay
    planner = Planner(cost)
    fresh.select(2, False)
    assert planner.plan([fresh], [8]) == [8]
    fresh.select(-1, False)
    fresh.observe_draft_cost(2.0)
    fresh.observe_draft_cost(2.0)
    assert fresh.draft_costs[-1] == pytest.approx(0.8 * (0.8 * 0.5 + 0.2 * 2.0) + 0.2 * 2.0)
    assert fresh.draft_seconds(cost.draft_seconds_per_token) > 1.0
    assert planner.plan([fresh], [8]) == [0]
    assert fresh.draft_costs[2] == 0.0  # the other class keeps its own


def _rate(cost: CostSurface, rows_: list[RowPolicy], ks: list[int]) -> float:
    """Expected tokens per second of a plan, computed independently of the planner."""
    value = seconds = 0.0
    for row, k in zip(rows_, ks):
        reach = 1.0
        value += 1.0
        for alpha in row.estimator(row.draft_class).alphas()[:k]:
            reach *= alpha
            value += reach
        seconds += k * row.draft_seconds(cost.draft_seconds_per_token)
    return value / (seconds + cost.forward(len(rows_), sum(row.num_tokens(k) for row, k in zip(rows_, ks))))


@settings(max_examples=100, deadline=None)
@given(
    histories=st.lists(st.lists(st.tuples(st.integers(1, 6), st.integers(0, 6)), max_size=8), min_size=1, max_size=5),
    slope=st.floats(0.0, 1.5),
    row_extra=st.floats(0.0, 2.0),
    draft=st.floats(0.0, 1.0),
    rooms=st.lists(st.integers(0, 8), min_size=5, max_size=5),
)
def test_a_plan_is_never_expected_slower_than_plain_decoding(histories, slope, row_extra, draft, rooms):
    """K = 0 for every row is a candidate, and the plan is no worse than drafting the
    same number of tokens in any other order (the reach order is the best per N)."""
    spec = SpeculativeConfig(method="ngram", num_speculative_tokens="auto", max_speculative_tokens=6)
    cost = CostSurface([1.0 + slope * n for n in range(40)], [0.0] + [row_extra * b for b in range(1, 5)],
                       draft_seconds_per_token=draft)
    batch = []
    for history in histories:
        row = RowPolicy(spec, True)
        for k, a in history:
            row.observe(k, min(a, k))
        batch.append(row)
    rooms = rooms[: len(batch)]
    ks = Planner(cost).plan(batch, rooms)
    assert all(0 <= k <= min(room, 6) for k, room in zip(ks, rooms))
    best = _rate(cost, batch, ks)
    assert best >= _rate(cost, batch, [0] * len(batch)) * (1 - 1e-9)
    # moving one draft token from one row to another never helps (same N, same draft cost)
    for i in range(len(batch)):
        for j in range(len(batch)):
            if i != j and ks[i] > 0 and ks[j] < min(rooms[j], 6):
                moved = list(ks)
                moved[i] -= 1
                moved[j] += 1
                assert _rate(cost, batch, moved) <= best * (1 + 1e-9)


# ---------------------------------------------------------------- known gaps (see the port's report)


@pytest.mark.xfail(strict=True, reason="the best prefix of the reach order cuts a tree row's free deeper levels")
def test_a_tree_row_beside_a_chain_row_gets_its_free_levels():
    cost = CostSurface([1.0 + 0.1 * n for n in range(32)])
    tree, chain = tree_and_chain()
    ks = Planner(cost).plan([tree, chain], [6, 6])  # [4, 3]: rate 2.241; [6, 2]: 2.311
    best = max((_rate(cost, [tree, chain], [t, c]), [t, c]) for t in range(7) for c in range(7))[1]
    assert ks == best


@pytest.mark.xfail(strict=True, reason="the reach order ignores each row's own draft cost")
def test_a_free_row_drafts_beside_an_expensive_one():
    cost = CostSurface([0.9, 1.0, 1.1, 1.2, 1.3])  # two rows: 1.0 at N = 2, +0.1 a token
    expensive, free = pinned(0.9), pinned(0.8)
    expensive.draft_costs[None] = 1.0  # a draft model's level
    free.draft_costs[None] = 0.0  # an n-gram lookup
    # (0, 0): 2.0, (0, 1): 2.8 / 1.1 = 2.55, (1, 0): 2.9 / 2.1, (1, 1): 3.7 / 2.2
    assert Planner(cost).plan([expensive, free], [1, 1]) == [0, 1]
