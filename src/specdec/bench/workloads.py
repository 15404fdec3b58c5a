"""Prompt sets for benchmarks: built-in categories, a held-out set, or a user's JSONL file.

    load_workload(["grounded", "qa"], max_per_category=4) -> list[Prompt]

Each JSONL line is one object: {"id", "category", "prompt": str} or
{"id", "category", "messages": [{"role", "content"}, ...]} (the last message is the
user's turn the model answers). `id` defaults to "<file stem>-<line>", `category` to
"custom". Built-in files live in specdec/data/prompts/, one per category:

  predictable       counting, alphabet, months: drafts are almost always right
  semi_predictable  code and step-by-step explanations
  creative          stories and poems: the hardest case for any proposer
  grounded          repeat / edit / extract / reformat a text given in the prompt,
                    where prompt lookup (n-gram drafting) shines
  multi_turn, translation, summarization, qa, math, rag: Spec-Bench's categories

Names accepted by load_workload: a category, "spec_bench" (its six), "all" (every
category; the default) or "heldout" (a separate file of grounded and creative prompts
kept out of tuning, e.g. of adaptive draft length or a draft head).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

CATEGORIES = (
    "predictable", "semi_predictable", "creative", "grounded",
    "multi_turn", "translation", "summarization", "qa", "math", "rag",
)
GROUPS = {
    "all": CATEGORIES,
    "spec_bench": ("multi_turn", "translation", "summarization", "qa", "math", "rag"),
}
SETS = ("heldout",)  # whole files that are not a single category
ROLES = ("system", "user", "assistant")
DEFAULT_CATEGORY = "custom"


@dataclass
class Prompt:
    id: str
    category: str
    prompt: str | None = None
    messages: list[dict] | None = None

    def as_messages(self) -> list[dict]:
        """Chat messages: the stored turns, or the prompt as one user turn."""
        if self.messages is not None:
            return [dict(m) for m in self.messages]
        return [{"role": "user", "content": self.prompt}]


def list_categories() -> list[str]:
    return list(CATEGORIES)


def _data_dir():
    return files("specdec") / "data" / "prompts"


def parse_jsonl(text: str, source: str) -> list[Prompt]:
    """Prompts from JSONL text; errors name `source` and the line."""
    stem = Path(source).stem
    prompts = []
    ids: dict[str, int] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{source}:{n}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(obj, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        has_prompt, has_messages = "prompt" in obj, "messages" in obj
        if has_prompt == has_messages:
            raise ValueError(f'{where}: needs exactly one of "prompt" (a string) or "messages" (a list)'
                             + (", got both" if has_prompt else ""))
        if has_prompt and (not isinstance(obj["prompt"], str) or not obj["prompt"].strip()):
            raise ValueError(f'{where}: "prompt" must be a non-empty string')
        if has_messages:
            _check_messages(obj["messages"], where)
        pid = obj.get("id", f"{stem}-{n}")
        if not isinstance(pid, (str, int)) or isinstance(pid, bool) or str(pid) == "":
            raise ValueError(f'{where}: "id" must be a non-empty string or an integer, got {pid!r}')
        pid = str(pid)
        if pid in ids:
            raise ValueError(f"{where}: duplicate id {pid!r} (first on line {ids[pid]})")
        ids[pid] = n
        category = obj.get("category", DEFAULT_CATEGORY)
        if not isinstance(category, str) or not category:
            raise ValueError(f'{where}: "category" must be a non-empty string, got {category!r}')
        prompts.append(Prompt(id=pid, category=category, prompt=obj.get("prompt"),
                              messages=obj.get("messages")))
    if not prompts:
        raise ValueError(f"{source}: no prompts (the file is empty)")
    return prompts


def _check_messages(messages, where: str) -> None:
    if not isinstance(messages, list) or not messages:
        raise ValueError(f'{where}: "messages" must be a non-empty list of {{"role", "content"}} objects')
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise ValueError(f"{where}: messages[{i}] must be {{\"role\": one of {', '.join(ROLES)}, "
                             f"\"content\": a string}}, got {m!r}")
    if messages[-1]["role"] != "user":
        raise ValueError(f"{where}: the last message must be the user's turn (the model answers it), "
                         f"got role {messages[-1]['role']!r}")


def _builtin(name: str) -> list[Prompt]:
    resource = _data_dir() / f"{name}.jsonl"
    return parse_jsonl(resource.read_text(encoding="utf-8"), f"specdec/data/prompts/{name}.jsonl")


def _expand(names: list[str]) -> list[str]:
    """Workload names -> built-in file stems, in order, without repeats."""
    stems: list[str] = []
    for name in names:
        if name in GROUPS:
            new = list(GROUPS[name])
        elif name in CATEGORIES or name in SETS:
            new = [name]
        else:
            raise ValueError(f"unknown workload {name!r}; choose from categories "
                             f"{', '.join(CATEGORIES)}, groups {', '.join(GROUPS)} or sets {', '.join(SETS)}")
        stems += [s for s in new if s not in stems]
    return stems


def load_workload(
    names: list[str] | None = None, path: str | None = None, max_per_category: int | None = None
) -> list[Prompt]:
    """Prompts of the named built-in workloads (default "all"), or of the JSONL at `path`
    (then `names` filters its categories); at most max_per_category of each, in file order."""
    if isinstance(names, str):
        names = [names]
    if max_per_category is not None and (not isinstance(max_per_category, int) or max_per_category < 1):
        raise ValueError(f"max_per_category must be a positive integer, got {max_per_category!r}")
    if path is None:
        # capped per file, so "heldout" does not eat the budget of the categories it shares
        return [x for stem in _expand(names or ["all"]) for x in _cap(_builtin(stem), max_per_category)]
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such prompt file")
    prompts = parse_jsonl(p.read_text(encoding="utf-8"), str(p))
    if names:
        present = sorted({x.category for x in prompts})
        missing = [n for n in names if n not in present]
        if missing:
            raise ValueError(f"{p}: no prompts in categor{'y' if len(missing) == 1 else 'ies'} "
                             f"{', '.join(missing)}; it has {', '.join(present)}")
        prompts = [x for x in prompts if x.category in names]
    return _cap(prompts, max_per_category)


def _cap(prompts: list[Prompt], max_per_category: int | None) -> list[Prompt]:
    if max_per_category is None:
        return prompts
    kept: list[Prompt] = []
    counts: dict[str, int] = {}
    for x in prompts:
        if counts.get(x.category, 0) < max_per_category:
            counts[x.category] = counts.get(x.category, 0) + 1
            kept.append(x)
    return kept
