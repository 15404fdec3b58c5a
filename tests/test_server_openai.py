"""The server against the official `openai` client, in the style of vLLM's
tests/entrypoints/openai and SGLang's test/srt/openai_server suites.

One tiny-model server (spawned as test_server.py spawns its own) with an API key, a 1 s
body timeout and the default speculation (auto). Every OpenAI parameter is either honoured
(compared with the in-process engine running plain decoding) or refused with a 400 naming
it; every bad input of BAD_INPUTS gets a 4xx in OpenAI's error schema and leaves the server
healthy. Logprobs and the logits processors are checked against plain decoding, with
speculation on and off.
"""

from __future__ import annotations

import socket

import httpx
import openai
import pytest
from test_server import REPEAT, Server, spawn, wait_ready

from specdec.api import LLM
from specdec.config import SamplingParams

KEY = "sk-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
CHAT = [{"role": "user", "content": "Tell me about cats and mats and cats."}]


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_dir, request):
    srv = spawn(tmp_path_factory.mktemp("openai"), str(tiny_model_dir), "--api-key", KEY, "--body-timeout", "1",
                "--max-model-len", "2048", "--max-batch-size", "4", "--served-model-name", "tiny")
    try:
        request.getfixturevalue("greedy_repeat")  # the in-process reference loads while the server starts
        yield wait_ready(srv)
    finally:
        code = srv.stop()
    assert code == 0, srv.log.read_text()[-3000:]


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0, timeout=60) as c:
        yield c  # closed before the server stops: no idle keep-alive connection for its shutdown to wait out


@pytest.fixture(scope="module")
def tiny_llm(tiny_model_dir) -> LLM:
    return LLM(model=str(tiny_model_dir), max_model_len=2048)


def post(server: Server, path: str, body, timeout: float = 60, **headers) -> httpx.Response:
    kwargs = {"content": body, "headers": {"content-type": "application/json", **AUTH, **headers}} if isinstance(body, bytes) \
        else {"json": body, "headers": {**AUTH, **headers}}
    return server.http.post(f"{server.url}/v1/{path}", timeout=timeout, **kwargs)


def plain(tiny_llm: LLM, prompt: str, **kw):
    return tiny_llm.generate(prompt, SamplingParams(**kw), use_tqdm=False)[0].outputs[0]


# --- models, auth, body timeout ------------------------------------------------------------


def test_models_list_and_retrieve(client):
    assert [m.id for m in client.models.list().data] == ["tiny"]
    card = client.models.retrieve("tiny")
    assert card.id == "tiny" and card.object == "model"
    with pytest.raises(openai.NotFoundError) as e:
        client.models.retrieve("gpt-4")
    assert e.value.body["code"] == "model_not_found" and e.value.body["param"] == "model"


def test_api_key_guards_v1_only(server):
    wrong = openai.OpenAI(base_url=f"{server.url}/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        wrong.models.list()
    assert e.value.status_code == 401 and e.value.body["code"] == "invalid_api_key"
    r = server.http.post(f"{server.url}/v1/completions", json={"prompt": "x", "max_tokens": 2})
    assert r.status_code == 401 and set(r.json()["error"]) == {"message", "type", "param", "code"}
    assert server.http.get(f"{server.url}/health").status_code == 200
    assert server.http.get(f"{server.url}/metrics").status_code == 200


def test_slow_body_gets_408_and_the_connection_is_closed(server):
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
                  "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n".encode() + b'{"prompt": "hello", ')
        data = b""
        while chunk := s.recv(4096):  # the server closes the connection after its answer
            data += chunk
    assert data.startswith(b"HTTP/1.1 408") and b"body_timeout" in data, data[:300]
    assert server.http.get(f"{server.url}/health").status_code == 200


def test_playground_page_is_open_and_asks_for_the_key(server):
    """The page and its files need no key and hold none; the page sends the key the user gives it."""
    page = server.http.get(f"{server.url}/", timeout=10)
    script = server.http.get(f"{server.url}/static/app.js", timeout=10)
    assert page.status_code == script.status_code == 200
    assert KEY not in page.text and KEY not in script.text
    assert 'id="api-key"' in page.text and "Authorization: `Bearer ${key}`" in script.text and "sessionStorage" in script.text


