"""The `specdec` command: thin argument parsing over the library, in llama.cpp's spirit.

    specdec generate -p "Count from 1 to 10." -n 60 --temp 0 --json
    specdec generate -p "..." --speculative ngram --draft-n auto --draft-debug
    specdec theory | memory | bench | doctor | serve | train-draft  (see --help of each)
"""

from __future__ import annotations

import argparse
import json
import sys

SUBCOMMAND_MODULES = (
    "specdec.bench.theory",
    "specdec.bench.memory",
    "specdec.bench.runner",
    "specdec.bench.doctor",
    "specdec.server.app",
    "specdec.train.cli",
)


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-m", "--model", default=None, help="GGUF file or HF model directory (default: embedded SmolLM2-135M-Instruct)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--quant", default="none", choices=["none", "int8", "int4"],
                   help="weight-only quantization of a native model (int8 per channel, int4 groups of 32)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("-t", "--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument("--max-model-len", type=int, default=4096, help="KV cache capacity in tokens")
    add_batch_invariant_arg(p)


def add_batch_invariant_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch-invariant", default="auto", choices=["auto", "on", "off"],
                   help="verify passes score each position bit for bit as decode steps do, so greedy "
                   "speculative output equals plain output in every dtype (auto: on for CPU bfloat16 "
                   "and quantized models, off for float32, where it costs ~16%%)")


def add_spec_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--speculative", default="auto", choices=["auto", "none", "draft", "ngram", "eagle", "hybrid"],
                   help="the proposer; auto (default): draft with --draft-model, else hybrid (n-gram or the shipped "
                   "EAGLE head, chosen per step; with --tree-nodes, EAGLE trees with the n-gram continuation grafted "
                   "on) on the default model, the fastest measured there (README, Figures), and on other models "
                   "eagle with --tree-nodes, else ngram; all with the cost-aware K")
    p.add_argument("--draft-model", default=None, help="draft model path, self:DTYPE for a copy of the target, or self:int8 / self:int4 for a quantized copy")
    p.add_argument("--draft-n", default="auto", help="draft length K, or 'auto' (cost-aware adaptive K)")
    p.add_argument("--adaptive", default="cost", choices=["cost", "heuristic"], help="auto-K policy")
    p.add_argument("--ngram-min", type=int, default=1)
    p.add_argument("--ngram-max", type=int, default=4)
    p.add_argument("--tree-nodes", type=int, default=None,
                   help="eagle, hybrid: draft EAGLE-2 trees of N nodes (0 = chains); hybrid grafts the n-gram "
                   f"continuation onto them (default: {SAMPLING_TREE_NODES} when sampling on a CPU, where trees "
                   "stay batch-invariant, else 0)")
    p.add_argument("--tree-top-k", type=int, default=8, help="trees: children per expanded node")
    p.add_argument("--no-draft-prune", dest="draft_prune", action="store_false",
                   help="auto K: verify every drafted EAGLE token (default: drop the tail the draft's own "
                   "confidence says will not pay for its verify cost)")
    p.add_argument("--no-graft", dest="graft", action="store_false",
                   help="hybrid trees: draft the EAGLE tree alone (default: graft the n-gram continuation onto it)")


def add_generate(sub) -> None:
    p = sub.add_parser("generate", help="generate text from a prompt (stdin if no -p)")
    add_model_args(p)
    add_spec_args(p)
    p.add_argument("-p", "--prompt", default=None)
    p.add_argument("-n", "--max-tokens", type=int, default=256)
    p.add_argument("--temp", type=float, default=0.8)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    p.add_argument("--no-chat", action="store_true", help="do not apply the chat template")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.add_argument("--draft-debug", action="store_true", help="one line per verify step on stderr")
    p.set_defaults(func=run_generate)


# The default tree size when sampling with a head (README, Figures: at temperature 0.7 the
# hybrid's 16-node trees ran 1.61x / 1.47x plain decoding against its chains' 1.40x / 1.26x,
# float32 / bfloat16, Intel Xeon with AMX, and EAGLE's 1.20-1.39x against 1.06-1.26x; greedy,
# chains were level or ahead, so greedy keeps chains).
SAMPLING_TREE_NODES = 16


def default_tree_nodes(method: str, temperature: float, dtype: str, device: str) -> int:
    """--tree-nodes when not given: trees for eagle and hybrid when sampling, where the C
    attention kernel keeps tree verify passes batch-invariant (CPU float32 / bfloat16); else
    chains."""
    from specdec.models.loader import TORCH_DTYPES
    from specdec.models.native import native_attention_supported

    if method not in ("eagle", "hybrid") or temperature == 0:
        return 0
    return SAMPLING_TREE_NODES if native_attention_supported(TORCH_DTYPES[dtype], device) else 0


