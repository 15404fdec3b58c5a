"""One request's speculation policy: the cost surface, acceptance estimate, K choice, probing,
draft classes and the confidence pruner (engine/planner.py's `RowPolicy` and `Planner` with
one row, and controller.py's parts). Several rows at once: tests/test_planner.py."""

import json
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specdec.config import SpeculativeConfig
from specdec.engine.controller import (
    AcceptanceEstimator,
    ConfidencePruner,
    HeuristicController,
    blend_cost,
    fit_verify_curve,
)
from specdec.engine.planner import CostSurface, Planner, RowPolicy

# CPU-like: a verify pass over K+1 tokens costs 1.3x a decode step at K=1, +0.1x per token.
CPU_COST = CostSurface([1.0] + [1.2 + 0.1 * k for k in range(1, 9)])
AUTO = SpeculativeConfig(method="ngram", num_speculative_tokens="auto", max_speculative_tokens=8)


def cost_aware(cost=CPU_COST, spec=AUTO, **kwargs):
    """A planner and one cost-aware row, as the engine makes them."""
    planner = Planner(cost)
    return planner, RowPolicy(spec, True, max_probe_interval=planner.max_probe_interval(), **kwargs)


def step_seconds(planner, row, k):
    """What the planner charges one row drafting k: the forward plus k draft levels."""
    cost = planner.cost
    return cost.forward(1, row.num_tokens(k)) + k * row.draft_seconds(cost.draft_seconds_per_token)


def simulate(planner, row, num_steps, accept, room=8):
    """Drive plan/observe; accept(step, k) -> num_accepted. Returns (ks, seconds)."""
    ks, seconds = [], 0.0
    for step in range(num_steps):
        (k,) = planner.plan([row], [room])
        row.observe(k, accept(step, k))
        ks.append(k)
        seconds += step_seconds(planner, row, k)
    return ks, seconds


def bernoulli(alpha, seed=0):
    rng = random.Random(seed)

    def accept(step, k):
        n = 0
        while n < k and rng.random() < alpha:
            n += 1
        return n

    return accept


def accept_none(step, k):
    return 0


def accept_all(step, k):
    return k


# ---------------------------------------------------------------- cost surface (one row)


def test_one_row_surface_is_the_verify_curve_and_extrapolates_linearly():
    cost = CostSurface([1.0, 1.3, 1.4], draft_seconds_per_token=0.25)
    assert cost.max_tokens == 3
    assert [cost.forward(1, k + 1) for k in range(3)] == [1.0, 1.3, 1.4]  # a pass over K + 1 tokens
    assert cost.forward(1, 5) == pytest.approx(1.4 + 2 * 0.1)  # past the curve: its last slope
    assert CostSurface([2.0]).forward(1, 7) == 2.0  # one point: flat
    assert cost.draft_seconds_per_token == 0.25
    with pytest.raises(ValueError, match="1 token per row"):
        cost.forward(1, 0)


def test_the_planner_charges_draft_levels_only_when_drafting():
    planner, row = cost_aware(CostSurface([1.0, 1.3, 1.4], draft_seconds_per_token=0.25))
    assert step_seconds(planner, row, 0) == 1.0
    assert step_seconds(planner, row, 2) == pytest.approx(1.4 + 0.5)
    row.observe_draft_cost(0.1)  # the selected class's own measurement replaces the default
    assert row.draft_seconds(0.25) == 0.1
    assert step_seconds(planner, row, 1) == pytest.approx(1.3 + 0.1)


def test_one_preempted_draft_does_not_make_drafting_look_expensive():
    """The running draft cost: a steady 20 us per token, then one call 1000x slower (its
    thread preempted on a shared machine): the estimate moves by at most 1.6x, and is back
    within 10% ten drafts later; a lasting change still comes through."""
    cost = None
    for _ in range(20):
        cost = blend_cost(cost, 20e-6)
    assert cost == pytest.approx(20e-6)
    spiked = blend_cost(cost, 20e-3)
    assert spiked == pytest.approx(0.8 * 20e-6 + 0.2 * 80e-6)  # clipped to 4x
    for _ in range(10):
        spiked = blend_cost(spiked, 20e-6)
    assert spiked < 1.1 * 20e-6
    slow = cost
    for _ in range(40):  # the draft really became 100x slower
        slow = blend_cost(slow, 2e-3)
    assert slow == pytest.approx(2e-3, rel=1e-3)
    assert blend_cost(None, 5e-3) == blend_cost(0.0, 5e-3) == 5e-3  # unset: the first measurement


