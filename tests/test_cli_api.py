"""The CLI and the Python API: outputs, JSON line, and clear errors on bad input."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from specdec import LLM, SamplingParams
from specdec.cli import main
from specdec.engine.detokenizer import Detokenizer


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "specdec.cli", *args], capture_output=True, text=True, input=stdin, timeout=300
    )


def test_generate_json_line_on_tiny_model(tiny_model_dir, capsys):
    rc = main(["generate", "-m", str(tiny_model_dir), "-p", "Hello", "-n", "12", "--temp", "0", "--json", "--no-chat"])
    assert rc == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    data = json.loads(last)
    for key in ("text", "num_prompt_tokens", "num_generated_tokens", "prefill_seconds", "decode_seconds", "tokens_per_second", "spec"):
        assert key in data
    assert 1 <= data["num_generated_tokens"] <= 12
    assert data["speculative"] == "ngram"  # --speculative auto, nothing else named
    assert data["tree_nodes"] == 0


def test_heads_sample_with_trees_by_default():
    """generate's --tree-nodes default: 16-node trees for eagle and hybrid when sampling on a
    CPU whose C attention kernel keeps trees batch-invariant; chains when greedy, for other
    methods, and where trees would turn batch invariance off."""
    import torch

    from specdec.options import SAMPLING_TREE_NODES, default_tree_nodes
    from specdec.models.native import native_attention_supported

    trees = SAMPLING_TREE_NODES if native_attention_supported(torch.float32, "cpu") else 0
    assert default_tree_nodes("hybrid", 0.8, "float32", "cpu") == trees
    assert default_tree_nodes("eagle", 0.8, "bfloat16", "cpu") == trees
    assert default_tree_nodes("hybrid", 0.0, "float32", "cpu") == 0
    assert default_tree_nodes("ngram", 0.8, "bfloat16", "cpu") == 0
    assert default_tree_nodes("draft", 0.8, "float32", "cpu") == 0
    assert default_tree_nodes("hybrid", 0.8, "float16", "cpu") == 0
    assert default_tree_nodes("eagle", 0.8, "float32", "cuda") == 0


def test_speculative_auto_resolution():
    from specdec.options import resolve_speculative

    from specdec.models.default import default_model_path

    assert resolve_speculative("auto", None) == "hybrid"  # the default model: its head ships
    assert resolve_speculative("auto", None, model=str(default_model_path())) == "hybrid"
    assert resolve_speculative("auto", None, model="some/other/model.gguf") == "ngram"
    assert resolve_speculative("auto", "draft/dir") == "draft"
    assert resolve_speculative("auto", None, tree_nodes=16) == "hybrid"  # hybrid trees, the graft on
    assert resolve_speculative("auto", None, tree_nodes=16, model="some/other/model.gguf") == "eagle"
    assert resolve_speculative("none", "draft/dir") == "none"
    with pytest.raises(ValueError, match="name the method"):
        resolve_speculative("auto", "draft/dir", tree_nodes=16)


def test_draft_debug_lines(tiny_model_dir, tiny_draft_dir, capsys):
    rc = main([
        "generate", "-m", str(tiny_model_dir), "-p", "Hello there", "-n", "16", "--temp", "0", "--json",
        "--speculative", "draft", "--draft-model", str(tiny_draft_dir), "--draft-n", "3", "--draft-debug",
    ])
    assert rc == 0
    captured = capsys.readouterr()
    assert "draft: accepted" in captured.err and "/3 tokens" in captured.err
    assert "draft summary: acceptance rate" in captured.err
    spec = json.loads(captured.out.strip().splitlines()[-1])["spec"]
    assert spec["num_accepted_tokens"] <= spec["num_draft_tokens"]
    assert spec["mean_acceptance_length"] == pytest.approx(1 + spec["num_accepted_tokens"] / spec["num_drafts"], abs=1e-3)


@pytest.mark.parametrize(
    "args, message",
    [
        (["-m", "/nonexistent/model.gguf", "-p", "hi"], "does not exist"),
        (["-p", "", "--no-chat"], "prompt is empty"),
        (["-p", "hi", "-n", "0"], "max_tokens must be a positive integer"),
        (["-p", "hi", "--temp", "-1"], "temperature must be >= 0"),
        (["-p", "hi", "--top-p", "1.5"], "top_p must be in (0, 1]"),
        (["-p", "hi", "--top-p", "0"], "top_p must be in (0, 1]"),
        (["-p", "hi", "--speculative", "draft"], "needs --draft-model"),
        (["-p", "hi", "--speculative", "ngram", "--draft-n", "zero"], "positive integer or 'auto'"),
    ],
)
def test_bad_input_gives_a_clear_error(args, message, capsys):
    rc = main(["generate", *args])
    assert rc == 2
    assert message in capsys.readouterr().err


def test_every_subcommand_prints_its_help(capsys):
    from specdec.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert {"generate", "bench", "train-draft", "serve"} <= set(commands)
    for name in commands:
        with pytest.raises(SystemExit) as exit_info:
            main([name, "--help"])
        assert exit_info.value.code == 0, name
        assert "usage: specdec " + name in capsys.readouterr().out


def test_corrupt_and_non_gguf_files(tmp_path, capsys):
    truncated = tmp_path / "broken.gguf"
    truncated.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\x00" * 7)
    assert main(["generate", "-m", str(truncated), "-p", "hi"]) == 2
    assert "not a readable GGUF file" in capsys.readouterr().err
    text = tmp_path / "model.bin"
    text.write_text("not a model")
    assert main(["generate", "-m", str(text), "-p", "hi"]) == 2
    assert "not a GGUF file" in capsys.readouterr().err
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    assert main(["generate", "-m", str(empty_dir), "-p", "hi"]) == 2
    assert "no config.json" in capsys.readouterr().err


def test_stdin_prompt_loses_one_trailing_newline_as_p_has_it(tiny_model_dir):
    """`echo TEXT | specdec generate` answers as `-p TEXT` does (issue 38)."""
    common = ("generate", "-m", str(tiny_model_dir), "-n", "4", "--temp", "0", "--json")
    piped = run_cli(*common, stdin="Hello from stdin\n")
    given = run_cli(*common, "-p", "Hello from stdin")
    assert piped.returncode == 0 and given.returncode == 0, piped.stderr + given.stderr
    piped_json, given_json = (json.loads(p.stdout.strip().splitlines()[-1]) for p in (piped, given))
    assert piped_json["num_prompt_tokens"] == given_json["num_prompt_tokens"]
    assert piped_json["text"] == given_json["text"]


def test_stdin_prompt_strips_only_one_newline():
    from specdec.cli import stdin_prompt

    assert stdin_prompt("a\n") == "a" and stdin_prompt("a\r\n") == "a"
    assert stdin_prompt("a\n\n") == "a\n" and stdin_prompt("a") == "a" and stdin_prompt("  a  ") == "  a  "


def test_json_streams_the_text_first_and_names_quant_and_dtype(tiny_model_dir):
    proc = run_cli("generate", "-m", str(tiny_model_dir), "-p", "Hello", "-n", "6", "--temp", "0", "--json", "--no-chat")
    assert proc.returncode == 0, proc.stderr
    streamed, last = proc.stdout.rstrip("\n").rsplit("\n", 1)
    data = json.loads(last)
    assert streamed == data["text"]  # the stream, then the JSON line
    assert (data["quant"], data["dtype"]) == ("none", "float32")
    assert "specdec: loading" in proc.stderr  # the wait says what it is doing


HELP_WITHOUT_TORCH = """
import sys
from specdec.cli import main
try:
    main(sys.argv[1:])
