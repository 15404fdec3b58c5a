"""`specdec bench` end to end on the tiny pair, the report from synthetic records, the arithmetic."""

from __future__ import annotations

import json
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from specdec.bench import report, summary, theory
from specdec.bench.summary import geomean, percentile, speedup_over, summarize
from specdec.cli import main

PROMPTS = [
    {"id": "g1", "category": "grounded",
     "prompt": "Repeat exactly: the cat sat on the mat, the cat sat on the mat, the cat sat on the mat."},
    {"id": "c1", "category": "creative", "prompt": "Write a short poem about the sea at night."},
]


@pytest.fixture
def one_thread():
    """--threads 1: on a shared, oversubscribed CPU, 2 spinning OpenMP threads run ~5x slower."""
    before = torch.get_num_threads()
    yield "1"
    torch.set_num_threads(before)


@pytest.fixture
def prompt_file(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in PROMPTS))
    return path


def test_bench_end_to_end(tiny_model_dir, tiny_draft_dir, prompt_file, tmp_path, capsys, monkeypatch,
                          one_thread):
    monkeypatch.setenv("SPECDEC_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "results"
    rc = main(["bench", "--threads", one_thread, "--model", str(tiny_model_dir), "--draft-model", str(tiny_draft_dir),
               "--prompts", str(prompt_file), "--max-tokens", "8", "--repeats", "1",
               "--speculative", "none,ngram,draft", "--draft-n", "2", "--temperature", "0,0.7", "--peer", "hf",
               "--sampling-verify", "coupled,rejection", "--out", str(out), "--json"])
    assert rc == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1, "--json prints only the final JSON line on stdout"
    result = json.loads(lines[-1])

    assert isinstance(result["baseline"]["tokens_per_second"], float)
    assert result["baseline"]["temperature"] == 0.0
    names = {c["name"] for c in result["configs"]}
    assert names == {f"{m}@T{t}" for m in ("none", "ngram:2", "draft:2") for t in ("0", "0.7")} | \
        {f"{m}@T0.7" for m in ("none-rejection", "ngram-rejection:2", "draft-rejection:2")}
    for c in result["configs"]:
        assert isinstance(c["speculative"], str)
        assert isinstance(c["draft_n"], (int, str))
        assert isinstance(c["temperature"], float)
        for key in ("tokens_per_second", "speedup", "mean_acceptance_length", "acceptance_rate"):
            assert isinstance(c[key], float), (c["name"], key)
        if c["temperature"] == 0:
            assert c["greedy_mismatches"] == 0, f"{c['name']} is not lossless"
        else:
            assert c["greedy_mismatches"] is None
        if c["temperature"] > 0 and c["sampling_verify"] == "coupled":  # a seed gives plain's sample
            assert c["seeded_mismatches"] == 0, f"{c['name']} changed the seeded sample"
        else:
            assert c["seeded_mismatches"] is None
        assert set(c["by_category"]) == {"grounded", "creative"}
        for cat in c["by_category"].values():
            assert all(isinstance(cat[k], float) for k in ("speedup", "tokens_per_second", "mean_acceptance_length"))
        assert set(c["latency_seconds"]) == {"p50", "p95", "p99"}
    draft = next(c for c in result["configs"] if c["name"] == "draft:2@T0")
    assert draft["num_draft_tokens"] > 0 and len(draft["acceptance_rate_per_position"]) == 2
    assert isinstance(draft["predicted_speedup"], float) and draft["cost_ratio"] > 0
    assert set(result["peers"]) == {"hf", "hf-prompt-lookup", "hf-assisted"}
    for peer in result["peers"].values():
        assert isinstance(peer["tokens_per_second"], float)
        assert set(peer["by_category"]) == {"grounded", "creative"}
        assert isinstance(peer["greedy_mismatches"], int)  # informational, at temperature 0
        assert set(peer["by_temperature"]) == {"0", "0.7"}
        assert peer["by_temperature"]["0.7"]["greedy_mismatches"] is None

    for name in ("records.jsonl", "summary.csv", "report.md", "summary.json",
                 "k_vs_tokens_per_second.png", "speedup_by_category.png", "acceptance_by_position.png",
                 "predicted_vs_measured.png", "temperature_vs_acceptance.png"):
        assert (out / name).is_file(), name
    records = report.read_records(out / "records.jsonl")
    # 2 prompts x (2 temperatures x (3 configs + 3 peers) + 3 rejection configs at 0.7), no warm-ups
    assert len(records) == 2 * (2 * 6 + 3)
    assert json.loads((out / "summary.json").read_text()) == result

    # `specdec theory --from-results` reads the same directory
    data = theory.read_results(out)
    rows = theory.compare_results(data, c=0.05)["rows"]
    assert {r["speculative"] for r in rows} == {"ngram", "draft", "ngram-rejection", "draft-rejection"}
    assert any(r["cost_ratio"] == draft["cost_ratio"] for r in rows)


def test_bench_drafts_with_the_named_eagle_head(tiny_model_dir, prompt_file, tmp_path, capsys, monkeypatch, one_thread):
    """--draft-model DIR is the head of eagle and hybrid (the tiny target has no shipped head,
    so a bench that ignored it would stop with "needs an EAGLE head")."""
    from specdec.models.eagle import EagleConfig, EagleHead, save_head
    from specdec.models.loader import load_model

    monkeypatch.setenv("SPECDEC_CACHE", str(tmp_path / "cache"))
    target = load_model(tiny_model_dir, "float32", "cpu", 256)
    torch.manual_seed(0)
    save_head(EagleHead(EagleConfig.for_target(target.config, "eagle1", None)), tmp_path / "head", torch.float32)
    out = tmp_path / "results"
    rc = main(["bench", "--threads", one_thread, "--model", str(tiny_model_dir), "--draft-model", str(tmp_path / "head"),
               "--prompts", str(prompt_file), "--max-tokens", "8", "--repeats", "1", "--speculative", "none,eagle,hybrid",
               "--draft-n", "2", "--tree-nodes", "0,4", "--tree-top-k", "2,3", "--graft", "on,off", "--temperature", "0",
               "--out", str(out), "--json"])
    assert rc == 0, capsys.readouterr().err
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    configs = {c["name"]: c for c in result["configs"]}
    # --graft off adds a config only where there is a graft to leave out (hybrid trees), and
    # each --tree-top-k only where there is a tree
    trees = {f"{m}-tree4-top{k}{g}:2@T0" for m, g in (("eagle", ""), ("hybrid", ""), ("hybrid", "-nograft")) for k in (2, 3)}
    assert set(configs) == {"none@T0", "eagle:2@T0", "hybrid:2@T0"} | trees
    assert configs["eagle:2@T0"]["num_draft_tokens"] > 0
    assert all(c["greedy_mismatches"] == 0 for c in configs.values())
    assert f"draft: `{tmp_path / 'head'}`" in (out / "report.md").read_text()
    assert main(["bench", "--speculative", "draft,eagle", "--draft-model", str(tmp_path / "head"), "--out", str(out)]) == 2
    assert "not both" in capsys.readouterr().err


def test_bench_rejects_bad_flags(tmp_path, capsys):
    assert main(["bench", "--graft", "yes", "--out", str(tmp_path)]) == 2
    assert "--graft values must be on or off" in capsys.readouterr().err
    assert main(["bench", "--tree-top-k", "0", "--out", str(tmp_path)]) == 2
    assert "--tree-top-k values must be >= 1" in capsys.readouterr().err
    assert main(["bench", "--speculative", "draft", "--out", str(tmp_path)]) == 2
    assert "--draft-model" in capsys.readouterr().err
    assert main(["bench", "--peer", "sglang", "--out", str(tmp_path)]) == 2
    assert "--peer 'sglang'" in capsys.readouterr().err
    assert main(["bench", "--draft-prune", "on,maybe", "--out", str(tmp_path)]) == 2
    assert "--draft-prune values must be on or off" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------
# report from synthetic records


def _record(contender, prompt, category, repeat, tps, tokens=None, spec=None, temperature=0.0):
    method, _, k = contender.partition(":")
    n = 9
    return {
        "repeat": repeat, "prompt_id": prompt, "category": category,
        "contender": summary.contender_name(method, int(k) if k else 0, temperature),
        "kind": "specdec", "speculative": method, "draft_n": int(k) if k else 0, "temperature": temperature,
        "seed": 0, "num_prompt_tokens": 5, "num_generated_tokens": n, "finish_reason": "length",
        "prefill_seconds": 0.01, "decode_seconds": (n - 1) / tps, "tokens_per_second": tps,
        "token_ids": tokens or list(range(n)), "step_seconds": [(n - 1) / tps / 4] * 4, "step_tokens": [2] * 4,
        "spec": spec,
    }


def _spec(drafts, accepted, k=4, draft_seconds=0.01, verify_seconds=0.1):
    per_pos = [sum(1 for a in accepted if a > i) for i in range(k)]
    return {"num_drafts": drafts, "num_draft_tokens": drafts * k, "num_accepted_tokens": sum(accepted),
            "num_plain_steps": 0, "num_generated_tokens": 8, "accepted_per_position": per_pos,
            "drafted_per_position": [drafts] * k, "draft_seconds": draft_seconds,
            "verify_seconds": verify_seconds, "prefill_seconds": 0.01, "decode_seconds": 0.2,
            "k_histogram": {str(k): drafts}, "by_class": {"ngram:2": [drafts, drafts * k, sum(accepted)]} if drafts else {}}


def synthetic_records():
    """Plain at 10 and 40 tok/s on two prompts; ngram:4 twice as fast on a, 1.5x on b."""
    plain = _spec(0, [], k=0)
    plain.update(num_plain_steps=8, k_histogram={"0": 8})
    recs = []
    for repeat, jitter in enumerate((1.0, 1.2, 0.9)):
        recs.append(_record("none", "a", "grounded", repeat, 10 * jitter, spec=plain))
        recs.append(_record("none", "b", "creative", repeat, 40 * jitter, spec=plain))
        recs.append(_record("ngram:4", "a", "grounded", repeat, 20 * jitter, spec=_spec(2, [4, 2])))
        wrong = list(range(8)) + [99] if repeat == 2 else None  # one mismatching run
        recs.append(_record("ngram:4", "b", "creative", repeat, 60 * jitter, tokens=wrong, spec=_spec(2, [0, 1])))
    return recs


def test_summary_of_synthetic_records():
    s = summarize(synthetic_records(), {"verify_seconds": [0.1, 0.12, 0.13, 0.14, 0.15]})
    base, ngram = s["configs"]
    assert base["name"] == "none@T0" and ngram["name"] == "ngram:4@T0"
    assert base["tokens_per_second"] == pytest.approx(math.sqrt(10 * 40), rel=1e-4)
    assert ngram["speedup"] == pytest.approx(math.sqrt(2.0 * 1.5), rel=1e-4)
    assert ngram["speedup"] == pytest.approx(ngram["tokens_per_second"] / base["tokens_per_second"], rel=1e-3)
    assert ngram["by_category"]["grounded"]["speedup"] == pytest.approx(2.0)
    assert ngram["by_category"]["creative"]["speedup"] == pytest.approx(1.5)
    # pooled over 3 repeats x 4 drafts: accepted 3 * (4 + 2 + 0 + 1) of 3 * 16 draft tokens
    assert ngram["acceptance_rate"] == pytest.approx(21 / 48, abs=1e-4)
    assert ngram["mean_acceptance_length"] == pytest.approx(1 + 21 / 12, abs=1e-4)
    assert ngram["acceptance_rate_per_position"] == pytest.approx([0.75, 0.5, 0.25, 0.25])
    assert ngram["by_class"] == {"ngram:2": {"num_drafts": 12, "share": 1.0, "acceptance_rate": pytest.approx(21 / 48, abs=1e-4),
                                             "mean_acceptance_length": pytest.approx(1 + 21 / 12, abs=1e-4)}}
    assert base["by_class"] == {}
    assert ngram["greedy_mismatches"] == 1 and base["greedy_mismatches"] == 0
    assert ngram["verify_cost_ratio"] == pytest.approx(1.5)  # t(4) / t(0)
    assert ngram["predicted_speedup"] < ngram["predicted_speedup_paper"]
    assert base["latency_seconds"]["p50"] > 0
    assert s["baseline"]["tokens_per_second"] == base["tokens_per_second"]
    # Spec-Bench's table: a row per config, the categories and overall as columns
    table = s["category_table"]
    assert table["columns"] == ["grounded", "creative", "overall"]
    assert table["rows"][1] == {"name": "ngram:4@T0",
                                "speedup": {"grounded": 2.0, "creative": 1.5, "overall": ngram["speedup"]},
                                "mean_acceptance_length": {"grounded": 1 + 18 / 6, "creative": 1 + 3 / 6,
                                                           "overall": ngram["mean_acceptance_length"]}}
    assert table["rows"][0]["mean_acceptance_length"]["overall"] == 1.0


def test_report_files_from_synthetic_records(tmp_path):
    records_path = tmp_path / "records.jsonl"
    records_path.write_text("".join(json.dumps(r) + "\n" for r in synthetic_records()))
    s = report.write_all(tmp_path, report.read_records(records_path))
    csv_lines = (tmp_path / "summary.csv").read_text().splitlines()
    assert csv_lines[0].startswith("level,category,name")
    assert len(csv_lines) == 1 + 2 * 3  # header + (overall + 2 categories) per config
    md = (tmp_path / "report.md").read_text()
    for heading in ("## Overall", "## Speedup by category", "## Acceptance rate by position",
                    "## Predicted vs measured speedup", "## Drafts by class"):
        assert heading in md
    assert "ngram:4@T0" in md and "temperature vs acceptance rate: skipped" in md
    assert "| config | grounded | creative | overall |" in md and "| ngram:4@T0 | 2.00x | 1.50x | 1.73x |" in md
    text = report.text_table(s)
    assert "speedup over plain, by category:" in text and "mean acceptance length (tokens per drafted step)" in text
    with pytest.raises(ValueError, match="may not be named 'overall'"):
        summarize([dict(r, category="overall") for r in synthetic_records()])
    assert (tmp_path / "speedup_by_category.png").stat().st_size > 1000
    assert s["configs"][1]["speedup"] > 1


def test_peers_at_several_ks_are_keyed_per_k():
    """One llamacpp-prompt-lookup contender per K: each its own "peers" entry, greedy-checked like hf."""
    recs = [r for r in synthetic_records() if r["speculative"] == "none"]
    for name, k, tps in (("llamacpp", None, 30.0), ("llamacpp-prompt-lookup", 2, 40.0),
                         ("llamacpp-prompt-lookup", 4, 50.0), ("hf-prompt-lookup", 4, 20.0)):
        for repeat in range(3):
            for prompt, category in (("a", "grounded"), ("b", "creative")):
                r = _record("none", prompt, category, repeat, tps, tokens=[7] * 9 if k == 4 else None)
                r.update(kind="peer", speculative=name, draft_n=k, spec=None,
                         contender=summary.contender_name(name, k, 0.0))
                recs.append(r)
    peers = summarize(recs)["peers"]
    assert set(peers) == {"llamacpp", "llamacpp-prompt-lookup:2", "llamacpp-prompt-lookup:4", "hf-prompt-lookup"}
    assert peers["llamacpp-prompt-lookup:2"]["draft_n"] == 2
    assert peers["llamacpp-prompt-lookup:2"]["by_temperature"]["0"]["name"] == "llamacpp-prompt-lookup:2@T0"
    assert peers["llamacpp-prompt-lookup:2"]["tokens_per_second"] == pytest.approx(40.0)
    assert peers["llamacpp"]["greedy_mismatches"] == 0
    assert peers["llamacpp-prompt-lookup:4"]["greedy_mismatches"] == 6  # every run differs from plain's ids


def test_summary_needs_a_baseline():
    recs = [r for r in synthetic_records() if r["speculative"] != "none"]
    with pytest.raises(ValueError, match="no plain baseline"):
        summarize(recs)


def test_geometric_mean_speedup_arithmetic():
    assert geomean([2.0, 8.0]) == pytest.approx(4.0)
    assert geomean([]) is None
    with pytest.raises(ValueError):
        geomean([1.0, 0.0])
    # 2x on one prompt and 0.5x on the other is no speedup, whatever the absolute speeds
    assert speedup_over({"a": 20.0, "b": 10.0}, {"a": 10.0, "b": 20.0}) == pytest.approx(1.0)
    assert speedup_over({"a": 30.0, "b": 5.0}, {"a": 10.0, "b": 5.0}) == pytest.approx(math.sqrt(3))
    assert speedup_over({"a": 30.0}, {"b": 5.0}) is None  # no shared prompt
    assert percentile([1, 2, 3, 4], 50) == pytest.approx(2.5)
    assert percentile([5.0], 99) == 5.0


# ---------------------------------------------------------------------------------------
# the endpoint peer against a fake OpenAI-compatible server


class _FakeChat(BaseHTTPRequestHandler):
    chunks = ["Hello", ", world", "! The sea", " is calm."]

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        assert body["stream"] is True and body["messages"][-1]["role"] == "user"
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for i, text in enumerate(self.chunks):
            finish = "stop" if i == len(self.chunks) - 1 else None
            event = {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]}
            self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
            self.wfile.flush()
        self.wfile.write(b"data: [DONE]\n\n")

    def log_message(self, *args):
        pass


def test_endpoint_peer_counts_tokens_with_the_tokenizer(default_tokenizer):
    from specdec.bench.peers import EndpointPeer
    from specdec.bench.workloads import Prompt

    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeChat)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        peer = EndpointPeer(f"http://127.0.0.1:{server.server_port}", "m", default_tokenizer)
        m = peer.measure(Prompt("x", "qa", prompt="Hi"), [1, 2], 0.0, 16, 0)
        peer.close()
    finally:
        server.shutdown()
    text = "".join(_FakeChat.chunks)
    assert m.token_ids == default_tokenizer.encode(text, add_special_tokens=False)
    assert m.finish_reason == "stop"
    assert m.prefill_seconds > 0 and len(m.step_seconds) == len(m.step_tokens) == 3
