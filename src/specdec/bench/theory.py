"""Speculative-decoding arithmetic: expected tokens per step, speedup, the best draft length.

Vocabulary (as in DESIGN.md): each step the proposer makes K *draft* tokens, the target
verifies them in one pass, the leading run that passes is *accepted*, and the target
adds one more token: a *recovered* token at the first rejection or a *bonus* token when
all K pass. So a step always emits accepted + 1 tokens ("acceptance length" tau).

Cost model (all costs in units of one single-token target decode step):
  c  draft/target cost ratio: one draft forward costs c (r = 1/c in the lab's notation);
  v  cost of the target's verify pass over K+1 tokens (Leviathan et al. take v = 1).
  speedup = tau / (K*c + v)

Three formulas are in circulation; `NOTES` says precisely where they disagree:
  paper      E[tau] = (1 - alpha^(K+1)) / (1 - alpha), K + 1 at alpha = 1
             speedup = E[tau] / (K*c + 1)
             (Leviathan, Kalman, Matias 2023, "Fast Inference from Transformers via
             Speculative Decoding")
  lab k/r    E[accepted] = alpha (1 - alpha^k) / (1 - alpha),  speedup = E[accepted] / (k/r + 1)
  lab gamma  speedup = gamma / (1 + (1 - alpha) gamma)

`specdec theory` prints them side by side with a Monte-Carlo check, and with
`--from-results DIR` compares the paper's prediction with a bench run's measurements.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import textwrap
from pathlib import Path

import numpy as np

DEFAULT_ALPHAS = (0.5, 0.7, 0.8, 0.9)
DEFAULT_DRAFT_NS = tuple(range(1, 9))
DEFAULT_COST_RATIO = 0.05

NOTES = [
    "tokens/step counts every token a step emits: the accepted drafts plus the one token "
    "the target always adds (recovered at the first rejection, bonus when all K pass), so "
    "it is 1 at alpha=0 and K+1 at alpha=1.",
    "lab k/r: E[accepted] = alpha(1-alpha^k)/(1-alpha) is the paper's tokens/step minus 1: it "
    "counts accepted drafts only and drops the recovered/bonus token. With r = 1/c the "
    "denominators agree (k/r = K*c), so lab speedup = paper speedup - 1/(K*c+1) exactly; at "
    "alpha=0 it says 0x where the truth is 1/(K*c+1) (you lose only the drafting time).",
    "lab gamma: gamma/(1+(1-alpha)gamma) = 1/(1/gamma + (1-alpha)) charges each token 1/gamma "
    "of a verify pass plus (1-alpha) of an extra target pass, i.e. every rejected draft is "
    "repaired by its own target call and later drafts are kept (positions treated as "
    "independent, no truncation at the first rejection), with no bonus token and free "
    "drafting. It is the c=0 case only, gives gamma (not gamma+1) at alpha=1 and "
    "gamma/(1+gamma) < 1 at alpha=0; it never exceeds the paper's c=0 value and meets it "
    "only as gamma -> infinity, where both tend to 1/(1-alpha) (alpha < 1).",
    "paper and both lab formulas price the verify pass over K+1 tokens as one decode step "
    "(memory-bound regime). On a CPU or at large batch the pass grows with K (on this CPU "
    "~1.5x a decode step for 4-16 tokens); --verify-cost v charges it: speedup = "
    "tokens/(K*c + v). A constant v > 1 lowers every speedup (and, drafting being relatively "
    "cheaper, nudges the best K up); a verify cost growing with K, v = 1 + b*K, acts like "
    "c + b and lowers the best K.",
    "alpha here is the per-position acceptance probability, i.i.d. across positions. A "
    "bench's acceptance rate (accepted/drafted = (tau-1)/K) is smaller than alpha for K>1; "
    "plugging it in as alpha understates the speedup. When acceptance falls with position, "
    "use expected_tokens_from_position_rates (conditional rates alpha_i).",
]


def _check_alpha(alpha: float) -> None:
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"acceptance probability alpha must be in [0, 1], got {alpha!r}")


def _check_k(k: int) -> None:
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 0:
        raise ValueError(f"draft length K must be an integer >= 0, got {k!r}")


def _check_cost(c: float, name: str = "draft/target cost ratio c") -> None:
    if not c >= 0.0 or math.isinf(c):
        raise ValueError(f"{name} must be a finite number >= 0, got {c!r}")


def expected_tokens_per_step(alpha: float, k: int) -> float:
    """E[tau] = 1 + alpha + ... + alpha^K = (1 - alpha^(K+1)) / (1 - alpha); K+1 at alpha = 1."""
    _check_alpha(alpha)
    _check_k(k)
    if alpha == 1.0:
        return float(k + 1)
    return (1.0 - alpha ** (k + 1)) / (1.0 - alpha)


def tokens_per_step_variance(alpha: float, k: int) -> float:
    """Var[tau] under i.i.d. acceptance; P(accepted >= i) = alpha^i gives
    E[A^2] = sum_i (2i - 1) alpha^i. Used to size the Monte-Carlo tolerance."""
    _check_alpha(alpha)
    _check_k(k)
    powers = alpha ** np.arange(1, k + 1, dtype=np.float64)
    mean_a = powers.sum()
    mean_a2 = ((2 * np.arange(1, k + 1) - 1) * powers).sum()
    return float(max(mean_a2 - mean_a**2, 0.0))


def expected_tokens_from_position_rates(alphas) -> float:
    """E[tau] = 1 + sum_i prod_{j<=i} alpha_j, alpha_j = P(draft j accepted | drafts < j accepted).

    Rates counted vLLM's way (accepted at position j / steps) are unconditional, i.e.
    already the products: for those E[tau] = 1 + sum(rates).
    """
    rates = np.asarray(list(alphas), dtype=np.float64)
    if rates.ndim != 1 or ((rates < 0) | (rates > 1)).any() or np.isnan(rates).any():
        raise ValueError(f"position acceptance rates must be a list of numbers in [0, 1], got {alphas!r}")
    return float(1.0 + np.cumprod(rates).sum())


def speedup(alpha: float, k: int, c: float, verify_cost: float = 1.0) -> float:
    """Walltime improvement: E[tau] / (K*c + v). v = 1 is Leviathan et al.'s assumption."""
    _check_cost(c)
    _check_cost(verify_cost, "verify cost v")
    if verify_cost == 0 and (k == 0 or c == 0):
        raise ValueError("step cost K*c + v is zero: give a positive c or verify cost")
    return expected_tokens_per_step(alpha, k) / (k * c + verify_cost)


