"""The bench's PNG plots, from the summary alone (matplotlib, Agg backend).

Each `plot_*` writes one PNG and returns its file name, or returns None with the reason
in `notes` when it has no data (one temperature, no speculative config, ...): a skipped
plot is explained in report.md rather than drawn empty.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


def _spec_configs(summary: dict) -> list[dict]:
    return [c for c in summary["configs"] if c["speculative"] != "none"]


def _drafted(summary: dict) -> list[dict]:
    """Speculative configs that drafted at least one token (others have no acceptance to show)."""
    return [c for c in _spec_configs(summary) if c.get("num_draft_tokens")]


def _legend(ax, n: int) -> None:
    ax.legend(fontsize=7 if n > 8 else 8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)


def _contenders(summary: dict) -> list[dict]:
    """Speculative configs and every peer entry (all temperatures), baselines excluded."""
    peers = [e for p in summary["peers"].values() for e in p["by_temperature"].values()]
    return _spec_configs(summary) + peers


def _save(fig, out: Path, name: str) -> str:
    fig.tight_layout()
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    return name


def plot_k_vs_tokens_per_second(summary: dict, out: Path, notes: list[str]) -> str | None:
    configs = [c for c in _spec_configs(summary) if c.get("tokens_per_second")]
    if not configs:
        notes.append("K vs tokens/s: skipped, no speculative config ran")
        return None
    fig, ax = plt.subplots(figsize=(9, 4.5))
    series = sorted({(c["speculative"], c["temperature"]) for c in configs}, key=str)
    for i, (method, t) in enumerate(series):
        color = f"C{i}"
        fixed = sorted((c["draft_n"], c["tokens_per_second"]) for c in configs
                       if (c["speculative"], c["temperature"]) == (method, t) and isinstance(c["draft_n"], int))
        if fixed:
            ax.plot(*zip(*fixed), "o-", color=color, label=f"{method} T={t:g}, fixed K")
        for c in configs:
            if (c["speculative"], c["temperature"]) == (method, t) and c["draft_n"] == "auto":
                ax.plot([c.get("mean_draft_n") or 0], [c["tokens_per_second"]], "*", ms=14, color=color,
                        label=f"{method} T={t:g}, auto (at its mean K)")
    for j, base in enumerate(c for c in summary["configs"] if c["speculative"] == "none"):
        ax.axhline(base["tokens_per_second"], ls=("--", ":", "-.")[j % 3], color="black", lw=1,
                   label=f"plain T={base['temperature']:g}")
    ks = [c["draft_n"] if isinstance(c["draft_n"], int) else c.get("mean_draft_n") or 0 for c in configs]
    ax.set_xlim(0, max(ks) + 1)
    ax.set_xlabel("draft length K (auto: mean K it chose)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("decode tokens/s (geo. mean over prompts)")
    ax.set_title("Draft length vs throughput")
    ax.set_ylim(bottom=0)
    _legend(ax, 2 * len(series))
    ax.grid(alpha=0.3)
    return _save(fig, out, "k_vs_tokens_per_second.png")


def plot_temperature_vs_acceptance(summary: dict, out: Path, notes: list[str]) -> str | None:
    configs = _drafted(summary)
    if len(summary["temperatures"]) < 2 or not configs:
        notes.append("temperature vs acceptance rate: skipped, needs two or more --temperature values "
                     "and a speculative config")
        return None
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for method, k in sorted({(c["speculative"], str(c["draft_n"])) for c in configs}):
        pts = sorted((c["temperature"], c["acceptance_rate"]) for c in configs
                     if (c["speculative"], str(c["draft_n"])) == (method, k))
        ax.plot(*zip(*pts), "o-", label=f"{method} K={k}")
    ax.set_xlabel("temperature")
    ax.set_ylabel("acceptance rate (accepted / drafted)")
    ax.set_ylim(0, 1.02)
    ax.set_title("Temperature vs acceptance rate (configs that drafted)")
    _legend(ax, len(configs))
    ax.grid(alpha=0.3)
    return _save(fig, out, "temperature_vs_acceptance.png")


def plot_speedup_by_category(summary: dict, out: Path, notes: list[str]) -> str | None:
    entries = [e for e in _contenders(summary) if e.get("speedup")]
    if not entries:
        notes.append("speedup by category: skipped, nothing but the plain baseline ran")
        return None
    cats = list(summary["categories"]) + ["overall"]
    width = 0.8 / len(entries)
    fig, ax = plt.subplots(figsize=(max(9, 1.1 * len(cats) + 0.25 * len(entries) + 3), 4.8))
    colors = plt.get_cmap("tab20").colors
    for i, e in enumerate(entries):
        values = [(e["by_category"].get(c) or {}).get("speedup") or 0 for c in cats[:-1]] + [e["speedup"]]
        ax.bar([x + (i - (len(entries) - 1) / 2) * width for x in range(len(cats))], values, width,
               label=e["name"], color=colors[i % len(colors)])
    ax.axhline(1.0, color="black", lw=1, label="plain (1x)")
    ax.set_xticks(range(len(cats)))
    ax.set_xticklabels(cats, rotation=30, ha="right")
    ax.set_ylabel("speedup over plain (geo. mean over prompts)")
    ax.set_title("Speedup by category")
    _legend(ax, len(entries))
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, out, "speedup_by_category.png")


def plot_acceptance_by_position(summary: dict, out: Path, notes: list[str]) -> str | None:
    configs = _drafted(summary)
    if not configs:
        notes.append("acceptance rate by position: skipped, no config drafted a token")
        return None
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for c in configs:
        rates = c["acceptance_rate_per_position"]
        ax.plot(range(1, len(rates) + 1), rates, "o-", label=c["name"])
    ax.set_xlabel("draft position i")
    ax.set_ylabel("accepted at i / drafts with >= i tokens")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(0, 1.02)
    ax.set_title("Acceptance rate by draft position")
    _legend(ax, len(configs))
    ax.grid(alpha=0.3)
    return _save(fig, out, "acceptance_by_position.png")


def plot_predicted_vs_measured(summary: dict, out: Path, notes: list[str]) -> str | None:
    configs = [c for c in _spec_configs(summary) if c.get("predicted_speedup") and c.get("speedup")]
    if not configs:
        notes.append("predicted vs measured speedup: skipped, no config drafted a token")
        return None
    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    xs = [c["predicted_speedup"] for c in configs]
    ys = [c["speedup"] for c in configs]
    paper = [c.get("predicted_speedup_paper") or x for c, x in zip(configs, xs)]
    for i, (c, x, y, xp) in enumerate(zip(configs, xs, ys, paper)):
        ax.plot([x], [y], "o", color=f"C{i}", label=c["name"])
        ax.plot([xp], [y], "o", mfc="none", color=f"C{i}")
        ax.plot([x, xp], [y, y], ":", color=f"C{i}", lw=0.8)
    hi = max(xs + ys + paper + [1.0]) * 1.1
    ax.plot([0, hi], [0, hi], "--", color="gray", label="measured = predicted")
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_xlim(0, hi)
    ax.set_ylim(0, hi)
    ax.set_xlabel("predicted speedup (filled: measured alpha, c, v; hollow: v = 1)")
    ax.set_ylabel("measured speedup")
    ax.set_title("Predicted vs measured speedup")
    _legend(ax, len(configs))
    ax.grid(alpha=0.3)
    return _save(fig, out, "predicted_vs_measured.png")


PLOTS = (plot_k_vs_tokens_per_second, plot_temperature_vs_acceptance, plot_speedup_by_category,
         plot_acceptance_by_position, plot_predicted_vs_measured)


def write_plots(summary: dict, out: Path) -> tuple[list[str], list[str]]:
    """(written PNG names, notes on the skipped ones)."""
    out = Path(out)
    written, notes = [], []
    for plot in PLOTS:
        name = plot(summary, out, notes)
        if name:
            written.append(name)
    return written, notes
