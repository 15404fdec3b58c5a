"""Faster CPU linear layers, in one place.

float32 and bfloat16 run through the engine's own kernel where it is built for them
(`PackedLinear`, csrc/matmul.c; float32 needs AVX-512, bfloat16 AVX512_BF16): the weight
packed once into column panels, every output a running float32 sum over k in order, so one
row and many rows agree bit for bit with no padding. It is the default because it streams
the weights faster than the library routes below, at one row and at a verify pass's rows
(`benchmarks/linear_layouts.py` measures every route on the default model's 120 per-layer
matrices). Where the kernel is not built, the library routes below serve: they are what
the rest of this docstring describes.

PyTorch's x86 builds route float32 `F.linear` to MKL, which runs its slow generic path
on AMD processors. oneDNN's `mkldnn::_linear_pointwise` takes the same dense weight and
streams it faster there, at one row and at the few rows a verify pass needs. On Intel CPUs
it is the other way round at one and two rows (MKL ahead, the two level from about eight
rows on), so float32 takes MKL on Intel (`float32_matmul`) unless batch invariance is on:
oneDNN's rows are the ones tested to agree across M. `benchmarks/linear_layouts.py`
compares the two routes on the machine at hand.

bfloat16 `F.linear` also reaches oneDNN, but as a matmul over the transposed weight
(`brg_matmul`, weights "ba"). Reordering the weight once into oneDNN's own blocked layout
(`mkldnn._reorder_linear_weight`, the layer inductor's CPU freezing pass uses) and calling
`_linear_pointwise` on it runs faster at a decode step's and a verify pass's row counts
(`benchmarks/linear_layouts.py`), with the same products bit for bit
(`tests/test_model.py`). The blocked copy (`BlockedLinear`) replaces the
dense weight, so memory does not grow; `weight` rebuilds the dense tensor on request
(`to_dense` is exact) and `state_dict()` holds the dense weight. A weight that another
module shares (tied embeddings) stays as well, since the embedding needs its dense
layout: there the blocked copy is extra memory (one more copy of the head's weight).
float32 stays dense: the blocked layout brought it no speed (`benchmarks/linear_layouts.py`).

Batch invariance (`pad_single_row`): every row of an M >= 2 product equals, bit for bit,
the same row computed in any other M >= 2 product (float32 and bfloat16, dense or blocked
weights, checked in `tests/test_batch_invariance.py`), but oneDNN may compute a one-row
product with another kernel (another reduction order). Padding a single row to two makes
a decode step's linears agree with a verify pass's, at a price: the two-row kernel streams
the weights slower, so a padded decode step costs more (`benchmarks/batch_invariance.py`
measures it). Where the one-row kernel is the same reduction the padding is not
needed, and `set_pad_single_row` finds out per weight shape (`one_row_kernel_agrees`):
it compares 64 random rows computed one at a time with the same rows in products of 16.
Which shapes agree depends on the torch version, the CPU and the thread count, hence the
probe rather than a fixed list (`benchmarks/batch_invariance.py` reports it per linear; with
blocked bfloat16 the wide-K weights, such as the default model's w2, K = 1536, are the ones
seen to differ).
"""

from __future__ import annotations

import functools

import json
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from specdec.models.gguf_file import cache_dir
from specdec.models.native import (
    cpu_model,
    cpu_vendor,
    native_linear,
    native_linear_supported,
    native_pack,
    native_unpack,
)

BLOCKED_DTYPES = (torch.bfloat16,)  # float32 gains nothing blocked (benchmarks/linear_layouts.py)


def _onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def float32_matmul(batch_invariant: bool):
    """The float32 CPU kernel: MKL (`F.linear`) on Intel CPUs, oneDNN elsewhere and
    whenever batch invariance is on (module docstring)."""
    return F.linear if not batch_invariant and cpu_vendor() == "GenuineIntel" else _onednn_linear


class CPULinear(nn.Module):
    """nn.Linear for CPU inference: float32 through `float32_matmul`, F.linear otherwise.

    Shares the wrapped layer's parameters (tied embeddings stay tied).
    """

    def __init__(self, linear: nn.Linear, pad_single_row: bool = False) -> None:
        super().__init__()
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        self.weight = linear.weight
        self.bias = linear.bias
        self.pad_single_row = pad_single_row
        self._matmul = float32_matmul(pad_single_row) if linear.weight.dtype == torch.float32 else F.linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _padded_matmul(self, x, self.weight)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, pad_single_row={self.pad_single_row}"


