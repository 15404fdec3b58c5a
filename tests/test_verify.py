"""Tests for specdec.verify: exact greedy tables, forced stochastic cases, invariants under
hypothesis, and chi-square checks that the emitted tokens follow the target p."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare

from specdec.config import SamplingParams
from specdec.sampling import logits_to_probs
from specdec.verify import VerifyResult, verify, verify_greedy, verify_stochastic

P_VALUE_MIN = 1e-3
NUM_TRIALS = 20_000


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def logits_with_argmax(target_ids: list[list[int]], vocab_size: int = 10) -> torch.Tensor:
    """[B, K+1, V] logits whose argmax at each position is target_ids[b][i]."""
    ids = torch.tensor(target_ids)  # [B, K+1]
    logits = torch.randn(*ids.shape, vocab_size, generator=gen(0))  # [B, K+1, V], |x| < ~5
    return logits.scatter(-1, ids[..., None], 10.0)


def random_probs(generator: torch.Generator, *shape: int) -> torch.Tensor:
    """Dirichlet(1) rows, float64."""
    e = -torch.rand(*shape, generator=generator, dtype=torch.float64).log()
    return e / e.sum(-1, keepdim=True)


def draw_from(probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One token per row of probs [..., V] -> [...]."""
    flat = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=generator)
    return flat.view(probs.shape[:-1])


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


def expected_num_accepted(accept_rates: torch.Tensor) -> torch.Tensor:
    """P(num_accepted = n), n = 0..K, for independent per-position acceptance rates [K]."""
    num_draft = accept_rates.numel()
    reach = torch.cat([torch.ones(1, dtype=torch.float64), accept_rates.double().cumprod(0)])
    stop = torch.cat([1 - accept_rates.double(), torch.ones(1, dtype=torch.float64)])
    assert reach.numel() == num_draft + 1
    return reach * stop


def assert_positions_follow_p(result: VerifyResult, target_probs: torch.Tensor) -> None:
    """For each position j, the token emitted there (rows that reach j) ~ target_probs[j]."""
    for j in range(target_probs.shape[0]):
        reached = result.num_accepted >= j
        assert reached.sum() >= 100, f"only {int(reached.sum())} rows reach position {j}"
        pvalue = chi2_pvalue(result.output_ids[reached, j], target_probs[j])
        assert pvalue > P_VALUE_MIN, f"position {j}: p-value {pvalue:.2e}"


def assert_invariants(result: VerifyResult, draft_ids, target_probs) -> None:
    batch_size, num_draft = draft_ids.shape
    vocab_size = target_probs.shape[-1]
    assert result.output_ids.shape == (batch_size, num_draft + 1)
    assert result.output_ids.dtype == torch.int64 and result.num_accepted.dtype == torch.int64
    assert result.num_accepted.shape == result.bonus.shape == (batch_size,)
    assert torch.equal(result.bonus, result.num_accepted == num_draft)
    assert torch.equal(result.num_emitted, result.num_accepted + 1)
    for b in range(batch_size):
        n = int(result.num_accepted[b])
        row = result.output_ids[b]
        assert 0 <= n <= num_draft
        assert row[:n].tolist() == draft_ids[b, :n].tolist(), "accepted prefix must be the draft"
        assert 0 <= int(row[n]) < vocab_size
        assert (row[n + 1 :] == -1).all(), "padding after the emitted tokens"
        assert result.emitted(b) == row[: n + 1].tolist()
        for i in range(n + 1):
            assert target_probs[b, i, row[i]] > 0, "every emitted token must have p > 0"
        if n < num_draft:
            assert int(row[n]) != int(draft_ids[b, n]), "recovered token repeats the rejected draft"


# ---------------------------------------------------------------- greedy: exact tables


