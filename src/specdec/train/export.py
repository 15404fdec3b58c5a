"""Draft heads out to the public EAGLE layouts (SGLang, vLLM): `export_head`.

The layouts, and reading them back (`import_head`, `load_head`), are in models/head_io.py;
the names below re-export the loading side for the training code and older imports.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from specdec.models.eagle import EagleHead
from specdec.models.head_io import (  # noqa: F401  (re-exported)
    EAGLE3_ARCHS,
    from_public_state,
    import_head,
    load_head,
    public_names,
    read_weights,
    target_lm_head_weight,
)


def to_public_state(head: EagleHead) -> dict[str, torch.Tensor]:
    arch = head.config.arch
    p = "layers.0." if arch == "eagle1" else "midlayer."
    native = head.state_dict()
    out = {pub: native[n] for n, pub in public_names(arch).items() if n in native}
    c = head.config
    q_dim, kv_dim = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim
    q, k, v = native["layer.attn.wqkv.weight"].split([q_dim, kv_dim, kv_dim], dim=0)
    out.update({p + "self_attn.q_proj.weight": q, p + "self_attn.k_proj.weight": k, p + "self_attn.v_proj.weight": v})
    gate, up = native["layer.mlp.w13.weight"].chunk(2, dim=0)
    out.update({p + "mlp.gate_proj.weight": gate, p + "mlp.up_proj.weight": up})
    if head.draft_to_target is not None:
        d2t = head.draft_to_target.long()
        out["d2t"] = d2t - torch.arange(d2t.numel())
        t2d = torch.zeros(c.vocab_size, dtype=torch.bool)
        t2d[d2t] = True
        out["t2d"] = t2d
    return {k: v.contiguous() for k, v in out.items()}


def public_config(head: EagleHead) -> dict:
    c = head.config
    d = {
        "architectures": ["LlamaForCausalLM"] if c.arch == "eagle1" else [EAGLE3_ARCHS[0]],
        "model_type": "llama",
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "num_attention_heads": c.num_heads,
        "num_key_value_heads": c.num_kv_heads,
        "head_dim": c.head_dim,
        "num_hidden_layers": 1,
        "hidden_act": "silu",
        "rms_norm_eps": c.rms_norm_eps,
        "rope_theta": c.rope_theta,
        "rope_scaling": c.rope_scaling,
        "max_position_embeddings": c.max_position_embeddings,
        "vocab_size": c.vocab_size,
        "tie_word_embeddings": False,
    }
    if c.arch == "eagle1":
        d["bias"] = c.fc_bias
        if c.reduced_vocab:
            d["draft_vocab_size"] = c.draft_vocab_size
    else:
        d["draft_vocab_size"] = c.draft_vocab_size
        d["target_hidden_size"] = c.target_hidden_size
        d["eagle_config"] = {"eagle_aux_hidden_state_layer_ids": list(c.feature_layers)}
    return d


def export_head(head: EagleHead, out_dir: str | Path, dtype: torch.dtype = torch.float16) -> Path:
    """Write `head` in the public layout of its arch (config.json + model.safetensors)."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = public_config(head)
    config["torch_dtype"] = str(dtype).removeprefix("torch.")
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    state = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in to_public_state(head).items()}
    save_file(state, str(out / "model.safetensors"))
    return out
