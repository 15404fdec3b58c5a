"""`specdec bench`: every speculative config against plain decoding, interleaved, in one run.

    specdec bench --speculative none,ngram,draft --draft-model D --draft-n auto,4 \
        --temperature 0,0.7 --categories grounded,creative --repeats 3 --peer hf,llamacpp

Defaults: --speculative none plus generate's default proposer (flags.py), --draft-n auto,2,4,8,
--temperature 0,0.7, --max-tokens 128, --repeats 3, every built-in category but heldout.

The target is loaded once; each config is an Engine over the same weights (a KV cache
and a proposer of its own). After one warm-up generation per config (excluded), each
repeat walks the prompts and runs every contender back to back on the same prompt, the
order rotating from prompt to prompt, so the machine's noise hits all alike. A question
of several turns (MT-bench / Spec-Bench form, workloads.py) runs turn by turn, every
contender back to back on each turn, and each contender's next turn follows its own
answers (decoded from its tokens); each turn is a sample of its own. Medians over
repeats; definitions in specdec/bench/summary.py. Outputs in --out: records.jsonl (one
raw record per run), summary.json (the final JSON), summary.csv, report.md, *.png.

The last stdout line is one JSON object:

    {"baseline": {"name": "none@T0", "temperature": 0.0, "tokens_per_second": float,
                  "ttft_seconds": float, "latency_seconds": {"p50", "p95", "p99"},
                  "by_category": {CAT: {...}}},
     "configs": [                      # plain baselines (speculative "none", draft_n 0,
       {"name": "ngram:4@T0",          # one per temperature) and every speculative config
        "speculative": "ngram", "draft_n": 4 | "auto" | 0, "temperature": 0.0, "kind": "specdec",
        "tokens_per_second": float,    # geometric mean over prompts of median decode tokens/s
        "speedup": float,              # geometric mean over prompts of tokens/s / baseline's
        "acceptance_rate": float, "mean_acceptance_length": float,
        "acceptance_rate_per_position": [float], "drafted_per_position": [int],
        "mean_draft_n": float, "num_drafts": int, "num_draft_tokens": int, "k_histogram": {K: steps},
        "ttft_seconds": float, "latency_seconds": {"p50": s, "p95": s, "p99": s},
        "greedy_mismatches": int | null,   # runs whose ids differ from plain's; null at T > 0
        "cost_ratio": float, "verify_cost_ratio": float, "alpha": float,   # only where it drafted
        "predicted_speedup": float, "predicted_speedup_paper": float,
        "num_runs": int, "num_prompts": int, "mean_generated_tokens": float,
        "by_category": {CAT: {"speedup", "tokens_per_second", "mean_acceptance_length",
                              "acceptance_rate"}}}],
     "peers": {"hf" | "hf-prompt-lookup" | "hf-assisted" | "llamacpp" | "llamacpp-prompt-lookup"
               | "endpoint":   # a peer run at several K's is keyed NAME:K, once per K
               {the same fields at the lowest temperature it ran (speedup over our plain
                baseline; acceptance fields absent), "by_temperature": {"0": {...}, "0.7": {...}}}},
     "category_table": {"columns": [CAT, ..., "overall"],   # Spec-Bench's table: a row per config
                        "rows": [{"name": str, "speedup": {COLUMN: float}, "mean_acceptance_length": {COLUMN: float}}]},
     "temperatures": [float], "categories": [str],
     "meta": {"command", "model", "draft_model", "dtype", "device", "threads", "cpu", "torch",
              "transformers", "llama_cpp" (with --peer llamacpp), "load_average", "load_average_end",
              "max_tokens", "repeats", "num_prompts", "verify_seconds", "out", ...}}

Plain baselines carry acceptance_rate 0 and mean_acceptance_length 1 (no drafts); peers
carry no acceptance fields (transformers and llama-cpp-python do not report them).
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

from specdec.bench.flags import METHODS, PEERS, default_methods
from specdec.bench.peers import Measurement, synchronize
from specdec.bench.summary import OVERALL, contender_name, stats_to_record, summarize
from specdec.config import SAMPLING_VERIFY, SamplingParams, SpeculativeConfig
from specdec.engine.build import build_engine
from specdec.engine.engine import Engine
from specdec.engine.stats import SpecStats
from specdec.models.native import cpu_model

HEAD_METHODS = ("eagle", "hybrid")  # proposers that draft with an EAGLE head (--draft-model DIR)
# room per earlier answer of a question beyond its max_tokens: the decoded answer, encoded
# again inside the next turn's chat template, need not split into the same tokens
ANSWER_SLACK_TOKENS = 16
TURN_SEED_STRIDE = 100_000  # seed of turn k = the question's seed + k * stride


class SpecdecContender:
    """Our engine with one speculative config, over a target loaded once elsewhere."""

    kind = "specdec"

    def __init__(self, engine: Engine, method: str, draft_n: int | str, ignore_eos: bool = False) -> None:
        self.engine = engine
        self.sampling_verify = engine.spec.sampling_verify
        self.name = method + ("-rejection" if self.sampling_verify == "rejection" else "")
        self.draft_n = draft_n if method != "none" else 0
        self.ignore_eos = ignore_eos

    def measure(self, prompt, prompt_ids: list[int], temperature: float, max_tokens: int,
                seed: int) -> Measurement:
        params = SamplingParams(temperature=temperature, top_p=1.0, top_k=0, max_tokens=max_tokens,
                                seed=seed, ignore_eos=self.ignore_eos)
        stats = SpecStats()
        tokens, times, counts, finish = [], [], [], "length"
        synchronize(self.engine.device)
        start = time.perf_counter()
        for step in self.engine.stream(prompt_ids, params, stats):
            times.append(time.perf_counter())
            counts.append(len(step.token_ids))
            tokens.extend(step.token_ids)
            finish = step.finish_reason or finish
        steps = [b - a for a, b in zip(times, times[1:])]
        return Measurement(tokens, stats.prefill_seconds, stats.decode_seconds, steps, counts[1:],
                           finish, stats_to_record(stats))


def bench_engine(target, method: str, draft_n: int | str, max_seq_len: int, draft=None, cost=None,
                 ngram_min: int = 1, ngram_max: int = 4, adaptive: str = "cost", tree_nodes: int = 0,
                 tree_top_k: int = 8, prune: bool = True, head_dir: str | None = None, graft: bool = True,
                 sampling_verify: str = "coupled") -> Engine:
    """One bench config's engine over an already loaded target (and draft model), through the
    engine's own builder: nothing else is loaded here but an EAGLE head, for eagle and hybrid
    (`head_dir`'s, or the one shipped for the default model). cost: the calibrated surface
    every auto-K config starts from (each engine learns on a copy)."""
    draft_path = (str(draft.path) if draft else None) if method == "draft" else head_dir if method in HEAD_METHODS else None
    spec = SpeculativeConfig(method=method, draft_model=draft_path,
                             num_speculative_tokens=draft_n if method != "none" else 4,
                             ngram_min=ngram_min, ngram_max=ngram_max, adaptive=adaptive,
                             tree_nodes=tree_nodes if method in HEAD_METHODS else 0, tree_top_k=tree_top_k,
                             prune=prune, graft=graft, sampling_verify=sampling_verify)
    if method == "draft" and draft is None:
        raise ValueError("--speculative draft needs --draft-model PATH")
    if spec.auto and adaptive == "cost" and method != "none" and cost is None:
        raise ValueError("draft_n 'auto' needs a calibrated cost surface")
    return build_engine(target, spec, max_seq_len, 1, cost, draft)


def load_draft(path: str, target, dtype: str, device: str, max_seq_len: int):
    from specdec.proposers.draft_model import check_tokenizers
    from specdec.proposers.factory import resolve_draft

    draft = resolve_draft(path, target, dtype, device, max_seq_len)
    check_tokenizers(target.tokenizer, draft.tokenizer, target.config.vocab_size, draft.config.vocab_size)
    return draft


def encode(tokenizer, prompt, chat: bool = True) -> list[int]:
    """A prompt's token ids (a question's: its first turn's); `chat` applies to raw prompts only."""
    from specdec.api import encode_prompt

    if prompt.prompt is None:
        return encode_prompt(tokenizer, messages=prompt.as_messages())
    return encode_prompt(tokenizer, prompt.prompt, chat=chat)


def max_prompt_len(tokenizer, prompt, first_ids: list[int], max_tokens: int) -> int:
    """Room for the longest turn's prompt: the last turn after empty answers, plus each earlier
    answer at max_tokens and ANSWER_SLACK_TOKENS."""
    if prompt.num_turns == 1:
        return len(first_ids)
    last = encode(tokenizer, prompt.sample([""] * (prompt.num_turns - 1)))
    return len(last) + (prompt.num_turns - 1) * (max_tokens + ANSWER_SLACK_TOKENS)


def load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def oversubscribed() -> str | None:
    """A warning when other processes compete for the cores torch's threads spin on."""
    load, cores, threads = load_average(), os.cpu_count() or 1, torch.get_num_threads()
    if load is not None and threads > 1 and load > cores:
        return (f"load average {load:g} on {cores} cores: other processes compete for the CPU and "
                f"torch's {threads} spinning threads can run several times slower; use --threads 1 "
                "(or a quiet machine) for measurements")
    return None


def machine_info(args) -> dict:
    import transformers

    info = {"cpu": cpu_model(), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version(),
            "dtype": args.dtype, "device": args.device, "load_average": load_average()}
    if "llamacpp" in args.peer:
        import llama_cpp

        info["llama_cpp"] = llama_cpp.__version__
    if torch.device(args.device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(torch.device(args.device))
    return info


def check_args(args) -> list[str]:
    if args.speculative is None:
        args.speculative = default_methods(args.draft_model, args.model)
    methods = list(dict.fromkeys(["none"] + args.speculative))
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise ValueError(f"--speculative {bad[0]!r} is not one of {', '.join(METHODS)}")
    if "draft" in methods and not args.draft_model:
        raise ValueError("--speculative draft needs --draft-model PATH (or self:bfloat16)")
    if "draft" in methods and args.draft_model and any(m in HEAD_METHODS for m in methods):
        raise ValueError("--draft-model names the draft model of --speculative draft or the EAGLE head of eagle/hybrid, "
                         "not both: bench them in two runs")
    bad_peer = [x for x in args.peer if x not in PEERS]
    if bad_peer:
        raise ValueError(f"--peer {bad_peer[0]!r} is not one of {', '.join(PEERS)} (use --endpoint URL for a server)")
    if "hf" in args.peer and args.quant != "none":
        raise ValueError(f"--peer hf runs transformers on float weights, not --quant {args.quant}: "
                         "drop one of them")
    if "llamacpp" in args.peer:  # fail before loading anything; it runs the GGUF as is, --quant or not
        from specdec.bench.llamacpp import import_llama_cpp

        import_llama_cpp()
    if not args.tree_top_k or any(k < 1 for k in args.tree_top_k):
        raise ValueError(f"--tree-top-k values must be >= 1, got {args.tree_top_k}")
    if any(k != "auto" and k < 1 for k in args.draft_n):
        raise ValueError(f"--draft-n values must be 'auto' or >= 1, got {args.draft_n}")
    for flag, values in (("--draft-prune", args.draft_prune), ("--graft", args.graft)):
        if not values or any(x not in ("on", "off") for x in values):
            raise ValueError(f"{flag} values must be on or off, got {values}")
    if not args.sampling_verify or any(v not in SAMPLING_VERIFY for v in args.sampling_verify):
        raise ValueError(f"--sampling-verify values must be {' or '.join(SAMPLING_VERIFY)}, got {args.sampling_verify}")
    if any(t < 0 for t in args.temperature) or not args.temperature:
        raise ValueError(f"--temperature values must be >= 0, got {args.temperature}")
    for flag, value in (("--repeats", args.repeats), ("--max-tokens", args.max_tokens)):
        if value < 1:
            raise ValueError(f"{flag} must be >= 1, got {value}")
    return methods


def run(args) -> int:
    from specdec.bench import report
    from specdec.bench.workloads import load_workload
    from specdec.engine.planner import load_or_calibrate, measure_surface
    from specdec.models.loader import load_model, resolve_batch_invariant

    methods = check_args(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    prompts = load_workload(args.categories, args.prompts, args.max_prompts_per_category)
    if any(p.category == OVERALL for p in prompts):  # before the run, not after it
        raise ValueError(f"{args.prompts}: a category may not be named {OVERALL!r}: the report's overall column has that name")
    out = Path(args.out or f"results/bench-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    print(f"bench: loading {args.model or 'the default model'} ({args.dtype}, {args.device})", file=sys.stderr)
    warning = oversubscribed() if torch.device(args.device).type == "cpu" else None
    if warning:
        print(f"bench: warning: {warning}", file=sys.stderr)
    trees = any(m in HEAD_METHODS for m in methods) and any(n > 0 for n in args.tree_nodes)
    invariant = resolve_batch_invariant(args.batch_invariant, args.dtype, args.quant, args.device, trees) \
        if trees else args.batch_invariant
    target = load_model(args.model, args.dtype, args.device, args.max_model_len, quant=args.quant,
                        batch_invariant=invariant)
    prompt_ids = [encode(target.tokenizer, p, chat=not args.no_chat) for p in prompts]
    ints = [k for k in args.draft_n if k != "auto"]
    max_k = max(ints + ([SpeculativeConfig().max_speculative_tokens] if "auto" in args.draft_n else []))
    longest = max(max_prompt_len(target.tokenizer, p, ids, args.max_tokens) for p, ids in zip(prompts, prompt_ids))
    max_seq_len = longest + args.max_tokens + max_k + 2
    if max_seq_len > args.max_model_len:
        raise ValueError(f"the longest prompt + --max-tokens needs {max_seq_len} tokens > --max-model-len "
                         f"{args.max_model_len}")
    draft = load_draft(args.draft_model, target, args.dtype, args.device, args.max_model_len) \
        if "draft" in methods else None
    auto = len(methods) > 1 and "auto" in args.draft_n and args.adaptive == "cost"
    largest = SpeculativeConfig(method="eagle", tree_nodes=max(args.tree_nodes)) if trees else SpeculativeConfig()
    cost = load_or_calibrate(target, largest, full=True) if auto else None
    # v(K) for the predicted speedup: measured here, on this machine as loaded right now
    verify_seconds = measure_surface(target.model, 1, max_k + 1, repeats=3).forward_seconds if len(methods) > 1 else None

    verifies = list(dict.fromkeys(args.sampling_verify)) if any(t > 0 for t in args.temperature) else ["coupled"]
    contenders = [SpecdecContender(bench_engine(target, "none", 0, max_seq_len, sampling_verify=v), "none", 0,
                                   args.ignore_eos) for v in verifies]
    for method, verify in itertools.product(methods[1:], verifies):
        shapes = [(n, top_k) for n in (args.tree_nodes if method in HEAD_METHODS else [0])
                  for top_k in (dict.fromkeys(args.tree_top_k) if n else [args.tree_top_k[0]])]
        for (tree_nodes, top_k), k in itertools.product(shapes, args.draft_n):
            for prune, graft in itertools.product(dict.fromkeys(args.draft_prune), dict.fromkeys(args.graft)):
                prunable = k == "auto" and args.adaptive == "cost" and method in HEAD_METHODS
                if (prune == "off" and not prunable) or (graft == "off" and not (method == "hybrid" and tree_nodes)):
                    continue  # the same config as "on": nothing to prune or graft
                name = method + (f"-tree{tree_nodes}" if tree_nodes else "") + \
                    (f"-top{top_k}" if tree_nodes and len(args.tree_top_k) > 1 else "") + \
                    ("-noprune" if prune == "off" else "") + ("-nograft" if graft == "off" else "")
                engine = bench_engine(target, method, k, max_seq_len, draft, cost, args.ngram_min, args.ngram_max,
                                      args.adaptive, tree_nodes, top_k, prune=prune == "on",
                                      head_dir=args.draft_model, graft=graft == "on", sampling_verify=verify)
                contenders.append(SpecdecContender(engine, name, k, args.ignore_eos))
    peers = build_peers(args, target, draft, methods, max_seq_len)
    contenders += peers

    meta = dict(machine_info(args), command=shlex.join(["specdec"] + sys.argv[1:]),
                model=str(target.path), draft_model=str(draft.path) if draft else (
                    args.draft_model if any(m in HEAD_METHODS for m in methods) else None),
                max_tokens=args.max_tokens, repeats=args.repeats, num_prompts=len(prompts),
                ignore_eos=args.ignore_eos, seed=args.seed, out=str(out),
                verify_seconds=verify_seconds,
                categories=list(dict.fromkeys(p.category for p in prompts)),
                started=time.strftime("%Y-%m-%d %H:%M:%S"))

    with open(out / "records.jsonl", "w") as f:
        records = run_rounds(contenders, prompts, prompt_ids, args, f, target.tokenizer)
    for c in peers:
        getattr(c, "close", lambda: None)()
    meta["load_average_end"] = load_average()

    if "vllm" in args.peer:  # vLLM's speculative greedy runs against its own plain run
        from specdec.bench.vllm_peer import own_plain_mismatches

        meta["vllm_own_plain_mismatches"] = own_plain_mismatches(records)
    summary = summarize(records, meta)
    report.write_all(out, records, summary)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if not args.json:
        print(report.text_table(summary))
        print(f"results: {out}/ (report.md, summary.csv, records.jsonl, plots)")
    print(json.dumps(summary))
    return 0


def run_rounds(contenders: list, prompts: list, prompt_ids: list[list[int]], args, records_file,
               tokenizer=None) -> list[dict]:
    """Warm-up (excluded), then per repeat, per prompt, per temperature, per turn every contender
    back to back, the order rotating by one from prompt to prompt. prompt_ids: each prompt's
    first turn; `tokenizer` decodes each contender's answers and encodes its later turns (needed
    only for questions of several turns). Records are written as they come."""
    from tqdm import tqdm

    if tokenizer is None and any(p.num_turns > 1 for p in prompts):
        raise ValueError("questions of several turns need the tokenizer to prompt later turns")

    temps = args.temperature

    def runs_at(c, t: float) -> bool:  # greedy is the same under either sampling verifier
        return not (t == 0 and c.kind == "specdec" and c.sampling_verify == "rejection")

    total = (args.repeats * sum(p.num_turns for p in prompts) + 1) * sum(runs_at(c, t) for t in temps for c in contenders)
    bar = tqdm(total=total, desc="bench", file=sys.stderr, unit="run", dynamic_ncols=True)
    bar.set_postfix_str("warm-up")
    for t in temps:  # one excluded warm-up generation per config
        for c in contenders:
            if not runs_at(c, t):
                continue
            c.measure(prompts[0].sample([]), prompt_ids[0], t, args.max_tokens, args.seed)
            bar.update()
    records = []
    for repeat in range(args.repeats):
        for i, (prompt, ids) in enumerate(zip(prompts, prompt_ids)):
            seed = args.seed + 1000 * repeat + i
            shift = (repeat * len(prompts) + i) % len(contenders)
            order = contenders[shift:] + contenders[:shift]
            for t in temps:
                answers: dict[int, list[str]] = {id(c): [] for c in order}  # by contender identity
                for turn in range(prompt.num_turns):
                    for c in (c for c in order if runs_at(c, t)):
                        sample = prompt.sample(answers[id(c)])
                        sample_ids = ids if turn == 0 else encode(tokenizer, sample)
                        turn_seed = seed + turn * TURN_SEED_STRIDE
                        bar.set_postfix_str(f"{sample.id} {contender_name(c.name, c.draft_n, t)}")
                        m = c.measure(sample, sample_ids, t, args.max_tokens, turn_seed)
                        if turn + 1 < prompt.num_turns:
                            answers[id(c)].append(tokenizer.decode(m.token_ids, skip_special_tokens=True))
                        record = make_record(repeat, sample, c, t, turn_seed, len(sample_ids), m, turn + 1)
                        records_file.write(json.dumps(record) + "\n")
                        records_file.flush()
                        records.append(record)
                        bar.update()
    bar.close()
    return records


def build_peers(args, target, draft, methods: list[str], max_seq_len: int) -> list:
    from specdec.bench.peers import EndpointPeer, hf_peers

    peers = hf_peers(args.peer, target, draft, methods, args.draft_n, args.ngram_max)
    for p in peers:
        p.ignore_eos = args.ignore_eos
    if "llamacpp" in args.peer:
        from specdec.bench.llamacpp import llamacpp_peers

        peers += llamacpp_peers(args.peer, target, methods, args.draft_n, args.ngram_max, max_seq_len,
                                args.ignore_eos)
    if "vllm" in args.peer:  # each a worker process in .venv-vllm (scripts/setup_peers.sh)
        from specdec.bench.vllm_peer import vllm_peers

        peers += vllm_peers(args.peer, target, methods, args.draft_n, args.ngram_max, max_seq_len,
                            head_dir=args.draft_model,
                            dtype=args.dtype if args.dtype in ("float32", "bfloat16") else "float32",
                            threads=torch.get_num_threads(), ignore_eos=args.ignore_eos)
    if args.endpoint:
        peers.append(EndpointPeer(args.endpoint, args.endpoint_model, target.tokenizer, args.ignore_eos))
    return peers


def make_record(repeat: int, prompt, contender, temperature: float, seed: int, num_prompt_tokens: int,
                m: Measurement, turn: int = 1) -> dict:
    return {
        "repeat": repeat, "prompt_id": prompt.id, "turn": turn, "category": prompt.category,
        "contender": contender_name(contender.name, contender.draft_n, temperature),
        "kind": contender.kind, "speculative": contender.name, "draft_n": contender.draft_n,
        "sampling_verify": contender.sampling_verify if contender.kind == "specdec" else None,
        "temperature": temperature, "seed": seed, "num_prompt_tokens": num_prompt_tokens,
        "num_generated_tokens": m.num_generated_tokens, "finish_reason": m.finish_reason,
        "prefill_seconds": m.prefill_seconds, "decode_seconds": m.decode_seconds,
        "tokens_per_second": m.tokens_per_second, "token_ids": m.token_ids,
        "step_seconds": m.step_seconds, "step_tokens": m.step_tokens, "spec": m.spec, "error": m.error,
    }
