"""Decode speed of each weight format, and quantized copies of the target as drafts.

    python benchmarks/quant_speed.py [--max-tokens 128 --repeats 3 --threads 2]

Plain: greedy decode tokens/s of the default model as float32, bfloat16, and int8 / int4
(weights quantized, residual stream in float32 or bfloat16; LM head int8, and int4 or
dense in the head ablation). Speculative: a float32 or
bfloat16 target with `--speculative draft --draft-model self:int8|self:int4` at K = 2, 4
and auto. Every configuration runs once per round, rounds interleave the configurations
(this machine is shared), the first round is a short warm-up (16 tokens) and is dropped, and each cell is
the median over the remaining rounds. Speedup is against plain decoding of the same
target; mismatches count the generated positions where the speculative greedy output
differs from plain greedy output (0 = lossless in practice, see batch_invariance.py).
Weight MB counts parameters and buffers; a self-draft shares the target's embedding.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import dataclass, field

import torch

from specdec.api import encode_prompt
from specdec.config import SamplingParams, SpeculativeConfig
from specdec.engine.engine import Engine
from specdec.engine.planner import CostSurface, load_or_calibrate
from specdec.models.loader import load_model
from specdec.models.quant import gguf_groups, quantize_model, weight_bytes
from specdec.proposers.draft_model import DraftModelProposer
from specdec.proposers.factory import quantized_self_draft

PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."
MAX_SEQ_LEN = 1024


@dataclass
class Config:
    name: str
    target: str  # key into the loaded models
    draft: str | None = None
    k: int | str = 0
    tokens_per_second: list[float] = field(default_factory=list)
    token_ids: list[int] | None = None
    stats: list = field(default_factory=list)


def run_once(cfg: Config, models: dict, prompt_ids: list[int], params: SamplingParams, cost: dict) -> None:
    target = models[cfg.target]
    if cfg.draft is None:
        engine = Engine(target, None, SpeculativeConfig(), MAX_SEQ_LEN)
    else:
        spec = SpeculativeConfig(method="draft", draft_model=f"self:{cfg.draft}", num_speculative_tokens=cfg.k)
        proposer = DraftModelProposer(models[f"{cfg.target}+{cfg.draft}"], MAX_SEQ_LEN)
        # a fresh copy per run: the engine learns the draft cost into it as it goes
        cost_model = CostSurface.from_dict(cost[cfg.target].to_dict()) if cfg.k == "auto" else None
        engine = Engine(target, proposer, spec, MAX_SEQ_LEN, cost_model)
    result = engine.generate(prompt_ids, params)
    cfg.tokens_per_second.append(result.stats.tokens_per_second)
    cfg.stats.append(result.stats)
    cfg.token_ids = result.token_ids


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3, help="measured rounds (after one warm-up round)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--prompt", default=PROMPT)
    p.add_argument("--targets", default="float32,bfloat16")
    p.add_argument("--drafts", default="int8,int4")
    p.add_argument("--ks", default="2,4,auto")
    p.add_argument("--head-ablation", default="int4,none",
                   help="also time int4 models with these LM head formats (default head: int8)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    models = {}
    targets, drafts = args.targets.split(","), args.drafts.split(",")
    for dtype in targets:
        models[dtype] = load_model(None, dtype, "cpu", MAX_SEQ_LEN)
        for quant in drafts:
            models[f"{dtype}+{quant}"] = quantized_self_draft(models[dtype], quant, dtype, "cpu", MAX_SEQ_LEN)
        print(f"loaded {dtype} and its {'/'.join(drafts)} copies", file=sys.stderr, flush=True)
    for head in args.head_ablation.split(",") if args.head_ablation else []:
        dtype = targets[-1]
        loaded = load_model(None, dtype, "cpu", MAX_SEQ_LEN)
        quantize_model(loaded.model, "int4", source=gguf_groups(loaded.path, loaded.config), lm_head=head)
        models[f"{dtype}+int4/{head}"] = loaded
    cost = {}
    if "auto" in args.ks:
        spec = SpeculativeConfig(method="draft", draft_model="self", num_speculative_tokens="auto", max_speculative_tokens=8)
        cost = {dtype: load_or_calibrate(models[dtype], spec) for dtype in targets}

    configs = [Config(f"plain {key}", key) for key in models]
    ks = [k if k == "auto" else int(k) for k in args.ks.split(",")]
    configs += [Config(f"{t} <- self:{d} K={k}", t, d, k) for t in targets for d in drafts for k in ks]
    tokenizer = models[targets[0]].tokenizer
    prompt_ids = encode_prompt(tokenizer, args.prompt)
    params = SamplingParams(temperature=0, max_tokens=args.max_tokens, ignore_eos=True)
    warmup = SamplingParams(temperature=0, max_tokens=min(16, args.max_tokens), ignore_eos=True)
    for round_ in range(args.repeats + 1):
        for cfg in configs:
            run_once(cfg, models, prompt_ids, warmup if round_ == 0 else params, cost)
            if round_ == 0:  # warm-up: dropped
                cfg.tokens_per_second.clear()
                cfg.stats.clear()
        print(f"round {round_} done", file=sys.stderr, flush=True)

    plain = {c.target: c for c in configs if c.draft is None}
    rows = []
    for c in configs:
        tps = statistics.median(c.tokens_per_second)
        base = plain[c.target]
        row = {"config": c.name, "tokens_per_second": round(tps, 2),
               "speedup": round(tps / statistics.median(base.tokens_per_second), 3)}
        if c.draft is not None:
            ref = plain[c.target].token_ids
            s = c.stats[-1]
            row.update(
                acceptance_rate=round(s.acceptance_rate, 3),
                mean_acceptance_length=round(s.mean_acceptance_length, 3),
                mismatches=sum(a != b for a, b in zip(c.token_ids, ref)),
                first_mismatch=next((i for i, (a, b) in enumerate(zip(c.token_ids, ref)) if a != b), None),
                k_histogram={str(k): v for k, v in sorted(s.k_histogram.items())},
            )
        else:
            row["vs_float32"] = round(tps / statistics.median(plain[targets[0]].tokens_per_second), 3)
            row["weight_mb"] = round(weight_bytes(models[c.target].model) / 2**20, 1)
        rows.append(row)

    print(f"\n{'config':34s} {'tok/s':>7s} {'speedup':>8s} {'accept':>7s} {'mean len':>8s} {'mismatch':>8s}")
    for r in rows:
        extra = (f"{r['acceptance_rate']:7.3f} {r['mean_acceptance_length']:8.2f} {r['mismatches']:8d}"
                 if "acceptance_rate" in r else f"{'':7s} {'':8s} {'':8s}  ({r['vs_float32']:.2f}x float32, {r['weight_mb']} MB)")
        print(f"{r['config']:34s} {r['tokens_per_second']:7.2f} {r['speedup']:7.2f}x {extra}")
    meta = {"max_tokens": args.max_tokens, "repeats": args.repeats, "threads": args.threads, "torch": torch.__version__}
    print(json.dumps({"benchmark": "quant_speed", **meta, "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
