"""Plain greedy decoding: specdec's native engine against transformers' generate().

Same weights (the default model's GGUF, dequantized once and handed to both), same
dtype, same thread count, same prompt ids, 128 new tokens with EOS ignored. Each repeat
runs every (engine, dtype) pair back to back, so noise on this shared machine hits all
of them alike; one warm-up run each is excluded; medians of the repeats.

tokens/s here = new tokens / wall time of the whole call (prefill included; the prompts
are short), the same definition for both engines.

    python benchmarks/baseline_vs_hf.py --repeats 3 --threads 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from specdec.api import encode_prompt
from specdec.config import SamplingParams
from specdec.engine.engine import Engine
from specdec.models.convert import to_transformers
from specdec.models.loader import load_model

PROMPTS = [
    "Write a short story about a lighthouse keeper.",
    "Explain how a bicycle gear works, step by step.",
    "List ten fruits and one fact about each.",
]


def time_ours(engine: Engine, ids: list[int], n: int) -> float:
    t = time.perf_counter()
    out = engine.generate(ids, SamplingParams(temperature=0, max_tokens=n, ignore_eos=True))
    assert len(out.token_ids) == n
    return n / (time.perf_counter() - t)


@torch.inference_mode()
def time_hf(model, ids: list[int], n: int) -> float:
    x = torch.tensor([ids])
    t = time.perf_counter()
    out = model.generate(x, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=2)
    assert out.shape[1] - len(ids) == n
    return n / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--dtypes", default="float32,bfloat16")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    runners = {}
    for dtype in args.dtypes.split(","):
        loaded = load_model(None, dtype, "cpu", 1024)
        engine = Engine(loaded, max_seq_len=1024)
        hf = to_transformers(loaded.model, loaded.config)
        runners[("specdec", dtype)] = lambda ids, e=engine: time_ours(e, ids, args.max_tokens)
        runners[("transformers", dtype)] = lambda ids, m=hf: time_hf(m, ids, args.max_tokens)
        tokenizer = loaded.tokenizer
    prompt_ids = [encode_prompt(tokenizer, p) for p in PROMPTS]

    for run in runners.values():  # warm-up, excluded
        run(prompt_ids[0])
    samples: dict[tuple[str, str], list[float]] = {key: [] for key in runners}
    for r in range(args.repeats):
        for ids in prompt_ids:
            for key, run in runners.items():
                samples[key].append(run(ids))
        print(f"repeat {r + 1}/{args.repeats} done", flush=True)

    result = {"threads": args.threads, "max_tokens": args.max_tokens, "torch": torch.__version__, "dtypes": {}}
    print(f"\n{'dtype':<10} {'specdec tok/s':>14} {'transformers tok/s':>19} {'ratio':>7}")
    for dtype in args.dtypes.split(","):
        ours = statistics.median(samples[("specdec", dtype)])
        theirs = statistics.median(samples[("transformers", dtype)])
        result["dtypes"][dtype] = {"specdec": round(ours, 2), "transformers": round(theirs, 2), "ratio": round(ours / theirs, 3)}
        print(f"{dtype:<10} {ours:>14.1f} {theirs:>19.1f} {ours / theirs:>6.2f}x")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