def optimal_k(alpha: float, c: float, max_k: int = 16, verify_cost: float = 1.0) -> int:
    """argmax_{1 <= K <= max_k} speedup(alpha, K, c); the smallest K on ties.

    K = 1 is the floor: compare speedup(alpha, optimal_k(...), c) with 1 to see whether
    speculating pays at all.
    """
    if not isinstance(max_k, int) or max_k < 1:
        raise ValueError(f"max_k must be an integer >= 1, got {max_k!r}")
    values = [speedup(alpha, k, c, verify_cost) for k in range(1, max_k + 1)]
    return 1 + int(np.argmax(values))


def lab_speedup_gamma(alpha: float, gamma: float) -> float:
    """The seed labs' gamma / (1 + (1 - alpha) gamma): free drafting, no bonus token."""
    _check_alpha(alpha)
    if not gamma > 0:
        raise ValueError(f"gamma must be > 0, got {gamma!r}")
    return gamma / (1.0 + (1.0 - alpha) * gamma)


def lab_expected_accepted(alpha: float, k: int) -> float:
    """The seed labs' E[accepted drafts] = alpha (1 - alpha^k) / (1 - alpha); k at alpha = 1."""
    return expected_tokens_per_step(alpha, k) - 1.0


def lab_speedup(alpha: float, k: int, r: float) -> float:
    """The seed labs' E[accepted] / (k/r + 1), r = target/draft cost ratio (r = 1/c)."""
    if not r > 0:
        raise ValueError(f"target/draft cost ratio r must be > 0, got {r!r}")
    return lab_expected_accepted(alpha, k) / (k / r + 1.0)


