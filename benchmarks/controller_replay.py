"""Replay n-gram drafting on recorded greedy outputs: how good is the K controller?

    python benchmarks/controller_replay.py results/i5-bfloat16-v5

Reads a `specdec bench` output directory (records.jsonl with the plain runs' token ids,
summary.json with the measured verify cost curve) and re-runs the draft/verify loop
without the model: greedy verification accepts exactly the draft's prefix that matches the
plain output, so every step's outcome is known. Each step costs verify_seconds[K'] (K' the
draft length actually verified). Per category it prints the replayed speedup over plain
decoding of

  cost-aware            one acceptance estimate per request (the controller without classes)
  cost-aware, classes   one estimate per n-gram match length (engine default)
  fixed K               K = 2, 4, 8, 16
  oracle                drafts exactly the tokens that will be accepted: the ceiling of any
                        K controller with these drafts and this cost curve

The replay leaves out what the bench also pays (Python per step, the proposer itself), so
its figures sit a little off the measured ones; the comparison between rows is the point.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from specdec.bench.runner import encode
from specdec.bench.workloads import load_workload
from specdec.engine.controller import BucketedController, CostAwareController, CostModel, FixedController
from specdec.models.loader import load_model
from specdec.proposers.ngram import NgramIndex


def replay(runs, verify_seconds, make=None, use_classes=False, oracle=False, max_k=16):
    """runs: [(category, prompt_ids, output_ids)] -> {category: replayed speedup}."""
    seconds, plain = defaultdict(float), defaultdict(float)
    for category, prompt_ids, out in runs:
        controller = make() if make else None
        index = NgramIndex(1, 4)
        index.extend(prompt_ids + out[:1])
        i = 1
        while i < len(out):
            room = len(out) - i - 1
            if oracle:
                draft = index.lookup(min(max_k, room))
            else:
                bucket = index.match_length() if use_classes else None
                k = min(controller.choose(bucket), room)
                draft = index.lookup(k)
            accepted = 0
            for drafted, target in zip(draft, out[i:]):
                if drafted != target:
                    break
                accepted += 1
            if oracle:
                draft = draft[:accepted]
            else:
                controller.observe(len(draft), accepted, bucket)
            seconds[category] += verify_seconds[len(draft)]
            index.extend(out[i : i + accepted + 1])
            i += accepted + 1
        plain[category] += (len(out) - 1) * verify_seconds[0]  # the first token comes from prefill
    return {c: plain[c] / seconds[c] for c in seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("bench_dir", type=Path, help="a specdec bench --out directory with plain (none) runs")
    args = ap.parse_args()
    summary = json.loads((args.bench_dir / "summary.json").read_text())
    verify_seconds = summary["meta"]["verify_seconds"]
    max_k = len(verify_seconds) - 1
    tokenizer = load_model(summary["meta"]["model"], dtype="float32").tokenizer
    prompts = {p.id: p for p in load_workload()}
    runs, seen = [], set()
    for line in (args.bench_dir / "records.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["speculative"] != "none" or record["prompt_id"] in seen:
            continue
        seen.add(record["prompt_id"])
        prompt_ids = encode(tokenizer, prompts[record["prompt_id"]])
        runs.append((record["category"], prompt_ids, record["token_ids"]))
    if not runs:
        raise SystemExit(f"{args.bench_dir}: no plain (--speculative none) runs to replay")
    cost = CostModel(verify_seconds)
    cost_aware = lambda: CostAwareController(cost, max_k=max_k)  # noqa: E731
    rows = {
        "cost-aware": replay(runs, verify_seconds, cost_aware),
        "cost-aware, classes": replay(runs, verify_seconds, lambda: BucketedController(lambda bucket: cost_aware()), use_classes=True),
    }
    for k in (2, 4, 8, 16):
        if k <= max_k:
            rows[f"fixed K = {k}"] = replay(runs, verify_seconds, lambda k=k: FixedController(k))
    rows["oracle"] = replay(runs, verify_seconds, oracle=True, max_k=max_k)
    categories = sorted(rows["oracle"])
    print(f"{len(runs)} plain outputs, {summary['meta']['dtype']}; replayed speedup over plain decoding")
    print(f"{'':22s}" + "".join(f"{c:>12s}" for c in categories))
    for name, by_category in rows.items():
        print(f"{name:22s}" + "".join(f"{by_category[c]:11.2f}x" for c in categories))


if __name__ == "__main__":
    main()
