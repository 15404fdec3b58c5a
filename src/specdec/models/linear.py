"""Faster CPU linear layers, in one place.

PyTorch's x86 builds route float32 `F.linear` to MKL, which runs its slow generic path
on AMD processors. oneDNN's `mkldnn::_linear_pointwise` takes the same dense weight and
is faster: measured here (Zen 4, 2 threads, the default model's 120 per-layer matrices
streamed from DRAM, benchmarks in the README) float32 goes from 17.5 GB/s through MKL
to 36 GB/s at one row, and from 15 to 23.5 GB/s at six rows, what a verify pass needs.
bfloat16 `F.linear` already goes through oneDNN (24.5 GB/s) and stays.

Batch invariance (`pad_single_row`): oneDNN computes a one-row product with a different
kernel (a different reduction order) from a product of two or more rows, while every
row of an M >= 2 product equals, bit for bit, the same row computed in any other
M >= 2 product (float32 and bfloat16, measured in `tests/test_batch_invariance.py`).
Padding a single row to two makes a decode step's linears agree with a verify pass's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


class CPULinear(nn.Module):
    """nn.Linear for CPU inference: oneDNN for float32, F.linear otherwise.

    Shares the wrapped layer's parameters (tied embeddings stay tied).
    """

    def __init__(self, linear: nn.Linear, pad_single_row: bool = False) -> None:
        super().__init__()
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        self.weight = linear.weight
        self.bias = linear.bias
        self.pad_single_row = pad_single_row
        self._matmul = _onednn_linear if linear.weight.dtype == torch.float32 else F.linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad_single_row and x.numel() == self.in_features:
            # [.., 1, K] -> two identical rows -> keep the first: see the module docstring
            rows = x.reshape(1, self.in_features).expand(2, self.in_features)
            return self._matmul(rows, self.weight, self.bias)[:1].view(*x.shape[:-1], self.out_features)
        return self._matmul(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, pad_single_row={self.pad_single_row}"


def pack_linears_for_cpu(model: nn.Module, batch_invariant: bool = False) -> nn.Module:
    """Swap every nn.Linear of a CPU inference model for a CPULinear; a no-op elsewhere."""
    first = next(model.parameters())
    if first.device.type == "cpu" and torch.backends.mkldnn.is_available():
        _swap_linears(model, batch_invariant)
    return model


def set_pad_single_row(model: nn.Module, enabled: bool) -> None:
    for module in model.modules():
        if isinstance(module, CPULinear):
            module.pad_single_row = enabled


def _swap_linears(module: nn.Module, batch_invariant: bool) -> None:
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Linear):
            setattr(module, name, CPULinear(child, batch_invariant))
        else:
            _swap_linears(child, batch_invariant)
