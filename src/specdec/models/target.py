"""The interface every target model meets: the native `LlamaModel` and the transformers
adapter (`TransformersAdapter`) alike, so the engine never asks which it has.

    forward(token_ids [B, T], positions [B, T], cache, attn_mask=None, hidden_layers=(),
            logits_indices=None) -> ModelOutput(logits [B, T', V], hidden_states {layer: [B, T, D]})

The T new tokens go to cache slots [cache.length, cache.length + T) and the cache's length
moves past them; `attn_mask` [B, T, T] (True = may attend) masks the new tokens among
themselves (tree drafts), every new token seeing the whole cached prefix. Only the native
model also takes a ragged batch (`seq_lens`, `num_new`: models/llama.py); `LoadedModel.is_native`
tells the engine whether it may batch rows.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class TargetModel(Protocol):
    max_seq_len: int

    @property
    def dtype(self) -> torch.dtype: ...

    @property
    def device(self) -> torch.device: ...

    def new_cache(self, batch_size: int = 1, max_seq_len: int | None = None): ...

    def forward(self, token_ids: torch.Tensor, positions: torch.Tensor, cache, attn_mask: torch.Tensor | None = None,
                hidden_layers: tuple[int, ...] = (), logits_indices=None): ...
