"""Between Hugging Face parameter names and the native model's fused layout.

HF: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj (separate matrices).
Native: attn.wqkv = cat(q, k, v), attn.wo, mlp.w13 = cat(gate, up), mlp.w2.
"""

from __future__ import annotations

import torch

from specdec.config import ModelConfig


def native_state_dict(hf: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    def take(name: str) -> torch.Tensor:
        if name not in hf:
            raise ValueError(f"weights lack {name}")
        return hf[name]

    out = {"embed.weight": take("model.embed_tokens.weight"), "norm.weight": take("model.norm.weight")}
    if not config.tie_word_embeddings:
        out["lm_head.weight"] = take("lm_head.weight")
    for i in range(config.num_layers):
        p = f"model.layers.{i}."
        n = f"layers.{i}."
        out[n + "attn.wqkv.weight"] = torch.cat(
            [take(p + f"self_attn.{x}_proj.weight") for x in "qkv"], dim=0
        )
        if config.attention_bias:
            out[n + "attn.wqkv.bias"] = torch.cat(
                [take(p + f"self_attn.{x}_proj.bias") for x in "qkv"], dim=0
            )
        out[n + "attn.wo.weight"] = take(p + "self_attn.o_proj.weight")
        out[n + "mlp.w13.weight"] = torch.cat(
            [take(p + "mlp.gate_proj.weight"), take(p + "mlp.up_proj.weight")], dim=0
        )
        out[n + "mlp.w2.weight"] = take(p + "mlp.down_proj.weight")
        out[n + "attn_norm.weight"] = take(p + "input_layernorm.weight")
        out[n + "mlp_norm.weight"] = take(p + "post_attention_layernorm.weight")
    return out


def hf_state_dict(native: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """The inverse of native_state_dict (for transformers peers and exports)."""
    q_dim = config.num_heads * config.head_dim
    kv_dim = config.num_kv_heads * config.head_dim
    out = {"model.embed_tokens.weight": native["embed.weight"], "model.norm.weight": native["norm.weight"]}
    out["lm_head.weight"] = native.get("lm_head.weight", native["embed.weight"])
    for i in range(config.num_layers):
        p = f"model.layers.{i}."
        n = f"layers.{i}."
        for kind in ("weight", "bias"):
            fused = native.get(n + f"attn.wqkv.{kind}")
            if fused is None:
                continue
            q, k, v = fused.split([q_dim, kv_dim, kv_dim], dim=0)
            out[p + f"self_attn.q_proj.{kind}"] = q
            out[p + f"self_attn.k_proj.{kind}"] = k
            out[p + f"self_attn.v_proj.{kind}"] = v
        out[p + "self_attn.o_proj.weight"] = native[n + "attn.wo.weight"]
        gate, up = native[n + "mlp.w13.weight"].chunk(2, dim=0)
        out[p + "mlp.gate_proj.weight"] = gate
        out[p + "mlp.up_proj.weight"] = up
        out[p + "mlp.down_proj.weight"] = native[n + "mlp.w2.weight"]
        out[p + "input_layernorm.weight"] = native[n + "attn_norm.weight"]
        out[p + "post_attention_layernorm.weight"] = native[n + "mlp_norm.weight"]
    return out


def hf_config_dict(config: ModelConfig) -> dict:
    """A transformers config.json for the native config (Llama or Qwen2)."""
    arch = {"qwen2": "Qwen2ForCausalLM", "mistral": "MistralForCausalLM"}.get(
        config.architecture, "LlamaForCausalLM"
    )
    d = {
        "architectures": [arch],
        "model_type": {"qwen2": "qwen2", "mistral": "mistral"}.get(config.architecture, "llama"),
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "num_key_value_heads": config.num_kv_heads,
        "head_dim": config.head_dim,
        "rms_norm_eps": config.rms_norm_eps,
        "rope_theta": config.rope_theta,
        "rope_scaling": config.rope_scaling,
        "tie_word_embeddings": config.tie_word_embeddings,
        "attention_bias": config.attention_bias,
        "max_position_embeddings": config.max_position_embeddings,
        "hidden_act": "silu",
    }
    if config.bos_token_id is not None:
        d["bos_token_id"] = config.bos_token_id
    if config.eos_token_ids:
        d["eos_token_id"] = list(config.eos_token_ids)
    return d


def to_transformers(model, config: ModelConfig):
    """A transformers *ForCausalLM holding the same weights as a native model."""
    import transformers

    cfg = hf_config_dict(config)
    cfg_cls = transformers.AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    cfg_cls.architectures = None
    hf_model = transformers.AutoModelForCausalLM.from_config(cfg_cls, dtype=model.dtype)
    state = hf_state_dict(model.state_dict(), config)
    missing, unexpected = hf_model.load_state_dict(state, strict=False)
    missing = [m for m in missing if "rotary" not in m and not (config.tie_word_embeddings and m == "lm_head.weight")]
    if missing or unexpected:
        raise ValueError(f"weights do not fit transformers' model: missing {missing}, unexpected {unexpected}")
    return hf_model.to(model.device).eval()
