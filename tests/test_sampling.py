"""Tests for specdec.sampling: logits -> probs (temperature, top-k, top-p), sample, greedy."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare

from specdec.config import SamplingParams
from specdec.sampling import greedy, logits_to_probs, sample, sample_next

P_VALUE_MIN = 1e-3


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def logits_of(probs: list[float]) -> torch.Tensor:  # [V]
    return torch.tensor(probs, dtype=torch.float64).log().float()


def chi2_pvalue(token_ids: torch.Tensor, probs: torch.Tensor) -> float:
    """Chi-square p-value of token_ids [N] against probs [V]; 0 if any token is off-support."""
    counts = torch.bincount(token_ids, minlength=probs.numel()).double()
    support = probs > 0
    if counts[~support].sum() > 0:
        return 0.0
    if support.sum() == 1:  # a point mass: on-support is all there is to check
        return 1.0
    expected = probs[support].double() / probs[support].double().sum() * counts.sum()
    return float(chisquare(counts[support].numpy(), expected.numpy()).pvalue)


# ---------------------------------------------------------------- logits_to_probs


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("top_k, top_p", [(0, 1.0), (3, 1.0), (0, 0.8), (5, 0.6)])
def test_probs_are_float32_and_sum_to_one_over_leading_dims(dtype, top_k, top_p):
    logits = (torch.randn(2, 3, 11, generator=gen(0)) * 3).to(dtype)  # [2, 3, V]
    probs = logits_to_probs(logits, 0.8, top_k, top_p)
    assert probs.shape == (2, 3, 11)
    assert probs.dtype == torch.float32
    assert (probs >= 0).all()
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 3))


@pytest.mark.parametrize("temperature", [0.3, 1.0, 2.5])
def test_temperature_matches_scaled_softmax(temperature):
    logits = torch.randn(4, 9, generator=gen(1)) * 2
    expected = torch.softmax(logits.double() / temperature, dim=-1).float()
    torch.testing.assert_close(logits_to_probs(logits, temperature), expected)


def test_higher_temperature_flattens_and_low_temperature_approaches_argmax():
    logits = torch.tensor([2.0, 1.0, 0.5, -1.0])

    def entropy(probs: torch.Tensor) -> float:
        return float(-(probs * probs.clamp_min(1e-30).log()).sum())

    cold, warm, hot = (logits_to_probs(logits, t) for t in (0.5, 1.0, 2.0))
    assert entropy(cold) < entropy(warm) < entropy(hot)
    assert logits_to_probs(logits, 1e-3)[0] > 0.999


@pytest.mark.parametrize("top_k", [1, 2, 5, 19])
def test_top_k_keeps_exactly_the_k_largest(top_k):
    logits = torch.randn(6, 20, generator=gen(2))  # [B, V]
    probs = logits_to_probs(logits, 1.0, top_k=top_k)
    kept = probs > 0
    assert (kept.sum(-1) == top_k).all()
    top_ids = logits.topk(top_k, dim=-1).indices
    assert kept.gather(-1, top_ids).all()
    # the kept tokens keep their relative odds: softmax restricted to the top-k
    expected = torch.softmax(logits.masked_fill(~kept, float("-inf")), dim=-1)
    torch.testing.assert_close(probs, expected)


@pytest.mark.parametrize("top_k", [0, -1, 20, 25])
def test_top_k_disabled_when_nonpositive_or_at_least_vocab(top_k):
    logits = torch.randn(3, 20, generator=gen(3))
    torch.testing.assert_close(logits_to_probs(logits, 1.0, top_k=top_k), torch.softmax(logits, -1))


def test_top_k_ties_at_the_boundary_go_to_lower_ids():
    logits = torch.tensor([1.0, 3.0, 3.0, 3.0, 0.0])
    probs = logits_to_probs(logits, 1.0, top_k=2)
    torch.testing.assert_close(probs, torch.tensor([0.0, 0.5, 0.5, 0.0, 0.0]))


@pytest.mark.parametrize(
    "top_p, expected",
    [
        (0.4, [1.0, 0.0, 0.0, 0.0]),
        (0.7, [0.625, 0.375, 0.0, 0.0]),
        (0.9, [0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0.0]),
        (0.99, [0.5, 0.3, 0.15, 0.05]),
        (1.0, [0.5, 0.3, 0.15, 0.05]),
    ],
)
def test_top_p_keeps_the_minimal_nucleus(top_p, expected):
    logits = logits_of([0.15, 0.5, 0.05, 0.3])  # shuffled so ranks differ from ids
    probs = logits_to_probs(logits, 1.0, top_p=top_p)
    permuted = torch.tensor(expected)[[2, 0, 3, 1]]
    torch.testing.assert_close(probs, permuted)


def test_top_p_always_keeps_the_top_token():
    probs = logits_to_probs(logits_of([0.9, 0.05, 0.05]), 1.0, top_p=1e-6)
    torch.testing.assert_close(probs, torch.tensor([1.0, 0.0, 0.0]))


def test_top_p_applies_to_the_distribution_renormalized_after_top_k():
    logits = logits_of([0.4, 0.3, 0.2, 0.1])
    # after top-k=3: [4/9, 3/9, 2/9]; cumulative 0.444, 0.778 -> top_p=0.75 keeps two tokens
    # (on the raw distribution it would keep three: 0.4, 0.7, 0.9)
    probs = logits_to_probs(logits, 1.0, top_k=3, top_p=0.75)
    torch.testing.assert_close(probs, torch.tensor([4 / 7, 3 / 7, 0.0, 0.0]))


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    vocab_size=st.integers(2, 30),
    top_p=st.floats(0.01, 0.999),
    scale=st.sampled_from([0.1, 1.0, 4.0]),
)
def test_top_p_nucleus_is_a_minimal_prefix_by_rank(seed, vocab_size, top_p, scale):
    logits = torch.randn(vocab_size, generator=gen(seed)) * scale
    full = torch.softmax(logits.double(), -1)
    probs = logits_to_probs(logits, 1.0, top_p=top_p)
    kept = probs > 0
    order = torch.sort(logits, descending=True, stable=True).indices
    num_kept = int(kept.sum())
    assert num_kept >= 1
    assert kept[order[:num_kept]].all(), "kept set must be the highest-ranked tokens"
    kept_mass = float(full[kept].sum())
    smallest_kept = float(full[order[num_kept - 1]])
    assert kept_mass >= top_p - 1e-5, "nucleus must reach top_p"
    assert kept_mass - smallest_kept < top_p + 1e-5, "nucleus must be minimal"
    torch.testing.assert_close(probs[kept].double(), full[kept] / kept_mass)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), vocab_size=st.integers(2, 12))
def test_top_k_1_is_one_hot_at_the_greedy_token_even_with_ties(seed, vocab_size):
    logits = torch.randint(0, 3, (3, vocab_size), generator=gen(seed)).float()  # many ties
    probs = logits_to_probs(logits, 0.7, top_k=1)
    expected = torch.nn.functional.one_hot(greedy(logits), vocab_size).float()
    torch.testing.assert_close(probs, expected)


@pytest.mark.parametrize(
    "temperature, top_p", [(0.0, 1.0), (-1.0, 1.0), (float("nan"), 1.0), (1.0, 0.0), (1.0, 1.5)]
)
def test_bad_parameters_raise(temperature, top_p):
    with pytest.raises(ValueError):
        logits_to_probs(torch.zeros(4), temperature, top_p=top_p)


# ---------------------------------------------------------------- sample / greedy


def test_sample_is_reproducible_with_a_seed_and_returns_int64():
    probs = torch.softmax(torch.randn(64, 10, generator=gen(4)), -1)
    first, second = sample(probs, gen(7)), sample(probs, gen(7))
    assert first.shape == (64,) and first.dtype == torch.int64
    assert torch.equal(first, second)
    torch.manual_seed(123)  # global RNG state must not matter
    assert torch.equal(sample(probs, gen(7)), first)


def test_sample_never_picks_zero_probability_tokens():
    probs = torch.tensor([[0.0, 0.5, 0.0, 0.5], [0.0, 0.0, 1.0, 0.0]]).repeat(500, 1)
    token_ids = sample(probs, gen(5))
    assert probs.gather(1, token_ids[:, None]).gt(0).all()


def test_sample_keeps_leading_dims():
    probs = torch.softmax(torch.randn(2, 3, 5, generator=gen(6)), -1)
    assert sample(probs, gen(0)).shape == (2, 3)


def test_sample_follows_probs_and_the_test_can_fail():
    probs = torch.tensor([0.05, 0.3, 0.0, 0.15, 0.4, 0.1])
    token_ids = sample(probs.expand(20_000, -1), gen(8))
    assert chi2_pvalue(token_ids, probs) > P_VALUE_MIN
    wrong = torch.tensor([0.1, 0.25, 0.0, 0.15, 0.4, 0.1])
    assert chi2_pvalue(token_ids, wrong) < P_VALUE_MIN


def test_greedy_is_argmax_with_ties_to_the_first():
    logits = torch.tensor([[[0.0, 2.0, 2.0], [5.0, 1.0, 5.0]]])  # [1, 2, 3]
    assert greedy(logits).tolist() == [[1, 0]]


def test_sample_next_greedy_does_not_touch_the_generator():
    logits = torch.randn(5, 8, generator=gen(9))
    generator = gen(10)
    state = generator.get_state()
    ids = sample_next(logits, SamplingParams(temperature=0.0), generator)
    assert torch.equal(ids, logits.argmax(-1))
    assert torch.equal(generator.get_state(), state)


def test_sample_next_sampled_matches_sample_of_probs():
    logits = torch.randn(50, 8, generator=gen(11))
    params = SamplingParams(temperature=0.7, top_k=4, top_p=0.9)
    ids = sample_next(logits, params, gen(12))
    expected = sample(logits_to_probs(logits, 0.7, 4, 0.9), gen(12))
    assert torch.equal(ids, expected)


def test_sample_next_top_k_1_equals_greedy():
    logits = torch.randn(50, 8, generator=gen(13))
    ids = sample_next(logits, SamplingParams(temperature=1.3, top_k=1), gen(14))
    assert torch.equal(ids, logits.argmax(-1))
