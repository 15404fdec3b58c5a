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


def add_generate(sub) -> None:
    from specdec.options import add_model_args, add_spec_args

    p = sub.add_parser("generate", help="generate text from a prompt (stdin if no -p)")
    add_model_args(p)
    add_spec_args(p)
    p.add_argument("-p", "--prompt", default=None, help="the prompt (default: read from stdin)")
    p.add_argument("-n", "--max-tokens", type=int, default=256, help="tokens to generate at most (default: %(default)s)")
    p.add_argument("--temp", type=float, default=0.8, help="sampling temperature, 0 = greedy (default: %(default)s)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default: %(default)s)")
    p.add_argument("--top-k", type=int, default=0, help="sample from the k most likely tokens, 0 = all (default: %(default)s)")
    p.add_argument("--seed", type=int, default=None, help="sampling seed (default: random)")
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    p.add_argument("--no-chat", action="store_true", help="do not apply the chat template")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.add_argument("--draft-debug", action="store_true", help="one line per verify step on stderr")
    p.set_defaults(func=run_generate)


def run_generate(args: argparse.Namespace) -> int:
    from specdec.api import encode_prompt, load_engine, stream_text
    from specdec.config import SamplingParams
    from specdec.engine.stats import SpecStats
    from specdec.options import configs_from_args

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
    engine_config, spec = configs_from_args(args, temperature=args.temp)
    target, engine = load_engine(engine_config, spec)
    prompt_ids = encode_prompt(target.tokenizer, prompt, chat=not args.no_chat)
    text, tokens, stats = [], [], SpecStats()
    for event in stream_text(engine, target.tokenizer, prompt_ids, params, stats):
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
        elif args.draft_debug and step.fates == ["plain"] and engine.proposer is not None:
            pruned = f", {step.num_pruned} drafted tokens pruned unverified" if step.num_pruned else ""
            print(f"draft: K=0 (plain decode step{pruned})", file=sys.stderr)
        if not args.json:
            print(event.text, end="", flush=True)
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
                    "load_seconds": round(target.load_seconds, 3),
                    "speculative": spec.method,
                    "tree_nodes": spec.tree_nodes,
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
