"""`specdec doctor`: will this target/draft pair work here, and will it pay?

    specdec doctor --model T --draft-model D [--dtype bfloat16] [--device cuda]
    specdec doctor --speculative ngram
    specdec doctor --speculative eagle [--draft-model HEAD_DIR]   (hybrid: the head and n-grams)

Checks, in order: device, dtype, memory (from shapes, before loading), loading, tokenizer
and vocabulary compatibility, greedy equality (speculative == plain token for token on a
couple of prompts), and one interleaved speed probe. Prints one line per check and
actionable advice; exits 1 if any check fails (0 otherwise, warnings included).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

OK, WARN, FAIL = "ok", "warn", "FAIL"
PROBE_CATEGORIES = ("grounded", "creative")
LOW_ACCEPTANCE = 0.3
SLOW_DRAFT = 0.5


@dataclass
class Check:
    name: str
    status: str  # ok | warn | FAIL
    message: str


@dataclass
class Diagnosis:
    checks: list[Check] = field(default_factory=list)
    advice: list[str] = field(default_factory=list)
    probe: dict = field(default_factory=dict)

    def add(self, name: str, status: str, message: str) -> None:
        self.checks.append(Check(name, status, message))

    @property
    def ok(self) -> bool:
        return all(c.status != FAIL for c in self.checks)


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def available_bytes(device: torch.device) -> int | None:
    import torch

    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_device(d: Diagnosis, device: str, dtype: str) -> bool:
    from specdec.bench.runner import oversubscribed
    import torch

    from specdec.models.native import cpu_model

    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            d.add("device", FAIL, f"--device {device}: CUDA is not available (torch {torch.__version__}); "
                  "use --device cpu or install a CUDA build of torch")
            return False
        d.add("device", OK, f"{device}: {torch.cuda.get_device_name(dev)}")
    else:
        d.add("device", OK, f"cpu: {cpu_model()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
              + ("; a CUDA GPU is available (--device cuda)" if torch.cuda.is_available() else ""))
        warning = oversubscribed()
        if warning:
            d.add("cpu load", WARN, warning)
    if dev.type == "cpu" and dtype == "bfloat16" and not cpu_flags() & {"avx512_bf16", "amx_bf16"}:
        d.add("dtype", WARN, "bfloat16 on a CPU without avx512_bf16/amx_bf16: matmuls are emulated, "
              "expect it slower than float32; use --dtype float32")
    elif dev.type == "cpu" and dtype == "float16":
        d.add("dtype", WARN, "float16 on CPU has no fast kernels here; use --dtype float32 (or bfloat16)")
    else:
        d.add("dtype", OK, dtype)
    return True


def check_memory(d: Diagnosis, model, draft_model, dtype: str, quant: str, device: str, context: int) -> None:
    from specdec.bench.memory import _bytes, estimate_memory, shape_from_path

    try:
        target = shape_from_path(model)
        draft, draft_dtype = None, None
        if draft_model and draft_model.startswith("self"):
            draft, draft_dtype = target, draft_model.partition(":")[2] or None
        elif draft_model:
            draft = shape_from_path(draft_model)
        weights = dtype if quant == "none" else quant  # the KV cache stays at dtype
        est = estimate_memory(target, draft, dtype=weights, draft_dtype=draft_dtype or dtype, kv_dtype=dtype,
                              context=context)
    except (ValueError, FileNotFoundError) as e:
        d.add("memory", FAIL, str(e))
        return
    import torch

    need, have = est.total_bytes, available_bytes(torch.device(device))
    what = f"needs ~{_bytes(need)} (weights {_bytes(est.weight_bytes)}, KV cache {_bytes(est.kv_bytes)} at {context} tokens)"
    if have is None:
        d.add("memory", OK, what + "; available memory unknown")
    elif need > have:
        d.add("memory", FAIL, f"{what} > {_bytes(have)} available: lower --max-model-len or use a smaller dtype")
    elif need > 0.8 * have:
        d.add("memory", WARN, f"{what}, {_bytes(have)} available: tight")
    else:
        d.add("memory", OK, f"{what}, {_bytes(have)} available")
    if draft is not None and draft is not target and draft.num_params > 0.5 * target.num_params:
        d.advice.append(f"the draft has {draft.num_params / target.num_params:.0%} of the target's parameters: "
                        "a draft pays when it is ~10x smaller")


def probe(d: Diagnosis, target, draft, args) -> None:
    """Greedy equality and one interleaved speed round: plain and speculative on each prompt."""
    from specdec.bench.runner import HEAD_METHODS, SpecdecContender, bench_engine, encode
    from specdec.bench.summary import geomean
    from specdec.bench.workloads import load_workload
    from specdec.config import SpeculativeConfig
    from specdec.engine.planner import load_or_calibrate

    prompts = load_workload(list(PROBE_CATEGORIES), max_per_category=1)
    ids = [encode(target.tokenizer, p) for p in prompts]
    max_seq_len = max(map(len, ids)) + args.max_tokens + 16
    cost = None
    if args.draft_n == "auto":
        cost = load_or_calibrate(target, SpeculativeConfig(), full=True)
    plain = SpecdecContender(bench_engine(target, "none", 0, max_seq_len), "none", 0)
    try:  # an EAGLE head is loaded here, and checked against the target
        engine = bench_engine(target, args.speculative, args.draft_n, max_seq_len, draft, cost,
                              head_dir=args.draft_model if args.speculative in HEAD_METHODS else None)
    except (ValueError, FileNotFoundError, OSError) as e:
        d.add("head", FAIL, str(e))
        return
    if args.speculative in HEAD_METHODS:
        head = engine.proposer.head if args.speculative == "eagle" else engine.proposer.eagle.head
        cfg = head.config
        d.add("head", OK, f"{cfg.arch} head over layers {list(cfg.feature_layers)}, draft vocabulary "
              f"{cfg.draft_vocab_size} of {cfg.vocab_size} tokens ({args.draft_model or 'shipped for the default model'})")
    spec = SpecdecContender(engine, args.speculative, args.draft_n)
    for c in (plain, spec):  # warm-up
        c.measure(prompts[0], ids[0], 0.0, args.max_tokens, 0)
    ratios, mismatches = [], []
    stats = {"num_drafts": 0, "num_draft_tokens": 0, "num_accepted_tokens": 0, "draft_seconds": 0.0}
    base_seconds = base_tokens = 0.0
    for prompt, p_ids in zip(prompts, ids):
        a = plain.measure(prompt, p_ids, 0.0, args.max_tokens, 0)
        b = spec.measure(prompt, p_ids, 0.0, args.max_tokens, 0)
        if a.token_ids != b.token_ids:
            at = next((i for i, (x, y) in enumerate(zip(a.token_ids, b.token_ids)) if x != y),
                      min(len(a.token_ids), len(b.token_ids)))
            mismatches.append(f"{prompt.id} at token {at}")
        if a.tokens_per_second and b.tokens_per_second:
            ratios.append(b.tokens_per_second / a.tokens_per_second)
        for k in stats:
            stats[k] += b.spec[k]
        base_seconds += a.decode_seconds
        base_tokens += max(a.num_generated_tokens - 1, 0)
    if mismatches:
        d.add("greedy equality", FAIL, f"speculative output differs from plain ({', '.join(mismatches)}): "
              "the engine is not lossless here; please report it with this command line")
    else:
        d.add("greedy equality", OK, f"{len(prompts)} prompts x {args.max_tokens} tokens: speculative == plain")
    speedup = geomean(ratios)
    rate = stats["num_accepted_tokens"] / stats["num_draft_tokens"] if stats["num_draft_tokens"] else None
    tau = 1 + stats["num_accepted_tokens"] / stats["num_drafts"] if stats["num_drafts"] else None
    base_step = base_seconds / base_tokens if base_tokens else None
    c = stats["draft_seconds"] / stats["num_draft_tokens"] / base_step \
        if stats["num_draft_tokens"] and base_step else None
    mean_k = stats["num_draft_tokens"] / stats["num_drafts"] if stats["num_drafts"] else 0.0
    d.probe = {"speedup": speedup, "acceptance_rate": rate, "mean_acceptance_length": tau,
               "cost_ratio": c, "mean_draft_n": mean_k}
    status = OK if speedup and speedup >= 1.0 else WARN
    d.add("speed probe", status, f"one interleaved round: {_x(speedup)} plain, acceptance "
          f"{_f(rate)}, mean acceptance length {_f(tau)}, mean K {mean_k:.1f}"
          + (f", draft cost {c:.2f}x a target step" if c is not None and args.speculative != "ngram" else ""))
    advise(d, args, speedup, rate, tau, c, mean_k)


def advise(d: Diagnosis, args, speedup, rate, tau, c, mean_k) -> None:
    from specdec.bench import theory

    k = args.draft_n
    if rate is None:  # nothing was drafted
        if args.speculative == "ngram":
            d.advice.append("the n-gram proposer found no match on these prompts: it pays on grounded text "
                            "(edits, extraction, code, repetition), use a draft model for open-ended text")
        return
    if rate < LOW_ACCEPTANCE:
        if k != "auto":
            fix = "use --draft-n auto or the ngram proposer"
        elif args.speculative in ("eagle", "hybrid"):
            fix = ("the head was not trained for this target, or on other text: train one on prompts like "
                   "yours (specdec train-draft --model TARGET --prompts YOURS.jsonl --out DIR)")
        else:
            fix = "pick a draft closer to the target (same family and tuning) or the ngram proposer"
        d.advice.append(f"acceptance {rate:.2f} at K={k}: {fix}")
    if c is not None and args.speculative != "ngram" and c > SLOW_DRAFT:
        d.advice.append(f"draft costs {c:.2f}x the target per token: the draft is too slow to pay off "
                        "(aim for < 0.1x: a much smaller draft)")
    if args.speculative == "draft" and c is not None and tau is not None and mean_k >= 1:
        alpha = theory.alpha_from_tokens_per_step(tau, max(1, round(mean_k)))
        best = theory.optimal_k(alpha, c, max_k=16)
        best_speedup = theory.speedup(alpha, best, c)
        if best_speedup < 1:
            d.advice.append(f"theory says this pair cannot pay (alpha {alpha:.2f}, c {c:.2f}: at best "
                            f"{best_speedup:.2f}x); use plain decoding or the ngram proposer")
        elif k != "auto" and best != k:
            d.advice.append(f"theory suggests K={best} (alpha {alpha:.2f}, c {c:.2f}); or use --draft-n auto")
    if speedup is not None and speedup < 1:
        d.advice.append(f"speculation ran at {speedup:.2f}x plain on this probe (one noisy round): "
                        "measure with `specdec bench` before deciding")
    if not d.advice:
        d.advice.append("looks good; `specdec bench` measures it properly (repeats, categories)")


def _f(x) -> str:
    return "-" if x is None else f"{x:.2f}"


def _x(x) -> str:
    return "-" if x is None else f"{x:.2f}x"


def diagnose(args) -> Diagnosis:
    from specdec.models.loader import load_model
    from specdec.proposers.draft_model import check_tokenizers
    from specdec.proposers.factory import resolve_draft

    import torch

    d = Diagnosis()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not check_device(d, args.device, args.dtype):
        return d
    check_memory(d, args.model, args.draft_model if args.speculative == "draft" else None, args.dtype,
                 args.quant, args.device, args.max_model_len)
    if not d.ok:
        return d
    try:
        target = load_model(args.model, args.dtype, args.device, args.max_model_len, quant=args.quant,
                        batch_invariant=args.batch_invariant)
        draft = resolve_draft(args.draft_model, target, args.dtype, args.device, args.max_model_len) \
            if args.speculative == "draft" else None
    except (ValueError, FileNotFoundError, OSError) as e:
        d.add("load", FAIL, str(e))
        return d
    d.add("load", OK, f"target {target.name} ({target.config.num_params / 1e6:.0f}M params)"
          + (f", draft {draft.name} ({draft.config.num_params / 1e6:.0f}M)" if draft else ""))
    if draft is not None:
        try:
            check_tokenizers(target.tokenizer, draft.tokenizer, target.config.vocab_size, draft.config.vocab_size)
        except ValueError as e:
            d.add("tokenizer", FAIL, f"{e}; the draft must share the target's tokenizer")
            return d
        d.add("tokenizer", OK, f"same vocabulary ({target.config.vocab_size} tokens) and token ids")
    probe(d, target, draft, args)
    return d


def register(subparsers) -> argparse.ArgumentParser:
    from specdec.bench.flags import _draft_n
    from specdec.options import add_model_args

    p = subparsers.add_parser(
        "doctor", help="check a target/draft pair: compatibility, memory, losslessness, speed",
        description="Check that a target and draft (or the n-gram proposer) work together here and "
        "whether speculation pays; exits 1 when a check fails.")
    add_model_args(p)
    p.add_argument("--draft-model", default=None,
                   help="draft model path, or self:DTYPE; with eagle/hybrid, the head's directory "
                   "(default: the head shipped for the default model)")
    p.add_argument("--speculative", choices=["draft", "ngram", "eagle", "hybrid"], default=None,
                   help="the proposer checked (default: generate's: draft with --draft-model, hybrid on the "
                   "default model, ngram otherwise)")
    p.add_argument("--draft-n", type=_draft_n, default="auto", help="K or 'auto' (default: %(default)s)")
    p.add_argument("-n", "--max-tokens", type=int, default=32, help="tokens per probe generation (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from specdec.options import resolve_speculative

    if args.speculative is None:
        args.speculative = resolve_speculative("auto", args.draft_model, 0, args.model)
    if args.speculative == "draft" and not args.draft_model:
        raise ValueError("--speculative draft needs --draft-model PATH")
    d = diagnose(args)
    if args.json:
        print(json.dumps({"ok": d.ok, "checks": [asdict(c) for c in d.checks], "advice": d.advice,
                          "probe": d.probe}))
    else:
        for c in d.checks:
            print(f"[{c.status:>4}] {c.name}: {c.message}")
        if d.advice:
            print("advice:")
            for a in d.advice:
                print(f"  - {a}")
        print("doctor: " + ("ok" if d.ok else "FAILED (see the FAIL lines above)"),
              file=sys.stdout if d.ok else sys.stderr)
    return 0 if d.ok else 1