def test_cost_surface_round_trips_through_json_without_its_online_state():
    cost = CostSurface([0.02, 0.025, 0.027], [0.0, 0.004, 0.006])
    cost.observe_forward(2, 3, 0.5)  # the machine now: not part of the cached surface
    again = CostSurface.from_dict(json.loads(json.dumps(cost.to_dict())))
    assert again.forward_seconds == cost.forward_seconds and again.row_seconds == cost.row_seconds
    assert again.load == 1.0 and again.forward(2, 3) == pytest.approx(0.027 + 0.004)
    assert CostSurface.from_dict({"forward_seconds": [0.02]}).row_seconds == [0.0]  # one-row surface
    with pytest.raises(ValueError, match="forward_seconds"):
        CostSurface.from_dict({"row_seconds": [0.0]})


@pytest.mark.parametrize(
    "args",
    [
        ([],),
        ([1.0, -1.0],),
        ([1.0, 0.0],),
        ([1.0, float("nan")],),
        ([1.0, float("inf")],),
        ([1.0], [0.1]),  # one row costs nothing extra over itself
        ([1.0], [0.0, -0.1]),
        ([1.0], [0.0, float("nan")]),
    ],
)
def test_bad_cost_surface_is_rejected(args):
    with pytest.raises(ValueError):
        CostSurface(*args)


def test_fit_verify_curve_exact_tables():
    # already monotone: unchanged
    assert fit_verify_curve([0, 1, 2], [1.0, 1.3, 1.4]) == pytest.approx([1.0, 1.3, 1.4])
    # a dip is pooled with its neighbour: (1.5 + 1.3) / 2
    assert fit_verify_curve([0, 1, 2], [1.0, 1.5, 1.3]) == pytest.approx([1.0, 1.4, 1.4])
    # repeated K -> median (the 9.0 outlier is ignored), gaps interpolated linearly
    ks = [0, 0, 0, 2, 4]
    assert fit_verify_curve(ks, [1.0, 9.0, 1.0, 1.4, 2.0]) == pytest.approx(
        [1.0, 1.2, 1.4, 1.7, 2.0]
    )
    with pytest.raises(ValueError, match="include 0"):
        fit_verify_curve([1, 2], [1.3, 1.4])
    with pytest.raises(ValueError, match="as many"):
        fit_verify_curve([0, 1], [1.0])


@settings(max_examples=100, deadline=None)
@given(
    points=st.lists(
        st.tuples(st.integers(0, 12), st.floats(0.01, 10.0)), min_size=1, max_size=30
    )
)
def test_fit_verify_curve_is_monotone_and_within_range(points):
    points = [(0, 1.0)] + points
    ks, seconds = zip(*points)
    curve = fit_verify_curve(ks, seconds)
    assert len(curve) == max(ks) + 1
    assert all(a <= b + 1e-12 for a, b in zip(curve, curve[1:]))
    assert min(seconds) - 1e-12 <= min(curve) and max(curve) <= max(seconds) + 1e-12


# ---------------------------------------------------------------- estimator


def test_estimator_starts_at_the_prior_and_ignores_empty_drafts():
    est = AcceptanceEstimator(max_k=4, prior_mean=0.6)
    assert est.alphas() == pytest.approx([0.6] * 4)
    assert est.expected_tokens(0) == 1.0
    assert est.expected_tokens(2) == pytest.approx(1 + 0.6 + 0.36)
    est.observe(0, 0)
    assert est.alphas() == pytest.approx([0.6] * 4)
    with pytest.raises(ValueError, match="num_accepted"):
        est.observe(2, 3)
    with pytest.raises(ValueError, match="outside"):
        est.expected_tokens(5)


@pytest.mark.parametrize(
    "kwargs", [{"max_k": 0}, {"max_k": 4, "prior_mean": 1.5}, {"max_k": 4, "prior_strength": 0.0}, {"max_k": 4, "decay": 0.0}]
)
def test_bad_estimator_settings_are_rejected(kwargs):
    with pytest.raises(ValueError):
        AcceptanceEstimator(**kwargs)


