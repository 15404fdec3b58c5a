"""The llama.cpp bench peer: its clear errors (no llama-cpp-python needed), and the real thing
on the default model's GGUF file (skipped without llama-cpp-python, an optional extra)."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest
import torch

from specdec.bench.llamacpp import INSTALL_HINT, llamacpp_peers, lookup_draft_ns
from specdec.cli import main

FOX = "Repeat this sentence three times: the quick brown fox jumps over the lazy dog."


def _fake_target(path):
    return SimpleNamespace(path=path, config=SimpleNamespace(eos_token_ids=[2]), tokenizer=None)


def test_llamacpp_peer_needs_a_gguf_target(tmp_path):
    with pytest.raises(ValueError, match="needs a GGUF target"):  # a model directory
        llamacpp_peers(["llamacpp"], _fake_target(tmp_path), ["none"], [4], 4, 64)
    fake = tmp_path / "model.gguf"  # the name is not enough: the magic bytes decide
    fake.write_bytes(b"not a gguf file")
    with pytest.raises(ValueError, match="needs a GGUF target"):
        llamacpp_peers(["llamacpp"], _fake_target(fake), ["none"], [4], 4, 64)
    assert llamacpp_peers(["hf"], _fake_target(fake), ["none"], [4], 4, 64) == []


def test_peer_llamacpp_without_the_package_says_how_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # `import llama_cpp` now raises ImportError
    assert main(["bench", "--peer", "llamacpp", "--out", str(tmp_path)]) == 2
    assert INSTALL_HINT in capsys.readouterr().err
    # --quant is no reason to refuse llamacpp (it runs the GGUF as is): the missing package is
    assert main(["bench", "--peer", "llamacpp", "--quant", "int8", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert INSTALL_HINT in err and "--quant" not in err
    assert main(["bench", "--peer", "hf,llamacpp", "--quant", "int8", "--out", str(tmp_path)]) == 2
    assert "--peer hf runs transformers on float weights" in capsys.readouterr().err


def test_lookup_draft_ns_one_per_distinct_k():
    assert lookup_draft_ns(["auto", 2, 4, 8]) == ["auto", 2, 4, 8]
    assert lookup_draft_ns([4, "auto", 10, 4]) == [4, "auto"]  # auto is K = 10


# ---------------------------------------------------------------------------------------
# the real default model


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the peer takes torch's thread count; 1 is quick on a shared CPU
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
def test_llamacpp_peers_on_the_default_model(default_model, one_thread):
    pytest.importorskip("llama_cpp")
    from specdec.api import encode_prompt

    ids = encode_prompt(default_model.tokenizer, FOX)
    peers = llamacpp_peers(["llamacpp"], default_model, ["none", "ngram"], [4], 4, len(ids) + 32)
    assert [(p.name, p.draft_n) for p in peers] == [("llamacpp", None), ("llamacpp-prompt-lookup", 4)]
    plain, lookup = peers
    session = plain.session
    try:
        runs = []
        for peer in (plain, plain, lookup):
            before = session.num_eval_tokens
            m = peer.measure(None, ids, 0.0, 16, 0)
            assert session.num_eval_tokens - before >= len(ids), "the prompt was not prefilled afresh"
            runs.append(m)
        first, again, looked_up = runs
        assert 0 < first.num_generated_tokens <= 16 and all(isinstance(t, int) for t in first.token_ids)
        assert first.prefill_seconds > 0 and first.decode_seconds > 0 and first.tokens_per_second > 0
        assert "fox" in default_model.tokenizer.decode(first.token_ids)
        if first.finish_reason == "stop":
            assert first.token_ids[-1] in default_model.config.eos_token_ids
        assert again.token_ids == first.token_ids  # greedy and no state left over from the first run
        assert set(first.step_tokens) == {1} and sum(first.step_tokens) == first.num_generated_tokens - 1
        # prompt lookup: the same greedy text, several tokens per verified draft
        assert looked_up.token_ids == first.token_ids
        assert max(looked_up.step_tokens) > 1 and looked_up.tokens_per_second > 0
        assert sum(looked_up.step_tokens) == looked_up.num_generated_tokens - 1

        plain.ignore_eos = True  # exactly max_tokens, past the EOS
        m = plain.measure(None, ids, 0.0, 16, 0)
        assert m.num_generated_tokens == 16 and m.finish_reason == "length"
        plain.ignore_eos = False
        sampled = [plain.measure(None, ids, 1.0, 16, seed).token_ids for seed in (7, 7)]
        assert sampled[0] == sampled[1], "temperature sampling ignores the seed"
        too_long = plain.measure(None, ids, 0.0, 10_000, 0)  # a failed run, recorded; the bench goes on
        assert too_long.token_ids == [] and "n_ctx" in too_long.error and too_long.finish_reason.startswith("error")
    finally:
        plain.close()
