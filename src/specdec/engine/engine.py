"""The one generation loop, for every proposer and for plain decoding.

    1) prefill   the prompt through the target; the first token comes from its last logits
    2) propose   K draft tokens (K chosen by the controller; K = 0 is a plain decode step)
    3) verify    one target forward over [last, d_1 .. d_K] (K+1 positions), then the pure
                 verifier keeps the longest accepted prefix and adds a recovered or bonus token
    4) commit    the emitted tokens; roll back the target cache past the rejected drafts,
                 and let the proposer roll back or extend its own state (observe)
    5) emit      a StepOutput with the tokens and each token's fate

Invariant between steps: the target cache holds every committed token except the newest,
which is fed as the first input of the next verify pass. So after a step that drafted K
and accepted a, the cache grew by K+1 and is rolled back by K-a. A tree draft (the
proposal carries `tree`) is verified over its N nodes with the tree's ancestor mask, and
the cache keeps the root and the accepted path by `compact` instead of a rollback.

The loop never asks which kind of proposer it has.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from specdec.config import SamplingParams, SpeculativeConfig
from specdec.engine.calibrate import make_controller, make_pruner, prunes
from specdec.engine.controller import ConfidencePruner, CostModel, blend_cost
from specdec.engine.stats import SpecStats
from specdec.proposers.base import DraftProposal, Proposer, SequenceState
from specdec.verify import verify
from specdec.verify_tree import verify_tree

FATE_PLAIN = "plain"  # a K = 0 step (or the token after prefill)
FATE_ACCEPTED = "accepted"  # a draft token that passed verification
FATE_RECOVERED = "recovered"  # resampled from norm(max(p - q, 0)) at the first rejection
FATE_BONUS = "bonus"  # sampled from p after all K drafts passed


@dataclass
class StepOutput:
    token_ids: list[int]  # committed this step (after EOS/length truncation)
    fates: list[str]  # one per committed token
    draft_ids: list[int]  # what the proposer offered (rejected ones included)
    num_accepted: int
    finish_reason: str | None = None  # "stop" (EOS) | "length"; None while running
    draft_class: str | None = None  # the proposer's name for this draft's class, if it names them
    num_pruned: int = 0  # drafted tokens dropped unverified by the confidence pruner


@dataclass
class GenerationResult:
    prompt_ids: list[int]
    token_ids: list[int]
    finish_reason: str
    stats: SpecStats
    steps: list[StepOutput] = field(default_factory=list)


def new_generator(seed: int | None, device: torch.device) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(seed if seed is not None else secrets.randbits(63))
    return g


class Engine:
    """Runs requests one at a time over a pre-allocated target cache."""

    def __init__(
        self,
        target,  # LoadedModel
        proposer: Proposer | None = None,
        spec: SpeculativeConfig | None = None,
        max_seq_len: int = 4096,
        cost_model=None,
    ) -> None:
        self.target = target
        self.model = target.model
        self.proposer = proposer
        self.spec = spec or SpeculativeConfig()
        self.cost_model = cost_model
        self.max_seq_len = min(max_seq_len, getattr(self.model, "max_seq_len", max_seq_len))
        self.cache = self.model.new_cache(1, self.max_seq_len)
        self.eos_ids = set(target.config.eos_token_ids)
        eos = getattr(target.tokenizer, "eos_token_id", None)
        if eos is not None:
            self.eos_ids.add(eos)
        self.hidden_layers: tuple[int, ...] = tuple(getattr(proposer, "target_hidden_layers", ()))
        self._draft_bucket = getattr(proposer, "draft_bucket", None)  # optional (proposers/base.py)
        self._draft_options = getattr(proposer, "draft_options", None)  # optional, ditto
        self._drafts_tree = getattr(proposer, "drafts_tree", None)  # optional, ditto
        self._class_name = getattr(proposer, "class_name", None)  # optional, ditto
        # each draft class's cost model: the calibrated verify curve, its own draft cost
        self._bucket_costs: dict[int | None, CostModel] = {}

    @property
    def device(self) -> torch.device:
        return self.model.device

    def check_request(self, prompt_ids: list[int], params: SamplingParams) -> None:
        if not prompt_ids:
            raise ValueError("the prompt is empty")
        need = len(prompt_ids) + params.max_tokens + 1
        if need > self.max_seq_len:
            raise ValueError(
                f"prompt of {len(prompt_ids)} tokens + max_tokens {params.max_tokens} "
                f"exceeds the context of {self.max_seq_len} tokens"
            )

    def generate(self, prompt_ids: list[int], params: SamplingParams) -> GenerationResult:
        stats = SpecStats()
        steps = list(self.stream(prompt_ids, params, stats))
        tokens = [t for s in steps for t in s.token_ids]
        return GenerationResult(list(prompt_ids), tokens, steps[-1].finish_reason or "length", stats, steps)

    @torch.inference_mode()
    def stream(
        self, prompt_ids: list[int], params: SamplingParams, stats: SpecStats | None = None
    ) -> Iterator[StepOutput]:
        self.check_request(prompt_ids, params)
        stats = stats if stats is not None else SpecStats()
        generator = new_generator(params.seed, self.device)
        state = SequenceState(list(prompt_ids), len(prompt_ids), params, generator)
        controller = make_controller(self.spec, self.cost_model, self._cost_for) if self.proposer else None
        pruner = make_pruner(self.spec, self.cost_model) if self.proposer else None
        self.cache.reset()
        num_generated = 0

        # 1) prefill
        t0 = time.perf_counter()
        ids = torch.tensor([prompt_ids], device=self.device)
        positions = torch.arange(len(prompt_ids), device=self.device)[None]
        out = self.model(ids, positions, self.cache, hidden_layers=self.hidden_layers, logits_indices=slice(-1, None))
        result = verify(ids[:, :0], None, out.logits, params, generator)
        first = int(result.output_ids[0, 0])
        state.token_ids.append(first)
        state.target_hidden = self._hidden(out, slice(None))
        if self.proposer is not None:
            self.proposer.start(state)
        stats.prefill_seconds += time.perf_counter() - t0
        num_generated = 1
        finish = stop_reason([first], num_generated, params, self.eos_ids)
        yield StepOutput([first], [FATE_PLAIN], [], 0, finish)
        if finish:
            return

        t_decode = time.perf_counter()
        while True:
            # 2) propose
            t_step = time.perf_counter()
            room = min(params.max_tokens - num_generated - 1, self.cache.num_free - 1)
            bucket = self._choose_class(state, controller) if controller else None
            k = min(controller.choose(bucket), room) if controller else 0
            if k > 0 and self._draft_options:
                proposal = self.proposer.propose(state, k, bucket=bucket)
            elif k > 0:
                proposal = self.proposer.propose(state, k)
            else:
                proposal = DraftProposal(torch.empty(1, 0, dtype=torch.long, device=self.device))
            num_draft = proposal.num_tokens
            num_levels = k if proposal.tree is not None else num_draft  # draft steps taken
            t_verify = time.perf_counter()
            stats.draft_seconds += t_verify - t_step
            if num_draft and self.cost_model is not None:
                self._observe_draft_cost(bucket, (t_verify - t_step) / num_levels)
            num_pruned, confidence = 0, None
            if num_draft and pruner is not None:
                proposal, confidence = prune(proposal, pruner, self._cost_for(bucket).verify_cost, t_verify - t_step)
                num_pruned = num_draft - proposal.num_tokens
                stats.num_pruned_tokens += num_pruned
                num_draft = proposal.num_tokens
            # the controller counts a tree by its depth, stats by its nodes
            tested = int(proposal.tree.depths.max()) if proposal.tree is not None else num_draft

            # 3) verify: one target forward over the newest token and the drafts
            if proposal.tree is not None:  # 3+4) tree drafts: verify, then compact the accepted path
                result, num_draft = self._verify_tree(state, proposal.tree, params, generator)
                num_accepted = int(result.num_accepted[0])
            else:
                start = self.cache.length
                inputs = torch.cat(
                    [torch.tensor([[state.token_ids[-1]]], device=self.device), proposal.token_ids.to(self.device)],
                    dim=1,
                )
                positions = torch.arange(start, start + num_draft + 1, device=self.device)[None]
                out = self.model(inputs, positions, self.cache, hidden_layers=self.hidden_layers)
                result = verify(proposal.token_ids, proposal.probs, out.logits, params, generator)
                num_accepted = int(result.num_accepted[0])
            emitted = result.output_ids[0, : num_accepted + 1].tolist()
            stats.verify_seconds += time.perf_counter() - t_verify

            # 4) commit / rollback
            if proposal.tree is None:
                self.cache.rollback(num_draft - num_accepted)
                state.target_hidden = self._hidden(out, slice(0, num_accepted + 1))
            fates = [FATE_ACCEPTED] * num_accepted + [
                FATE_PLAIN if num_draft == 0 else FATE_BONUS if bool(result.bonus[0]) else FATE_RECOVERED
            ]
            emitted, fates, finish = truncate_step(emitted, fates, num_generated, params, self.eos_ids)
            state.token_ids.extend(emitted)
            num_generated += len(emitted)
            draft_class = self._class_name(bucket) if num_draft and bucket is not None and self._class_name else None
            stats.observe(num_draft, num_accepted, draft_class)
            if controller:
                controller.observe(tested, num_accepted, bucket)
            if num_draft and confidence is not None:
                pruner.observe(*confidence, num_accepted)
            if self.proposer is not None and not finish:
                self.proposer.observe(state, result)
            stats.num_generated_tokens = num_generated - 1
            stats.decode_seconds = time.perf_counter() - t_decode

            # 5) emit
            yield StepOutput(emitted, fates, proposal.token_ids[0].tolist(), num_accepted, finish, draft_class, num_pruned)
            if finish:
                return

    def _verify_tree(self, state: SequenceState, tree, params: SamplingParams, generator: torch.Generator):
        """One target forward over the tree (root = the newest token) with its ancestor mask
        and depth positions; keep the accepted path's cache entries with compact.

        Returns the path as a chain VerifyResult and the number of draft nodes verified.
        """
        if tree.num_nodes > self.cache.num_free:
            tree = tree.prefix(self.cache.num_free)  # parents come first: a prefix is a tree
        start = self.cache.length
        token_ids = tree.token_ids.clone()
        token_ids[0] = state.token_ids[-1]
        positions = (start + tree.depths)[None].to(self.device)
        out = self.model(
            token_ids[None].to(self.device),
            positions,
            self.cache,
            attn_mask=tree.attention_mask[None].to(self.device),
            hidden_layers=self.hidden_layers,
        )
        tree_result = verify_tree(tree, out.logits[0], params, generator)
        self.cache.compact(start, tree_result.path)
        state.target_hidden = self._hidden(out, torch.tensor(tree_result.path, device=self.device))
        return tree_result.to_verify_result(), tree.num_nodes - 1

    def _choose_class(self, state: SequenceState, controller) -> int | None:
        """The coming draft's class: the proposer's only one, or the controller's pick of
        its alternatives (the first one for controllers without estimates)."""
        if self._draft_options:
            options = self._draft_options(state)
            pick = getattr(controller, "pick", None)
            return pick(options) if pick and len(options) > 1 else options[0]
        return self._draft_bucket(state) if self._draft_bucket else None

    def _cost_for(self, bucket: int | None) -> CostModel:
        """The cost model of one draft class, kept across requests (made at first use)."""
        cost = self._bucket_costs.get(bucket)
        if cost is None:
            # pruned trees plan as chains; a hybrid's n-gram classes draft chains
            trees = self._drafts_tree(bucket) if self._drafts_tree else True
            tree_nodes = 0 if prunes(self.spec) or not trees else self.spec.tree_nodes
            cost = CostModel.from_dict({**self.cost_model.to_dict(), "tree_nodes": tree_nodes})
            self._bucket_costs[bucket] = cost
        return cost

    def _observe_draft_cost(self, bucket: int | None, seconds_per_token: float) -> None:
        cost = self._cost_for(bucket)
        cost.draft_seconds_per_token = blend_cost(cost.draft_seconds_per_token, seconds_per_token)

    def _hidden(self, out, index) -> torch.Tensor | None:
        if not self.hidden_layers:
            return None
        return target_features(out, self.hidden_layers, (0, index))


def prune(proposal: DraftProposal, pruner: ConfidencePruner, verify_cost, draft_seconds: float):
    """The part of a draft worth verifying, by its own confidence (ConfidencePruner).

    Returns (proposal, (scores, depths) of the kept draft nodes for pruner.observe), or the
    proposal unchanged and None when it carries no scores. Kept: a chain's first n tokens,
    a rank-ordered tree's first n nodes; n = 0 leaves an empty proposal (a plain step).
    """
    tree = proposal.tree
    if tree is not None and tree.scores is not None:
        scores, depths = tree.scores[1:].tolist(), tree.depths[1:].tolist()
    elif tree is None and proposal.scores is not None:
        scores, depths = proposal.scores[0].tolist(), list(range(1, proposal.num_tokens + 1))
    else:
        return proposal, None
    n = pruner.keep(scores, depths, verify_cost, draft_seconds)
    if n == len(scores):
        return proposal, (scores, depths)
    if n == 0:
        return DraftProposal(proposal.token_ids[:, :0]), ([], [])
    if tree is not None:
        tree = tree.prefix(n + 1)
        return DraftProposal(tree.token_ids[1:][None], None, tree), (scores[:n], depths[:n])
    probs = proposal.probs[:, :n] if proposal.probs is not None else None
    return DraftProposal(proposal.token_ids[:, :n], probs, scores=proposal.scores[:, :n]), (scores[:n], depths[:n])


def target_features(out, layers: tuple[int, ...], index=...) -> torch.Tensor:
    """The target's hidden states at `layers`, concatenated on the feature axis (the order
    EAGLE heads read them in), each indexed by `index` first."""
    return torch.cat([out.hidden_states[i][index] for i in layers], dim=-1)


def stop_reason(tokens: list[int], num_generated: int, params: SamplingParams, eos_ids: set[int]) -> str | None:
    """"stop" if tokens hold an EOS, "length" at max_tokens, else None."""
    if not params.ignore_eos and any(t in eos_ids for t in tokens):
        return "stop"
    if num_generated >= params.max_tokens:
        return "length"
    return None


def truncate_step(emitted: list[int], fates: list[str], num_generated: int, params: SamplingParams, eos_ids: set[int]):
    """Cut a step's tokens at the first EOS or at max_tokens; returns (tokens, fates, finish)."""
    if not params.ignore_eos:
        for i, t in enumerate(emitted):
            if t in eos_ids:
                return emitted[: i + 1], fates[: i + 1], "stop"
    room = params.max_tokens - num_generated
    if len(emitted) >= room:
        return emitted[:room], fates[:room], "length"
    return emitted, fates, None
