"""The EAGLE proposer: a draft head that reads the target's features (models/eagle.py).

It sets `target_hidden_layers`, so after every step the engine hands it
`state.target_hidden`: the target's features of the tokens committed in that step, minus
the newest token (which the target has not seen yet). Those features are queued; each
`propose` first feeds the queued (feature, next token) pairs into the head's KV cache
(`start` feeds the prompt's at prefill time), then drafts:
  chain  K tokens, one head step each: greedy argmax, or sampled from
         q = logits_to_probs(draft logits mapped to the full vocabulary) with the
         request's own transform (zero outside a reduced draft vocabulary); coupled
         sampling draws it by Gumbel-max on the request's position-keyed noise
  tree   EAGLE-2's dynamic tree: expand the top_k nodes of each depth by cumulative draft
         log-probability, top_k children each, then keep the best num_nodes of all
         candidates; depth <= K. The tree is deterministic (probs None), which the tree
         verifier checks with q one-hot: lossless for greedy and sampling alike.
Greedy chains and trees (both deterministic) carry the draft's confidence, the cumulative
log q of each chain prefix or tree node, as `scores`, so the engine can verify fewer tokens
when the draft doubts its own tail. Sampled chains carry none (proposers/base.py).
`observe` rolls the head's cache back to the pairs built from real target features.

Alignment, worked example: prompt [a b c] at positions 0..2; prefill gives features f0 f1 f2
and the target's first token d. start feeds the pairs (f0, b) (f1, c) (f2, d) at
positions 0 1 2; propose(K=3) drafts e1 from their last output h3; then
(h3, e1) at position 3 drafts e2 and (h4, e2) at 4 drafts e3: the head cache holds 3 real
and 2 draft entries. The target verifies [d e1 e2 e3] at positions 3..6, accepts e1 and
recovers r: committed [a b c d e1 r], and state.target_hidden = [f3 f4] (for d and e1).
observe truncates the head cache to the 3 real pairs and queues [f3 f4]; the next propose
feeds (f3, e1) (f4, r) at positions 3 4: pair t is always (f_t, token t+1) at position t.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from specdec.drafts import DraftProposal, DraftTree, SequenceState
from specdec.proposers.base import Proposer
from specdec.sampling import draw, logits_to_probs


@dataclass
class TreeConfig:
    top_k: int = 8  # children per expanded node, and nodes expanded per depth
    num_nodes: int = 24  # draft nodes kept after reranking (the root not counted)

    def __post_init__(self) -> None:
        if self.top_k < 1 or self.num_nodes < 1:
            raise ValueError(f"tree top_k {self.top_k} and num_nodes {self.num_nodes} must be >= 1")


class EagleProposer(Proposer):
    def __init__(self, head, target_model, max_seq_len: int = 4096, tree: TreeConfig | None = None) -> None:
        """head: an EagleHead; target_model: the native target whose embedding (and LM head)
        the head shares."""
        lm_head, dtype = target_model.lm_head, target_model.dtype
        # the head may run in another dtype than the target (bfloat16 on CPU, factory.py)
        self.head = head.attach(target_model.embed, lambda x: lm_head(x.to(dtype)))
        self.target_hidden_layers = tuple(head.config.feature_layers)
        self.tree = tree
        margin = 16 if tree is None else tree.top_k * 16 + 16  # draft entries beyond the real ones
        self.cache = head.new_cache(max_seq_len + margin)
        self.num_real = 0  # head cache entries built from real target features
        self.pending: torch.Tensor | None = None  # [T, F] target features not fed yet
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None  # the newest fed pair's output, logits

    @torch.inference_mode()
    def start(self, state: SequenceState) -> None:
        """Feed the prompt's pairs now, at prefill time (as a draft model prefills its cache)."""
        self.cache.reset()
        self.num_real = 0
        self.pending = None
        self._queue(state.target_hidden)
        self._last = self._catch_up(state)

    def drafts_tree(self, draft_class: int | None) -> bool:
        return self.tree is not None

    def observe(self, state: SequenceState, result) -> None:
        self.cache.truncate(self.num_real)
        self._queue(state.target_hidden)
        self._last = None

    def _queue(self, features: torch.Tensor | None) -> None:
        if features is None:
            raise ValueError("the EAGLE proposer needs state.target_hidden (declare target_hidden_layers)")
        features = features.to(self.head.dtype)
        self.pending = features if self.pending is None else torch.cat((self.pending, features))

    @torch.inference_mode()
    def propose(self, state: SequenceState, num_tokens: int, draft_class: int | None = None) -> DraftProposal:
        hidden, logits = self._catch_up(state)
        if self.tree is not None:
            return self._propose_tree(state, hidden, logits, num_tokens)
        return self._propose_chain(state, hidden, logits, num_tokens)

    def _catch_up(self, state: SequenceState) -> tuple[torch.Tensor, torch.Tensor]:
        """Feed the queued pairs (f_t, token t+1); return the last output [1, 1, D] and its logits [V_d]."""
        if self.pending is None:
            if self._last is None:
                raise ValueError("EAGLE: nothing queued to draft from (call start(state) for a new request)")
            return self._last  # start fed everything; no step has run since
        head, dev = self.head, self.head.device
        t = self.pending.shape[0]
        tokens = state.token_ids[self.num_real + 1 : self.num_real + 1 + t]
        if len(tokens) != t or self.num_real + t != len(state.token_ids) - 1:
            raise ValueError(
                f"EAGLE alignment: {self.num_real} fed + {t} queued features for {len(state.token_ids)} tokens"
            )
        hidden_in = head.fuse_features(self.pending.to(dev))[None]  # [1, T, D]
        token_ids = torch.tensor([tokens], device=dev)
        # Feed in chunks of power-of-two lengths (100 = 64 + 32 + 4): a prompt or a run of
        # n-gram steps gives any length, and each new matmul shape is slow on CPU the first
        # time (oneDNN builds a kernel per shape); these few shapes warm up at once.
        done = 0
        while done < t:
            size = 1 << ((t - done).bit_length() - 1)
            positions = torch.arange(self.num_real + done, self.num_real + done + size, device=dev)[None]
            out = head.step(hidden_in[:, done : done + size], token_ids[:, done : done + size], positions, self.cache)
            done += size
        self.num_real += t
        self.pending = None
        hidden = out[:, -1:]  # [1, 1, D]
        return hidden, head.logits(hidden[0, 0])

    def _propose_chain(self, state, hidden, logits, num_tokens: int) -> DraftProposal:
        head, dev, params = self.head, self.head.device, state.params
        draft_ids: list[int] = []
        draft_probs: list[torch.Tensor] = []
        log_conf: list[float] = []  # log q(token) of each drafted token
        for i in range(num_tokens):
            if params.greedy:
                logp = torch.log_softmax(logits.float(), -1)
                best = int(logp.argmax())
                token = int(head.to_target_ids(torch.tensor(best)))
                log_conf.append(float(logp[best]))
            else:
                q = logits_to_probs(head.full_vocab_logits(logits), params.temperature, params.top_k, params.top_p,
                                    params.min_p)
                token = int(draw(q[None], state.generator, state.noise, [len(state.token_ids) + i])[0])
                draft_probs.append(q)
            draft_ids.append(token)
            if i == num_tokens - 1:
                break
            positions = torch.tensor([[self.num_real + i]], device=dev)
            hidden = head.step(hidden, torch.tensor([[token]], device=dev), positions, self.cache)
            logits = head.logits(hidden[0, 0])
        token_ids = torch.tensor([draft_ids], dtype=torch.long).reshape(1, len(draft_ids))
        probs = torch.stack(draft_probs)[None] if draft_probs else None  # [1, K, V]
        # sampled chains carry no scores: pruning by the sampled tokens' own q would verify
        # tokens no longer distributed as q, and the test against q would be biased
        scores = torch.tensor(log_conf, dtype=torch.float32).cumsum(0)[None] if log_conf else None  # [1, K]
        return DraftProposal(token_ids, probs, scores=scores)

    def _propose_tree(self, state, hidden, logits, max_depth: int) -> DraftProposal:
        """EAGLE-2 expansion; pool index order is creation order (parents first)."""
        head, dev, cfg = self.head, self.head.device, self.tree
        k = cfg.top_k
        base = self.cache.length
        scores, idx = torch.log_softmax(logits.float(), -1).topk(min(k, logits.shape[-1]))
        pool_tokens = head.to_target_ids(idx).tolist()
        pool_parent = [-1] * len(pool_tokens)
        pool_score = scores.tolist()
        pool_slot: dict[int, int] = {}  # pool index -> head cache slot of its fed pair
        pool_hidden: dict[int, torch.Tensor] = {-1: hidden[0, 0]}
        frontier = list(range(len(pool_tokens)))
        for depth in range(1, max_depth):
            t = len(frontier)
            start = self.cache.length
            mask = torch.zeros(1, t, start + t, dtype=torch.bool, device=dev)
            mask[0, :, :base] = True
            for row, node in enumerate(frontier):
                mask[0, row, start + row] = True
                ancestor = pool_parent[node]
                while ancestor != -1:
                    mask[0, row, pool_slot[ancestor]] = True
                    ancestor = pool_parent[ancestor]
            hidden_in = torch.stack([pool_hidden[pool_parent[n]] for n in frontier])[None]  # [1, T, D]
            tokens = torch.tensor([[pool_tokens[n] for n in frontier]], device=dev)
            positions = torch.full((1, t), base + depth - 1, device=dev)
            out = head.step(hidden_in, tokens, positions, self.cache, mask)[0]  # [T, D]
            logp = torch.log_softmax(head.logits(out).float(), -1)  # [T, V_d]
            child_lp, child_idx = logp.topk(min(k, logp.shape[-1]), dim=-1)  # [T, k]
            child_scores = torch.tensor([pool_score[n] for n in frontier])[:, None] + child_lp.cpu()
            child_tokens = head.to_target_ids(child_idx).tolist()
            first_new = len(pool_tokens)
            for row, node in enumerate(frontier):
                pool_slot[node] = start + row
                pool_hidden[node] = out[row]
                for j in range(child_idx.shape[1]):
                    pool_tokens.append(child_tokens[row][j])
                    pool_parent.append(node)
                    pool_score.append(float(child_scores[row, j]))
            new_scores = torch.tensor(pool_score[first_new:])
            best = torch.sort(new_scores, descending=True, stable=True).indices[:k]
            frontier = sorted(first_new + int(i) for i in best)
        # Nodes in rank order (score, then creation): a parent scores at least as much as its
        # child and was made first, so parents still come first and every prefix of the
        # tree is its best-scoring subtree of that size (what the engine's pruner keeps).
        keep = torch.sort(torch.tensor(pool_score), descending=True, stable=True).indices[: cfg.num_nodes].tolist()
        new_index = {node: i + 1 for i, node in enumerate(keep)}
        parents = [-1] + [0 if pool_parent[n] == -1 else new_index[pool_parent[n]] for n in keep]
        token_ids = [state.token_ids[-1]] + [pool_tokens[n] for n in keep]
        scores = torch.tensor([0.0] + [pool_score[n] for n in keep], dtype=torch.float32)
        tree = DraftTree(torch.tensor(token_ids), torch.tensor(parents), scores=scores)
        return DraftProposal(tree.token_ids[1:][None], None, tree)
