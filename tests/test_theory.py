"""Closed forms, their relations, the Monte-Carlo check and the `theory` subcommand."""

import argparse
import json
import math

import pytest

from specdec.bench import theory
from specdec.bench.theory import (
    alpha_from_tokens_per_step,
    expected_tokens_from_position_rates,
    expected_tokens_per_step,
    lab_expected_accepted,
    lab_speedup,
    lab_speedup_gamma,
    optimal_k,
    simulate_tokens_per_step,
    speedup,
    tokens_per_step_variance,
)

ALPHAS = [0.0, 0.1, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0]


@pytest.mark.parametrize(
    "alpha, k, tokens",
    [(0.0, 1, 1.0), (0.0, 8, 1.0), (1.0, 1, 2.0), (1.0, 4, 5.0), (0.5, 1, 1.5), (0.5, 2, 1.75),
     (0.5, 3, 1.875), (0.8, 0, 1.0), (0.9, 2, 1 + 0.9 + 0.81)],
)
def test_expected_tokens_known_values(alpha, k, tokens):
    assert expected_tokens_per_step(alpha, k) == pytest.approx(tokens, abs=1e-12)


def test_expected_tokens_continuous_at_alpha_one():
    assert expected_tokens_per_step(1 - 1e-9, 6) == pytest.approx(7.0, rel=1e-6)


@pytest.mark.parametrize("alpha", [0.3, 0.7, 0.9])
@pytest.mark.parametrize("k", [1, 4, 8])
def test_simulation_matches_closed_form(alpha, k):
    # tau's std error over N steps is sqrt(Var/N); 4 of them leave a ~6e-5 two-sided chance of a
    # false alarm per case (and the seed is fixed, so the test is deterministic anyway).
    n = 20000
    sim = simulate_tokens_per_step(alpha, k, n, seed=1)
    stderr = math.sqrt(tokens_per_step_variance(alpha, k) / n)
    assert abs(sim - expected_tokens_per_step(alpha, k)) < 4 * stderr


def test_simulation_edges_are_exact_and_seeded():
    assert simulate_tokens_per_step(0.0, 5, 1000, seed=0) == 1.0
    assert simulate_tokens_per_step(1.0, 5, 1000, seed=0) == 6.0
    assert simulate_tokens_per_step(0.6, 3, 500, seed=7) == simulate_tokens_per_step(0.6, 3, 500, seed=7)


def test_variance_by_hand():
    assert tokens_per_step_variance(0.5, 1) == pytest.approx(0.25)  # tau in {1, 2}, each 1/2
    # K=2, alpha=1/2: tau = 1, 2, 3 with p = 1/2, 1/4, 1/4 -> mean 1.75, E[tau^2] = 3.75
    assert tokens_per_step_variance(0.5, 2) == pytest.approx(3.75 - 1.75**2)
    assert tokens_per_step_variance(1.0, 4) == 0.0


def test_position_rates():
    assert expected_tokens_from_position_rates([0.8] * 5) == pytest.approx(expected_tokens_per_step(0.8, 5))
    assert expected_tokens_from_position_rates([1.0, 1.0, 0.5]) == pytest.approx(3.5)
    assert expected_tokens_from_position_rates([0.0, 1.0, 1.0]) == 1.0
    assert expected_tokens_from_position_rates([]) == 1.0
    with pytest.raises(ValueError, match="position acceptance rates"):
        expected_tokens_from_position_rates([0.5, 1.2])


def test_speedup_is_tokens_over_step_cost():
    assert speedup(0.8, 4, 0.0) == pytest.approx(expected_tokens_per_step(0.8, 4))
    assert speedup(0.8, 4, 0.1) == pytest.approx(expected_tokens_per_step(0.8, 4) / 1.4)
    assert speedup(0.8, 4, 0.1, verify_cost=1.5) == pytest.approx(expected_tokens_per_step(0.8, 4) / 1.9)
    assert speedup(0.0, 3, 0.05) == pytest.approx(1 / 1.15)  # nothing accepted: lose the drafting


