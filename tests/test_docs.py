"""The docs build with `mkdocs build --strict` (broken links and undocumented server parameters
fail), and the generated files are up to date with the committed results."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None,
                    reason="mkdocs and mkdocs-material are not installed (pip install -e '.[test]')")
def test_mkdocs_build_strict(tmp_path):
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
                       cwd=ROOT, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    cli = (tmp_path / "site" / "cli" / "index.html").read_text()
    assert "specdec train-draft" in cli and "--draft-n" in cli, "the CLI reference is generated from the parser"
    server = (tmp_path / "site" / "server" / "index.html").read_text()
    assert "repetition_penalty" in server and "response_format" in server


def test_server_table_names_every_field():
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        import hooks
    finally:
        sys.path.remove(str(ROOT / "docs"))
    from specdec.server.protocol import ChatCompletionRequest, CompletionRequest

    table = hooks.server_parameters()
    for name in {*CompletionRequest.model_fields, *ChatCompletionRequest.model_fields}:
        assert f"| `{name}` |" in table
    assert "ignored" not in table


def test_benchmarks_page_is_generated():
    r = subprocess.run([sys.executable, "benchmarks/docs_report.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_docs_report_from_a_summary(tmp_path, monkeypatch):
    """docs_report builds tables with a column per machine from summary files alone."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import docs_report
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    entry = dict(name="none@T0", kind="specdec", speculative="none", draft_n=0, temperature=0.0,
                 tokens_per_second=10.0, speedup=1.0, by_category={})
    summary = dict(meta={"command": "specdec bench -n 8"}, configs=[entry, dict(entry, name="ngram:auto@T0",
                   speedup=1.5, tokens_per_second=15.0)], peers={}, categories=[])
    for machine in ("2026-12-07-cpu-a", "2026-12-08-cpu-b"):
        d = tmp_path / "results" / machine / "float32"
        d.mkdir(parents=True)
        import json
        (d / "summary.json").write_text(json.dumps(summary))
    runs = docs_report.load(tmp_path / "results")
    text = docs_report.headline(runs)
    assert "| config | 2026-12-07-cpu-a | 2026-12-08-cpu-b |" in text
    assert "| ngram:auto@T0 | 1.50x | 1.50x |" in text
    assert "specdec bench -n 8" in text and "docs/results/2026-12-07-cpu-a/float32/summary.json" in text
