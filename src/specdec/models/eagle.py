"""An EAGLE-style draft head: one decoder layer over the target's own features.

Alignment (EAGLE): f_t is the target's feature at position t, the one its LM head turns
into the distribution of token t+1. The head's input at position t is the pair
(f_t, x_{t+1}): the feature together with the embedding of the token that followed it.
Its output h_{t+1} is a prediction of f_{t+1}, so logits(h_{t+1}) drafts token t+2, and
the next draft step feeds the pair (h_{t+1}, x_{t+2}) at position t+1.

Two layouts, chosen by `EagleConfig.arch`, one code path for training and inference:

  eagle1  (EAGLE-1/2) features: one layer, usually -1 (after the target's final norm)
          x = fc(cat(embed(x_{t+1}), f_t))            fc: 2D -> D, with bias
          h = x + attn(x); h = h + mlp(mlp_norm(h))    (no input norm, as in EAGLE-1)
          logits = lm_head(h)                           h lives in the feature space
  eagle3  (EAGLE-3) features: low, mid and high layers, fused g_t = fuse(cat(f^l, f^m, f^h))
          x = cat(input_norm(embed(x_{t+1})), hidden_norm(g_t))   [2D] into q/k/v
          h = g_t + attn(x); h = h + mlp(mlp_norm(h))
          logits = lm_head(norm(h));  later steps feed h in place of g

The embedding is the target's (frozen, shared; `attach`). The LM head is the target's for
the full vocabulary, or the head's own [V_d, D] matrix over a reduced draft vocabulary
(FR-Spec, EAGLE-3): `draft_to_target[i]` is the target id of draft token i, and
`full_vocab_logits` puts the V_d logits back at their target ids with -inf elsewhere, so
q built from them is zero outside the draft vocabulary (still lossless).

The layer is `specdec.models.llama.DecoderLayer` with its own one-layer KVCache. An
eagle1 head at inference on the CPU runs its chain steps (no mask, one sequence) through
the C stack (csrc/layers.c) as a one-layer model: fc in PyTorch, the layer in one call, with
the C attention kernel in place of SDPA. Tree levels take it too: their mask covers the
draft slots after the fully visible prefix (`native_tree_mask`), which the kernel reads as
a [T, W] mask over the last W slots. Its drafts can differ from the PyTorch path's in
the last bits (another attention kernel); the verifier makes either lossless.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from specdec.cache import KVCache
from specdec.config import ModelConfig
from specdec.models.attention import NATIVE_MAX_ROWS, AttentionPlan, attend
from specdec.models.llama import (
    DecoderLayer,
    NativeStackHolder,
    RMSNorm,
    apply_rope,
    native_layer_weights,
    native_stack_possible,
    rope_tables,
)
from specdec.models.native import NativeStack

ARCHS = ("eagle1", "eagle3")
FORMAT = "specdec-eagle-head"


def eagle3_feature_layers(num_layers: int) -> tuple[int, int, int]:
    """EAGLE-3's low/mid/high taps (outputs of layers 2, L/2, L-3; SGLang/vLLM defaults)."""
    return (min(2, num_layers), num_layers // 2, max(num_layers - 3, 1))


@dataclass
class EagleConfig:
    arch: str
    hidden_size: int
    intermediate_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int  # the target's
    draft_vocab_size: int
    feature_layers: tuple[int, ...]
    target_hidden_size: int
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None
    max_position_embeddings: int = 2048
    fc_bias: bool = True  # eagle1's fc has a bias (EAGLE-1 checkpoints' "bias" field)
    # The reduced LM head is the target's rows for the draft vocabulary (frozen): not stored,
    # rebuilt from the target at load time.
    lm_head_from_target: bool = False
    extra: dict = field(default_factory=dict)  # provenance: target name, training summary

    def __post_init__(self) -> None:
        self.feature_layers = tuple(int(i) for i in self.feature_layers)
        if self.arch not in ARCHS:
            raise ValueError(f"head arch {self.arch!r} is not one of {', '.join(ARCHS)}")
        if not 0 < self.draft_vocab_size <= self.vocab_size:
            raise ValueError(f"draft vocab size {self.draft_vocab_size} outside 1..{self.vocab_size}")
        if self.arch == "eagle1" and (len(self.feature_layers) != 1 or self.target_hidden_size != self.hidden_size):
            raise ValueError("an eagle1 head reads one feature layer of the head's own width")

    @property
    def reduced_vocab(self) -> bool:
        return self.draft_vocab_size < self.vocab_size

    @property
    def feature_size(self) -> int:  # F: width of state.target_hidden
        return self.target_hidden_size * len(self.feature_layers)

    def layer_config(self) -> ModelConfig:
        return ModelConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_layers=1,
            num_heads=self.num_heads,
            num_kv_heads=self.num_kv_heads,
            head_dim=self.head_dim,
            rms_norm_eps=self.rms_norm_eps,
            rope_theta=self.rope_theta,
            rope_scaling=self.rope_scaling,
            max_position_embeddings=self.max_position_embeddings,
        )

    @classmethod
    def for_target(
        cls, target: ModelConfig, arch: str = "eagle1", draft_vocab_size: int | None = None, feature_layers=None
    ) -> EagleConfig:
        if feature_layers is None:
            feature_layers = (-1,) if arch == "eagle1" else eagle3_feature_layers(target.num_layers)
        return cls(
            arch=arch,
            hidden_size=target.hidden_size,
            intermediate_size=target.intermediate_size,
            num_heads=target.num_heads,
            num_kv_heads=target.num_kv_heads,
            head_dim=target.head_dim,
            vocab_size=target.vocab_size,
            draft_vocab_size=draft_vocab_size or target.vocab_size,
            feature_layers=tuple(feature_layers),
            target_hidden_size=target.hidden_size,
            rms_norm_eps=target.rms_norm_eps,
            rope_theta=target.rope_theta,
            rope_scaling=target.rope_scaling,
            max_position_embeddings=target.max_position_embeddings,
        )


