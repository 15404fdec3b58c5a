"""A lean GGUF reader: metadata as Python values, tensors as float32 torch tensors.

    header = GGUFHeader(path)          # parses the header only; the file is memory-mapped
    header.metadata["llama.block_count"] -> 30
    header.tensors -> [TensorInfo(name, type, shape, offset, num_bytes), ...]
    header.dequantize(info) -> float32 tensor of info.shape

Why not `gguf.GGUFReader`: it builds numpy views for every part of every field, which for a
tokenizer's tens of thousands of strings takes seconds; here a string is one struct read.
Quantized blocks are dequantized in torch with `gguf.quants`' arithmetic, step for step
(float32 products and sums in the same order), so the weights are the same bit for bit;
types without a torch path here fall back to `gguf.quants.dequantize`.

Format: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md (versions 2 and 3).
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

GGML_F32, GGML_F16, GGML_Q4_0, GGML_Q4_1, GGML_Q8_0, GGML_BF16 = 0, 1, 2, 3, 8, 30
TYPE_NAMES = {GGML_F32: "F32", GGML_F16: "F16", GGML_Q4_0: "Q4_0", GGML_Q4_1: "Q4_1", GGML_Q8_0: "Q8_0", GGML_BF16: "BF16"}
# (elements per block, bytes per block) of the types dequantized here
BLOCKS = {GGML_F32: (1, 4), GGML_F16: (1, 2), GGML_BF16: (1, 2), GGML_Q4_0: (32, 18), GGML_Q4_1: (32, 20), GGML_Q8_0: (32, 34)}

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_NUMPY = {0: np.uint8, 1: np.int8, 2: np.uint16, 3: np.int16, 4: np.uint32, 5: np.int32, 6: np.float32, 7: np.bool_,
          10: np.uint64, 11: np.int64, 12: np.float64}
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True)
class TensorInfo:
    name: str
    type: int  # ggml type id (gguf.GGMLQuantizationType)
    shape: tuple[int, ...]  # row-major (numpy/torch order: the GGUF dims reversed)
    offset: int  # absolute byte offset in the file
    num_bytes: int

    @property
    def type_name(self) -> str:
        return TYPE_NAMES.get(self.type, str(self.type))


class _LazyStrings(Sequence):
    """A GGUF string array, decoded on first use (a vocabulary's strings are seldom needed)."""

    def __init__(self, buffer, offset: int, count: int) -> None:
        self._buffer, self._offset, self._count = buffer, offset, count
        self._items: list[str] | None = None

    def _decoded(self) -> list[str]:
        if self._items is None:
            items, pos, unpack = [], self._offset, struct.Struct("<Q").unpack_from
            for _ in range(self._count):
                n = unpack(self._buffer, pos)[0]
                items.append(self._buffer[pos + 8 : pos + 8 + n].decode("utf-8"))
                pos += 8 + n
            self._items = items
        return self._items

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index):
        return self._decoded()[index]

    def __eq__(self, other) -> bool:
        return list(self) == list(other) if isinstance(other, Sequence) else NotImplemented

    def __repr__(self) -> str:
        return f"<{self._count} GGUF strings>"


def _block_sizes(ggml_type: int) -> tuple[int, int]:
    if ggml_type in BLOCKS:
        return BLOCKS[ggml_type]
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    return GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]


