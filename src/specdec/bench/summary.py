"""Bench records -> the summary (the final JSON line of `specdec bench`), as pure functions.

A *record* is one measured generation (one JSON line of records.jsonl):

    {"repeat": 0, "prompt_id": "grounded-1",   # a sample: a prompt, or one turn of a question ("q1/turn2")
     "turn": 1, "category": "grounded",
     "contender": "ngram:4@T0",         # unique name of (engine, method, K, temperature)
     "kind": "specdec" | "peer",
     "speculative": "none" | "ngram" | "draft" | "hf" | "hf-prompt-lookup" | "hf-assisted" | "llamacpp"
                    | "llamacpp-prompt-lookup" | "endpoint",
     "draft_n": 0 | int | "auto" | null, "temperature": 0.0, "seed": 0,
     "num_prompt_tokens": 41, "num_generated_tokens": 64, "finish_reason": "length",
     "prefill_seconds": 0.05,           # time to first token
     "decode_seconds": 1.2,             # first token -> last token
     "tokens_per_second": 52.5,         # (num_generated_tokens - 1) / decode_seconds
     "token_ids": [...],
     "step_seconds": [...], "step_tokens": [...],   # each step after the first token
     "spec": {SpecStats fields} | null}

Definitions (all medians are over repeats, then aggregated over prompts):
- tokens/s of a contender on a prompt: median over repeats of decode tokens / decode seconds
  (SpecStats.tokens_per_second; the prefill token and its time are excluded);
- speedup on a prompt: that median / the plain baseline's median at the same temperature;
- overall and per-category tokens/s and speedup: geometric means over prompts, so
  speedup = tokens/s / baseline tokens/s exactly; prompts where either side decoded no
  token are left out;
- acceptance rate, mean acceptance length, by position: SpecStats pooled over all runs;
- inter-token latency: each decode step's wall time divided over the tokens it emitted;
  p50/p95/p99 over every decode token of every run;
- TTFT: median prefill seconds over runs;
- category_table: Spec-Bench's table, a row per config and peer, a column per category and
  one "overall": the speedup and mean acceptance length above (samples are the unit: each
  turn of a question counts as one prompt);
- greedy_mismatches: at temperature 0, runs whose token ids differ from the baseline's run
  of the same prompt and repeat; null at temperature > 0;
- seeded_mismatches: at temperature > 0, the same count for a config verified coupled (its
  seeded sample must be plain's, token for token); null otherwise;
- cost_ratio c: draft seconds per draft token / the baseline's seconds per decode token;
  verify_cost_ratio v: a verify pass over K+1 tokens / a plain decode step, from a
  verify-cost curve t(0..K) the runner measures at start (meta["verify_seconds"], with
  the engine's calibration routine), else the paper's v = 1;
- predicted_speedup: theory.speedup(alpha, K, c, v) with alpha inverted from the measured
  mean acceptance length at K = round(mean draft length), blended with the plain steps
  a proposer left undrafted (n-gram misses): (f tau + 1 - f) / (f (K c + v) + 1 - f),
  f = drafted steps / all steps; predicted_speedup_paper: the same with v = 1.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter, defaultdict

from specdec.bench import theory
from specdec.engine.stats import SpecStats

SPEC_FIELDS = (
    "num_drafts", "num_draft_tokens", "num_accepted_tokens", "num_plain_steps", "num_generated_tokens",
    "num_pruned_tokens", "accepted_per_position", "drafted_per_position", "draft_seconds", "verify_seconds",
    "prefill_seconds", "decode_seconds",
)


def contender_name(speculative: str, draft_n, temperature: float) -> str:
    """'none@T0', 'ngram:4@T0', 'draft:auto@T0.7', 'hf@T0'."""
    k = f":{draft_n}" if speculative not in ("none",) and draft_n not in (None, 0) else ""
    return f"{speculative}{k}@T{temperature:g}"


def stats_to_record(stats: SpecStats) -> dict:
    """The raw SpecStats counters a record keeps (rates are recomputed after pooling)."""
    d = {f: getattr(stats, f) for f in SPEC_FIELDS}
    d["k_histogram"] = {str(k): v for k, v in sorted(stats.k_histogram.items())}
    d["by_class"] = {name: list(counts) for name, counts in sorted(stats.by_class.items())}
    return d


def stats_from_record(spec: dict) -> SpecStats:
    stats = SpecStats(**{f: spec[f] for f in SPEC_FIELDS if f in spec})
    stats.accepted_per_position = list(stats.accepted_per_position)
    stats.drafted_per_position = list(stats.drafted_per_position)
    stats.k_histogram = Counter({int(k): v for k, v in spec.get("k_histogram", {}).items()})
    stats.by_class = {name: list(counts) for name, counts in spec.get("by_class", {}).items()}
    return stats


def geomean(values) -> float | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    if any(v <= 0 for v in values):
        raise ValueError(f"geometric mean needs positive values, got {min(values)}")
    return math.exp(sum(math.log(v) for v in values) / len(values))


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolation percentile (numpy's default), q in [0, 100]."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def inter_token_latencies(record: dict) -> list[float]:
    return [s / n for s, n in zip(record.get("step_seconds", []), record.get("step_tokens", [])) if n > 0
            for _ in range(n)]


def _run_tps(record: dict) -> float | None:
    tps = record.get("tokens_per_second")
    return tps if tps and tps > 0 else None


def per_prompt_tps(records: list[dict]) -> dict[str, float]:
    """prompt id -> median tokens/s over repeats (runs without a decode token skipped)."""
    by_prompt: dict[str, list[float]] = defaultdict(list)
    for r in records:
        tps = _run_tps(r)
        if tps is not None:
            by_prompt[r["prompt_id"]].append(tps)
    return {p: statistics.median(v) for p, v in by_prompt.items()}


def speedup_over(tps: dict[str, float], base: dict[str, float], prompts=None) -> float | None:
    """Geometric mean over shared prompts of tps / base (= ratio of the geometric means)."""
    keys = [p for p in tps if p in base and (prompts is None or p in prompts)]
    return geomean(tps[p] / base[p] for p in keys) if keys else None


def pooled_stats(records: list[dict]) -> SpecStats | None:
    specs = [r["spec"] for r in records if r.get("spec")]
    if not specs:
        return None
    total = SpecStats()
    for s in specs:
        total.merge(stats_from_record(s))
    return total


def greedy_mismatches(records: list[dict], baseline: list[dict]) -> int:
    base = {(r["repeat"], r["prompt_id"]): r["token_ids"] for r in baseline}
    return sum(1 for r in records if (r["repeat"], r["prompt_id"]) in base
               and r["token_ids"] != base[(r["repeat"], r["prompt_id"])])


def seconds_per_token(records: list[dict]) -> float | None:
    """Pooled decode seconds / decode tokens (the plain baseline's cost of one decode step)."""
    seconds = sum(r["decode_seconds"] for r in records)
    tokens = sum(max(r["num_generated_tokens"] - 1, 0) for r in records)
    return seconds / tokens if tokens and seconds > 0 else None


def verify_cost_ratio(verify_seconds: list[float] | None, k: int) -> float:
    """v(K) = t_verify(K) / t_verify(0) from a calibration curve; 1 (the paper's) without one."""
    if not verify_seconds:
        return 1.0
    k = min(k, len(verify_seconds) - 1)
    return verify_seconds[k] / verify_seconds[0]


def predict_speedup(stats: SpecStats, c: float, v: float) -> tuple[float, float, int] | None:
    """(predicted speedup, alpha, K) from theory with measured tau, c, v; None without drafts."""
    if not stats.num_drafts:
        return None
    k = max(1, round(stats.num_draft_tokens / stats.num_drafts))
    alpha = theory.alpha_from_tokens_per_step(stats.mean_acceptance_length, k)
    f = stats.num_drafts / stats.num_steps
    tau = theory.expected_tokens_per_step(alpha, k)
    drafted = theory.speedup(alpha, k, c, v)  # tau / (K c + v)
    predicted = (f * tau + (1 - f)) / (f * tau / drafted + (1 - f))
    return predicted, alpha, k


def _round(x, digits: int = 4):
    return None if x is None else round(x, digits)


def _latency(records: list[dict]) -> dict:
    itl = [x for r in records for x in inter_token_latencies(r)]
    return {f"p{q}": _round(percentile(itl, q), 6) for q in (50, 95, 99)}


def summarize_contender(records: list[dict], baseline: list[dict], categories: list[str],
                        meta: dict | None = None) -> dict:
    """One entry of "configs" (or "peers") from its records and the baseline's at its temperature."""
    first = records[0]
    tps = per_prompt_tps(records)
    base_tps = per_prompt_tps(baseline)
    stats = pooled_stats(records)
    temperature = first["temperature"]
    out = {
        "name": first["contender"], "speculative": first["speculative"], "draft_n": first["draft_n"],
        "temperature": temperature, "kind": first["kind"],
        "tokens_per_second": _round(geomean(tps.values()), 3),
        "speedup": _round(speedup_over(tps, base_tps)),
        "ttft_seconds": _round(statistics.median(r["prefill_seconds"] for r in records), 5),
        "latency_seconds": _latency(records),
        "greedy_mismatches": greedy_mismatches(records, baseline) if temperature == 0 else None,
        "sampling_verify": first.get("sampling_verify"),
        "seeded_mismatches": greedy_mismatches(records, baseline)
        if temperature > 0 and first.get("sampling_verify") == "coupled" else None,
        "num_runs": len(records), "num_prompts": len({r["prompt_id"] for r in records}),
        "mean_generated_tokens": _round(statistics.mean(r["num_generated_tokens"] for r in records), 2),
    }
    if stats is not None:
        out.update({
            "acceptance_rate": _round(stats.acceptance_rate),
            "mean_acceptance_length": _round(stats.mean_acceptance_length),
            "acceptance_rate_per_position": [_round(a) for a in stats.acceptance_rate_per_position],
            "drafted_per_position": list(stats.drafted_per_position),
            "mean_draft_n": _round(stats.num_draft_tokens / stats.num_drafts if stats.num_drafts else 0.0, 3),
            "num_drafts": stats.num_drafts, "num_draft_tokens": stats.num_draft_tokens,
            "num_pruned_tokens": stats.num_pruned_tokens,
            "k_histogram": {str(k): v for k, v in sorted(stats.k_histogram.items())},
            "by_class": stats.class_summary(),
        })
        base_step = seconds_per_token(baseline)
        if stats.num_draft_tokens and base_step:
            c = stats.draft_seconds / (stats.num_draft_tokens + stats.num_pruned_tokens) / base_step
            k = max(1, round(stats.num_draft_tokens / max(stats.num_drafts, 1)))
            v = verify_cost_ratio((meta or {}).get("verify_seconds"), k)
            predicted = predict_speedup(stats, c, v)
            paper = predict_speedup(stats, c, 1.0)
            out.update({"cost_ratio": _round(c), "verify_cost_ratio": _round(v), "alpha": _round(predicted[1]),
                        "predicted_speedup": _round(predicted[0]), "predicted_speedup_paper": _round(paper[0])})
    by_category = {}
    for cat in categories:
        prompts = {r["prompt_id"] for r in records if r["category"] == cat}
        if not prompts:
            continue
        cat_stats = pooled_stats([r for r in records if r["category"] == cat])
        by_category[cat] = {
            "speedup": _round(speedup_over(tps, base_tps, prompts)),
            "tokens_per_second": _round(geomean(tps[p] for p in prompts if p in tps), 3),
            "mean_acceptance_length": _round(cat_stats.mean_acceptance_length) if cat_stats else None,
            "acceptance_rate": _round(cat_stats.acceptance_rate) if cat_stats else None,
        }
    out["by_category"] = by_category
    return out


OVERALL = "overall"


def category_table(entries: list[dict], categories: list[str]) -> dict:
    """Spec-Bench's layout of `entries` (summarize_contender's): methods as rows, categories
    and "overall" as columns, each with the speedup over plain and the mean acceptance length."""
    if OVERALL in categories:
        raise ValueError(f"a category may not be named {OVERALL!r}: the table's overall column has that name")
    rows = []
    for e in entries:
        row = {"name": e["name"]}
        for field in ("speedup", "mean_acceptance_length"):
            cells = {cat: (e["by_category"].get(cat) or {}).get(field) for cat in categories}
            row[field] = dict(cells, **{OVERALL: e.get(field)})
        rows.append(row)
    return {"columns": list(categories) + [OVERALL], "rows": rows}


def peer_keys(groups: dict[str, list[dict]]) -> dict[str, str]:
    """contender -> its key in "peers": the peer's name, or NAME:K where that peer ran at several K's."""
    ks: dict[str, set] = defaultdict(set)
    for g in groups.values():
        if g[0]["kind"] != "specdec":
            ks[g[0]["speculative"]].add(str(g[0]["draft_n"]))
    return {name: g[0]["speculative"] if len(ks[g[0]["speculative"]]) == 1
            else f"{g[0]['speculative']}:{g[0]['draft_n']}"
            for name, g in groups.items() if g[0]["kind"] != "specdec"}


def summarize(records: list[dict], meta: dict | None = None) -> dict:
    """The bench's final JSON object (see runner's module docstring for the schema)."""
    if not records:
        raise ValueError("no bench records to summarize")
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        groups[r["contender"]].append(r)
    categories = list(dict.fromkeys(r["category"] for r in records))
    baselines = {g[0]["temperature"]: g for g in groups.values()
                 if g[0]["kind"] == "specdec" and g[0]["speculative"] == "none"}
    configs, peers, keys = [], {}, peer_keys(groups)
    for name, group in groups.items():
        t = group[0]["temperature"]
        if t not in baselines:
            raise ValueError(f"{name}: no plain baseline (none@T{t:g}) records to compare with")
        entry = summarize_contender(group, baselines[t], categories, meta)
        if group[0]["kind"] == "specdec":
            configs.append(entry)
        else:
            peer = peers.setdefault(keys[name], {"by_temperature": {}})
            peer["by_temperature"][f"{t:g}"] = entry
    temperatures = sorted(baselines)
    head_t = temperatures[0]
    for peer in peers.values():  # headline numbers at the lowest temperature it ran
        first_t = min(peer["by_temperature"], key=float)
        peer.update({k: v for k, v in peer["by_temperature"][first_t].items() if k != "name"})
    baseline = next(c for c in configs if c["speculative"] == "none" and c["temperature"] == head_t)
    return {
        "baseline": {k: baseline[k] for k in ("name", "temperature", "tokens_per_second", "ttft_seconds",
                                              "latency_seconds", "by_category")},
        "configs": configs,
        "peers": peers,
        "category_table": category_table(
            configs + [e for p in peers.values() for e in p["by_temperature"].values()], categories),
        "temperatures": temperatures,
        "categories": categories,
        "meta": dict(meta or {}),
    }
