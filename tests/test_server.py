"""The OpenAI-compatible server as a real process on 127.0.0.1.

Servers are spawned with `python -m specdec.cli serve` on a free port, awaited on /health
and stopped with SIGINT (which must exit 0). Most tests share one tiny-model server; a
second one with one row and a one-slot queue covers 429 and shutdown mid-stream, and a
slow test runs the real default model.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from specdec.api import LLM
from specdec.config import SamplingParams

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FATES = {"accepted", "recovered", "bonus", "plain"}
REPEAT = "the cat sat on the mat. the cat sat on the mat. the cat sat on the mat. the cat"


@dataclass
class Server:
    proc: subprocess.Popen
    url: str
    log: Path
    # one client for the test's own calls: httpx.get() builds a TLS context each time
    http: httpx.Client = field(default_factory=httpx.Client)

    def metrics(self) -> dict[str, float]:
        text = self.http.get(f"{self.url}/metrics", timeout=10).text
        values = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
                values[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
        return values

    def wait_idle(self, timeout: float = 20.0) -> dict[str, float]:
        deadline = time.monotonic() + timeout
        while True:
            m = self.metrics()
            if m["specdec_num_requests_running"] == 0 and m["specdec_num_requests_waiting"] == 0:
                return m
            assert time.monotonic() < deadline, f"server not idle: {m}"
            time.sleep(0.1)

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def stop(self, timeout: float = 20.0) -> int:
        self.http.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"server ignored SIGINT for {timeout}s; log:\n{self.log.read_text()[-3000:]}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(tmp_path: Path, model: str | None, *args: str) -> Server:
    port = free_port()
    log = tmp_path / f"server-{port}.log"
    cmd = [sys.executable, "-m", "specdec.cli", "serve", "--port", str(port), "--threads", "1", *args]
    if model:
        cmd += ["--model", model]
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    return Server(proc, f"http://127.0.0.1:{port}", log)


def wait_ready(server: Server, timeout: float = 120.0) -> Server:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise AssertionError(f"server exited {server.proc.returncode}:\n{server.log.read_text()[-3000:]}")
        try:
            if server.http.get(f"{server.url}/health", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    server.proc.kill()
    raise AssertionError(f"server not ready in {timeout}s:\n{server.log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def servers(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("servers")
    main = spawn(tmp, str(tiny_model_dir), "--speculative-algorithm", "ngram", "--speculative-num-draft-tokens", "3",
                 "--max-model-len", "256", "--max-body-bytes", "65536", "--served-model-name", "tiny")
    tight = spawn(tmp, str(tiny_model_dir), "--max-batch-size", "1", "--max-queue", "1", "--max-model-len", "2048")
    try:
        yield wait_ready(main), wait_ready(tight)
    finally:
        codes = [s.stop() for s in (main, tight)]  # stop both before asserting
    assert codes == [0, 0], main.log.read_text()[-3000:]


@pytest.fixture(scope="module")
def server(servers) -> Server:
    return servers[0]


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def tiny_llm(tiny_model_dir) -> LLM:
    return LLM(model=str(tiny_model_dir), max_model_len=256)


def sse_events(response: httpx.Response) -> list[str]:
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [line[len("data: "):] for line in response.iter_lines() if line]
    assert events[-1] == "[DONE]", events[-3:]
    return events[:-1]


def test_health_and_models(server, client):
    assert httpx.get(f"{server.url}/health").json()["status"] == "ok"
    models = client.models.list().data
    assert [m.id for m in models] == ["tiny"]
    page = httpx.get(f"{server.url}/")
    assert page.status_code == 200 and "specdec playground" in page.text
    for asset in ("app.js", "style.css"):
        assert httpx.get(f"{server.url}/static/{asset}").status_code == 200


def test_openai_client_completions_stream_and_not(client, tiny_llm):
    full = client.completions.create(model="tiny", prompt=REPEAT, max_tokens=24, temperature=0, extra_body={"ignore_eos": True})
    chunks = list(client.completions.create(model="tiny", prompt=REPEAT, max_tokens=24, temperature=0, stream=True, extra_body={"ignore_eos": True}))
    assert "".join(c.choices[0].text for c in chunks) == full.choices[0].text
    assert full.choices[0].finish_reason == chunks[-1].choices[0].finish_reason == "length"
    assert full.usage.completion_tokens == 24 and full.usage.total_tokens == full.usage.prompt_tokens + 24
    spec = full.usage.model_extra["speculative"]
    assert spec["spec_accepted_tokens"] > 0 and spec["spec_verify_ct"] < 24  # the n-gram drafts were used
    llm = tiny_llm.generate(REPEAT, SamplingParams(temperature=0, max_tokens=24, ignore_eos=True))[0]
    assert full.choices[0].text == llm.outputs[0].text  # lossless: plain in-process decoding agrees


def test_openai_client_chat_stream_with_usage(client):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi"}]
    full = client.chat.completions.create(model="tiny", messages=messages, max_tokens=16, temperature=0)
    stream = client.chat.completions.create(model="tiny", messages=messages, max_tokens=16, temperature=0, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == full.choices[0].message.content
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == full.usage.completion_tokens
    assert "spec_accept_length" in chunks[-1].usage.model_extra["speculative"]


def test_greedy_chat_equals_cli_generate(server, client, tiny_model_dir):
    prompt = "Tell me about cats and mats and cats."
    cli = subprocess.run(
        [sys.executable, "-m", "specdec.cli", "generate", "--model", str(tiny_model_dir), "-p", prompt, "-n", "20", "--temp", "0",
         "--json", "--threads", "1", "--max-model-len", "256"],
        capture_output=True, text=True, timeout=120, check=True,
    )
    expected = json.loads(cli.stdout.strip().splitlines()[-1])
    got = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": prompt}], max_tokens=20, temperature=0)
    assert got.choices[0].message.content == expected["text"]
    assert got.usage.completion_tokens == expected["num_generated_tokens"]


def test_concurrent_greedy_rows_equal_solo(server, tiny_llm):
    prompts = [REPEAT, "1 2 3 1 2 3 1 2", "Hello there", "a list: x, y, z, x, y, z, x, y"]
    params = dict(max_tokens=32, temperature=0, ignore_eos=True)

    async def one(c: httpx.AsyncClient, prompt: str) -> str:
        r = await c.post(f"{server.url}/v1/completions", json=dict(prompt=prompt, **params), timeout=60)
        r.raise_for_status()
        return r.json()["choices"][0]["text"]

    async def run():
        async with httpx.AsyncClient() as c:
            return await asyncio.gather(*(one(c, p) for p in prompts))

    texts = asyncio.run(run())
    for prompt, text in zip(prompts, texts):
        assert text == tiny_llm.generate(prompt, SamplingParams(**params))[0].outputs[0].text, prompt


def test_raw_sse_chunks_and_spec_fates(server):
    body = dict(prompt=REPEAT, max_tokens=20, temperature=0, stream=True, ignore_eos=True, spec_fates=True, stream_options={"include_usage": True})
    with httpx.stream("POST", f"{server.url}/v1/completions", json=body, timeout=60) as r:
        assert r.status_code == 200
        events = [json.loads(e) for e in sse_events(r)]
    *steps, usage = events
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 20
    assert all(e["object"] == "text_completion" and e["id"] == usage["id"] for e in events)
    assert steps[-1]["choices"][0]["finish_reason"] == "length"
    fates = [f for e in steps for f in e["spec"]["fates"]]
    assert len(fates) == 20 and set(fates) <= FATES and "accepted" in fates
    for e in steps:
        spec = e["spec"]
        assert spec["num_accepted"] == spec["fates"].count("accepted")
        assert len(spec["tokens"]) == len(spec["fates"]) and len(spec["draft_tokens"]) == len(spec["draft_ids"])
    assert "".join(t for e in steps for t in e["spec"]["tokens"]) == "".join(e["choices"][0]["text"] for e in steps)
    with httpx.stream("POST", f"{server.url}/v1/completions", json=dict(body, spec_fates=False), timeout=60) as r:
        assert all("spec" not in json.loads(e) for e in sse_events(r))


def test_speculative_false_override_is_plain_and_equal(server):
    body = dict(prompt=REPEAT, max_tokens=24, temperature=0, ignore_eos=True)
    spec = httpx.post(f"{server.url}/v1/completions", json=body, timeout=60).json()
    plain = httpx.post(f"{server.url}/v1/completions", json=dict(body, speculative=False), timeout=60).json()
    assert plain["choices"][0]["text"] == spec["choices"][0]["text"]
    assert plain["usage"]["speculative"]["spec_draft_tokens"] == 0 < spec["usage"]["speculative"]["spec_draft_tokens"]


BAD_INPUTS = [
    ("completions", b"{not json", 400, None),
    ("completions", b"[1, 2]", 400, None),
    ("completions", {"prompt": 5}, 400, "prompt"),
    ("completions", {"prompt": "x", "max_tokens": "7"}, 400, "max_tokens"),
    ("completions", {"prompt": "x", "temperature": "hot"}, 400, "temperature"),
    ("completions", {"prompt": "x", "temperature": 2.5}, 400, "temperature"),
    ("completions", {"prompt": "x", "temperature": -0.1}, 400, "temperature"),
    ("completions", {"prompt": "x", "top_p": 0}, 400, "top_p"),
    ("completions", {"prompt": "x", "top_p": 1.5}, 400, "top_p"),
    ("completions", {"prompt": "x", "top_k": -2}, 400, "top_k"),
    ("completions", {"prompt": "x", "max_tokens": 0}, 400, "max_tokens"),
    ("completions", {"prompt": "x", "max_tokens": -3}, 400, "max_tokens"),
    ("completions", {"prompt": "x", "max_tokens": 100000}, 400, "max_tokens"),
    ("completions", {"prompt": "hello " * 300}, 400, "prompt"),
    ("completions", {"prompt": ""}, 400, "prompt"),
    ("completions", {"prompt": []}, 400, "prompt"),
    ("completions", {"prompt": [1, 10**9]}, 400, "prompt"),
    ("completions", {"prompt": "x", "model": "gpt-4"}, 404, "model"),
    ("completions", {"prompt": "x", "n": 0}, 400, "n"),
    ("completions", {"prompt": "x", "stop": [""]}, 400, "stop"),
    ("completions", {"prompt": "x", "stream": "yes"}, 400, "stream"),
    ("completions", {}, 400, "prompt"),
    ("chat/completions", {"messages": []}, 400, "messages"),
    ("chat/completions", {"messages": [{"role": "wizard", "content": "x"}]}, 400, "messages"),
    ("chat/completions", {"messages": "hi"}, 400, "messages"),
    ("chat/completions", {"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, 400, "max_tokens"),
    ("chat/completions", {"messages": [{"role": "user", "content": "x"}], "model": "nope"}, 404, "model"),
]


def test_bad_inputs_get_openai_errors_and_leak_nothing(server):
    before = server.metrics()
    for path, body, status, param in BAD_INPUTS:
        kwargs = {"content": body, "headers": {"content-type": "application/json"}} if isinstance(body, bytes) else {"json": body}
        r = httpx.post(f"{server.url}/v1/{path}", timeout=30, **kwargs)
        assert r.status_code == status, (body, r.text)
        error = r.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"], (body, error)
        assert error["param"] == param, (body, error)
    r = httpx.post(f"{server.url}/v1/completions", json={"prompt": "x" * 70000}, timeout=30)
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
    after = server.wait_idle()
    assert after["specdec_requests_total{status=400}"] - before.get("specdec_requests_total{status=400}", 0) == 25
    assert httpx.post(f"{server.url}/v1/completions", json={"prompt": "still alive", "max_tokens": 3}, timeout=30).status_code == 200


def test_client_disconnect_cancels_and_frees_the_slot(server):
    before = server.metrics().get("specdec_requests_total{status=499}", 0)
    body = dict(prompt="go on forever", max_tokens=200, ignore_eos=True, stream=True)
    with httpx.stream("POST", f"{server.url}/v1/completions", json=body, timeout=60) as r:
        received = 0
        for line in r.iter_lines():
            received += line.startswith("data: ")
            if received == 3:
                break
    m = server.wait_idle(timeout=10)
    assert m["specdec_requests_total{status=499}"] == before + 1
    r = httpx.post(f"{server.url}/v1/completions", json={"prompt": "next", "max_tokens": 4}, timeout=30)
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 4


def test_32_concurrent_streams_complete_and_memory_settles(server):
    async def stream(c: httpx.AsyncClient, i: int) -> int:
        body = dict(prompt=f"request {i}: {REPEAT if i % 2 else 'count 1 2 3'}", max_tokens=24, ignore_eos=True, stream=True,
                    temperature=0 if i % 2 else 0.7, seed=i)  # greedy rows loop, so the n-gram drafts
        tokens = 0
        async with c.stream("POST", f"{server.url}/v1/completions", json=body, timeout=90) as r:
            assert r.status_code == 200
            async for line in r.aiter_lines():
                if line.startswith("data: {"):
                    event = json.loads(line[6:])
                    assert "error" not in event
                    tokens += bool(event["choices"][0]["text"])
        return tokens

    async def load(n: int) -> tuple[list[int], float]:
        peak = 0.0
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=64)) as c:
            tasks = [asyncio.create_task(stream(c, i)) for i in range(n)]
            while not all(t.done() for t in tasks):
                m = (await c.get(f"{server.url}/metrics")).text
                peak = max(peak, next(float(line.split()[1]) for line in m.splitlines() if line.startswith("specdec_num_requests_running ")))
                await asyncio.sleep(0.05)
            return await asyncio.gather(*tasks), peak

    asyncio.run(load(8))  # warm-up: every batch path and allocation has run once
    server.wait_idle()
    baseline = server.rss_kib()
    before = server.metrics()
    results, peak = asyncio.run(asyncio.wait_for(load(32), 120))
    assert len(results) == 32 and all(n > 0 for n in results)
    assert peak >= 2  # requests really shared the running batch
    after = server.wait_idle()
    assert after["specdec_requests_total{status=200}"] - before["specdec_requests_total{status=200}"] == 32
    assert after["specdec_generation_tokens_total"] - before["specdec_generation_tokens_total"] == 32 * 24
    assert after["specdec_time_to_first_token_seconds_count"] - before["specdec_time_to_first_token_seconds_count"] == 32
    assert after["specdec_inter_token_latency_seconds_count"] - before["specdec_inter_token_latency_seconds_count"] == 32 * 23
    drafts = after["specdec_spec_decode_num_draft_tokens_total"] - before["specdec_spec_decode_num_draft_tokens_total"]
    accepted = after["specdec_spec_decode_num_accepted_tokens_total"] - before["specdec_spec_decode_num_accepted_tokens_total"]
    assert after["specdec_spec_decode_num_drafts_total"] > before["specdec_spec_decode_num_drafts_total"] and 0 < accepted <= drafts
    per_pos = [after.get(f"specdec_spec_decode_num_accepted_tokens_per_pos_total{{position={i}}}", 0) for i in range(3)]
    assert sum(per_pos) == after["specdec_spec_decode_num_accepted_tokens_total"] and per_pos[0] >= per_pos[1] >= per_pos[2]
    # the n-gram rows name their draft classes (match lengths); the classes add up to the totals
    for name in ("num_drafts", "num_draft_tokens", "num_accepted_tokens"):
        by_class = {k: v for k, v in after.items() if k.startswith(f"specdec_spec_decode_{name}_by_class_total{{")}
        assert by_class and all("draft_class=ngram:" in k for k in by_class)
        assert sum(by_class.values()) == after[f"specdec_spec_decode_{name}_total"]
    assert server.rss_kib() < baseline + 64 * 1024, (baseline, server.rss_kib())


def test_full_queue_gets_429_and_sigint_ends_streams(servers):
    tight = servers[1]  # one row, one queue slot
    body = dict(prompt="long", max_tokens=1900, ignore_eos=True, stream=True)
    lines: dict[str, list[str]] = {}

    def consume(name: str) -> None:
        with httpx.stream("POST", f"{tight.url}/v1/completions", json=body, timeout=60) as r:
            lines[name] = list(r.iter_lines())

    def wait_for(metric: str) -> None:
        deadline = time.monotonic() + 20
        while tight.metrics()[metric] < 1:
            assert time.monotonic() < deadline, metric
            time.sleep(0.05)

    threads = {name: threading.Thread(target=consume, args=(name,)) for name in ("running", "queued")}
    threads["running"].start()
    wait_for("specdec_num_requests_running")
    threads["queued"].start()
    wait_for("specdec_num_requests_waiting")
    r = httpx.post(f"{tight.url}/v1/completions", json={"prompt": "x"}, timeout=30)
    assert r.status_code == 429 and r.json()["error"]["code"] == "queue_full"
    assert r.json()["error"]["type"] == "rate_limit_error"
    tight.proc.send_signal(signal.SIGINT)
    for t in threads.values():
        t.join(30)
    assert tight.stop() == 0
    for name in ("running", "queued"):
        events = [line for line in lines[name] if line]
        assert events[-1] == "data: [DONE]" and '"finish_reason":"abort"' in events[-2], (name, events[-2:])


@pytest.fixture
def default_server(tmp_path):
    """Spawned before the default_model fixture loads, so the two start-ups overlap."""
    srv = spawn(tmp_path, None, "--speculative-algorithm", "auto", "--max-model-len", "512", "--max-batch-size", "2")
    yield srv
    assert srv.stop() == 0


@pytest.mark.slow
def test_default_model_greedy_speculative_server_equals_plain_engine(default_server, default_model):
    from specdec.api import encode_prompt
    from specdec.engine.engine import Engine

    srv = default_server
    prompt = "Repeat this sentence three times: The quick brown fox jumps over the lazy dog."
    ids = encode_prompt(default_model.tokenizer, prompt)
    expected = Engine(default_model, max_seq_len=512).generate(ids, SamplingParams(temperature=0, max_tokens=48))
    wait_ready(srv, timeout=240)
    assert httpx.get(f"{srv.url}/v1/models", timeout=10).json()["data"][0]["speculative"] == "hybrid"  # auto, default model
    r = httpx.post(f"{srv.url}/v1/chat/completions", json=dict(messages=[{"role": "user", "content": prompt}], max_tokens=48, temperature=0), timeout=120)
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["choices"][0]["message"]["content"] == default_model.tokenizer.decode(expected.token_ids, skip_special_tokens=True)
    assert got["usage"]["speculative"]["spec_accepted_tokens"] > 0  # n-gram and the shipped EAGLE head, auto K
