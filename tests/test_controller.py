"""Speculation-length controllers: cost model, acceptance estimate, K choice, probing."""

import json
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specdec.engine.controller import (
    AcceptanceEstimator,
    BucketedController,
    CostAwareController,
    ConfidencePruner,
    CostModel,
    FixedController,
    HeuristicController,
    SpeculationController,
    blend_cost,
    fit_verify_curve,
)

# CPU-like: a verify pass over K+1 tokens costs 1.3x a decode step at K=1, +0.1x per token.
CPU_COST = CostModel(verify_seconds=[1.0] + [1.2 + 0.1 * k for k in range(1, 9)])


def simulate(controller, num_steps, accept, cost=CPU_COST):
    """Drive choose/observe; accept(step, k) -> num_accepted. Returns (ks, seconds)."""
    ks, seconds = [], 0.0
    for step in range(num_steps):
        k = controller.choose()
        controller.observe(k, accept(step, k))
        ks.append(k)
        seconds += cost.step_seconds(k)
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


# ---------------------------------------------------------------- cost model


def test_step_seconds_adds_draft_cost_only_when_drafting():
    cost = CostModel([1.0, 1.3, 1.4], draft_seconds_per_token=0.25, draft_overhead_seconds=0.1)
    assert cost.max_k == 2
    assert cost.step_seconds(0) == 1.0
    assert cost.step_seconds(1) == pytest.approx(1.3 + 0.1 + 0.25)
    assert cost.step_seconds(2) == pytest.approx(1.4 + 0.1 + 0.5)
    with pytest.raises(ValueError, match="draft length 3 outside"):
        cost.step_seconds(3)


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


def test_cost_model_round_trips_through_json():
    cost = CostModel(
        [0.02, 0.025, 0.027], draft_seconds_per_token=0.003, draft_overhead_seconds=0.001
    )
    again = CostModel.from_dict(json.loads(json.dumps(cost.to_dict())))
    assert again == cost
    with pytest.raises(ValueError, match="verify_seconds"):
        CostModel.from_dict({"draft_seconds_per_token": 0.0})


@pytest.mark.parametrize(
    "kwargs",
    [
        {"verify_seconds": []},
        {"verify_seconds": [1.0, -1.0]},
        {"verify_seconds": [1.0, float("nan")]},
        {"verify_seconds": [1.0], "draft_seconds_per_token": -0.1},
    ],
)
def test_bad_cost_model_is_rejected(kwargs):
    with pytest.raises(ValueError):
        CostModel(**kwargs)


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


# ---------------------------------------------------------------- cost-aware controller


def test_new_request_speculates_from_the_prior():
    # prior 0.6: E/t = 1.23, 1.40, 1.45, 1.44 for K = 1..4 on the CPU curve
    assert CostAwareController(CPU_COST, max_k=8).choose() == 3


def test_expensive_drafts_are_not_worth_it_at_the_prior():
    cost = CostModel(CPU_COST.verify_seconds, draft_seconds_per_token=1.0)
    assert CostAwareController(cost, max_k=8).choose() == 0


def test_picks_zero_when_nothing_is_accepted():
    controller = CostAwareController(CPU_COST, max_k=8)
    ks, _ = simulate(controller, 40, accept_none)
    assert controller.best_k() == 0
    assert ks[-20:].count(0) >= 18  # the rest are probes


def test_picks_max_k_when_everything_is_accepted():
    controller = CostAwareController(CPU_COST, max_k=8)
    ks, _ = simulate(controller, 30, accept_all)
    assert ks[-10:] == [8] * 10


def test_moderate_acceptance_picks_a_middle_k():
    # iid alpha = 0.7: E/t is best at K = 4..5 (1.733, 1.730), 1.689 at 3, 1.70 at 6
    controller = CostAwareController(CPU_COST, max_k=8)
    ks, _ = simulate(controller, 1000, bernoulli(0.7, seed=2))
    middle = sum(1 for k in ks if 3 <= k <= 6)
    assert middle > 0.8 * len(ks)


def test_probing_costs_under_two_percent_on_a_hopeless_prompt():
    controller = CostAwareController(CPU_COST, max_k=8)
    assert controller.max_probe_interval == 30  # 0.3 extra per probe / (1% of a 1.0 step)
    ks, seconds = simulate(controller, 1000, accept_none)
    plain = 1000 * CPU_COST.step_seconds(0)
    assert seconds / plain - 1 < 0.02
    assert 20 <= controller.num_probes <= 40


