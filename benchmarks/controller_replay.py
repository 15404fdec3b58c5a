"""Replay n-gram drafting on recorded greedy outputs: how good is the speculation policy?

    python benchmarks/controller_replay.py results/i5-bfloat16-v5

Reads a `specdec bench` output directory (records.jsonl with the plain runs' token ids,
summary.json with the measured verify cost curve) and re-runs the draft/verify loop
without the model: greedy verification accepts exactly the draft's prefix that matches the
plain output, so every step's outcome is known. Each request is one row of the engine's
policy (engine/planner.py: a `RowPolicy` planned by a `Planner` over
`CostSurface(verify_seconds)`), and each step costs verify_seconds[K'] (K' the draft length
actually verified). Per category it prints the replayed speedup over plain decoding of

  cost-aware            one acceptance estimate per request (the policy without classes)
  cost-aware, classes   one estimate per n-gram match length (engine default)
  heuristic             transformers' +2/-1 schedule
  fixed K               K = 2, 4, 8, 16
  oracle                drafts exactly the tokens that will be accepted: the ceiling of any
                        K policy with these drafts and this cost curve

The replay leaves out what the bench also pays (Python per step, the proposer itself), so
its figures sit a little off the measured ones; the comparison between rows is the point.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from specdec.config import SpeculativeConfig
from specdec.engine.planner import CostSurface, Planner, RowPolicy
from specdec.proposers.ngram import NgramIndex


def auto_spec(max_k: int, adaptive: str = "cost") -> SpeculativeConfig:
    return SpeculativeConfig(method="ngram", num_speculative_tokens="auto", max_speculative_tokens=max_k, adaptive=adaptive)


def fixed_spec(k: int) -> SpeculativeConfig:
    return SpeculativeConfig(method="ngram", num_speculative_tokens=k)


def replay(runs, verify_seconds, spec: SpeculativeConfig | None = None, use_classes=False, oracle=False, max_k=16):
    """runs: [(category, prompt_ids, output_ids)] -> {category: replayed speedup}.

    spec: the policy (auto_spec, fixed_spec, SpeculativeConfig() for plain decoding);
    use_classes: the row names each draft's n-gram match length as its class."""
    cost = CostSurface(list(verify_seconds))
    planner = Planner(cost)
    seconds, plain = defaultdict(float), defaultdict(float)
    for category, prompt_ids, out in runs:
        row = None if oracle else RowPolicy(spec, True, max_probe_interval=planner.max_probe_interval())
        index = NgramIndex(1, 4)
        index.extend(prompt_ids + out[:1])
        i = 1
        while i < len(out):
            room = len(out) - i - 1
            if oracle:
                draft = index.lookup(min(max_k, room))
            else:
                row.select(index.match_length() if use_classes else None, False)
                (k,) = planner.plan([row], [room])
                draft = index.lookup(k)
            accepted = 0
            for drafted, target in zip(draft, out[i:]):
                if drafted != target:
                    break
                accepted += 1
            if oracle:
                draft = draft[:accepted]
            elif row.enabled:
                row.observe(len(draft), accepted)
            seconds[category] += cost.calibrated(1, len(draft) + 1)
            index.extend(out[i : i + accepted + 1])
            i += accepted + 1
        plain[category] += (len(out) - 1) * cost.calibrated(1, 1)  # the first token comes from prefill
    return {c: plain[c] / seconds[c] for c in seconds}


def main() -> None:
    from specdec.bench.runner import encode
    from specdec.bench.workloads import load_workload
    from specdec.models.loader import load_model

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
    rows = {
        "cost-aware": replay(runs, verify_seconds, auto_spec(max_k)),
        "cost-aware, classes": replay(runs, verify_seconds, auto_spec(max_k), use_classes=True),
        "heuristic": replay(runs, verify_seconds, auto_spec(max_k, "heuristic")),
    }
    for k in (2, 4, 8, 16):
        if k <= max_k:
            rows[f"fixed K = {k}"] = replay(runs, verify_seconds, fixed_spec(k))
    rows["oracle"] = replay(runs, verify_seconds, oracle=True, max_k=max_k)
    categories = sorted(rows["oracle"])
    print(f"{len(runs)} plain outputs, {summary['meta']['dtype']}; replayed speedup over plain decoding")
    print(f"{'':22s}" + "".join(f"{c:>12s}" for c in categories))
    for name, by_category in rows.items():
        print(f"{name:22s}" + "".join(f"{by_category[c]:11.2f}x" for c in categories))


if __name__ == "__main__":
    main()
