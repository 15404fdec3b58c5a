"""`specdec bench`'s flags, parsed without importing torch (so `specdec bench --help` is quick);
runner.py runs what they name."""

from __future__ import annotations

import argparse

METHODS = ("none", "ngram", "draft", "eagle", "hybrid")
PEERS = ("hf", "llamacpp", "vllm")


def _list(kind):
    def parse(text: str):
        items = [x.strip() for x in text.split(",") if x.strip()]
        try:
            return [kind(x) for x in items]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}") from None
    return parse


def _draft_n(text: str):
    return "auto" if text == "auto" else int(text)


class _Extend(argparse.Action):
    """Repeatable list flags: `--peer hf --peer x` and `--peer hf,x` both give [hf, x]."""

    def __call__(self, parser, namespace, values, option_string=None):
        old = getattr(namespace, self.dest, None) or []
        setattr(namespace, self.dest, old + [v for v in values if v not in old])


def default_methods(draft_model: str | None, model: str | None) -> list[str]:
    """--speculative when not given: the plain baseline and generate's default proposer
    (`options.resolve_speculative`)."""
    from specdec.options import resolve_speculative

    return ["none", resolve_speculative("auto", draft_model, 0, model)]


def _run(args) -> int:
    from specdec.bench.runner import run

    return run(args)


def register(subparsers) -> argparse.ArgumentParser:
    from specdec.options import add_model_args

    p = subparsers.add_parser(
        "bench", help="benchmark speculative configs against plain decoding (interleaved)",
        description="Run every speculative config and plain decoding back to back on each prompt; "
        "report tokens/s, speedup, acceptance, latency and greedy equality.")
    add_model_args(p)
    p.add_argument("--speculative", type=_list(str), default=None, metavar="LIST",
                   help=f"comma list of {','.join(METHODS)}; plain 'none' always runs as the baseline "
                   "(default: none plus generate's default proposer: hybrid on the default model, draft "
                   "with --draft-model, ngram otherwise)")
    p.add_argument("--draft-model", default=None,
                   help="draft model path, or self:DTYPE, for draft; an EAGLE head directory for eagle and hybrid "
                   "(default: the head shipped for the default model)")
    p.add_argument("--draft-n", type=_list(_draft_n), default=["auto", 2, 4, 8], metavar="LIST",
                   help="comma list of K's and 'auto' (default: auto,2,4,8)")
    p.add_argument("--adaptive", default="cost", choices=["cost", "heuristic"],
                   help="auto-K policy: expected tokens/s, or transformers' +2/-1 (default: %(default)s)")
    p.add_argument("--ngram-min", type=int, default=1, help="shortest suffix an n-gram draft matches (default: %(default)s)")
    p.add_argument("--ngram-max", type=int, default=4, help="longest suffix an n-gram draft matches (default: %(default)s)")
    p.add_argument("--tree-nodes", type=_list(int), default=[0], metavar="LIST",
                   help="eagle, hybrid: comma list of tree sizes, 0 = chain drafts (default: 0); each size is its own "
                   "config, eagle-treeN or hybrid-treeN; trees are batch-invariant only with the C attention kernel "
                   "(CPU bfloat16/float32), elsewhere they turn --batch-invariant auto off")
    p.add_argument("--tree-top-k", type=_list(int), default=[8], metavar="LIST",
                   help="trees: comma list of children per expanded node (default: 8); with several, each is its "
                   "own config, ...-treeN-topK")
    p.add_argument("--draft-prune", type=_list(str), default=["on"], metavar="LIST",
                   help="comma list of on,off: auto K verifies only the EAGLE draft tokens whose own confidence "
                   "pays for their verify cost (default: on); 'off' adds eagle/hybrid auto configs named ...-noprune")
    p.add_argument("--graft", type=_list(str), default=["on"], metavar="LIST",
                   help="comma list of on,off: hybrid trees graft the n-gram continuation onto the EAGLE tree "
                   "(default: on); 'off' adds hybrid-treeN configs named ...-nograft")
    p.add_argument("--temperature", "--temp", type=_list(float), default=[0.0, 0.7], metavar="LIST",
                   help="comma list of sampling temperatures; greedy equality is checked at 0 (default: 0,0.7)")
    p.add_argument("--sampling-verify", type=_list(str), default=["coupled"], metavar="LIST",
                   help="comma list of coupled,rejection: how sampled drafts are verified (default: coupled); "
                   "'rejection' adds configs named ...-rejection, plain included, at temperatures > 0")
    p.add_argument("-n", "--max-tokens", type=int, default=128, help="tokens generated per run at most (default: %(default)s)")
    p.add_argument("--ignore-eos", action="store_true", help="always generate --max-tokens tokens")
    p.add_argument("--repeats", type=int, default=3, help="runs of every config on every prompt (default: %(default)s)")
    p.add_argument("--categories", type=_list(str), default=None, metavar="LIST",
                   help="workload names: categories, spec_bench (its six), all, or the held-out sets heldout and "
                   "spec_bench_heldout (Spec-Bench-form questions); with --prompts, the file's categories to run "
                   "(default: every built-in category, no held-out set)")
    p.add_argument("--prompts", default=None, metavar="FILE.jsonl",
                   help="a prompt file instead of built-ins: lines of {\"prompt\"}, {\"messages\"} or MT-bench/Spec-Bench "
                   "questions {\"question_id\", \"category\", \"turns\"}, whose later turns follow each config's own "
                   "answers (default: none)")
    p.add_argument("--max-prompts-per-category", type=int, default=None, metavar="N",
                   help="the first N prompts (or questions) of each category (default: all)")
    p.add_argument("--no-chat", action="store_true",
                   help="raw prompts without the chat template (messages and questions always use it)")
    p.add_argument("--peer", type=_list(str), action=_Extend, default=[], metavar="LIST",
                   help="hf, llamacpp, vllm (repeatable or a comma list; llamacpp and vllm run from their own "
                   "venvs, set up by scripts/setup_peers.sh; default: none)")
    p.add_argument("--endpoint", default=None, metavar="URL", help="an OpenAI-compatible server to compare (default: none)")
    p.add_argument("--endpoint-model", default=None, metavar="NAME", help="model name sent to --endpoint (default: \"default\")")
    p.add_argument("--out", default=None, metavar="DIR", help="results directory (default: results/bench-<time>)")
    p.add_argument("--json", action="store_true", help="print only the final JSON line on stdout")
    p.add_argument("--seed", type=int, default=0, help="sampling seed base, per prompt and repeat (default: %(default)s)")
    p.set_defaults(func=_run)
    return p
