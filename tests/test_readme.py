"""Every `specdec ...` and `python ...` command in the README's code blocks runs, at small sizes,
so a command a user copies works.

Each README command must appear in COMMANDS (a new one fails test_every_command_is_listed):
  - "run": run as written, with extra flags appended (argparse keeps the last value, so
    `-n 4` caps the tokens and `--model TINY` swaps in the tiny test model where the
    command does not need the default model's EAGLE head);
  - "help": commands that cannot run in a test (a server, an hour of training, the test
    suite itself) run with `--help` only, so at least their flags parse.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from specdec.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = "{tiny}"  # replaced by the tiny model directory
OUT = "{out}"  # replaced by a temporary directory

COMMANDS: dict[str, tuple[str, list[str]]] = {
    'specdec generate -p "Count from 1 to 10." -n 60 --temp 0 --json': ("run", ["-n", "4", "--model", TINY]),
    'specdec generate -p "Fix the typos: Teh cat sat on teh mat." --speculative ngram --temp 0 --draft-debug':
        ("run", ["-n", "4", "--model", TINY]),
    'specdec generate -p "Write a poem." --speculative eagle --tree-nodes 16 --seed 1': ("run", ["-n", "4"]),
    'specdec generate -p "Write a poem." --speculative hybrid --seed 1': ("run", ["-n", "4"]),
    'specdec generate -p "Write a poem." --speculative none --seed 1': ("run", ["-n", "4"]),
    'specdec generate -p "Explain gravity." --dtype bfloat16 --quant int4': ("run", ["-n", "4", "--model", TINY]),
    "python -m pytest -q -n auto": ("help", []),  # the suite itself
    "specdec serve --speculative-algorithm auto --port 30000": ("help", []),  # a server runs until stopped
    "specdec bench --speculative none,ngram --draft-n auto -n 32 --repeats 1 --categories grounded":
        ("run", ["-n", "4", "--model", TINY, "--max-prompts-per-category", "1", "--out", OUT, "--json"]),
    "specdec doctor --speculative ngram": ("run", ["-n", "4", "--model", TINY]),
    "specdec train-draft --out runs/head -t 2": ("help", []),  # about an hour
    "specdec export-draft --out runs/head-vllm": ("run", ["--out", OUT]),
    "specdec theory --alpha 0.8 --draft-n 4 --verify-cost 1.5": ("run", []),
}


def readme_commands() -> list[str]:
    """`specdec ...` / `python ...` lines of the README's bash blocks, trailing comments dropped."""
    text = (ROOT / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line.startswith(("specdec ", "python ")):
                commands.append(line)
    return commands


def test_every_command_is_listed():
    found = readme_commands()
    assert found, "the README has no commands"
    assert set(found) == set(COMMANDS), f"README commands without a COMMANDS entry: {set(found) - set(COMMANDS)}; " \
        f"entries no longer in the README: {set(COMMANDS) - set(found)}"


@pytest.mark.parametrize("command", list(COMMANDS))
def test_readme_command(command, tiny_model_dir, tmp_path, capsys):
    how, extra = COMMANDS[command]
    argv = shlex.split(command)
    if how == "help":
        cmd = [sys.executable, "-m", "pytest", "--help"] if argv[0] == "python" else \
            [sys.executable, "-m", "specdec.cli", argv[1], "--help"]
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert "usage" in r.stdout.lower()
        if "-n" in argv:  # the test command's workers come from pytest-xdist, in the test extra
            assert "--numprocesses" in r.stdout
        return
    extra = [x.replace(TINY, str(tiny_model_dir)).replace(OUT, str(tmp_path / "out")) for x in extra]
    if argv[0] == "python":
        r = subprocess.run(argv[:1] and [sys.executable, *argv[1:], *extra], cwd=ROOT, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        return
    assert main(argv[1:] + extra) == 0, capsys.readouterr().err