class PackedLinear(nn.Module):
    """A float32 or bfloat16 CPU linear over csrc/matmul.c's panel-packed copy of the weight.

    Batch-invariant by construction (each output is the same in-order sum whatever the row
    count), so it never pads. keep_dense as BlockedLinear's: a shared weight (tied
    embeddings) stays beside the packed copy; otherwise `weight` unpacks on request (exact).
    """

    pad_single_row = False

    def __init__(self, linear: nn.Linear, keep_dense: bool = True) -> None:
        super().__init__()
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        self.bias = linear.bias
        self.register_buffer("packed_weight", native_pack(linear.weight), persistent=False)
        object.__setattr__(self, "_dense", linear.weight if keep_dense else None)

    @property
    def weight(self) -> torch.Tensor:
        return self._dense if self._dense is not None else native_unpack(self.packed_weight, self.out_features, self.in_features)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        destination[prefix + "weight"] = self.weight if keep_vars else self.weight.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != self.packed_weight.dtype or x.device.type != "cpu":
            raise TypeError(f"PackedLinear takes {self.packed_weight.dtype} CPU inputs, got {x.dtype} on {x.device}")
        if torch.is_grad_enabled() and x.requires_grad:  # autograd needs F.linear
            return F.linear(x, self.weight, self.bias)
        return native_linear(x, self.packed_weight, self.out_features, self.in_features, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, dense_kept={self._dense is not None}"


class BlockedLinear(nn.Module):
    """A bfloat16 CPU linear over a oneDNN-blocked copy of the weight (module docstring).

    keep_dense: hold the dense weight too, because another module shares it (tied
    embeddings); otherwise only the blocked copy stays and `weight` rebuilds the dense
    tensor when asked (exact, but a copy: for reading, not for training).
    """

    def __init__(self, linear: nn.Linear, pad_single_row: bool = False, keep_dense: bool = True) -> None:
        super().__init__()
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        self.bias = linear.bias
        self.pad_single_row = pad_single_row
        # an opaque mkldnn tensor: a non-persistent buffer, so state_dict() stays dense
        # (`_save_to_state_dict`) and memory reports count it
        self.register_buffer("blocked_weight", torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), 1), persistent=False)
        # kept unregistered: the sharing module owns (and state_dict()s) the parameter
        object.__setattr__(self, "_dense", linear.weight if keep_dense else None)
        self._matmul = _onednn_linear

    @property
    def weight(self) -> torch.Tensor:
        return self._dense if self._dense is not None else self.blocked_weight.to_dense()

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        destination[prefix + "weight"] = self.weight if keep_vars else self.weight.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _padded_matmul(self, x, self.blocked_weight)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"dense_kept={self._dense is not None}, pad_single_row={self.pad_single_row}"
        )


def _padded_matmul(layer: CPULinear | BlockedLinear, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    if layer.pad_single_row and x.numel() == layer.in_features:
        # [.., 1, K] -> two identical rows -> keep the first: see the module docstring
        rows = x.reshape(1, layer.in_features).expand(2, layer.in_features)
        return layer._matmul(rows, weight, layer.bias)[:1].view(*x.shape[:-1], layer.out_features)
    return layer._matmul(x, weight, layer.bias)


@functools.cache
def blocked_supported() -> bool:
    """Whether oneDNN runs bfloat16 on this CPU (AVX-512 BF16, AMX or AVX-NE-CONVERT); without
    it the blocked weights cannot be made and bfloat16 linears stay CPULinear."""
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def pack_linears_for_cpu(model: nn.Module, batch_invariant: bool = False) -> nn.Module:
    """Swap every nn.Linear of a CPU inference model for a PackedLinear (float32 with the C
    kernel), a BlockedLinear (bfloat16) or a CPULinear (otherwise); a no-op elsewhere.
    Inference only: the packed and blocked copies do not train."""
    first = next(model.parameters())
    if first.device.type == "cpu" and torch.backends.mkldnn.is_available():
        linear_weights = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)}
        shared = {
            id(p) for m in model.modules() if not isinstance(m, nn.Linear)
            for p in m.parameters(recurse=False) if id(p) in linear_weights
        }
        _swap_linears(model, batch_invariant, shared)
        if hasattr(model, "drop_native_stack"):
            model.drop_native_stack()
    return model


