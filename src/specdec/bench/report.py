"""summary.csv, report.md and the plots of a bench run, as pure functions of its records.

    write_all(out_dir, records)             # summarize(records) inside
    write_all(out_dir, records, summary)    # or reuse the runner's summary

`specdec bench` calls this at the end; it also rebuilds a report from a records.jsonl
(`read_records`) without rerunning anything.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from specdec.bench.plots import write_plots
from specdec.bench.summary import summarize

CSV_FIELDS = (
    "level", "category", "name", "kind", "speculative", "draft_n", "temperature", "tokens_per_second",
    "speedup", "acceptance_rate", "mean_acceptance_length", "mean_draft_n", "ttft_seconds",
    "latency_p50", "latency_p95", "latency_p99", "greedy_mismatches", "cost_ratio", "verify_cost_ratio",
    "predicted_speedup", "predicted_speedup_paper", "num_runs",
)

DEFINITIONS = [
    "tokens/s: decode tokens / decode seconds (first token and prefill excluded, as SpecStats counts "
    "them), median over repeats per prompt, geometric mean over prompts.",
    "speedup: per prompt the ratio of medians over the plain baseline at the same temperature; "
    "overall and per category the geometric mean over prompts (so speedup = tokens/s ratio).",
    "acceptance rate = accepted / drafted tokens; mean acceptance length = tokens per drafted step "
    "including the recovered or bonus token; both pooled over all runs (SpecStats).",
    "TTFT: median prefill seconds. Latency pXX: inter-token latency, each decode step's wall time "
    "divided evenly over the tokens it emitted, percentiles over all decode tokens of all runs.",
    "greedy mismatches: at temperature 0, runs whose token ids differ from plain decoding's on the "
    "same prompt and repeat (a lossless engine shows 0; for peers it is informational: other "
    "kernels can differ in low bits and flip near-ties). '-' at temperature > 0.",
]

PREDICTION_NOTE = (
    "Predicted speedup uses specdec.bench.theory: alpha is inverted from the measured mean "
    "acceptance length at K = the config's mean draft length (rounded); c = measured draft seconds "
    "per draft token / the plain baseline's seconds per decode token; v = the verify pass over K+1 "
    "tokens / a plain decode step, measured at the start of the run with the engine's calibration "
    "routine (1 without it). The 'paper' column sets v = 1 as Leviathan et al. do; on a CPU a "
    "verify pass costs more than a decode step, so it is optimistic. Drafted steps are predicted at theory.speedup(alpha, K, c, v) = tau/(K c + v) and "
    "steps the proposer left undrafted (n-gram misses) at 1x, weighted by their share of steps. "
    "Measured below predicted means overheads the cost model omits (sampling, rollback, Python); "
    "above it means the baseline paid costs that speculation amortized, or the machine's load "
    "shifted between runs (look at the load averages and rerun with more repeats)."
)


def read_records(path: Path) -> list[dict]:
    records = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: malformed JSON ({e.msg})") from None
    return records


def _entries(summary: dict) -> list[dict]:
    """Baselines, speculative configs and peers (every temperature), in report order."""
    peers = [e for p in summary["peers"].values() for e in p["by_temperature"].values()]
    return list(summary["configs"]) + peers


def csv_rows(summary: dict) -> list[dict]:
    rows = []
    for e in _entries(summary):
        lat = e.get("latency_seconds") or {}
        base = {f: e.get(f) for f in CSV_FIELDS if f in e}
        base.update(level="overall", category="", latency_p50=lat.get("p50"), latency_p95=lat.get("p95"),
                    latency_p99=lat.get("p99"))
        rows.append(base)
        for cat, v in e.get("by_category", {}).items():
            rows.append({"level": "category", "category": cat, "name": e["name"], "kind": e["kind"],
                         "speculative": e["speculative"], "draft_n": e["draft_n"],
                         "temperature": e["temperature"], **v})
    return rows


def to_csv(summary: dict) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in csv_rows(summary):
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return buf.getvalue()


def _f(x, digits: int = 2, suffix: str = "") -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}f}{suffix}"
    return f"{x}{suffix}"


def _ms(x) -> str:
    return "-" if x is None else f"{1000 * x:.1f}"


def md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def overall_table(summary: dict) -> str:
    header = ["config", "tok/s", "speedup", "acc. rate", "mean acc. len", "mean K", "TTFT ms",
              "ITL p50 ms", "p95 ms", "p99 ms", "greedy mismatches"]
    rows = []
    for e in _entries(summary):
        lat = e.get("latency_seconds") or {}
        rows.append([e["name"], _f(e["tokens_per_second"], 1), _f(e["speedup"], 2, "x"),
                     _f(e.get("acceptance_rate")), _f(e.get("mean_acceptance_length")), _f(e.get("mean_draft_n")),
                     _ms(e.get("ttft_seconds")), _ms(lat.get("p50")), _ms(lat.get("p95")), _ms(lat.get("p99")),
                     _f(e.get("greedy_mismatches"))])
    return md_table(header, rows)


def category_table(summary: dict, field: str, digits: int = 2, suffix: str = "") -> str:
    """Spec-Bench's layout: a row per config, a column per category, then the overall figure."""
    cats = summary["categories"]
    rows = [[e["name"]] + [_f((e["by_category"].get(cat) or {}).get(field), digits, suffix) for cat in cats]
            + [_f(e.get(field), digits, suffix)]
            for e in _entries(summary) if any((e["by_category"].get(c) or {}).get(field) is not None for c in cats)]
    return md_table(["config"] + list(cats) + ["overall"], rows)