class EagleHead(NativeStackHolder, nn.Module):
    def __init__(self, config: EagleConfig) -> None:
        super().__init__()
        self.config = config
        d = config.hidden_size
        self.layer = DecoderLayer(config.layer_config())
        if config.arch == "eagle1":
            self.fc = nn.Linear(2 * d, d, bias=config.fc_bias)
            self.layer.attn_norm = nn.Identity()  # EAGLE-1 drops the first layer's input norm
            self.fuse = self.hidden_norm = self.norm = None
        else:
            self.fc = None
            self.fuse = nn.Linear(config.feature_size, d, bias=False)
            attn = self.layer.attn
            attn.wqkv = nn.Linear(2 * d, attn.wqkv.out_features, bias=attn.wqkv.bias is not None)
            self.hidden_norm = RMSNorm(d, config.rms_norm_eps)
            self.norm = RMSNorm(d, config.rms_norm_eps)
        if config.reduced_vocab:
            self.lm_head = nn.Linear(d, config.draft_vocab_size, bias=False)
            self.register_buffer("draft_to_target", torch.arange(config.draft_vocab_size))
        else:
            self.lm_head = None
            self.draft_to_target = None
        self._target: tuple = ()  # (embed, lm_head) callables of the target, not submodules
        self._rope: tuple[torch.Tensor, torch.Tensor] | None = None

    def _build_native_stack(self) -> NativeStack | None:
        """The eagle1 layer as a one-layer C stack (module docstring)."""
        c, dtype = self.config, self.dtype
        if self.fc is None or not native_stack_possible(self, dtype, c.head_dim):
            return None
        weights = native_layer_weights(self.layer, dtype)
        if weights is None:
            return None
        return NativeStack([weights], c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim, c.intermediate_size,
                           self.layer.mlp_norm.eps, dtype)

    # -- wiring -------------------------------------------------------------------------
    def attach(self, embed, lm_head=None) -> EagleHead:
        """Share the target's embedding (and LM head, needed for the full vocabulary)."""
        if lm_head is None and self.lm_head is None:
            raise ValueError("a full-vocabulary head needs the target's LM head")
        self._target = (embed, lm_head)
        return self

    @property
    def dtype(self) -> torch.dtype:
        return self.layer.mlp_norm.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.layer.mlp_norm.weight.device

    def new_cache(self, max_seq_len: int, batch_size: int = 1) -> KVCache:
        c = self.config
        return KVCache(1, batch_size, max_seq_len, c.num_kv_heads, c.head_dim, self.dtype, self.device)

    def _rope_tables(self, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        cached = self._rope
        if cached is None or cached[0].shape[0] < length or cached[0].device != self.device or cached[0].dtype != self.dtype:
            cached = rope_tables(self.config.layer_config(), max(length, 4096), self.dtype, self.device)
            self._rope = cached
        return cached

    # -- forward ------------------------------------------------------------------------
    def fuse_features(self, features: torch.Tensor) -> torch.Tensor:
        """Target features [..., F] -> the head's hidden input [..., D]."""
        return features if self.fuse is None else self.fuse(features)

    def step(
        self,
        hidden: torch.Tensor,  # [B, T, D] fused target features or the head's own outputs
        token_ids: torch.Tensor,  # [B, T] the token that follows each feature
        positions: torch.Tensor,  # [B, T]
        cache: KVCache,
        attn_mask: torch.Tensor | None = None,  # [B, T, cache.length + T] bool over all slots
        query_rows: torch.Tensor | None = None,  # [B, T'] of the T entries: the outputs wanted
    ) -> torch.Tensor:  # [B, T, D], or [B, T', D] with query_rows
        """One pass of the layer; writes T entries at cache slots [length, length + T).

        Without attn_mask the new entries are causal among themselves and see the whole cache.
        With query_rows (training) every entry writes its key and value, but only those rows
        go on through the query, attention, output projection and MLP; attn_mask is then
        [B, T', cache.length + T], one row per query row.
        """
        if query_rows is not None:
            return self._step_rows(hidden, token_ids, positions, cache, attn_mask, query_rows)
        b, t, _ = hidden.shape
        start = cache.reserve(t)
        embeds = self._target[0](token_ids).to(hidden.dtype)
        cos_table, sin_table = self._rope_tables(int(positions.max()) + 1)
        cos, sin = cos_table[positions].unsqueeze(2), sin_table[positions].unsqueeze(2)  # [B, T, 1, D]
        layer = self.layer
        native = b == 1 and t <= NATIVE_MAX_ROWS and self.use_native_stack and not torch.is_grad_enabled()
        stack = self.native_stack() if native else None
        if stack is not None:
            native_mask = None if attn_mask is None else native_tree_mask(attn_mask[0], start)
            x = self.fc(torch.cat((embeds, hidden), dim=-1))[0].contiguous()  # [T, D], updated in place
            stack.forward(x, cos[0, :, 0].contiguous(), sin[0, :, 0].contiguous(), cache.k, cache.v, start, native_mask)
            cache.length = start + t
            return x[None]
        mask = self._mask(start, t, attn_mask, b)
        residual, attn_in = self._layer_inputs(hidden, embeds)
        h = residual + layer.attn(attn_in, cos, sin, cache.k[0], cache.v[0], start, mask)
        h = h + layer.mlp(layer.mlp_norm(h))
        cache.length = start + t
        return h

    def _step_rows(self, hidden, token_ids, positions, cache, attn_mask, query_rows) -> torch.Tensor:
        """`step` with query_rows, in PyTorch: keys and values from the K/V rows of wqkv for
        every entry, the rest of the layer on the query rows only."""
        b, t, _ = hidden.shape
        if attn_mask is None:
            raise ValueError("query_rows needs an attn_mask, one row per query row")
        plan = self._mask(cache.length, t, attn_mask, b, query_rows.shape[1])  # checked before the cache moves
        start = cache.reserve(t)
        c, layer = self.config, self.layer
        h, h_kv, d = c.num_heads, c.num_kv_heads, c.head_dim
        embeds = self._target[0](token_ids).to(hidden.dtype)
        cos_table, sin_table = self._rope_tables(int(positions.max()) + 1)
        residual, attn_in = self._layer_inputs(hidden, embeds)
        wqkv = layer.attn.wqkv
        bias = wqkv.bias
        kv = F.linear(attn_in, wqkv.weight[h * d :], None if bias is None else bias[h * d :]).view(b, t, 2 * h_kv, d)
        cos, sin = cos_table[positions].unsqueeze(2), sin_table[positions].unsqueeze(2)
        cache.k[0][:, :, start : start + t] = apply_rope(kv[:, :, :h_kv], cos, sin).transpose(1, 2)
        cache.v[0][:, :, start : start + t] = kv[:, :, h_kv:].transpose(1, 2)
        cache.length = start + t

        def rows(x: torch.Tensor) -> torch.Tensor:
            return x.gather(1, query_rows[..., None].expand(-1, -1, x.shape[-1]))

        q_positions = positions.gather(1, query_rows)
        q = F.linear(rows(attn_in), wqkv.weight[: h * d], None if bias is None else bias[: h * d])
        q = apply_rope(q.view(b, -1, h, d), cos_table[q_positions].unsqueeze(2), sin_table[q_positions].unsqueeze(2))
        out = rows(residual) + layer.attn.wo(attend(q, cache.k[0], cache.v[0], plan))
        return out + layer.mlp(layer.mlp_norm(out))

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:  # [..., D] -> [..., V_d]
        x = hidden if self.norm is None else self.norm(hidden)
        return self.lm_head(x) if self.lm_head is not None else self._target[1](x)

    def _layer_inputs(self, hidden: torch.Tensor, embeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(residual, attention input) of the layer (module docstring: eagle1, eagle3)."""
        if self.fc is not None:
            x = self.fc(torch.cat((embeds, hidden), dim=-1))
            return x, x
        return hidden, torch.cat((self.layer.attn_norm(embeds), self.hidden_norm(hidden)), dim=-1)

    def _mask(self, start: int, t: int, attn_mask, b: int, queries: int | None = None) -> AttentionPlan:
        """The plan for t new entries after `start` slots; attn_mask [B, queries, start + t] has
        one row per query (queries = t unless only some entries query: `step`'s query_rows)."""
        if attn_mask is None:
            if t == 1:
                return AttentionPlan(start + 1)
            new = torch.ones(t, t, dtype=torch.bool, device=self.device).tril()
            prefix = torch.ones(t, start, dtype=torch.bool, device=self.device)
            mask = torch.cat((prefix, new), dim=-1).expand(b, t, start + t)
        else:
            n = t if queries is None else queries
            if attn_mask.shape[-2:] != (n, start + t):
                raise ValueError(f"attn_mask must be [B, {n}, {start + t}], got {tuple(attn_mask.shape)}")
            mask = attn_mask.to(device=self.device, dtype=torch.bool).expand(b, n, start + t)
        rep = self.config.num_heads // self.config.num_kv_heads
        return AttentionPlan(start + t, mask.unsqueeze(1).repeat(1, 1, rep, 1))  # [B, 1, rep*T, S], rows (r, t)

    # -- vocabulary ---------------------------------------------------------------------
    def to_target_ids(self, draft_ids: torch.Tensor) -> torch.Tensor:
        return draft_ids if self.draft_to_target is None else self.draft_to_target[draft_ids]

    def full_vocab_logits(self, logits: torch.Tensor) -> torch.Tensor:  # [..., V_d] -> [..., V]
        if self.draft_to_target is None:
            return logits
        full = logits.new_full((*logits.shape[:-1], self.config.vocab_size), float("-inf"))
        return full.index_copy_(-1, self.draft_to_target, logits)

    def init_from_target(self, lm_head_weight: torch.Tensor, norm_weight: torch.Tensor | None = None) -> None:
        """Reduced LM head = the target's rows for the draft vocabulary; norm from the target's."""
        with torch.no_grad():
            if self.lm_head is not None:
                self.lm_head.weight.copy_(lm_head_weight[self.draft_to_target])
            if self.norm is not None and norm_weight is not None:
                self.norm.weight.copy_(norm_weight)


def native_tree_mask(attn_mask: torch.Tensor, start: int) -> torch.Tensor:
    """[T, start + T] bool over all slots -> the C kernel's [T, W] uint8 over the last W.

    W spans from the first slot some row may not see to the end (at least the T new
    slots): the slots before it are visible to every row, which the kernel assumes.
    """
    hidden_from_some = ~attn_mask[:, :start].all(dim=0)  # [start]
    first = int(hidden_from_some.nonzero()[0]) if bool(hidden_from_some.any()) else start
    return attn_mask[:, first:].to(torch.uint8).contiguous()


def save_head(head: EagleHead, out_dir: str | Path, dtype: torch.dtype = torch.float16) -> Path:
    """Native layout: config.json (EagleConfig + format tag) and model.safetensors."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = asdict(head.config)
    config["format"] = FORMAT
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    state = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in head.state_dict().items()}
    if head.config.lm_head_from_target:
        state.pop("lm_head.weight", None)
    save_file(state, str(out / "model.safetensors"), metadata={"format": FORMAT})
    return out


def is_native_head(config: dict) -> bool:
    return config.get("format") == FORMAT


def load_native_head(
    path: str | Path, target_lm_head_weight: torch.Tensor | None = None, dtype: torch.dtype = torch.float32, device="cpu"
) -> EagleHead:
    """target_lm_head_weight [V, D] rebuilds a head saved with lm_head_from_target."""
    from safetensors.torch import load_file

    path = Path(path)
    config = json.loads((path / "config.json").read_text())
    if not is_native_head(config):
        raise ValueError(f"{path}/config.json is not a {FORMAT} config")
    config.pop("format")
    head = EagleHead(EagleConfig(**config)).to(dtype)  # load_state_dict keeps the parameters' dtype
    state = load_file(str(path / "model.safetensors"))
    state = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in state.items()}
    rebuild = head.config.lm_head_from_target and head.lm_head is not None
    if rebuild:
        if target_lm_head_weight is None:
            raise ValueError(f"{path}: the head's LM head is the target's rows; pass the target's LM head weight")
        state["lm_head.weight"] = target_lm_head_weight[state["draft_to_target"]].to(dtype)
    head.load_state_dict(state)
    return head.to(device).eval().requires_grad_(False)


def draft_vocab_from_counts(counts: torch.Tensor, size: int) -> torch.Tensor:
    """The `size` most frequent token ids, sorted ascending (the draft_to_target map)."""
    if size > counts.numel():
        raise ValueError(f"draft vocab size {size} > vocab size {counts.numel()}")
    order = torch.sort(counts.double(), descending=True, stable=True).indices[:size]
    return torch.sort(order).values


def head_logits_dense(head: EagleHead, hidden: torch.Tensor, lm_head_weight: torch.Tensor) -> torch.Tensor:
    """Training path: logits with the target's LM head given as a dense weight (autograd-safe)."""
    x = hidden if head.norm is None else head.norm(hidden)
    return head.lm_head(x) if head.lm_head is not None else F.linear(x, lm_head_weight)
