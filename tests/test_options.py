"""One options path: generate, serve, bench and doctor share one flag dialect, and the flags
(or LLM's keyword arguments) become the engine and speculative configs in one function."""

import pytest

from specdec.cli import build_parser
from specdec.config import EngineConfig, SpeculativeConfig
from specdec.options import configs_from_args, make_configs

FLAGS = ["--speculative", "ngram", "--draft-n", "3", "--ngram-min", "2", "--ngram-max", "5", "--adaptive", "heuristic",
         "--tree-top-k", "4", "--no-draft-prune", "--no-graft", "--dtype", "float32", "--max-model-len", "512"]


def parse(*argv):
    return build_parser().parse_args(list(argv))


def test_generate_and_serve_take_the_same_flags_to_the_same_configs():
    generate = configs_from_args(parse("generate", "-p", "x", *FLAGS), temperature=0.0)
    serve = configs_from_args(parse("serve", *FLAGS, "--max-batch-size", "1"), temperature=0.0)
    assert generate == serve
    engine, spec = generate
    assert spec == SpeculativeConfig(method="ngram", num_speculative_tokens=3, ngram_min=2, ngram_max=5,
                                     adaptive="heuristic", tree_top_k=4, prune=False, graft=False)
    assert engine.max_seq_len == 512 and engine.max_batch_size == 1


def test_serve_keeps_sglang_spellings_as_aliases():
    args = parse("serve", "--speculative-algorithm", "draft", "--speculative-draft-model-path", "self:bfloat16",
                 "--speculative-num-draft-tokens", "6")
    _, spec = configs_from_args(args, batch_invariant=False)
    assert (spec.method, spec.draft_model, spec.num_speculative_tokens) == ("draft", "self:bfloat16", 6)
    with pytest.raises(SystemExit):  # generate speaks only the one dialect
        parse("generate", "--speculative-algorithm", "ngram")


@pytest.mark.parametrize("command", ["generate", "serve", "bench", "doctor"])
def test_every_command_has_the_shared_flags_with_help(command):
    parser = build_parser()
    sub = next(a for a in parser._subparsers._group_actions if a.dest == "command").choices[command]
    flags = {s for a in sub._actions for s in a.option_strings}
    assert {"--model", "--dtype", "--quant", "--threads", "--max-model-len", "--speculative", "--draft-model",
            "--draft-n"} <= flags
    if command in ("generate", "serve"):
        assert {"--ngram-min", "--ngram-max", "--tree-nodes", "--tree-top-k", "--no-draft-prune", "--no-graft",
                "--adaptive"} <= flags
        assert all(a.help for a in sub._actions if a.option_strings)


def test_make_configs_resolves_auto_and_the_tree_default():
    engine, spec = make_configs(speculative="auto", draft_model="self:int4")
    assert spec.method == "draft" and isinstance(engine, EngineConfig)
    _, greedy = make_configs(speculative="hybrid", temperature=0.0)
    assert greedy.tree_nodes == 0  # greedy keeps chains
    _, explicit = make_configs(speculative="hybrid", tree_nodes=0, temperature=0.7)
    assert explicit.tree_nodes == 0
    with pytest.raises(ValueError, match="quant"):
        make_configs(quant="int3")
