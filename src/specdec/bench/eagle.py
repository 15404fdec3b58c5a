"""EAGLE benchmarks: the cost of one head step per draft vocabulary size, and an interleaved
plain / chain / tree comparison on prompts outside the training corpus.

    python -m specdec.bench.eagle cost [--vocab 49152 16384 8192]
    python -m specdec.bench.eagle compare [--head DIR] [--k 5] [--tree-nodes 24] [--max-tokens 128]

Timings are medians; the comparison runs the methods in rotation per prompt and round
(after one short warm-up run each), so machine noise hits all of them alike.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from specdec.config import SamplingParams, SpeculativeConfig
from specdec.models.eagle import EagleConfig, EagleHead
from specdec.models.linear import pack_linears_for_cpu

HELDOUT_PROMPTS = (  # bench prompts (src/specdec/data/prompts), none in train_prompts.jsonl
    "qa-02",
    "qa-07",
    "creative-02",
    "semi_predictable-02",
    "semi_predictable-06",
    "math-06",
    "heldout-04",
    "summarization-04",
)


@torch.inference_mode()
def head_step_cost(target, vocab_sizes=(49152, 16384, 8192), context: int = 256, repeats: int = 30) -> list[dict]:
    """Median seconds of one chain draft step (layer + LM head + argmax) per draft vocab size,
    next to one target decode step at the same context."""
    model = target.model
    dev = model.device
    rows = []
    cache = model.new_cache(1, context + 2)
    ids = torch.arange(context, device=dev)[None] % 1000 + 100
    model(ids, torch.arange(context, device=dev)[None], cache, logits_indices=slice(-1, None))
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        model(torch.tensor([[200]], device=dev), torch.tensor([[context]], device=dev), cache)
        times.append(time.perf_counter() - t0)
        cache.rollback(1)
    target_step = statistics.median(times[1:])
    for v in vocab_sizes:
        torch.manual_seed(0)
        head = EagleHead(EagleConfig.for_target(target.config, "eagle1", min(v, target.config.vocab_size)))
        head = pack_linears_for_cpu(head.to(model.dtype).eval().requires_grad_(False))
        head.attach(model.embed, model.lm_head)
        hcache = head.new_cache(context + 2)
        feats = torch.randn(1, context, head.config.hidden_size, dtype=model.dtype, device=dev)
        head.step(feats, ids, torch.arange(context, device=dev)[None], hcache)
        hidden = feats[:, -1:]
        times = []
        for _ in range(repeats + 1):
            t0 = time.perf_counter()
            out = head.step(hidden, torch.tensor([[200]], device=dev), torch.tensor([[context]], device=dev), hcache)
            head.to_target_ids(head.logits(out[0, 0]).argmax())
            times.append(time.perf_counter() - t0)
            hcache.rollback(1)
        step = statistics.median(times[1:])
        rows.append({"draft_vocab": v, "head_step_ms": round(step * 1e3, 3), "target_step_ms": round(target_step * 1e3, 3), "ratio": round(step / target_step, 3)})
    return rows


def load_prompts(ids=HELDOUT_PROMPTS) -> list[dict]:
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "data" / "prompts"
    rows = {}
    for path in sorted(root.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            rows[row["id"]] = row
    return [rows[i] for i in ids]


def compare(target, head_dir=None, k: int = 5, tree_nodes: int = 24, tree_top_k: int = 8, max_tokens: int = 128, rounds: int = 1, prompt_ids=HELDOUT_PROMPTS) -> dict:
    from specdec.api import encode_prompt
    from specdec.engine.build import build_engine

    engines = {"plain": build_engine(target, SpeculativeConfig(), 2048)}
    for name, nodes in (("chain", 0), ("tree", tree_nodes)):
        spec = SpeculativeConfig(method="eagle", draft_model=head_dir, num_speculative_tokens=k, tree_nodes=nodes, tree_top_k=tree_top_k)
        engines[name] = build_engine(target, spec, 2048)
    params = SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True)
    results: dict[str, dict[str, list]] = {n: {"tps": [], "accept": []} for n in engines}
    per_prompt = []
    rows = load_prompts(prompt_ids)
    warm_ids = encode_prompt(target.tokenizer, rows[0].get("prompt"), rows[0].get("messages"))
    for engine in engines.values():  # warm-up, not counted
        engine.generate(warm_ids, SamplingParams(temperature=0, max_tokens=16, ignore_eos=True))
    for p_index, row in enumerate(rows):
        ids = encode_prompt(target.tokenizer, row.get("prompt"), row.get("messages"))
        outputs = {}
        for r in range(rounds):
            shift = (p_index + r) % 3
            order = list(engines)[shift:] + list(engines)[:shift]
            for name in order:
                res = engines[name].generate(ids, params)
                outputs[name] = res.token_ids
                results[name]["tps"].append(res.stats.tokens_per_second)
                if name != "plain":
                    results[name]["accept"].append(res.stats.mean_acceptance_length)
        if any(outputs[n] != outputs["plain"] for n in outputs):
            raise AssertionError(f"{row['id']}: speculative output differs from plain greedy")
        per_prompt.append({"id": row["id"], **{n: round(statistics.median(results[n]["accept"][-rounds:]), 2) for n in ("chain", "tree")}})
    plain_tps = statistics.median(results["plain"]["tps"])
    summary = {"k": k, "tree_nodes": tree_nodes, "tree_top_k": tree_top_k, "max_tokens": max_tokens, "plain_tokens_per_s": round(plain_tps, 2)}
    for n in ("chain", "tree"):
        summary[n] = {
            "mean_acceptance_length": round(statistics.mean(results[n]["accept"]), 3),
            "tokens_per_s": round(statistics.median(results[n]["tps"]), 2),
            "speedup": round(statistics.median(results[n]["tps"]) / plain_tps, 3),
        }
    summary["per_prompt"] = per_prompt
    return summary


def main(argv=None) -> int:
    from specdec.models.loader import load_model

    p = argparse.ArgumentParser(prog="python -m specdec.bench.eagle")
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("cost")
    c.add_argument("--vocab", type=int, nargs="+", default=[49152, 16384, 8192])
    m = sub.add_parser("compare")
    m.add_argument("--head", default=None)
    m.add_argument("--k", type=int, default=5)
    m.add_argument("--tree-nodes", type=int, default=24)
    m.add_argument("--tree-top-k", type=int, default=8)
    m.add_argument("--max-tokens", type=int, default=128)
    m.add_argument("--rounds", type=int, default=1)
    m.add_argument("--prompts", nargs="+", default=list(HELDOUT_PROMPTS))
    for q in (c, m):
        q.add_argument("-m", "--model", default=None)
        q.add_argument("-t", "--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    target = load_model(args.model, "float32", "cpu", 2048)
    if args.command == "cost":
        out = head_step_cost(target, args.vocab)
    else:
        out = compare(target, args.head, args.k, args.tree_nodes, args.tree_top_k, args.max_tokens, args.rounds, args.prompts)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
