"""A thin adapter over transformers' AutoModelForCausalLM (GPT-2, OPT, ...).

It gives non-Llama architectures the native model's interface so they can be a target
or a draft. It is a correctness path, not a fast one: transformers' DynamicCache holds
the keys and values, and rollback crops it. Tree attention masks are not supported.
"""

from __future__ import annotations

import torch
from torch import nn

from specdec.config import ModelConfig
from specdec.models.llama import ModelOutput


class AdapterCache:
    """KVCache-compatible bookkeeping around a transformers DynamicCache."""

    def __init__(self, max_seq_len: int) -> None:
        from transformers import DynamicCache

        self.hf_cache = DynamicCache()
        self.length = 0
        self.max_seq_len = max_seq_len
        self.batch_size = 1

    @property
    def num_free(self) -> int:
        return self.max_seq_len - self.length

    def reserve(self, num_tokens: int) -> int:
        if self.length + num_tokens > self.max_seq_len:
            raise ValueError(
                f"KV cache full: {self.length} + {num_tokens} tokens > max_seq_len {self.max_seq_len}"
            )
        return self.length

    def rollback(self, num_tokens: int) -> None:
        if not 0 <= num_tokens <= self.length:
            raise ValueError(f"cannot roll back {num_tokens} of {self.length} cached tokens")
        self.length -= num_tokens
        if num_tokens:
            self.hf_cache.crop(self.length)

    def truncate(self, length: int) -> None:
        self.rollback(self.length - length)

    def compact(self, start: int, keep) -> None:
        raise ValueError("tree drafts need the native model; the transformers adapter has no compact")

    def reset(self) -> None:
        self.rollback(self.length)


def adapter_config(hf_config) -> ModelConfig:
    get = lambda *names, default=None: next(  # noqa: E731
        (getattr(hf_config, n) for n in names if getattr(hf_config, n, None) is not None), default
    )
    hidden = get("hidden_size", "n_embd", "d_model")
    heads = get("num_attention_heads", "n_head")
    eos = get("eos_token_id")
    return ModelConfig(
        vocab_size=hf_config.vocab_size,
        hidden_size=hidden,
        intermediate_size=get("intermediate_size", "n_inner", "ffn_dim", default=4 * hidden) or 4 * hidden,
        num_layers=get("num_hidden_layers", "n_layer"),
        num_heads=heads,
        num_kv_heads=get("num_key_value_heads", default=heads),
        head_dim=hidden // heads,
        tie_word_embeddings=bool(getattr(hf_config, "tie_word_embeddings", True)),
        max_position_embeddings=get("max_position_embeddings", "n_positions", default=2048),
        bos_token_id=get("bos_token_id"),
        eos_token_ids=tuple(eos) if isinstance(eos, list) else ((eos,) if eos is not None else ()),
        architecture=hf_config.model_type,
    )


class TransformersAdapter(nn.Module):
    def __init__(self, hf_model, max_seq_len: int | None = None) -> None:
        super().__init__()
        self.hf_model = hf_model.eval()
        self.config = adapter_config(hf_model.config)
        self.max_seq_len = min(max_seq_len or self.config.max_position_embeddings, self.config.max_position_embeddings)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.hf_model.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.hf_model.parameters()).device

    def new_cache(self, batch_size: int = 1, max_seq_len: int | None = None) -> AdapterCache:
        if batch_size != 1:
            raise ValueError("the transformers adapter runs batch size 1")
        return AdapterCache(min(max_seq_len or self.max_seq_len, self.max_seq_len))

    def forward(
        self,
        token_ids: torch.Tensor,  # [1, T]
        positions: torch.Tensor,  # [1, T]
        cache: AdapterCache,
        attn_mask: torch.Tensor | None = None,
        hidden_layers: tuple[int, ...] = (),
        logits_indices=None,
    ) -> ModelOutput:
        if attn_mask is not None:
            raise ValueError("tree attention masks need the native model, not the transformers adapter")
        t = token_ids.shape[1]
        start = cache.reserve(t)
        full_mask = torch.ones(1, start + t, dtype=torch.long, device=token_ids.device)
        out = self.hf_model(
            input_ids=token_ids,
            attention_mask=full_mask,
            past_key_values=cache.hf_cache,
            use_cache=True,
            output_hidden_states=bool(hidden_layers),
        )
        cache.length = start + t
        hidden = {}
        if hidden_layers:
            for i in hidden_layers:
                hidden[i] = out.hidden_states[i]
        logits = out.logits if logits_indices is None else out.logits[:, logits_indices]
        return ModelOutput(logits, hidden)
