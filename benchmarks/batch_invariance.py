"""Is a verify pass's logit at position i the same as a single-token decode's at i?

    python benchmarks/batch_invariance.py [--modes bfloat16:none,bfloat16:int4,...]

Speculative decoding is lossless only if the target's verify pass over K+1 tokens scores
position i exactly as plain decoding would. Greedy ties aside, small differences are
harmless, but they make speculative and plain greedy output diverge at near-ties.

1) End to end: after a prefix, decode 9 known tokens one by one (reference logits), then
   for K = 1..8 rewind the cache and run one (K+1)-token pass; report the max |difference|
   over the K+1 positions, whether all are bitwise equal, and whether the argmax agrees.
2) Per op, on the model's own activations: each linear kind with M = K+1 rows vs the
   same row alone (M = 1); attention of a real verify pass (K+1 masked queries over the
   prefix and new keys) vs each query alone over the keys it may see (the T = 1 path, no
   mask). Elementwise ops (norm, RoPE, SiLU, residual adds) are row-local.
"""

from __future__ import annotations

import argparse
import json
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--modes", default="float32:none,bfloat16:none,bfloat16:int4,float32:int4,bfloat16:int8")
    p.add_argument("--max-k", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-invariant", action="store_true", help="load the models with batch_invariant=True")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = {}
    for mode in args.modes.split(","):
        dtype, _, quant = mode.partition(":")
        loaded = load_model(None, dtype, "cpu", 512, quant=quant or "none", batch_invariant=args.batch_invariant)
        prompt_ids = encode_prompt(loaded.tokenizer, PROMPT)
        continuation = loaded.tokenizer.encode(" The sky looks blue because air scatters short wavelengths more",
                                               add_special_tokens=False)
        e2e = end_to_end(loaded.model, prompt_ids, continuation, args.max_k)
        ops = {} if args.batch_invariant else per_op(loaded.model, prompt_ids, args.max_k)
        results[mode] = {"end_to_end": e2e, "per_op": ops}
        print(f"\n{mode}: verify pass (K+1 tokens) vs single-token decode")
        print("  K  " + " ".join(f"{k:>9d}" for k in e2e))
        print("  max|d| " + " ".join(f"{v['max_abs_diff']:9.2e}" for v in e2e.values()))
        print("  bitwise " + " ".join(f"{str(v['bitwise_equal']):>9s}" for v in e2e.values()))
        print("  argmax  " + " ".join(f"{str(v['argmax_equal']):>9s}" for v in e2e.values()))
        print("  per op, max|op(x)[j] - op(x[j])| for M = 2..K+1:")
        for name, rows in ops.items():
            print(f"    {name:10s} " + " ".join(f"{v:9.2e}" for v in rows))
        del loaded
    print(json.dumps({"benchmark": "batch_invariance", "torch": torch.__version__, "results": results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