@pytest.mark.parametrize(
    "draft, target, expected_ids, expected_accepted",
    [
        ([[1, 2, 3]], [[1, 2, 3, 4]], [[1, 2, 3, 4]], [3]),  # perfect match + bonus
        ([[5, 2, 3]], [[1, 2, 3, 4]], [[1, -1, -1, -1]], [0]),  # mismatch at position 0
        ([[1, 2, 7, 4]], [[1, 2, 3, 4, 5]], [[1, 2, 3, -1, -1]], [2]),  # middle mismatch
        ([[1, 2, 3, 9]], [[1, 2, 3, 4, 5]], [[1, 2, 3, 4, -1]], [3]),  # last draft rejected
        ([[6]], [[6, 8]], [[6, 8]], [1]),  # K = 1 accepted
        ([[6]], [[7, 8]], [[7, -1]], [0]),  # K = 1 rejected
        ([[]], [[4]], [[4]], [0]),  # K = 0: plain decode step
        (
            [[1, 2, 3], [1, 9, 3], [0, 2, 3]],  # ragged batch: 3, 1, 0 accepted
            [[1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 4]],
            [[1, 2, 3, 4], [1, 2, -1, -1], [1, -1, -1, -1]],
            [3, 1, 0],
        ),
        ([[2, 2, 2]], [[2, 5, 2, 2]], [[2, 5, -1, -1]], [1]),  # a later match doesn't count
    ],
)
def test_verify_greedy_table(draft, target, expected_ids, expected_accepted):
    draft_ids = torch.tensor(draft, dtype=torch.long).reshape(len(draft), -1)
    result = verify_greedy(draft_ids, logits_with_argmax(target))
    assert result.output_ids.tolist() == expected_ids
    assert result.num_accepted.tolist() == expected_accepted
    assert result.bonus.tolist() == [n == draft_ids.shape[1] for n in expected_accepted]
    assert result.num_emitted.tolist() == [n + 1 for n in expected_accepted]
    assert result.emitted(0) == [t for t in expected_ids[0] if t != -1]


def test_verify_dispatches_to_greedy_at_temperature_zero():
    draft_ids = torch.tensor([[1, 2, 7], [1, 2, 3]])
    logits = logits_with_argmax([[1, 2, 3, 4], [1, 2, 3, 4]])
    generator = gen(0)
    state = generator.get_state()
    result = verify(draft_ids, None, logits, SamplingParams(temperature=0.0), generator)
    assert result.output_ids.tolist() == [[1, 2, 3, -1], [1, 2, 3, 4]]
    assert torch.equal(generator.get_state(), state), "greedy must not consume randomness"


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    batch_size=st.integers(1, 3),
    num_draft=st.integers(0, 6),
    vocab_size=st.integers(2, 12),
)
def test_verify_greedy_matches_a_reference_loop(seed, batch_size, num_draft, vocab_size):
    g = gen(seed)
    logits = torch.randint(0, 3, (batch_size, num_draft + 1, vocab_size), generator=g).float()
    target_ids = logits.argmax(-1)  # [B, K+1]
    draft_ids = target_ids[:, :num_draft].clone()
    corrupt = torch.rand(batch_size, num_draft, generator=g) < 0.3
    draft_ids[corrupt] = torch.randint(0, vocab_size, (int(corrupt.sum()),), generator=g)
    result = verify_greedy(draft_ids, logits)
    for b in range(batch_size):
        n = 0
        while n < num_draft and draft_ids[b, n] == target_ids[b, n]:
            n += 1
        assert result.emitted(b) == draft_ids[b, :n].tolist() + [int(target_ids[b, n])]
    assert_invariants(result, draft_ids, F.one_hot(target_ids, vocab_size))


# ---------------------------------------------------------------- stochastic: forced cases


@pytest.mark.parametrize("seed", range(5))
def test_p_equal_q_accepts_every_draft(seed):
    g = gen(seed)
    q = random_probs(g, 50, 4, 7)  # [B, K, V]
    p = torch.cat([q, random_probs(g, 50, 1, 7)], dim=1)  # [B, K+1, V], p[:, :K] == q
    draft_ids = draw_from(q, g)
    result = verify_stochastic(draft_ids, q, p, g)
    assert (result.num_accepted == 4).all() and result.bonus.all()
    assert_invariants(result, draft_ids, p)


@pytest.mark.parametrize("seed", range(5))
def test_p_zero_at_the_draft_rejects_there_and_recovers_another_token(seed):
    g = gen(seed)
    q = random_probs(g, 50, 4, 7)
    p = torch.cat([q, random_probs(g, 50, 1, 7)], dim=1).clone()
    draft_ids = draw_from(q, g)
    rows = torch.arange(50)
    p[rows, 2, draft_ids[:, 2]] = 0.0  # the target never emits draft 2
    p[:, 2] /= p[:, 2].sum(-1, keepdim=True)
    result = verify_stochastic(draft_ids, q, p, g)
    assert (result.num_accepted == 2).all()
    assert (result.output_ids[:, 2] != draft_ids[:, 2]).all()
    assert_invariants(result, draft_ids, p)


def test_q_zero_where_p_positive_accepts():
    g = gen(1)
    p = random_probs(g, 40, 4, 6)
    draft_ids = torch.randint(0, 6, (40, 3), generator=g)
    q = random_probs(g, 40, 3, 6).scatter(-1, draft_ids[..., None], 0.0)  # q(x) = 0 < p(x)
    result = verify_stochastic(draft_ids, q, p, g)
    assert (result.num_accepted == 3).all()


