"""`specdec doctor` on the tiny pair (passes) and on an incompatible tokenizer (fails clearly)."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch

from specdec.cli import main


@pytest.fixture(autouse=True)
def one_thread():
    """--threads 1: on a shared, oversubscribed CPU, 2 spinning OpenMP threads run ~5x slower."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _doctor(capsys, *argv):
    rc = main(["doctor", "--threads", "1", "--max-tokens", "8", "--json", *argv])
    out = capsys.readouterr().out.strip().splitlines()
    return rc, json.loads(out[-1])


def test_doctor_passes_on_the_tiny_pair(tiny_model_dir, tiny_draft_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SPECDEC_CACHE", str(tmp_path / "cache"))
    rc, result = _doctor(capsys, "--model", str(tiny_model_dir), "--draft-model", str(tiny_draft_dir))
    assert rc == 0 and result["ok"]
    status = {c["name"]: c["status"] for c in result["checks"]}
    assert status["tokenizer"] == "ok"
    assert status["greedy equality"] == "ok"
    assert status["memory"] in ("ok", "warn")
    assert status["speed probe"] in ("ok", "warn")  # speed is advice, never a failure
    assert result["probe"]["acceptance_rate"] is not None
    assert result["advice"], "doctor always says something actionable"


@pytest.fixture
def swapped_tokenizer_dir(tiny_model_dir, tmp_path):
    """The tiny target with two vocabulary ids swapped: same vocab size, different token ids."""
    path = tmp_path / "swapped"
    shutil.copytree(tiny_model_dir, path)
    tok = json.loads((path / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    vocab["Hello"], vocab["Ġworld"] = vocab["Ġworld"], vocab["Hello"]
    (path / "tokenizer.json").write_text(json.dumps(tok))
    return path


def test_doctor_fails_on_incompatible_tokenizers(tiny_model_dir, swapped_tokenizer_dir, capsys):
    rc = main(["doctor", "--threads", "1", "--max-tokens", "8", "--model", str(tiny_model_dir),
               "--draft-model", str(swapped_tokenizer_dir)])
    captured = capsys.readouterr()
    assert rc == 1
    assert "[FAIL] tokenizer: draft and target tokenizers disagree on 'Hello, world!'" in captured.out
    assert "greedy equality" not in captured.out  # stops before running anything
    assert "FAILED" in captured.err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_doctor_fails_on_missing_cuda(capsys):
    rc, result = _doctor(capsys, "--device", "cuda")
    assert rc == 1
    assert result["checks"][0]["status"] == "FAIL" and "CUDA is not available" in result["checks"][0]["message"]


def test_doctor_checks_an_eagle_head(tiny_model_dir, tmp_path, capsys, monkeypatch):
    """--speculative eagle/hybrid: the head is loaded and checked against the target, then the
    same equality and speed probe run; a head made for another target fails clearly."""
    from specdec.models.eagle import EagleConfig, EagleHead, save_head
    from specdec.models.loader import load_model

    monkeypatch.setenv("SPECDEC_CACHE", str(tmp_path / "cache"))
    config = load_model(str(tiny_model_dir)).config
    save_head(EagleHead(EagleConfig.for_target(config, "eagle1", None)), tmp_path / "head", torch.float32)
    for method in ("eagle", "hybrid"):
        rc, result = _doctor(capsys, "--model", str(tiny_model_dir), "--speculative", method,
                             "--draft-model", str(tmp_path / "head"), "--draft-n", "3")
        status = {c["name"]: c["status"] for c in result["checks"]}
        assert rc == 0 and result["ok"], result
        assert status["head"] == "ok" and status["greedy equality"] == "ok"
        assert result["probe"]["mean_draft_n"] > 0  # it drafted (an untrained head: K fixed, auto would not)
    wide = dataclasses.replace(config, hidden_size=2 * config.hidden_size)
    save_head(EagleHead(EagleConfig.for_target(wide, "eagle1", None)), tmp_path / "other", torch.float32)
    rc, result = _doctor(capsys, "--model", str(tiny_model_dir), "--speculative", "eagle",
                         "--draft-model", str(tmp_path / "other"))
    head = next(c for c in result["checks"] if c["name"] == "head")
    assert rc == 1 and head["status"] == "FAIL" and "features of width" in head["message"]
