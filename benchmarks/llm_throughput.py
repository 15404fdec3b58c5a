"""`LLM.generate` over many prompts: one continuous batch against one request at a time.

    python benchmarks/llm_throughput.py --num-prompts 64 --max-num-seqs 8

The same prompts (the bench workloads, cycled) go through two `LLM`s over the same model:
max_num_seqs rows decoding together, and one row (what `generate` over a list did before the
engine batched). Greedy, so the outputs must be identical; reported: generated tokens per
second of wall time for each, their ratio, and whether every output matched.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from specdec import LLM, SamplingParams
from specdec.bench.workloads import load_workload


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num-prompts", type=int, default=64)
    p.add_argument("--max-num-seqs", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--speculative", default="ngram", help="speculative_method of both LLMs (none for plain)")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("results/llm_throughput.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    workload = load_workload(None)
    conversations = [workload[i % len(workload)].as_messages() for i in range(args.num_prompts)]
    params = SamplingParams(temperature=0, max_tokens=args.max_tokens, ignore_eos=True)
    method = None if args.speculative == "none" else args.speculative
    results, outputs = {}, {}
    for name, rows in (("batched", args.max_num_seqs), ("one at a time", 1)):
        llm = LLM(speculative_method=method, num_speculative_tokens="auto", dtype=args.dtype, max_model_len=2048,
                  max_num_seqs=rows)
        llm.chat(conversations[:2], SamplingParams(temperature=0, max_tokens=8), use_tqdm=False)  # warm-up
        start = time.perf_counter()
        outs = llm.chat(conversations, params)
        wall = time.perf_counter() - start
        tokens = sum(len(o.outputs[0].token_ids) for o in outs)
        results[name] = {"rows": rows, "wall_s": wall, "tokens": tokens, "tokens_per_s": tokens / wall}
        outputs[name] = [o.outputs[0].token_ids for o in outs]
        print(f"{name} ({rows} rows): {tokens} tokens in {wall:.1f} s, {tokens / wall:.1f} tok/s", file=sys.stderr)
    ratio = results["batched"]["tokens_per_s"] / results["one at a time"]["tokens_per_s"]
    same = sum(a == b for a, b in zip(outputs["batched"], outputs["one at a time"]))
    print(f"batched / one at a time: {ratio:.2f}x; identical outputs {same}/{args.num_prompts}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results,
                                    "ratio": ratio, "identical": same}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