def test_deterministic_draft_with_p_one_accepts_and_p_zero_rejects():
    target_ids = torch.tensor([[3, 1, 4, 1]])  # [1, K+1]
    p = F.one_hot(target_ids, 6).double()  # [1, K+1, V]
    result = verify_stochastic(torch.tensor([[3, 1, 4]]), None, p, gen(0))
    assert result.output_ids.tolist() == [[3, 1, 4, 1]] and result.bonus.tolist() == [True]
    result = verify_stochastic(torch.tensor([[3, 5, 4]]), None, p, gen(0))
    assert result.output_ids.tolist() == [[3, 1, -1, -1]]


def test_empty_residual_falls_back_to_p():
    # p == q at position 0 but the draft token has p = q = 0: rejected, and max(p - q, 0) = 0.
    p = torch.tensor([[[0.0, 0.0, 0.7, 0.3], [0.25, 0.25, 0.25, 0.25]]]).repeat(500, 1, 1)
    q = p[:, :1].clone()
    draft_ids = torch.zeros(500, 1, dtype=torch.long)
    result = verify_stochastic(draft_ids, q, p, gen(3))
    assert (result.num_accepted == 0).all()
    assert chi2_pvalue(result.output_ids[:, 0], p[0, 0]) > P_VALUE_MIN


def test_k_zero_is_a_plain_decode_step():
    p = torch.tensor([[[0.0, 1.0, 0.0]], [[0.0, 0.0, 1.0]]])  # [B, 1, V]
    for draft_probs in (None, torch.zeros(2, 0, 3)):
        result = verify_stochastic(torch.zeros(2, 0, dtype=torch.long), draft_probs, p, gen(0))
        assert result.output_ids.tolist() == [[1], [2]]
        assert result.num_accepted.tolist() == [0, 0] and result.bonus.all()
    logits = torch.tensor([[[0.0, 9.0, 0.0]]])
    params = SamplingParams(temperature=0.8, top_k=1)
    result = verify(torch.zeros(1, 0, dtype=torch.long), None, logits, params, gen(0))
    assert result.emitted(0) == [1]


def test_bad_shapes_raise_value_error():
    with pytest.raises(ValueError, match="target_probs must be"):
        verify_stochastic(torch.zeros(2, 3, dtype=torch.long), None, torch.ones(2, 3, 5), gen(0))
    with pytest.raises(ValueError, match="draft_probs must be"):
        verify_stochastic(
            torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 3, 4), torch.ones(2, 4, 5), gen(0)
        )
    with pytest.raises(ValueError, match="draft_ids must be"):
        verify_greedy(torch.zeros(3, dtype=torch.long), torch.ones(1, 4, 5))
    with pytest.raises(ValueError, match="integer"):
        verify_greedy(torch.zeros(1, 3), torch.ones(1, 4, 5))


# ---------------------------------------------------------------- stochastic: determinism


def test_same_seed_same_result_and_global_rng_is_ignored():
    g = gen(0)
    p, q = random_probs(g, 200, 4, 8), random_probs(g, 200, 3, 8)
    draft_ids = draw_from(q, g)
    torch.manual_seed(1)
    first = verify_stochastic(draft_ids, q, p, gen(42))
    torch.manual_seed(2)
    second = verify_stochastic(draft_ids, q, p, gen(42))
    assert torch.equal(first.output_ids, second.output_ids)
    other = verify_stochastic(draft_ids, q, p, gen(43))
    assert not torch.equal(first.output_ids, other.output_ids), "the generator must be used"


def test_deterministic_draft_is_the_one_hot_q_code_path():
    g = gen(5)
    p = random_probs(g, 300, 4, 6)
    draft_ids = torch.randint(0, 6, (300, 3), generator=g)
    one_hot = F.one_hot(draft_ids, 6).double()
    implicit = verify_stochastic(draft_ids, None, p, gen(9))
    explicit = verify_stochastic(draft_ids, one_hot, p, gen(9))
    assert torch.equal(implicit.output_ids, explicit.output_ids)


# ---------------------------------------------------------------- stochastic: invariants


