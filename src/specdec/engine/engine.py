"""The one generation loop: continuous batching with speculation; a single request is a batch
of one. The CLI, `LLM`, the server and bench all run `Engine.step`.

Each running request owns one row of a pre-allocated `[L, B_max, H_kv, S_max, D]` target
cache, with its own SamplingParams, generator, proposer (one per row), speculation policy
(planner.py's `RowPolicy`), statistics and cache length. Requests join (`add`, which runs
1) and leave (finish, `cancel`) between steps; `step` runs 2) to 5) over every running row:

    1) prefill   a new request's prompt, alone in its row; its first token comes from the
                 last logits
    2) propose   each row names its draft class, the planner picks k_b for every row from
                 one cost surface and the rows' acceptance (planner.py), each row's proposer
                 drafts a chain of k_b tokens or a tree of depth k_b, and the pruner may
                 keep only the part worth verifying
    3) verify    ONE target forward over every row's newest token and drafts: a chain row
                 sends [last, d_1 .. d_k], a tree row its nodes with their ancestor mask and
                 depth positions; then the pure verifier per row (verify.py, verify_tree.py)
                 with that row's params and generator
    4) commit    per row: the accepted tokens and one recovered or bonus token; a chain row's
                 rejected entries lie past its length and are overwritten later, a tree
                 row's accepted path is compacted into place; proposer.observe
    5) emit      a StepOutput per row; finished rows free their slot

With one running row the forward is the one-sequence pass (`cache.row_view`), which is
what batch-invariant mode and non-native targets run; with more, the ragged forward packs
N = sum_b (tokens of row b), every matmul runs once over them, and each row's attention
reads its own cache (models/llama.py). Sampled rows draw by coupled verification by default
(verify.py): every token is the Gumbel-max of p under noise keyed by the row's seed and the
token's position, so a seeded row gives plain decoding's sample whatever the proposer, K or
batch. With rejection sampling each row consumes its generator in a fixed order (its
proposal, then its verification), so a seeded row reproduces its solo run at the same K only.

Invariant per row: its cache holds every committed token except the newest, which is the
first input of the next verify pass; so seq_len = committed tokens - 1.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from specdec.config import SamplingParams, SpeculativeConfig
from specdec.drafts import DraftProposal, SequenceState
from specdec.engine.planner import CostSurface, Planner, RowPolicy
from specdec.engine.stats import SpecStats
from specdec.proposers.base import Proposer
from specdec.sampling import GumbelNoise, process_logits, token_logprobs
from specdec.verify import VerifyResult, verify
from specdec.verify_tree import verify_tree

FATE_PLAIN = "plain"  # a K = 0 step (or the token after prefill)
FATE_ACCEPTED = "accepted"  # a draft token that passed verification
FATE_RECOVERED = "recovered"  # resampled from norm(max(p - q, 0)) at the first rejection
FATE_BONUS = "bonus"  # sampled from p after all K drafts passed


@dataclass
class StepOutput:
    token_ids: list[int]  # committed this step (after EOS/length truncation)
    fates: list[str]  # one per committed token
    draft_ids: list[int]  # what was verified (rejected ones included; a tree's nodes)
    num_accepted: int
    finish_reason: str | None = None  # "stop" (EOS) | "length"; None while running
    draft_class: str | None = None  # the proposer's name for this draft's class, if it names them
    num_pruned: int = 0  # drafted tokens dropped unverified by the confidence pruner
    # with params.logprobs set, one per committed token (sampling.token_logprobs):
    # {"token_id", "logprob", "top": [(token_id, logprob), ...]}, from the verify pass's logits
    logprobs: list[dict] | None = None
    # with Engine(record=...), what the target computed for this step's kept inputs (train-draft's
    # data): features [T, F] at hidden_layers of every token fed and kept (the prompt at prefill;
    # the previous newest token and the accepted drafts after), and the raw logits [T', V] that
    # followed them (T' = len(token_ids); the prompt's every position with record="prompt")
    features: torch.Tensor | None = None
    logits: torch.Tensor | None = None


@dataclass
class GenerationResult:
    prompt_ids: list[int]
    token_ids: list[int]
    finish_reason: str
    stats: SpecStats
    steps: list[StepOutput] = field(default_factory=list)


@dataclass
class Request:
    """One running request: its row and everything that is its own."""

    request_id: str
    row: int
    params: SamplingParams
    state: SequenceState
    proposer: Proposer | None
    policy: RowPolicy
    stats: SpecStats
    seq_len: int = 0  # entries in this row's cache
    num_generated: int = 0
    t_decode: float = 0.0
    stop_ids: set[int] = field(default_factory=set)  # EOS (unless ignore_eos) and params.stop_token_ids
    # until its first step: the prefill's last logits [1, 1, V] and features, which a request
    # with the same prompt that joins before then reuses with a copy of this row's cache
    prefill: tuple[torch.Tensor, torch.Tensor | None] | None = None
    shared_prefill: bool = False  # its prompt's prefill was another row's

    @property
    def output_ids(self) -> list[int]:
        return self.state.token_ids[self.state.num_prompt_tokens :]


@dataclass
class _Draft:
    """One row's part of a step between propose and commit."""

    proposal: DraftProposal
    num_pruned: int = 0
    confidence: tuple[list[float], list[int]] | None = None  # the pruner's (scores, depths) of kept nodes
    logprobs: list[dict] | None = None  # of the committed tokens, when the request asks for them
    features: torch.Tensor | None = None  # the kept inputs' features and logits, when recording
    logits: torch.Tensor | None = None