def test_optimal_k_brute_force_and_edges():
    for alpha in ALPHAS:
        for c in (0.0, 0.02, 0.1, 0.5):
            k = optimal_k(alpha, c, max_k=12)
            best = max(speedup(alpha, j, c) for j in range(1, 13))
            assert speedup(alpha, k, c) == pytest.approx(best)
    assert optimal_k(0.0, 0.05) == 1
    assert optimal_k(1.0, 0.0, max_k=10) == 10


def test_optimal_k_grows_with_alpha_and_shrinks_with_cost():
    for c in (0.01, 0.05, 0.2):
        ks = [optimal_k(a, c, max_k=32) for a in ALPHAS]
        assert ks == sorted(ks), (c, ks)
        assert ks[-2] > ks[2]  # alpha 0.99 vs 0.3: strictly larger, not just equal
    for alpha in (0.6, 0.8, 0.9):
        ks = [optimal_k(alpha, c, max_k=32) for c in (0.0, 0.01, 0.05, 0.2, 0.5, 1.0)]
        assert ks == sorted(ks, reverse=True), (alpha, ks)
        assert ks[-1] < ks[1]


def test_lab_accepted_is_paper_minus_one():
    for alpha in ALPHAS:
        for k in (1, 3, 8):
            assert lab_expected_accepted(alpha, k) == pytest.approx(expected_tokens_per_step(alpha, k) - 1)
            if alpha < 1:
                assert lab_expected_accepted(alpha, k) == pytest.approx(alpha * (1 - alpha**k) / (1 - alpha))


def test_lab_speedup_misses_exactly_the_recovered_or_bonus_token():
    for alpha in ALPHAS:
        for k in (1, 4, 8):
            for c in (0.01, 0.05, 0.25):
                assert lab_speedup(alpha, k, 1 / c) == pytest.approx(speedup(alpha, k, c) - 1 / (k * c + 1))
    assert lab_speedup(0.0, 4, 20) == 0.0


def test_lab_gamma_is_a_free_drafting_lower_bound():
    for alpha in ALPHAS:
        for gamma in range(1, 17):
            assert lab_speedup_gamma(alpha, gamma) <= speedup(alpha, gamma, 0.0) + 1e-12
    assert lab_speedup_gamma(1.0, 5) == 5.0  # the paper gets 6: the bonus token
    assert lab_speedup_gamma(0.0, 3) == pytest.approx(0.75)  # < 1, where the paper's c=0 gives 1
    # both tend to 1/(1 - alpha) as gamma grows
    assert lab_speedup_gamma(0.8, 10**6) == pytest.approx(5.0, rel=1e-4)
    assert speedup(0.8, 200, 0.0) == pytest.approx(5.0, rel=1e-4)


def test_alpha_inversion_round_trip():
    for alpha in (0.05, 0.4, 0.77, 0.93):
        for k in (2, 5):
            assert alpha_from_tokens_per_step(expected_tokens_per_step(alpha, k), k) == pytest.approx(alpha, abs=1e-9)
    assert alpha_from_tokens_per_step(1.0, 4) == 0.0
    assert alpha_from_tokens_per_step(5.0, 4) == 1.0


@pytest.mark.parametrize(
    "call, match",
    [(lambda: expected_tokens_per_step(1.5, 3), "alpha"), (lambda: expected_tokens_per_step(0.5, -1), "K"),
     (lambda: speedup(0.5, 3, -0.1), "cost ratio"), (lambda: optimal_k(0.5, 0.1, max_k=0), "max_k"),
     (lambda: lab_speedup(0.5, 3, 0), "r must be"), (lambda: simulate_tokens_per_step(0.5, 3, 0), "num_steps")],
)
def test_bad_inputs_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def _parse(argv):
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="command")
    theory.register(sub)
    return p.parse_args(argv)


def test_cli_defaults_and_list_forms():
    args = _parse(["theory"])
    assert args.alpha == [0.5, 0.7, 0.8, 0.9] and args.draft_n == list(range(1, 9))
    assert args.cost_ratio == 0.05 and args.simulate == 20000 and args.func is theory.run
    args = _parse(["theory", "--alpha", "0.6,0.8", "0.9", "-k", "2", "4", "-c", "0.1"])
    assert args.alpha == [0.6, 0.8, 0.9] and args.draft_n == [2, 4] and args.cost_ratio == 0.1


