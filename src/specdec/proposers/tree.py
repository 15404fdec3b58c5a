"""Tree drafts built from other drafts: an n-gram chain grafted onto an EAGLE-2 tree.

The topology itself (`DraftTree`, parents, depths, masks) is pure data shared with the
verifier and lives in specdec/drafts.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from specdec.drafts import DraftTree, tree_children


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
