"""Tree drafts: topology tables, greedy and stochastic tree verification (chi-square, with
a negative control), and the engine's tree path against plain greedy decoding."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import chisquare

from specdec.config import SamplingParams, SpeculativeConfig
from specdec.engine.engine import Engine
from specdec.models.loader import load_model
from specdec.drafts import DraftProposal
from specdec.drafts import DraftTree, tree_attention_mask, tree_depths, tree_paths
from specdec.proposers.base import Proposer
from specdec.proposers.tree import graft_chain
from specdec.verify import verify_greedy
from specdec.verify_tree import verify_tree, verify_tree_greedy, verify_tree_stochastic

P_VALUE_MIN = 1e-3
NUM_TRIALS = 20_000

# root r; a, b under r; c, d under a; e under b
PARENTS = [-1, 0, 0, 1, 1, 2]


# ---------------------------------------------------------------- topology


def test_depths_mask_and_paths_of_a_hand_written_tree():
    assert tree_depths(PARENTS).tolist() == [0, 1, 1, 2, 2, 2]
    expected = [
        [1, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0],
        [1, 0, 1, 0, 0, 0],
        [1, 1, 0, 1, 0, 0],
        [1, 1, 0, 0, 1, 0],
        [1, 0, 1, 0, 0, 1],
    ]
    assert tree_attention_mask(PARENTS).int().tolist() == expected
    assert tree_paths(PARENTS) == [[0, 1, 3], [0, 1, 4], [0, 2, 5]]


def test_chain_tree_is_causal_and_root_only_tree_is_one_path():
    chain = [-1, 0, 1, 2]
    assert torch.equal(tree_attention_mask(chain), torch.ones(4, 4, dtype=torch.bool).tril())
    assert tree_depths(chain).tolist() == [0, 1, 2, 3]
    assert tree_paths(chain) == [[0, 1, 2, 3]]
    assert tree_paths([-1]) == [[0]]


def test_deep_unbalanced_tree():
    parents = [-1, 0, 1, 0, 2, 4, 3, 0]  # r-a-b-d-e, r-c-f, r-g
    assert tree_depths(parents).tolist() == [0, 1, 2, 1, 3, 4, 2, 1]
    assert tree_paths(parents) == [[0, 1, 2, 4, 5], [0, 3, 6], [0, 7]]
    assert tree_attention_mask(parents)[5].nonzero().flatten().tolist() == [0, 1, 2, 4, 5]


@pytest.mark.parametrize("parents", [[0, 0], [-1, 1], [-1, 0, 3, 1], [], [-1, -1]])
def test_invalid_parents_raise(parents):
    with pytest.raises(ValueError):
        tree_depths(parents)


def test_prefix_is_a_tree_and_shapes_are_checked():
    tree = DraftTree(torch.arange(6), torch.tensor(PARENTS))
    small = tree.prefix(3)
    assert small.parents.tolist() == [-1, 0, 0] and small.token_ids.tolist() == [0, 1, 2]
    assert tree.children() == [[1, 2], [3, 4], [5], [], [], []]
    with pytest.raises(ValueError):
        DraftTree(torch.arange(5), torch.tensor(PARENTS))


# ---------------------------------------------------------------- greedy verification


def logits_for(argmax_per_node: list[int], vocab_size: int = 10) -> torch.Tensor:
    logits = torch.randn(len(argmax_per_node), vocab_size, generator=torch.Generator().manual_seed(0))
    return logits.scatter(-1, torch.tensor(argmax_per_node)[:, None], 10.0)


#               node:  r  a  b  c  d  e
TOKENS = torch.tensor([9, 1, 2, 3, 4, 5])


@pytest.mark.parametrize(
    "argmax, path, emitted, bonus",
    [
        ([1, 4, 0, 0, 7, 0], [0, 1, 4], [1, 4, 7], True),  # r->a->d, d is a leaf: bonus 7
        ([2, 0, 5, 0, 0, 6], [0, 2, 5], [2, 5, 6], True),  # the second child b, then e
        ([1, 8, 0, 0, 0, 0], [0, 1], [1, 8], False),  # a accepted, no child matches 8: recovered
        ([7, 0, 0, 0, 0, 0], [0], [7], False),  # nothing accepted
        ([2, 3, 9, 0, 0, 0], [0, 2], [2, 9], False),  # 3 is a child of a, not of b
    ],
)
def test_greedy_tree_table(argmax, path, emitted, bonus):
    tree = DraftTree(TOKENS, torch.tensor(PARENTS))
    result = verify_tree_greedy(tree, logits_for(argmax))
    assert (result.path, result.token_ids, result.bonus) == (path, emitted, bonus)
    assert result.num_accepted == len(path) - 1
    chain = result.to_verify_result()
    assert chain.output_ids[0].tolist() == emitted and int(chain.num_accepted[0]) == len(path) - 1


def test_greedy_on_a_chain_tree_equals_chain_verification():
    g = torch.Generator().manual_seed(1)
    for _ in range(50):
        k = int(torch.randint(0, 5, (), generator=g))
        logits = torch.randn(k + 1, 6, generator=g)
        target = logits.argmax(-1)
        draft = torch.where(torch.rand(k, generator=g) < 0.7, target[:k], torch.randint(0, 6, (k,), generator=g))
        tree = DraftTree(torch.cat([torch.tensor([0]), draft]), torch.arange(-1, k))
        expected = verify_greedy(draft[None], logits[None])
        got = verify_tree(tree, logits, SamplingParams(temperature=0), g)
        assert got.token_ids == expected.emitted(0)


def test_bad_logits_shape_raises():
    tree = DraftTree(TOKENS, torch.tensor(PARENTS))
    with pytest.raises(ValueError):
        verify_tree_greedy(tree, torch.zeros(5, 10))


def test_graft_chain_merges_shared_prefixes_and_reranks():
    """The docstring's example: r -> a, r -> b, a -> c; the chain [a, d] follows a (raising
    its score), hangs d under it, and the nodes come back in score order."""
    a, b, c, d, r = 11, 12, 13, 14, 10
    tree = DraftTree(torch.tensor([r, a, c, b]), torch.tensor([-1, 0, 1, 0]),  # rank order, as EAGLE's
                     scores=torch.tensor([0.0, -1.0, -1.5, -2.0]))
    out = graft_chain(tree, [a, d], [-0.5, -1.2])
    assert out.token_ids.tolist() == [r, a, d, c, b]
    assert out.parents.tolist() == [-1, 0, 1, 1, 0]
    assert out.scores.tolist() == pytest.approx([0.0, -0.5, -1.2, -1.5, -2.0])
    assert out.probs is None
    # a chain the tree already holds adds nothing; one that leaves at the root adds a branch
    same = graft_chain(tree, [a, c], [-3.0, -4.0])
    assert same.token_ids.tolist() == tree.token_ids.tolist() and same.scores.tolist() == tree.scores.tolist()
    fresh = graft_chain(tree, [d, d, d], [-0.1, -0.2, -0.3])
    assert fresh.token_ids.tolist() == [r, d, d, d, a, c, b] and fresh.parents.tolist() == [-1, 0, 1, 2, 0, 4, 0]
    assert graft_chain(tree, [], []).token_ids.tolist() == tree.token_ids.tolist()


def test_graft_chain_keeps_every_prefix_a_tree_with_distinct_siblings():
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        n = int(torch.randint(2, 12, (), generator=g))
        parents = [-1] + [int(torch.randint(0, i, (), generator=g)) for i in range(1, n)]
        children = [[] for _ in parents]
        tokens, scores = [0], [0.0]
        for i, p in enumerate(parents[1:], 1):  # distinct siblings, a child below its parent
            token = 1 + int(torch.randint(0, 4, (), generator=g))
            while token in [tokens[c] for c in children[p]]:
                token += 4
            children[p].append(i)
            tokens.append(token)
            scores.append(scores[p] - float(torch.rand((), generator=g)))
        tree = DraftTree(torch.tensor(tokens), torch.tensor(parents), scores=torch.tensor(scores))
        length = int(torch.randint(0, 6, (), generator=g))
        chain = (1 + torch.randint(0, 4, (length,), generator=g)).tolist()
        chain_scores = (-torch.rand(length, generator=g)).cumsum(0).tolist()
        out = graft_chain(tree, chain, chain_scores)
        assert out.scores[1:].tolist() == sorted(out.scores[1:].tolist(), reverse=True)
        for node, kids in enumerate(out.children()):
            assert len({int(out.token_ids[k]) for k in kids}) == len(kids)  # distinct siblings
        paths = {tuple(out.token_ids[p].tolist()) for p in out.paths()}
        assert any(path[1 : 1 + length] == tuple(chain) for path in paths)  # the chain is a path


def test_graft_chain_rejects_what_it_cannot_rank():
    tree = DraftTree(torch.tensor([1, 2]), torch.tensor([-1, 0]), scores=torch.tensor([0.0, -1.0]))
    with pytest.raises(ValueError, match="must not increase"):
        graft_chain(tree, [3, 4], [-2.0, -1.0])
    with pytest.raises(ValueError, match="scores"):
        graft_chain(DraftTree(torch.tensor([1, 2]), torch.tensor([-1, 0])), [3], [-1.0])
    with pytest.raises(ValueError, match="2 chain tokens but 1"):
        graft_chain(tree, [3, 4], [-1.0])


# ---------------------------------------------------------------- stochastic (chi-square)

V = 5
# root; three children; two grandchildren under each child
CHI_PARENTS = torch.tensor([-1, 0, 0, 0, 1, 1, 2, 2, 3, 3])


def tables(seed: int):
    g = torch.Generator().manual_seed(seed)

    def probs(*shape, floor=0.04):
        e = -torch.rand(*shape, generator=g, dtype=torch.float64).log()
        return floor + (1 - floor * V) * e / e.sum(-1, keepdim=True)

    return probs(V), probs(V, V), probs(V, V), probs(V), probs(V, V)  # p0, p1|x, p2|x, q0, q1|x


def run_trials(seed: int, mode: str) -> torch.Tensor:
    """First two emitted tokens per trial as x0 * V + x1; a one-token step is finished
    with a plain sample from p(.|x0), as the next engine step would."""
    p0, p1, p2, q0, q1 = tables(seed)
    g = torch.Generator().manual_seed(seed + 1)
    out = torch.empty(NUM_TRIALS, dtype=torch.long)
    for n in range(NUM_TRIALS):
        if mode == "deterministic":  # any distinct siblings, chosen without the target's randomness
            kids = torch.randperm(V, generator=g)[:3]
            grand = torch.stack([torch.randperm(V, generator=g)[:2] for _ in range(3)]).flatten()
            probs = None
        else:  # siblings i.i.d. from q (with repeats)
            kids = torch.multinomial(q0, 3, replacement=True, generator=g)
            grand = torch.multinomial(q1[kids], 2, replacement=True, generator=g).flatten()
            stated_q0 = q0 if mode == "sampled" else torch.full((V,), 1.0 / V, dtype=torch.float64)
            probs = torch.cat([q0[None], stated_q0.expand(3, V), q1[kids].repeat_interleave(2, 0)])
        tokens = torch.cat([torch.tensor([0]), kids, grand])
        target = torch.cat([p0[None], p1[kids], p2[grand]])  # [N, V]
        result = verify_tree_stochastic(DraftTree(tokens, CHI_PARENTS, probs), target, g)
        x0 = result.token_ids[0]
        x1 = result.token_ids[1] if len(result.token_ids) > 1 else int(torch.multinomial(p1[x0], 1, generator=g))
        out[n] = x0 * V + x1
    return out


def chi2_joint_pvalue(seed: int, cells: torch.Tensor) -> float:
    p0, p1 = tables(seed)[:2]
    expected = (p0[:, None] * p1).flatten() * NUM_TRIALS
    counts = torch.bincount(cells, minlength=V * V).double()
    return float(chisquare(counts.numpy(), expected.numpy()).pvalue)


@pytest.mark.parametrize("mode", ["sampled", "deterministic"])
def test_tree_verification_follows_the_target_distribution(mode):
    assert chi2_joint_pvalue(10, run_trials(10, mode)) > P_VALUE_MIN


def test_negative_control_wrong_q_is_detected():
    """Siblings drawn from q0 but verified as if drawn from uniform: not lossless, and the
    same chi-square check must say so."""
    assert chi2_joint_pvalue(10, run_trials(10, "wrong_q")) < P_VALUE_MIN


# ---------------------------------------------------------------- engine tree path


class OracleTreeProposer(Proposer):
    """Trees around a known greedy continuation: the right token sits at a random sibling
    slot among distractors, one level of the true path is sometimes wrong."""

    def __init__(self, reference: list[int], prompt_len: int, vocab_size: int, seed: int = 0) -> None:
        self.reference = reference
        self.prompt_len = prompt_len
        self.vocab_size = vocab_size
        self.g = torch.Generator().manual_seed(seed)
        self.max_path_index = 0

    def propose(self, state, num_tokens: int, draft_class=None) -> DraftProposal:
        done = len(state.token_ids) - self.prompt_len
        truth = self.reference[done : done + num_tokens]
        tokens, parents, node = [state.token_ids[-1]], [-1], 0
        for depth, t in enumerate(truth):
            if float(torch.rand((), generator=self.g)) < 0.15:
                t = (t + 1) % self.vocab_size  # a wrong path from here on
            slot = int(torch.randint(0, 3, (), generator=self.g))
            next_node = None
            for s in range(3):
                tok = t if s == slot else int(torch.randint(0, self.vocab_size, (), generator=self.g))
                if s != slot and tok == t:
                    tok = (tok + 7) % self.vocab_size
                tokens.append(tok)
                parents.append(node)
                if s == slot:
                    next_node = len(tokens) - 1
            node = next_node
        tree = DraftTree(torch.tensor(tokens), torch.tensor(parents))
        return DraftProposal(tree.token_ids[1:][None], None, tree)


@pytest.fixture(scope="module")
def tiny_target(tiny_model_dir):
    return load_model(tiny_model_dir, "float32", "cpu", 512)


@pytest.mark.parametrize("k", [2, 5])
def test_engine_tree_path_equals_plain_greedy(tiny_target, k):
    params = SamplingParams(temperature=0, max_tokens=40, ignore_eos=True)
    prompt = tiny_target.tokenizer.encode("The cat sat on the mat. The cat")
    plain = Engine(tiny_target, None, None, 512).generate(prompt, params)
    oracle = OracleTreeProposer(plain.token_ids, len(prompt), tiny_target.config.vocab_size, seed=k)
    spec = SpeculativeConfig(method="eagle", num_speculative_tokens=k)
    result = Engine(tiny_target, oracle, spec, 512).generate(prompt, params)
    assert result.token_ids == plain.token_ids
    assert result.stats.num_accepted_tokens > 0  # accepted paths, often through non-first siblings
    assert result.stats.num_drafts > 0


def test_engine_tree_path_sampling_is_seeded(tiny_target):
    params = SamplingParams(temperature=0.9, max_tokens=16, ignore_eos=True, seed=5)
    prompt = tiny_target.tokenizer.encode("Hello there")
    plain = Engine(tiny_target, None, None, 512).generate(prompt, SamplingParams(temperature=0, max_tokens=16, ignore_eos=True))
    runs = []
    for _ in range(2):
        oracle = OracleTreeProposer(plain.token_ids, len(prompt), tiny_target.config.vocab_size)
        runs.append(Engine(tiny_target, oracle, SpeculativeConfig(method="eagle", num_speculative_tokens=3), 512).generate(prompt, params).token_ids)
    assert runs[0] == runs[1] and len(runs[0]) == 16