# --- cancellation ----------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["collected", "streamed"])
def test_client_timeout_cancels_the_rows(server, stream):
    """vLLM's test_request_cancellation: a client gives up on a long request; its rows go."""
    server.wait_idle()
    before = server.metrics()
    body = dict(prompt="go on", max_tokens=1900, ignore_eos=True, n=2, stream=stream)
    if stream:  # read a few chunks, then hang up
        with server.http.stream("POST", f"{server.url}/v1/completions", json=body, headers=AUTH, timeout=60) as r:
            for i, _ in enumerate(r.iter_lines()):
                if i == 6:
                    break
    else:
        with pytest.raises(httpx.TimeoutException):
            server.http.post(f"{server.url}/v1/completions", json=body, headers=AUTH, timeout=1.0)
    after = server.wait_idle(timeout=5)
    assert after["specdec_requests_total{status=499}"] == before.get("specdec_requests_total{status=499}", 0) + 1
    assert after["specdec_generation_tokens_total"] - before["specdec_generation_tokens_total"] < 2 * 1900
    assert post(server, "completions", {"prompt": "next", "max_tokens": 4}).json()["usage"]["completion_tokens"] == 4


# --- parameters honoured ---------------------------------------------------------------------


def test_greedy_speculative_equals_plain_and_engine(client, tiny_llm):
    kw = dict(model="tiny", prompt=REPEAT, max_tokens=32, temperature=0)
    spec = client.completions.create(**kw, extra_body={"ignore_eos": True})
    off = client.completions.create(**kw, extra_body={"ignore_eos": True, "speculative": False})
    assert spec.choices[0].text == off.choices[0].text == plain(tiny_llm, REPEAT, temperature=0, max_tokens=32, ignore_eos=True).text
    assert spec.usage.model_extra["speculative"]["spec_draft_tokens"] > 0


def test_seeded_sampling_n_choices_are_seed_plus_i(client):
    kw = dict(model="tiny", prompt="Once upon a time", max_tokens=12, temperature=1.0)
    many = client.completions.create(**kw, n=3, seed=7, extra_body={"speculative": False})
    assert [c.index for c in many.choices] == [0, 1, 2] and many.usage.completion_tokens == 36
    for i, choice in enumerate(many.choices):
        one = client.completions.create(**kw, seed=7 + i, extra_body={"speculative": False})
        assert choice.text == one.choices[0].text
    assert len({c.text for c in many.choices}) > 1


def test_n_choices_prefill_their_prompt_once(server, client):
    server.wait_idle()
    before = server.metrics()
    out = client.completions.create(model="tiny", prompt="Once upon a time", max_tokens=6, temperature=1.0, n=3, seed=3)
    after = server.metrics()
    prompt = out.usage.prompt_tokens  # counted once, as OpenAI does, though three rows ran it
    assert after["specdec_prompt_tokens_total"] - before["specdec_prompt_tokens_total"] == 3 * prompt
    assert after["specdec_prompt_tokens_shared_total"] - before.get("specdec_prompt_tokens_shared_total", 0) == 2 * prompt


def test_seeded_sampling_is_reproducible_under_auto_k(client):
    texts = {client.completions.create(model="tiny", prompt=REPEAT, max_tokens=24, temperature=1.0, seed=7).choices[0].text
             for _ in range(5)}
    assert len(texts) == 1, texts


def test_seeded_speculative_equals_plain(client):
    kw = dict(model="tiny", prompt=REPEAT, max_tokens=24, temperature=1.0, seed=7)
    spec = client.completions.create(**kw).choices[0].text
    assert spec == client.completions.create(**kw, extra_body={"speculative": False}).choices[0].text


def test_n_streamed_chat_choices(client):
    stream = client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=8, temperature=0, n=2, stream=True,
                                            stream_options={"include_usage": True})
    texts, finishes = ["", ""], {}
    chunks = list(stream)
    for c in chunks[:-1]:
        for choice in c.choices:
            texts[choice.index] += choice.delta.content or ""
            finishes[choice.index] = choice.finish_reason or finishes.get(choice.index)
    assert texts[0] == texts[1] and texts[0] and set(finishes.values()) <= {"length", "stop"}  # greedy: equal choices
    full = client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=8, temperature=0, n=2)
    assert [c.message.content for c in full.choices] == texts
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == full.usage.completion_tokens


