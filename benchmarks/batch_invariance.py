"""Is a verify pass's logit at position i the same as a single-token decode's at i? And what
does making it so (batch invariance, models/attention.py) cost?

    python benchmarks/batch_invariance.py [--modes bfloat16:none,bfloat16:int4,...] [--repeats 5]

Speculative decoding is lossless only if the target's verify pass over K+1 tokens scores
position i exactly as plain decoding would. Small differences flip greedy choices at
near-ties, so speculative and plain greedy output drift apart (bfloat16 especially).

For every mode (dtype:quant), with batch invariance off and on:
1) End to end: after a prefix, decode 9 known tokens one by one (reference logits), then
   for K = 1..8 rewind the cache and run one (K+1)-token pass; report the max |difference|
   over the K+1 positions, whether all are bitwise equal, and whether the argmax agrees.
2) Per op (invariance off only), on the model's own activations: each linear with M = K+1
   rows vs the same row alone; attention of a real verify pass vs each query alone.
3) Cost: plain greedy decoding (a story prompt) and n-gram speculation with K = 4 (a
   grounded prompt), 128 tokens, off and on interleaved, medians of --repeats after one
   warm-up; greedy mismatches of the speculative run against the plain one.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from specdec.api import encode_prompt
from specdec.models.loader import load_model

PROMPT = "Explain in a few sentences why the sky is blue."


@torch.inference_mode()
def end_to_end(model, prompt_ids: list[int], continuation: list[int], max_k: int) -> dict[int, dict]:
    cache = model.new_cache(1, len(prompt_ids) + max_k + 2)
    p = len(prompt_ids)
    model(torch.tensor([prompt_ids]), torch.arange(p)[None], cache, logits_indices=slice(-1, None))
    single = []
    for j in range(max_k + 1):
        out = model(torch.tensor([[continuation[j]]]), torch.tensor([[p + j]]), cache)
        single.append(out.logits[0, 0].float())
    out = {}
    for k in range(1, max_k + 1):
        cache.truncate(p)
        multi = model(torch.tensor([continuation[: k + 1]]), torch.arange(p, p + k + 1)[None], cache).logits[0].float()
        diffs = [(multi[j] - single[j]).abs().max().item() for j in range(k + 1)]
        out[k] = {
            "max_abs_diff": max(diffs),
            "bitwise_equal": all(torch.equal(multi[j], single[j]) for j in range(k + 1)),
            "argmax_equal": all(multi[j].argmax() == single[j].argmax() for j in range(k + 1)),
        }
    return out


@torch.inference_mode()
def per_op(model, prompt_ids: list[int], max_k: int) -> dict[str, list[float]]:
    """max |op(x)[j] - op(x[j])| over j, for M = 2..max_k+1 rows; inputs are real hidden states."""
    layer = model.layers[0]
    cache = model.new_cache(1, len(prompt_ids) + 2)
    hidden = model(torch.tensor([prompt_ids]), torch.arange(len(prompt_ids))[None], cache, hidden_layers=(1, -1),
                   logits_indices=slice(-1, None)).hidden_states
    x = layer.attn_norm(hidden[1][0])  # [T, D] a normed residual, like a linear's input
    inputs = {
        "attn.wqkv": (layer.attn.wqkv, x),
        "mlp.w13": (layer.mlp.w13, x),
        "mlp.w2": (layer.mlp.w2, F.silu(layer.mlp.w13(x)).chunk(2, -1)[0]),
        "lm_head": (model.lm_head, hidden[-1][0]),
    }
    report = {}
    for name, (linear, inp) in inputs.items():
        rows = []
        for m in range(2, max_k + 2):
            batch = linear(inp[:m])
            rows.append(max((batch[j] - linear(inp[j : j + 1])[0]).abs().max().item() for j in range(m)))
        report[name] = rows
    report["sdpa"] = attention_rows(model, prompt_ids, max_k)
    return report


@contextmanager
def spy_on_attention(calls: list):
    """Record every F.scaled_dot_product_attention call's (q, k, v, mask) while active."""
    original = F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, **kwargs):
        calls.append((q.clone(), k.clone(), v.clone(), attn_mask))
        return original(q, k, v, attn_mask=attn_mask, **kwargs)

    F.scaled_dot_product_attention = spy
    try:
        yield original
    finally:
        F.scaled_dot_product_attention = original


@torch.inference_mode()
def attention_rows(model, prompt_ids: list[int], max_k: int) -> list[float]:
    """Each layer's attention in a real verify pass (K+1 masked queries over prefix + new keys)
    vs the same query alone over exactly the keys it may see (the T = 1 path: no mask)."""
    p = len(prompt_ids)
    cache = model.new_cache(1, p + max_k + 2)
    model(torch.tensor([prompt_ids]), torch.arange(p)[None], cache, logits_indices=slice(-1, None))
    rows = []
    for k in range(1, max_k + 1):
        calls: list = []
        with spy_on_attention(calls) as sdpa:
            model(torch.tensor([prompt_ids[-k - 1 :]]), torch.arange(p, p + k + 1)[None], cache)
        cache.truncate(p)
        worst = 0.0
        for q, keys, values, mask in calls:
            b, h_kv, rows_q, d = q.shape
            multi = sdpa(q, keys, values, attn_mask=mask).view(b, h_kv, -1, k + 1, d)
            q5 = q.view(b, h_kv, -1, k + 1, d)
            for j in range(k + 1):
                n = p + j + 1
                single = sdpa(q5[..., j, :], keys[:, :, :n], values[:, :, :n])
                worst = max(worst, (multi[..., j, :] - single).abs().max().item())
        rows.append(worst)
    return rows