def new_generator(seed: int, device: torch.device) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(seed & ((1 << 64) - 1))
    return g


class Engine:
    def __init__(
        self,
        target,  # LoadedModel
        proposers: Proposer | None | Sequence[Proposer | None] = None,  # one per row; one value: one row
        spec: SpeculativeConfig | None = None,
        max_seq_len: int = 4096,
        cost: CostSurface | None = None,
        hidden_layers: tuple[int, ...] | None = None,
        record: str | None = None,
    ) -> None:
        """hidden_layers: the target layers whose features the forwards return (default: what
        the proposers read). record: "outputs" puts every step's features and logits in its
        StepOutput, "prompt" also the logits of every prompt position (train-draft's data)."""
        if record not in (None, "outputs", "prompt"):
            raise ValueError(f"record must be None, 'outputs' or 'prompt', got {record!r}")
        proposers = list(proposers) if isinstance(proposers, (list, tuple)) else [proposers]
        if not proposers:
            raise ValueError("need at least one row (one proposer entry per row, None for plain)")
        if len(proposers) > 1 and not target.is_native:
            raise ValueError(f"batching {len(proposers)} rows needs a native Llama-family target, "
                             f"{target.name} runs through transformers (one row)")
        layers = {p.target_hidden_layers for p in proposers if p is not None}
        if hidden_layers is not None:
            layers.add(tuple(hidden_layers))
        if len(layers) > 1:
            raise ValueError(f"the rows' proposers read different target layers {sorted(layers)}; one forward serves all")
        self.hidden_layers: tuple[int, ...] = layers.pop() if layers else ()
        self.record = record
        self.target = target
        self.model = target.model
        self.spec = spec or SpeculativeConfig()
        self.proposers = proposers
        self.max_batch_size = len(proposers)
        self.max_seq_len = min(max_seq_len, self.model.max_seq_len)
        self.cache = self.model.new_cache(self.max_batch_size, self.max_seq_len)
        self.cost = cost
        self.planner = Planner(cost)
        self.eos_ids = set(target.config.eos_token_ids)
        eos = getattr(target.tokenizer, "eos_token_id", None)
        if eos is not None:
            self.eos_ids.add(eos)
        self.stats = SpecStats()  # aggregate over every request, for metrics
        self._requests: dict[str, Request] = {}
        self._rows: list[str | None] = [None] * self.max_batch_size
        self._ids = 0

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def proposer(self) -> Proposer | None:
        """Row 0's proposer (the solo surfaces' one)."""
        return self.proposers[0]

    @property
    def num_running(self) -> int:
        return len(self._requests)

    @property
    def num_free(self) -> int:
        return self.max_batch_size - len(self._requests)

    def check_request(self, prompt_ids: list[int], params: SamplingParams) -> None:
        if not prompt_ids:
            raise ValueError("the prompt is empty")
        need = len(prompt_ids) + params.max_tokens + 1
        if need > self.max_seq_len:
            raise ValueError(
                f"prompt of {len(prompt_ids)} tokens + max_tokens {params.max_tokens} "
                f"exceeds the context of {self.max_seq_len} tokens"
            )

    # --- whole requests ---------------------------------------------------------------

    def stream(self, prompt_ids: list[int], params: SamplingParams, stats: SpecStats | None = None) -> Iterator[StepOutput]:
        """One request alone, step by step; stats (if given) accumulate its statistics."""
        if self._requests:
            raise RuntimeError(f"stream runs one request alone; {self.num_running} are running (use add/step)")
        self._ids += 1
        request_id = f"stream-{self._ids}"
        req, first = self.add(request_id, prompt_ids, params)
        try:
            yield first
            finish = first.finish_reason
            while not finish:
                [(_, out)] = self.step()
                finish = out.finish_reason
                yield out
        finally:
            self.cancel(request_id)
            if stats is not None:
                stats.merge(req.stats)

    def generate(self, prompt_ids: list[int], params: SamplingParams) -> GenerationResult:
        return self.generate_batch([prompt_ids], params)[0]

    def generate_batch(
        self,
        prompts: list[list[int]],
        params: SamplingParams | list[SamplingParams],
        on_step: Callable[[int, StepOutput], None] | None = None,
        progress: bool = False,
        stop: Callable[[int], bool] | None = None,
    ) -> list[GenerationResult]:
        """Every prompt to completion as one continuous batch: rows are refilled from the
        queue as requests finish. on_step(index, output) sees every step of every request;
        stop(index) True ends that request after the step (a stop string completed)."""
        if self._requests:
            raise RuntimeError(f"generate_batch needs an idle engine; {self.num_running} requests are running")
        params = list(params) if isinstance(params, list) else [params] * len(prompts)
        if len(params) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(params)} SamplingParams")
        for ids, p in zip(prompts, params):
            self.check_request(ids, p)
        steps: list[list[StepOutput]] = [[] for _ in prompts]
        stats: list[SpecStats] = [SpecStats() for _ in prompts]
        index_of: dict[str, int] = {}
        pending = list(range(len(prompts)))[::-1]
        bar = tqdm(total=len(prompts), desc="requests", unit="req", disable=not progress, leave=False)

        def record(i: int, rid: str, out: StepOutput) -> None:
            if on_step is not None:
                on_step(i, out)
            if out.finish_reason is None and stop is not None and stop(i):
                self.cancel(rid)
                out.finish_reason = "stop"
            steps[i].append(out)
            if out.finish_reason:
                bar.update(1)

        try:
            while pending or self._requests:
                while pending and self.num_free:
                    i = pending.pop()
                    self._ids += 1
                    rid = f"batch-{self._ids}"
                    req, first = self.add(rid, prompts[i], params[i])
                    stats[i] = req.stats
                    index_of[rid] = i
                    record(i, rid, first)
                for req, out in self.step():
                    record(index_of[req.request_id], req.request_id, out)
        finally:
            for rid in list(self._requests):
                self.cancel(rid)
            bar.close()
        return [
            GenerationResult(list(ids), [t for s in st for t in s.token_ids], st[-1].finish_reason or "length", s, st)
            for ids, st, s in zip(prompts, steps, stats)
        ]

    # --- the step loop ----------------------------------------------------------------

    def _row_cache(self, row: int, seq_len: int):
        """Row `row` as a one-sequence cache holding seq_len tokens."""
        if not self.target.is_native:  # the transformers adapter: one row, its own cache
            self.cache.truncate(seq_len)
            return self.cache
        return self.cache.row_view(row, seq_len)

    @torch.inference_mode()
    def add(self, request_id: str, prompt_ids: list[int], params: SamplingParams, speculative: bool = True) -> tuple[Request, StepOutput]:
        """1) prefill a new request into a free row; returns it and its first token."""
        self.check_request(prompt_ids, params)
        if request_id in self._requests:
            raise ValueError(f"request id {request_id!r} is already running")
        if not self.num_free:
            raise RuntimeError(f"all {self.max_batch_size} rows are busy")
        row = self._rows.index(None)
        seed = params.seed if params.seed is not None else secrets.randbits(63)
        noise = GumbelNoise(seed) if self.spec.sampling_verify == "coupled" and not params.greedy else None
        state = SequenceState(list(prompt_ids), len(prompt_ids), params, new_generator(seed, self.device), noise=noise)
        proposer = self.proposers[row] if speculative else None
        policy = RowPolicy(self.spec, enabled=proposer is not None, max_probe_interval=self.planner.max_probe_interval())
        req = Request(request_id, row, params, state, proposer, policy, SpecStats())
        t0 = time.perf_counter()
        twin = self._prefilled(prompt_ids)
        if twin is not None:  # the same prompt prefilled in another row this step (n choices)
            self.cache.copy_row(twin.row, row, len(prompt_ids))
            raw, features = twin.prefill
            prompt_logits, req.shared_prefill = None, True
        else:
            ids = torch.tensor([prompt_ids], device=self.device)
            positions = torch.arange(len(prompt_ids), device=self.device)[None]
            out = self.model(ids, positions, self._row_cache(row, 0), hidden_layers=self.hidden_layers,
                             logits_indices=None if self.record == "prompt" else slice(-1, None))
            raw, features, prompt_logits = out.logits[:, -1:], self._features(out, 0), out.logits[0]
        req.stop_ids = stop_ids(params, self.eos_ids)
        logits = raw
        if params.processes_logits:
            logits = process_logits(logits[0], params, prompt_ids, [], [[]], req.stop_ids)[None]
        result = verify(torch.empty(1, 0, dtype=torch.long, device=self.device), None, logits, params,
                        state.generator, noise, len(prompt_ids))
        first = int(result.output_ids[0, 0])
        logprobs = token_logprobs(raw[0], [first], params.logprobs) if params.logprobs is not None else None
        state.token_ids.append(first)
        state.target_hidden = features
        req.prefill = (raw, features)
        first_out = StepOutput([first], [FATE_PLAIN], [], 0, None, logprobs=logprobs)
        if self.record:
            first_out.features, first_out.logits = features, prompt_logits
        if proposer is not None:
            proposer.start(state)
        req.seq_len = len(prompt_ids)
        req.num_generated = 1
        req.stats.prefill_seconds += time.perf_counter() - t0
        req.t_decode = time.perf_counter()
        first_out.finish_reason = stop_reason([first], 1, params, req.stop_ids)
        if not first_out.finish_reason:
            self._requests[request_id] = req
            self._rows[row] = request_id
        return req, first_out

    def _prefilled(self, prompt_ids: list[int]) -> Request | None:
        """A running request with this prompt that has not stepped yet (its prefill is reusable)."""
        if self.record or not self.target.is_native:
            return None
        for req in self._requests.values():
            state = req.state
            if (req.prefill is not None and state.num_prompt_tokens == len(prompt_ids)
                    and state.token_ids[: state.num_prompt_tokens] == prompt_ids):
                return req
        return None

    def cancel(self, request_id: str) -> bool:
        """Free a running request's row between steps; False if it is not running."""
        req = self._requests.pop(request_id, None)
        if req is None:
            return False
        self._rows[req.row] = None
        return True

    @torch.inference_mode()
    def step(self) -> list[tuple[Request, StepOutput]]:
        """One decode step over every running row: 2) propose 3) verify 4) commit 5) emit."""
        running = sorted(self._requests.values(), key=lambda r: r.row)
        if not running:
            return []
        for req in running:
            req.prefill = None
        drafts = self._propose(running)  # 2)
        t_verify = time.perf_counter()
        results = self._verify(running, drafts)  # 3)
        verify_seconds = time.perf_counter() - t_verify
        outputs = [(req, self._commit(req, draft, result, verify_seconds)) for req, draft, result in zip(running, drafts, results)]  # 4) 5)
        if self.cost is not None:
            num_tokens = sum(1 + d.proposal.num_tokens for d in drafts)
            self.cost.observe_forward(len(running), num_tokens, time.perf_counter() - t_verify)
        return outputs

    def _propose(self, running: list[Request]) -> list[_Draft]:
        for req in running:
            if req.proposer is not None:
                options = req.proposer.draft_classes(req.state)
                trees = [req.proposer.drafts_tree(c) for c in options]
                i = req.policy.pick(options, trees, self.cost)
                req.policy.select(options[i], trees[i])
        rooms = [min(r.params.max_tokens - r.num_generated - 1, self.max_seq_len - r.seq_len - 1) for r in running]
        ks = self.planner.plan([r.policy for r in running], rooms)
        drafts, seconds = [], []
        for req, k in zip(running, ks):
            t0 = time.perf_counter()
            if k > 0:
                proposal = req.proposer.propose(req.state, k, req.policy.draft_class)
            else:
                proposal = DraftProposal(torch.empty(1, 0, dtype=torch.long))
            seconds.append(time.perf_counter() - t0)
            req.stats.draft_seconds += seconds[-1]
            if proposal.num_tokens:
                req.policy.observe_draft_cost(seconds[-1] / proposal.num_levels)
            room = self.max_seq_len - req.seq_len  # cache slots left for this pass
            if proposal.tree is not None and proposal.tree.num_nodes > room:
                tree = proposal.tree.prefix(room)  # parents come first: a prefix is a tree
                proposal = DraftProposal(tree.token_ids[1:][None], None, tree)
            drafts.append(_Draft(proposal))
        num_tokens = sum(1 + d.proposal.num_tokens for d in drafts)
        for req, draft, s in zip(running, drafts, seconds):
            n = draft.proposal.num_tokens
            if n and req.policy.pruner is not None:
                verify_cost = self.planner.prune_cost(len(running), num_tokens - 1 - n)
                draft.proposal, draft.confidence = prune(draft.proposal, req.policy.pruner, verify_cost, s)
                draft.num_pruned = n - draft.proposal.num_tokens
                num_tokens -= draft.num_pruned
        return drafts

    def _inputs(self, req: Request, proposal: DraftProposal) -> tuple[list[int], torch.Tensor, torch.Tensor | None]:
        """A row's verify inputs: token ids, positions [T] and its [T, T] mask (None: causal)."""
        tree = proposal.tree
        if tree is None:
            ids = [req.state.token_ids[-1]] + proposal.token_ids[0].tolist()
            return ids, torch.arange(req.seq_len, req.seq_len + len(ids)), None
        ids = [req.state.token_ids[-1]] + tree.token_ids[1:].tolist()
        return ids, req.seq_len + tree.depths, tree.attention_mask

    def _verify(self, running: list[Request], drafts: list[_Draft]) -> list:
        """One target forward over every row's inputs, then the pure verifier per row;
        tree rows compact their accepted path into place."""
        dev = self.device
        inputs = [self._inputs(r, d.proposal) for r, d in zip(running, drafts)]
        if len(running) == 1:
            req, (ids, positions, mask) = running[0], inputs[0]
            out = self.model(torch.tensor([ids], device=dev), positions[None].to(dev), self._row_cache(req.row, req.seq_len),
                             attn_mask=None if mask is None else mask[None].to(dev), hidden_layers=self.hidden_layers)
            logits, features = [out.logits[0]], [self._features(out, 0)]
        else:
            num_rows, width = running[-1].row + 1, max(len(ids) for ids, _, _ in inputs)
            token_ids = torch.zeros(num_rows, width, dtype=torch.long)
            pos = torch.zeros(num_rows, width, dtype=torch.long)
            seq_lens = torch.zeros(num_rows, dtype=torch.long)
            num_new = torch.zeros(num_rows, dtype=torch.long)
            masks = None
            if any(mask is not None for _, _, mask in inputs):
                masks = torch.ones(num_rows, width, width, dtype=torch.bool).tril()
            for req, (ids, positions, mask) in zip(running, inputs):
                b, n = req.row, len(ids)
                token_ids[b, :n], pos[b, :n] = torch.tensor(ids), positions
                seq_lens[b], num_new[b] = req.seq_len, n
                if mask is not None:
                    masks[b, :n, :n] = mask
            out = self.model(token_ids.to(dev), pos.to(dev), self.cache, seq_lens=seq_lens.to(dev), num_new=num_new.to(dev),
                             attn_mask=None if masks is None else masks.to(dev), hidden_layers=self.hidden_layers)
            sizes = [len(ids) for ids, _, _ in inputs]
            logits = list(out.logits.split(sizes))  # packed [N, V] -> rows
            features = self._features(out, None, sizes)
        results = []
        for req, draft, raw, feats in zip(running, drafts, logits, features):
            p, params = draft.proposal, req.params
            lg = raw
            if params.processes_logits:  # each row sees the history plain decoding would there
                lg = process_logits(raw, params, req.state.token_ids[: req.state.num_prompt_tokens], req.output_ids,
                                    continuations(p), req.stop_ids)
            if p.tree is None:
                result = verify(p.token_ids.to(dev), p.probs, lg[None], params, req.state.generator,
                                req.state.noise, len(req.state.token_ids))
                keep = slice(0, int(result.num_accepted[0]) + 1)
            else:
                tree_result = verify_tree(p.tree, lg, params, req.state.generator, req.state.noise,
                                          len(req.state.token_ids))
                self._row_cache(req.row, req.seq_len + p.tree.num_nodes).compact(req.seq_len, tree_result.path)
                result = tree_result.to_verify_result()
                keep = torch.tensor(tree_result.path, device=dev)
            req.state.target_hidden = None if feats is None else feats[keep]
            if params.logprobs is not None:
                draft.logprobs = token_logprobs(raw[keep], result.emitted(0), params.logprobs)
            if self.record:
                draft.features, draft.logits = req.state.target_hidden, raw[keep]
            results.append(result)
        return results

    def _commit(self, req: Request, draft: _Draft, result: VerifyResult, verify_seconds: float) -> StepOutput:
        proposal = draft.proposal
        num_draft = proposal.num_tokens
        num_accepted = int(result.num_accepted[0])
        emitted = result.output_ids[0, : num_accepted + 1].tolist()
        req.seq_len += num_accepted + 1
        fates = [FATE_ACCEPTED] * num_accepted + [
            FATE_PLAIN if num_draft == 0 else FATE_BONUS if bool(result.bonus[0]) else FATE_RECOVERED
        ]
        emitted, fates, finish = truncate_step(emitted, fates, req.num_generated, req.params, req.stop_ids)
        req.state.token_ids.extend(emitted)
        req.num_generated += len(emitted)
        draft_class = req.proposer.class_name(req.policy.draft_class) if num_draft and req.proposer is not None else None
        for stats in (req.stats, self.stats):
            stats.observe(num_draft, num_accepted, draft_class)
            stats.num_pruned_tokens += draft.num_pruned
        if req.policy.enabled:
            req.policy.observe(proposal.num_levels if num_draft else 0, num_accepted)
        if num_draft and draft.confidence is not None:
            req.policy.pruner.observe(*draft.confidence, num_accepted)
        if req.proposer is not None and not finish:
            req.proposer.observe(req.state, result)
        req.stats.verify_seconds += verify_seconds
        req.stats.num_generated_tokens = req.num_generated - 1
        req.stats.decode_seconds = time.perf_counter() - req.t_decode
        self.stats.num_generated_tokens += len(emitted)
        if finish:
            self.cancel(req.request_id)
        logprobs = draft.logprobs[: len(emitted)] if draft.logprobs is not None else None
        out = StepOutput(emitted, fates, proposal.token_ids[0].tolist(), num_accepted, finish, draft_class,
                         draft.num_pruned, logprobs)
        if self.record:  # the inputs whose next tokens were emitted
            out.features = None if draft.features is None else draft.features[: len(emitted)]
            out.logits = draft.logits[: len(emitted)]
        return out

    def _features(self, out, row: int | None, sizes: list[int] | None = None):
        """The target features at hidden_layers: [T, F] of a one-row forward (row 0), or a
        list of [T_b, F] per row of a packed ragged one; None (a list of them) without."""
        if not self.hidden_layers:
            return None if row is not None else [None] * len(sizes)
        feats = target_features(out, self.hidden_layers)
        return feats[row] if row is not None else list(feats.split(sizes))