def test_echo_prepends_the_prompt(client):
    full = client.completions.create(model="tiny", prompt="Hello there", max_tokens=6, temperature=0, echo=True)
    bare = client.completions.create(model="tiny", prompt="Hello there", max_tokens=6, temperature=0)
    assert full.choices[0].text == "Hello there" + bare.choices[0].text
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model="tiny", prompt="Hello there", max_tokens=6, temperature=0, echo=True, stream=True))
    assert streamed == full.choices[0].text


def test_neutral_values_of_unsupported_parameters_are_accepted(client):
    r = client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=3, response_format={"type": "text"}, tool_choice="none",
                                       user="u1", metadata={"k": "v"}, store=False, service_tier="auto", parallel_tool_calls=False)
    assert r.choices[0].finish_reason in ("length", "stop")
    r = client.completions.create(model="tiny", prompt="x", max_tokens=2, best_of=1, seed=(1 << 64) - 1)
    assert r.usage.completion_tokens == 2
    assert client.completions.create(model="tiny", prompt="x", max_tokens=2, seed=-(1 << 63)).usage.completion_tokens == 2


PROCESSORS = [  # (request extras, SamplingParams extras): each should change greedy output on REPEAT
    ({"logit_bias": {"28": 100}}, {"logit_bias": {28: 100.0}}),
    ({"presence_penalty": 2.0}, {"presence_penalty": 2.0}),
    ({"frequency_penalty": 2.0}, {"frequency_penalty": 2.0}),
    ({"repetition_penalty": 5.0}, {"repetition_penalty": 5.0}),
]


@pytest.fixture(scope="module")
def greedy_repeat(tiny_llm) -> str:
    return plain(tiny_llm, REPEAT, temperature=0, max_tokens=16, ignore_eos=True).text


@pytest.mark.parametrize("extra, kw", PROCESSORS, ids=[next(iter(e)) for e, _ in PROCESSORS])
def test_logits_processors_match_plain_decoding(client, tiny_llm, greedy_repeat, extra, kw):
    expected = plain(tiny_llm, REPEAT, temperature=0, max_tokens=16, ignore_eos=True, **kw).text
    assert expected != greedy_repeat, f"{next(iter(extra))} should change greedy output on REPEAT"
    got = client.completions.create(model="tiny", prompt=REPEAT, max_tokens=16, temperature=0, extra_body={"ignore_eos": True, **extra})
    assert got.choices[0].text == expected


def test_stop_token_ids_and_min_tokens(client, tiny_llm):
    ids = tiny_llm.generate(REPEAT, SamplingParams(temperature=0, max_tokens=12, ignore_eos=True), use_tqdm=False)[0].outputs[0].token_ids
    stop = ids[2]
    cut = plain(tiny_llm, REPEAT, temperature=0, max_tokens=12, stop_token_ids=[stop])
    assert cut.finish_reason == "stop" and cut.token_ids[-1] == stop
    r = client.completions.create(model="tiny", prompt=REPEAT, max_tokens=12, temperature=0, extra_body={"stop_token_ids": [stop]})
    assert r.choices[0].finish_reason == "stop" and r.usage.completion_tokens == ids.index(stop) + 1
    late = plain(tiny_llm, REPEAT, temperature=0, max_tokens=12, stop_token_ids=[stop], min_tokens=ids.index(stop) + 2)
    r = client.completions.create(model="tiny", prompt=REPEAT, max_tokens=12, temperature=0,
                                  extra_body={"stop_token_ids": [stop], "min_tokens": ids.index(stop) + 2})
    assert r.choices[0].text == late.text and r.usage.completion_tokens > ids.index(stop) + 1


def test_min_p_sampled_rows_match_plain(client, tiny_llm):
    kw = dict(model="tiny", prompt=REPEAT, max_tokens=12, temperature=1.0, seed=3, extra_body={"min_p": 0.3, "speculative": False})
    got = client.completions.create(**kw).choices[0].text
    assert got == plain(tiny_llm, REPEAT, temperature=1.0, seed=3, max_tokens=12, min_p=0.3).text


