"""Draft heads out to the public EAGLE layouts: `export_head`, and `check_export`, which reads
a written directory back and lists where it departs from the layout it claims.

Two layouts (`LAYOUTS`), both config.json + model.safetensors:

vllm    what vLLM's loaders read (vllm/model_executor/models/llama_eagle.py, llama_eagle3.py)
  eagle1  speculative_config method "eagle": EagleLlamaForCausalLM. Its decoder layer is
          vLLM's Llama layer, which reads a config "bias": true as *attention* bias: it then
          builds q/k/v/o biases that no checkpoint holds and runs them unloaded (the EAGLE-1
          layout's "bias" means fc's; a head exported that way loads and accepts no drafts).
          Its fc has no bias, its loader drops an unexpected `fc.bias` without a word, and it
          has no d2t (drafts range over the target's whole vocabulary, through the target's
          own LM head). So "bias": false, and:
          - the full vocabulary: no lm_head, d2t or t2d. A reduced head's rows are the
            target's rows (lm_head_from_target), so over the draft vocabulary the logits are
            the same; the drafts may now also name tokens outside it;
          - the bias folded into the head's own embedding: fc(cat(e, f)) + b =
            fc(cat(e + c, f)) with W_e c = b (W_e = fc.weight[:, :D], solved in float64), so
            the export carries embed_tokens.weight = target embedding + c, which vLLM keeps
            as the draft's own (it differs from the target's) and the layer sees exactly the
            input it was trained on, up to the rounding of the written dtype.
          vLLM feeds this head the target's last hidden state after its final norm, the
          head's feature layer -1; a head reading another layer has no vLLM EAGLE-1 layout.
  eagle3  method "eagle3": Eagle3LlamaForCausalLM reads the SpecForge layout below as is
          (midlayer.* renamed, d2t as offsets, t2d skipped); the aux layer ids index hidden
          states as ours do (i = after i layers), so -1 is refused.
sglang  SGLang's and SpecForge's names (models/head_io.py documents them; import_head reads
        them back): eagle3 as SpecForge's LlamaForCausalLMEagle3 (fc [D, 3D], midlayer.*,
        norm, lm_head [V_d, D], d2t offsets, t2d bool), eagle1 as yuhuili's EAGLE heads
        (fc with bias, layers.0.*) with the reduced-vocabulary extension in EAGLE-3's names.

Only the vllm layout is loaded by its runtime here (benchmarks/vllm_head_check.py); the sglang
layout is checked for names, shapes and config fields only.
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

LAYOUTS = ("vllm", "sglang")


def to_public_state(head: EagleHead) -> dict[str, torch.Tensor]:
    """The sglang layout's tensors (module docstring)."""
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


def folded_embedding(head: EagleHead, target_embed: torch.Tensor) -> torch.Tensor:
    """[V, D] target embedding + c, where fc.weight[:, :D] @ c = fc.bias (float64 solve)."""
    d = head.config.hidden_size
    w_e = head.fc.weight[:, :d].double()
    c = torch.linalg.solve(w_e, head.fc.bias.double())
    return (target_embed.double() + c).to(torch.float32)


def to_vllm_state(head: EagleHead, target_embed: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """The vllm layout's tensors (module docstring); eagle1 needs the target's [V, D] embedding."""
    c = head.config
    if c.arch == "eagle3":
        if any(i < 0 for i in c.feature_layers):
            raise ValueError(f"vLLM's EAGLE-3 reads hidden states after layers 0..L; this head reads {list(c.feature_layers)}")
        return to_public_state(head)
    if tuple(c.feature_layers) != (-1,):
        raise ValueError(f"vLLM feeds an EAGLE-1 head the target's last hidden state after its final norm "
                         f"(feature layer -1); this head reads {list(c.feature_layers)}")
    state = {k: v for k, v in to_public_state(head).items() if k not in ("lm_head.weight", "d2t", "t2d", "fc.bias")}
    if head.fc.bias is not None:
        if target_embed is None:
            raise ValueError("the vllm layout of an eagle1 head with an fc bias needs the target's embedding")
        if tuple(target_embed.shape) != (c.vocab_size, c.hidden_size):
            raise ValueError(f"target embedding {tuple(target_embed.shape)} != ({c.vocab_size}, {c.hidden_size})")
        state["embed_tokens.weight"] = folded_embedding(head, target_embed)
    return state


def public_config(head: EagleHead, layout: str = "sglang") -> dict:
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
        if layout == "vllm":
            d["bias"] = False  # folded into embed_tokens
        else:
            d["bias"] = c.fc_bias
            if c.reduced_vocab:
                d["draft_vocab_size"] = c.draft_vocab_size
    else:
        d["draft_vocab_size"] = c.draft_vocab_size
        d["target_hidden_size"] = c.target_hidden_size
        d["eagle_config"] = {"eagle_aux_hidden_state_layer_ids": list(c.feature_layers)}
    return d


def export_head(head: EagleHead, out_dir: str | Path, dtype: torch.dtype = torch.float16, layout: str = "sglang",
                target_embed: torch.Tensor | None = None) -> Path:
    """Write `head` in `layout` (module docstring): config.json + model.safetensors.

    target_embed [V, D]: the target's embedding, which the vllm layout of an eagle1 head needs."""
    from safetensors.torch import save_file

    if layout not in LAYOUTS:
        raise ValueError(f"export layout {layout!r} is not one of {', '.join(LAYOUTS)}")
    state = to_vllm_state(head, target_embed) if layout == "vllm" else to_public_state(head)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = public_config(head, layout)
    config["torch_dtype"] = str(dtype).removeprefix("torch.")
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    state = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in state.items()}
    save_file(state, str(out / "model.safetensors"))
    return out


