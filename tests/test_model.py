"""The native model against transformers, and the KV cache's contract."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import transformers

from specdec.config import ModelConfig
from specdec.models.convert import hf_state_dict, native_state_dict
from specdec.models.linear import BlockedLinear, CPULinear, PackedLinear, pack_linears_for_cpu
from specdec.models.llama import LlamaModel
from specdec.models.loader import build_native
from specdec.models.native import native_linear_supported

BASE = dict(
    vocab_size=97,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=128,
    rms_norm_eps=1e-6,
)

CASES = {
    "llama-gqa-untied": ("llama", dict(num_key_value_heads=2, tie_word_embeddings=False, rope_theta=10000.0)),
    "llama-mha-tied": ("llama", dict(num_key_value_heads=4, tie_word_embeddings=True, rope_theta=500000.0)),
    "llama3-rope-scaling": (
        "llama",
        dict(
            num_key_value_heads=1,
            rope_scaling={
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 32,
            },
        ),
    ),
    "qwen2-bias-gqa": ("qwen2", dict(num_key_value_heads=2, tie_word_embeddings=False)),
    "qwen2-bias-tied": ("qwen2", dict(num_key_value_heads=1, tie_word_embeddings=True)),
}


def make_pair(arch: str, overrides: dict, seed: int = 0):
    from specdec.models.hf_dir import model_config_from_hf

    torch.manual_seed(seed)
    kwargs = dict(BASE, **overrides)
    if arch == "qwen2":
        hf = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**kwargs))
        arch_name = "Qwen2ForCausalLM"
    else:
        hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**kwargs))
        arch_name = "LlamaForCausalLM"
    hf.eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0.0, 0.1)
    cfg_dict = dict(hf.config.to_dict(), architectures=[arch_name])
    config = model_config_from_hf(cfg_dict, "test")
    native = build_native(config, dict(hf.state_dict()), torch.float32, torch.device("cpu"), 128)
    return hf, native, config


@pytest.mark.parametrize("case", sorted(CASES))
def test_logits_match_transformers(case):
    arch, overrides = CASES[case]
    hf, native, config = make_pair(arch, overrides)
    if case == "qwen2-bias-gqa":
        assert config.attention_bias
    ids = torch.randint(0, BASE["vocab_size"], (2, 40))
    with torch.no_grad():
        ref = hf(ids).logits
        cache = native.new_cache(2, 64)
        ours = native(ids, torch.arange(40)[None].expand(2, -1), cache).logits
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_token_by_token_equals_full_forward():
    _, native, _ = make_pair("llama", CASES["llama-gqa-untied"][1])
    ids = torch.randint(0, 97, (1, 24))
    with torch.no_grad():
        full = native(ids, torch.arange(24)[None], native.new_cache(1, 32)).logits
        cache = native.new_cache(1, 32)
        steps = [native(ids[:, i : i + 1], torch.tensor([[i]]), cache).logits for i in range(24)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)
    assert cache.length == 24


def test_rollback_then_redecode_equals_fresh_run():
    _, native, _ = make_pair("llama", CASES["llama-mha-tied"][1])
    ids = torch.randint(0, 97, (1, 20))
    other = torch.randint(0, 97, (1, 6))
    with torch.no_grad():
        fresh = native(ids, torch.arange(20)[None], native.new_cache(1, 32)).logits
        cache = native.new_cache(1, 32)
        native(ids[:, :14], torch.arange(14)[None], cache)
        native(other, torch.arange(14, 20)[None], cache)  # a rejected draft
        cache.rollback(6)
        assert cache.length == 14
        redo = native(ids[:, 14:], torch.arange(14, 20)[None], cache).logits
    torch.testing.assert_close(redo, fresh[:, 14:], atol=1e-5, rtol=1e-5)


def test_compact_keeps_the_chosen_path():
    """A 'tree' of 4 nodes where nodes 0 and 2 form the accepted path."""
    _, native, _ = make_pair("llama", CASES["llama-gqa-untied"][1])
    prefix = torch.randint(0, 97, (1, 10))
    nodes = torch.randint(0, 97, (1, 4))
    # node 0 at depth 0, node 1 child of 0, node 2 child of 0, node 3 child of 1
    mask = torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0], [1, 0, 1, 0], [1, 1, 0, 1]], dtype=torch.bool)[None]
    positions = torch.tensor([[10, 11, 11, 12]])
    with torch.no_grad():
        cache = native.new_cache(1, 32)
        native(prefix, torch.arange(10)[None], cache)
        tree_logits = native(nodes, positions, cache, attn_mask=mask).logits
        cache.compact(10, [0, 2])
        assert cache.length == 12
        nxt = torch.randint(0, 97, (1, 1))
        after = native(nxt, torch.tensor([[12]]), cache).logits
        path = torch.cat([prefix, nodes[:, [0, 2]], nxt], dim=1)
        ref = native(path, torch.arange(13)[None], native.new_cache(1, 32)).logits
    torch.testing.assert_close(tree_logits[:, [0, 2]], ref[:, [10, 11]], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(after[:, 0], ref[:, 12], atol=1e-5, rtol=1e-5)


def test_hidden_states_and_logits_indices():
    _, native, config = make_pair("llama", CASES["llama-gqa-untied"][1])
    ids = torch.randint(0, 97, (1, 8))
    with torch.no_grad():
        out = native(ids, torch.arange(8)[None], native.new_cache(1, 16), hidden_layers=(0, 2, -1), logits_indices=slice(-1, None))
    assert out.logits.shape == (1, 1, 97)
    assert sorted(out.hidden_states) == [-1, 0, 2]
    assert all(h.shape == (1, 8, config.hidden_size) for h in out.hidden_states.values())


def test_state_dict_round_trip():
    hf, native, config = make_pair("qwen2", CASES["qwen2-bias-gqa"][1])
    back = hf_state_dict(native.state_dict(), config)
    for name, tensor in hf.state_dict().items():
        torch.testing.assert_close(back[name], tensor)
    again = native_state_dict(back, config)
    assert set(again) <= set(native.state_dict())


def test_cpu_linears_are_a_numerical_no_op():
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=50, hidden_size=32, intermediate_size=48, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8)
    dense = LlamaModel(config, 32).eval()
    packed = LlamaModel(config, 32).eval()
    packed.load_state_dict(dense.state_dict())
    pack_linears_for_cpu(packed)
    ids = torch.randint(0, 50, (1, 12))
    with torch.no_grad():
        a = dense(ids, torch.arange(12)[None], dense.new_cache()).logits
        b = packed(ids, torch.arange(12)[None], packed.new_cache()).logits
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_blocked_bfloat16_linears_match_dense_bitwise_and_keep_a_dense_state_dict(monkeypatch):
    """Without the C kernel, bfloat16 linears run on oneDNN-blocked weights: the same
    products bit for bit as F.linear at 1 to 9 rows, the dense weight recoverable, tied
    weights left tied."""
    from specdec.models import linear

    if not linear.blocked_supported():
        pytest.skip("oneDNN runs no bfloat16 on this CPU: bfloat16 linears stay CPULinear")
    monkeypatch.setattr(linear, "native_linear_supported", lambda *args: False)
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=64, hidden_size=64, intermediate_size=96, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16)
    dense = LlamaModel(config, 32).to(torch.bfloat16).eval().requires_grad_(False)
    blocked = LlamaModel(config, 32).to(torch.bfloat16).eval().requires_grad_(False)
    blocked.load_state_dict(dense.state_dict())
    blocked.lm_head.weight = blocked.embed.weight  # tie, as the default model does
    dense.lm_head.weight = dense.embed.weight
    pack_linears_for_cpu(blocked)
    w13 = blocked.layers[0].mlp.w13
    assert isinstance(w13, BlockedLinear) and w13._dense is None  # the dense copy is dropped
    assert isinstance(blocked.lm_head, BlockedLinear) and blocked.lm_head.weight is blocked.embed.weight
    assert torch.equal(w13.weight, dense.layers[0].mlp.w13.weight)
    assert set(blocked.state_dict()) == set(dense.state_dict())
    for name, tensor in dense.state_dict().items():
        assert torch.equal(blocked.state_dict()[name], tensor), name
    for rows in (1, 2, 5, 9):
        x = torch.randn(rows, 64).to(torch.bfloat16)
        assert torch.equal(w13(x), torch.nn.functional.linear(x, dense.layers[0].mlp.w13.weight))
    ids = torch.randint(0, 64, (1, 12))
    with torch.no_grad():
        a = dense(ids, torch.arange(12)[None], dense.new_cache()).logits
        b = blocked(ids, torch.arange(12)[None], blocked.new_cache()).logits
    assert torch.equal(a, b)
    # float32 takes the C kernel's packed panels where it is built, else stays dense (CPULinear)
    monkeypatch.undo()
    fp32 = pack_linears_for_cpu(LlamaModel(config, 32).eval())
    expected = PackedLinear if native_linear_supported(torch.float32) else CPULinear
    assert isinstance(fp32.layers[0].mlp.w13, expected)


@pytest.mark.parametrize("vendor", ["GenuineIntel", "AuthenticAMD"])
def test_float32_kernel_follows_the_cpu_vendor_and_invariance(monkeypatch, vendor):
    """Without the C kernel: MKL (F.linear) on Intel, oneDNN on AMD; batch invariance always
    takes oneDNN."""
    from specdec.models import linear

    monkeypatch.setattr(linear, "cpu_vendor", lambda: vendor)
    monkeypatch.setattr(linear, "native_linear_supported", lambda *args: False)
    config = ModelConfig(vocab_size=64, hidden_size=64, intermediate_size=96, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16)
    model = pack_linears_for_cpu(LlamaModel(config, 32).eval().requires_grad_(False))
    w13 = model.layers[0].mlp.w13
    expected = torch.nn.functional.linear if vendor == "GenuineIntel" else linear._onednn_linear
    assert w13._matmul is expected
    x = torch.randn(3, w13.in_features)
    with torch.no_grad():
        torch.testing.assert_close(w13(x), torch.nn.functional.linear(x, w13.weight))
    linear.set_pad_single_row(model, True)
    assert w13._matmul is linear._onednn_linear
    linear.set_pad_single_row(model, False)
    assert w13._matmul is expected


def test_cache_bounds_are_checked():
    _, native, _ = make_pair("llama", CASES["llama-gqa-untied"][1])
    cache = native.new_cache(1, 8)
    with torch.no_grad():
        native(torch.zeros(1, 6, dtype=torch.long), torch.arange(6)[None], cache)
        with pytest.raises(ValueError, match="KV cache full"):
            native(torch.zeros(1, 3, dtype=torch.long), torch.arange(6, 9)[None], cache)
    with pytest.raises(ValueError, match="roll back"):
        cache.rollback(7)
    with pytest.raises(ValueError, match="compact"):
        cache.compact(4, [0, 5])


def test_one_row_probe_tells_kernels_apart_and_says_so_once(monkeypatch, tmp_path, capsys):
    """linear.one_row_kernel_agrees on its reduced rows: a one-row path that sums in another
    order is caught, a row-by-row kernel agrees; the first probe says so on stderr."""
    from specdec.models import linear

    monkeypatch.setenv("SPECDEC_CACHE", str(tmp_path))
    monkeypatch.setattr(linear, "_probed", {})
    monkeypatch.setattr(linear, "_announced", [])

    def row_by_row(x, w, b):
        return torch.stack([F.linear(r[None], w, b)[0] for r in x])

    def reordered_single(x, w, b):
        return F.linear(x.flip(-1), w.flip(-1), b) if x.shape[0] == 1 else row_by_row(x, w, b)

    layers = []
    for fn, out_features in ((row_by_row, 96), (reordered_single, 97)):
        layer = linear.CPULinear(torch.nn.Linear(256, out_features, bias=False))
        layer._matmul = fn
        layers.append(layer)
    assert linear.one_row_kernel_agrees(layers[0])
    assert not linear.one_row_kernel_agrees(layers[1])
    assert capsys.readouterr().err.count("probing the one-row linear kernels") == 1
    assert (tmp_path / "kernels" / "one-row-probes.json").exists()
