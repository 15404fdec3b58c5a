"""A/B two source trees of specdec in one interleaved run: batch-1 speed per proposer.

    git worktree add /tmp/base <commit>          # the tree to compare against
    python benchmarks/ab_engines.py --base /tmp/base/src --methods none,ngram,eagle,hybrid

Each tree runs in its own worker process (PYTHONPATH set to that tree's src/), built
through the public `LLM` API with auto K; the workers load every config once, warm each up
(excluded), then the driver sends the same greedy requests to both, alternating which goes
first, `--repeats` times over one prompt per bench category. It reports the median of the
per-request ratios new / base of decode tokens per second for each config, and whether the
two trees' greedy tokens are identical (they must be: both are lossless). Results go to
--out as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

WORKER = r"""
import json, sys, time
import torch
from specdec import LLM, SamplingParams
args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
llms = {}
for method in args["methods"]:
    kw = dict(dtype=args["dtype"], max_model_len=2048)
    if method != "none":
        kw.update(speculative_method=method, num_speculative_tokens="auto")
    llms[method] = LLM(**kw)
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    req = json.loads(line)
    params = SamplingParams(temperature=0, max_tokens=req["max_tokens"], ignore_eos=True)
    llm = llms[req["method"]]
    start = time.perf_counter()
    kwargs = {"use_tqdm": False} if "use_tqdm" in LLM.chat.__code__.co_varnames else {}
    [out] = llm.chat([req["messages"]], params, **kwargs)
    wall = time.perf_counter() - start
    print(json.dumps({"tokens": out.outputs[0].token_ids, "wall": wall,
                      "decode_tps": out.spec.tokens_per_second}), flush=True)
"""


class Worker:
    def __init__(self, src: str, args: argparse.Namespace) -> None:
        env = dict(os.environ, PYTHONPATH=src)
        config = json.dumps({"threads": args.threads, "dtype": args.dtype, "methods": args.methods})
        self.proc = subprocess.Popen([sys.executable, "-c", WORKER, config], env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        if not json.loads(self.proc.stdout.readline()).get("ready"):
            raise SystemExit(f"worker for {src} did not start")

    def run(self, method: str, messages: list[dict], max_tokens: int) -> dict:
        self.proc.stdin.write(json.dumps({"method": method, "messages": messages, "max_tokens": max_tokens}) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(30)


def main() -> int:
    from specdec.bench.workloads import load_workload

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True, help="the other tree's src/ directory")
    p.add_argument("--new", default=str(Path(__file__).resolve().parent.parent / "src"), help="default: this tree's src/")
    p.add_argument("--methods", default="none,ngram,eagle,hybrid", type=lambda s: s.split(","))
    p.add_argument("--dtype", default="float32")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("results/ab_engines.json"))
    args = p.parse_args()
    prompts = [q.as_messages() for q in load_workload(None, max_per_category=1)]
    workers = {"base": Worker(args.base, args), "new": Worker(args.new, args)}
    for w in workers.values():  # warm-up, excluded
        for m in args.methods:
            w.run(m, prompts[0], 16)
    records = []
    for r in range(args.repeats):
        for i, prompt in enumerate(prompts):
            for m in args.methods:
                order = ["base", "new"] if (r + i) % 2 == 0 else ["new", "base"]
                out = {name: workers[name].run(m, prompt, args.max_tokens) for name in order}
                records.append({"repeat": r, "prompt": i, "method": m, "ratio": out["new"]["decode_tps"] / out["base"]["decode_tps"],
                                "base_tps": out["base"]["decode_tps"], "new_tps": out["new"]["decode_tps"],
                                "same_tokens": out["new"]["tokens"] == out["base"]["tokens"]})
                print(f"repeat {r} prompt {i} {m}: new/base {records[-1]['ratio']:.3f}", file=sys.stderr)
    for w in workers.values():
        w.close()
    summary = {}
    for m in args.methods:
        rs = [x for x in records if x["method"] == m]
        summary[m] = {"median_ratio": statistics.median(x["ratio"] for x in rs),
                      "base_tps_median": statistics.median(x["base_tps"] for x in rs),
                      "new_tps_median": statistics.median(x["new_tps"] for x in rs),
                      "identical_outputs": sum(x["same_tokens"] for x in rs), "requests": len(rs)}
        s = summary[m]
        print(f"{m:<8} base {s['base_tps_median']:7.1f} tok/s  new {s['new_tps_median']:7.1f} tok/s  "
              f"new/base {s['median_ratio']:.3f}  identical {s['identical_outputs']}/{s['requests']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "summary": summary,
                                    "records": records}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