def position_table(summary: dict) -> str:
    configs = [c for c in summary["configs"] if c.get("acceptance_rate_per_position")]
    if not configs:
        return "(no config drafted a token)"
    width = max(len(c["acceptance_rate_per_position"]) for c in configs)
    rows = []
    for c in configs:
        rates = c["acceptance_rate_per_position"]
        counts = c.get("drafted_per_position") or [None] * len(rates)
        rows.append([c["name"]] + [_f(x) + ("" if n is None else f" ({n})") for x, n in zip(rates, counts)]
                    + ["-"] * (width - len(rates)))
    return md_table(["config"] + [f"pos {i}" for i in range(1, width + 1)], rows)


def class_table(summary: dict) -> str | None:
    """Drafts per class for configs whose proposer names its classes (n-gram match length, hybrid)."""
    rows = []
    for c in summary["configs"]:
        for name, x in (c.get("by_class") or {}).items():
            rows.append([c["name"], name, str(x["num_drafts"]), _f(x["share"]), _f(x["acceptance_rate"]),
                         _f(x["mean_acceptance_length"])])
    if not rows:
        return None
    return md_table(["config", "draft class", "drafts", "share", "acc. rate", "mean acc. len"], rows)


def config_table(summary: dict) -> str:
    header = ["config", "runs", "prompts", "mean tokens", "K histogram (K: steps)", "pruned", "c", "v", "alpha",
              "predicted", "paper (v=1)", "measured"]
    rows = [[c["name"], str(c["num_runs"]), str(c["num_prompts"]), _f(c["mean_generated_tokens"], 1),
             ", ".join(f"{k}: {v}" for k, v in (c.get("k_histogram") or {}).items()) or "-",
             str(c["num_pruned_tokens"]) if c.get("num_pruned_tokens") is not None else "-",
             _f(c.get("cost_ratio"), 3), _f(c.get("verify_cost_ratio")), _f(c.get("alpha")),
             _f(c.get("predicted_speedup"), 2, "x"), _f(c.get("predicted_speedup_paper"), 2, "x"),
             _f(c.get("speedup"), 2, "x")]
            for c in summary["configs"]]
    return md_table(header, rows)


