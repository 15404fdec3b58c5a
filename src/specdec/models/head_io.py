"""Reading draft heads: `load_head`, the one loader the proposers use, takes specdec's own
format (models/eagle.py) or a public EAGLE layout (`import_head`). Writing the public
layouts is train/export.py's.

Implemented layouts (Llama-family targets), read from config.json + model.safetensors
(or pytorch_model.bin):

EAGLE-1/2 (yuhuili/EAGLE-* heads; vLLM's EagleLlamaForCausalLM)
  config  a LlamaConfig with num_hidden_layers 1; "bias" (fc bias, default true);
          architectures ["LlamaForCausalLM"]; features = the target's last hidden state
          after its final norm (our feature layer -1)
  weights fc.weight [D, 2D] (input cat(embedding, feature)), fc.bias [D],
          layers.0.self_attn.{q,k,v,o}_proj.weight, layers.0.mlp.{gate,up,down}_proj.weight,
          layers.0.post_attention_layernorm.weight (no input_layernorm); embed_tokens.weight
          is ignored if present (the target's embedding is used); no norm, no lm_head.
  extension for a reduced draft vocabulary (FR-Spec style, in EAGLE-3's names):
          config "draft_vocab_size", weights lm_head.weight [V_d, D], d2t, t2d.
EAGLE-3 (yuhuili/EAGLE3-* heads, SGLang SpecForge output; LlamaForCausalLMEagle3)
  config  architectures ["LlamaForCausalLMEagle3"], draft_vocab_size, target_hidden_size
          (optional, default hidden_size), eagle_config.eagle_aux_hidden_state_layer_ids
          (optional; default [2, L/2, L-3] of the target's L layers)
  weights fc.weight [D, 3 D_t], midlayer.self_attn.{q,k,v}_proj.weight [., 2D],
          midlayer.self_attn.o_proj.weight, midlayer.mlp.{gate,up,down}_proj.weight,
          midlayer.input_layernorm.weight (on the embedding), midlayer.hidden_norm.weight
          (on the fused feature), midlayer.post_attention_layernorm.weight, norm.weight,
          lm_head.weight [V_d, D], d2t [V_d] int64 and t2d [V] bool.
Vocabulary maps (SpecForge): the draft vocabulary is a sorted list of target ids;
d2t[i] = target_id(i) - i (an offset) and t2d[v] = v is in the draft vocabulary.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from specdec.config import ModelConfig
from specdec.models.eagle import EagleConfig, EagleHead, eagle3_feature_layers, is_native_head, load_native_head

EAGLE3_ARCHS = ("LlamaForCausalLMEagle3", "Eagle3LlamaForCausalLM")


def public_names(arch: str) -> dict[str, str]:
    """Native parameter name -> public name, for the 1:1 tensors."""
    p = "layers.0." if arch == "eagle1" else "midlayer."
    names = {
        "layer.attn.wo.weight": p + "self_attn.o_proj.weight",
        "layer.mlp.w2.weight": p + "mlp.down_proj.weight",
        "layer.mlp_norm.weight": p + "post_attention_layernorm.weight",
        "lm_head.weight": "lm_head.weight",
    }
    if arch == "eagle1":
        names.update({"fc.weight": "fc.weight", "fc.bias": "fc.bias"})
    else:
        names.update(
            {
                "fuse.weight": "fc.weight",
                "layer.attn_norm.weight": p + "input_layernorm.weight",
                "hidden_norm.weight": p + "hidden_norm.weight",
                "norm.weight": "norm.weight",
            }
        )
    return names


def from_public_state(head: EagleHead, state: dict[str, torch.Tensor]) -> None:
    arch = head.config.arch
    p = "layers.0." if arch == "eagle1" else "midlayer."

    def take(name: str) -> torch.Tensor:
        if name not in state:
            raise ValueError(f"{arch} checkpoint lacks {name}")
        return state[name]

    native = {}
    for n, pub in public_names(arch).items():
        if n in head.state_dict():
            native[n] = take(pub)
    native["layer.attn.wqkv.weight"] = torch.cat([take(p + f"self_attn.{x}_proj.weight") for x in "qkv"])
    native["layer.mlp.w13.weight"] = torch.cat([take(p + "mlp.gate_proj.weight"), take(p + "mlp.up_proj.weight")])
    if head.draft_to_target is not None:
        d2t = take("d2t").long()
        native["draft_to_target"] = d2t + torch.arange(d2t.numel())
    expected = head.state_dict()
    for name, tensor in native.items():
        if tensor.shape != expected[name].shape:
            raise ValueError(f"{name}: checkpoint shape {tuple(tensor.shape)} != head shape {tuple(expected[name].shape)}")
    head.load_state_dict({k: v.to(expected[k].dtype) for k, v in native.items()})


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    if (path / "model.safetensors").is_file():
        from safetensors.torch import load_file

        return load_file(str(path / "model.safetensors"))
    if (path / "pytorch_model.bin").is_file():
        return torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"{path}: no model.safetensors or pytorch_model.bin")


def import_head(path: str | Path, target: ModelConfig, dtype: torch.dtype = torch.float32) -> EagleHead:
    """A public EAGLE-1 or EAGLE-3 head directory, checked against the target's config."""
    path = Path(path)
    config = json.loads((path / "config.json").read_text())
    state = read_weights(path)
    arch = "eagle3" if set(config.get("architectures") or []) & set(EAGLE3_ARCHS) else "eagle1"
    if arch == "eagle1" and not any(k.startswith("layers.0.") for k in state):
        raise ValueError(f"{path}: neither an EAGLE-3 config nor EAGLE-1 weights (layers.0.*)")
    vocab = config.get("vocab_size", target.vocab_size)
    if vocab != target.vocab_size:
        raise ValueError(f"draft head vocab size {vocab} != target vocab size {target.vocab_size}")
    hidden = config["hidden_size"]
    if arch == "eagle1":
        layers = (-1,)
    else:
        layers = tuple((config.get("eagle_config") or {}).get("eagle_aux_hidden_state_layer_ids") or eagle3_feature_layers(target.num_layers))
    target_hidden = config.get("target_hidden_size", hidden)
    if target_hidden != target.hidden_size:
        raise ValueError(f"draft head expects target hidden size {target_hidden}, the target has {target.hidden_size}")
    num_heads = config["num_attention_heads"]
    head_config = EagleConfig(
        arch=arch,
        hidden_size=hidden,
        intermediate_size=config["intermediate_size"],
        num_heads=num_heads,
        num_kv_heads=config.get("num_key_value_heads", num_heads),
        head_dim=config.get("head_dim") or hidden // num_heads,
        vocab_size=target.vocab_size,
        draft_vocab_size=config.get("draft_vocab_size") or target.vocab_size,
        feature_layers=layers,
        target_hidden_size=target_hidden,
        rms_norm_eps=config.get("rms_norm_eps", 1e-5),
        rope_theta=config.get("rope_theta", 10000.0),
        rope_scaling=config.get("rope_scaling"),
        max_position_embeddings=config.get("max_position_embeddings", target.max_position_embeddings),
        fc_bias=bool(config.get("bias", True)) and "fc.bias" in state,
        extra={"imported_from": str(path)},
    )
    head = EagleHead(head_config).to(dtype)
    from_public_state(head, state)
    return head.eval().requires_grad_(False)


