"""One vLLM contender as a process of vLLM's own venv (bench/vllm_peer.py starts it): stdlib and
vllm only, never specdec, which that venv does not have.

    VENV/bin/python vllm_worker.py '{"model": HF_DIR, "dtype": ..., "max_model_len": ...,
                                     "kv_cache_bytes": ..., "speculative_config": {...} | null}'

Protocol, one JSON object a line: the worker's stdout carries only the protocol (vLLM's own
logs are sent to stderr, its engine processes' included). It answers first
{"ready": true, "vllm": VERSION, "load_seconds": s} (or {"error": ...}), then for each request
{"prompt_ids": [...], "temperature": t, "max_tokens": n, "seed": s, "ignore_eos": bool, "eos_ids": [...]}
one answer {"token_ids": [...], "times": [s...], "counts": [n...], "finish_reason": str,
"spec": {"num_drafts", "num_draft_tokens", "num_accepted_tokens"}} or {"error": "..."}.
`times` are seconds from just before the request was added to each engine step that brought
tokens, `counts` the tokens it brought (the first one ends the prefill): the arrivals that
peers.measurement_from_arrivals turns into a Measurement. `spec` is this request's share of
vLLM's speculative-decoding counters. An empty line or end of input ends the worker.

Prefix caching is off, so every request prefills its whole prompt, as the other contenders do.
"""

from __future__ import annotations

import json
import os
import sys
import time

SPEC_COUNTERS = ("num_drafts", "num_draft_tokens", "num_accepted_tokens")


def spec_counters(llm) -> dict:
    values = {m.name: getattr(m, "value", 0) for m in llm.get_metrics()}
    return {k: int(values.get(f"vllm:spec_decode_{k}", 0)) for k in SPEC_COUNTERS}


def generate(llm, request: dict, number: int) -> dict:
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    temperature = float(request["temperature"])
    params = SamplingParams(temperature=temperature, max_tokens=int(request["max_tokens"]),
                            seed=int(request["seed"]) if temperature > 0 else None,
                            ignore_eos=bool(request.get("ignore_eos")),
                            stop_token_ids=[] if request.get("ignore_eos") else list(request.get("eos_ids") or []))
    engine = llm.llm_engine
    before = spec_counters(llm)
    rid = f"bench-{number}"
    token_ids: list[int] = []
    times: list[float] = []
    counts: list[int] = []
    finish = "length"
    start = time.perf_counter()
    engine.add_request(rid, TokensPrompt(prompt_token_ids=list(request["prompt_ids"])), params)
    while engine.has_unfinished_requests():
        for out in engine.step():
            if out.request_id != rid:
                continue
            now = time.perf_counter()
            ids = list(out.outputs[0].token_ids)
            if len(ids) > len(token_ids):
                times.append(now - start)
                counts.append(len(ids) - len(token_ids))
                token_ids = ids
            finish = out.outputs[0].finish_reason or finish
    after = spec_counters(llm)
    return dict(token_ids=token_ids, times=times, counts=counts, finish_reason=finish,
                spec={k: after[k] - before[k] for k in SPEC_COUNTERS})


def main() -> int:
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # vLLM (and the engine processes it spawns) print to stdout: send that to stderr
    config = json.loads(sys.argv[1])
    try:
        import vllm

        t0 = time.perf_counter()
        llm = vllm.LLM(model=config["model"], dtype=config["dtype"], max_model_len=config["max_model_len"], seed=0,
                       disable_log_stats=False, enable_prefix_caching=False, enforce_eager=config.get("eager", True),
                       kv_cache_memory_bytes=config["kv_cache_bytes"], speculative_config=config.get("speculative_config"))
        protocol.write(json.dumps({"ready": True, "vllm": vllm.__version__, "load_seconds": time.perf_counter() - t0}) + "\n")
    except Exception as e:  # noqa: BLE001 (the parent reports it)
        protocol.write(json.dumps({"error": f"{type(e).__name__}: {e}"}) + "\n")
        return 1
    for number, line in enumerate(sys.stdin):
        if not line.strip():
            break
        try:
            answer = generate(llm, json.loads(line), number)
        except Exception as e:  # noqa: BLE001 (one failed request; the parent records it)
            answer = {"error": f"{type(e).__name__}: {e}"}
        protocol.write(json.dumps(answer) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
