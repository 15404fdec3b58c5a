"""Losslessness end to end: speculative output is exactly the target's own.

- Greedy: for every proposer and K = 1..8, speculative token ids equal plain decoding's.
- Sampling: the joint distribution of the first three sampled tokens matches the target's
  exact distribution (computed by enumeration), by chi-square, for every proposer, with
  coupled and with rejection-sampling verification (test_coupled.py: coupled samples equal
  plain decoding's for the seed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from specdec.config import ModelConfig, SamplingParams, SpeculativeConfig
from specdec.engine.engine import Engine
from specdec.engine.stats import SpecStats
from specdec.models.llama import LlamaModel
from specdec.models.loader import LoadedModel, load_model
from specdec.proposers.draft_model import DraftModelProposer
from specdec.proposers.ngram import NgramProposer


def loaded_from(dir_path: Path) -> LoadedModel:
    return load_model(dir_path, "float32", "cpu", 512)


def greedy_ids(target, proposer, k, prompt_ids, max_tokens=40):
    spec = SpeculativeConfig(method="draft" if isinstance(proposer, DraftModelProposer) else "ngram", draft_model="x", num_speculative_tokens=k) if proposer else SpeculativeConfig()
    engine = Engine(target, proposer, spec, 512)
    params = SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True)
    return engine.generate(prompt_ids, params)


@pytest.fixture(scope="module")
def tiny_pair(tiny_model_dir, tiny_draft_dir):
    return loaded_from(tiny_model_dir), loaded_from(tiny_draft_dir)


PROMPTS = ["Hello there, how are you?", "1 2 3 1 2 3 1 2 3 1 2", "The cat sat on the mat. The cat"]


@pytest.mark.parametrize("k", range(1, 9))
def test_draft_model_greedy_equals_plain(tiny_pair, k):
    target, draft = tiny_pair
    for prompt in (PROMPTS[k % 3], PROMPTS[(k + 1) % 3]):
        ids = target.tokenizer.encode(prompt)
        plain = greedy_ids(target, None, 0, ids, max_tokens=24)
        spec = greedy_ids(target, DraftModelProposer(draft, 512), k, ids, max_tokens=24)
        assert spec.token_ids == plain.token_ids
        s = spec.stats
        assert s.num_accepted_tokens <= s.num_draft_tokens
        assert s.num_drafts > 0
        assert s.mean_acceptance_length == pytest.approx(1 + s.num_accepted_tokens / s.num_drafts)


def test_draft_model_is_exercised_both_ways(tiny_pair):
    """The perturbed draft must both agree and disagree, or the test above proves little."""
    target, draft = tiny_pair
    ids = target.tokenizer.encode(PROMPTS[0])
    stats = greedy_ids(target, DraftModelProposer(draft, 512), 4, ids, max_tokens=60).stats
    assert 0 < stats.num_accepted_tokens < stats.num_draft_tokens


def test_draft_prefill_happens_at_start_and_matches_lazy_feeding(tiny_pair):
    """start() prefills the draft with the prompt (prefill time, not drafting time); its
    first proposal then feeds only the newest token and drafts what a cold start would."""
    from specdec.drafts import SequenceState

    target, draft = tiny_pair
    prompt = target.tokenizer.encode(PROMPTS[2])
    state = SequenceState(prompt + [prompt[0]], len(prompt), SamplingParams(temperature=0), torch.Generator())
    warm = DraftModelProposer(draft, 512)
    warm.start(state)
    assert warm.cache.length == len(prompt) and warm.cached_ids == prompt
    cold = DraftModelProposer(draft, 512)  # never started: feeds everything at the first propose
    assert warm.propose(state, 4).token_ids.tolist() == cold.propose(state, 4).token_ids.tolist()


@pytest.mark.parametrize("k", [1, 3, 8])
def test_ngram_greedy_equals_plain(tiny_pair, k):
    target, _ = tiny_pair
    for prompt in PROMPTS:
        ids = target.tokenizer.encode(prompt)
        plain = greedy_ids(target, None, 0, ids, max_tokens=60)
        spec = greedy_ids(target, NgramProposer(1, 3), k, ids, max_tokens=60)
        assert spec.token_ids == plain.token_ids


def test_adaptive_k_greedy_equals_plain(tiny_pair):
    from conftest import FrozenCost

    from specdec.engine.planner import CostSurface

    target, draft = tiny_pair
    cost = CostSurface([1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7, 1.8])
    for proposer in (NgramProposer(1, 3), DraftModelProposer(draft, 512)):
        spec = SpeculativeConfig(method="ngram", num_speculative_tokens="auto")
        engine = Engine(target, proposer, spec, 512, cost=FrozenCost(list(cost.forward_seconds)))
        for prompt in PROMPTS:
            ids = target.tokenizer.encode(prompt)
            params = SamplingParams(temperature=0, max_tokens=50, ignore_eos=True)
            assert engine.generate(ids, params).token_ids == greedy_ids(target, None, 0, ids, 50).token_ids


def test_eos_and_max_tokens_truncate_a_step(tiny_pair):
    target, draft = tiny_pair
    ids = target.tokenizer.encode(PROMPTS[1])
    plain = greedy_ids(target, None, 0, ids, max_tokens=30).token_ids
    eos = plain[7]
    engine = Engine(target, DraftModelProposer(draft, 512), SpeculativeConfig("draft", "x", 8), 512)
    engine.eos_ids = {eos}
    out = engine.generate(ids, SamplingParams(temperature=0, max_tokens=30))
    assert out.token_ids == plain[: plain.index(eos) + 1]
    assert out.finish_reason == "stop"
    engine.eos_ids = set()
    out = engine.generate(ids, SamplingParams(temperature=0, max_tokens=13))
    assert out.token_ids == plain[:13] and out.finish_reason == "length"


# ---------------------------------------------------------------- distribution

VOCAB = 6
# The joint of the first three tokens: the first comes from prefill, the next two from the
# first speculative step (max_tokens 4 leaves it room for K = 2 drafts), so the test sees
# accepted, recovered and (K = 1) bonus tokens. Two tokens would leave no room to draft.
JOINT = 3


def tiny_native(seed: int, base: LlamaModel | None = None) -> LoadedModel:
    torch.manual_seed(seed)
    config = ModelConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_layers=1, num_heads=2, num_kv_heads=1, head_dim=8)
    model = LlamaModel(config, 64).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" not in name:
                p.normal_(0, 0.6)
        if base is not None:  # a draft close to, but not equal to, the target
            for p, q in zip(model.parameters(), base.parameters()):
                p.copy_(q + 0.3 * torch.randn_like(q))
    return LoadedModel(model, None, config, Path("tiny"), 0.0)


def exact_joint(target: LoadedModel, prompt: list[int], params: SamplingParams, length: int = JOINT) -> np.ndarray:
    """P(t_1 .. t_length | prompt) under the target's sampling transform, by enumeration: [V] * length."""
    from specdec.sampling import logits_to_probs

    model = target.model

    def probs(ids):
        with torch.no_grad():
            out = model(torch.tensor([ids]), torch.arange(len(ids))[None], model.new_cache(1, 64))
        return logits_to_probs(out.logits[0, -1], params.temperature, params.top_k, params.top_p).double().numpy()

    def joint(ids, depth):
        p = probs(ids)
        if depth == 1:
            return p
        return np.stack([p[a] * joint(ids + [a], depth - 1) for a in range(VOCAB)])

    return joint(prompt, length)


