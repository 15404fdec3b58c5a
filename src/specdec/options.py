"""The one options path: flags (or keyword arguments) -> `EngineConfig` and `SpeculativeConfig`.

`generate`, `serve`, `bench` and `doctor` share these flags; `serve` also takes SGLang's
spellings as aliases (--speculative-algorithm, --speculative-draft-model-path,
--speculative-num-draft-tokens). `make_configs` turns the values, from argparse or from
`LLM`'s keyword arguments, into the two config dataclasses, resolving `--speculative auto`
and the default tree size in one place.
"""

from __future__ import annotations

import argparse

from specdec.config import SAMPLING_VERIFY, EngineConfig, SpeculativeConfig

SPECULATIVE_CHOICES = ("auto", "none", "draft", "ngram", "eagle", "hybrid")
# The tree size drafted by default when sampling with an EAGLE head (docs/benchmarks.md has
# the chain-against-tree figures behind it); greedy decoding keeps chains.
SAMPLING_TREE_NODES = 16


def add_model_args(p: argparse.ArgumentParser, max_model_len: int = 4096, batch_invariant: bool = True) -> None:
    """The target's flags; batch_invariant adds --batch-invariant (not for serve: a ragged batch
    of several rows is not batch-invariant)."""
    p.add_argument("-m", "--model", default=None, help="GGUF file or HF model directory (default: embedded SmolLM2-135M-Instruct)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"], help="compute dtype (default: %(default)s)")
    p.add_argument("--quant", default="none", choices=["none", "int8", "int4"],
                   help="weight-only quantization of a native model (int8 per channel, int4 groups of 32; default: %(default)s)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default: %(default)s)")
    p.add_argument("-t", "--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument("--max-model-len", type=int, default=max_model_len, help="KV cache capacity in tokens per request (default: %(default)s)")
    if batch_invariant:
        add_batch_invariant_arg(p)


def add_batch_invariant_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch-invariant", default="auto", choices=["auto", "on", "off"],
                   help="verify passes score each position bit for bit as decode steps do, so greedy "
                   "speculative output equals plain output bit for bit (auto: on for CPU bfloat16, quantized models, "
                   "and float32 where its linears run through the engine's C kernel (AVX-512); off otherwise, where "
                   "plain and verify passes matched in every run measured but are not guaranteed to; on: exact at a cost in speed; default: %(default)s)")


def add_spec_args(p: argparse.ArgumentParser, default: str = "auto", serve_aliases: bool = False) -> None:
    """The speculative flags; serve_aliases adds SGLang's spellings of the first three."""
    def names(flag: str, alias: str) -> list[str]:
        return [flag, alias] if serve_aliases else [flag]

    p.add_argument(*names("--speculative", "--speculative-algorithm"), dest="speculative", default=default,
                   choices=SPECULATIVE_CHOICES,
                   help="the proposer; auto: draft with --draft-model, else hybrid (n-gram or the shipped EAGLE head, "
                   "chosen per step) on the default model, eagle with --tree-nodes, ngram otherwise; all with the "
                   "cost-aware K (default: %(default)s)")
    p.add_argument(*names("--draft-model", "--speculative-draft-model-path"), dest="draft_model", default=None,
                   help="draft model path, self:DTYPE for a copy of the target, self:int8 / self:int4 for a quantized "
                   "copy; for eagle and hybrid an EAGLE head directory (default: the head shipped for the default model)")
    p.add_argument(*names("--draft-n", "--speculative-num-draft-tokens"), dest="draft_n", default="auto",
                   help="draft length K, or 'auto' (chosen per step from the cost surface and acceptance; default: %(default)s)")
    p.add_argument("--adaptive", default="cost", choices=["cost", "heuristic"], help="auto-K policy: expected tokens/s from the cost surface, or transformers' +2/-1 (default: %(default)s)")
    p.add_argument("--ngram-min", type=int, default=1, help="shortest suffix an n-gram draft matches (default: %(default)s)")
    p.add_argument("--ngram-max", type=int, default=4, help="longest suffix an n-gram draft matches (default: %(default)s)")
    p.add_argument("--tree-nodes", type=int, default=None,
                   help="eagle, hybrid: draft EAGLE-2 trees of N nodes (0 = chains); hybrid grafts the n-gram "
                   f"continuation onto them (default: {SAMPLING_TREE_NODES} when sampling on a CPU, where trees "
                   "stay batch-invariant, else 0)")
    p.add_argument("--tree-top-k", type=int, default=8, help="trees: children per expanded node (default: %(default)s)")
    p.add_argument("--no-draft-prune", dest="draft_prune", action="store_false",
                   help="auto K: verify every drafted EAGLE token (default: drop the tail the draft's own "
                   "confidence says will not pay for its verify cost)")
    p.add_argument("--no-graft", dest="graft", action="store_false",
                   help="hybrid trees: draft the EAGLE tree alone (default: graft the n-gram continuation onto it)")
    p.add_argument("--sampling-verify", default="coupled", choices=list(SAMPLING_VERIFY),
                   help="sampling at temperature > 0: coupled draws each token by Gumbel-max with noise keyed by "
                   "(seed, position), so a seed gives plain decoding's sample whatever the proposer, K or batch; "
                   "rejection is Leviathan et al.'s rejection sampling, equal to plain in distribution only "
                   "(default: %(default)s)")


