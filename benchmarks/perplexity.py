"""Perplexity of the native model under each weight format, on the shipped evaluation text.

    python benchmarks/perplexity.py [--window 512 --stride 256 --threads 2]

Teacher forcing over sliding windows: each window of `window` tokens starts from an empty
cache, and only the tokens the previous window did not score are scored, so every token
but the first window's is predicted with at least window - stride tokens of context.
Besides perplexity it reports how often each format's argmax equals float32's (top-1
agreement), a proxy for how well that format would draft for the float32 target.

Configs are DTYPE:QUANT, QUANT being none, int8, int4 (LM head int8 in both), or
MODE/HEAD to choose the head's format: int4/none keeps it dense, int4/int4 makes it int4,
to measure what quantizing the (49k x 576) head costs in quality.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from importlib import resources

import torch
import torch.nn.functional as F

from specdec.models.loader import load_model
from specdec.models.quant import gguf_groups, quantize_model

DEFAULT_CONFIGS = (
    "float32:none,bfloat16:none,float32:int8,bfloat16:int8,float32:int4,bfloat16:int4,float32:int4/none,float32:int4/int4"
)


def eval_text() -> str:
    return resources.files("specdec").joinpath("data/eval/perplexity.txt").read_text(encoding="utf-8")


def load_config(model: str | None, dtype: str, quant: str, max_seq_len: int):
    """quant is MODE or MODE/HEAD, HEAD being the LM head's format (none = dense)."""
    mode, _, head = quant.partition("/")
    if not head:
        return load_model(model, dtype, "cpu", max_seq_len, quant=mode)
    loaded = load_model(model, dtype, "cpu", max_seq_len)
    source = gguf_groups(loaded.path, loaded.config) if loaded.path.is_file() else None
    quantize_model(loaded.model, mode, source=source, lm_head=head)
    loaded.quant = quant
    return loaded


@torch.inference_mode()
def score(model, ids: list[int], window: int, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token negative log-likelihood [N-1] and argmax prediction [N-1] for ids[1:]."""
    nll, pred = [], []
    scored = 1  # ids[0] has no prediction
    begin = 0
    while scored < len(ids):
        end = min(begin + window, len(ids))
        chunk = torch.tensor([ids[begin:end]])
        first = scored - begin  # first position in the chunk whose token gets scored
        cache = model.new_cache(1, window)
        positions = torch.arange(end - begin)[None]
        # logits at chunk position j predict chunk token j + 1
        logits = model(chunk, positions, cache, logits_indices=slice(first - 1, end - begin - 1)).logits[0].float()
        targets = chunk[0, first:]
        nll.append(F.cross_entropy(logits, targets, reduction="none"))
        pred.append(logits.argmax(-1))
        scored = end
        begin = end - window + stride if end - begin == window else end
        begin = max(begin, 0)
    return torch.cat(nll), torch.cat(pred)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-m", "--model", default=None, help="GGUF or HF dir (default: the embedded model)")
    p.add_argument("--configs", default=DEFAULT_CONFIGS, help="comma-separated DTYPE:QUANT")
    p.add_argument("--window", type=int, default=512)
    p.add_argument("--stride", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-tokens", type=int, default=None, help="score only the first N tokens")
    args = p.parse_args(argv)
    if not 0 < args.stride <= args.window:
        raise ValueError(f"need 0 < stride <= window, got stride {args.stride}, window {args.window}")
    torch.set_num_threads(args.threads)

    rows, reference = [], None
    ids = None
    for config in args.configs.split(","):
        dtype, _, quant = config.partition(":")
        t0 = time.perf_counter()
        loaded = load_config(args.model, dtype, quant or "none", args.window)
        load_s = time.perf_counter() - t0
        if ids is None:
            ids = loaded.tokenizer.encode(eval_text(), add_special_tokens=False)[: args.max_tokens]
        t0 = time.perf_counter()
        nll, pred = score(loaded.model, ids, args.window, args.stride)
        row = {
            "config": config,
            "ppl": math.exp(nll.mean().item()),
            "nll": nll.mean().item(),
            "tokens": nll.numel(),
            "load_s": round(load_s, 1),
            "eval_s": round(time.perf_counter() - t0, 1),
        }
        if reference is None:
            reference = (row["ppl"], pred)
        row["delta_ppl"] = row["ppl"] - reference[0]
        row["delta_pct"] = 100 * row["delta_ppl"] / reference[0]
        row["top1_agree"] = (pred == reference[1]).float().mean().item()
        rows.append(row)
        print(
            f"{config:24s} ppl {row['ppl']:8.3f}  delta {row['delta_ppl']:+7.3f} ({row['delta_pct']:+6.2f}%)  "
            f"top-1 vs first {row['top1_agree']:.4f}  [{row['eval_s']}s]",
            file=sys.stderr,
            flush=True,
        )
        del loaded

    print(f"\n{'config':24s} {'ppl':>9s} {'delta':>8s} {'delta %':>8s} {'top1 agree':>10s}")
    for r in rows:
        print(f"{r['config']:24s} {r['ppl']:9.3f} {r['delta_ppl']:+8.3f} {r['delta_pct']:+7.2f}% {r['top1_agree']:10.4f}")
    meta = {"window": args.window, "stride": args.stride, "threads": args.threads, "tokens": len(ids),
            "torch": torch.__version__, "reference": rows[0]["config"]}
    print(json.dumps({"benchmark": "perplexity", **meta, "rows": [{k: (round(v, 5) if isinstance(v, float) else v)
                                                                   for k, v in r.items()} for r in rows]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