class GGUFHeader:
    """Metadata and tensor table of a GGUF file (raises ValueError on a malformed one)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        with open(self.path, "rb") as f:
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self._pos = 0
        try:
            self._parse()
        except (struct.error, IndexError, UnicodeDecodeError, KeyError, OverflowError) as e:
            raise ValueError(f"{self.path}: truncated or malformed GGUF header ({type(e).__name__}: {e})") from e

    def _read(self, fmt: str):
        value = struct.unpack_from(fmt, self._map, self._pos)[0]
        self._pos += struct.calcsize(fmt)
        return value

    def _string(self) -> str:
        n = self._read("<Q")
        if self._pos + n > len(self._map):
            raise ValueError(f"{self.path}: a string runs past the end of the file")
        value = self._map[self._pos : self._pos + n].decode("utf-8")
        self._pos += n
        return value

    def _skip_strings(self, count: int) -> int:
        """Move past count strings; returns where they start."""
        start, pos, end, unpack = self._pos, self._pos, len(self._map), struct.Struct("<Q").unpack_from
        for _ in range(count):
            pos += 8 + unpack(self._map, pos)[0]
        if pos > end:
            raise ValueError(f"{self.path}: a string array runs past the end of the file")
        self._pos = pos
        return start

    def _value(self, kind: int):
        if kind == _STRING:
            return self._string()
        if kind == _ARRAY:
            item, count = self._read("<I"), self._read("<Q")
            if item == _STRING:
                return _LazyStrings(self._map, self._skip_strings(count), count)
            if item == _ARRAY:
                return [self._value(_ARRAY) for _ in range(count)]
            dtype = np.dtype(_NUMPY[item])
            array = np.frombuffer(self._map, dtype=dtype, count=count, offset=self._pos).tolist()
            self._pos += count * dtype.itemsize
            return array
        return self._read(_SCALARS[kind])

    def _parse(self) -> None:
        if self._map[:4] != b"GGUF":
            raise ValueError(f"{self.path}: no GGUF magic")
        self._pos = 4
        self.version = self._read("<I")
        if self.version not in (2, 3):
            raise ValueError(f"{self.path}: GGUF version {self.version} is not supported (2 and 3 are)")
        num_tensors, num_kv = self._read("<Q"), self._read("<Q")
        self.metadata: dict[str, object] = {}
        for _ in range(num_kv):
            key = self._string()
            self.metadata[key] = self._value(self._read("<I"))
        infos = []
        for _ in range(num_tensors):
            name = self._string()
            dims = [self._read("<Q") for _ in range(self._read("<I"))]
            infos.append((name, dims, self._read("<I"), self._read("<Q")))
        alignment = int(self.metadata.get("general.alignment", 32))
        data_start = -(-self._pos // alignment) * alignment
        self.tensors: list[TensorInfo] = []
        for name, dims, ggml_type, offset in infos:
            count = int(np.prod(dims, dtype=np.int64)) if dims else 1
            block, size = _block_sizes(ggml_type)
            info = TensorInfo(name, ggml_type, tuple(reversed(dims)), data_start + offset, count // block * size)
            if info.offset + info.num_bytes > len(self._map):
                raise ValueError(f"{self.path}: tensor {name} runs past the end of the file (truncated?)")
            self.tensors.append(info)

    def raw(self, info: TensorInfo) -> np.ndarray:
        """The tensor's bytes, a read-only view of the mapped file."""
        return np.frombuffer(self._map, dtype=np.uint8, count=info.num_bytes, offset=info.offset)

    def dequantize(self, info: TensorInfo) -> torch.Tensor:
        """A float32 tensor of info.shape that owns its memory (the same values as gguf.quants)."""
        raw = self.raw(info)
        if info.type == GGML_F32:
            return torch.from_numpy(raw.view(np.float32).copy()).reshape(info.shape)
        if info.type == GGML_F16:
            return torch.from_numpy(raw.view(np.float16).astype(np.float32)).reshape(info.shape)
        if info.type in (GGML_Q4_0, GGML_Q4_1, GGML_Q8_0):
            block, size = BLOCKS[info.type]
            blocks = torch.from_numpy(raw.copy()).view(-1, size)
            return _dequantize_blocks(blocks, info.type).reshape(info.shape)
        from gguf.quants import dequantize

        rows = raw.reshape(-1, info.num_bytes // (int(np.prod(info.shape[:-1])) or 1))
        array = np.asarray(dequantize(rows, info.type), dtype=np.float32)
        return torch.from_numpy(np.ascontiguousarray(array).copy()).reshape(info.shape)


def _dequantize_blocks(blocks: torch.Tensor, ggml_type: int) -> torch.Tensor:
    """[N, bytes] uint8 blocks -> [N, 32] float32, as gguf.quants.Q4_0/Q4_1/Q8_0 compute them."""
    d = blocks[:, :2].contiguous().view(torch.float16).float()
    if ggml_type == GGML_Q8_0:
        out = torch.empty(blocks.shape[0], blocks.shape[1] - 2, dtype=torch.float32)
        out.copy_(blocks[:, 2:].view(torch.int8))
        return out.mul_(d)
    packed = blocks[:, 4:] if ggml_type == GGML_Q4_1 else blocks[:, 2:]
    half = packed.shape[1]
    # in place, each step as gguf.quants computes it: low nibbles are elements 0..15
    out = torch.empty(packed.shape[0], 2 * half, dtype=torch.float32)
    out[:, :half] = packed & 0x0F
    out[:, half:] = packed >> 4
    if ggml_type == GGML_Q4_0:
        return out.sub_(8).mul_(d)  # (q - 8) is exact in int8 and in float32
    m = blocks[:, 2:4].contiguous().view(torch.float16).float()
    return out.mul_(d).add_(m)
