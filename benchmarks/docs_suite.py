"""Run the documented benchmark set and keep each run's summary.json for the docs.

    python benchmarks/docs_suite.py                    # every run below, into docs/results/<date>-<cpu>/
    python benchmarks/docs_suite.py --only float32     # some of them
    python benchmarks/docs_suite.py --dry-run          # print the commands only
    python benchmarks/docs_suite.py --tiny --model DIR --out /tmp/x   # the pipeline at toy size

Each run is one `specdec bench` command with the fixed flags of RUNS (plus COMMON); the
suite copies its summary.json (small; the raw records and plots stay in the bench's own
results/ folder, which git ignores) to RESULTS/<date>-<cpu>/<run>/summary.json. Commit that
folder, then `python benchmarks/docs_report.py` rebuilds docs/benchmarks.md, its plots and
the README's headline table from the committed files alone.

The full set takes hours on a 2-core machine: the bench interleaves every config with plain
decoding on every built-in prompt, three repeats each. `--tiny` runs each command at a toy
size (one prompt, a few tokens, one repeat) to check the pipeline; its figures mean nothing
and it refuses to write into docs/results.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"

COMMON = ["--threads", "2", "--repeats", "3", "-n", "128", "--temperature", "0,0.7", "--draft-n", "auto"]
TINY = ["--repeats", "1", "-n", "4", "--max-prompts-per-category", "1", "--categories", "grounded"]

# name -> (what it shows, bench flags on top of COMMON, needs: python module or None)
RUNS: dict[str, tuple[str, list[str], str | None]] = {
    "float32": ("plain decoding, n-gram, EAGLE and hybrid against transformers' generate(), float32",
                ["--speculative", "none,ngram,eagle,hybrid", "--peer", "hf"], None),
    "bfloat16": ("the same in bfloat16",
                 ["--dtype", "bfloat16", "--speculative", "none,ngram,eagle,hybrid", "--peer", "hf"], None),
    "int8": ("weight-only int8 linears, bfloat16 compute",
             ["--dtype", "bfloat16", "--quant", "int8", "--speculative", "none,ngram,hybrid"], None),
    "int4": ("weight-only int4 linears, bfloat16 compute",
             ["--dtype", "bfloat16", "--quant", "int4", "--speculative", "none,ngram,hybrid"], None),
    "llamacpp": ("llama.cpp on the same GGUF file, plain and prompt lookup, against specdec's n-gram",
                 ["--speculative", "none,ngram", "--peer", "llamacpp"], "llama_cpp"),
}


def cpu_model() -> str:
    """The CPU's model name, from /proc/cpuinfo where Linux has it."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown-cpu"


def machine_label(day: datetime.date | None = None) -> str:
    """'2026-12-07-amd-epyc-9r14': the folder name of one machine's results."""
    slug = re.sub(r"[^a-z0-9]+", "-", re.sub(r"\(r\)|\(tm\)|processor|\d+-core", "", cpu_model().lower())).strip("-")
    return f"{(day or datetime.date.today()).isoformat()}-{slug}"


def bench_command(run: str, out: Path, tiny: bool, model: str | None) -> list[str]:
    flags = RUNS[run][1]
    extra = TINY if tiny else []
    model_flags = ["--model", model] if model else []
    return ["specdec", "bench", *COMMON, *flags, *extra, *model_flags, "--out", str(out), "--json"]


def available(run: str) -> bool:
    needs = RUNS[run][2]
    return needs is None or importlib.util.find_spec(needs) is not None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default=None, help=f"comma list of runs (default: all of {','.join(RUNS)} whose peers are installed)")
    ap.add_argument("--out", default=None, help="results root (default: docs/results; --tiny needs another)")
    ap.add_argument("--tiny", action="store_true", help="toy sizes, to test the pipeline only")
    ap.add_argument("--model", default=None, help="target passed to every bench (default: the default model)")
    ap.add_argument("--dry-run", action="store_true", help="print the commands and stop")
    args = ap.parse_args(argv)

    runs = args.only.split(",") if args.only else [r for r in RUNS if available(r)]
    unknown = [r for r in runs if r not in RUNS]
    if unknown:
        ap.error(f"unknown runs {unknown}; known: {list(RUNS)}")
    root = Path(args.out) if args.out else RESULTS
    if args.tiny and root.resolve() == RESULTS.resolve():
        ap.error("--tiny figures mean nothing: pass --out somewhere outside docs/results")
    machine = root / machine_label()
    scratch = Path(tempfile.mkdtemp(prefix="docs-suite-"))
    for run in runs:
        bench_out = scratch / run
        cmd = bench_command(run, bench_out, args.tiny, args.model)
        print(f"docs_suite: {run}: {shlex.join(cmd)}", file=sys.stderr, flush=True)
        if args.dry_run:
            continue
        if not available(run):
            print(f"docs_suite: {run}: skipped, needs the {RUNS[run][2]} module", file=sys.stderr)
            continue
        subprocess.run([sys.executable, "-m", "specdec.cli", *cmd[1:]], check=True, stdout=subprocess.DEVNULL)
        dest = machine / run
        dest.mkdir(parents=True, exist_ok=True)
        summary = json.loads((bench_out / "summary.json").read_text())
        # the command a reader can rerun: the public one, without this run's scratch folder
        summary.setdefault("meta", {})["command"] = shlex.join(cmd[:cmd.index("--out")])
        summary["meta"]["suite_run"] = run
        summary["meta"].pop("out", None)
        (dest / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        print(f"docs_suite: {run}: {dest / 'summary.json'}", file=sys.stderr)
    shutil.rmtree(scratch, ignore_errors=True)
    if not args.dry_run:
        print(f"docs_suite: done; commit {machine} and run python benchmarks/docs_report.py", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
