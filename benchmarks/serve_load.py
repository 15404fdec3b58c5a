"""Load benchmark for `specdec serve`: concurrent streaming clients, speculative vs plain.

    python benchmarks/serve_load.py                      # default model, 1/4/8 clients
    python benchmarks/serve_load.py --concurrency 1 8 --requests 3 --rounds 2 --threads 2
    python benchmarks/serve_load.py --algorithms ngram,hybrid   # also n-gram or the EAGLE head per step

Servers run side by side on loopback: `--speculative-algorithm none` and one per
`--algorithms` entry (default ngram), each with `auto` draft length. For each concurrency c, c clients each send `--requests` streaming
chat requests one after another (`--max-tokens` tokens, greedy, ignore_eos so every
request has the same length); the servers are measured in turn (the order alternating), `--rounds`
times, after a warm-up, and the same prompts go to both.

Reported per (server, c): aggregate tokens/s (completion tokens / wall time of the level,
median over rounds), TTFT p50/p95 (request sent -> first content chunk) and inter-token
latency p50/p95, where a request's ITL is (last chunk - first chunk) / (tokens - 1), so a
speculative step that lands several tokens at once counts as the per-token time it is.
Targets: plain at 8 clients >= 3x plain at 1 client; speculative >= 1.0x plain at every c.
`--temperature 0.7` samples instead (every server at that temperature); `--tree-nodes 0` serves
EAGLE and hybrid chains instead of serve's default trees.
The table goes to stdout and everything to --out as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

from specdec.bench.workloads import load_workload

CATEGORIES = ["grounded", "predictable", "semi_predictable", "creative", "qa"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(name: str, args: argparse.Namespace, spec_args: list[str], log_dir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "specdec.cli", "serve", "--port", str(port), "--max-batch-size", str(max(args.concurrency)),
           "--max-model-len", str(args.max_model_len), *spec_args]
    if args.model:
        cmd += ["--model", args.model]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if args.dtype:
        cmd += ["--dtype", args.dtype]
    log = (log_dir / f"serve_load-{name}.log").open("w")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), f"http://127.0.0.1:{port}"


def wait_ready(proc: subprocess.Popen, url: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server {url} exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"server {url} not ready after {timeout}s")


async def one_request(client: httpx.AsyncClient, url: str, messages: list[dict], max_tokens: int,
                      temperature: float = 0.0) -> dict:
    body = dict(messages=messages, max_tokens=max_tokens, temperature=temperature, ignore_eos=True, stream=True,
                stream_options={"include_usage": True})
    sent = time.perf_counter()
    first = last = None
    usage = {}
    async with client.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=600) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: {"):
                continue
            event = json.loads(line[6:])
            if "error" in event:
                raise RuntimeError(event["error"])
            if event.get("usage"):
                usage = event["usage"]
            if event["choices"] and event["choices"][0]["delta"].get("content"):
                last = time.perf_counter()
                first = first or last
    n = usage.get("completion_tokens", 0)
    return {
        "tokens": n,
        "ttft": (first or time.perf_counter()) - sent,
        "itl": (last - first) / (n - 1) if first and n > 1 else None,
        "spec": usage.get("speculative"),
    }


async def run_level(url: str, concurrency: int, num_requests: int, max_tokens: int, prompts: list,
                    temperature: float = 0.0) -> dict:
    async def client_loop(client, c: int) -> list[dict]:
        out = []
        for j in range(num_requests):
            prompt = prompts[(c * num_requests + j) % len(prompts)]
            out.append(await one_request(client, url, prompt.as_messages(), max_tokens, temperature))
        return out

    start = time.perf_counter()
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=concurrency + 4)) as client:
        per_client = await asyncio.gather(*(client_loop(client, c) for c in range(concurrency)))
    wall = time.perf_counter() - start
    requests = [r for rs in per_client for r in rs]
    tokens = sum(r["tokens"] for r in requests)
    return {"wall_s": wall, "tokens": tokens, "tokens_per_s": tokens / wall, "requests": requests}


def percentile(values: list[float], q: float) -> float:
    values = sorted(v for v in values if v is not None)
    if not values:
        return float("nan")
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def summarize(runs: list[dict]) -> dict:
    requests = [r for run in runs for r in run["requests"]]
    accepted = sum((r["spec"] or {}).get("spec_accepted_tokens", 0) for r in requests)
    drafted = sum((r["spec"] or {}).get("spec_draft_tokens", 0) for r in requests)
    return {
        "tokens_per_s": statistics.median(run["tokens_per_s"] for run in runs),
        "tokens_per_s_rounds": [round(run["tokens_per_s"], 2) for run in runs],
        "ttft_p50": percentile([r["ttft"] for r in requests], 0.5),
        "ttft_p95": percentile([r["ttft"] for r in requests], 0.95),
        "itl_p50": percentile([r["itl"] for r in requests], 0.5),
        "itl_p95": percentile([r["itl"] for r in requests], 0.95),
        "acceptance_rate": accepted / drafted if drafted else 0.0,
        "num_draft_tokens": drafted,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="default: the embedded SmolLM2-135M-Instruct")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    p.add_argument("--requests", type=int, default=2, help="requests per client per level")
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--max-model-len", type=int, default=1024)
    p.add_argument("--algorithms", default="ngram", help="comma list of speculative servers beside plain (ngram, hybrid, eagle, draft)")
    p.add_argument("--dtype", default=None, help="the servers' dtype (default: serve's, float32)")
    p.add_argument("--temperature", type=float, default=0.0, help="every request's temperature (default 0, greedy)")
    p.add_argument("--tree-nodes", type=int, default=None,
                   help="the speculative servers' --tree-nodes (default: serve's: trees for eagle and hybrid)")
    p.add_argument("--out", type=Path, default=Path("results/serve_load.json"))
    args = p.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    prompts = load_workload(CATEGORIES, max_per_category=4)

    algorithms = [a for a in args.algorithms.split(",") if a]
    servers: dict[str, tuple[subprocess.Popen, str]] = {}
    try:
        # One at a time: a speculative server calibrates its batch cost curve at start-up and
        # caches it; servers starting together would measure each other's load, and the
        # planner would then steer by that curve on every later start.
        t0 = time.perf_counter()
        for name in ["plain"] + algorithms:
            spec_args = ["--speculative-algorithm", "none"] if name == "plain" else \
                ["--speculative-algorithm", name, "--speculative-num-draft-tokens", "auto"] + \
                (["--tree-nodes", str(args.tree_nodes)] if args.tree_nodes is not None and name in ("eagle", "hybrid") else [])
            servers[name] = spawn(name, args, spec_args, args.out.parent)
            wait_ready(*servers[name])
        print(f"servers ready in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        for name, (_, url) in servers.items():  # warm-up, excluded
            asyncio.run(run_level(url, max(args.concurrency), 1, 16, prompts))
        runs: dict[tuple[str, int], list[dict]] = {}
        for rnd in range(args.rounds):
            for c in args.concurrency:
                order = list(servers) if (rnd + c) % 2 == 0 else list(reversed(servers))
                for name in order:
                    result = asyncio.run(run_level(servers[name][1], c, args.requests, args.max_tokens, prompts,
                                                   args.temperature))
                    runs.setdefault((name, c), []).append(result)
                    print(f"round {rnd} c={c} {name}: {result['tokens_per_s']:.1f} tok/s", file=sys.stderr)
    finally:
        for proc, _ in servers.values():
            proc.send_signal(signal.SIGINT)
        for proc, _ in servers.values():
            proc.wait(30)

    summary = {f"{name}@{c}": summarize(rs) for (name, c), rs in runs.items()}
    base = summary[f"plain@{min(args.concurrency)}"]["tokens_per_s"]
    print(f"{'server':<8}{'clients':>8}{'tok/s':>9}{'x plain@1':>10}{'spec/plain':>11}{'TTFT p50':>10}{'TTFT p95':>10}{'ITL p50':>9}{'ITL p95':>9}{'accept':>8}")
    for c in args.concurrency:
        for name in servers:
            s = summary[f"{name}@{c}"]
            ratio = s["tokens_per_s"] / summary[f"plain@{c}"]["tokens_per_s"]
            print(f"{name:<8}{c:>8}{s['tokens_per_s']:>9.1f}{s['tokens_per_s'] / base:>10.2f}{ratio:>11.2f}"
                  f"{s['ttft_p50'] * 1e3:>9.0f}ms{s['ttft_p95'] * 1e3:>8.0f}ms{s['itl_p50'] * 1e3:>7.1f}ms{s['itl_p95'] * 1e3:>7.1f}ms{s['acceptance_rate']:>8.2f}")
    top = max(args.concurrency)
    targets = {
        f"plain@{top} / plain@1 >= 3": summary[f"plain@{top}"]["tokens_per_s"] / base,
    }
    for name in algorithms:
        targets[f"min over c of {name} / plain >= 1.0"] = min(
            summary[f"{name}@{c}"]["tokens_per_s"] / summary[f"plain@{c}"]["tokens_per_s"] for c in args.concurrency)
    for name, value in targets.items():
        print(f"target {name}: {value:.2f}")
    args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "summary": summary, "targets": targets,
                                    "runs": {f"{n}@{c}": rs for (n, c), rs in runs.items()}}, indent=1))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