def resolve_speculative(choice: str, draft_model: str | None, tree_nodes: int = 0, model: str | None = None) -> str:
    """--speculative auto: a draft model if one is named; else on the default model the hybrid
    (n-gram + the shipped EAGLE head; with --tree-nodes, its trees with the n-gram graft); else
    EAGLE if trees are asked for (it needs a head: --draft-model), n-gram otherwise."""
    if choice != "auto":
        return choice
    if draft_model and tree_nodes:
        raise ValueError("--speculative auto with both --draft-model and --tree-nodes: name the method")
    if draft_model:
        return "draft"
    from specdec.models.default import is_default_model

    if is_default_model(model):
        return "hybrid"
    return "eagle" if tree_nodes else "ngram"


def run_generate(args: argparse.Namespace) -> int:
    from specdec.api import LLM, encode_prompt
    from specdec.config import SamplingParams

    prompt = args.prompt if args.prompt is not None else sys.stdin.read()
    params = SamplingParams(
        temperature=args.temp,
        top_p=args.top_p,
        top_k=args.top_k,
        max_tokens=args.max_tokens,
        seed=args.seed,
        stop=args.stop,
    )
    if not prompt.strip():
        raise ValueError("the prompt is empty (pass -p TEXT or pipe text on stdin)")
    method = resolve_speculative(args.speculative, args.draft_model, args.tree_nodes or 0, args.model)
    tree_nodes = args.tree_nodes
    if tree_nodes is None:
        tree_nodes = default_tree_nodes(method, args.temp, args.dtype, args.device)
    llm = LLM(
        model=args.model,
        speculative_model=args.draft_model,
        speculative_method=method,
        num_speculative_tokens=args.draft_n,
        dtype=args.dtype,
        device=args.device,
        max_model_len=args.max_model_len,
        threads=args.threads,
        quant=args.quant,
        batch_invariant=args.batch_invariant,
        ngram_min=args.ngram_min,
        ngram_max=args.ngram_max,
        adaptive=args.adaptive,
        tree_nodes=tree_nodes,
        tree_top_k=args.tree_top_k,
        draft_prune=args.draft_prune,
        graft=args.graft,
    )
    prompt_ids = encode_prompt(llm.tokenizer, prompt, chat=not args.no_chat)
    text, tokens = [], []
    for event in llm.stream(prompt_ids, params):
        step = event.step
        tokens.extend(step.token_ids)
        text.append(event.text)
        if args.draft_debug and step.draft_ids:
            print(
                f"draft{f' ({step.draft_class})' if step.draft_class else ''}: "
                f"accepted {step.num_accepted}/{len(step.draft_ids)} tokens"
                + (f" ({step.num_pruned} more drafted, pruned unverified)" if step.num_pruned else ""),
                file=sys.stderr,
            )
        elif args.draft_debug and step.fates == ["plain"] and llm.engine.proposer is not None:
            pruned = f", {step.num_pruned} drafted tokens pruned unverified" if step.num_pruned else ""
            print(f"draft: K=0 (plain decode step{pruned})", file=sys.stderr)
        if not args.json:
            print(event.text, end="", flush=True)
    stats = llm.last_stats
    if not args.json:
        print()
    if args.draft_debug:
        print(
            f"draft summary: acceptance rate {stats.acceptance_rate:.3f}, mean acceptance length "
            f"{stats.mean_acceptance_length:.2f}, {stats.num_drafts} drafts, "
            f"{stats.num_plain_steps} plain steps, K histogram {dict(sorted(stats.k_histogram.items()))}, "
            f"{stats.num_pruned_tokens} drafted tokens pruned unverified",
            file=sys.stderr,
        )
        for name, c in stats.class_summary().items():
            print(
                f"  {name}: {c['num_drafts']} drafts ({c['share']:.0%}), acceptance rate "
                f"{c['acceptance_rate']:.3f}, mean acceptance length {c['mean_acceptance_length']:.2f}",
                file=sys.stderr,
            )
    if args.json:
        print(
            json.dumps(
                {
                    "text": "".join(text),
                    "num_prompt_tokens": len(prompt_ids),
                    "num_generated_tokens": len(tokens),
                    "prefill_seconds": round(stats.prefill_seconds, 4),
                    "decode_seconds": round(stats.decode_seconds, 4),
                    "tokens_per_second": round(stats.tokens_per_second, 3),
                    "load_seconds": round(llm.target.load_seconds, 3),
                    "speculative": method,
                    "tree_nodes": tree_nodes,
                    "spec": stats.to_dict(),
                }
            )
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(prog="specdec", description="Lossless speculative decoding.")
    sub = parser.add_subparsers(dest="command", required=True)
    add_generate(sub)
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:  # a missing dependency inside an existing module is a real error
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except (ValueError, FileNotFoundError) as e:
        print(f"specdec {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