def test_estimator_exact_update():
    # decay=1: plain counts. observe(2, 1): position 1 reached+accepted, 2 reached+rejected.
    est = AcceptanceEstimator(max_k=3, prior_mean=0.5, prior_strength=2.0, decay=1.0)
    est.observe(2, 1)
    a1 = (1.0 + 1.0) / (2.0 + 1.0)  # prior 1 of 2, plus 1 of 1
    a2 = (0.0 + 2.0 * a1) / (1.0 + 2.0)  # 0 of 1, prior mean alpha_1 at strength 2
    a3 = (0.0 + 2.0 * a2) / (0.0 + 2.0)  # never reached: alpha_2
    assert est.alphas() == pytest.approx([a1, a2, a3])
    assert est.expected_tokens(3) == pytest.approx(1 + a1 + a1 * a2 + a1 * a2 * a3)


@pytest.mark.parametrize("alpha", [0.2, 0.7, 0.95])
def test_estimator_converges(alpha):
    est = AcceptanceEstimator(max_k=4, decay=0.995)
    accept = bernoulli(alpha, seed=1)
    for step in range(4000):
        est.observe(4, accept(step, 4))
    assert est.alphas()[0] == pytest.approx(alpha, abs=0.05)
    assert est.alphas()[1] == pytest.approx(alpha, abs=0.1)


# ---------------------------------------------------------------- one cost-aware row


def test_new_request_speculates_from_the_prior():
    # prior 0.6: E/t = 1.23, 1.40, 1.45, 1.44 for K = 1..4 on the CPU curve
    planner, row = cost_aware()
    assert planner.plan([row], [8]) == [3]
    assert planner.plan([row], [2]) == [2]  # the room caps it


@settings(max_examples=150, deadline=None)
@given(
    steps=st.lists(st.tuples(st.integers(0, 8), st.integers(0, 8)), max_size=12),
    slopes=st.lists(st.sampled_from([0.0, 0.03125, 0.0625, 0.125, 0.25, 0.5, 1.0]), min_size=1, max_size=10),
    draft=st.sampled_from([0.0, 0.0625, 0.25, 1.0]),
    max_k=st.integers(1, 8),
    room=st.integers(1, 10),
)
def test_one_row_plans_the_k_with_the_best_expected_tokens_per_second(steps, slopes, draft, max_k, room):
    """With one row the planner's K is argmax_k E(k) / (forward(1, k + 1) + k d), ties the
    smaller k (the old CostAwareController.best_k), over k <= min(room, max K)."""
    curve = [1.0]
    for slope in slopes:
        curve.append(curve[-1] + slope)
    spec = SpeculativeConfig(method="ngram", num_speculative_tokens="auto", max_speculative_tokens=max_k)
    planner, row = cost_aware(CostSurface(curve, draft_seconds_per_token=draft), spec)
    for k, a in steps:
        row.observe(min(k, max_k), min(a, k, max_k))
    expected, _ = row.estimator().best_rate(lambda k: step_seconds(planner, row, k), max_k=min(room, max_k))
    assert planner.plan([row], [room]) == [expected]  # a fresh row: no probe is due


def test_expensive_drafts_are_not_worth_it_at_the_prior():
    planner, row = cost_aware(CostSurface(CPU_COST.forward_seconds, draft_seconds_per_token=1.0))
    assert planner.plan([row], [8]) == [0]
    # the same with the class's own measured cost over a free default
    planner, row = cost_aware()
    row.observe_draft_cost(1.0)
    assert planner.plan([row], [8]) == [0]


def test_picks_zero_when_nothing_is_accepted():
    planner, row = cost_aware()
    ks, _ = simulate(planner, row, 40, accept_none)
    assert row.estimator().best_rate(lambda k: CPU_COST.forward(1, k + 1))[0] == 0
    assert ks[-20:].count(0) >= 18  # the rest are probes


def test_picks_max_k_when_everything_is_accepted():
    planner, row = cost_aware()
    ks, _ = simulate(planner, row, 30, accept_all)
    assert ks[-10:] == [8] * 10