def test_recovers_when_the_prompt_turns_predictable():
    controller = CostAwareController(CPU_COST, max_k=8)
    simulate(controller, 300, accept_none)
    ks, _ = simulate(controller, controller.max_probe_interval + 15, accept_all)
    assert ks[-5:] == [8] * 5


def test_turns_speculation_off_when_the_prompt_turns_unpredictable():
    controller = CostAwareController(CPU_COST, max_k=8)
    simulate(controller, 100, accept_all)
    ks, _ = simulate(controller, 30, accept_none)
    assert ks[-10:].count(0) >= 9


def test_a_probe_without_a_draft_stays_pending():
    controller = CostAwareController(CPU_COST, max_k=8, min_probe_interval=2)
    simulate(controller, 40, accept_none)
    for _ in range(controller.max_probe_interval + 1):
        if controller.choose() == controller.probe_k:
            break
        controller.observe(0, 0)
    else:
        pytest.fail("no probe within max_probe_interval plain steps")
    alphas = controller.estimator.alphas()
    controller.observe(0, 0)  # n-gram miss: a plain step, no evidence
    assert controller.estimator.alphas() == alphas
    assert controller.choose() == controller.probe_k


def test_histogram_counts_verified_draft_lengths():
    controller = CostAwareController(CPU_COST, max_k=8)
    ks, _ = simulate(controller, 50, bernoulli(0.5, seed=3))
    assert sum(controller.k_histogram.values()) == 50
    assert controller.k_histogram == {k: ks.count(k) for k in set(ks)}
    controller.choose()
    controller.observe(0, 0)  # asked for K > 0, proposer returned nothing
    assert controller.k_histogram[0] == ks.count(0) + 1


def test_cost_aware_controller_rejects_bad_settings():
    with pytest.raises(ValueError, match="max_k"):
        CostAwareController(CPU_COST, max_k=9)
    with pytest.raises(ValueError, match="probe_k"):
        CostAwareController(CPU_COST, max_k=4, probe_k=5)


# ---------------------------------------------------------------- heuristic and fixed


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


def test_fixed_controller():
    controller = FixedController(3)
    assert [controller.choose() for _ in range(3)] == [3, 3, 3]
    controller.observe(3, 1)
    controller.observe(2, 2)
    assert controller.k_histogram == {3: 1, 2: 1}
    with pytest.raises(ValueError):
        FixedController(-1)


def test_all_controllers_follow_the_protocol():
    for controller in [
        FixedController(2),
        HeuristicController(),
        CostAwareController(CPU_COST, max_k=4),
        BucketedController(lambda bucket: CostAwareController(CPU_COST, max_k=4)),
    ]:
        assert isinstance(controller, SpeculationController)
        with pytest.raises(ValueError, match="num_accepted"):
            controller.observe(1, 2)


def test_tree_cost_verifies_every_node_whatever_the_depth():
    from specdec.engine.controller import CostModel

    cost = CostModel([1.0, 1.1, 1.2, 1.3], draft_seconds_per_token=0.05, tree_nodes=6)
    # verify over 7 tokens: 1.3 + 3 * 0.1 (linear past the curve), plus K levels of drafting
    assert cost.step_seconds(0) == 1.0
    assert abs(cost.step_seconds(2) - (1.6 + 0.1)) < 1e-9
    assert abs(cost.step_seconds(3) - (1.6 + 0.15)) < 1e-9
    assert CostModel.from_dict(cost.to_dict()).tree_nodes == 6
    # a chain model is unchanged
    assert CostModel([1.0, 1.1, 1.2, 1.3]).step_seconds(2) == 1.2