def default_tree_nodes(method: str, temperature: float | None, dtype: str, device: str) -> int:
    """--tree-nodes when not given: trees for eagle and hybrid when sampling, where the C
    attention kernel keeps tree verify passes batch-invariant (CPU float32 / bfloat16); else
    chains. temperature None (a server: each request has its own) counts as sampling."""
    from specdec.models.loader import TORCH_DTYPES
    from specdec.models.native import native_attention_supported

    if method not in ("eagle", "hybrid") or temperature == 0:
        return 0
    return SAMPLING_TREE_NODES if native_attention_supported(TORCH_DTYPES[dtype], device) else 0


def resolve_speculative(choice: str, draft_model: str | None, tree_nodes: int = 0, model: str | None = None) -> str:
    """--speculative auto: a draft model if one is named; else on the default model the hybrid
    (n-gram + the shipped EAGLE head); else EAGLE if trees are asked for (it needs a head:
    --draft-model), n-gram otherwise."""
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


def make_configs(
    *,
    model: str | None = None,
    dtype: str = "float32",
    device: str = "cpu",
    threads: int | None = None,
    max_model_len: int = 4096,
    quant: str = "none",
    batch_invariant: str | bool = "auto",
    max_batch_size: int = 1,
    speculative: str = "auto",
    draft_model: str | None = None,
    draft_n: int | str = "auto",
    adaptive: str = "cost",
    ngram_min: int = 1,
    ngram_max: int = 4,
    tree_nodes: int | None = None,
    tree_top_k: int = 8,
    draft_prune: bool = True,
    graft: bool = True,
    sampling_verify: str = "coupled",
    temperature: float | None = None,
) -> tuple[EngineConfig, SpeculativeConfig]:
    """The engine and speculative configs these settings name. tree_nodes None takes the
    default for the method and temperature (`default_tree_nodes`)."""
    from specdec.models.loader import resolve_batch_invariant

    method = resolve_speculative(speculative, draft_model, tree_nodes or 0, model)
    if tree_nodes is None:
        tree_nodes = default_tree_nodes(method, temperature, dtype, device)
    spec = SpeculativeConfig(
        method=method,
        draft_model=draft_model,
        num_speculative_tokens=draft_n,
        ngram_min=ngram_min,
        ngram_max=ngram_max,
        adaptive=adaptive,
        tree_nodes=tree_nodes,
        tree_top_k=tree_top_k,
        prune=draft_prune,
        graft=graft,
        sampling_verify=sampling_verify,
    )
    if tree_nodes > 0:  # trees are batch-invariant only with the C kernel: else "on" raises, "auto" is off
        batch_invariant = resolve_batch_invariant(batch_invariant, dtype, quant, device, trees=True)
    engine = EngineConfig(model=model, dtype=dtype, device=device, threads=threads, max_seq_len=max_model_len,
                          quant=quant, batch_invariant=batch_invariant, max_batch_size=max_batch_size)
    return engine, spec


def configs_from_args(args: argparse.Namespace, temperature: float | None = None, **overrides) -> tuple[EngineConfig, SpeculativeConfig]:
    """make_configs over the parsed flags that it knows (overrides win)."""
    names = make_configs.__kwdefaults__
    values = {name: getattr(args, name) for name in names if hasattr(args, name)}
    return make_configs(**(values | overrides), temperature=temperature)