def markdown_report(summary: dict, plots: list[str], plot_notes: list[str]) -> str:
    meta = summary.get("meta", {})
    keys = ("cpu", "threads", "torch", "transformers", "dtype", "device", "load_average", "load_average_end")
    machine = md_table(["CPU", "threads", "torch", "transformers", "dtype", "device", "load avg (start)",
                        "load avg (end)"], [[str(meta.get(k, "-")) for k in keys]])
    parts = [
        f"# specdec bench {meta.get('started', '')}".rstrip(),
        "",
        f"Command: `{meta.get('command', '-')}`",
        "",
        f"Model: `{meta.get('model', '-')}`" + (f", draft: `{meta['draft_model']}`" if meta.get("draft_model") else "")
        + f"; {meta.get('num_prompts', '-')} prompts x {meta.get('repeats', '-')} repeats, "
        f"max {meta.get('max_tokens', '-')} new tokens" + (" (EOS ignored)" if meta.get("ignore_eos") else ""),
        "",
        "## Machine", "", machine, "", *([f"GPU: {meta['gpu']}", ""] if meta.get("gpu") else []),
        "## Overall", "", overall_table(summary), "",
        *[f"- {d}" for d in DEFINITIONS], "",
        "## Speedup by category", "", category_table(summary, "speedup", 2, "x"), "",
        "## Tokens/s by category", "", category_table(summary, "tokens_per_second", 1), "",
        "## Mean acceptance length by category", "", category_table(summary, "mean_acceptance_length"), "",
        "## Per config", "", config_table(summary), "",
        "## Acceptance rate by position", "",
        "Accepted at position i / drafts with at least i tokens, pooled over runs (SpecStats, vLLM's "
        "definition: not conditional on the earlier positions passing, so for a fixed K it falls with i). In parentheses: drafts with a position i.",
        "",
        position_table(summary), "",
        *(["## Drafts by class", "",
           "What each draft was (the proposer's name: `ngram:n` after an n-token suffix match, `eagle` for "
           "the head's), pooled over runs.", "", classes, ""] if (classes := class_table(summary)) else []),
        "## Predicted vs measured speedup", "", PREDICTION_NOTE, "",
        "Columns c, v, alpha, predicted, paper (v=1) and measured are in the per-config table above.", "",
        "## Plots", "",
    ]
    parts += [f"![{p}]({p})" for p in plots]
    parts += [f"- {n}" for n in plot_notes]
    return "\n".join(parts) + "\n"


def text_table(summary: dict) -> str:
    """A compact plain-text overview for the terminal, then Spec-Bench's table (summary's
    category_table): speedup and mean acceptance length per category and overall."""
    lines = [f"{'config':<28} {'tok/s':>8} {'speedup':>8} {'acc.rate':>8} {'acc.len':>8} {'mismatch':>8}"]
    for e in _entries(summary):
        lines.append(f"{e['name']:<28} {_f(e['tokens_per_second'], 1):>8} {_f(e['speedup'], 2, 'x'):>8} "
                     f"{_f(e.get('acceptance_rate')):>8} {_f(e.get('mean_acceptance_length')):>8} "
                     f"{_f(e.get('greedy_mismatches')):>8}")
    table = summary["category_table"]
    width = max(len(c) for c in table["columns"]) + 1
    for field, title, suffix in (("speedup", "speedup over plain", "x"),
                                 ("mean_acceptance_length", "mean acceptance length (tokens per drafted step)", "")):
        lines += ["", f"{title}, by category:", f"{'config':<28}" + "".join(f"{c:>{width}}" for c in table["columns"])]
        lines += [f"{row['name']:<28}" + "".join(f"{_f(row[field][c], 2, suffix):>{width}}" for c in table["columns"])
                  for row in table["rows"]]
    return "\n".join(lines)


def write_all(out: Path, records: list[dict], summary: dict | None = None) -> dict:
    """summary.csv, report.md and the PNGs into out; returns the summary."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = summary if summary is not None else summarize(records)
    (out / "summary.csv").write_text(to_csv(summary))
    plots, notes = write_plots(summary, out)
    (out / "report.md").write_text(markdown_report(summary, plots, notes))
    return summary


def machine_table(summaries: dict[str, dict], field: str = "speedup", digits: int = 2, suffix: str = "x") -> str:
    """One row per config, one column per machine: `field` of each summary's overall entries
    (docs/benchmarks.md and the README's headline, where runs of one suite on several machines
    sit side by side). summaries: machine label -> summary, in column order."""
    names: list[str] = []
    values: dict[tuple[str, str], object] = {}
    for machine, summary in summaries.items():
        for e in _entries(summary):
            names.append(e["name"])
            values[(e["name"], machine)] = e.get(field)
    rows = [[name] + [_f(values.get((name, m)), digits, suffix) for m in summaries] for name in dict.fromkeys(names)]
    return md_table(["config"] + list(summaries), rows)