def test_chat_logprobs_speculative_equal_plain(client):
    kw = dict(model="tiny", messages=CHAT, max_tokens=16, temperature=0, logprobs=True, top_logprobs=3)
    spec = client.chat.completions.create(**kw)
    off = client.chat.completions.create(**kw, extra_body={"speculative": False})
    a, b = spec.choices[0].logprobs.content, off.choices[0].logprobs.content
    assert len(a) == len(b) == spec.usage.completion_tokens
    for x, y in zip(a, b):
        assert x.token == y.token and abs(x.logprob - y.logprob) < 1e-4 and len(x.top_logprobs) == 3
        assert x.logprob == pytest.approx(x.top_logprobs[0].logprob) and bytes(x.bytes).decode("utf-8", "replace")


def test_completion_logprobs_speculative_equal_plain_streamed_and_not(client):
    kw = dict(model="tiny", prompt=REPEAT, max_tokens=16, temperature=0, logprobs=2, extra_body={"ignore_eos": True})
    full = client.completions.create(**kw).choices[0]
    off = client.completions.create(**dict(kw, extra_body={"ignore_eos": True, "speculative": False})).choices[0]
    assert full.logprobs.tokens == off.logprobs.tokens and len(full.logprobs.tokens) == 16
    assert full.logprobs.token_logprobs == pytest.approx(off.logprobs.token_logprobs, abs=1e-4)
    assert all(len(top) <= 2 for top in full.logprobs.top_logprobs) and full.logprobs.text_offset[0] == 0
    chunks = [c.choices[0] for c in client.completions.create(**kw, stream=True) if c.choices]
    assert [t for c in chunks if c.logprobs for t in c.logprobs.tokens] == full.logprobs.tokens


@pytest.mark.parametrize("stop", [" HEALTH alm", "ontal HE"], ids=["at-a-token-boundary", "inside-a-token"])
def test_logprobs_end_with_the_text_a_stop_string_cuts(client, stop):
    """No entry for a token cut whole by a stop string; the token it starts inside keeps its entry."""
    kw = dict(model="tiny", prompt=REPEAT, max_tokens=16, temperature=0, logprobs=1, extra_body={"ignore_eos": True})
    full = client.completions.create(**kw).choices[0]
    assert stop in full.text, full.text  # REPEAT's greedy output on the tiny model
    text = full.text[: full.text.index(stop)]
    tokens = full.logprobs.tokens
    keep = next(m for m in range(len(tokens) + 1) if len("".join(tokens[:m])) >= len(text))
    cut = client.completions.create(**kw, stop=[stop]).choices[0]
    assert cut.text == text and cut.finish_reason == "stop"
    assert cut.logprobs.tokens == tokens[:keep] and cut.logprobs.token_logprobs == full.logprobs.token_logprobs[:keep]
    streamed = [c.choices[0] for c in client.completions.create(**kw, stop=[stop], stream=True) if c.choices]
    assert "".join(c.text for c in streamed) == text
    assert [t for c in streamed if c.logprobs for t in c.logprobs.tokens] == tokens[:keep]
    assert [o for c in streamed if c.logprobs for o in c.logprobs.text_offset] == cut.logprobs.text_offset


def test_infinite_logprobs_are_written_as_vllm_writes_them():
    from specdec.server.logprobs import TokenText, chat_logprobs, completion_logprobs

    class Tok:  # two one-character tokens, no byte-level decoder
        def decode(self, ids):
            return "ab"[ids[0]]

    entries = [{"token_id": 0, "logprob": float("-inf"), "top": [(1, -0.5), (0, float("-inf"))]}]
    chat = chat_logprobs(entries, TokenText(Tok())).content[0]
    assert chat.logprob == -9999.0 and [t.logprob for t in chat.top_logprobs] == [-0.5, -9999.0]
    legacy = completion_logprobs(entries, TokenText(Tok()), 0)
    assert legacy.token_logprobs == [-9999.0] and legacy.top_logprobs == [{"b": -0.5, "a": -9999.0}]


# --- bad input -------------------------------------------------------------------------------