def set_pad_single_row(model: nn.Module, enabled: bool) -> None:
    """Pad one-row products to two where the one-row kernel differs (module docstring)."""
    for module in model.modules():
        if isinstance(module, CPULinear) and module.weight.dtype == torch.float32:
            module._matmul = float32_matmul(enabled)  # invariant rows: oneDNN's
        if isinstance(module, (CPULinear, BlockedLinear)):
            module.pad_single_row = enabled and not one_row_kernel_agrees(module)


# Each probed row has out_features outputs, so another reduction order shows in nearly every
# row: 64 rows are ample evidence, and a quarter of the cost of the 256 once used.
PROBE_ROWS, PROBE_BLOCK = 64, 16
_probed: dict[str, bool] = {}
_announced: list[bool] = []


def _probe_file() -> Path:
    return cache_dir() / "kernels" / "one-row-probes.json"


@torch.inference_mode()
def one_row_kernel_agrees(layer: CPULinear | BlockedLinear) -> bool:
    """Does a one-row product give, bit for bit, the rows a 16-row product gives?

    Probed on the layer's own weight with random rows, at the current thread count and at
    one thread, once per (kernel, weight shape, dtype, thread count, torch version, CPU):
    the answers are kept in the user cache directory (the probes, the LM head's most of all,
    are too slow to repeat at every load). A different reduction order shows in some of the
    rows (as w2's does, above), so "agrees" is strong evidence of the same kernel; "differs"
    only costs speed.
    """
    weight = layer.blocked_weight if isinstance(layer, BlockedLinear) else layer.weight
    kernel = "blocked" if isinstance(layer, BlockedLinear) else getattr(layer._matmul, "__name__", "matmul")
    key = "|".join(map(str, (kernel, layer.out_features, layer.in_features, weight.dtype, torch.get_num_threads(),
                             torch.__version__, cpu_model())))
    if not _probed:
        try:
            _probed.update(json.loads(_probe_file().read_text()))
        except (OSError, ValueError):
            pass
    if key not in _probed:
        if not _announced:
            _announced.append(True)
            print(f"specdec: probing the one-row linear kernels (once per shape, CPU and thread count; "
                  f"cached in {_probe_file()})", file=sys.stderr, flush=True)
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(PROBE_ROWS, layer.in_features, generator=gen).to(weight.dtype)
        agrees = True
        saved = torch.get_num_threads()
        for threads in sorted({saved, 1}, reverse=True):
            torch.set_num_threads(threads)
            try:
                blocks = torch.cat([layer._matmul(x[i : i + PROBE_BLOCK], weight, None) for i in range(0, PROBE_ROWS, PROBE_BLOCK)])
                singles = torch.cat([layer._matmul(x[i : i + 1], weight, None) for i in range(PROBE_ROWS)])
            finally:
                torch.set_num_threads(saved)
            agrees = agrees and torch.equal(blocks, singles)
        _probed[key] = agrees
        try:  # atomic replace: concurrent loads see the old file or the new one
            path = _probe_file()
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(_probed, indent=1, sort_keys=True))
            os.replace(tmp, path)
        except OSError:
            pass
    return bool(_probed[key])


def _swap_linears(module: nn.Module, batch_invariant: bool, shared: set[int]) -> None:
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Linear) and native_linear_supported(child.weight.dtype, child.weight.device):
            setattr(module, name, PackedLinear(child, keep_dense=id(child.weight) in shared))
        elif isinstance(child, nn.Linear) and child.weight.dtype in BLOCKED_DTYPES and blocked_supported():
            setattr(module, name, BlockedLinear(child, batch_invariant, keep_dense=id(child.weight) in shared))
        elif isinstance(child, nn.Linear):
            setattr(module, name, CPULinear(child, batch_invariant))
        else:
            _swap_linears(child, batch_invariant, shared)