STORY = "Write a short story about a lighthouse keeper."
GROUNDED = ("Fix the typos and repeat the text: Teh comittee will meet on tusday at noon in room 4B to "
            "reveiw the budgte, and evryone shoud bring there notes from the last meating.")


def speed(models: dict, repeats: int, max_tokens: int = 128) -> dict:
    """tokens/s of plain and n-gram (K = 4) decoding per (mode, invariant); interleaved."""
    from specdec.config import SamplingParams, SpeculativeConfig
    from specdec.engine.engine import Engine
    from specdec.proposers.ngram import NgramProposer

    params = SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True)
    runs = {}
    for key, loaded in models.items():
        story = encode_prompt(loaded.tokenizer, STORY)
        grounded = encode_prompt(loaded.tokenizer, GROUNDED)
        runs[key + ("plain",)] = (Engine(loaded, max_seq_len=1024), story)
        runs[key + ("plain-grounded",)] = (Engine(loaded, max_seq_len=1024), grounded)
        spec = SpeculativeConfig(method="ngram", num_speculative_tokens=4)
        runs[key + ("ngram4",)] = (Engine(loaded, NgramProposer(1, 4), spec, 1024), grounded)
    rates: dict = {k: [] for k in runs}
    tokens: dict = {}
    for r in range(repeats + 1):
        for k, (engine, ids) in runs.items():
            t = time.perf_counter()
            out = engine.generate(ids, params)
            if r:
                rates[k].append(max_tokens / (time.perf_counter() - t))
            tokens[k] = out.token_ids
    out = {}
    for key in models:
        med = {kind: statistics.median(rates[key + (kind,)]) for kind in ("plain", "ngram4")}
        mismatches = sum(a != b for a, b in zip(tokens[key + ("plain-grounded",)], tokens[key + ("ngram4",)]))
        out[key] = {**med, "ngram_mismatches": mismatches}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--modes", default="float32:none,bfloat16:none,bfloat16:int8,bfloat16:int4,float32:int4")
    p.add_argument("--max-k", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5, help="speed repeats (0 skips the cost measurement)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    results, models = {}, {}
    for mode in args.modes.split(","):
        dtype, _, quant = mode.partition(":")
        for invariant in (False, True):
            loaded = load_model(None, dtype, "cpu", 1024, quant=quant or "none", batch_invariant=invariant)
            models[(mode, invariant)] = loaded
            prompt_ids = encode_prompt(loaded.tokenizer, PROMPT)
            continuation = loaded.tokenizer.encode(" The sky looks blue because air scatters short wavelengths more",
                                                   add_special_tokens=False)
            e2e = end_to_end(loaded.model, prompt_ids, continuation, args.max_k)
            ops = {} if invariant else per_op(loaded.model, prompt_ids, args.max_k)
            results[f"{mode}:{'on' if invariant else 'off'}"] = {"end_to_end": e2e, "per_op": ops}
            print(f"\n{mode}, batch invariance {'on' if invariant else 'off'}: verify pass (K+1 tokens) vs single-token decode")
            print("  K       " + " ".join(f"{k:>9d}" for k in e2e))
            print("  max|d|  " + " ".join(f"{v['max_abs_diff']:9.2e}" for v in e2e.values()))
            print("  bitwise " + " ".join(f"{str(v['bitwise_equal']):>9s}" for v in e2e.values()))
            print("  argmax  " + " ".join(f"{str(v['argmax_equal']):>9s}" for v in e2e.values()))
            if ops:
                print("  per op, max|op(x)[j] - op(x[j])| for M = 2..K+1:")
                for name, rows in ops.items():
                    print(f"    {name:10s} " + " ".join(f"{v:9.2e}" for v in rows))
    costs = {}
    if args.repeats:
        measured = speed(models, args.repeats)
        print(f"\ncost ({args.threads} threads, 128 greedy tokens, medians of {args.repeats}; tok/s off -> on)")
        print(f"  {'mode':14s} {'plain off':>9s} {'on':>7s} {'cost':>6s}   {'ngram4 off':>10s} {'on':>7s} {'cost':>6s}   mismatches off/on")
        for mode in args.modes.split(","):
            off, on = measured[(mode, False)], measured[(mode, True)]
            c_plain, c_spec = 1 - on["plain"] / off["plain"], 1 - on["ngram4"] / off["ngram4"]
            costs[mode] = {"off": off, "on": on, "plain_cost": c_plain, "ngram4_cost": c_spec}
            print(f"  {mode:14s} {off['plain']:9.1f} {on['plain']:7.1f} {100 * c_plain:5.1f}%   {off['ngram4']:10.1f} "
                  f"{on['ngram4']:7.1f} {100 * c_spec:5.1f}%   {off['ngram_mismatches']}/{on['ngram_mismatches']}")
    print(json.dumps({"benchmark": "batch_invariance", "torch": torch.__version__, "threads": args.threads,
                      "results": results, "cost": costs}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