def test_moderate_acceptance_picks_a_middle_k():
    # iid alpha = 0.7: E/t is best at K = 4..5 (1.733, 1.730), 1.689 at 3, 1.70 at 6
    planner, row = cost_aware()
    ks, _ = simulate(planner, row, 1000, bernoulli(0.7, seed=2))
    middle = sum(1 for k in ks if 3 <= k <= 6)
    assert middle > 0.8 * len(ks)


def test_probing_costs_under_two_percent_on_a_hopeless_prompt():
    planner, row = cost_aware()
    assert planner.max_probe_interval() == 30  # 0.3 extra per probe / (1% of a 1.0 step)
    assert row.max_probe_interval == 30
    assert Planner(None).max_probe_interval() == 32  # nothing to size it from
    ks, seconds = simulate(planner, row, 1000, accept_none)
    plain = 1000 * CPU_COST.forward(1, 1)
    assert seconds / plain - 1 < 0.02
    assert 20 <= row.num_probes <= 40


def test_probe_interval_doubles_from_the_minimum_up_to_the_cap():
    """The prior drafts 3, then 2; rejected, the row turns off and probes after 4 plain
    steps, then 8, 16, and 30 (the cap) for good."""
    planner, row = cost_aware()
    ks, _ = simulate(planner, row, 400, accept_none)
    assert ks[:7] == [3, 2, 0, 0, 0, 0, 1]
    probes = [i for i, k in enumerate(ks) if k > 0][2:]
    assert probes == [6, 15, 32] + list(range(63, 400, 31))
    assert set(ks[2:]) == {0, 1}  # a probe drafts one token
    assert row.num_probes == len(probes) and row.probe.interval == 30


def test_recovers_when_the_prompt_turns_predictable():
    planner, row = cost_aware()
    simulate(planner, row, 300, accept_none)
    ks, _ = simulate(planner, row, row.max_probe_interval + 15, accept_all)
    assert ks[-5:] == [8] * 5


def test_an_accepted_probe_probes_again_at_the_next_step():
    planner, row = cost_aware()
    ks, _ = simulate(planner, row, 200, accept_none)
    while planner.plan([row], [8]) != [1]:
        row.observe(0, 0)
    row.observe(1, 1)
    assert row.probe.interval == 0 and not row.probe.pending
    assert planner.plan([row], [8]) == [1] and row.probe.pending  # alpha is still low: a probe


def test_turns_speculation_off_when_the_prompt_turns_unpredictable():
    planner, row = cost_aware()
    simulate(planner, row, 100, accept_all)
    ks, _ = simulate(planner, row, 30, accept_none)
    assert ks[-10:].count(0) >= 9


def test_a_probe_without_a_draft_stays_pending():
    planner, row = cost_aware(min_probe_interval=2)
    simulate(planner, row, 40, accept_none)
    for _ in range(row.max_probe_interval + 1):
        if planner.plan([row], [8]) == [1]:
            break
        row.observe(0, 0)
    else:
        pytest.fail("no probe within max_probe_interval plain steps")
    assert row.probe.pending
    alphas = row.estimator().alphas()
    probes = row.num_probes
    row.observe(0, 0)  # n-gram miss: a plain step, no evidence
    assert row.estimator().alphas() == alphas
    assert row.probe.pending
    assert planner.plan([row], [8]) == [1]
    assert row.num_probes == probes  # the same probe, not a new one


def test_an_auto_row_needs_a_cost_surface():
    with pytest.raises(ValueError, match="CostSurface"):
        Planner(None).plan([RowPolicy(AUTO, True)], [8])


# ---------------------------------------------------------------- heuristic, fixed and plain rows


def test_heuristic_schedule_is_plus_two_minus_one():
    controller = HeuristicController(initial_k=4, max_k=8)
    trace = []
    for all_accepted in [True, True, True] + [False] * 10:
        k = controller.choose()
        trace.append(k)
        controller.observe(k, k if all_accepted else k - 1)
    assert trace == [4, 6, 8, 8, 7, 6, 5, 4, 3, 2, 1, 1, 1]
    controller.observe(0, 0)  # no draft: no change
    assert controller.choose() == 1
    assert controller.k_histogram == {0: 1, 1: 3, 2: 1, 3: 1, 4: 2, 5: 1, 6: 2, 7: 1, 8: 2}
    with pytest.raises(ValueError, match="num_accepted"):
        controller.observe(1, 2)
    with pytest.raises(ValueError, match="initial_k"):
        HeuristicController(initial_k=9, max_k=8)


