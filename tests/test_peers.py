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
