"""Coupled sampling: a seed gives plain decoding's sample, token for token, whatever drafts.

- The noise: a pure function of (seed, position, token), Gumbel-distributed.
- The pure verifier: each position is still distributed as p, and positions are independent
  (chi-square), with negative controls that must fail: noise reused across positions, and
  drafts accepted on the draft's own perturbed argmax.
- The engine: for every proposer (chains and trees, K fixed and auto, solo and in a batch)
  the seeded sampled output equals the plain engine's for that seed.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import chisquare, kstest

from conftest import FrozenCost
from specdec.config import SamplingParams, SpeculativeConfig
from specdec.engine.engine import Engine
from specdec.models.loader import load_model
from specdec.proposers.factory import build_proposers
from specdec.sampling import GumbelNoise, draw, perturbed_argmax, perturbed_scores
from specdec.verify import verify, verify_coupled, verify_greedy

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# --- the noise ----------------------------------------------------------------------------


def test_noise_is_a_pure_function_of_seed_position_and_token():
    a = GumbelNoise(7)([3, 4, 5], 1000)
    b = GumbelNoise(7)
    # any order, any batching of positions, any cache state: the same rows
    assert torch.equal(b([5], 1000)[0], a[2])
    assert torch.equal(b([3, 4], 1000), a[:2])
    for position in range(100):  # overflow the per-position cache
        b([position + 10], 1000)
    assert torch.equal(b([4], 1000)[0], a[1])
    assert not torch.equal(GumbelNoise(8)([3], 1000)[0], a[0])
    assert not torch.equal(a[0], a[1])
    # the vocabulary's prefix does not depend on its size: token v's noise is its own
    assert torch.equal(GumbelNoise(7)([3], 2000)[0, :1000], a[0])


def test_noise_is_gumbel_and_independent_across_tokens_and_positions():
    g = -GumbelNoise(123)(range(8), 4096).double().log()  # [8, 4096]; the rows hold E = exp(-g)
    assert kstest(g.flatten().numpy(), "gumbel_r").pvalue > 1e-3
    # a negative control: shifted noise is not Gumbel(0, 1)
    assert kstest((g.flatten() + 0.1).numpy(), "gumbel_r").pvalue < 1e-3
    corr = torch.corrcoef(g)  # positions against each other
    assert (corr - torch.eye(8)).abs().max() < 0.06
    seeds = torch.stack([GumbelNoise(s)([0], 4096)[0] for s in range(8)]).double().log()
    assert (torch.corrcoef(seeds) - torch.eye(8)).abs().max() < 0.06


def chi_square_pvalue(counts: np.ndarray, probs: np.ndarray) -> float:
    """Cells expected below 5 pooled; a count where the probability is 0 fails outright."""
    counts, probs = np.asarray(counts, float).ravel(), np.asarray(probs, float).ravel()
    if counts[probs == 0].sum() > 0:
        return 0.0
    expected = probs * counts.sum()
    keep = expected >= 5
    observed = np.append(counts[keep], counts[~keep].sum())
    expected = np.append(expected[keep], expected[~keep].sum())
    if expected[-1] == 0:
        observed, expected = observed[:-1], expected[:-1]
    return chisquare(observed, expected * observed.sum() / expected.sum()).pvalue


def test_perturbed_argmax_draws_from_p_with_zeros_kept():
    p = torch.tensor([0.5, 0.0, 0.3, 0.15, 0.05])
    counts = np.zeros(5)
    for seed in range(6000):
        counts[int(perturbed_argmax(p[None], GumbelNoise(seed), [11])[0])] += 1
    assert counts[1] == 0
    assert chi_square_pvalue(counts, p.numpy()) > 1e-3
    assert chi_square_pvalue(counts, np.array([0.45, 0.0, 0.35, 0.15, 0.05])) < 1e-3  # the control


# --- the pure verifier --------------------------------------------------------------------

V = 5
P = torch.tensor([[0.40, 0.25, 0.20, 0.10, 0.05],  # p at positions 0, 1, 2 (context-free)
                  [0.10, 0.50, 0.05, 0.25, 0.10],
                  [0.30, 0.30, 0.20, 0.10, 0.10]])
Q = torch.tensor([[0.10, 0.60, 0.10, 0.10, 0.10],  # the drafter's q: far from p
                  [0.50, 0.20, 0.10, 0.10, 0.10],
                  [0.20, 0.20, 0.20, 0.20, 0.20]])


class ReusedNoise(GumbelNoise):
    """A broken generator for the negative control: one noise row for every position."""

    def __call__(self, positions, vocab_size, device="cpu"):
        positions = list(positions)
        return super().__call__([0] * len(positions), vocab_size, device)


def coupled_step(seed: int, noise_class=GumbelNoise, accept_on_q: bool = False) -> list[int]:
    """One verify step, K = 2 drafts drawn from q with the request's noise; the emitted tokens
    padded with the plain draws that follow, to three positions."""
    noise = noise_class(seed)
    drafts = draw(Q[:2], torch.Generator(), noise, [0, 1])[None]  # [1, 2]
    if accept_on_q:  # the control: acceptance judged by the draft's own perturbed argmax
        result = verify_greedy(drafts, perturbed_scores(Q, noise, range(3))[None])
    else:
        result = verify_coupled(drafts, P[None], noise, 0)
    tokens = result.emitted(0)
    for position in range(len(tokens), 3):
        tokens.append(int(perturbed_argmax(P[position][None], noise, [position])[0]))
    return tokens


def sample_tokens(num: int, **kw) -> np.ndarray:
    return np.array([coupled_step(seed, **kw) for seed in range(num)])  # [num, 3]


def test_coupled_verification_emits_plain_sampling_draws():
    for seed in range(200):
        noise = GumbelNoise(seed)
        plain = perturbed_argmax(P, noise, [0, 1, 2]).tolist()
        assert coupled_step(seed) == plain
        # a draft equal to the plain draws is accepted whole, and the bonus is the next draw
        result = verify_coupled(torch.tensor([plain[:2]]), P[None], noise, 0)
        assert result.emitted(0) == plain and bool(result.bonus[0])


def test_coupled_positions_follow_p_and_are_independent():
    tokens = sample_tokens(4000)
    for position in range(3):
        counts = np.bincount(tokens[:, position], minlength=V)
        assert chi_square_pvalue(counts, P[position].numpy()) > 1e-3, position
    pairs = np.zeros((V, V))
    np.add.at(pairs, (tokens[:, 0], tokens[:, 2]), 1)
    assert chi_square_pvalue(pairs, np.outer(P[0], P[2])) > 1e-3


def test_noise_reused_across_positions_is_caught():
    """Every marginal stays p, but positions 0 and 2 share their noise: the joint test fails."""
    tokens = sample_tokens(4000, noise_class=ReusedNoise)
    pairs = np.zeros((V, V))
    np.add.at(pairs, (tokens[:, 0], tokens[:, 2]), 1)
    assert chi_square_pvalue(pairs, np.outer(P[0], P[2])) < 1e-3


def test_drafts_accepted_on_q_are_caught():
    tokens = sample_tokens(4000, accept_on_q=True)
    counts = np.bincount(tokens[:, 0], minlength=V)
    assert chi_square_pvalue(counts, P[0].numpy()) < 1e-3


def test_coupled_acceptance_meets_the_coupling_bound():
    """Daliri et al.: a drafter sharing the noise is accepted with probability at least
    (1 - TV) / (1 + TV); for a deterministic draft d it is p(d), as with rejection sampling."""
    tv = 0.5 * (P[0] - Q[0]).abs().sum().item()
    accepted = sum(coupled_step(seed)[0] == int(draw(Q[:1], torch.Generator(), GumbelNoise(seed), [0])[0])
                   for seed in range(3000)) / 3000
    assert accepted >= (1 - tv) / (1 + tv) - 0.03
    hits = sum(verify_coupled(torch.tensor([[1]]), P[None, :2], GumbelNoise(seed), 0).num_accepted.item()
               for seed in range(3000)) / 3000
    assert hits == pytest.approx(P[0, 1].item(), abs=0.03)


def test_verify_at_temperature_zero_ignores_the_noise():
    logits = torch.randn(1, 4, 50)
    drafts = logits[:, :3].argmax(-1)
    noisy = verify(drafts, None, logits, SamplingParams(temperature=0), torch.Generator(), GumbelNoise(1), 9)
    assert noisy.emitted(0) == logits[0].argmax(-1).tolist()


# --- the engine ---------------------------------------------------------------------------

PROMPTS = [
    "the cat sat on the mat. the cat sat on the mat. the cat",
    "1 2 3 4 1 2 3 4 1 2",
]
# a tiny random model's p is nearly flat over 49152 tokens: top-k (or top-p) concentrates it,
# so that drafts are accepted and rejected both
PARAMS = [SamplingParams(temperature=1.0, top_k=3, max_tokens=24, ignore_eos=True, seed=7),
          SamplingParams(temperature=0.7, top_p=0.9, top_k=5, max_tokens=24, ignore_eos=True, seed=2**63 + 5)]


@pytest.fixture(scope="module")
def target(tiny_model_dir):
    return load_model(str(tiny_model_dir), "float32", "cpu", 256)


@pytest.fixture(scope="module")
def draft(tiny_draft_dir):
    return load_model(str(tiny_draft_dir), "float32", "cpu", 256)


@pytest.fixture(scope="module")
def plain(target):
    """The plain engine's seeded samples, per (prompt, params)."""
    engine = Engine(target, None, SpeculativeConfig(), 256)
    return {(i, j): engine.generate(target.tokenizer.encode(p), params).token_ids
            for i, p in enumerate(PROMPTS) for j, params in enumerate(PARAMS)}


