"""The types the proposers and the verifier share: drafts, draft trees, sequence state.

Neutral ground between the layers: proposers make `DraftProposal`s (a chain, or a
`DraftTree`), the engine keeps one `SequenceState` per request, and the verifier
(verify.py, verify_tree.py) reads drafts and trees; none of them imports another's module.

Tree drafts are pure topology over parent indices. A draft tree holds N nodes in
topological order. Node 0 is the root: the newest committed token, which the target has
not seen yet and takes as the first input of the verify pass (exactly as a chain draft's
first input). `parents[0] = -1` and `parents[i] < i`, so any prefix of the nodes is a tree
too (`prefix`). Siblings are ordered: the verifier tries the children of a node in index
order.

From the parents alone:
  depths          [N]     root 0; a node's position is the row's cache length + depth
  attention_mask  [N, N]  mask[i, j] = j is i or an ancestor of i (the target sees only the
                          path from the root to a node, plus the cached prefix)
  paths                   the root-to-leaf node lists, leaves in index order

Worked example, parents [-1, 0, 0, 1, 1, 2] (root r; a, b under r; c, d under a; e under b):
  depths [0, 1, 1, 2, 2, 2]; row 3 (c) of the mask is [1, 1, 0, 1, 0, 0] (r, a, c);
  paths [[0, 1, 3], [0, 1, 4], [0, 2, 5]].

`DraftProposal.probs is None` marks a deterministic draft (n-gram, argmax chains, EAGLE-2
trees): the verifier treats q as one-hot, which keeps sampling lossless. A proposal may
carry its own confidence, `scores` (a tree's in `DraftTree.scores`): the cumulative draft
log-probability of each prefix. With auto K the engine then verifies only the prefix whose
promised tokens pay for their verify cost (engine/planner.py). Only deterministic drafts
may carry scores: any rule that picks which of them to verify is lossless, since q is
one-hot at whatever is verified, while a sampled draft token pruned by its own q(x) would
no longer be distributed as q.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch

from specdec.config import SamplingParams
from specdec.sampling import GumbelNoise


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
    # before verifying it (engine/planner.py: ConfidencePruner).
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


@dataclass
class DraftProposal:
    token_ids: torch.Tensor  # [1, K] int64 (a tree: its K = N - 1 nodes below the root)
    probs: torch.Tensor | None = None  # [1, K, V] float32 draft distribution q, or None
    tree: DraftTree | None = None  # tree drafts: the nodes, root first
    # [1, K] float32 cumulative draft log-probability of each chain prefix (the draft's own
    # confidence in tokens 1..i), or None; the engine may verify a shorter prefix
    scores: torch.Tensor | None = None

    @property
    def num_tokens(self) -> int:
        return self.token_ids.shape[1]

    @property
    def num_levels(self) -> int:
        """Draft steps this proposal took: a chain's length, a tree's depth."""
        return int(self.tree.depths.max()) if self.tree is not None else self.num_tokens


@dataclass
class SequenceState:
    """What a proposer may read about one running request."""

    token_ids: list[int]  # prompt + every committed token
    num_prompt_tokens: int
    params: SamplingParams
    generator: torch.Generator
    # Target features for committed tokens the proposer has not consumed yet
    # (EAGLE heads); [T, D * num_feature_layers] or None.
    target_hidden: torch.Tensor | None = None
    # coupled sampling's position-keyed noise (sampling.GumbelNoise), None for rejection
    # sampling: a drafter that samples draws token t with `draw(q, generator, noise, [t])`
    noise: GumbelNoise | None = None