def load_head(path: str | Path, target, dtype: torch.dtype = torch.float32) -> EagleHead:
    """A native (specdec) or public EAGLE head directory, for the LoadedModel `target`."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"draft head {path} has no config.json")
    config = json.loads((path / "config.json").read_text())
    if is_native_head(config):
        head = load_native_head(path, target_lm_head_weight(target.model), dtype, target.model.device)
    else:
        head = import_head(path, target.config, dtype).to(target.model.device)
    c = head.config
    if c.vocab_size != target.config.vocab_size:
        raise ValueError(f"draft head vocab size {c.vocab_size} != target vocab size {target.config.vocab_size}")
    if c.target_hidden_size != target.config.hidden_size:
        raise ValueError(f"draft head reads features of width {c.target_hidden_size}, target has {target.config.hidden_size}")
    bad = [i for i in c.feature_layers if not -1 <= i <= target.config.num_layers]
    if bad:
        raise ValueError(f"draft head feature layers {bad} outside the target's 0..{target.config.num_layers} (or -1)")
    return head


def target_lm_head_weight(model) -> torch.Tensor:
    """The target's LM head as a dense [V, D] tensor (tied included; a quantized head dequantized)."""
    head = model.lm_head
    if hasattr(head, "dequantize"):  # Int8Linear / Int4Linear (models/quant.py)
        return head.dequantize().to(model.dtype)
    return head.weight
