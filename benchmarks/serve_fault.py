"""Bounded load and fault script for `specdec serve`: full streams, then clients that hang up.

    python benchmarks/serve_fault.py                     # the default model, speculation auto
    python benchmarks/serve_fault.py --cuts 20 --streams 8 --threads 2

Starts `specdec serve` (a subprocess on loopback, the default model unless --model), warms it
up with one round at the measured phase's concurrency (--streams concurrent full streams, then
--cut-concurrency cut streams and cut requests), so the RSS baseline is taken after the
allocator's high-water mark for that load, not before it. Then:
  1. --streams concurrent streaming chat requests run to the end (each must finish, no errors);
  2. --cuts streaming requests whose clients hang up after a few chunks;
  3. --cuts non-streaming requests whose clients give up after a short timeout;
(2 and 3 at most --cut-concurrency clients at a time). Afterwards the server must report 0
running and 0 waiting rows within --idle-timeout seconds, RSS must be within --rss-tolerance of
the warm baseline, and /health must answer 200. Prints a table, writes --out as JSON if given,
and exits 1 if any check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

PROMPTS = [
    "Write a long story about a lighthouse keeper.",
    "List the numbers from 1 to 200, one per line.",
    "Explain how a compiler works, step by step, in detail.",
    "Repeat the sentence 'the cat sat on the mat' fifty times.",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def gauges(url: str) -> dict[str, float]:
    values = {}
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def body(i: int, max_tokens: int, stream: bool) -> dict:
    return dict(messages=[{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}], max_tokens=max_tokens, ignore_eos=True,
                stream=stream, temperature=0 if i % 2 else 0.8, seed=i)


async def full_stream(c: httpx.AsyncClient, url: str, i: int, max_tokens: int) -> tuple[bool, int]:
    chunks, finished = 0, False
    async with c.stream("POST", f"{url}/v1/chat/completions", json=body(i, max_tokens, True), timeout=300) as r:
        if r.status_code != 200:
            return False, 0
        async for line in r.aiter_lines():
            if line.startswith("data: {"):
                event = json.loads(line[6:])
                if "error" in event:
                    return False, chunks
                chunks += 1
                finished |= any(ch.get("finish_reason") for ch in event["choices"])
    return finished, chunks


async def cut_stream(c: httpx.AsyncClient, url: str, i: int, rng: random.Random) -> str:
    after = rng.randint(1, 6)
    async with c.stream("POST", f"{url}/v1/chat/completions", json=body(i, 400, True), timeout=300) as r:
        if r.status_code != 200:
            return f"status {r.status_code}"
        seen = 0
        async for line in r.aiter_lines():
            seen += line.startswith("data: ")
            if seen >= after:
                return "cut"  # leaving the block closes the connection mid-stream
    return "finished"


async def cut_request(c: httpx.AsyncClient, url: str, i: int, rng: random.Random) -> str:
    try:
        r = await c.post(f"{url}/v1/chat/completions", json=body(i, 400, False), timeout=rng.uniform(0.2, 1.0))
    except httpx.TimeoutException:
        return "cut"
    return f"status {r.status_code}"


async def bounded(n: int, limit: int, make) -> list[str]:
    sem = asyncio.Semaphore(limit)

    async def one(i: int) -> str:
        async with sem:
            return await make(i)

    return await asyncio.gather(*(one(i) for i in range(n)))


async def load(url: str, args: argparse.Namespace, rng: random.Random, streams: int, cuts: int) -> dict:
    limits = httpx.Limits(max_connections=max(streams, args.cut_concurrency) + 8)
    async with httpx.AsyncClient(limits=limits) as c:
        t0 = time.perf_counter()
        full = await asyncio.gather(*(full_stream(c, url, i, args.max_tokens) for i in range(streams)))
        t1 = time.perf_counter()
        cut_s = await bounded(cuts, args.cut_concurrency, lambda i: cut_stream(c, url, i, rng))
        t2 = time.perf_counter()
        cut_r = await bounded(cuts, args.cut_concurrency, lambda i: cut_request(c, url, i, rng))
        t3 = time.perf_counter()
    return dict(streams_ok=sum(ok for ok, _ in full), streams=streams, stream_chunks=sum(n for _, n in full), streams_s=t1 - t0,
                cut_streams=cut_s.count("cut"), cut_streams_other=[s for s in cut_s if s != "cut"], cut_streams_s=t2 - t1,
                cut_requests=cut_r.count("cut"), cut_requests_other=[s for s in cut_r if s != "cut"], cut_requests_s=t3 - t2)


def wait_idle(url: str, timeout: float) -> tuple[bool, float, dict]:
    t0 = time.perf_counter()
    while True:
        m = gauges(url)
        if m["specdec_num_requests_running"] == 0 and m["specdec_num_requests_waiting"] == 0:
            return True, time.perf_counter() - t0, m
        if time.perf_counter() - t0 > timeout:
            return False, time.perf_counter() - t0, m
        time.sleep(0.05)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model path (default: the shipped default model)")
    ap.add_argument("--threads", type=int, default=None, help="server torch threads")
    ap.add_argument("--max-batch-size", type=int, default=8)
    ap.add_argument("--max-model-len", type=int, default=1024)
    ap.add_argument("--streams", type=int, default=32, help="concurrent full streams")
    ap.add_argument("--max-tokens", type=int, default=32, help="tokens per full stream")
    ap.add_argument("--cuts", type=int, default=100, help="cut streams, and as many cut non-streaming requests")
    ap.add_argument("--cut-concurrency", type=int, default=16)
    ap.add_argument("--idle-timeout", type=float, default=30.0)
    ap.add_argument("--rss-tolerance", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = ap.parse_args()

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "specdec.cli", "serve", "--port", str(port), "--max-batch-size", str(args.max_batch_size),
           "--max-model-len", str(args.max_model_len), "--max-queue", str(max(64, args.streams + args.cut_concurrency))]
    cmd += ["--model", args.model] if args.model else []
    cmd += ["--threads", str(args.threads)] if args.threads else []
    log = Path(f"/tmp/serve_fault-{port}.log")
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT)
    rng = random.Random(args.seed)
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                print(log.read_text()[-3000:], file=sys.stderr)
                return 1
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        t_start = time.perf_counter()
        asyncio.run(load(url, args, rng, streams=args.streams, cuts=args.cut_concurrency))  # warm-up: one round at full concurrency
        wait_idle(url, args.idle_timeout)
        time.sleep(1.0)  # as before the end reading
        rss_start = rss_kib(proc.pid)
        before = gauges(url)
        figures = asyncio.run(load(url, args, rng, streams=args.streams, cuts=args.cuts))
        idle, idle_s, after = wait_idle(url, args.idle_timeout)
        time.sleep(1.0)
        rss_end = rss_kib(proc.pid)
        health = httpx.get(f"{url}/health", timeout=10).status_code
        status_499 = after.get('specdec_requests_total{status="499"}', 0) - before.get('specdec_requests_total{status="499"}', 0)
        rss_change = (rss_end - rss_start) / rss_start
        checks = {
            f"{args.streams} streams finished": figures["streams_ok"] == args.streams,
            f"{args.cuts} streams cut": figures["cut_streams"] == args.cuts,
            f"{args.cuts} requests cut": figures["cut_requests"] == args.cuts,
            "0 running / waiting after": idle,
            f"RSS within {args.rss_tolerance:.0%}": abs(rss_change) <= args.rss_tolerance,
            "/health 200": health == 200,
        }
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    rows = [
        ("full streams ok", f"{figures['streams_ok']}/{args.streams}", f"{figures['streams_s']:.1f} s"),
        ("stream chunks", f"{figures['stream_chunks']}", ""),
        ("cut streams", f"{figures['cut_streams']}/{args.cuts}", f"{figures['cut_streams_s']:.1f} s"),
        ("cut requests", f"{figures['cut_requests']}/{args.cuts}", f"{figures['cut_requests_s']:.1f} s"),
        ("requests answered 499", f"{status_499:.0f}", ""),
        ("idle after the last cut", "yes" if idle else "NO", f"{idle_s:.2f} s"),
        ("running / waiting after", f"{after['specdec_num_requests_running']:.0f} / {after['specdec_num_requests_waiting']:.0f}", ""),
        ("RSS start -> end", f"{rss_start / 1024:.1f} -> {rss_end / 1024:.1f} MiB", f"{rss_change:+.2%}"),
        ("/health", str(health), ""),
        ("total", "", f"{time.perf_counter() - t_start:.1f} s"),
    ]
    width = max(len(r[0]) for r in rows)
    for name, value, extra in rows:
        print(f"{name:<{width}}  {value:<24} {extra}")
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    if args.out:
        args.out.write_text(json.dumps(dict(figures, rss_start_kib=rss_start, rss_end_kib=rss_end, idle_s=idle_s, status_499=status_499,
                                            health=health, checks=checks), indent=2))
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
