"""Prompt sets for benchmarks: built-in categories, held-out sets, or a user's JSONL file.

    load_workload(["grounded", "qa"], max_per_category=4) -> list[Prompt]

Each JSONL line is one object in one of three forms:

  {"id", "category", "prompt": str}
  {"id", "category", "messages": [{"role", "content"}, ...]}   the last message is the
                                                                user's turn the model answers
  {"question_id", "category", "turns": [str, ...]}              MT-bench / Spec-Bench questions

`id` (or `question_id`) defaults to "<file stem>-<line>", `category` to "custom"; other
keys are ignored. A question's turns are user turns answered in order, each after the
model's own answers to the earlier ones: `Prompt.sample(answers)` is the conversation of
the next turn, so each bench config is prompted with its own answers. A question of
several turns gives one sample per turn, with id "<id>/turn<N>".

Built-in files live in specdec/data/prompts/, one per category:

  predictable       counting, alphabet, months: drafts are almost always right
  semi_predictable  code and step-by-step explanations
  creative          stories and poems: the hardest case for any proposer
  grounded          repeat / edit / extract / reformat a text given in the prompt,
                    where prompt lookup (n-gram drafting) shines
  multi_turn, translation, summarization, qa, math, rag: Spec-Bench's categories

Names accepted by load_workload: a category, "spec_bench" (its six), "all" (every
category; the default), or a held-out set, kept out of tuning (adaptive draft length, a
draft head's training data) and out of "all":

  heldout             grounded and creative prompts (data/prompts/heldout.jsonl)
  spec_bench_heldout  questions in the Spec-Bench form, a few in each of its six
                      categories, the multi_turn ones of two turns
                      (data/questions/spec_bench_heldout.jsonl)
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
SETS = ("heldout",)  # whole files in data/prompts that are not a single category
QUESTION_SETS = ("spec_bench_heldout",)  # question files (the "turns" form) in data/questions
ROLES = ("system", "user", "assistant")
DEFAULT_CATEGORY = "custom"


@dataclass
class Prompt:
    """One workload entry: exactly one of `prompt`, `messages` or `turns` is set."""

    id: str
    category: str
    prompt: str | None = None
    messages: list[dict] | None = None
    turns: list[str] | None = None  # user turns of a question, answered one after another

    @property
    def num_turns(self) -> int:
        return len(self.turns) if self.turns is not None else 1

    def as_messages(self) -> list[dict]:
        """Chat messages: the stored turns, the prompt as one user turn, or a question's first turn."""
        if self.messages is not None:
            return [dict(m) for m in self.messages]
        if self.turns is not None:
            return [{"role": "user", "content": self.turns[0]}]
        return [{"role": "user", "content": self.prompt}]

    def sample(self, answers: list[str]) -> Prompt:
        """The prompt of turn len(answers) + 1, after the model's own `answers` to the earlier ones:
        for turns [t1, t2] and answers [a1], messages [user t1, assistant a1, user t2] and id
        "<id>/turn2". A prompt or messages entry (one turn) is its own only sample."""
        k = len(answers)
        if not k < self.num_turns:
            raise ValueError(f"{self.id}: {self.num_turns} turn(s), no turn {k + 1} to answer")
        if self.turns is None:
            return self
        messages = []
        for turn, answer in zip(self.turns, answers):
            messages += [{"role": "user", "content": turn}, {"role": "assistant", "content": answer}]
        messages.append({"role": "user", "content": self.turns[k]})
        sample_id = self.id if self.num_turns == 1 else f"{self.id}/turn{k + 1}"
        return Prompt(id=sample_id, category=self.category, messages=messages)


def list_categories() -> list[str]:
    return list(CATEGORIES)


def _data_dir(kind: str = "prompts"):
    return files("specdec") / "data" / kind


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
        forms = [k for k in ("prompt", "messages", "turns") if k in obj]
        if len(forms) != 1:
            if not forms and "question_id" in obj:
                raise ValueError(f'{where}: question {obj["question_id"]!r} has no "turns" (a non-empty list of '
                                 "user turns)")
            raise ValueError(f'{where}: needs exactly one of "prompt" (a string), "messages" (a list) or '
                             f'"turns" (a list of strings)' + (f", got {' and '.join(forms)}" if forms else ""))
        if forms == ["prompt"] and (not isinstance(obj["prompt"], str) or not obj["prompt"].strip()):
            raise ValueError(f'{where}: "prompt" must be a non-empty string')
        if forms == ["messages"]:
            _check_messages(obj["messages"], where)
        if forms == ["turns"]:
            _check_turns(obj["turns"], where)
        if "id" in obj and "question_id" in obj:
            raise ValueError(f'{where}: needs one of "id" or "question_id", got both')
        key = "question_id" if "question_id" in obj else "id"
        pid = obj.get(key, f"{stem}-{n}")
        if not isinstance(pid, (str, int)) or isinstance(pid, bool) or str(pid) == "":
            raise ValueError(f'{where}: "{key}" must be a non-empty string or an integer, got {pid!r}')
        pid = str(pid)
        if pid in ids:
            raise ValueError(f"{where}: duplicate {key} {pid!r} (first on line {ids[pid]})")
        ids[pid] = n
        category = obj.get("category", DEFAULT_CATEGORY)
        if not isinstance(category, str) or not category:
            raise ValueError(f'{where}: "category" must be a non-empty string, got {category!r}')
        prompts.append(Prompt(id=pid, category=category, prompt=obj.get("prompt"),
                              messages=obj.get("messages"), turns=obj.get("turns")))
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


def _check_turns(turns, where: str) -> None:
    if not isinstance(turns, list) or not turns:
        raise ValueError(f'{where}: "turns" must be a non-empty list of user turns (strings), got {turns!r}')
    for i, turn in enumerate(turns):
        if not isinstance(turn, str):
            raise ValueError(f"{where}: turns[{i}] must be a string, got {type(turn).__name__} {turn!r}")
        if not turn.strip():
            raise ValueError(f"{where}: turns[{i}] is empty")


def _builtin(name: str) -> list[Prompt]:
    kind = "questions" if name in QUESTION_SETS else "prompts"
    resource = _data_dir(kind) / f"{name}.jsonl"
    return parse_jsonl(resource.read_text(encoding="utf-8"), f"specdec/data/{kind}/{name}.jsonl")


def _expand(names: list[str]) -> list[str]:
    """Workload names -> built-in file stems, in order, without repeats."""
    stems: list[str] = []
    for name in names:
        if name in GROUPS:
            new = list(GROUPS[name])
        elif name in CATEGORIES or name in SETS + QUESTION_SETS:
            new = [name]
        else:
            raise ValueError(f"unknown workload {name!r}; choose from categories {', '.join(CATEGORIES)}, "
                             f"groups {', '.join(GROUPS)} or held-out sets {', '.join(SETS + QUESTION_SETS)}")
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
        # capped per file, so a held-out set does not eat the budget of the categories it shares
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
