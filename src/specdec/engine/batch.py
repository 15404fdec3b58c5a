"""The generation loop over a batch of requests: continuous batching with speculation.

Each running request owns one row of a pre-allocated `[L, B_max, H_kv, S_max, D]` target
cache, with its own SamplingParams, generator, proposer (one per row), acceptance
estimate, statistics and cache length. Requests join (`add`) and leave (finish, `cancel`)
between steps. The steps are the `Engine`'s, per row:

    1) prefill   a new request's prompt, alone in its row (exactly `Engine`'s prefill)
    2) propose   each row names its draft class (n-gram match length; a hybrid row picks
                 n-gram or EAGLE), the planner picks k_b for every row from the batch
                 size and each row's acceptance and draft cost for that class
                 (batch_plan.py); each row's proposer drafts up to k_b tokens
    3) verify    ONE ragged target forward over every row's [last, d_1 .. d_kb]: packed
                 N = sum_b (k_b + 1) tokens, per-row cache slots and key mask (llama.py);
                 then the pure verifier per row, with that row's params and generator
    4) commit    per row: seq_len += num_accepted + 1 (the rejected drafts' entries are
                 past the row's length and get overwritten), proposer.observe; an EAGLE
                 row gets its committed tokens' target features, sliced out of the
                 packed forward's hidden states, as state.target_hidden
    5) emit      a StepOutput per row; finished rows free their slot

What is batched is the target forward (every matmul runs once over all rows' packed
tokens, attention once over the padded [B, T] layout); proposing and verifying are
per row. A step with one running row takes the exact batch-size-1 path of `Engine`, so a
solo request is token-for-token and draw-for-draw the `Engine`'s. Each row consumes its
generator in the `Engine`'s order (its proposal, then its verification), so with a seed
a batched row reproduces its solo run too, up to float rounding of the batched matmuls.

Invariant per row (as in `Engine`): the row's cache holds every committed token except
the newest, which is the first input of the next verify pass; so seq_len = committed - 1.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from specdec.config import SamplingParams, SpeculativeConfig
from specdec.engine.batch_plan import BatchCostModel, BatchPlanner, RowSpeculation
from specdec.engine.engine import (
    FATE_ACCEPTED,
    FATE_BONUS,
    FATE_PLAIN,
    FATE_RECOVERED,
    StepOutput,
    new_generator,
    stop_reason,
    target_features,
    truncate_step,
)
from specdec.engine.stats import SpecStats
from specdec.proposers.base import DraftProposal, Proposer, SequenceState
from specdec.verify import verify


@dataclass
class BatchRequest:
    """One running request: its row and everything that is its own."""

    request_id: str
    row: int
    params: SamplingParams
    state: SequenceState
    proposer: Proposer | None
    speculation: RowSpeculation
    stats: SpecStats
    seq_len: int = 0  # entries in this row's cache
    num_generated: int = 0
    t_decode: float = 0.0


def build_row_proposers(spec: SpeculativeConfig, target, dtype: str, device: str, max_seq_len: int, num_rows: int) -> list:
    """One proposer per row; a draft model is loaded once and shared (each row keeps its cache)."""
    if spec.method == "none":
        return [None] * num_rows
    if spec.method == "ngram":
        from specdec.proposers.ngram import NgramProposer

        return [NgramProposer(spec.ngram_min, spec.ngram_max) for _ in range(num_rows)]
    if spec.method == "draft":
        from specdec.proposers.draft_model import DraftModelProposer, check_tokenizers
        from specdec.proposers.factory import resolve_draft

        draft = resolve_draft(spec.draft_model, target, dtype, device, max_seq_len)
        check_tokenizers(target.tokenizer, draft.tokenizer, target.config.vocab_size, draft.config.vocab_size)
        return [DraftModelProposer(draft, max_seq_len) for _ in range(num_rows)]
    if spec.method in ("eagle", "hybrid"):
        from specdec.proposers.factory import build_eagle, build_eagle_head
        from specdec.proposers.hybrid import HybridProposer
        from specdec.proposers.ngram import NgramProposer

        if spec.tree_nodes:
            raise ValueError("tree drafts are not batched: serve EAGLE chains (tree_nodes 0)")
        head = build_eagle_head(spec, target, dtype)  # one head, a cache per row
        eagles = [build_eagle(spec, target, dtype, max_seq_len, head) for _ in range(num_rows)]
        if spec.method == "eagle":
            return eagles
        return [HybridProposer(NgramProposer(spec.ngram_min, spec.ngram_max), e) for e in eagles]
    raise ValueError(f"speculative method {spec.method!r} is not available for batched serving")


class BatchEngine:
    def __init__(
        self,
        target,  # LoadedModel with the native model
        proposers: list[Proposer | None],  # one per row; len = max batch size
        spec: SpeculativeConfig | None = None,
        max_seq_len: int = 4096,
        cost: BatchCostModel | None = None,
    ) -> None:
        from specdec.models.llama import LlamaModel

        if not isinstance(target.model, LlamaModel):
            raise ValueError("batched serving needs a native Llama-family target (not the transformers adapter)")
        if not proposers:
            raise ValueError("need at least one row (one proposer entry per row, None for plain)")
        layers = {tuple(getattr(p, "target_hidden_layers", ())) for p in proposers if p is not None}
        if len(layers) > 1:
            raise ValueError(f"the rows' proposers read different target layers {sorted(layers)}; one forward serves all")
        # EAGLE heads read the target's features at these layers: every forward returns them
        self.hidden_layers: tuple[int, ...] = layers.pop() if layers else ()
        self.target = target
        self.model = target.model
        self.spec = spec or SpeculativeConfig()
        self.proposers = proposers
        self.max_batch_size = len(proposers)
        self.max_seq_len = min(max_seq_len, self.model.max_seq_len)
        self.cache = self.model.new_cache(self.max_batch_size, self.max_seq_len)
        self.cost = cost
        self.planner = BatchPlanner(cost)
        self.eos_ids = set(target.config.eos_token_ids)
        eos = getattr(target.tokenizer, "eos_token_id", None)
        if eos is not None:
            self.eos_ids.add(eos)
        self.stats = SpecStats()  # aggregate over every request, for metrics
        self._requests: dict[str, BatchRequest] = {}
        self._rows: list[str | None] = [None] * self.max_batch_size

    @property
    def device(self) -> torch.device:
        return self.model.device

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

    @torch.inference_mode()
    def add(
        self, request_id: str, prompt_ids: list[int], params: SamplingParams, speculative: bool = True
    ) -> tuple[BatchRequest, StepOutput]:
        """1) prefill a new request into a free row; returns it and its first token."""
        self.check_request(prompt_ids, params)
        if request_id in self._requests:
            raise ValueError(f"request id {request_id!r} is already running")
        if not self.num_free:
            raise RuntimeError(f"all {self.max_batch_size} rows are busy")
        row = self._rows.index(None)
        generator = new_generator(params.seed, self.device)
        state = SequenceState(list(prompt_ids), len(prompt_ids), params, generator)
        proposer = self.proposers[row] if speculative else None
        speculation = RowSpeculation(self.spec, enabled=proposer is not None)
        req = BatchRequest(request_id, row, params, state, proposer, speculation, SpecStats())
        t0 = time.perf_counter()
        ids = torch.tensor([prompt_ids], device=self.device)
        positions = torch.arange(len(prompt_ids), device=self.device)[None]
        view = self.cache.row_view(row, 0)
        out = self.model(ids, positions, view, hidden_layers=self.hidden_layers, logits_indices=slice(-1, None))
        result = verify(ids[:, :0], None, out.logits, params, generator)
        first = int(result.output_ids[0, 0])
        state.token_ids.append(first)
        state.target_hidden = self._hidden(out, solo=True)
        if proposer is not None:
            proposer.start(state)
        req.seq_len = len(prompt_ids)
        req.num_generated = 1
        req.stats.prefill_seconds += time.perf_counter() - t0
        req.t_decode = time.perf_counter()
        finish = stop_reason([first], 1, params, self.eos_ids)
        if not finish:
            self._requests[request_id] = req
            self._rows[row] = request_id
        return req, StepOutput([first], [FATE_PLAIN], [], 0, finish)

    def cancel(self, request_id: str) -> bool:
        """Free a running request's row between steps; False if it is not running."""
        req = self._requests.pop(request_id, None)
        if req is None:
            return False
        self._rows[req.row] = None
        return True

    @torch.inference_mode()
    def step(self) -> list[tuple[BatchRequest, StepOutput]]:
        """One decode step over every running row: 2) propose 3) verify 4) commit 5) emit."""
        running = sorted(self._requests.values(), key=lambda r: r.row)
        if not running:
            return []
        # 2) propose
        rooms = [
            min(r.params.max_tokens - r.num_generated - 1, self.max_seq_len - r.seq_len - 1) for r in running
        ]
        for req in running:
            if req.proposer is not None:
                req.speculation.select(self._choose_class(req))
        ks = self.planner.plan([r.speculation for r in running], rooms)
        proposals = []
        for req, k in zip(running, ks):
            t0 = time.perf_counter()
            bucket = req.speculation.bucket
            if k > 0 and hasattr(req.proposer, "draft_options"):
                proposal = req.proposer.propose(req.state, k, bucket=bucket)
            elif k > 0:
                proposal = req.proposer.propose(req.state, k)
            else:
                proposal = DraftProposal(torch.empty(1, 0, dtype=torch.long))
            proposals.append(proposal)
            seconds = time.perf_counter() - t0
            req.stats.draft_seconds += seconds
            if proposal.num_tokens:
                req.speculation.observe_draft_cost(bucket, seconds / proposal.num_tokens)
                if self.cost is not None:
                    self.cost.observe_draft(seconds / proposal.num_tokens)

        # 3) verify: one target forward over every row's newest token and drafts
        t_verify = time.perf_counter()
        logits, hidden = self._forward(running, proposals)
        results = [
            verify(p.token_ids.to(self.device), p.probs, lg[None], r.params, r.state.generator)
            for r, p, lg in zip(running, proposals, logits)
        ]
        verify_seconds = time.perf_counter() - t_verify

        # 4) commit / rollback, 5) emit
        outputs = []
        for req, proposal, result, h in zip(running, proposals, results, hidden):
            outputs.append((req, self._commit(req, proposal, result, verify_seconds, h)))
        if self.cost is not None:
            # the step's cost at N beside the drafting: the forward, and the per-row
            # verification, commits and proposer updates that grow with the drafts
            # (at 8 rows in float32 they turned drafting that the forward alone would
            # pay for into a loss)
            self.cost.observe_forward(sum(len(lg) for lg in logits), time.perf_counter() - t_verify)
        return outputs

    def _choose_class(self, req: BatchRequest) -> int | None:
        """The row's coming draft class, as `Engine._choose_class` (proposers/base.py)."""
        options = getattr(req.proposer, "draft_options", None)
        if options is not None:
            return req.speculation.pick(options(req.state), self.cost)
        bucket = getattr(req.proposer, "draft_bucket", None)
        return bucket(req.state) if bucket is not None else None

    def _hidden(self, out, solo: bool, sizes: list[int] | None = None):
        """The target features at self.hidden_layers: [T, F] for a one-row forward, else a
        list of [T_b, F] per row of a packed ragged one (None without EAGLE rows)."""
        if not self.hidden_layers:
            return None if solo else [None] * len(sizes)
        if solo:
            return target_features(out, self.hidden_layers, 0)
        return list(target_features(out, self.hidden_layers).split(sizes))  # packed [N, F] -> rows

    def _forward(self, running: list[BatchRequest], proposals: list[DraftProposal]):
        """Target logits [k_b + 1, V] per row, from one forward, and the rows' features
        [k_b + 1, F] (None each without EAGLE rows)."""
        dev = self.device
        inputs = [[r.state.token_ids[-1]] + p.token_ids[0].tolist() for r, p in zip(running, proposals)]
        if len(running) == 1:  # the exact Engine path
            req, ids = running[0], inputs[0]
            view = self.cache.row_view(req.row, req.seq_len)
            positions = torch.arange(req.seq_len, req.seq_len + len(ids), device=dev)[None]
            out = self.model(torch.tensor([ids], device=dev), positions, view, hidden_layers=self.hidden_layers)
            return [out.logits[0]], [self._hidden(out, solo=True)]
        num_rows = running[-1].row + 1
        num_tokens = max(len(ids) for ids in inputs)
        token_ids = torch.zeros(num_rows, num_tokens, dtype=torch.long)
        positions = torch.zeros(num_rows, num_tokens, dtype=torch.long)
        seq_lens = torch.zeros(num_rows, dtype=torch.long)
        num_new = torch.zeros(num_rows, dtype=torch.long)
        for req, ids in zip(running, inputs):
            b, n = req.row, len(ids)
            token_ids[b, :n] = torch.tensor(ids)
            positions[b, :n] = torch.arange(req.seq_len, req.seq_len + n)
            seq_lens[b], num_new[b] = req.seq_len, n
        out = self.model(token_ids.to(dev), positions.to(dev), self.cache, seq_lens=seq_lens.to(dev), num_new=num_new.to(dev),
                         hidden_layers=self.hidden_layers)
        sizes = [len(ids) for ids in inputs]
        return list(out.logits.split(sizes)), self._hidden(out, solo=False, sizes=sizes)  # packed [N, .] -> rows

    def _commit(self, req: BatchRequest, proposal: DraftProposal, result, verify_seconds: float, hidden=None) -> StepOutput:
        num_draft = proposal.num_tokens
        num_accepted = int(result.num_accepted[0])
        emitted = result.output_ids[0, : num_accepted + 1].tolist()
        req.seq_len += num_accepted + 1
        if hidden is not None:  # the committed tokens' features, for an EAGLE row's observe
            req.state.target_hidden = hidden[: num_accepted + 1]
        fates = [FATE_ACCEPTED] * num_accepted + [
            FATE_PLAIN if num_draft == 0 else FATE_BONUS if num_accepted == num_draft else FATE_RECOVERED
        ]
        emitted, fates, finish = truncate_step(emitted, fates, req.num_generated, req.params, self.eos_ids)
        req.state.token_ids.extend(emitted)
        req.num_generated += len(emitted)
        bucket = req.speculation.bucket
        name = getattr(req.proposer, "class_name", None)
        draft_class = name(bucket) if num_draft and bucket is not None and name else None
        req.stats.observe(num_draft, num_accepted, draft_class)
        self.stats.observe(num_draft, num_accepted, draft_class)
        req.speculation.observe(num_draft, num_accepted)
        if req.proposer is not None and not finish:
            req.proposer.observe(req.state, result)
        req.stats.verify_seconds += verify_seconds
        req.stats.num_generated_tokens = req.num_generated - 1
        req.stats.decode_seconds = time.perf_counter() - req.t_decode
        self.stats.num_generated_tokens += len(emitted)
        if finish:
            self.cancel(req.request_id)
        return StepOutput(emitted, fates, proposal.token_ids[0].tolist(), num_accepted, finish, draft_class)
