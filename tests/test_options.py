"""One options path: generate, serve, bench and doctor share one flag dialect, and the flags
(or LLM's keyword arguments) become the engine and speculative configs in one function."""

import argparse

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


def all_subparsers():
    parser = build_parser()
    return next(a for a in parser._subparsers._group_actions if a.dest == "command").choices


@pytest.mark.parametrize("command", sorted(all_subparsers()))
def test_every_option_has_help_and_every_value_option_shows_its_default(command):
    """Issue 38: every flag says what it does; one that takes a value says its default."""
    sub = all_subparsers()[command]
    for action in sub._actions:
        if not action.option_strings or action.help == argparse.SUPPRESS:
            continue
        assert action.help and action.help.strip("() "), f"{command} {action.option_strings[0]} has no help"
        takes_value = action.nargs != 0 and not action.required
        if takes_value:
            assert "default" in action.help, f"{command} {action.option_strings[0]}: help shows no default"


@pytest.mark.parametrize("command", ["generate", "bench", "doctor"])
def test_generate_bench_and_doctor_default_to_the_same_proposer(command, monkeypatch):
    """The fastest lossless proposer (options.resolve_speculative) is every command's default."""
    from specdec.bench import doctor, flags
    from specdec.options import resolve_speculative

    expected = resolve_speculative("auto", None)
    args = parse(command, *(["-p", "x"] if command == "generate" else []))
    if command == "generate":
        assert configs_from_args(args, temperature=0.0)[1].method == expected
    elif command == "bench":
        assert args.speculative is None and flags.default_methods(None, None) == ["none", expected]
    else:
        seen = {}
        monkeypatch.setattr(doctor, "diagnose", lambda a: seen.setdefault("method", a.speculative) and 1 / 0)
        with pytest.raises(ZeroDivisionError):
            doctor.run(args)
        assert seen["method"] == expected
    assert expected == "hybrid"  # on the default model


def test_bench_help_lists_hybrid():
    assert "hybrid" in all_subparsers()["bench"].format_help()
