"""Verification of tree drafts: pure functions of a DraftTree, target logits and a generator.

Vocabulary as in `specdec.verify` (draft, accepted, recovered, bonus, p, q). The target ran
one forward over the N tree nodes (node 0 = the root, the newest committed token), so
`p[i]` is the target's distribution for the token after the path root..i.

Greedy: walk from the root; at node i take the target's argmax t_i; if a child of i carries
t_i, accept it and go on, otherwise stop. The emitted tokens are the accepted path and then
t_i of the last accepted node (recovered if that node has children, bonus if it is a
leaf). This is the longest path that matches the target's own greedy continuation.

Sampling: multi-candidate recursive rejection sampling (SpecInfer, Miao et al. 2024; EAGLE).
At node i start from the residual r = p_i and try the children c_1, c_2, ... in order:
accept c_k with probability min(1, r(x_k) / q_k(x_k)); on rejection set
r = norm(max(r - q_k, 0)) and try the next child. If a child is accepted, descend into it
and start over from its p; if all are rejected, emit a recovered token drawn from r; at a
leaf, emit a bonus token drawn from p. The emitted tokens follow the target's distribution
exactly when either
  - the siblings are deterministic (tree.probs is None, q_k one-hot at x_k; EAGLE-2's top-k
    trees): accept with r(x_k), then zero x_k in r; any distinct choice is lossless, or
  - the siblings of a node were drawn i.i.d. from the q given in tree.probs.
Draws from the generator, in order: one uniform per child tried, then one multinomial
draw for the recovered or bonus token, so a seed fixes the result.

Coupled (sampling with the request's GumbelNoise): greedy verification of log p + g, where
the token after node i sits at absolute position root + depth(i) + 1 and reads that
position's noise; the accepted child is the one equal to the target's perturbed argmax.

Worked example, parents [-1, 0, 0, 1] (root r; children a, b; c under a): the target's argmax
at r is b (a is rejected, b accepted), at b it is x; b is a leaf, so the path is [0, 2],
the emitted tokens are [b, x] and x is a bonus token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from specdec.config import SamplingParams
from specdec.drafts import DraftTree
from specdec.sampling import GumbelNoise, greedy, logits_to_probs, perturbed_scores
from specdec.verify import VerifyResult


@dataclass
class TreeVerifyResult:
    path: list[int]  # accepted node indices, root first: [0, n_1, ..., n_a]
    token_ids: list[int]  # emitted: the a accepted draft tokens, then the recovered or bonus token
    bonus: bool  # the last accepted node is a leaf, so the last token was sampled from p

    @property
    def num_accepted(self) -> int:
        return len(self.path) - 1

    def to_verify_result(self) -> VerifyResult:
        """The chain result of the accepted path, for the engine's commit step."""
        ids = torch.tensor([self.token_ids], dtype=torch.long)  # [1, a+1]
        return VerifyResult(ids, torch.tensor([self.num_accepted]), torch.tensor([self.bonus]))


def _check(tree: DraftTree, target: torch.Tensor, name: str) -> None:
    if target.dim() != 2 or target.shape[0] != tree.num_nodes:
        raise ValueError(f"{name} must be [N, V] with N = {tree.num_nodes} tree nodes, got {tuple(target.shape)}")


def verify_tree_greedy(tree: DraftTree, target_logits: torch.Tensor) -> TreeVerifyResult:  # [N, V]
    _check(tree, target_logits, "target_logits")
    target_ids = greedy(target_logits).tolist()  # [N]; the C argmax on CPU (torch's answer, faster)
    tokens = tree.token_ids.tolist()
    children = tree.children()
    path = [0]
    while True:
        node = path[-1]
        match = next((c for c in children[node] if tokens[c] == target_ids[node]), None)
        if match is None:
            break
        path.append(match)
    emitted = [tokens[i] for i in path[1:]] + [target_ids[path[-1]]]
    return TreeVerifyResult(path, emitted, not children[path[-1]])


def verify_tree_stochastic(
    tree: DraftTree,
    target_probs: torch.Tensor,  # [N, V] p
    generator: torch.Generator,
) -> TreeVerifyResult:
    _check(tree, target_probs, "target_probs")
    if tree.probs is not None and tree.probs.shape != target_probs.shape:
        raise ValueError(f"tree probs {tuple(tree.probs.shape)} != target probs {tuple(target_probs.shape)}")
    device = target_probs.device
    tokens = tree.token_ids.tolist()
    children = tree.children()
    path = [0]
    while True:
        node = path[-1]
        residual = target_probs[node].double()  # [V], sums to 1
        accepted = None
        for child in children[node]:
            x = tokens[child]
            q = None if tree.probs is None else tree.probs[child].to(residual)
            r_x, q_x = float(residual[x]), 1.0 if q is None else float(q[x])
            accept_prob = min(1.0, r_x / q_x) if q_x > 0 else float(r_x > 0)
            u = float(torch.rand((), generator=generator, device=device))
            if u < accept_prob:
                accepted = child
                break
            if q is None:  # max(r - onehot(x), 0) only zeroes x
                updated = residual.clone()
                updated[x] = 0.0
            else:
                updated = (residual - q).clamp(min=0.0)
            total = float(updated.sum())
            if total > 0:  # empty only if residual == q, where rejection has probability 0
                residual = updated / total
        if accepted is None:
            next_id = int(torch.multinomial(residual.float(), 1, generator=generator))
            emitted = [tokens[i] for i in path[1:]] + [next_id]
            return TreeVerifyResult(path, emitted, not children[node])
        path.append(accepted)


def verify_tree_coupled(
    tree: DraftTree,
    target_probs: torch.Tensor,  # [N, V] p
    noise: GumbelNoise,
    position: int,  # absolute position of the token after the root
) -> TreeVerifyResult:
    _check(tree, target_probs, "target_probs")
    return verify_tree_greedy(tree, perturbed_scores(target_probs, noise, position + tree.depths))  # by node depth


def verify_tree(
    tree: DraftTree,
    target_logits: torch.Tensor,  # [N, V]
    params: SamplingParams,
    generator: torch.Generator,
    noise: GumbelNoise | None = None,
    position: int = 0,
) -> TreeVerifyResult:
    """Greedy at temperature 0; otherwise p = logits_to_probs with the request's transform,
    verified coupled when given the noise, else by recursive rejection sampling."""
    if params.temperature == 0:
        return verify_tree_greedy(tree, target_logits)
    target_probs = logits_to_probs(target_logits, params.temperature, params.top_k, params.top_p, params.min_p)
    if noise is not None:
        return verify_tree_coupled(tree, target_probs, noise, position)
    return verify_tree_stochastic(tree, target_probs, generator)