@st.composite
def stochastic_cases(draw):
    batch_size = draw(st.integers(1, 3))
    num_draft = draw(st.integers(0, 6))
    vocab_size = draw(st.integers(2, 12))
    g = gen(draw(st.integers(0, 2**31 - 1)))
    p = random_probs(g, batch_size, num_draft + 1, vocab_size)
    p_zero = torch.rand(p.shape, generator=g) < draw(st.sampled_from([0.0, 0.3, 0.7]))
    p_zero &= p < p.amax(-1, keepdim=True)  # keep each row's top token
    p = p.masked_fill(p_zero, 0.0)
    p = p / p.sum(-1, keepdim=True)
    kind = draw(st.sampled_from(["q", "q_equals_p", "q_with_zeros", "deterministic"]))
    if kind == "q_equals_p":
        q = p[:, :num_draft].clone()
    else:
        q = random_probs(g, batch_size, num_draft, vocab_size)
    if kind == "q_with_zeros":  # q = 0 where p > 0, and drafts outside q's support
        q = q.masked_fill(torch.rand(q.shape, generator=g) < 0.5, 0.0)
        q[..., 0] += 1e-3
        q = q / q.sum(-1, keepdim=True)
        draft_ids = torch.randint(0, vocab_size, (batch_size, num_draft), generator=g)
    elif kind == "deterministic":
        draft_ids = torch.randint(0, vocab_size, (batch_size, num_draft), generator=g)
        q = None
    else:
        draft_ids = draw_from(q, g) if num_draft else torch.zeros(batch_size, 0, dtype=torch.long)
    return kind, draft_ids, q, p, g


@settings(max_examples=150, deadline=None)
@given(stochastic_cases())
def test_verify_stochastic_invariants(case):
    kind, draft_ids, q, p, g = case
    result = verify_stochastic(draft_ids, q, p, g)
    assert_invariants(result, draft_ids, p)
    if kind == "q_equals_p":
        assert (result.num_accepted == draft_ids.shape[1]).all()


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    batch_size=st.integers(1, 3),
    num_draft=st.integers(0, 6),
    vocab_size=st.integers(2, 12),
    temperature=st.sampled_from([0.5, 0.7, 1.0, 1.5]),
    deterministic=st.booleans(),
)
def test_top_k_1_sampling_equals_greedy_verification(
    seed, batch_size, num_draft, vocab_size, temperature, deterministic
):
    g = gen(seed)
    shape = (batch_size, num_draft + 1, vocab_size)
    target_logits = torch.randint(0, 3, shape, generator=g).float()  # ties on purpose
    params = SamplingParams(temperature=temperature, top_k=1)
    draft_logits = torch.randint(0, 3, (batch_size, num_draft, vocab_size), generator=g).float()
    if deterministic:
        draft_ids = torch.randint(0, vocab_size, (batch_size, num_draft), generator=g)
        q = None
    else:
        q = logits_to_probs(draft_logits, temperature, top_k=1)
        draft_ids = draft_logits.argmax(-1)
    sampled = verify(draft_ids, q, target_logits, params, g)
    expected = verify_greedy(draft_ids, target_logits)
    assert torch.equal(sampled.output_ids, expected.output_ids)
    assert torch.equal(sampled.num_accepted, expected.num_accepted)


# ---------------------------------------------------------------- distribution (chi-square)


def close_pair(g: torch.Generator, num_draft: int, vocab_size: int):
    """p [K+1, V] and a q [K, V] near it, so that acceptance is common but not certain."""
    p = random_probs(g, num_draft + 1, vocab_size)
    q = 0.5 * p[:num_draft] + 0.5 * random_probs(g, num_draft, vocab_size)
    return p, q


@pytest.mark.parametrize("num_draft, vocab_size", [(1, 6), (2, 8), (3, 10)])
def test_emitted_tokens_follow_p_and_acceptance_follows_the_closed_form(num_draft, vocab_size):
    g = gen(100 + num_draft)
    p, q = close_pair(g, num_draft, vocab_size)
    draft_ids = draw_from(q.expand(NUM_TRIALS, -1, -1), g)  # [N, K], x_i ~ q_i
    result = verify_stochastic(
        draft_ids, q.expand(NUM_TRIALS, -1, -1), p.expand(NUM_TRIALS, -1, -1), g
    )
    assert_positions_follow_p(result, p)
    # Without this a verifier that rejects everything and samples from p would pass.
    accept_rates = torch.minimum(p[:num_draft], q).sum(-1)  # [K], sum_x min(p, q)
    assert chi2_pvalue(result.num_accepted, expected_num_accepted(accept_rates)) > P_VALUE_MIN


