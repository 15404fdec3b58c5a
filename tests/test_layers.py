"""The layer contracts in pyproject.toml ([tool.importlinter]) hold: imports point down only."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"]


def lint(src: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(src))
    return subprocess.run(LINT + ["--config", str(ROOT / "pyproject.toml"), "--no-cache"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_the_layers_hold():
    result = lint(ROOT / "src")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


def test_an_upward_import_breaks_the_contract(tmp_path):
    """The same check on a copy whose cache module imports the API must fail."""
    shutil.copytree(ROOT / "src" / "specdec", tmp_path / "specdec", ignore=shutil.ignore_patterns("data", "__pycache__"))
    cache = tmp_path / "specdec" / "cache.py"
    cache.write_text(cache.read_text() + "\nfrom specdec.api import LLM  # noqa: E402\n")
    result = lint(tmp_path)
    assert result.returncode != 0
    assert "specdec.cache -> specdec.api" in result.stdout