def test_a_cached_curve_calibrated_under_load_is_measured_again(tiny_model_dir, tmp_path, monkeypatch):
    """A cached curve whose plain step is far slower than the machine now (calibrated while
    other work loaded it) is measured again and replaced; one faster than now is kept."""
    from specdec.engine.batch_plan import BatchCostModel, load_or_calibrate_batch
    from specdec.engine.calibrate import load_or_calibrate
    from specdec.models.loader import load_model

    monkeypatch.setenv("SPECDEC_CACHE", str(tmp_path))
    loaded = load_model(str(tiny_model_dir), "float32", "cpu", 512)
    solo = load_or_calibrate(loaded, 4)
    batch = load_or_calibrate_batch(loaded, 2, 2)
    (solo_path,) = [p for p in (tmp_path / "costs").glob("*.json") if not p.name.startswith("batch-")]
    (batch_path,) = (tmp_path / "costs").glob("batch-*.json")
    solo_path.write_text(json.dumps(CostModel([1000 * s for s in solo.verify_seconds]).to_dict()))
    batch_path.write_text(json.dumps(BatchCostModel([1000 * s for s in batch.forward_seconds]).to_dict()))
    assert load_or_calibrate(loaded, 4).verify_seconds[0] < 100 * solo.verify_seconds[0]
    assert json.loads(solo_path.read_text())["verify_seconds"][0] < 100 * solo.verify_seconds[0]  # replaced
    assert load_or_calibrate_batch(loaded, 2, 2).forward_seconds[0] < 100 * batch.forward_seconds[0]
    fast = CostModel([s / 1000 for s in solo.verify_seconds])
    solo_path.write_text(json.dumps(fast.to_dict()))
    assert load_or_calibrate(loaded, 4).verify_seconds == fast.verify_seconds  # kept


def test_calibration_fits_a_context_window_shorter_than_its_prefix(tiny_model_dir):
    from specdec.engine.batch_plan import measure_forward_seconds
    from specdec.engine.calibrate import CALIBRATION_CONTEXT, calibration_context, measure_verify_seconds
    from specdec.models.loader import load_model

    window = CALIBRATION_CONTEXT  # --max-model-len 256: no room for the prefix plus a draft
    model = load_model(str(tiny_model_dir), "float32", "cpu", window).model
    assert calibration_context(model, 16) == window - 17
    assert len(measure_verify_seconds(model, 16, repeats=1)) == 17
    assert len(measure_forward_seconds(model, 2, 4, repeats=1)) > 0
    with pytest.raises(ValueError, match="too short to calibrate"):
        calibration_context(load_model(str(tiny_model_dir), "float32", "cpu", 16).model, 16)


def test_buckets_learn_their_own_draft_length():
    """Long matches always right, one-token matches always wrong: K = max for the first,
    plain steps (and rare probes) for the second, from the same request."""
    controller = BucketedController(lambda bucket: CostAwareController(CPU_COST, max_k=8))
    rng = random.Random(0)
    ks = {1: [], 4: []}
    for _ in range(400):
        bucket = rng.choice([1, 4])
        k = controller.choose(bucket)
        controller.observe(k, k if bucket == 4 else 0, bucket)
        ks[bucket].append(k)
    assert ks[4][-20:] == [8] * 20
    assert ks[1][-50:].count(0) >= 45
    assert sum(controller.k_histogram.values()) == 400
    assert controller.num_probes == controller.controllers[1].num_probes > 0
    # one estimator for both would settle in between and pay for the bad drafts
    shared = CostAwareController(CPU_COST, max_k=8)
    assert 0 < shared.choose() < 8


def test_unbucketed_steps_share_one_controller():
    controller = BucketedController(lambda bucket: CostAwareController(CPU_COST, max_k=8))
    for _ in range(30):
        controller.observe(controller.choose(), 0)
    assert list(controller.controllers) == [None]
    assert controller.choose() == 0 and controller.choose(3) == 3  # a new class starts at the prior


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
    replay = _replay_module().replay
    prompt = list(range(100, 140))
    out = [0] + prompt[:30] + [7, 8, 9, 7, 1, 2]  # the first token comes from prefill
    runs = [("grounded", prompt, out)]
    verify = [1.0] + [1.2 + 0.05 * k for k in range(1, 9)]
    plain = replay(runs, verify, lambda: FixedController(0))["grounded"]
    assert plain == 1.0
    oracle = replay(runs, verify, oracle=True, max_k=8)["grounded"]
    cost = CostModel(verify)
    for make, classes in [
        (lambda: FixedController(4), False),
        (lambda: CostAwareController(cost, max_k=8), False),
        (lambda: BucketedController(lambda bucket: CostAwareController(cost, max_k=8)), True),
    ]:
        assert 1.0 < replay(runs, verify, make, use_classes=classes)["grounded"] <= oracle


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