def sampled_joint(engine: Engine, prompt, params, num_trials: int, length: int = JOINT) -> tuple[np.ndarray, SpecStats]:
    """Counts of the first `length` sampled tokens over seeds 0..num_trials-1, and the
    merged statistics (so a test can check that drafts were made and verified at all)."""
    counts = np.zeros((VOCAB,) * length)
    stats = SpecStats()
    for seed in range(num_trials):
        params.seed = seed
        result = engine.generate(prompt, params)
        counts[tuple(result.token_ids[:length])] += 1
        stats.merge(result.stats)
    return counts, stats


def chi_square_pvalue(counts: np.ndarray, probs: np.ndarray) -> float:
    """Cells expected below 5 are pooled into one, so no count is silently dropped."""
    total = counts.sum()
    expected = probs.ravel() * total
    keep = expected >= 5
    observed = np.append(counts.ravel()[keep], counts.ravel()[~keep].sum())
    expected = np.append(expected[keep], expected[~keep].sum())
    if expected[-1] == 0:
        if observed[-1] > 0:
            return 0.0  # a token the target can never emit was emitted
        observed, expected = observed[:-1], expected[:-1]
    return chisquare(observed, expected * observed.sum() / expected.sum()).pvalue


def check_joint(engine: Engine, target: LoadedModel, prompt: list[int], top_k: int, num_trials: int = 3000) -> SpecStats:
    """The sampled joint of the first JOINT tokens is the target's (chi-square), a wrong
    distribution is rejected by the same test, and drafts were verified and accepted."""
    params = SamplingParams(temperature=1.0, top_k=top_k, max_tokens=JOINT + 1, ignore_eos=True)
    counts, stats = sampled_joint(engine, prompt, params, num_trials)
    assert stats.num_drafts > num_trials // 10, "the speculative step must draft, or the test proves nothing"
    assert 0 < stats.num_accepted_tokens < stats.num_draft_tokens
    assert chi_square_pvalue(counts, exact_joint(target, prompt, params)) > 1e-3
    # The control: the same counts against a wrong distribution must be rejected.
    wrong = exact_joint(target, prompt[:-1] + [(prompt[-1] + 1) % VOCAB], params)
    assert chi_square_pvalue(counts, wrong) < 1e-3
    return stats


# every proposer, top-k and K coupled (the default); rejection sampling at K = 2, where a
# step holds accepted, recovered and bonus tokens alike
JOINT_CASES = [(kind, top_k, k, "coupled") for kind in ("draft", "ngram") for top_k in (0, 3) for k in (1, 2)] + \
    [(kind, top_k, 2, "rejection") for kind in ("draft", "ngram") for top_k in (0, 3)]


@pytest.mark.parametrize("kind, top_k, k, sampling_verify", JOINT_CASES)
def test_sampled_joint_matches_target(kind, top_k, k, sampling_verify):
    target = tiny_native(0)
    prompt = [1, 2, 3, 1, 2, 3, 1, 2] if kind == "ngram" else [1, 4, 2]
    if kind == "draft":
        proposer = DraftModelProposer(tiny_native(1, base=target.model), 64)
    else:
        proposer = NgramProposer(1, 2)
    spec = SpeculativeConfig(kind, "x", k, sampling_verify=sampling_verify)
    check_joint(Engine(target, proposer, spec, 64), target, prompt, top_k)