def test_cli_table_and_json(capsys):
    assert theory.run(_parse(["theory", "--alpha", "0.8", "-k", "1,4", "--simulate", "2000"])) == 0
    text = capsys.readouterr().out
    assert "lab gamma" in text and "best K" in text and "bonus" in text
    assert theory.run(_parse(["theory", "--alpha", "0.8", "-k", "4", "--simulate", "2000", "--json"])) == 0
    data = json.loads(capsys.readouterr().out)
    (row,) = data["rows"]
    assert row["tokens_per_step"] == pytest.approx(expected_tokens_per_step(0.8, 4))
    assert abs(row["simulated_tokens_per_step"] - row["tokens_per_step"]) < 4 * row["simulated_stderr"]
    assert data["optimal"][0]["draft_n"] == optimal_k(0.8, 0.05)


def test_cli_bad_alpha_returns_error(capsys):
    assert theory.run(_parse(["theory", "--alpha", "1.5", "--simulate", "0"])) == 2
    assert "alpha must be in [0, 1]" in capsys.readouterr().err


def _summary():
    return {
        "baseline": {"speculative": "none", "tokens_per_second": 50.0},
        "configs": [
            {"speculative": "none", "draft_n": 0, "temperature": 0.0, "tokens_per_second": 50.0, "speedup": 1.0},
            {"speculative": "draft", "draft_n": 4, "temperature": 0.0, "tokens_per_second": 100.0,
             "speedup": 2.0, "mean_acceptance_length": 3.0, "acceptance_rate": 0.5,
             "cost_ratio": 0.1, "verify_cost_ratio": 1.2},
            {"speculative": "draft", "draft_n": 2, "temperature": 1.0, "tokens_per_second": 75.0,
             "mean_acceptance_length": 2.0, "acceptance_rate": 0.5},
            {"speculative": "ngram", "draft_n": 3, "temperature": 0.0, "tokens_per_second": 90.0,
             "speedup": 1.8, "mean_acceptance_length": 2.5, "acceptance_rate": 0.5},
        ],
    }


def test_from_results(tmp_path, capsys):
    (tmp_path / "summary.json").write_text(json.dumps(_summary()))
    assert theory.run(_parse(["theory", "--from-results", str(tmp_path), "--json"])) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [(r["speculative"], r["draft_n"]) for r in rows] == [("draft", 4), ("draft", 2), ("ngram", 3)]
    recorded, defaulted, ngram = rows
    assert recorded["predicted_speedup"] == pytest.approx(3.0 / (4 * 0.1 + 1.2))
    assert recorded["alpha"] == pytest.approx(alpha_from_tokens_per_step(3.0, 4))
    assert defaulted["cost_ratio"] == 0.05 and defaulted["verify_cost"] == 1.0
    assert defaulted["measured_speedup"] == pytest.approx(1.5)  # from tokens/s over the baseline's
    assert ngram["cost_ratio"] == 0.0 and ngram["predicted_speedup"] == pytest.approx(2.5)

    assert theory.run(_parse(["theory", "--from-results", str(tmp_path)])) == 0
    text = capsys.readouterr().out
    assert "predicted" in text and "assumptions" in text and "c = 0.05 (--cost-ratio) for draft configs" in text


def test_from_results_records_fallback_and_errors(tmp_path, capsys):
    lines = [json.dumps(c) for c in _summary()["configs"]]
    (tmp_path / "records.jsonl").write_text("\n".join(lines) + "\n")
    assert theory.run(_parse(["theory", "--from-results", str(tmp_path), "--json"])) == 0
    assert len(json.loads(capsys.readouterr().out)["rows"]) == 3
    assert theory.run(_parse(["theory", "--from-results", str(tmp_path / "missing")])) == 2
    assert "no summary.json or records.jsonl" in capsys.readouterr().err
    (tmp_path / "summary.json").write_text("{not json")
    assert theory.run(_parse(["theory", "--from-results", str(tmp_path)])) == 2
    assert "summary.json: malformed JSON" in capsys.readouterr().err