def test_heuristic_row_follows_the_schedule_without_a_cost_surface():
    spec = SpeculativeConfig(method="ngram", num_speculative_tokens="auto", max_speculative_tokens=8, adaptive="heuristic")
    planner, row = Planner(None), RowPolicy(spec, True)
    assert row.pruner is None
    trace = []
    for all_accepted in [True, True, True] + [False] * 10:
        (k,) = planner.plan([row], [8])
        trace.append(k)
        row.observe(k, k if all_accepted else k - 1)
    assert trace == [4, 6, 8, 8, 7, 6, 5, 4, 3, 2, 1, 1, 1]
    assert planner.plan([row], [0]) == [0]  # no room
    small = RowPolicy(SpeculativeConfig(method="ngram", num_speculative_tokens="auto", max_speculative_tokens=2,
                                        adaptive="heuristic"), True)
    assert planner.plan([small], [8]) == [2]  # starts at min(4, max K)
    assert planner.plan([small], [1]) == [1]


def test_fixed_and_plain_rows():
    planner = Planner(None)
    fixed = RowPolicy(SpeculativeConfig(method="ngram", num_speculative_tokens=3), True)
    assert fixed.pruner is None  # a fixed K verifies every drafted token
    ks = []
    for accepted in (0, 3, 1):
        ks.append(planner.plan([fixed], [8])[0])
        fixed.observe(ks[-1], accepted)
    assert ks == [3, 3, 3]
    assert planner.plan([fixed], [2]) == [2]
    assert planner.plan([RowPolicy(SpeculativeConfig(method="ngram", num_speculative_tokens=3), False)], [8]) == [0]
    assert planner.plan([RowPolicy(SpeculativeConfig(), True)], [8]) == [0]  # --speculative none
    with pytest.raises(ValueError):
        SpeculativeConfig(method="ngram", num_speculative_tokens=0)


def test_one_class_fixed_k_heuristic_or_no_surface_picks_the_first_option():
    heuristic = SpeculativeConfig(method="ngram", num_speculative_tokens="auto", adaptive="heuristic")
    for spec, cost in [(AUTO, None), (SpeculativeConfig(method="ngram", num_speculative_tokens=3), CPU_COST),
                       (heuristic, CPU_COST)]:
        row = RowPolicy(spec, True)
        row.select(1, False)
        for _ in range(20):
            row.observe(4, 0)
        assert row.pick((1, 4), [False, False], cost) == 0
    assert RowPolicy(AUTO, True).pick((1,), [False], CPU_COST) == 0


# ---------------------------------------------------------------- trees


def test_tree_cost_verifies_every_node_whatever_the_depth():
    tree_spec = SpeculativeConfig(method="eagle", num_speculative_tokens="auto", max_speculative_tokens=6,
                                  tree_nodes=6, prune=False)
    cost = CostSurface([1.0, 1.1, 1.2, 1.3], draft_seconds_per_token=0.05)
    planner, row = cost_aware(cost, tree_spec)
    row.select(None, True)
    # verify over 7 tokens: 1.3 + 3 * 0.1 (linear past the curve), plus K levels of drafting
    assert [row.num_tokens(k) for k in range(4)] == [1, 7, 7, 7]
    assert step_seconds(planner, row, 0) == 1.0
    assert step_seconds(planner, row, 2) == pytest.approx(1.6 + 0.1)
    assert step_seconds(planner, row, 3) == pytest.approx(1.6 + 0.15)
    # the prior's E(k) / t: 0.97, 1.153, 1.243, 1.281, 1.288, 1.279 for k = 1..6 as a tree;
    # 1.391, 1.508, 1.501, ... as a chain (t = forward(k + 1) + 0.05 k)
    assert planner.plan([row], [6]) == [5]
    row.select(None, False)  # the same row drafting a chain
    assert [row.num_tokens(k) for k in range(4)] == [1, 2, 3, 4]
    assert planner.plan([row], [6]) == [2]
    assert row.pick((None, 5), [True, False], cost) == 1  # the chain class pays more
    # a pruned tree plans as a chain: the pruner sizes the tree after drafting
    pruned = RowPolicy(SpeculativeConfig(method="eagle", num_speculative_tokens="auto", tree_nodes=6), True)
    pruned.select(None, True)
    assert pruned.pruner is not None and [pruned.num_tokens(k) for k in range(4)] == [1, 2, 3, 4]


