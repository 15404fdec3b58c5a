"""export_head's vllm layout: the names, shapes and config vLLM's EAGLE loaders read, and an
independent evaluation of the written files as vLLM's EagleLlamaForCausalLM computes them
(fc without bias over cat(embed_tokens, feature), one decoder layer without input norm, the
target's LM head), which must reproduce the head. vLLM itself is not needed (nor imported)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from specdec.models.eagle import EagleHead, save_head
from specdec.models.head_io import target_lm_head_weight
from specdec.models.loader import load_model
from specdec.train.export import check_export, export_head
from test_eagle import make_head as eagle_head


@pytest.fixture(scope="module")
def tiny_target(tiny_model_dir):
    return load_model(tiny_model_dir, "float32", "cpu", 512)


def make_head(target, arch="eagle1", draft_vocab=None, seed=0) -> EagleHead:
    """test_eagle's random head, with an fc bias large enough that dropping it shows."""
    head = eagle_head(target, arch, draft_vocab, seed)
    if head.fc is not None and head.fc.bias is not None:
        with torch.no_grad():
            head.fc.bias.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(seed))
    return head


def rms_norm(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def rope(x, positions, theta):  # x [T, H, D], rotate-half (HF / vLLM neox style)
    d = x.shape[-1]
    inv = 1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d)
    freqs = torch.outer(positions.double(), inv)
    cos, sin = torch.cat((freqs, freqs), -1).cos()[:, None], torch.cat((freqs, freqs), -1).sin()[:, None]
    x1, x2 = x[..., : d // 2], x[..., d // 2 :]
    return x * cos + torch.cat((-x2, x1), -1) * sin


def vllm_eagle1_hidden(out_dir, target_embed, features, token_ids):
    """vLLM's EagleLlamaForCausalLM.forward over T tokens at positions 0..T-1, from the files
    alone: [T, D] (the draft's hidden state, which the target's LM head turns into logits)."""
    config = json.loads((out_dir / "config.json").read_text())
    w = {k: v.double() for k, v in load_file(str(out_dir / "model.safetensors")).items()}
    embed = w.get("embed_tokens.weight", target_embed.double())  # vLLM shares the target's when absent
    x = torch.cat((embed[token_ids], features.double()), -1) @ w["fc.weight"].T  # no bias: vLLM's fc has none
    t, h, h_kv, d = x.shape[0], config["num_attention_heads"], config["num_key_value_heads"], config["head_dim"]
    p = "layers.0."
    positions = torch.arange(t)
    q = rope((x @ w[p + "self_attn.q_proj.weight"].T).view(t, h, d), positions, config["rope_theta"])
    k = rope((x @ w[p + "self_attn.k_proj.weight"].T).view(t, h_kv, d), positions, config["rope_theta"])
    v = (x @ w[p + "self_attn.v_proj.weight"].T).view(t, h_kv, d)
    k, v = k.repeat_interleave(h // h_kv, 1), v.repeat_interleave(h // h_kv, 1)
    attn = F.scaled_dot_product_attention(q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), is_causal=True)
    residual = x + attn.transpose(0, 1).reshape(t, h * d) @ w[p + "self_attn.o_proj.weight"].T
    y = rms_norm(residual, w[p + "post_attention_layernorm.weight"], config["rms_norm_eps"])
    mlp = (F.silu(y @ w[p + "mlp.gate_proj.weight"].T) * (y @ w[p + "mlp.up_proj.weight"].T)) @ w[p + "mlp.down_proj.weight"].T
    return residual + mlp


@pytest.mark.parametrize("draft_vocab", [None, 3000])
def test_vllm_eagle1_layout_reproduces_the_head(tiny_target, tmp_path, draft_vocab):
    head = make_head(tiny_target, "eagle1", draft_vocab, seed=3)
    embed = tiny_target.model.embed.weight.detach()
    export_head(head, tmp_path, torch.float32, "vllm", embed)
    assert check_export(tmp_path, "vllm") == []
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["bias"] is False
    assert config["num_hidden_layers"] == 1 and "draft_vocab_size" not in config
    names = set(load_file(str(tmp_path / "model.safetensors")))
    assert not names & {"fc.bias", "lm_head.weight", "d2t", "t2d"} and "embed_tokens.weight" in names

    t = 6
    feats = torch.randn(1, t, head.config.feature_size)
    tokens = torch.randint(0, tiny_target.config.vocab_size, (1, t))
    ours = head.full_vocab_logits(head.logits(head.step(feats, tokens, torch.arange(t)[None], head.new_cache(8))))[0]
    hidden = vllm_eagle1_hidden(tmp_path, embed, feats[0], tokens[0])
    theirs = hidden @ target_lm_head_weight(tiny_target.model).double().T  # [T, V]
    if draft_vocab:  # the same logits over the draft vocabulary; vLLM also sees the rest
        ids = head.draft_to_target
        torch.testing.assert_close(theirs[:, ids].float(), ours[:, ids], atol=2e-4, rtol=1e-4)
    else:
        torch.testing.assert_close(theirs.float(), ours, atol=2e-4, rtol=1e-4)

    # the bias is what vLLM's loader drops: without the folded embedding the logits differ
    state = load_file(str(tmp_path / "model.safetensors"))
    state.pop("embed_tokens.weight")
    save_file(state, str(tmp_path / "model.safetensors"))
    unfolded = vllm_eagle1_hidden(tmp_path, embed, feats[0], tokens[0])
    assert (unfolded - hidden).abs().max() > 1e-2


def test_check_export_refuses_the_sglang_eagle1_config_for_vllm(tiny_target, tmp_path):
    """The SGLang layout's "bias": true (fc's) is attention bias to vLLM's Llama layer."""
    export_head(make_head(tiny_target, "eagle1", 3000), tmp_path, torch.float32, "sglang")
    assert check_export(tmp_path, "sglang") == []
    problems = check_export(tmp_path, "vllm")
    assert any("attention biases" in p for p in problems) and any("d2t" in p for p in problems)


def test_vllm_eagle1_without_bias_shares_the_target_embedding(tiny_target, tmp_path):
    head = make_head(tiny_target)
    head.fc.bias = None
    export_head(head, tmp_path, torch.float32, "vllm", tiny_target.model.embed.weight.detach())
    assert "embed_tokens.weight" not in load_file(str(tmp_path / "model.safetensors"))
    assert check_export(tmp_path, "vllm") == []


def test_vllm_layout_refuses_what_vllm_cannot_feed(tiny_target, tmp_path):
    head = make_head(tiny_target)
    head.config.feature_layers = (12,)
    with pytest.raises(ValueError, match="final norm"):
        export_head(head, tmp_path, layout="vllm", target_embed=tiny_target.model.embed.weight)
    eagle3 = make_head(tiny_target, "eagle3", 3000)
    eagle3.config.feature_layers = (1, 2, -1)
    with pytest.raises(ValueError, match="EAGLE-3"):
        export_head(eagle3, tmp_path, layout="vllm")
    with pytest.raises(ValueError, match="layout"):
        export_head(make_head(tiny_target), tmp_path, layout="tgi")
    with pytest.raises(ValueError, match="embedding"):
        export_head(make_head(tiny_target), tmp_path, layout="vllm")


def test_eagle3_vllm_layout_is_specforge_layout(tiny_target, tmp_path):
    """vLLM's Eagle3LlamaForCausalLM reads SpecForge's names: the two layouts write the same files."""
    head = make_head(tiny_target, "eagle3", 3000)
    export_head(head, tmp_path / "vllm", torch.float32, "vllm")
    export_head(head, tmp_path / "sglang", torch.float32, "sglang")
    a, b = (load_file(str(tmp_path / x / "model.safetensors")) for x in ("vllm", "sglang"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert check_export(tmp_path / "vllm", "vllm") == [] and check_export(tmp_path / "sglang", "sglang") == []


def test_check_export_names_each_departure(tiny_target, tmp_path):
    export_head(make_head(tiny_target, "eagle3", 3000), tmp_path, torch.float32, "sglang")
    state = load_file(str(tmp_path / "model.safetensors"))
    state.pop("norm.weight")
    state["midlayer.hidden_norm.weight"] = torch.ones(3)
    state["d2t"] = state["d2t"].flip(0)
    state["extra.weight"] = torch.ones(2)
    save_file(state, str(tmp_path / "model.safetensors"))
    problems = check_export(tmp_path, "sglang")
    assert any(p.startswith("missing norm.weight") for p in problems)
    assert any(p.startswith("midlayer.hidden_norm.weight: shape") for p in problems)
    assert "unexpected extra.weight" in problems and any("d2t" in p for p in problems)


def test_export_draft_cli_vllm_format(tiny_target, tmp_path, capsys):
    from specdec.cli import main

    head = make_head(tiny_target, "eagle1", 3000)
    head.config.lm_head_from_target = True
    save_head(head, tmp_path / "native", torch.float32)
    assert main(["export-draft", str(tmp_path / "native"), "--model", str(tiny_target.path),
                 "--out", str(tmp_path / "public"), "--dtype", "float32"]) == 0
    out = capsys.readouterr().out
    assert "vllm layout" in out and '"method": "eagle"' in out and "folded into embed_tokens" in out
    assert check_export(tmp_path / "public", "vllm") == []