def test_joint_of_two_tokens_with_prefix_dependent_p_and_q():
    """p and q at position 1 depend on the token at position 0, as in a real model. Rows that
    stop after one token finish the second with a plain target sample (the next step)."""
    g = gen(7)
    n, vocab_size = NUM_TRIALS, 5
    floor = 0.05  # every joint cell has >= 0.0025 * N = 50 expected counts

    def probs(*shape):
        return floor + (1 - floor * vocab_size) * random_probs(g, *shape)

    p0, q0 = probs(vocab_size), probs(vocab_size)
    p1_given, p2_given, q1_given = (probs(vocab_size, vocab_size) for _ in range(3))
    x0 = draw_from(q0.expand(n, -1), g)  # [N]
    x1 = draw_from(q1_given[x0], g)  # [N]
    draft_ids = torch.stack([x0, x1], dim=1)  # [N, 2]
    q = torch.stack([q0.expand(n, -1), q1_given[x0]], dim=1)  # [N, 2, V]
    p = torch.stack([p0.expand(n, -1), p1_given[x0], p2_given[x1]], dim=1)  # [N, 3, V]
    result = verify_stochastic(draft_ids, q, p, g)

    first = result.output_ids[:, 0]
    next_step = draw_from(p1_given[first], g)
    second = torch.where(result.num_accepted >= 1, result.output_ids[:, 1], next_step)
    joint = p0[:, None] * p1_given  # [V, V]
    assert chi2_pvalue(first * vocab_size + second, joint.flatten()) > P_VALUE_MIN


@pytest.mark.parametrize(
    "num_draft, top_k, top_p, temperature",
    [(2, 3, 1.0, 1.0), (3, 0, 0.8, 0.7), (2, 5, 0.85, 1.3), (3, 2, 1.0, 1.0)],
)
def test_truncated_p_and_q_through_verify(num_draft, top_k, top_p, temperature):
    g = gen(200 + num_draft + top_k)
    vocab_size = 10
    target_logits = torch.randn(num_draft + 1, vocab_size, generator=g) * 1.5  # [K+1, V]
    draft_logits = target_logits[:num_draft] + torch.randn(num_draft, vocab_size, generator=g)
    params = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p)
    p = logits_to_probs(target_logits, temperature, top_k, top_p)  # [K+1, V]
    q = logits_to_probs(draft_logits, temperature, top_k, top_p)  # [K, V]
    # the case must exercise differing supports: q > 0 = p somewhere, and p > 0 = q
    assert ((q > 0) & (p[:num_draft] == 0)).any() and ((q == 0) & (p[:num_draft] > 0)).any()
    q_rows = q.expand(NUM_TRIALS, -1, -1)
    draft_ids = draw_from(q_rows, g)
    result = verify(draft_ids, q_rows, target_logits.expand(NUM_TRIALS, -1, -1), params, g)
    assert_positions_follow_p(result, p)
    accept_rates = torch.minimum(p[:num_draft], q).sum(-1)
    assert chi2_pvalue(result.num_accepted, expected_num_accepted(accept_rates)) > P_VALUE_MIN


def test_deterministic_draft_follows_p():
    g = gen(300)
    num_draft, vocab_size = 2, 6
    logits = torch.randn(num_draft + 1, vocab_size, generator=g, dtype=torch.float64) * 2
    p = torch.softmax(logits, -1)
    draft_source = 0.5 * p[:num_draft] + 0.5 * random_probs(g, num_draft, vocab_size)
    draft_ids = draw_from(draft_source.expand(NUM_TRIALS, -1, -1), g)  # q is one-hot per row
    result = verify_stochastic(draft_ids, None, p.expand(NUM_TRIALS, -1, -1), g)
    assert_positions_follow_p(result, p)
    accept_rates = (draft_source * p[:num_draft]).sum(-1)  # E_x[p(x)]
    assert chi2_pvalue(result.num_accepted, expected_num_accepted(accept_rates)) > P_VALUE_MIN


def test_negative_controls_wrong_samplers_are_rejected():
    """The chi-square check can fail: sampling from q, or resampling from p instead of the
    residual after a rejection, both give a first token that is not ~ p."""
    g = gen(101)
    p, q = close_pair(g, 1, 6)
    draft_ids = draw_from(q.expand(NUM_TRIALS, -1, -1), g)  # [N, 1]
    assert chi2_pvalue(draft_ids[:, 0], p[0]) < P_VALUE_MIN

    x = draft_ids[:, 0]
    accept_prob = (p[0, x] / q[0, x]).clamp(max=1.0)
    accepted = torch.rand(NUM_TRIALS, generator=g, dtype=torch.float64) < accept_prob
    naive = torch.where(accepted, x, draw_from(p[0].expand(NUM_TRIALS, -1), g))
    assert chi2_pvalue(naive, p[0]) < P_VALUE_MIN

    result = verify_stochastic(
        draft_ids, q.expand(NUM_TRIALS, -1, -1), p.expand(NUM_TRIALS, -1, -1), g
    )
    assert chi2_pvalue(result.output_ids[:, 0], p[0]) > P_VALUE_MIN