# ---------------------------------------------------------------- draft classes


def test_classes_learn_their_own_draft_length():
    """Long matches always right, one-token matches always wrong: K = max for the first,
    plain steps (and rare probes) for the second, from the same request; one estimate for
    both settles in between, drafts on the bad matches and gives up the good ones' gain."""
    rates = {}
    for classes in (True, False):
        planner, row = cost_aware()
        rng = random.Random(0)
        ks = {1: [], 4: []}
        tokens = seconds = 0.0
        for _ in range(400):
            draft_class = rng.choice([1, 4])
            if classes:
                row.select(draft_class, False)
            (k,) = planner.plan([row], [8])
            accepted = k if draft_class == 4 else 0
            row.observe(k, accepted)
            ks[draft_class].append(k)
            tokens += accepted + 1
            seconds += step_seconds(planner, row, k)
        rates[classes] = tokens / seconds
        if classes:
            assert sorted(row.estimators) == [1, 4]
            assert ks[4][-20:] == [8] * 20
            assert ks[1][-50:].count(0) >= 45
            assert row.num_probes > 0
        else:
            assert list(row.estimators) == [None]
            assert ks[4][-100:].count(8) < 60 and ks[1][-100:].count(0) < 80
    assert rates[True] > 1.3 * rates[False]  # 3.27 against 2.09 tokens per plain-step time


def test_unclassed_steps_share_one_estimate_and_a_new_class_starts_at_the_prior():
    planner, row = cost_aware()
    for _ in range(30):
        row.observe(planner.plan([row], [8])[0], 0)
    assert list(row.estimators) == [None]
    assert planner.plan([row], [8]) == [0]
    row.select(3, False)
    assert planner.plan([row], [8]) == [3]


def test_pick_returns_the_index_of_the_class_that_pays():
    planner, row = cost_aware()
    row.select(4, False)
    for _ in range(20):
        row.observe(4, 4)
    row.select(-1, False)
    for _ in range(20):
        row.observe(4, 0)
    assert row.pick((4, -1), [False, False], CPU_COST) == 0
    assert row.pick((-1, 4), [False, False], CPU_COST) == 1
    assert row.pick((-1, 1), [False, False], CPU_COST) == 1  # an untried class starts from the prior
    assert row.pick((7, 8), [False, False], CPU_COST) == 0  # tie: the first


# ---------------------------------------------------------------- calibration


def test_a_cached_surface_calibrated_under_load_is_measured_again(tiny_model_dir, tmp_path, monkeypatch):
    """A cached surface whose plain step is far slower than the machine now (calibrated while
    other work loaded it) is measured again and replaced; one faster than now is kept."""
    from specdec.engine.planner import load_or_calibrate
    from specdec.models.loader import load_model

    monkeypatch.setenv("SPECDEC_CACHE", str(tmp_path))
    loaded = load_model(str(tiny_model_dir), "float32", "cpu", 512)
    spec = SpeculativeConfig(method="ngram", num_speculative_tokens="auto", max_speculative_tokens=2)
    for max_rows in (1, 2):
        surface = load_or_calibrate(loaded, spec, max_rows)
        assert surface.max_tokens == max_rows * 3  # every row at its longest draft
        (path,) = (tmp_path / "costs").glob("surface-*.json")
        slow = CostSurface([1000 * s for s in surface.forward_seconds], [1000 * s for s in surface.row_seconds])
        path.write_text(json.dumps(slow.to_dict()))
        assert load_or_calibrate(loaded, spec, max_rows).forward_seconds[0] < 100 * surface.forward_seconds[0]
        assert json.loads(path.read_text())["forward_seconds"][0] < 100 * surface.forward_seconds[0]  # replaced
        fast = CostSurface([s / 1000 for s in surface.forward_seconds], surface.row_seconds)
        path.write_text(json.dumps(fast.to_dict()))
        assert load_or_calibrate(loaded, spec, max_rows).forward_seconds == fast.forward_seconds  # kept
        path.unlink()


