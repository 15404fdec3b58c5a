"""Time from process start to the first streamed token of `specdec generate`, on an empty
cache directory (a fresh install's first run: kernels built and probed, the cost surface
measured) and on a warm one. Medians of --repeats runs; the cache is pointed at a temporary
directory through SPECDEC_CACHE (models/gguf_file.py: cache_dir), so the user's is untouched.

    python benchmarks/first_run.py --repeats 3 [--threads 2] [-- extra generate flags]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time


def first_token_seconds(cache: str, prompt: str, threads: int | None, extra: list[str]) -> tuple[float, float]:
    """(seconds to the first streamed character on stdout, seconds to exit)."""
    cmd = [sys.executable, "-m", "specdec", "generate", "-p", prompt, "-n", "16", "--temp", "0", *extra]
    if threads:
        cmd += ["-t", str(threads)]
    env = os.environ | {"SPECDEC_CACHE": cache}
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    first = None
    while True:
        byte = proc.stdout.read(1)
        if not byte:
            break
        if first is None and not byte.isspace():
            first = time.perf_counter() - start
    proc.wait()
    if proc.returncode != 0 or first is None:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {proc.returncode})")
    return first, time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="runs per case (default: %(default)s)")
    ap.add_argument("--threads", type=int, default=None, help="generate's -t (default: torch's)")
    ap.add_argument("--prompt", default="What is the capital of France?", help="the prompt (default: %(default)s)")
    ap.add_argument("extra", nargs="*", help="more generate flags, after --")
    args = ap.parse_args()
    rows = {"empty cache": [], "warm cache": []}
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="specdec-cache-") as cache:
            rows["empty cache"].append(first_token_seconds(cache, args.prompt, args.threads, args.extra))
            rows["warm cache"].append(first_token_seconds(cache, args.prompt, args.threads, args.extra))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"specdec generate, first streamed token from process start; {os.cpu_count()} CPUs, "
          f"load average {load:.2f}, threads {args.threads or 'default'}, {args.repeats} repeats")
    print(f"{'case':<12} {'first token s (median)':>22} {'min':>7} {'max':>7} {'exit s (median)':>16}")
    for name, runs in rows.items():
        firsts = [f for f, _ in runs]
        print(f"{name:<12} {statistics.median(firsts):>22.2f} {min(firsts):>7.2f} {max(firsts):>7.2f} "
              f"{statistics.median(e for _, e in runs):>16.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
