"""One native transformer for the Llama family: Llama 2/3, SmolLM/SmolLM2, Mistral, Qwen2.

Differences come from `ModelConfig`: grouped-query attention, tied embeddings, qkv bias,
rope theta and scaling. Weights use Hugging Face's layout (rotate-half RoPE), with
q/k/v fused into one projection and gate/up fused into another, so each layer runs
three matmuls of the four a naive port would, and two instead of three in the MLP.

    forward(token_ids [B, T], positions [B, T], cache, attn_mask=None, hidden_layers=())
        -> ModelOutput(logits [B, T', V], hidden_states {layer: [B, T, D]})

The T new tokens are written to cache slots [cache.length, cache.length + T). Positions
drive RoPE only, so tree nodes can share a position. `attn_mask` ([B, T, T] bool, True
= may attend) masks the new tokens among themselves; every new token sees the whole
cached prefix. Without a mask the new tokens are causal.

Ragged batches (the server's batch engine) pass `seq_lens` [B]: row b's cache holds
seq_lens[b] tokens and its first `num_new[b]` of the T inputs are real (the rest is
padding). Only real tokens are computed: they are packed into N = sum(num_new) rows for
every matmul, their K/V go to row b's slots [seq_lens[b], seq_lens[b] + num_new[b]), and
elsewhere attention runs once over the padded [B, T] layout with a per-row key mask. Row b's
new tokens see its whole cached prefix and, among themselves, are causal, or, with
`attn_mask` [B, T, T] bool, see what attn_mask[b, :num_new[b], :num_new[b]] allows (an
EAGLE-2 tree verified per row; positions carry the nodes' depths for RoPE). Entries past
num_new[b] are ignored, and a row whose mask is causal there runs as the causal row it is.
A row with an empty cache whose mask leaves a token no key is an error. The caller owns the
per-row lengths (`cache.length` is not touched) and gets packed logits [N, V]. Worked
example: seq_lens [5, 2], num_new [3, 1], T = 3: N = 4 tokens, row 0 writes slots 5..7 and
row 1 slot 2; row 1's query sees keys 0..2, row 0's last sees 0..7 (or, with a tree mask
whose last row is [1, 0, 1], keys 0..4, 5 and 7).
On the CPU in float32 and bfloat16 attention takes the C kernel's ragged entry instead
(`native_attention_rows`, each tree row's [n, n] mask packed into one uint8 buffer per
forward): each row's queries over its own cache, no padding, and each row bit for bit what
the kernel computes for that sequence alone with the same mask; where every piece is native
the whole ragged batch runs through the C stack (`NativeStack.forward_rows`).

One sequence on the CPU, with every piece native (the C linears, norms, SwiGLU and an
attention plan of the C kernel), runs the whole decoder stack as one C call
(`LlamaModel.native_stack`, csrc/layers.c): the same kernels with RoPE, the cache writes and
the residual adds in C, bit for bit the layers' result, without the Python and ATen calls of
each layer. Replacing modules or parameters afterwards (quantize_model,
pack_linears_for_cpu, `to()`) drops it, and the next forward builds it again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from specdec.cache import KVCache
from specdec.config import ModelConfig
from specdec.models.attention import KEY_BLOCK, AttentionPlan, attend, plan_attention
from specdec.models.native import (
    MAX_HEAD_DIM,
    NativeStack,
    native_attention_rows,
    native_attention_supported,
    native_enabled,
    native_library,
    native_rms_norm,
    native_rms_norm_supported,
    native_swiglu,
    native_swiglu_supported,
)


@dataclass
class RowLayout:
    """Where the real tokens of a ragged batch forward live (see the module docstring)."""

    valid: torch.Tensor  # [B, T] bool, True at real tokens
    row_ids: torch.Tensor  # [N] int64, cache row of each real token (row-major order)
    slots: torch.Tensor  # [N] int64, cache slot of each real token
    num_keys: int  # S = max(seq_lens + num_new): the key slots attention reads
    mask: torch.Tensor | None  # [B, 1, rep*T, S] bool, True = may attend (SDPA); None with `native`
    native: bool = False  # attention through the C kernel's ragged entry (native_attention_rows)
    offsets: torch.Tensor | None = None  # native: [B + 1] int64 CPU, row b's packed tokens [offsets[b], offsets[b+1])
    starts: torch.Tensor | None = None  # native: [B] int64 CPU, seq_lens
    masks: torch.Tensor | None = None  # native: 1-D uint8 CPU, the tree rows' [n_b, n_b] masks packed; None: all causal
    mask_offsets: torch.Tensor | None = None  # native: [B] int64 CPU, row b's mask at masks[mask_offsets[b]]; -1: causal


@dataclass
class ModelOutput:
    logits: torch.Tensor  # [B, T', V]: T' = T, or len(logits_indices)
    hidden_states: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> [B, T, D]


def rope_inv_freq(config: ModelConfig) -> torch.Tensor:
    """Inverse frequencies [D/2], with Llama 3 / linear scaling applied."""
    d = config.head_dim
    inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
    scaling = config.rope_scaling or {}
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind in (None, "default"):
        return inv_freq.float()
    if kind == "linear":
        return (inv_freq / scaling["factor"]).float()
    if kind == "llama3":
        factor = scaling["factor"]
        low, high = scaling.get("low_freq_factor", 1.0), scaling.get("high_freq_factor", 4.0)
        old_len = scaling["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv_freq
        smooth = (old_len / wavelen - low) / (high - low)
        scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
        mid = (wavelen <= old_len / low) & (wavelen >= old_len / high)
        blended = (1 - smooth) * inv_freq / factor + smooth * inv_freq
        return torch.where(mid, blended, scaled).float()
    raise ValueError(f"unsupported rope_scaling type {kind!r} (supported: linear, llama3)")


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # float32 statistics and weight product, one rounding at the end: closer to the
        # float32 result than transformers' formula (cast back, then the weight in bfloat16;
        # tests/test_model.py compares the two). On CPU the engine's C kernel does it in one
        # call, cheaper than F.rms_norm's for a decode step's row (models/native.py);
        # F.rms_norm elsewhere and for training. Mixed dtypes take transformers' formula.
        if native_rms_norm_supported(x, self.weight):
            return native_rms_norm(x, self.weight, self.eps)
        if x.dtype == self.weight.dtype:
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
        return self.weight * F.rms_norm(x.float(), self.weight.shape, None, self.eps).to(x.dtype)


def rope_tables(config: ModelConfig, length: int, dtype: torch.dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, signed sin [length, D] for `apply_rope`: sin's first half is negated."""
    inv_freq = rope_inv_freq(config)
    freqs = torch.outer(torch.arange(length, dtype=torch.float32), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    half = config.head_dim // 2
    sign = torch.cat((-torch.ones(half), torch.ones(half)))
    return emb.cos().to(device, dtype), (emb.sin() * sign).to(device, dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE: x * cos + cat(-x2, x1) * sin, with cat(-x2, x1) * sin computed as
    roll(x, D/2) * signed sin (the same products, bit for bit, in fewer kernels).

    x [..., H, D]; cos, sin broadcast to it ([B, T, 1, D], or [N, 1, D] for packed rows).
    """
    return x * cos + x.roll(x.shape[-1] // 2, -1) * sin


class Attention(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.num_heads = config.num_heads
        self.num_kv_heads = config.num_kv_heads
        self.head_dim = config.head_dim
        q_dim = config.num_heads * config.head_dim
        kv_dim = config.num_kv_heads * config.head_dim
        self.wqkv = nn.Linear(config.hidden_size, q_dim + 2 * kv_dim, bias=config.attention_bias)
        self.wo = nn.Linear(q_dim, config.hidden_size, bias=False)

    def forward(
        self,
        x: torch.Tensor,  # [B, T, D_model]
        cos: torch.Tensor,  # [B, T, 1, D]
        sin: torch.Tensor,
        k_cache: torch.Tensor,  # [B, H_kv, S_max, D]
        v_cache: torch.Tensor,
        start: int,
        plan: AttentionPlan | None,
        rows: RowLayout | None = None,
    ) -> torch.Tensor:
        if rows is not None:
            return self._forward_rows(x, cos, sin, k_cache, v_cache, rows)
        b, t, _ = x.shape
        h, h_kv, d = self.num_heads, self.num_kv_heads, self.head_dim
        qkv = self.wqkv(x).view(b, t, h + 2 * h_kv, d)
        qk = apply_rope(qkv[:, :, : h + h_kv], cos, sin)  # q and k heads in one pass
        k_cache[:, :, start : start + t] = qk[:, :, h:].transpose(1, 2)
        v_cache[:, :, start : start + t] = qkv[:, :, h + h_kv :].transpose(1, 2)
        return self.wo(attend(qk[:, :, :h], k_cache, v_cache, plan))

    def _forward_rows(self, x, cos, sin, k_cache, v_cache, rows: RowLayout) -> torch.Tensor:
        # x [N, D_model] packed real tokens; cos, sin [N, 1, D]
        n = x.shape[0]
        h, h_kv, d = self.num_heads, self.num_kv_heads, self.head_dim
        b, t = rows.valid.shape
        qkv = self.wqkv(x).view(n, h + 2 * h_kv, d)
        qk = apply_rope(qkv[:, : h + h_kv], cos, sin)
        q = qk[:, :h]
        k_cache[rows.row_ids, :, rows.slots] = qk[:, h:]  # [N, H_kv, D] into per-row slots
        v_cache[rows.row_ids, :, rows.slots] = qkv[:, h + h_kv :]
        if rows.native:
            return self.wo(native_attention_rows(q, k_cache, v_cache, rows.offsets, rows.starts, rows.masks, rows.mask_offsets))
        q_pad = q.new_zeros(b, t, h, d)
        q_pad[rows.valid] = q
        rep = h // h_kv
        q_pad = q_pad.transpose(1, 2).reshape(b, h_kv, rep * t, d)  # GQA fold as above
        keys = k_cache[:b, :, : rows.num_keys]
        values = v_cache[:b, :, : rows.num_keys]
        out = F.scaled_dot_product_attention(q_pad, keys, values, attn_mask=rows.mask)
        out = out.view(b, h, t, d).transpose(1, 2)[rows.valid]  # [N, H, D]
        return self.wo(out.reshape(n, h * d))


class MLP(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.w13 = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=False)
        self.w2 = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate_up = self.w13(x)
        if native_swiglu_supported(gate_up):
            return self.w2(native_swiglu(gate_up))
        gate, up = gate_up.chunk(2, dim=-1)
        return self.w2(F.silu(gate) * up)


class DecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.attn = Attention(config)
        self.mlp_norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = MLP(config)

    def forward(self, x, cos, sin, k_cache, v_cache, start, plan, rows=None):
        x = x + self.attn(self.attn_norm(x), cos, sin, k_cache, v_cache, start, plan, rows)
        return x + self.mlp(self.mlp_norm(x))


def native_stack_possible(module: nn.Module, dtype: torch.dtype, head_dim: int) -> bool:
    """The checks of the C stack (csrc/layers.c) that do not look at the layers' structure."""
    return (
        native_enabled() and dtype in (torch.float32, torch.bfloat16) and head_dim <= MAX_HEAD_DIM and head_dim % 2 == 0
        and all(p.device.type == "cpu" and not p.requires_grad for p in module.parameters())
        and native_library() is not None
    )


def native_layer_weights(layer: DecoderLayer, dtype: torch.dtype) -> tuple | None:
    """One layer's tensors for `NativeStack`, or None where a piece of it is not native. An
    nn.Identity attn_norm (the EAGLE-1 head's layer) is passed as None."""
    from specdec.models.linear import PackedLinear

    if type(layer) is not DecoderLayer or type(layer.attn) is not Attention or type(layer.mlp) is not MLP:
        return None
    linears = (layer.attn.wqkv, layer.attn.wo, layer.mlp.w13, layer.mlp.w2)
    if not all(type(m) is PackedLinear and m.packed_weight.dtype == dtype for m in linears):
        return None
    if any(m.bias is not None for m in linears[1:]):
        return None
    attn_norm = None if type(layer.attn_norm) is nn.Identity else layer.attn_norm
    if not all(type(n) is RMSNorm and n.weight.dtype == dtype for n in (attn_norm or layer.mlp_norm, layer.mlp_norm)):
        return None
    bias = layer.attn.wqkv.bias
    return (
        None if attn_norm is None else attn_norm.weight.detach().contiguous(), layer.attn.wqkv.packed_weight,
        None if bias is None else bias.detach().float().contiguous(), layer.attn.wo.packed_weight,
        layer.mlp_norm.weight.detach().contiguous(), layer.mlp.w13.packed_weight, layer.mlp.w2.packed_weight,
    )


class NativeStackHolder:
    """A module whose layers can run as a `NativeStack`: built at first use by the subclass's
    `_build_native_stack`, dropped when parameters move or change (`to()`, `requires_grad_`)
    or modules are swapped (`drop_native_stack`, called by pack_linears_for_cpu and
    quantize_model). `use_native_stack = False` keeps the PyTorch layers (tests compare them)."""

    use_native_stack = True
    _native_stack: NativeStack | None = None
    _native_stack_built = False

    def _build_native_stack(self) -> NativeStack | None:
        raise NotImplementedError

    def drop_native_stack(self) -> None:
        """Forget the C stack's pointers into the weights; the next forward rebuilds it."""
        self._native_stack, self._native_stack_built = None, False

    def _apply(self, fn, *args, **kwargs):
        self.drop_native_stack()
        return super()._apply(fn, *args, **kwargs)

    def requires_grad_(self, requires_grad: bool = True):
        self.drop_native_stack()
        return super().requires_grad_(requires_grad)

    def native_stack(self) -> NativeStack | None:
        """The layers as one C call where every piece of them is native, else None."""
        if not self._native_stack_built:
            self._native_stack, self._native_stack_built = self._build_native_stack(), True
        return self._native_stack


class LlamaModel(NativeStackHolder, nn.Module):
    def __init__(self, config: ModelConfig, max_seq_len: int | None = None) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.embed.weight
        self.max_seq_len = max_seq_len or config.max_position_embeddings
        # Batch-invariant attention (models/attention.py); the linears' half of it is
        # CPULinear.pad_single_row. Set together by `set_batch_invariant`.
        self.batch_invariant = False
        self.fold_attention = True  # the folded bfloat16 invariant plan (models/attention.py)
        self._rope_cache: tuple[torch.Tensor, torch.Tensor] | None = None

    def _build_native_stack(self) -> NativeStack | None:
        c, dtype = self.config, self.dtype
        if not native_stack_possible(self.layers, dtype, c.head_dim):
            return None
        layers = [native_layer_weights(layer, dtype) for layer in self.layers]
        if any(layer is None for layer in layers) or len({n.eps for layer in self.layers for n in (layer.attn_norm, layer.mlp_norm)}) > 1:
            return None
        eps = self.layers[0].mlp_norm.eps if len(self.layers) else c.rms_norm_eps
        return NativeStack(layers, c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim, c.intermediate_size, eps, dtype)

    @property
    def dtype(self) -> torch.dtype:
        return self.embed.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.embed.weight.device

    def new_cache(self, batch_size: int = 1, max_seq_len: int | None = None) -> KVCache:
        c = self.config
        return KVCache(
            c.num_layers,
            batch_size,
            max_seq_len or self.max_seq_len,
            c.num_kv_heads,
            c.head_dim,
            self.dtype,
            self.device,
            pad_to=KEY_BLOCK,
        )

    def rope_tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, signed sin [S_max, D] in the model dtype (`rope_tables`), built once per device/dtype."""
        cached = self._rope_cache
        if cached is None or cached[0].device != self.device or cached[0].dtype != self.dtype:
            cached = rope_tables(self.config, self.max_seq_len, self.dtype, self.device)
            self._rope_cache = cached
        return cached

    def set_batch_invariant(self, enabled: bool) -> None:
        """Score every slot bit for bit alike in decode steps and chain verify passes."""
        from specdec.models.linear import set_pad_single_row

        self.batch_invariant = enabled
        set_pad_single_row(self, enabled)

    def plan_attention(
        self, start: int, num_new: int, attn_mask: torch.Tensor | None, batch_size: int, cache: KVCache
    ) -> AttentionPlan:
        rep = self.config.num_heads // self.config.num_kv_heads
        return plan_attention(
            start, num_new, rep, attn_mask, batch_size, self.batch_invariant, cache.k.shape[3], self.dtype, self.device,
            self.fold_attention, self.config.head_dim,
        )

    def forward(
        self,
        token_ids: torch.Tensor,  # [B, T]
        positions: torch.Tensor,  # [B, T]
        cache: KVCache,
        attn_mask: torch.Tensor | None = None,  # [B, T, T] bool, True = may attend (among the new tokens)
        hidden_layers: tuple[int, ...] = (),
        logits_indices: torch.Tensor | slice | None = None,
        seq_lens: torch.Tensor | None = None,  # [B] int64: per-row cache lengths (ragged batch)
        num_new: torch.Tensor | None = None,  # [B] int64: real tokens per row (default T)
    ) -> ModelOutput:
        """hidden_layers: 0 = embeddings, i = output of layer i, -1 = after the final norm.

        logits_indices selects which of the T positions get logits (prefill needs one).
        With seq_lens the batch is ragged (module docstring) and logits are packed [N, V];
        logits_indices then selects among the N packed rows. attn_mask then masks each row's
        first num_new[b] tokens among themselves (entries past them are ignored).
        """
        if seq_lens is not None:
            return self._forward_rows(token_ids, positions, cache, seq_lens, num_new, hidden_layers, logits_indices, attn_mask)
        b, t = token_ids.shape
        start = cache.reserve(t)
        cos_table, sin_table = self.rope_tables()
        cos = cos_table[positions].unsqueeze(2)  # [B, T, 1, D]
        sin = sin_table[positions].unsqueeze(2)
        plan = self.plan_attention(start, t, attn_mask, b, cache)
        x = self.embed(token_ids)
        hidden: dict[int, torch.Tensor] = {}
        if 0 in hidden_layers:
            hidden[0] = x
        stack = self.native_stack() if b == 1 and plan.native and self.use_native_stack else None
        if stack is not None and not (torch.is_grad_enabled() and x.requires_grad):
            x = x.clone() if 0 in hidden_layers else x.contiguous()  # updated in place
            for i in hidden_layers:
                if 0 < i <= len(self.layers):
                    hidden[i] = torch.empty_like(x)
            stack.forward(x[0], cos[0, :, 0].contiguous(), sin[0, :, 0].contiguous(), cache.k, cache.v, start,
                          plan.native_mask, {i: h[0] for i, h in hidden.items() if i > 0})
        else:
            for i, layer in enumerate(self.layers):
                x = layer(x, cos, sin, cache.k[i], cache.v[i], start, plan)
                if i + 1 in hidden_layers:
                    hidden[i + 1] = x
        cache.length = start + t
        x = self.norm(x)
        if -1 in hidden_layers:
            hidden[-1] = x
        if logits_indices is not None:
            x = x[:, logits_indices]
        return ModelOutput(self.lm_head(x), hidden)

    def row_layout(
        self, seq_lens: torch.Tensor, num_new: torch.Tensor, num_tokens: int, cache: KVCache,
        attn_mask: torch.Tensor | None = None,  # [B, T, T] bool: row b's new tokens among themselves; None: causal
    ) -> RowLayout:
        """Slots and the per-row key masks (causal, or a row's tree) for a ragged batch of
        T = num_tokens."""
        dev = self.device
        b = seq_lens.shape[0]
        if b > cache.batch_size:
            raise ValueError(f"{b} rows > the cache's {cache.batch_size}")
        ends = seq_lens + num_new  # [B]
        if int(num_new.min()) < 0 or int(num_new.max()) > num_tokens:
            raise ValueError(f"num_new {num_new.tolist()} outside 0..{num_tokens}")
        num_keys = int(ends.max())
        if num_keys > cache.max_seq_len:
            raise ValueError(f"KV cache full: row lengths {ends.tolist()} > max_seq_len {cache.max_seq_len}")
        offsets = torch.arange(num_tokens, device=dev)  # [T]
        valid = offsets[None] < num_new[:, None]  # [B, T]
        row_ids = torch.arange(b, device=dev)[:, None].expand(b, num_tokens)[valid]  # [N]
        query_slots = seq_lens[:, None] + offsets[None]  # [B, T]
        slots = query_slots[valid]  # [N]
        tree_rows = None  # [B] bool: rows whose mask is not causal over their new tokens
        if attn_mask is not None:
            if tuple(attn_mask.shape) != (b, num_tokens, num_tokens):
                raise ValueError(f"a ragged batch's attn_mask must be [B, T, T] = [{b}, {num_tokens}, {num_tokens}], "
                                 f"got {tuple(attn_mask.shape)}")
            attn_mask = attn_mask.to(device=dev, dtype=torch.bool)
            pairs = valid[:, :, None] & valid[:, None, :]  # [B, T, T]: the entries that count
            causal = torch.ones(num_tokens, num_tokens, dtype=torch.bool, device=dev).tril()
            tree_rows = ((attn_mask != causal) & pairs).flatten(1).any(1)
            blind = valid & ~(attn_mask & valid[:, None, :]).any(-1) & (seq_lens == 0)[:, None]  # [B, T]
            if bool(blind.any()):
                bad = blind.nonzero()[0].tolist()
                raise ValueError(f"attn_mask leaves row {bad[0]}'s new token {bad[1]} no key (its cache is empty)")
            if not bool(tree_rows.any()):
                tree_rows = None  # every row causal: the causal layout
        if native_attention_supported(self.dtype, dev, self.config.head_dim):
            offsets = torch.zeros(b + 1, dtype=torch.long)
            counts = num_new.cpu()
            offsets[1:] = counts.cumsum(0)
            masks = mask_offsets = None
            if tree_rows is not None:  # each tree row's [n, n] mask, row-major, one after another
                tree_cpu = tree_rows.cpu()
                sizes = torch.where(tree_cpu, counts * counts, 0)
                mask_offsets = torch.where(tree_cpu, sizes.cumsum(0) - sizes, -1)
                masks = attn_mask[pairs & tree_rows[:, None, None]].to(device="cpu", dtype=torch.uint8)
            return RowLayout(valid, row_ids, slots, max(num_keys, 1), None, True, offsets, seq_lens.cpu(), masks, mask_offsets)
        keys = torch.arange(max(num_keys, 1), device=dev)[None, None]  # [1, 1, S]
        mask = keys <= query_slots[:, :, None]  # [B, T, S] causal
        if tree_rows is not None:
            rel = keys - seq_lens[:, None, None]  # [B, 1, S]: the key's index among row b's new tokens
            new = attn_mask.gather(2, rel.clamp(0, num_tokens - 1).expand(b, num_tokens, -1))
            tree = (rel < 0) | (new & (rel >= 0) & (rel < num_new[:, None, None]))
            mask = torch.where((valid & tree_rows[:, None])[:, :, None], tree, mask)  # padding keeps causal rows
        rep = self.config.num_heads // self.config.num_kv_heads
        mask = mask.unsqueeze(1).repeat(1, 1, rep, 1)
        return RowLayout(valid, row_ids, slots, max(num_keys, 1), mask)

    def _forward_rows(self, token_ids, positions, cache, seq_lens, num_new, hidden_layers=(), logits_indices=None,
                      attn_mask=None) -> ModelOutput:
        b, t = token_ids.shape
        dev = self.device
        seq_lens = torch.as_tensor(seq_lens, dtype=torch.long, device=dev)
        num_new = torch.full((b,), t, device=dev) if num_new is None else torch.as_tensor(num_new, dtype=torch.long, device=dev)
        rows = self.row_layout(seq_lens, num_new, t, cache, attn_mask)
        cos_table, sin_table = self.rope_tables()
        flat_positions = positions.to(dev)[rows.valid]  # [N]
        cos = cos_table[flat_positions].unsqueeze(1)  # [N, 1, D]
        sin = sin_table[flat_positions].unsqueeze(1)
        x = self.embed(token_ids.to(dev)[rows.valid])  # [N, D_model]
        hidden: dict[int, torch.Tensor] = {0: x} if 0 in hidden_layers else {}
        stack = self.native_stack() if rows.native and self.use_native_stack else None
        if stack is not None and x.shape[0] > 0 and not (torch.is_grad_enabled() and x.requires_grad):
            x = x.clone() if 0 in hidden_layers else x.contiguous()  # updated in place
            for i in hidden_layers:
                if 0 < i <= len(self.layers):
                    hidden[i] = torch.empty_like(x)
            stack.forward_rows(x, cos[:, 0].contiguous(), sin[:, 0].contiguous(), cache.k, cache.v, rows.offsets,
                               rows.starts, rows.masks, rows.mask_offsets, {i: h for i, h in hidden.items() if i > 0})
        else:
            for i, layer in enumerate(self.layers):
                x = layer(x, cos, sin, cache.k[i], cache.v[i], 0, None, rows)
                if i + 1 in hidden_layers:
                    hidden[i + 1] = x
        x = self.norm(x)
        if -1 in hidden_layers:
            hidden[-1] = x
        if logits_indices is not None:
            x = x[logits_indices]
        return ModelOutput(self.lm_head(x), hidden)  # packed: logits [N', V], hidden {layer: [N, D]}
