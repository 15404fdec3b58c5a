"""Pre-allocated KV cache, indexed by slot, rolled back by moving a length pointer.

Layout: one tensor for keys and one for values, `[L, B, H_kv, S_alloc, D]`, where S_alloc is
max_seq_len rounded up to `pad_to` slots (batch-invariant attention reads whole blocks of
slots, models/attention.py); only max_seq_len of them are ever written. A forward over
T new tokens writes them at slots `[length, length + T)` of every row and then advances
`length` by T. Rows share one length: the engine runs one request per cache.

The batch engine keeps one request per row with its own length (`seq_lens`, held by the
engine and passed to the model's ragged forward); `row_view(b, length)` is row b as a
batch-size-1 cache sharing storage, for the paths that run one row alone (prefill).

- `rollback(n)` forgets the newest n entries (rejected draft tokens): O(1).
- `copy_row(src, dst, n)` gives row dst row src's first n entries (a shared prompt).
- `compact(start, keep)` keeps a chosen subset of the entries written since `start`
  (the accepted path of a tree draft), moves them to `start, start+1, ...` in order,
  and sets `length = start + len(keep)`.

Worked example for compact: length was 10, a tree of 5 nodes was verified at slots
10..14, and the accepted path is nodes (0, 2, 3). `compact(10, [0, 2, 3])` copies slots
12 and 13 to 11 and 12 (slot 10 stays) and sets length to 13.
"""

from __future__ import annotations

import torch


class KVCache:
    def __init__(
        self,
        num_layers: int,
        batch_size: int,
        max_seq_len: int,
        num_kv_heads: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device | str = "cpu",
        pad_to: int = 1,
    ) -> None:
        alloc = -(-max_seq_len // pad_to) * pad_to
        shape = (num_layers, batch_size, num_kv_heads, alloc, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.max_seq_len = max_seq_len
        self.length = 0

    @property
    def batch_size(self) -> int:
        return self.k.shape[1]

    @property
    def num_free(self) -> int:
        return self.max_seq_len - self.length

    def reserve(self, num_tokens: int) -> int:
        """Check there is room for num_tokens more entries; return the first new slot."""
        if self.length + num_tokens > self.max_seq_len:
            raise ValueError(
                f"KV cache full: {self.length} + {num_tokens} tokens > max_seq_len {self.max_seq_len}"
            )
        return self.length

    def rollback(self, num_tokens: int) -> None:
        if not 0 <= num_tokens <= self.length:
            raise ValueError(f"cannot roll back {num_tokens} of {self.length} cached tokens")
        self.length -= num_tokens

    def truncate(self, length: int) -> None:
        """Set the length to an absolute value <= the current one."""
        self.rollback(self.length - length)

    def compact(self, start: int, keep: list[int] | torch.Tensor) -> None:
        """Keep entries start+keep[i] at slot start+i; keep must be increasing."""
        keep = torch.as_tensor(keep, dtype=torch.long, device=self.k.device)
        n = keep.numel()
        if n and (int(keep[-1]) >= self.length - start or int(keep[0]) < 0):
            raise ValueError(f"compact indices {keep.tolist()} outside the {self.length - start} newest")
        if n and not torch.equal(keep, torch.arange(n, device=keep.device)):
            src = start + keep
            self.k[:, :, :, start : start + n] = self.k[:, :, :, src]
            self.v[:, :, :, start : start + n] = self.v[:, :, :, src]
        self.length = start + n

    def copy_row(self, src: int, dst: int, length: int) -> None:
        """Row dst's first `length` entries become row src's (a prompt prefilled once for two rows)."""
        self.k[:, dst, :, :length] = self.k[:, src, :, :length]
        self.v[:, dst, :, :length] = self.v[:, src, :, :length]

    def reset(self) -> None:
        self.length = 0

    def row_view(self, row: int, length: int) -> KVCache:
        """Row `row` as a batch-size-1 cache holding `length` tokens; writes land in this cache."""
        if not 0 <= row < self.batch_size:
            raise ValueError(f"row {row} outside 0..{self.batch_size - 1}")
        if not 0 <= length <= self.max_seq_len:
            raise ValueError(f"length {length} outside 0..{self.max_seq_len}")
        view = KVCache.__new__(KVCache)
        view.k = self.k[:, row : row + 1]
        view.v = self.v[:, row : row + 1]
        view.max_seq_len = self.max_seq_len
        view.length = length
        return view