CASES = [  # method, K, tree nodes
    ("ngram", 3, 0), ("ngram", "auto", 0), ("draft", 2, 0), ("draft", "auto", 0),
    ("eagle", 3, 0), ("eagle", 3, 8), ("eagle", "auto", 8), ("hybrid", 3, 0), ("hybrid", "auto", 8),
]


def engine_for(target, draft, method, k, tree_nodes, rows, monkeypatch, sampling_verify="coupled") -> Engine:
    from test_eagle import make_head

    from specdec.proposers import factory

    head = make_head(target)
    monkeypatch.setattr(factory, "build_eagle_head", lambda spec, target, dtype: head)
    spec = SpeculativeConfig(method=method, draft_model="tiny" if method == "draft" else None,
                             num_speculative_tokens=k, tree_nodes=tree_nodes, sampling_verify=sampling_verify,
                             prune=False)  # a random head's own confidence would rightly cut every draft
    proposers = build_proposers(spec, target, "float32", "cpu", 256, rows, draft=draft)
    cost = FrozenCost([1.0 + 0.002 * n for n in range(1, 80)])  # memory-bound: drafts pay
    return Engine(target, proposers, spec, 256, cost)


@pytest.mark.parametrize("method, k, tree_nodes", CASES)
def test_seeded_samples_equal_plain_solo(target, draft, plain, method, k, tree_nodes, monkeypatch):
    engine = engine_for(target, draft, method, k, tree_nodes, 1, monkeypatch)
    for (i, j), ref in plain.items():
        got = engine.generate(target.tokenizer.encode(PROMPTS[i]), PARAMS[j]).token_ids
        assert got == ref, (PROMPTS[i], PARAMS[j])
    assert engine.stats.num_draft_tokens > 0
    if method in ("ngram", "draft"):  # a random EAGLE head is rarely right: only these must hit
        assert 0 < engine.stats.num_accepted_tokens < engine.stats.num_draft_tokens


