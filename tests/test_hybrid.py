"""The hybrid proposer (n-gram where the context repeats, EAGLE elsewhere): which proposer
drafts, the head's alignment across n-gram steps, losslessness (greedy and sampled), and
one cost model per draft class."""

from __future__ import annotations

import math

import pytest
import torch

from specdec.config import SamplingParams, SpeculativeConfig
from conftest import FrozenCost

from specdec.engine.planner import CostSurface, Planner, RowPolicy
from specdec.engine.engine import Engine
from specdec.models.loader import load_model
from specdec.drafts import SequenceState
from specdec.proposers import hybrid as hybrid_module
from specdec.proposers.base import Proposer
from specdec.proposers.eagle import EagleProposer, TreeConfig
from specdec.proposers.hybrid import EAGLE_BUCKET, CopyConfidence, HybridProposer
from specdec.proposers.ngram import NgramProposer
from test_eagle import STEEP, features_for, make_head
from test_lossless import check_joint, tiny_native

REPEATING = "The cat sat on the mat. The dog sat on the log. The cat sat on the"


@pytest.fixture(scope="module")
def tiny_target(tiny_model_dir):
    return load_model(tiny_model_dir, "float32", "cpu", 512)


class Counting(Proposer):
    """Wraps a proposer and counts the drafts it made (the hybrid reads its parts' own members)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.num_proposals = 0
        self.target_hidden_layers = inner.target_hidden_layers

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def start(self, state):
        self.inner.start(state)

    def observe(self, state, result):
        self.inner.observe(state, result)

    def draft_classes(self, state):
        return self.inner.draft_classes(state)

    def class_name(self, draft_class):
        return self.inner.class_name(draft_class)

    def drafts_tree(self, draft_class):
        return self.inner.drafts_tree(draft_class)

    def propose(self, state, num_tokens, draft_class=None):
        self.num_proposals += 1
        return self.inner.propose(state, num_tokens, draft_class)


def hybrid(target, arch="eagle1", draft_vocab=None, min_match=None, tree=None, graft=True):
    head = make_head(target, arch, draft_vocab)
    ngram, eagle = Counting(NgramProposer(1, 4)), Counting(EagleProposer(head, target.model, 512, tree))
    return HybridProposer(ngram, eagle, min_match, graft), ngram, eagle


def run(target, proposer, params, k=4, prompt=REPEATING, tree_nodes=0):
    spec = SpeculativeConfig(method="hybrid" if proposer else "none", num_speculative_tokens=k, tree_nodes=tree_nodes)
    return Engine(target, proposer, spec, 512).generate(target.tokenizer.encode(prompt), params)


def state_of(token_ids):
    return SequenceState(list(token_ids), len(token_ids), SamplingParams(temperature=0), torch.Generator())


def test_options_follow_the_match_length(tiny_target):
    proposer, ngram, eagle = hybrid(tiny_target)
    cases = [
        ([5, 7, 8, 9, 1, 7, 8], (2, EAGLE_BUCKET)),  # suffix (7, 8) occurred before
        ([5, 7, 8, 9, 1, 3, 8], (EAGLE_BUCKET, 1)),  # only (8) did: either
        ([1, 2, 3, 4], (EAGLE_BUCKET,)),  # nothing did: the head
    ]
    for token_ids, options in cases:
        state = state_of(token_ids)
        proposer.ngram.start(state)  # the options read the n-gram index only
        assert proposer.draft_classes(state) == options, token_ids
    with pytest.raises(ValueError, match="not open"):
        proposer.propose(state, 2, 3)
    forced, _, _ = hybrid(tiny_target, min_match=2)  # n-gram only from 2-token matches on
    state = state_of([5, 7, 8, 9, 1, 7, 8])
    forced.ngram.start(state)
    assert forced.draft_classes(state) == (2,)


def test_planner_picks_the_better_class():
    cost = CostSurface([1.0, 1.2, 1.3, 1.4, 1.5])
    row = RowPolicy(SpeculativeConfig("hybrid", None, "auto", max_speculative_tokens=4), True)
    options, trees = (EAGLE_BUCKET, 1), [False, False]
    assert row.pick(options, trees, cost) == 0  # equal priors: the first
    for _ in range(6):  # the head's drafts fail, the 1-token matches' pass
        row.select(EAGLE_BUCKET, False)
        row.observe(3, 0)
        row.select(1, False)
        row.observe(3, 3)
    assert options[row.pick(options, trees, cost)] == 1
    for _ in range(12):
        row.select(EAGLE_BUCKET, False)
        row.observe(3, 3)
        row.select(1, False)
        row.observe(3, 0)
    assert options[row.pick(options, trees, cost)] == EAGLE_BUCKET


def test_min_match_must_be_reachable(tiny_target):
    head = make_head(tiny_target)
    eagle = EagleProposer(head, tiny_target.model, 512)
    with pytest.raises(ValueError, match="exceeds"):
        HybridProposer(NgramProposer(1, 3), eagle, min_match=5)
    with pytest.raises(ValueError, match="below"):
        HybridProposer(NgramProposer(2, 4), eagle, min_match=1)


@pytest.mark.parametrize("arch, draft_vocab", [("eagle1", None), ("eagle3", 3000)])
@pytest.mark.parametrize("k", [1, 4])
def test_hybrid_greedy_equals_plain_and_uses_both(tiny_target, arch, draft_vocab, k):
    params = SamplingParams(temperature=0, max_tokens=40, ignore_eos=True)
    plain = run(tiny_target, None, params)
    proposer, ngram, eagle = hybrid(tiny_target, arch, draft_vocab)
    result = run(tiny_target, proposer, params, k=k)
    assert result.token_ids == plain.token_ids
    assert ngram.num_proposals > 0 and eagle.num_proposals > 0
    classes = result.stats.by_class  # each draft counted under the proposer that made it
    assert classes["eagle"][0] == eagle.num_proposals
    assert sum(c[0] for name, c in classes.items() if name.startswith("ngram:")) == ngram.num_proposals


def test_stats_count_drafts_per_class():
    from specdec.engine.stats import SpecStats

    a, b = SpecStats(), SpecStats()
    a.observe(4, 4, "ngram:3")
    a.observe(2, 0, "eagle")
    a.observe(0, 0, "eagle")  # a plain step is no draft of any class
    a.observe(3, 1)  # a proposer that names no classes
    b.observe(2, 1, "eagle")
    a.merge(b)
    assert a.by_class == {"ngram:3": [1, 4, 4], "eagle": [2, 4, 1]}
    summary = a.class_summary()
    assert summary["eagle"] == {"num_drafts": 2, "share": 0.5, "acceptance_rate": 0.25, "mean_acceptance_length": 1.5}
    assert a.to_dict()["by_class"]["ngram:3"]["mean_acceptance_length"] == 5.0


def test_head_cache_stays_aligned_across_ngram_steps(tiny_target):
    """After a hybrid run, the head's cache equals a from-scratch pass over the
    pairs (f_t, token t+1): features of tokens committed by n-gram steps were fed too."""
    proposer, ngram, eagle = hybrid(tiny_target)
    params = SamplingParams(temperature=0, max_tokens=40, ignore_eos=True)
    result = run(tiny_target, proposer, params, k=3)
    assert ngram.num_proposals > 0 and eagle.num_proposals > 0
    tokens = result.prompt_ids + result.token_ids
    inner = eagle.inner
    n = inner.num_real
    assert 0 < n < len(tokens)
    feats = features_for(tiny_target, tokens[:n], inner.head.config.feature_layers)
    head = inner.head
    cache = head.new_cache(n)
    head.step(feats[None], torch.tensor([tokens[1 : n + 1]]), torch.arange(n)[None], cache)
    torch.testing.assert_close(inner.cache.k[..., :n, :], cache.k[..., :n, :], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("top_k", [0, 3])
def test_sampled_joint_matches_target(top_k):
    """Both kinds of draft occur in the first speculative step (a 2-token match after
    [.., 2, 3], a 1-token one otherwise), and the joint of the first tokens is the target's."""
    target = tiny_native(0)
    head = make_head(target)
    proposer = HybridProposer(NgramProposer(1, 2), EagleProposer(head, target.model, 64), 2)
    engine = Engine(target, proposer, SpeculativeConfig("hybrid", None, 2), 64)
    stats = check_joint(engine, target, [1, 2, 3, 1, 2, 3, 1, 2], top_k)
    assert "eagle" in stats.by_class and any(name.startswith("ngram") for name in stats.by_class)


