"""Weight-only quantization: kernels against dequantized references, exact GGUF repacking,
quantized models staying close to the dense one, and quantized self-drafts staying lossless.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from specdec.config import SamplingParams, SpeculativeConfig
from specdec.engine.engine import Engine
from specdec.models.linear import BlockedLinear, CPULinear, PackedLinear
from specdec.models.loader import load_model
from specdec.models.quant import (
    GroupQuant,
    Int4Linear,
    Int8Embedding,
    Int8Linear,
    gguf_block_groups,
    gguf_groups,
    quantize_int4_groups,
    quantize_int8_groups,
)
from specdec.proposers.factory import build_proposers


def rel_err(y: torch.Tensor, ref: torch.Tensor) -> float:
    return ((y.float() - ref).abs().max() / ref.abs().max()).item()


@pytest.mark.parametrize("group_size", [32, 64, 128])
def test_int4_linear_matches_dequantized_reference(group_size):
    torch.manual_seed(0)
    w = torch.randn(96, 256)
    groups = quantize_int4_groups(w, group_size)
    linear = Int4Linear(groups)
    x = torch.randn(5, 256)
    ref = x.bfloat16().float() @ groups.dequantize().T
    assert rel_err(linear(x), ref) < 1e-2  # bf16 activations and output
    assert linear(x).dtype == torch.float32
    assert torch.allclose(linear.dequantize(), groups.dequantize(), rtol=1e-2, atol=1e-3)
    # quantization error: at most half a step per element (plus bf16 rounding of the zero)
    step = groups.scales.repeat_interleave(group_size, 1)
    assert ((groups.dequantize() - w).abs() <= 0.5 * step + 1e-2 * w.abs().amax()).all()


def test_int4_kernel_zero_point_convention():
    """w = (q - 8) * scale + zero: a Q4_1-style group (d * q + m) reproduces exactly."""
    q = torch.arange(16, dtype=torch.uint8).repeat(16, 2)  # [16, 32]
    d = torch.full((16, 1), 0.25)
    m = torch.full((16, 1), -1.0)
    linear = Int4Linear(GroupQuant(q, d, m, 32, 4))
    x = torch.zeros(1, 32)
    x[0, 5] = 1.0
    assert linear(x)[0].tolist() == [5 * 0.25 - 1.0] * 16


def test_int8_linear_and_embedding_match_reference():
    torch.manual_seed(0)
    w = torch.randn(48, 128)
    linear = Int8Linear(w)
    x = torch.randn(3, 128)
    ref = x.bfloat16().float() @ linear.dequantize().T
    assert rel_err(linear(x), ref) < 1e-2
    assert rel_err(linear.dequantize(), w) < 1e-2
    groups = quantize_int8_groups(w, 32)
    embed = Int8Embedding(groups, torch.float32)
    ids = torch.tensor([[3, 0, 47]])
    assert torch.equal(embed(ids)[0], groups.dequantize()[ids[0]])
    assert embed.weight.dtype == torch.float32 and embed.weight.numel() == 0


def test_shape_limits_are_loud():
    with pytest.raises(ValueError, match="in_features % 32"):
        Int8Linear(torch.randn(16, 24))
    with pytest.raises(ValueError, match="out_features % 16"):
        Int4Linear(quantize_int4_groups(torch.randn(8, 64), 32))
    with pytest.raises(ValueError, match="quant must be one of"):
        load_model(None, "float32", "cpu", 64, quant="int3")


@pytest.mark.parametrize("qtype", ["Q4_0", "Q4_1", "Q8_0"])
def test_gguf_block_repack_equals_gguf_dequantization(qtype):
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize, quantize

    rng = np.random.default_rng(0)
    w = (rng.standard_normal((32, 128)) * rng.uniform(0.01, 2.0, (32, 1))).astype(np.float32)
    kind = GGMLQuantizationType[qtype]
    blocks = quantize(w, kind)  # uint8 [32, bytes per row]
    groups = gguf_block_groups(blocks, qtype)
    expected = torch.from_numpy(np.asarray(dequantize(blocks, kind), dtype=np.float32))
    assert torch.equal(groups.dequantize(), expected)  # bitwise
    if qtype != "Q8_0":
        assert groups.codes.max() <= 15 and groups.bits == 4
        x = torch.randn(2, 128)
        ref = x.bfloat16().float() @ expected.T
        assert rel_err(Int4Linear(groups)(x), ref) < 1e-2  # scales rounded to bf16


def test_default_model_blocks_repack_exactly():
    """The default GGUF is Q4_1 (+ Q8_0 embeddings): groups equal gguf's dequantization bit
    for bit, with q/k rows unpermuted and fused as the loader fuses them."""
    from gguf import GGUFReader
    from gguf.quants import dequantize

    from specdec.models.default import default_model_path
    from specdec.models.gguf_file import read_config, unpermute_rope

    path = default_model_path()
    reader = GGUFReader(str(path))
    config = read_config(reader, path)
    groups = gguf_groups(path, config, reader)
    tensors = {t.name: t for t in reader.tensors}

    def deq(name: str) -> torch.Tensor:
        t = tensors[name]
        return torch.from_numpy(np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32))

    wqkv = torch.cat([
        unpermute_rope(deq("blk.0.attn_q.weight"), config.num_heads),
        unpermute_rope(deq("blk.0.attn_k.weight"), config.num_kv_heads),
        deq("blk.0.attn_v.weight"),
    ])
    assert groups["layers.0.attn.wqkv"].bits == 4 and groups["layers.0.attn.wqkv"].group_size == 32
    assert torch.equal(groups["layers.0.attn.wqkv"].dequantize(), wqkv)
    w13 = torch.cat([deq("blk.3.ffn_gate.weight"), deq("blk.3.ffn_up.weight")])
    assert torch.equal(groups["layers.3.mlp.w13"].dequantize(), w13)
    assert groups["embed"].bits == 8
    assert torch.equal(groups["embed"].dequantize(), deq("token_embd.weight"))
    assert groups["lm_head"] is groups["embed"]  # tied


def logits_of(loaded, ids):
    cache = loaded.model.new_cache(1, 128)
    with torch.inference_mode():
        return loaded.model(ids, torch.arange(ids.shape[1])[None], cache).logits[0].float()


@pytest.mark.parametrize("quant,min_cos,min_agree", [("int8", 0.999, 0.9), ("int4", 0.95, 0.5)])
def test_quantized_tiny_model_stays_close(tiny_model_dir, quant, min_cos, min_agree):
    """Random tiny weights are the hard case for 4 bits (near-flat logits over 49k tokens);
    a wrong kernel convention gives cosines near 0."""
    dense = load_model(tiny_model_dir, "float32", "cpu", 128)
    quantized = load_model(tiny_model_dir, "float32", "cpu", 128, quant=quant)
    assert quantized.quant == quant and dense.quant == "none"
    assert isinstance(quantized.model.embed, Int8Embedding)
    assert not any(p.is_floating_point() and p.dim() == 2 and p.numel() > 0 for p in quantized.model.parameters())
    ids = torch.tensor([dense.tokenizer.encode("The cat sat on the mat and looked at the")])
    ref, out = logits_of(dense, ids), logits_of(quantized, ids)
    cos = torch.nn.functional.cosine_similarity(ref, out, dim=-1)
    assert cos.min().item() > min_cos
    assert (ref.argmax(-1) == out.argmax(-1)).float().mean().item() >= min_agree


def test_lm_head_format_is_chosen_separately(tiny_model_dir):
    from specdec.models.quant import quantize_model

    loaded = load_model(tiny_model_dir, "bfloat16", "cpu", 64, quant="int4")
    assert isinstance(loaded.model.layers[0].mlp.w13, Int4Linear)
    assert isinstance(loaded.model.lm_head, Int8Linear)  # the default head
    dense = load_model(tiny_model_dir, "bfloat16", "cpu", 64)
    quantize_model(dense.model, "int4", lm_head="none")
    assert isinstance(dense.model.lm_head, (torch.nn.Linear, CPULinear, BlockedLinear, PackedLinear))
    with pytest.raises(ValueError, match="lm_head quant"):
        quantize_model(dense.model, "int4", lm_head="int2")


@pytest.mark.parametrize("variant,k,prompt", [("int8", 3, "1 2 3 1 2 3 1 2"), ("int4", 5, "Hello there, how are you?")])
def test_quantized_self_draft_is_lossless(tiny_model_dir, variant, k, prompt):
    target = load_model(tiny_model_dir, "float32", "cpu", 128)
    spec = SpeculativeConfig(method="draft", draft_model=f"self:{variant}", num_speculative_tokens=k)
    [proposer] = build_proposers(spec, target, "float32", "cpu", 128)
    assert proposer.draft.quant == variant
    assert proposer.model.embed is target.model.embed  # shared
    params = SamplingParams(temperature=0, max_tokens=20, ignore_eos=True)
    ids = target.tokenizer.encode(prompt)
    plain = Engine(target, None, SpeculativeConfig(), 128).generate(ids, params)
    spec_out = Engine(target, proposer, spec, 128).generate(ids, params)
    assert spec_out.token_ids == plain.token_ids
    assert spec_out.stats.num_drafts > 0
    assert spec_out.stats.num_accepted_tokens > 0  # a near-copy of the target mostly agrees


@pytest.mark.parametrize("qtype", ["Q4_0", "Q4_1", "Q8_0", "F16", "F32"])
def test_lean_gguf_reader_dequantizes_as_gguf_quants(tmp_path, qtype):
    """models/gguf_header.py's torch dequantization against gguf.quants, bit for bit, on a
    GGUF file written by the gguf package; a truncated copy is refused with a clear error."""
    from gguf import GGMLQuantizationType, GGUFWriter
    from gguf.quants import dequantize, quantize

    from specdec.models.gguf_header import GGUFHeader

    rng = np.random.default_rng(1)
    w = (rng.standard_normal((8, 64)) * rng.uniform(0.01, 2.0, (8, 1))).astype(np.float32)
    kind = GGMLQuantizationType[qtype]
    data = quantize(w, kind) if qtype not in ("F16", "F32") else w.astype(np.float16 if qtype == "F16" else np.float32)
    path = tmp_path / "one.gguf"
    writer = GGUFWriter(str(path), "llama")
    writer.add_string("tokenizer.ggml.model", "gpt2")
    writer.add_array("tokenizer.ggml.tokens", ["a", "b", "ü"])
    writer.add_tensor("t.weight", data, raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    header = GGUFHeader(path)
    assert header.metadata["tokenizer.ggml.tokens"] == ["a", "b", "ü"]
    (info,) = header.tensors
    assert info.shape == (8, 64) and info.type_name == qtype
    expected = torch.from_numpy(np.asarray(dequantize(data, kind), dtype=np.float32).reshape(8, 64).copy())
    assert torch.equal(header.dequantize(info).view(torch.int32), expected.view(torch.int32))
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(path.read_bytes()[:-16])
    with pytest.raises(ValueError, match="truncated"):
        GGUFHeader(truncated)
