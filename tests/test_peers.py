"""A bench peer that fails on one prompt is recorded as failed there, with its error, and the
bench goes on (bench/peers.py's Peer). No llama-cpp-python or vLLM needed: fakes stand in."""

from __future__ import annotations

import io
import json
from types import SimpleNamespace

from specdec.bench.llamacpp import LlamaCppPeer
from specdec.bench.peers import Measurement, Peer
from specdec.bench.runner import run_rounds
from specdec.bench.workloads import Prompt

BROADCAST = "could not broadcast input array from shape (10665984,) into shape (0,)"


class FakeLlama:
    """llama-cpp-python's Llama as LlamaCppPeer uses it; generate fails on long prompts."""

    def n_ctx(self) -> int:
        return 512

    def reset(self) -> None:
        pass

    def set_seed(self, seed: int) -> None:
        pass

    def generate(self, prompt_ids, **kw):
        if len(prompt_ids) > 8:
            raise ValueError(BROADCAST)
        yield from [5, 6, 7]


def test_llamacpp_peer_failure_on_one_prompt_is_a_failed_run(capsys):
    session = SimpleNamespace(plain=FakeLlama(), lookup=None, num_evals=0)
    peer = LlamaCppPeer("llamacpp", session, eos_ids=[2])
    ok = peer.measure(None, [1, 2, 3], 0.0, 3, 0)
    assert ok.token_ids == [5, 6, 7] and ok.error is None
    bad = peer.measure(None, list(range(20)), 0.0, 3, 0)
    assert bad.token_ids == [] and bad.error == f"ValueError: {BROADCAST}"
    assert bad.finish_reason == f"error: ValueError: {BROADCAST}" and bad.tokens_per_second == 0.0
    assert "llamacpp failed on this prompt" in capsys.readouterr().err
    too_long = peer.measure(None, [1, 2, 3], 0.0, 600, 0)
    assert "n_ctx" in too_long.error


class Contender(Peer):
    def __init__(self, name: str, fail_on: str | None = None) -> None:
        self.name, self.fail_on, self.draft_n = name, fail_on, None

    def measure_once(self, prompt, prompt_ids, temperature, max_tokens, seed) -> Measurement:
        if prompt.id == self.fail_on:
            raise RuntimeError("peer died")
        return Measurement([4, 5, 6], 0.01, 0.02, [0.01, 0.01], [1, 1])


def test_bench_rounds_go_on_past_a_failed_peer_run():
    prompts = [Prompt(f"p{i}", "qa", prompt="hi") for i in range(3)]
    args = SimpleNamespace(temperature=[0.0], repeats=2, max_tokens=3, seed=0)
    out = io.StringIO()
    records = run_rounds([Contender("good"), Contender("flaky", fail_on="p1")], prompts, [[1, 2]] * 3, args, out)
    assert len(records) == 2 * 3 * 2 and len(out.getvalue().splitlines()) == len(records)
    failed = [r for r in records if r["finish_reason"].startswith("error")]
    assert {(r["contender"], r["prompt_id"]) for r in failed} == {("flaky@T0", "p1")} and len(failed) == 2
    assert all(r["num_generated_tokens"] == 0 and "peer died" in r["finish_reason"] for r in failed)
    assert json.loads(out.getvalue().splitlines()[-1])["prompt_id"] in {"p0", "p1", "p2"}


FAKE_WORKER = '''
import json, os, sys
protocol = os.fdopen(os.dup(1), "w", buffering=1)
os.dup2(2, 1)
config = json.loads(sys.argv[1])
print("a vLLM-like log line on stdout")  # must not reach the protocol
spec = config.get("speculative_config")
protocol.write(json.dumps({"ready": True, "vllm": "fake", "load_seconds": 0.0, "spec": spec}) + "\\n")
for line in sys.stdin:
    if not line.strip():
        break
    r = json.loads(line)
    if len(r["prompt_ids"]) > 5:
        protocol.write(json.dumps({"error": "ValueError: prompt too long"}) + "\\n")
        continue
    n = r["max_tokens"]
    protocol.write(json.dumps({"token_ids": list(range(10, 10 + n)), "times": [0.1 * (i + 1) for i in range(n)],
                               "counts": [1] * n, "finish_reason": "length",
                               "spec": {"num_drafts": 2 if spec else 0, "num_draft_tokens": 0, "num_accepted_tokens": 1 if spec else 0}}) + "\\n")
'''


def test_vllm_peers_speak_json_with_a_worker_in_another_venv(tiny_model_dir, tmp_path, monkeypatch):
    import sys

    import pytest

    from specdec.bench import vllm_peer
    from specdec.models.loader import load_model

    target = load_model(tiny_model_dir, "float32", "cpu", 256)
    with pytest.raises(ValueError, match="setup_peers.sh"):
        vllm_peer.vllm_peers(["vllm"], target, ["none"], [4], 4, 128, python=str(tmp_path / "nope"))
    (tmp_path / "worker.py").write_text(FAKE_WORKER)
    monkeypatch.setattr(vllm_peer, "WORKER", tmp_path / "worker.py")
    from specdec.models.eagle import EagleConfig, EagleHead, save_head
    from specdec.train.export import check_export

    save_head(EagleHead(EagleConfig.for_target(target.config, "eagle1", 3000)), tmp_path / "head")
    peers = vllm_peer.vllm_peers(["hf", "vllm"], target, ["none", "ngram", "eagle"], ["auto", 3], 4, 128,
                                 head_dir=str(tmp_path / "head"), python=sys.executable, work_dir=tmp_path)
    try:
        assert [(p.name, p.draft_n) for p in peers] == [("vllm", None), ("vllm-ngram", 3), ("vllm-eagle", 3)]
        eagle = peers[2].worker.info["spec"]
        assert eagle["method"] == "eagle" and check_export(eagle["model"], "vllm") == []
        assert peers[1].worker.info["spec"] == {"method": "ngram", "num_speculative_tokens": 3,
                                                "prompt_lookup_min": 1, "prompt_lookup_max": 4}
        prompt = Prompt("p0", "qa", prompt="hi")
        m = peers[1].measure(prompt, [1, 2, 3], 0.0, 4, 0)
        assert m.token_ids == [10, 11, 12, 13] and m.prefill_seconds == pytest.approx(0.1)
        assert m.decode_seconds == pytest.approx(0.3) and m.step_tokens == [1, 1, 1]
        assert peers[1].spec_counters["p0"]["num_drafts"] == 2
        bad = peers[0].measure(prompt, list(range(9)), 0.0, 4, 0)
        assert bad.token_ids == [] and "prompt too long" in bad.error
        assert peers[0].measure(prompt, [1], 0.0, 2, 0).token_ids == [10, 11]  # the worker goes on
    finally:
        for p in peers:
            p.close()
    assert all(p.worker.proc.poll() is not None for p in peers)


def test_own_plain_mismatches_compare_vllm_with_vllm():
    from specdec.bench.vllm_peer import own_plain_mismatches

    def rec(spec, prompt, ids, t=0.0):
        return {"speculative": spec, "contender": f"{spec}@T0", "prompt_id": prompt, "repeat": 0, "temperature": t,
                "token_ids": ids}

    records = [rec("vllm", "a", [1, 2]), rec("vllm", "b", [3]), rec("vllm-eagle", "a", [1, 2]),
               rec("vllm-eagle", "b", [4]), rec("vllm-ngram", "a", [1, 9]), rec("none", "a", [7]),
               rec("vllm-ngram", "b", [5], t=0.7)]
    assert own_plain_mismatches(records) == {"vllm-eagle@T0": 1, "vllm-ngram@T0": 1}