def test_each_draft_class_gets_its_own_draft_cost():
    """An expensive draft in one class turns that class's speculation off, not the other's."""
    planner = Planner(CostSurface([1.0, 1.2, 1.3, 1.4]))
    row = RowPolicy(SpeculativeConfig("hybrid", None, "auto", max_speculative_tokens=3), True)
    row.select(0, False)
    row.observe_draft_cost(1.0)
    row.select(3, False)
    row.observe_draft_cost(0.001)
    assert row.draft_costs == {0: 1.0, 3: 0.001}
    row.select(0, False)
    assert planner.plan([row], [8]) == [0]
    row.select(3, False)
    assert planner.plan([row], [8])[0] > 0


def test_engine_keeps_draft_costs_per_class(tiny_target):
    """The engine measures draft seconds per class: EAGLE steps (EAGLE_BUCKET) have a head step
    to pay, and n-gram classes get their own entries."""
    proposer, ngram, eagle = hybrid(tiny_target)
    cost = FrozenCost([1.0, 1.1, 1.2, 1.3, 1.4, 1.5])
    spec = SpeculativeConfig(method="hybrid", num_speculative_tokens="auto", max_speculative_tokens=5)
    engine = Engine(tiny_target, proposer, spec, 512, cost)
    params = SamplingParams(temperature=0, max_tokens=40, ignore_eos=True)
    req, _ = engine.add("r", tiny_target.tokenizer.encode(REPEATING), params)
    while engine.num_running:
        engine.step()
    assert req.policy.draft_costs.get(EAGLE_BUCKET, 0) > 0
    assert any(c != EAGLE_BUCKET for c in req.policy.draft_costs)
    assert cost.draft_seconds_per_token == 0  # the calibrated surface's default is left as it was
    plain = run(tiny_target, None, params)
    assert engine.generate(tiny_target.tokenizer.encode(REPEATING), params).token_ids == plain.token_ids