def prune(proposal: DraftProposal, pruner, verify_cost, draft_seconds: float):
    """The part of a draft worth verifying, by its own confidence (controller.py's ConfidencePruner).

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


def stop_ids(params: SamplingParams, eos_ids: set[int]) -> set[int]:
    """The tokens that end a request: EOS unless ignore_eos, and its stop_token_ids (which
    stop it even with ignore_eos, as in vLLM)."""
    return (set() if params.ignore_eos else set(eos_ids)) | set(params.stop_token_ids)


def continuations(proposal: DraftProposal) -> list[list[int]]:
    """Per verify row, the draft tokens between the committed sequence and that row: a
    chain's row i follows drafts 0..i-1, a tree node follows its path from the root."""
    if proposal.tree is None:
        drafts = proposal.token_ids[0].tolist()
        return [drafts[:i] for i in range(len(drafts) + 1)]
    tokens, parents = proposal.tree.token_ids.tolist(), proposal.tree.parents.tolist()
    paths: list[list[int]] = [[]]
    for node in range(1, len(tokens)):  # parents come first
        paths.append(paths[parents[node]] + [tokens[node]])
    return paths


def stop_reason(tokens: list[int], num_generated: int, params: SamplingParams, stops: set[int]) -> str | None:
    """"stop" if tokens hold a stop token (`stop_ids`), "length" at max_tokens, else None."""
    if any(t in stops for t in tokens):
        return "stop"
    if num_generated >= params.max_tokens:
        return "length"
    return None


def truncate_step(emitted: list[int], fates: list[str], num_generated: int, params: SamplingParams, stops: set[int]):
    """Cut a step's tokens at the first stop token or at max_tokens; returns (tokens, fates, finish)."""
    for i, t in enumerate(emitted):
        if t in stops:
            return emitted[: i + 1], fates[: i + 1], "stop"
    room = params.max_tokens - num_generated
    if len(emitted) >= room:
        return emitted[:room], fates[:room], "length"
    return emitted, fates, None