except SystemExit as e:
    assert e.code == 0, e.code
heavy = sorted(m for m in ("torch", "transformers", "fastapi") if m in sys.modules)
print("HEAVY", heavy)
"""


@pytest.mark.parametrize("command", [
    "",
    "generate", "theory", "memory", "bench", "doctor", "serve", "train-draft", "export-draft",
])
def test_help_imports_no_torch(command):
    """`specdec --help` and each subcommand's `--help` build only that parser: no torch import
    (the time it takes lives in benchmarks/first_run.py, not here)."""
    args = [command, "--help"] if command else ["--help"]
    proc = subprocess.run([sys.executable, "-c", HELP_WITHOUT_TORCH, *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "usage: specdec" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == "HEAVY []"


def test_the_command_table_matches_each_module_help():
    """cli.SUBCOMMANDS lists each subcommand's help without importing it: the same line the
    module registers."""
    from specdec.cli import SUBCOMMANDS, build_parser

    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    registered = {c.dest: c.help for c in action._choices_actions}
    assert registered == {name: help_text for name, (_, help_text) in SUBCOMMANDS.items()}


def test_python_api_vllm_shape(tiny_model_dir, tiny_draft_dir):
    llm = LLM(model=str(tiny_model_dir), speculative_model=str(tiny_draft_dir), num_speculative_tokens=3)
    params = SamplingParams(temperature=0.8, top_p=0.95, max_tokens=10, seed=0)
    outs = llm.generate(["Hello", "The weather today"], params)
    assert len(outs) == 2
    for out in outs:
        assert out.outputs[0].text == llm.tokenizer.decode(out.outputs[0].token_ids, skip_special_tokens=True)
        assert out.spec.num_accepted_tokens <= out.spec.num_draft_tokens
    again = llm.generate(["Hello"], params)[0]
    assert again.outputs[0].token_ids == outs[0].outputs[0].token_ids  # seeded
    chat = llm.chat([{"role": "user", "content": "Hi!"}], SamplingParams(temperature=0, max_tokens=5))
    assert chat[0].prompt_token_ids[0] == llm.tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert llm.stats.num_drafts >= sum(o.spec.num_drafts for o in outs)


class CharTokenizer:
    """Token i is byte i: decoding a cut UTF-8 sequence gives U+FFFD, like byte-level BPE."""

    def decode(self, ids, skip_special_tokens=True):
        return bytes(ids).decode("utf-8", errors="replace")


def test_detokenizer_keeps_multibyte_characters_whole():
    detok = Detokenizer(CharTokenizer())
    pieces = [detok.add([b]) for b in "né 東🙂".encode()]
    assert "".join(pieces) == "né 東🙂"
    assert all("\ufffd" not in p for p in pieces)


def test_detokenizer_stop_strings_hold_back_and_cut():
    detok = Detokenizer(CharTokenizer(), stop=["STOP"])
    out = "".join(detok.add([b]) for b in b"abc STO")
    assert out == "abc "  # "STO" is held back: it may become "STOP"
    assert detok.add(list(b"P and more")) == ""
    assert detok.stopped and detok.text == "abc "
    detok = Detokenizer(CharTokenizer(), stop=["STOP"])
    out = "".join(detok.add([b]) for b in b"abc ST") + detok.flush()
    assert out == "abc ST" and not detok.stopped