def expected_shapes(config: dict, layout: str) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape that `layout` prescribes for a head with this config.json."""
    d, v, i = config["hidden_size"], config["vocab_size"], config["intermediate_size"]
    h, h_kv = config["num_attention_heads"], config["num_key_value_heads"]
    q_dim, kv_dim = h * config["head_dim"], h_kv * config["head_dim"]
    eagle3 = bool(set(config.get("architectures") or []) & set(EAGLE3_ARCHS))
    p, attn_in = ("midlayer.", 2 * d) if eagle3 else ("layers.0.", d)
    shapes = {
        p + "self_attn.q_proj.weight": (q_dim, attn_in),
        p + "self_attn.k_proj.weight": (kv_dim, attn_in),
        p + "self_attn.v_proj.weight": (kv_dim, attn_in),
        p + "self_attn.o_proj.weight": (d, q_dim),
        p + "mlp.gate_proj.weight": (i, d),
        p + "mlp.up_proj.weight": (i, d),
        p + "mlp.down_proj.weight": (d, i),
        p + "post_attention_layernorm.weight": (d,),
    }
    v_d = config.get("draft_vocab_size") or v
    if eagle3:
        layers = (config.get("eagle_config") or {}).get("eagle_aux_hidden_state_layer_ids") or [0, 0, 0]
        shapes.update({"fc.weight": (d, len(layers) * config.get("target_hidden_size", d)),
                       p + "input_layernorm.weight": (d,), p + "hidden_norm.weight": (d,), "norm.weight": (d,)})
    else:
        shapes["fc.weight"] = (d, 2 * d)
        if config.get("bias"):
            shapes["fc.bias"] = (d,)
    if v_d < v:
        shapes.update({"lm_head.weight": (v_d, d), "d2t": (v_d,), "t2d": (v,)})
    return shapes


def check_export(out_dir: str | Path, layout: str) -> list[str]:
    """Where the directory departs from `layout`: missing, unexpected or misshapen tensors and
    config fields the runtime reads. An empty list means names, shapes and config all fit."""
    out = Path(out_dir)
    config = json.loads((out / "config.json").read_text())
    state = read_weights(out)
    problems = []
    for key in ("architectures", "hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads",
                "head_dim", "vocab_size", "rms_norm_eps", "rope_theta"):
        if key not in config:
            problems.append(f"config.json lacks {key}")
    if problems:
        return problems
    eagle3 = bool(set(config["architectures"]) & set(EAGLE3_ARCHS))
    if config.get("num_hidden_layers") != 1:
        problems.append(f"num_hidden_layers {config.get('num_hidden_layers')} != 1")
    if layout == "vllm" and (config.get("bias") or config.get("attention_bias")):
        problems.append("config bias/attention_bias is true: vLLM's Llama layer then builds attention biases "
                        "that the checkpoint lacks")
    if layout == "vllm" and not eagle3:
        if config["architectures"] != ["LlamaForCausalLM"]:  # vLLM's method eagle prefixes "Eagle"
            problems.append(f"architectures {config['architectures']} != ['LlamaForCausalLM']")
        if config.get("draft_vocab_size", config["vocab_size"]) != config["vocab_size"]:
            problems.append("vLLM's EAGLE-1 head has no d2t: draft_vocab_size must be the full vocabulary")
    if eagle3 and any(i < 0 for i in (config.get("eagle_config") or {}).get("eagle_aux_hidden_state_layer_ids") or []):
        problems.append("eagle_aux_hidden_state_layer_ids holds a negative id")
    expected = expected_shapes(config, layout)
    for name, shape in expected.items():
        if name not in state:
            problems.append(f"missing {name} {shape}")
        elif tuple(state[name].shape) != shape:
            problems.append(f"{name}: shape {tuple(state[name].shape)} != {shape}")
    optional = {"embed_tokens.weight": (config["vocab_size"], config["hidden_size"])}  # the draft's own embedding
    for name in sorted(set(state) - set(expected)):
        if name not in optional:
            problems.append(f"unexpected {name}")
        elif tuple(state[name].shape) != optional[name]:
            problems.append(f"{name}: shape {tuple(state[name].shape)} != {optional[name]}")
    if "d2t" in state and "d2t" in expected:
        ids = state["d2t"].long() + torch.arange(state["d2t"].numel())
        if not bool((ids[1:] > ids[:-1]).all()) or int(ids[0]) < 0 or int(ids[-1]) >= config["vocab_size"]:
            problems.append("d2t + arange is not a sorted list of target ids")
        elif "t2d" in state and not torch.equal(state["t2d"].nonzero().flatten(), ids):
            problems.append("t2d does not mark exactly the ids d2t maps to")
    return problems