def simulate_tokens_per_step(alpha: float, k: int, num_steps: int, seed: int = 0) -> float:
    """Monte-Carlo mean of tau: per step draw K i.i.d. accept/reject flags with P(accept) =
    alpha, keep the accepted prefix, add the recovered/bonus token."""
    _check_alpha(alpha)
    _check_k(k)
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps!r}")
    rng = np.random.default_rng(seed)
    chunk = max(1, (1 << 22) // max(k, 1))  # bound the [steps, K] flag matrix to ~4M cells
    total = 0
    done = 0
    while done < num_steps:
        n = min(chunk, num_steps - done)
        accepted = rng.random((n, k)) < alpha  # [n, K]
        total += int(np.cumprod(accepted, axis=1).sum()) + n  # prefix length + 1 per step
        done += n
    return total / num_steps


def alpha_from_tokens_per_step(tokens: float, k: int) -> float:
    """Invert expected_tokens_per_step for alpha (bisection; i.i.d. acceptance assumed)."""
    _check_k(k)
    if k == 0 or tokens <= 1.0:
        return 0.0
    if tokens >= k + 1:
        return 1.0
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if expected_tokens_per_step(mid, k) < tokens:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


# ---------------------------------------------------------------------------------------
# tables


def theory_table(
    alphas, draft_ns, c: float, verify_cost: float = 1.0, num_sim_steps: int = 0,
    seed: int = 0, max_k: int = 16,
) -> dict:
    """Rows of every formula for each (alpha, K), plus the best K per alpha."""
    rows = []
    for alpha in alphas:
        for k in draft_ns:
            row = {
                "alpha": alpha,
                "draft_n": k,
                "tokens_per_step": expected_tokens_per_step(alpha, k),
                "speedup": speedup(alpha, k, c, verify_cost),
                "lab_expected_accepted": lab_expected_accepted(alpha, k),
                "lab_speedup": lab_speedup(alpha, k, 1.0 / c if c > 0 else math.inf),
                "lab_speedup_gamma": lab_speedup_gamma(alpha, k) if k > 0 else None,
            }
            if num_sim_steps:
                row["simulated_tokens_per_step"] = simulate_tokens_per_step(alpha, k, num_sim_steps, seed)
                row["simulated_stderr"] = math.sqrt(tokens_per_step_variance(alpha, k) / num_sim_steps)
            rows.append(row)
    optimal = []
    for alpha in alphas:
        k = optimal_k(alpha, c, max_k, verify_cost)
        optimal.append({"alpha": alpha, "draft_n": k, "speedup": speedup(alpha, k, c, verify_cost)})
    return {"cost_ratio": c, "verify_cost": verify_cost, "max_k": max_k, "rows": rows,
            "optimal": optimal, "notes": NOTES}


def _format_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(cell.rjust(w) for cell, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def _fmt(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def format_theory(table: dict) -> str:
    c, v = table["cost_ratio"], table["verify_cost"]
    simulated = any("simulated_tokens_per_step" in r for r in table["rows"])
    header = ["alpha", "K", "tokens/step"] + (["simulated"] if simulated else []) + [
        "speedup", "lab E[acc]", "lab k/r", "lab gamma"]
    rows = []
    for r in table["rows"]:
        sim = [f"{r['simulated_tokens_per_step']:.3f}±{r['simulated_stderr']:.3f}"] if simulated else []
        rows.append([f"{r['alpha']:.2f}", str(r["draft_n"]), _fmt(r["tokens_per_step"])] + sim + [
            _fmt(r["speedup"]), _fmt(r["lab_expected_accepted"]), _fmt(r["lab_speedup"]),
            _fmt(r["lab_speedup_gamma"])])
    out = [
        f"speculative decoding theory: c = draft/target cost = {c:g} (lab r = 1/c), "
        f"verify pass = {v:g}x a decode step",
        "speedup = paper (Leviathan et al. 2023) tokens/step / (K*c + v); lab columns use gamma = k = K",
        "",
        _format_table(header, rows),
        "",
        f"best K (1..{table['max_k']}): " + ", ".join(
            f"alpha {o['alpha']:.2f} -> K={o['draft_n']} ({o['speedup']:.2f}x"
            + (", does not pay" if o["speedup"] < 1 else "")
            + (", at the cap: raise --max-k" if o["draft_n"] == table["max_k"] else "") + ")"
            for o in table["optimal"]),
        "",
        "notes:",
    ]
    out += [textwrap.fill(n, 100, initial_indent="  - ", subsequent_indent="    ")
            for n in table["notes"]]
    return "\n".join(out)


# ---------------------------------------------------------------------------------------
# --from-results


def read_results(directory: Path) -> dict:
    """{"baseline": {...}, "configs": [...]} from DIR/summary.json, else DIR/records.jsonl
    (its last line holding "configs", or else its lines that carry "draft_n")."""
    directory = Path(directory)
    summary = directory / "summary.json"
    records = directory / "records.jsonl"
    if summary.is_file():
        try:
            data = json.loads(summary.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{summary}: malformed JSON ({e})") from e
        if not isinstance(data, dict) or not isinstance(data.get("configs"), list):
            raise ValueError(f'{summary}: expected an object with a "configs" list')
        return data
    if records.is_file():
        lines = []
        for n, line in enumerate(records.read_text().splitlines(), 1):
            if line.strip():
                try:
                    lines.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{records}:{n}: malformed JSON ({e})") from e
        for obj in reversed(lines):
            if isinstance(obj, dict) and isinstance(obj.get("configs"), list):
                return obj
        configs = [o for o in lines if isinstance(o, dict) and o.get("draft_n")]
        baseline = next((o for o in lines if isinstance(o, dict) and not o.get("draft_n")
                         and "tokens_per_second" in o), {})
        if configs:
            return {"baseline": baseline, "configs": configs}
        raise ValueError(f"{records}: no speculative configs (lines with draft_n) found")
    raise FileNotFoundError(f"{directory}: no summary.json or records.jsonl (is it a bench results directory?)")


def compare_results(data: dict, c: float, verify_cost: float = 1.0) -> dict:
    """Predicted (paper cost model, measured tau) vs measured speedup for each config."""
    baseline_tps = (data.get("baseline") or {}).get("tokens_per_second")
    rows, assumptions = [], set()
    for i, cfg in enumerate(data["configs"]):
        method = cfg.get("speculative")
        k = cfg.get("draft_n")
        if method in (None, False, "none") or not k:
            continue
        if not isinstance(k, int):  # "auto": K varies per step; use the mean drafted length
            k = max(1, round(float(cfg.get("mean_draft_n") or 1)))
            assumptions.add("adaptive-K configs use K = their mean draft length (mean_draft_n)")
        tau = cfg.get("mean_acceptance_length")
        if tau is None and cfg.get("acceptance_rate") is not None:
            tau = 1.0 + k * cfg["acceptance_rate"]
            assumptions.add("tau = 1 + K * acceptance_rate where mean_acceptance_length is missing")
        if tau is None:
            raise ValueError(f"config {i} ({method}, K={k}) has neither mean_acceptance_length nor acceptance_rate")
        if "cost_ratio" in cfg:
            ci = float(cfg["cost_ratio"])
        elif method == "ngram":
            ci = 0.0
            assumptions.add("n-gram lookup drafts for free (c = 0) when no cost_ratio is recorded")
        else:
            ci = c
            assumptions.add(f"c = {c:g} (--cost-ratio) for {method} configs that record no cost_ratio")
        if "verify_cost_ratio" in cfg:
            vi = float(cfg["verify_cost_ratio"])
        else:
            vi = verify_cost
            assumptions.add(f"verify pass = {verify_cost:g}x a decode step (--verify-cost) where a "
                            "config records no verify_cost_ratio")
        measured = cfg.get("speedup")
        if measured is None and baseline_tps and cfg.get("tokens_per_second"):
            measured = cfg["tokens_per_second"] / baseline_tps
        alpha = alpha_from_tokens_per_step(tau, k)
        predicted = tau / (k * ci + vi)
        rows.append({
            "speculative": method, "draft_n": k, "temperature": cfg.get("temperature"),
            "mean_acceptance_length": tau, "acceptance_rate": cfg.get("acceptance_rate"),
            "alpha": alpha, "cost_ratio": ci, "verify_cost": vi,
            "predicted_speedup": predicted, "measured_speedup": measured,
            "measured_over_predicted": measured / predicted if measured is not None else None,
        })
    assumptions.add("alpha is inverted from mean acceptance length assuming i.i.d. acceptance per "
                    "position; the prediction itself uses the measured tau and needs no alpha")
    return {"rows": rows, "assumptions": sorted(assumptions)}


def format_comparison(result: dict, directory: Path) -> str:
    header = ["method", "K", "temp", "tau", "acc.rate", "alpha", "c", "v", "predicted", "measured", "meas/pred"]
    rows = [[
        str(r["speculative"]), str(r["draft_n"]),
        "-" if r["temperature"] is None else f"{r['temperature']:g}",
        _fmt(r["mean_acceptance_length"], 2), _fmt(r["acceptance_rate"], 2), _fmt(r["alpha"], 2),
        f"{r['cost_ratio']:.3f}", f"{r['verify_cost']:.2f}",
        _fmt(r["predicted_speedup"], 2), _fmt(r["measured_speedup"], 2), _fmt(r["measured_over_predicted"], 2),
    ] for r in result["rows"]]
    out = [f"predicted vs measured speedup: {directory}",
           "predicted = tau / (K*c + v) (Leviathan et al.'s cost model with the measured tau)", ""]
    out.append(_format_table(header, rows) if rows else "(no speculative configs)")
    out += ["", "assumptions:"]
    out += [textwrap.fill(a, 100, initial_indent="  - ", subsequent_indent="    ") for a in result["assumptions"]
            + ["meas/pred < 1 means overheads the model omits (sampling, cache rollback, Python); "
               "> 1 usually means c or v are overstated"]]
    return "\n".join(out)


# ---------------------------------------------------------------------------------------
# CLI


def _number_list(kind):
    def parse(text: str):
        try:
            return [kind(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__}s, got {text!r}") from None
    return parse


class _FlattenList(argparse.Action):
    """`--alpha 0.6 0.8` and `--alpha 0.6,0.8` both give [0.6, 0.8]."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, [x for v in values for x in v])


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "theory",
        help="expected tokens/step and speedup: paper vs lab formulas, simulation, best K",
        description="Speculative decoding by the formulas (Leviathan et al. 2023 and the seed "
        "labs), checked by Monte-Carlo; --from-results compares predictions with a bench run.",
    )
    p.add_argument("--alpha", nargs="+", type=_number_list(float), action=_FlattenList,
                   default=list(DEFAULT_ALPHAS), help="acceptance probabilities (default 0.5,0.7,0.8,0.9)")
    p.add_argument("--draft-n", "-k", nargs="+", type=_number_list(int), action=_FlattenList,
                   default=list(DEFAULT_DRAFT_NS), help="draft lengths K (default 1..8)")
    p.add_argument("--cost-ratio", "-c", type=float, default=DEFAULT_COST_RATIO,
                   help="draft/target cost per forward, c = 1/r (default 0.05)")
    p.add_argument("--verify-cost", type=float, default=1.0,
                   help="target verify pass over K+1 tokens in decode steps (default 1, the paper's)")
    p.add_argument("--max-k", type=int, default=16, help="cap for the best-K search (default 16)")
    p.add_argument("--simulate", type=int, default=20000, metavar="N",
                   help="Monte-Carlo steps per (alpha, K); 0 skips (default 20000)")
    p.add_argument("--seed", type=int, default=0, help="simulation seed (default 0)")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument("--from-results", metavar="DIR", type=Path,
                   help="compare predicted and measured speedup of a bench results directory (default: none)")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    try:
        if args.from_results is not None:
            result = compare_results(read_results(args.from_results), args.cost_ratio, args.verify_cost)
            print(json.dumps(result, indent=2) if args.json else format_comparison(result, args.from_results))
            return 0
        if args.simulate < 0:
            raise ValueError(f"--simulate must be >= 0, got {args.simulate}")
        table = theory_table(args.alpha, args.draft_n, args.cost_ratio, args.verify_cost,
                             args.simulate, args.seed, args.max_k)
    except (ValueError, FileNotFoundError) as e:
        print(f"specdec theory: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(table, indent=2) if args.json else format_theory(table))
    return 0