@pytest.mark.parametrize("method, k, tree_nodes", [c for c in CASES if c[0] != "draft"])
def test_seeded_samples_equal_plain_in_a_batch(target, draft, plain, method, k, tree_nodes, monkeypatch):
    engine = engine_for(target, draft, method, k, tree_nodes, 3, monkeypatch)
    keys = list(plain)
    prompts = [target.tokenizer.encode(PROMPTS[i]) for i, _ in keys]
    results = engine.generate_batch(prompts, [PARAMS[j] for _, j in keys])
    for key, result in zip(keys, results):
        assert result.token_ids == plain[key], key
    assert engine.stats.num_draft_tokens > 0


def test_rejection_sampling_stays_available_and_differs(target, draft, plain, monkeypatch):
    """--sampling-verify rejection: exact in distribution (test_lossless.py), but its sample
    moves with the drafts; the same seed gives another text than plain's here."""
    engine = engine_for(target, draft, "ngram", 3, 0, 1, monkeypatch, sampling_verify="rejection")
    got = [engine.generate(target.tokenizer.encode(PROMPTS[i]), PARAMS[j]).token_ids for i, j in plain]
    assert got != list(plain.values())
    assert engine.generate(target.tokenizer.encode(PROMPTS[0]), PARAMS[0]).token_ids == got[0]  # still seeded


def test_llm_api_takes_the_sampling_verifier(tiny_model_dir):
    """The Python API: coupled by default (a seed gives plain's sample), rejection on request."""
    from specdec import LLM

    params = SamplingParams(temperature=1.0, top_k=3, max_tokens=12, seed=5, ignore_eos=True)
    plain = LLM(str(tiny_model_dir), max_model_len=256, max_num_seqs=1)
    spec = LLM(str(tiny_model_dir), speculative_method="ngram", num_speculative_tokens=3, max_model_len=256,
               max_num_seqs=1)
    rejection = LLM(str(tiny_model_dir), speculative_method="ngram", max_model_len=256, max_num_seqs=1,
                    sampling_verify="rejection")
    assert spec.spec_config.sampling_verify == "coupled" and rejection.spec_config.sampling_verify == "rejection"
    [a], [b] = plain.generate(PROMPTS[0], params, use_tqdm=False), spec.generate(PROMPTS[0], params, use_tqdm=False)
    assert a.outputs[0].token_ids == b.outputs[0].token_ids