# ---------------------------------------------------------------- EAGLE trees with the n-gram graft


@pytest.fixture
def count_grafts(monkeypatch):
    """Counts graft_chain calls that added nodes to the head's tree."""
    grafts = []

    def counting(tree, chain, scores):
        out = hybrid_module.graft_chain.__wrapped__(tree, chain, scores)
        grafts.append(out.num_nodes - tree.num_nodes)
        return out

    counting.__wrapped__ = hybrid_module.graft_chain
    monkeypatch.setattr(hybrid_module, "graft_chain", counting)
    return grafts


@pytest.mark.parametrize("k", [2, 5])
def test_hybrid_tree_greedy_equals_plain_and_grafts(tiny_target, count_grafts, k):
    params = SamplingParams(temperature=0, max_tokens=40, ignore_eos=True)
    plain = run(tiny_target, None, params)
    # min_match 3: 1- and 2-token matches leave EAGLE the first option, so EAGLE steps graft
    proposer, ngram, eagle = hybrid(tiny_target, min_match=3, tree=TreeConfig(top_k=3, num_nodes=6))
    result = run(tiny_target, proposer, params, k=k, tree_nodes=6)
    assert result.token_ids == plain.token_ids
    assert eagle.num_proposals > 0 and any(n > 0 for n in count_grafts)
    off, _, _ = hybrid(tiny_target, min_match=3, tree=TreeConfig(top_k=3, num_nodes=6), graft=False)
    count_grafts.clear()
    assert run(tiny_target, off, params, k=k, tree_nodes=6).token_ids == plain.token_ids
    assert count_grafts == []


@pytest.mark.parametrize("auto", [False, True])
def test_hybrid_tree_sampled_joint_matches_target(count_grafts, auto):
    """The first speculative step follows a 1-token match ([.., 4, 2]: 2 occurred before),
    so EAGLE drafts a tree and the n-gram continuation [3, 1, ..] is grafted onto it; the
    joint of the first tokens is the target's, pruned (auto) or not."""
    target = tiny_native(0)
    tree = TreeConfig(top_k=2, num_nodes=4)
    proposer = HybridProposer(NgramProposer(1, 2), EagleProposer(make_head(target), target.model, 64, tree), 3)
    spec = SpeculativeConfig("hybrid", None, "auto" if auto else 2, tree_nodes=4)
    engine = Engine(target, proposer, spec, 64, cost=FrozenCost(list(STEEP)) if auto else None)
    stats = check_joint(engine, target, [1, 2, 3, 1, 2, 3, 4, 2], top_k=0)
    # fixed K takes EAGLE (the first option) at every 1-token match; auto K picks the free
    # n-gram drafts for most of them
    assert "eagle" in stats.by_class and sum(n > 0 for n in count_grafts) > (20 if auto else 1000)


def test_copy_confidence_learns_per_match_length():
    conf = CopyConfidence(prior_strength=2.0, decay=1.0)
    assert conf.rate(1) == pytest.approx(CopyConfidence.PRIORS[1])
    assert conf.rate(3) == pytest.approx(CopyConfidence.PRIOR_LONG)
    conf.observe(1, [5, 6, 7], [5, 6, 9])  # 2 right, the third wrong: 2 of 3
    assert conf.rate(1) == pytest.approx((0.3 * 2 + 2) / (2 + 3))
    conf.observe(1, [5, 6], [5])  # the step committed one token: 1 right, nothing more seen
    assert conf.rate(1) == pytest.approx((0.3 * 2 + 3) / (2 + 4))
    conf.observe(1, [], [5])  # no draft: no evidence
    assert conf.rate(1) == pytest.approx((0.3 * 2 + 3) / (2 + 4))
    assert conf.rate(2) == pytest.approx(CopyConfidence.PRIOR_LONG)  # other lengths untouched
    scores = conf.scores(1, 3)
    assert scores == pytest.approx([math.log(conf.rate(1)) * i for i in (1, 2, 3)])
    sure = CopyConfidence(decay=0.5)
    for _ in range(50):
        sure.observe(2, [1, 2], [1, 2, 3])
    assert sure.rate(2) == pytest.approx(1 - 1e-3)  # clipped below 1: scores stay finite
    with pytest.raises(ValueError):
        CopyConfidence(decay=0.0)


def test_config_takes_trees_for_eagle_and_hybrid_only():
    assert SpeculativeConfig("hybrid", tree_nodes=16).tree_nodes == 16
    with pytest.raises(ValueError, match="eagle or hybrid"):
        SpeculativeConfig("ngram", tree_nodes=16)
