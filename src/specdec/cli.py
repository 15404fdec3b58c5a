"""The `specdec` command: thin argument parsing over the library, in llama.cpp's spirit.

    specdec generate -p "Count from 1 to 10." -n 60 --temp 0 --json
    specdec generate -p "..." --speculative ngram --draft-n auto --draft-debug
    specdec theory | memory | bench | doctor | serve | train-draft  (see --help of each)
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

# Every subcommand: the module whose `register(subparsers)` adds its parser, and its one-line
# help for `specdec --help`. Only the module of the subcommand run is imported, so `--help`
# loads no torch (tests/test_cli_api.py checks the help lines against the modules').
SUBCOMMANDS = {
    "generate": ("specdec.cli", "generate text from a prompt (stdin if no -p)"),
    "theory": ("specdec.bench.theory", "expected tokens/step and speedup: paper vs lab formulas, simulation, best K"),
    "memory": ("specdec.bench.memory", "memory for target/draft weights and KV cache"),
    "bench": ("specdec.bench.flags", "benchmark speculative configs against plain decoding (interleaved)"),
    "doctor": ("specdec.bench.doctor", "check a target/draft pair: compatibility, memory, losslessness, speed"),
    "serve": ("specdec.server.app", "OpenAI-compatible HTTP server (continuous batching, speculation)"),
    "train-draft": ("specdec.train.cli", "train an EAGLE draft head on the target's own outputs"),
    "export-draft": ("specdec.train.cli", "write a draft head in vLLM's or SGLang's EAGLE/EAGLE-3 layout"),
}


def register(sub) -> None:
    from specdec.options import add_model_args, add_spec_args

    p = sub.add_parser("generate", help=SUBCOMMANDS["generate"][1],
                       description="Generate text from a prompt, streaming it to stdout as it is decoded; "
                       "speculative decoding leaves the output unchanged (lossless). Progress goes to stderr.")
    add_model_args(p)
    add_spec_args(p)
    p.add_argument("-p", "--prompt", default=None,
                   help="the prompt (default: read from stdin, less one trailing newline)")
    p.add_argument("-n", "--max-tokens", type=int, default=256, help="tokens to generate at most (default: %(default)s)")
    p.add_argument("--temp", type=float, default=0.8, help="sampling temperature, 0 = greedy (default: %(default)s)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default: %(default)s)")
    p.add_argument("--top-k", type=int, default=0, help="sample from the k most likely tokens, 0 = all (default: %(default)s)")
    p.add_argument("--seed", type=int, default=None, help="sampling seed (default: random)")
    p.add_argument("--stop", action="append", default=[], help="stop string, repeatable (default: none)")
    p.add_argument("--no-chat", action="store_true", help="do not apply the chat template")
    p.add_argument("--json", action="store_true",
                   help="after the streamed text, print one JSON object as the last line (text, token counts, "
                   "timings, tokens/s, the proposer and its statistics, quant and dtype): `| tail -n 1` keeps it")
    p.add_argument("--draft-debug", action="store_true", help="one line per verify step on stderr")
    p.set_defaults(func=run_generate)


def run_generate(args: argparse.Namespace) -> int:
    from specdec.api import encode_prompt, load_engine, stream_text
    from specdec.config import SamplingParams
    from specdec.engine.stats import SpecStats
    from specdec.options import configs_from_args

    prompt = args.prompt if args.prompt is not None else stdin_prompt(sys.stdin.read())
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
    status(f"loading {engine_config.model or 'the default model'} ({engine_config.dtype}"
           f"{'' if engine_config.quant == 'none' else ', ' + engine_config.quant}, speculative {spec.method})"
           f"{first_run_note()}")
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
        print(event.text, end="", flush=True)
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
                    "quant": target.quant,
                    "dtype": str(target.model.dtype).removeprefix("torch."),
                    "tree_nodes": spec.tree_nodes,
                    "spec": stats.to_dict(),
                }
            )
        )
    return 0


def stdin_prompt(text: str) -> str:
    """A prompt read from stdin, less the one trailing newline `echo` adds (as -p has it)."""
    return text[:-2] if text.endswith("\r\n") else text.removesuffix("\n")


def status(message: str) -> None:
    print(f"specdec: {message}", file=sys.stderr, flush=True)


def first_run_note() -> str:
    """A note for a first run on this cache directory, which builds and probes the kernels."""
    from specdec.models.gguf_file import cache_dir

    kernels = cache_dir() / "kernels"
    return "" if kernels.is_dir() else f"; first run: building and probing the kernels into {kernels}"


def build_parser(commands: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser; commands: the subcommands whose modules are imported for their flags (None:
    all). The others are listed by name and help only."""
    parser = argparse.ArgumentParser(prog="specdec", description="Lossless speculative decoding.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{" + ",".join(SUBCOMMANDS) + "}")
    modules = {module for name, (module, _) in SUBCOMMANDS.items() if commands is None or name in commands}
    registered = set()
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        if module_name not in modules:
            sub.add_parser(name, help=help_text, add_help=False)
            continue
        if module_name in registered:  # one module may register several subcommands
            continue
        registered.add(module_name)
        try:
            module = sys.modules[__name__] if module_name == __name__ else importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name != module_name:  # a missing dependency inside an existing module is a real error
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser([command] if command in SUBCOMMANDS else []).parse_args(argv)
    try:
        return args.func(args) or 0
    except (ValueError, FileNotFoundError) as e:
        print(f"specdec {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
