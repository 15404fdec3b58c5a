"""Tree drafts: pure topology over parent indices.

A draft tree holds N nodes in topological order. Node 0 is the root: the newest committed
token, which the target has not seen yet and takes as the first input of the verify pass
(exactly as a chain draft's first input). `parents[0] = -1` and `parents[i] < i`, so any
prefix of the nodes is a tree too (`prefix`). Siblings are ordered: the verifier tries
the children of a node in index order.

From the parents alone:
  depths          [N]     root 0; a node's position is cache.length + depth
  attention_mask  [N, N]  mask[i, j] = j is i or an ancestor of i (the target sees only the
                          path from the root to a node, plus the cached prefix)
  paths                   the root-to-leaf node lists, leaves in index order

Worked example, parents [-1, 0, 0, 1, 1, 2] (root r; a, b under r; c, d under a; e under b):
  depths [0, 1, 1, 2, 2, 2]; row 3 (c) of the mask is [1, 1, 0, 1, 0, 0] (r, a, c);
  paths [[0, 1, 3], [0, 1, 4], [0, 2, 5]].
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import torch


def check_parents(parents: list[int] | torch.Tensor) -> list[int]:
    parents = [int(p) for p in (parents.tolist() if isinstance(parents, torch.Tensor) else parents)]
    if not parents or parents[0] != -1:
        raise ValueError(f"node 0 must be the root (parent -1), got parents {parents[:8]}")
    for i, p in enumerate(parents[1:], 1):
        if not 0 <= p < i:
            raise ValueError(f"node {i} has parent {p}: parents must come before their children")
    return parents


def tree_depths(parents: list[int] | torch.Tensor) -> torch.Tensor:
    """[N] int64 depth of every node (root 0)."""
    parents = check_parents(parents)
    depths = [0] * len(parents)
    for i, p in enumerate(parents[1:], 1):
        depths[i] = depths[p] + 1
    return torch.tensor(depths, dtype=torch.long)


def tree_attention_mask(parents: list[int] | torch.Tensor) -> torch.Tensor:
    """[N, N] bool, True where node i may attend to node j (j is i or an ancestor)."""
    parents = check_parents(parents)
    n = len(parents)
    mask = torch.eye(n, dtype=torch.bool)
    for i, p in enumerate(parents[1:], 1):
        mask[i] |= mask[p]
    return mask


def tree_children(parents: list[int] | torch.Tensor) -> list[list[int]]:
    parents = check_parents(parents)
    children: list[list[int]] = [[] for _ in parents]
    for i, p in enumerate(parents[1:], 1):
        children[p].append(i)
    return children


def tree_paths(parents: list[int] | torch.Tensor) -> list[list[int]]:
    """Root-to-leaf paths of node indices, one per leaf, leaves in index order."""
    parents = check_parents(parents)
    children = tree_children(parents)
    paths = []
    for leaf in (i for i, c in enumerate(children) if not c):
        path = [leaf]
        while parents[path[-1]] != -1:
            path.append(parents[path[-1]])
        paths.append(path[::-1])
    return paths


@dataclass
class DraftTree:
    token_ids: torch.Tensor  # [N] int64; token_ids[0] is the root (the newest committed token)
    parents: torch.Tensor  # [N] int64; parents[0] = -1, parents[i] < i
    # q each node was drawn from, [N, V] (row 0 unused); None = deterministic nodes (chosen,
    # not sampled: the verifier uses q one-hot, lossless for any choice of distinct siblings).
    probs: torch.Tensor | None = None
    # [N] float32 cumulative draft log-probability of each node's path (root 0), the draft's
    # own confidence; None if the proposer gives none. Lets the engine prune the tree
    # before verifying it (engine/controller.py: ConfidencePruner).
    scores: torch.Tensor | None = None

    def __post_init__(self) -> None:
        self.parents = torch.as_tensor(self.parents, dtype=torch.long)
        self.token_ids = torch.as_tensor(self.token_ids, dtype=torch.long)
        check_parents(self.parents)
        if self.token_ids.shape != self.parents.shape:
            raise ValueError(f"token_ids {tuple(self.token_ids.shape)} != parents {tuple(self.parents.shape)}")
        if self.probs is not None and self.probs.shape[0] != self.num_nodes:
            raise ValueError(f"probs has {self.probs.shape[0]} rows for {self.num_nodes} nodes")
        if self.scores is not None and self.scores.shape != self.parents.shape:
            raise ValueError(f"scores {tuple(self.scores.shape)} != parents {tuple(self.parents.shape)}")

    @property
    def num_nodes(self) -> int:
        return self.parents.numel()

    @cached_property
    def depths(self) -> torch.Tensor:  # [N]; read by the pruner, the controller and the verify pass
        return tree_depths(self.parents)

    @property
    def attention_mask(self) -> torch.Tensor:  # [N, N]
        return tree_attention_mask(self.parents)

    def children(self) -> list[list[int]]:
        return tree_children(self.parents)

    def paths(self) -> list[list[int]]:
        return tree_paths(self.parents)

    def prefix(self, num_nodes: int) -> DraftTree:
        """The first num_nodes nodes (still a tree: parents come first)."""
        if num_nodes < 1:
            raise ValueError("a tree keeps at least its root")
        probs = self.probs[:num_nodes] if self.probs is not None else None
        scores = self.scores[:num_nodes] if self.scores is not None else None
        return DraftTree(self.token_ids[:num_nodes], self.parents[:num_nodes], probs, scores)


def graft_chain(tree: DraftTree, chain: Sequence[int], chain_scores: Sequence[float]) -> DraftTree:
    """tree with the chain of tokens hung under its root, shared prefixes merged, rank-ordered.

    For a deterministic tree with scores (an EAGLE-2 tree) and a deterministic chain with its
    own cumulative confidences (an n-gram continuation): walking down from the root, a chain
    token that is already a child of the current node follows that child, which keeps the
    higher of its two scores; the first one that is not starts a new branch of the rest.
    Siblings stay distinct, so the tree verifier stays lossless (q one-hot). The nodes are then
    sorted by score, descending, ties in index order: a node never scores above its parent
    (the chain's scores do not increase), so parents still come first and every prefix is the
    best-scoring subtree of its size, as `ConfidencePruner` expects.

    Worked example, tree r -> a (-1.0), r -> b (-2.0), a -> c (-1.5), chain [a, d] scored
    [-0.5, -1.2]: a rises to -0.5, d is new under a, and the order by score is
    r, a (-0.5), d (-1.2), c (-1.5), b (-2.0): parents [-1, 0, 1, 1, 0].
    """
    if tree.scores is None or tree.probs is not None:
        raise ValueError("graft_chain needs a deterministic tree with scores (probs None)")
    if len(chain) != len(chain_scores):
        raise ValueError(f"{len(chain)} chain tokens but {len(chain_scores)} scores")
    if any(b > a for a, b in zip(chain_scores, chain_scores[1:])):
        raise ValueError(f"chain scores must not increase along the chain, got {list(chain_scores)}")
    tokens, parents, scores = tree.token_ids.tolist(), tree.parents.tolist(), tree.scores.tolist()
    children = tree_children(parents)
    node = 0
    for token, score in zip((int(t) for t in chain), (float(s) for s in chain_scores)):
        child = next((c for c in children[node] if tokens[c] == token), None)
        if child is None:
            child = len(tokens)
            tokens.append(token)
            parents.append(node)
            scores.append(score)
            children[node].append(child)
            children.append([])
        else:
            scores[child] = max(scores[child], score)
        node = child
    order = [0] + sorted(range(1, len(tokens)), key=lambda i: -scores[i])  # sorted() is stable
    new_index = {old: new for new, old in enumerate(order)}
    return DraftTree(
        torch.tensor([tokens[i] for i in order]),
        torch.tensor([-1] + [new_index[parents[i]] for i in order[1:]]),
        scores=torch.tensor([scores[i] for i in order], dtype=torch.float32),
    )