def test_calibration_fits_a_context_window_shorter_than_its_prefix(tiny_model_dir):
    from specdec.engine.planner import CALIBRATION_CONTEXT, calibration_context, measure_surface
    from specdec.models.loader import load_model

    window = CALIBRATION_CONTEXT  # --max-model-len 256: no room for the prefix plus a draft
    model = load_model(str(tiny_model_dir), "float32", "cpu", window).model
    assert calibration_context(model, 17) == window - 17
    assert len(measure_surface(model, 1, 17, repeats=1).forward_seconds) == 17
    two = measure_surface(model, 2, 6, repeats=1)
    assert len(two.forward_seconds) == 6 and two.row_seconds[0] == 0.0
    with pytest.raises(ValueError, match="too short to calibrate"):
        calibration_context(load_model(str(tiny_model_dir), "float32", "cpu", 16).model, 16)


# ---------------------------------------------------------------- replay


def _replay_module():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "controller_replay.py"
    spec = importlib.util.spec_from_file_location("controller_replay", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_replay_exact_costs_and_the_oracle_ceiling():
    """benchmarks/controller_replay.py: a copied prompt, a made-up tail; fixed K's cost
    is exact, and nothing beats the oracle."""
    module = _replay_module()
    replay = module.replay
    prompt = list(range(100, 140))
    out = [0] + prompt[:30] + [7, 8, 9, 7, 1, 2]  # the first token comes from prefill
    runs = [("grounded", prompt, out)]
    verify = [1.0] + [1.2 + 0.05 * k for k in range(1, 9)]
    assert replay(runs, verify, SpeculativeConfig())["grounded"] == 1.0  # plain
    oracle = replay(runs, verify, oracle=True, max_k=8)["grounded"]
    # K = 4 over the 36 decoded tokens: no match (a plain step), the 30 copied tokens in 6
    # steps of 4 + 1 (1.4 each), then 3 plain steps, a rejected 1-token match (1.25), a plain step
    fixed = replay(runs, verify, module.fixed_spec(4))["grounded"]
    assert fixed == pytest.approx(36 / (1.0 + 6 * 1.4 + 3 * 1.0 + 1.25 + 1.0))
    assert fixed <= oracle
    for spec, classes in [(module.auto_spec(8), False), (module.auto_spec(8), True), (module.auto_spec(8, "heuristic"), False)]:
        assert 1.0 < replay(runs, verify, spec, use_classes=classes)["grounded"] <= oracle


# ---------------------------------------------------------------- confidence pruning

CURVE = [1.0, 1.1, 1.2, 1.3, 1.4]


def verify_cost(n):
    return CURVE[n]


def logs(*probs):
    return [math.log(p) for p in probs]


def test_pruner_keeps_the_prefix_with_the_best_rate():
    pruner = ConfidencePruner(4)
    # promised 0.9, 0.72, 0.072, 0.0072 (c = 1 before any evidence); rates by n:
    # 1.0, 1.9 / 1.1 = 1.73, 2.62 / 1.2 = 2.18, 2.69 / 1.3 = 2.07, 2.70 / 1.4 = 1.93
    assert pruner.keep(logs(0.9, 0.72, 0.072, 0.0072), [1, 2, 3, 4], verify_cost) == 2


def test_pruner_drops_a_doubtful_draft_and_keeps_a_sure_one():
    pruner = ConfidencePruner(4)
    assert pruner.keep(logs(0.05, 0.01), [1, 2], verify_cost) == 0  # 1.05 / 1.1 < 1: a plain step
    assert pruner.keep(logs(0.99, 0.98, 0.97, 0.96), [1, 2, 3, 4], verify_cost) == 4
    assert pruner.keep(logs(0.05, 0.01), [1, 2], lambda n: 1.0) == 2  # free verification keeps all


def test_pruner_weighs_the_spent_draft_time():
    """With the draft already paid for, a small gain per verify second is worth more."""
    pruner = ConfidencePruner(2)
    scores = logs(0.12)
    assert pruner.keep(scores, [1], verify_cost, draft_seconds=0.0) == 1  # 1.12 / 1.1 > 1
    assert pruner.keep(logs(0.08), [1], verify_cost, draft_seconds=0.0) == 0  # 1.08 / 1.1 < 1
    assert pruner.keep(logs(0.08), [1], verify_cost, draft_seconds=2.0) == 1  # 1.08 / 3.1 > 1 / 3


def test_pruner_calibration_exact_update_and_tree_siblings():
    pruner = ConfidencePruner(3, prior_strength=2.0, decay=1.0)
    pruner.observe(logs(0.5, 0.25), [1, 2], num_accepted=0)
    c = pruner.calibration()
    assert c[1] == pytest.approx(2.0 / 2.5)  # (0 + 2 * 1) / (0.5 + 2)
    assert c[2] == pytest.approx(2.0 * c[1] / 2.25)
    assert c[3] == pytest.approx(c[2])  # unobserved: the depth above
    pruner.observe(logs(0.5, 0.25), [1, 2], num_accepted=2)
    c = pruner.calibration()
    assert c[1] == pytest.approx(1.0) and c[2] == pytest.approx(3.0 / 2.5)
    # siblings at depth 1 both count as promised, one acceptance at most
    tree = ConfidencePruner(2, prior_strength=2.0, decay=1.0)
    tree.observe(logs(0.6, 0.3, 0.2), [1, 1, 2], num_accepted=1)
    assert tree.calibration()[1] == pytest.approx((1 + 2) / (0.9 + 2))
    assert tree.promised(logs(0.9), [1]) == [pytest.approx(min(1.0, 0.9 * 3 / 2.9))]
    with pytest.raises(ValueError):
        tree.observe(logs(0.6), [1], num_accepted=2)


def test_overconfident_drafts_are_learned():
    """A draft that promises 0.9 but passes 0.1 of the time is soon pruned to a plain step."""
    pruner = ConfidencePruner(4)
    assert pruner.keep(logs(0.9), [1], verify_cost) == 1
    for _ in range(10):
        pruner.observe(logs(0.9), [1], num_accepted=0)
    assert pruner.calibration()[1] < 0.15
    assert pruner.keep(logs(0.9), [1], verify_cost) == 0


def test_a_pruning_row_has_a_pruner_and_the_planner_prices_its_nodes():
    spec = SpeculativeConfig(method="eagle", num_speculative_tokens="auto", max_speculative_tokens=6)
    planner, row = cost_aware(CPU_COST, spec)
    assert row.pruner is not None and row.pruner.max_depth == 6
    verify = planner.prune_cost(1, 0)  # one row, no other tokens in the step
    assert [verify(n) for n in range(3)] == [CPU_COST.forward(1, n + 1) for n in range(3)]
    assert RowPolicy(SpeculativeConfig(method="eagle", num_speculative_tokens="auto", prune=False), True).pruner is None
    assert RowPolicy(spec, False).pruner is None  # a plain row


# ---------------------------------------------------------------- known gaps (see the port's report)


def test_a_class_turned_off_is_still_probed_while_other_classes_draft():
    """n-gram steps alternating between no match (class 0, which stays at the prior and so
    plans K > 0, but drafts nothing) and a 1-token match, wrong for 300 steps and then always
    right: the 1-token class should be probed and come back."""
    planner, row = cost_aware()
    ks = []
    for step in range(600):
        row.select(step % 2, False)
        (k,) = planner.plan([row], [8])
        if step % 2 == 0:
            row.observe(0, 0)  # no match: no draft
        else:
            row.observe(k, k if step >= 300 else 0)
            ks.append(k)
    assert ks[-20:] == [8] * 20  # now: all 0, and no probe ever ran


@pytest.mark.xfail(strict=True, reason="max_probe_interval prices a probe as a 2-token chain pass, "
                   "without draft cost or tree nodes")
@pytest.mark.parametrize("tree_nodes, draft_seconds", [(0, 0.5), (6, 0.0)])
def test_probing_budget_holds_for_costly_drafts_and_trees(tree_nodes, draft_seconds):
    spec = SpeculativeConfig(method="eagle", num_speculative_tokens="auto", max_speculative_tokens=8,
                             tree_nodes=tree_nodes, prune=False)
    planner, row = cost_aware(CPU_COST, spec)
    row.select(None, bool(tree_nodes))
    if draft_seconds:
        row.observe_draft_cost(draft_seconds)
    _, seconds = simulate(planner, row, 3000, accept_none)
    assert seconds / 3000 - 1 < 0.02  # now 2.6% for both
