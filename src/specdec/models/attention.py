"""Attention of T new queries over the KV cache, and its batch-invariant variant.

    plan = plan_attention(start, num_new, rep, attn_mask=None, invariant=False, ...)
    out = attend(q [B, T, H, D], k_cache [B, H_kv, S_max, D], v_cache, plan) -> [B, T, H*D]

The plan is built once per forward and shared by every layer. Queries that share a KV
head are folded into one SDPA call without repeating K/V (GQA): rep = H / H_kv.

Native plan (CPU, bfloat16 or float32, one sequence, a C compiler: models/native.py): the
engine's C kernel computes each query row's result from its own query and the keys it may
see, in slot order, by the same steps whatever else the call holds (csrc/attention.c), so
a decode step and a chain or tree verify pass agree with no padding and no thread pinning.
It serves every pass in batch-invariant mode (prefill included: both plain and speculative
decoding prefill the same way, and invariance must not hinge on a length threshold) and,
outside it, passes of up to NATIVE_MAX_ROWS tokens, where it is faster than SDPA for decode
steps and verify passes alike (tests/test_native.py checks it against SDPA; the speed is
measured by `specdec bench` with SPECDEC_NATIVE=0 against the default).
Tree drafts are invariant too: node i sees the prefix and its
ancestors, which after `KVCache.compact` are the decode step's keys in the same order.

The PyTorch plans below remain for CUDA, float16, batched rows and machines without a
C compiler (SPECDEC_NATIVE=0 selects them; tests compare them with the kernel).

Standard plan: one SDPA call over cache slots [0, start + T); new token i sees the whole
prefix and, among the new tokens, itself and its predecessors (causal) or what
`attn_mask` [B, T, T] allows (tree drafts). A single new token needs no mask.

Batch-invariant plan: a verify pass must score slot i bit for bit as a single-token
decode at slot i does, or greedy speculative output drifts from plain output at
near-ties (bfloat16 especially). On CPU, SDPA's result for one query
depends on (1) how many keys the call reads, (2) how many query rows share its GEMM,
and (3) how the flash kernel spreads its (batch, head) items over threads (a decode
step's 3 items on 2 threads differ, rarely, from the same items in a larger call; seen
in float32 and bfloat16). The invariant plan fixes all three, for decode steps and
chain verify passes alike:
  - every query is its own SDPA batch entry (K/V expanded over the entries, not
    copied) with its rep rows, so each GEMM has the shape a decode step's has;
  - the query at slot i reads slots [0, S(i)), S(i) = i + 1 rounded up to KEY_BLOCK
    (the cache allocates whole blocks), with an additive mask of -inf past slot i; the masked
    slots hold finite stale or draft entries whose weights are exactly 0, and queries
    with different S(i) go to separate calls;
  - attention runs on one thread (CPU), so every item runs alone on the same thread.
Worked example, KEY_BLOCK 64, chain verify at slots 62..65 (T = 4): queries at 62 and
63 read slots [0, 64), those at 64 and 65 read [0, 128); a decode step at slot 63
reads [0, 64) with the same mask row, so both compute the identical sum.

In bfloat16 on CPU the invariant plan skips SDPA, whose one call per query on one thread
makes a verify pass at long contexts spend most of its time in attention. The group's queries are folded into the rows of
batched matmuls instead, softmax(scale * q k^T + mask) v with float32 scores and softmax
(the math of transformers' eager attention). Each KV head's GEMMs get rep * T rows
(padded to 2 when that is 1), and oneDNN's bfloat16 matmul gives a row the same bits in
any product of >= 2 rows, for any key count and thread count (tests/test_batch_invariance.py
checks T = 1..17, S = 64..4096, 1 and 2 threads), so it needs neither per-query calls nor
one thread. The keys are copied contiguous first: bmm over the cache's strided batch copies
them transposed, which is slower. float32 keeps the SDPA plan: its batched matmul (MKL) is
not row-invariant. Quantized models keep it too (`LlamaModel.fold_attention`, cleared by
quantize_model): their decode step is long, so folding's extra work per decode step (a
contiguous key copy and two GEMM calls per layer against one SDPA call) costs a visible
share of plain decoding, while their verify passes stay short (the int4 kernel's cost steps
every 4 rows; benchmarks/quant_speed.py measures both).
Tree masks are not supported: a tree node's keys (prefix plus its ancestors) are not a
prefix of the cache, and gathering them per node costs more than the tree saves.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from specdec.models.native import native_attention, native_attention_supported

KEY_BLOCK = 64
# Outside batch-invariant mode the C kernel takes passes of up to this many new tokens
# (decode steps, verify passes, short prompts); longer ones (prefill) go to SDPA, which
# catches up with the kernel around this many tokens at long contexts.
NATIVE_MAX_ROWS = 64


@dataclass
class AttentionGroup:
    first: int  # first query (index into the T new tokens)
    num_queries: int
    num_keys: int  # S: slots [0, S) read
    mask: torch.Tensor  # [num_queries, 1, rep, S] additive: 0 or -inf; folded: [num_queries*rep, S] float32


@dataclass
class AttentionPlan:
    num_keys: int  # slots [0, num_keys) hold the prefix and the new tokens
    mask: torch.Tensor | None = None  # standard: [B, 1, rep*T, S] bool, True = may attend
    groups: tuple[AttentionGroup, ...] = ()  # batch-invariant: one call per group
    single_thread: bool = False
    folded: bool = False  # batch-invariant groups as batched matmuls, not SDPA (bfloat16)
    native: bool = False  # the C kernel (models/native.py): row by row, invariant by construction
    start: int = 0  # native: slot of the first new token
    native_mask: torch.Tensor | None = None  # native: [T, T] uint8 over the new tokens; None = causal

    @property
    def invariant(self) -> bool:
        return bool(self.groups)


def plan_attention(
    start: int,
    num_new: int,
    rep: int,
    attn_mask: torch.Tensor | None = None,  # [B, T, T] bool over the new tokens
    batch_size: int = 1,
    invariant: bool = False,
    max_keys: int | None = None,  # slots the cache tensors hold (a multiple of KEY_BLOCK)
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    fold: bool = True,  # allow the folded invariant plan (CPU bfloat16); False: per-query SDPA
    head_dim: int = 64,
    native: bool = True,  # allow the C kernel; False: the pure-PyTorch plans below
) -> AttentionPlan:
    end = start + num_new
    if native and batch_size == 1 and (invariant or num_new <= NATIVE_MAX_ROWS) and native_attention_supported(dtype, device, head_dim):
        mask = None if attn_mask is None else attn_mask.reshape(num_new, num_new).to(device="cpu", dtype=torch.uint8).contiguous()
        return AttentionPlan(end, native=True, start=start, native_mask=mask)
    if invariant:
        if attn_mask is not None:
            raise ValueError("batch-invariant attention verifies chains only; tree drafts need batch_invariant=False")
        if batch_size != 1:
            raise ValueError(f"batch-invariant attention runs one sequence, got batch size {batch_size}")
        return _invariant_plan(start, num_new, rep, max_keys or end, dtype, device, fold)
    if attn_mask is None and num_new == 1:
        return AttentionPlan(end)
    if attn_mask is None:
        new = torch.ones(num_new, num_new, dtype=torch.bool, device=device).tril().expand(batch_size, num_new, num_new)
    else:
        new = attn_mask.to(device=device, dtype=torch.bool)
    prefix = torch.ones(batch_size, num_new, start, dtype=torch.bool, device=device)
    mask = torch.cat((prefix, new), dim=-1)  # [B, T, S]
    return AttentionPlan(end, mask.unsqueeze(1).repeat(1, 1, rep, 1))


def _invariant_plan(start, num_new, rep, max_keys, dtype, device, fold=True) -> AttentionPlan:
    slots = range(start, start + num_new)
    padded = [-(-(s + 1) // KEY_BLOCK) * KEY_BLOCK for s in slots]
    if padded[-1] > max_keys:
        raise ValueError(f"batch-invariant attention reads {padded[-1]} slots; the cache holds {max_keys} (allocate it with pad_to=KEY_BLOCK)")
    folded = fold and dtype == torch.bfloat16 and torch.device(device).type == "cpu"
    groups = []
    first = 0
    while first < num_new:
        n = 1
        while first + n < num_new and padded[first + n] == padded[first]:
            n += 1
        keys = padded[first]
        visible = torch.arange(keys, device=device)[None] <= torch.arange(start + first, start + first + n, device=device)[:, None]
        mask_dtype = torch.float32 if folded else dtype
        mask = torch.zeros(n, keys, dtype=mask_dtype, device=device).masked_fill_(~visible, float("-inf"))
        if folded:  # row j * rep + r: query j, head r of its KV group
            mask = mask[:, None, :].expand(n, rep, keys).reshape(n * rep, keys)
        else:
            mask = mask[:, None, None, :].expand(n, 1, rep, keys)
        groups.append(AttentionGroup(first, n, keys, mask))
        first += n
    single_thread = not folded and torch.device(device).type == "cpu"
    return AttentionPlan(start + num_new, groups=tuple(groups), single_thread=single_thread, folded=folded)


@contextmanager
def _threads(single: bool):
    if not single:
        yield
        return
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def attend(
    q: torch.Tensor,  # [B, T, H, D], RoPE applied
    k_cache: torch.Tensor,  # [B, H_kv, S_max, D], the new tokens already written
    v_cache: torch.Tensor,
    plan: AttentionPlan,
) -> torch.Tensor:  # [B, T, H*D]
    b, t, h, d = q.shape
    h_kv = k_cache.shape[1]
    rep = h // h_kv
    if plan.native:
        return native_attention(q, k_cache, v_cache, plan.start, plan.native_mask)
    if plan.folded:
        return _attend_folded(q, k_cache, v_cache, plan)
    if plan.invariant:
        qs = q.reshape(t, h_kv, rep, d)  # B = 1: query t is batch entry t
        outs = []
        with _threads(plan.single_thread):
            for g in plan.groups:
                keys = k_cache[:, :, : g.num_keys].expand(g.num_queries, h_kv, g.num_keys, d)
                values = v_cache[:, :, : g.num_keys].expand(g.num_queries, h_kv, g.num_keys, d)
                outs.append(F.scaled_dot_product_attention(qs[g.first : g.first + g.num_queries], keys, values, attn_mask=g.mask))
        out = outs[0] if len(outs) == 1 else torch.cat(outs)  # [T, H_kv, rep, D]
        return out.view(1, t, h * d)
    # rows (r, t) of the fold match the mask's repeat over rep
    qf = q.transpose(1, 2).reshape(b, h_kv, rep * t, d)
    s = plan.num_keys
    out = F.scaled_dot_product_attention(qf, k_cache[:, :, :s], v_cache[:, :, :s], attn_mask=plan.mask)
    return out.view(b, h, t, d).transpose(1, 2).reshape(b, t, h * d)


def _attend_folded(q, k_cache, v_cache, plan: AttentionPlan) -> torch.Tensor:
    """Batch-invariant attention as batched matmuls, one group at a time (module docstring)."""
    _, t, h, d = q.shape
    h_kv = k_cache.shape[1]
    rep = h // h_kv
    scale = 1.0 / math.sqrt(d)
    outs = []
    for g in plan.groups:
        n, s = g.num_queries, g.num_keys
        qg = q[0, g.first : g.first + n].view(n, h_kv, rep, d).transpose(0, 1).reshape(h_kv, n * rep, d)
        if n * rep == 1:  # a one-row GEMM takes another kernel: pad to two rows, keep one
            qg = qg.expand(h_kv, 2, d)
        scores = torch.bmm(qg, k_cache[0, :, :s].contiguous().transpose(1, 2))  # [H_kv, n * rep, S]
        weights = torch.softmax(torch.add(g.mask, scores, alpha=scale), dim=-1).to(q.dtype)
        out = torch.bmm(weights, v_cache[0, :, :s])[:, : n * rep]  # [H_kv, n * rep, D]
        outs.append(out.view(h_kv, n, rep, d).transpose(0, 1).reshape(n, h * d))
    out = outs[0] if len(outs) == 1 else torch.cat(outs)
    return out.view(1, t, h * d)
