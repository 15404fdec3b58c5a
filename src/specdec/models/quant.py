"""Weight-only quantized linears and embeddings: int8 per output channel, int4 per group.

    quantize_model(model, mode="int8" | "int4", group_size=32, source=None) -> model (in place)

Every linear of a native model (attn.wqkv, attn.wo, mlp.w13, mlp.w2) becomes a
`QuantLinear`, the LM head an int8 one (see `quantize_model`), the embedding an
`Int8Embedding`; the dense weights are dropped. Norms, attention and the KV cache stay in
the model's dtype.

Kernels (torch 2.13 schemas):
    _weight_int8pack_mm(x [M, K], w int8 [N, K], scales [N]) -> [M, N]
    _convert_weight_to_int4pack_for_cpu(q int32 [N, K] in 0..15, innerKTiles) -> uint8 [N, K/2]
    _weight_int4pack_mm_for_cpu(x [M, K], packed, qGroupSize, scales_and_zeros [K/G, N, 2])
    _convert_weight_to_int4pack(uint8 [N, K/2], even k in the high nibble, innerKTiles)  CUDA
    _weight_int4pack_mm(x, packed, qGroupSize, scales_and_zeros)                       CUDA
int4 dequantizes as w[n, k] = (q[n, k] - 8) * scale[k // G, n] + zero[k // G, n]
(checked numerically). The CUDA path follows gpt-fast's packing and is untested here.

Activations enter the kernels in bfloat16: the CPU kernels have fast paths only for
bfloat16 and require scales in the activation's dtype; float32 and float16 fall to a
scalar reference loop, many times slower, hence the cast. The output returns in the caller's
dtype, so dtype=float32 keeps the residual stream, norms, attention and cache in float32.
Shape limits: the bf16 int8 kernel returns wrong numbers when K % 32 != 0 (observed), so
K % 32 == 0 is required; int4 on CPU needs N % 16 == 0, G in {32, 64, 128, 256}, K % G == 0.

GGUF blocks (`gguf_groups`) are repacked rather than requantized where the formats meet:
Q4_0 (value = d * (q - 8)) and Q4_1 (value = d * q + m), blocks of 32, give int4 groups
of 32 with the same 4-bit codes, scale = d and zero = m + 8d (Q4_1) or 0 (Q4_0); Q8_0
(value = d * q, blocks of 32) gives the int8 embedding its codes and scales unchanged.
The codes are exact; the fp16 scales and mins are rounded to bfloat16 (relative error
<= 2^-9) because the fast kernels take bfloat16 scales only. Q8_0 cannot feed the int8
linear (one scale per row there, per 32-block in Q8_0), and other block types or group
sizes other than 32 are requantized from the dequantized weights. q/k rows are permuted
back (`unpermute_rope`), which is exact for per-row and per-group formats.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

QUANT_MODES = ("none", "int8", "int4")
GGUF_BLOCK = 32  # elements per Q4_0 / Q4_1 / Q8_0 block
INT4_GROUP_SIZES = (32, 64, 128, 256)


@dataclass
class GroupQuant:
    """Integer codes with one scale (and min) per group of `group_size` inputs of a row.

    value[n, k] = codes[n, k] * scales[n, k // G] + mins[n, k // G]   (mins None: 0)
    4-bit codes are unsigned 0..15 (uint8), 8-bit codes signed (int8).
    """

    codes: torch.Tensor  # [N, K]
    scales: torch.Tensor  # [N, K/G] float32
    mins: torch.Tensor | None  # [N, K/G] float32
    group_size: int
    bits: int

    def dequantize(self) -> torch.Tensor:
        """float32 [N, K], computed as gguf computes it (bitwise equal for GGUF blocks)."""
        n, k = self.codes.shape
        q = self.codes.float().view(n, k // self.group_size, self.group_size)
        w = q * self.scales[..., None]
        if self.mins is not None:
            w = w + self.mins[..., None]
        return w.view(n, k)

    def rows(self, index: torch.Tensor) -> GroupQuant:
        mins = self.mins[index] if self.mins is not None else None
        return GroupQuant(self.codes[index], self.scales[index], mins, self.group_size, self.bits)

    @staticmethod
    def cat(parts: list[GroupQuant]) -> GroupQuant:
        """Stack row blocks (fused q/k/v, gate/up); all parts share bits and group size."""
        first = parts[0]
        if any(p.bits != first.bits or p.group_size != first.group_size for p in parts):
            raise ValueError("cannot fuse GGUF tensors of different block types")
        has_mins = [p.mins is not None for p in parts]
        mins = None
        if any(has_mins):
            mins = torch.cat([p.mins if p.mins is not None else torch.zeros_like(p.scales) for p in parts])
        return GroupQuant(
            torch.cat([p.codes for p in parts]), torch.cat([p.scales for p in parts]), mins, first.group_size, first.bits
        )


def quantize_int4_groups(w: torch.Tensor, group_size: int) -> GroupQuant:
    """Asymmetric 4-bit groups, codes chosen against the bf16-rounded scale and zero."""
    n, k = w.shape
    if k % group_size:
        raise ValueError(f"in_features {k} is not a multiple of the int4 group size {group_size}")
    g = w.float().view(n, k // group_size, group_size)
    lo, hi = g.amin(-1), g.amax(-1)
    scale = ((hi - lo) / 15).clamp_min(1e-8).bfloat16().float()
    zero = (lo + 8 * scale).bfloat16().float()  # kernel: (q - 8) * scale + zero
    q = torch.round((g - zero[..., None]) / scale[..., None] + 8).clamp(0, 15)
    return GroupQuant(q.view(n, k).to(torch.uint8), scale, zero - 8 * scale, group_size, 4)


def quantize_int8_groups(w: torch.Tensor, group_size: int) -> GroupQuant:
    """Symmetric 8-bit groups (group_size = K: one scale per row)."""
    n, k = w.shape
    if k % group_size:
        raise ValueError(f"in_features {k} is not a multiple of the int8 group size {group_size}")
    g = w.float().view(n, k // group_size, group_size)
    scale = (g.abs().amax(-1) / 127).clamp_min(1e-8).bfloat16().float()
    q = torch.round(g / scale[..., None]).clamp(-128, 127)
    return GroupQuant(q.view(n, k).to(torch.int8), scale, None, group_size, 8)


def gguf_block_groups(data: np.ndarray, qtype_name: str) -> GroupQuant | None:
    """Raw GGUF rows (uint8 [N, bytes per row]) of Q4_0 / Q4_1 / Q8_0 as GroupQuant; else None."""
    layout = {"Q4_0": (2, 16), "Q4_1": (4, 16), "Q8_0": (2, 32)}.get(qtype_name)
    if layout is None:
        return None
    head, body = layout
    n = data.shape[0]
    blocks = np.ascontiguousarray(data).reshape(n, -1, head + body)
    d = torch.from_numpy(blocks[..., :2].copy().view(np.float16)[..., 0].astype(np.float32))
    raw = blocks[..., head:]  # [N, n_blocks, body]
    if qtype_name == "Q8_0":
        return GroupQuant(torch.from_numpy(raw.reshape(n, -1).view(np.int8)), d, None, GGUF_BLOCK, 8)
    # low nibbles hold elements 0..15 of a block, high nibbles 16..31
    q = torch.from_numpy(np.concatenate((raw & 0x0F, raw >> 4), axis=-1).reshape(n, -1))
    if qtype_name == "Q4_1":
        m = torch.from_numpy(blocks[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float32))
    else:
        m = -8 * d  # d * (q - 8) == d * q - 8d exactly in float32
    return GroupQuant(q, d, m, GGUF_BLOCK, 4)


def gguf_groups(path: str | Path, config, reader=None) -> dict[str, GroupQuant]:
    """Block-quantized GGUF weights under the native model's names (fused as it fuses them).

    reader: an open GGUFReader of `path`, to skip parsing the file again (parsing is slow).
    """
    from gguf import GGUFReader

    from specdec.models.gguf_file import unpermute_rope

    reader = reader or GGUFReader(str(path))
    raw = {t.name: gguf_block_groups(t.data, t.tensor_type.name) for t in reader.tensors}
    perm = {
        "attn_q": config.num_heads,
        "attn_k": config.num_kv_heads,
    }
    out: dict[str, GroupQuant] = {}

    def take(*names: str, prefix: str = "") -> GroupQuant | None:
        parts = []
        for name in names:
            g = raw.get(f"{prefix}{name}.weight")
            if g is None:
                return None
            if name in perm:
                g = g.rows(unpermute_rope(torch.arange(g.codes.shape[0]), perm[name]))
            parts.append(g)
        if len({(p.bits, p.mins is None) for p in parts}) > 1:
            return None  # mixed block types in one fused matrix: requantize instead
        return GroupQuant.cat(parts)

    fused = {
        "attn.wqkv": ("attn_q", "attn_k", "attn_v"),
        "attn.wo": ("attn_output",),
        "mlp.w13": ("ffn_gate", "ffn_up"),
        "mlp.w2": ("ffn_down",),
    }
    for i in range(config.num_layers):
        for native, names in fused.items():
            g = take(*names, prefix=f"blk.{i}.")
            if g is not None:
                out[f"layers.{i}.{native}"] = g
    for native, name in (("embed", "token_embd"), ("lm_head", "output")):
        g = take(name)
        if g is not None:
            out[native] = g
    if config.tie_word_embeddings and "embed" in out:
        out["lm_head"] = out["embed"]
    return out


class QuantLinear(nn.Module):
    """A weight-only quantized nn.Linear; bf16 activations in the kernel, caller's dtype out."""

    def __init__(self, in_features: int, out_features: int, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.register_buffer("bias", None if bias is None else bias.detach().clone())

    def matmul(self, x: torch.Tensor) -> torch.Tensor:  # [M, K] bf16 -> [M, N] bf16
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        if rows.dtype != torch.bfloat16:
            rows = rows.to(torch.bfloat16)
        y = self.matmul(rows if rows.is_contiguous() else rows.contiguous())
        if y.dtype != x.dtype:
            y = y.to(x.dtype)
        if self.bias is not None:
            y = y + self.bias.to(x.dtype)
        return y.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


class Int8Linear(QuantLinear):
    """int8 weights with one bf16 scale per output channel (`_weight_int8pack_mm`)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        n, k = weight.shape
        if k % 32:
            raise ValueError(f"int8 linear needs in_features % 32 == 0 (bf16 kernel), got {k}")
        super().__init__(k, n, bias)
        g = quantize_int8_groups(weight, k)
        self.register_buffer("weight", g.codes.to(weight.device))
        self.register_buffer("scales", g.scales[:, 0].to(weight.device, torch.bfloat16))

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten._weight_int8pack_mm(x, self.weight, self.scales)

    def dequantize(self) -> torch.Tensor:
        return self.weight.float() * self.scales.float()[:, None]


class Int4Linear(QuantLinear):
    """4-bit weights in groups along K, packed for the int4 kernels, bf16 scales and zeros."""

    def __init__(self, groups: GroupQuant, bias: torch.Tensor | None = None, device: torch.device | str = "cpu") -> None:
        n, k = groups.codes.shape
        g = groups.group_size
        if groups.bits != 4 or g not in INT4_GROUP_SIZES or k % g or n % 16:
            raise ValueError(
                f"int4 linear [{n}, {k}] group {g}: needs 4-bit codes, group in {INT4_GROUP_SIZES}, "
                f"in_features % group == 0 and out_features % 16 == 0"
            )
        super().__init__(k, n, bias)
        self.group_size = g
        zeros = groups.mins + 8 * groups.scales if groups.mins is not None else torch.zeros_like(groups.scales)
        scales_and_zeros = torch.stack((groups.scales, zeros), dim=-1).transpose(0, 1)  # [K/G, N, 2]
        self.register_buffer("scales_and_zeros", scales_and_zeros.contiguous().to(device, torch.bfloat16))
        codes = groups.codes.to(device=device, dtype=torch.int32)
        if torch.device(device).type == "cuda":
            inner = next(t for t in (8, 4, 2) if k % (t * 16) == 0)
            nibbles = (codes[:, ::2] << 4 | codes[:, 1::2]).to(torch.uint8)
            packed = torch.ops.aten._convert_weight_to_int4pack(nibbles, inner)
        else:
            packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 2)
        self.register_buffer("weight", packed)

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_cuda:
            return torch.ops.aten._weight_int4pack_mm(x, self.weight, self.group_size, self.scales_and_zeros)
        return torch.ops.aten._weight_int4pack_mm_for_cpu(x, self.weight, self.group_size, self.scales_and_zeros)

    def dequantize(self) -> torch.Tensor:
        """float32 [N, K] as the kernel applies it (identity through the kernel: bf16-rounded)."""
        eye = torch.eye(self.in_features, dtype=torch.bfloat16, device=self.weight.device)
        return self.matmul(eye).float().T.contiguous()


class Int8Embedding(nn.Module):
    """int8 rows with one float32 scale per group of 32: gather, then scale.

    `weight` is an empty [0, D] tensor in the compute dtype: LlamaModel reads the
    embedding's weight for its dtype and device, and code that wants a dense table fails
    loudly instead of getting int8 codes.
    """

    def __init__(self, groups: GroupQuant, dtype: torch.dtype, device: torch.device | str = "cpu") -> None:
        super().__init__()
        if groups.bits != 8 or groups.mins is not None:
            raise ValueError("Int8Embedding needs symmetric 8-bit groups")
        self.num_embeddings, self.embedding_dim = groups.codes.shape
        self.group_size = groups.group_size
        self.register_buffer("codes", groups.codes.to(device))
        self.register_buffer("scales", groups.scales.to(device))
        self.register_buffer("weight", torch.empty(0, self.embedding_dim, dtype=dtype, device=device), persistent=False)

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        d, g = self.embedding_dim, self.group_size
        codes = F.embedding(token_ids, self.codes).float().unflatten(-1, (d // g, g))
        rows = codes * F.embedding(token_ids, self.scales)[..., None]
        return rows.flatten(-2).to(self.weight.dtype)


def weight_bytes(module: nn.Module) -> int:
    """Bytes held by a module's parameters and buffers, each tensor counted once."""
    seen, total = set(), 0
    for t in list(module.parameters()) + list(module.buffers()):
        if id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total


def quantize_linear(
    linear: nn.Module, mode: str, group_size: int, source: GroupQuant | None = None
) -> QuantLinear:
    """nn.Linear or CPULinear -> Int8Linear / Int4Linear; GGUF groups used where exact."""
    bias = linear.bias
    device = linear.weight.device
    if mode == "int8":
        return Int8Linear(source.dequantize().to(device) if source is not None else linear.weight.detach(), bias)
    if mode != "int4":
        raise ValueError(f"quant mode must be one of {', '.join(QUANT_MODES)}, got {mode!r}")
    if source is not None and source.bits == 4 and source.group_size == group_size:
        return Int4Linear(source, bias, device)
    weight = source.dequantize() if source is not None else linear.weight.detach()
    return Int4Linear(quantize_int4_groups(weight, group_size), bias, device)


@torch.no_grad()
def quantize_model(
    model: nn.Module,
    mode: str,
    group_size: int = 32,
    source: dict[str, GroupQuant] | None = None,
    lm_head: str = "int8",
    embed: bool = True,
) -> nn.Module:
    """Swap a native model's linears (and the embedding) for quantized ones, in place.

    source: GGUF block groups by native name (`gguf_groups`); weights not in it, or in a
    format that does not repack, are quantized from the model's dense weights.
    lm_head: "int8" (default), "int4" or "none" (dense). The head is int8 even in int4
    mode: the default model's head is its Q8_0 embedding, which int4 groups of 32 hold
    badly (an int4 head costs far more perplexity than an int8 one, which is close to
    dense; `benchmarks/perplexity.py` with int4/int4 against int4), while int8 still reads
    half the bytes of bfloat16 per decode step.
    """
    if mode not in QUANT_MODES:
        raise ValueError(f"quant mode must be one of {', '.join(QUANT_MODES)}, got {mode!r}")
    if lm_head not in QUANT_MODES:
        raise ValueError(f"lm_head quant must be one of {', '.join(QUANT_MODES)}, got {lm_head!r}")
    if mode == "none":
        return model
    if mode == "int4" and group_size not in INT4_GROUP_SIZES:
        raise ValueError(f"int4 group size must be one of {INT4_GROUP_SIZES}, got {group_size}")
    source = source or {}
    dtype, device = model.dtype, model.device
    model.fold_attention = False  # short decode steps: see models/attention.py
    model.drop_native_stack()
    for i, layer in enumerate(model.layers):
        for part, name in (("attn", "wqkv"), ("attn", "wo"), ("mlp", "w13"), ("mlp", "w2")):
            parent = getattr(layer, part)
            linear = quantize_linear(getattr(parent, name), mode, group_size, source.get(f"layers.{i}.{part}.{name}"))
            setattr(parent, name, linear)
    if lm_head != "none":
        model.lm_head = quantize_linear(model.lm_head, lm_head, group_size, source.get("lm_head"))
    if embed and isinstance(model.embed, nn.Embedding):
        groups = source.get("embed")
        if groups is None or groups.bits != 8 or groups.mins is not None:
            w = groups.dequantize() if groups is not None else model.embed.weight.detach().float()
            groups = quantize_int8_groups(w, GGUF_BLOCK if w.shape[1] % GGUF_BLOCK == 0 else w.shape[1])
        model.embed = Int8Embedding(groups, dtype, device)
    return model