MSG = [{"role": "user", "content": "x"}]
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
C, CH = "completions", "chat/completions"
BAD_INPUTS = [  # (id, path, body, status, param)
    ("not-json", C, b"{not json", 400, None),
    ("json-array", C, b"[1, 2]", 400, None),
    ("empty-body", C, b"", 400, None),
    ("truncated-json", C, b'{"prompt": "x"', 400, None),
    ("invalid-utf8", C, b'{"prompt": "\xff\xfe"}', 400, None),
    ("prompt-int", C, {"prompt": 5}, 400, "prompt"),
    ("prompt-null", C, {"prompt": None}, 400, "prompt"),
    ("prompt-missing", C, {}, 400, "prompt"),
    ("prompt-empty", C, {"prompt": ""}, 400, "prompt"),
    ("prompt-empty-list", C, {"prompt": []}, 400, "prompt"),
    ("prompt-id-out-of-vocab", C, {"prompt": [1, 10**9]}, 400, "prompt"),
    ("prompt-id-negative", C, {"prompt": [-1]}, 400, "prompt"),
    ("prompt-batched", C, {"prompt": ["a", "b"]}, 400, "prompt"),
    ("prompt-batched-ids", C, {"prompt": [[1, 2], [3]]}, 400, "prompt"),
    ("prompt-surrogate", C, b'{"prompt": "x\\ud800y"}', 400, "prompt"),
    ("prompt-too-long", C, {"prompt": "hello " * 2100}, 400, "prompt"),
    ("model-unknown", C, {"prompt": "x", "model": "gpt-4"}, 404, "model"),
    ("max-tokens-str", C, {"prompt": "x", "max_tokens": "7"}, 400, "max_tokens"),
    ("max-tokens-float", C, {"prompt": "x", "max_tokens": 1.5}, 400, "max_tokens"),
    ("max-tokens-bool", C, {"prompt": "x", "max_tokens": True}, 400, "max_tokens"),
    ("max-tokens-zero", C, {"prompt": "x", "max_tokens": 0}, 400, "max_tokens"),
    ("max-tokens-negative", C, {"prompt": "x", "max_tokens": -3}, 400, "max_tokens"),
    ("max-tokens-over-context", C, {"prompt": "x", "max_tokens": 100000}, 400, "max_tokens"),
    ("temperature-str", C, {"prompt": "x", "temperature": "hot"}, 400, "temperature"),
    ("temperature-high", C, {"prompt": "x", "temperature": 2.5}, 400, "temperature"),
    ("temperature-negative", C, {"prompt": "x", "temperature": -0.1}, 400, "temperature"),
    ("top-p-zero", C, {"prompt": "x", "top_p": 0}, 400, "top_p"),
    ("top-p-high", C, {"prompt": "x", "top_p": 1.5}, 400, "top_p"),
    ("top-k-low", C, {"prompt": "x", "top_k": -2}, 400, "top_k"),
    ("top-k-float", C, {"prompt": "x", "top_k": 1.0}, 400, "top_k"),
    ("min-p-high", C, {"prompt": "x", "min_p": 1.5}, 400, "min_p"),
    ("min-p-negative", C, {"prompt": "x", "min_p": -0.1}, 400, "min_p"),
    ("n-zero", C, {"prompt": "x", "n": 0}, 400, "n"),
    ("n-too-many", C, {"prompt": "x", "n": 17}, 400, "n"),
    ("n-str", C, {"prompt": "x", "n": "2"}, 400, "n"),
    ("stop-empty", C, {"prompt": "x", "stop": [""]}, 400, "stop"),
    ("stop-too-many", C, {"prompt": "x", "stop": ["a"] * 17}, 400, "stop"),
    ("stop-int", C, {"prompt": "x", "stop": 5}, 400, "stop"),
    ("stop-surrogate", C, b'{"prompt": "x", "stop": "\\udc00"}', 400, "stop"),
    ("stream-str", C, {"prompt": "x", "stream": "yes"}, 400, "stream"),
    ("seed-2^64", C, {"prompt": "x", "seed": 1 << 64}, 400, "seed"),
    ("seed-below-int64", C, {"prompt": "x", "seed": -(1 << 63) - 1}, 400, "seed"),
    ("seed-2^64-streamed", C, {"prompt": "x", "seed": 1 << 64, "stream": True}, 400, "seed"),
    ("seed-str", C, {"prompt": "x", "seed": "7"}, 400, "seed"),
    ("seed-float", C, {"prompt": "x", "seed": 1.5}, 400, "seed"),
    ("echo-str", C, {"prompt": "x", "echo": "yes"}, 400, "echo"),
    ("echo-with-logprobs", C, {"prompt": "x", "echo": True, "logprobs": 1}, 400, "echo"),
    ("logprobs-high", C, {"prompt": "x", "logprobs": 21}, 400, "logprobs"),
    ("logprobs-negative", C, {"prompt": "x", "logprobs": -1}, 400, "logprobs"),
    ("logprobs-bool", C, {"prompt": "x", "logprobs": True}, 400, "logprobs"),
    ("best-of-not-n", C, {"prompt": "x", "best_of": 2}, 400, "best_of"),
    ("best-of-zero", C, {"prompt": "x", "best_of": 0}, 400, "best_of"),
    ("suffix", C, {"prompt": "x", "suffix": "tail"}, 400, "suffix"),
    ("stream-options-without-stream", C, {"prompt": "x", "stream_options": {"include_usage": True}}, 400, "stream_options"),
    ("stream-options-bad-value", C, {"prompt": "x", "stream": True, "stream_options": {"include_usage": "yes"}}, 400, "stream_options"),
    ("stream-options-unknown", C, {"prompt": "x", "stream": True, "stream_options": {"foo": 1}}, 400, "stream_options"),
    ("unknown-field", C, {"prompt": "x", "foo": 1}, 400, "foo"),
    ("logit-bias-key-not-id", C, {"prompt": "x", "logit_bias": {"abc": 1}}, 400, "logit_bias"),
    ("logit-bias-key-out-of-vocab", C, {"prompt": "x", "logit_bias": {"99999999": 1}}, 400, "logit_bias"),
    ("logit-bias-key-negative", C, {"prompt": "x", "logit_bias": {"-5": 1}}, 400, "logit_bias"),
    ("logit-bias-value-high", C, {"prompt": "x", "logit_bias": {"5": 101}}, 400, "logit_bias"),
    ("logit-bias-list", C, {"prompt": "x", "logit_bias": [1, 2]}, 400, "logit_bias"),
    ("presence-penalty-high", C, {"prompt": "x", "presence_penalty": 3}, 400, "presence_penalty"),
    ("frequency-penalty-low", C, {"prompt": "x", "frequency_penalty": -2.5}, 400, "frequency_penalty"),
    ("repetition-penalty-zero", C, {"prompt": "x", "repetition_penalty": 0}, 400, "repetition_penalty"),
    ("repetition-penalty-high", C, {"prompt": "x", "repetition_penalty": 11}, 400, "repetition_penalty"),
    ("min-tokens-negative", C, {"prompt": "x", "min_tokens": -1}, 400, "min_tokens"),
    ("min-tokens-over-max", C, {"prompt": "x", "min_tokens": 5, "max_tokens": 3}, 400, "min_tokens"),
    ("stop-token-ids-negative", C, {"prompt": "x", "stop_token_ids": [-1]}, 400, "stop_token_ids"),
    ("stop-token-ids-out-of-vocab", C, {"prompt": "x", "stop_token_ids": [10**9]}, 400, "stop_token_ids"),
    ("stop-token-ids-str", C, {"prompt": "x", "stop_token_ids": "5"}, 400, "stop_token_ids"),
    ("ignore-eos-str", C, {"prompt": "x", "ignore_eos": "no"}, 400, "ignore_eos"),
    ("speculative-str", C, {"prompt": "x", "speculative": "no"}, 400, "speculative"),
    ("user-int", C, {"prompt": "x", "user": 5}, 400, "user"),
    ("completions-json-mode", C, {"prompt": "x", "response_format": {"type": "json_object"}}, 400, "response_format"),
    ("messages-empty", CH, {"messages": []}, 400, "messages"),
    ("messages-missing", CH, {"max_tokens": 2}, 400, "messages"),
    ("messages-str", CH, {"messages": "hi"}, 400, "messages"),
    ("role-unknown", CH, {"messages": [{"role": "wizard", "content": "x"}]}, 400, "messages"),
    ("content-int", CH, {"messages": [{"role": "user", "content": 5}]}, 400, "messages"),
    ("content-image", CH, {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, 400, "messages"),
    ("message-unknown-field", CH, {"messages": [{"role": "user", "content": "x", "foo": 1}]}, 400, "messages"),
    ("message-tool-calls", CH, {"messages": [{"role": "assistant", "content": "", "tool_calls": [{"id": "1"}]}, *MSG]}, 400, "messages"),
    ("content-surrogate", CH, b'{"messages": [{"role": "user", "content": "x\\ud800y"}]}', 400, "messages"),
    ("chat-max-tokens-zero", CH, {"messages": MSG, "max_tokens": 0}, 400, "max_tokens"),
    ("max-completion-tokens-zero", CH, {"messages": MSG, "max_completion_tokens": 0}, 400, "max_completion_tokens"),
    ("chat-model-unknown", CH, {"messages": MSG, "model": "nope"}, 404, "model"),
    ("json-object", CH, {"messages": MSG, "response_format": {"type": "json_object"}}, 400, "response_format"),
    ("json-schema", CH, {"messages": MSG, "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}}, 400, "response_format"),
    ("tools", CH, {"messages": MSG, "tools": [TOOL]}, 400, "tools"),
    ("tool-choice-named", CH, {"messages": MSG, "tool_choice": {"type": "function", "function": {"name": "f"}}}, 400, "tool_choice"),
    ("tool-choice-required", CH, {"messages": MSG, "tool_choice": "required"}, 400, "tool_choice"),
    ("functions", CH, {"messages": MSG, "functions": [TOOL["function"]]}, 400, "functions"),
    ("function-call", CH, {"messages": MSG, "function_call": "auto"}, 400, "function_call"),
    ("top-logprobs-without-logprobs", CH, {"messages": MSG, "top_logprobs": 3}, 400, "top_logprobs"),
    ("top-logprobs-high", CH, {"messages": MSG, "logprobs": True, "top_logprobs": 21}, 400, "top_logprobs"),
    ("chat-logprobs-int", CH, {"messages": MSG, "logprobs": 1}, 400, "logprobs"),
    ("audio", CH, {"messages": MSG, "audio": {"voice": "alloy", "format": "wav"}}, 400, "audio"),
    ("modalities-audio", CH, {"messages": MSG, "modalities": ["text", "audio"]}, 400, "modalities"),
    ("reasoning-effort", CH, {"messages": MSG, "reasoning_effort": "high"}, 400, "reasoning_effort"),
    ("store-true", CH, {"messages": MSG, "store": True}, 400, "store"),
    ("service-tier-flex", CH, {"messages": MSG, "service_tier": "flex"}, 400, "service_tier"),
    ("prediction", CH, {"messages": MSG, "prediction": {"type": "content", "content": "x"}}, 400, "prediction"),
    ("chat-stream-options-without-stream", CH, {"messages": MSG, "stream_options": {"include_usage": True}}, 400, "stream_options"),
    ("chat-seed-2^64-streamed", CH, {"messages": MSG, "seed": 1 << 64, "stream": True, "n": 2}, 400, "seed"),
    ("metadata-not-str", CH, {"messages": MSG, "metadata": {"a": 1}}, 400, "metadata"),
    ("parallel-tool-calls-str", CH, {"messages": MSG, "parallel_tool_calls": "yes"}, 400, "parallel_tool_calls"),
    ("chat-unknown-field", CH, {"messages": MSG, "frobnicate": True}, 400, "frobnicate"),
]


@pytest.mark.parametrize("path, body, status, param", [b[1:] for b in BAD_INPUTS], ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_gets_an_openai_error_and_the_server_stays_healthy(server, path, body, status, param):
    r = post(server, path, body, timeout=30)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"], error
    assert error["param"] == param, error
    assert server.http.get(f"{server.url}/health", timeout=10).status_code == 200


@pytest.mark.parametrize("method, path, status", [("GET", "/v1/models/nope", 404), ("GET", "/v1/nothing", 404),
                                                  ("GET", "/v1/completions", 405), ("POST", "/v1/models", 405)])
def test_bad_routes(server, method, path, status):
    r = server.http.request(method, f"{server.url}{path}", headers=AUTH, timeout=10)
    assert r.status_code == status and set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_bad_inputs_leave_nothing_running(server):
    assert len(BAD_INPUTS) >= 60
    m = server.wait_idle(timeout=5)
    assert m["specdec_num_requests_running"] == 0
    assert post(server, "completions", {"prompt": "still alive", "max_tokens": 3}).status_code == 200
