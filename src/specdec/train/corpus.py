"""A large synthetic prompt corpus for draft-head self-distillation: templates x fillers.

    build_corpus(num_prompts=6000, seed=0) -> list[dict]
    write_corpus(path, num_prompts=6000, seed=0) -> list[dict]   # checks overlaps, writes JSONL
    find_overlaps(rows, eval_user_texts()) -> list[str]   # [] when no row repeats an eval prompt
    python -m specdec.train.corpus --out src/specdec/data/train_corpus.jsonl --num-prompts 6000

Every word here was written for this project. Hand-written task templates (`TEMPLATES`, each
with a category) are filled with hand-written slot fillers: topics, people, objects, source
paragraphs (`PASSAGES`), code, conversations; math and sequence tasks draw their numbers from
the seeded RNG. About a quarter to a third of the rows are *grounded*: the answer reuses text
given in the prompt (copy, rewrite, fix typos, extract, reformat, summarize, continue a list),
as much real chat traffic does.

The words live in plain-text data files under `data/corpus/` (`CORPUS_DATA_DIR`), read once
at import; each file's opening note describes its format:

    templates.txt       the task templates, one section per category
    fillers.txt         one section per slot pool (topics, names, groups, misspellings, ...)
    passages.txt        the source paragraphs, with a label for each kind
    conversations.txt   the multi-turn conversations and their follow-up turns
    snippets.txt        the code to explain, comment, port and debug

This module is the generator: it parses those files, holds the tasks that compute their
prompts (`@function` in templates.txt), and samples, checks and writes the rows.

Rows: {"id", "category", "template", "prompt"} or {"id", "category", "template", "messages"}
(earlier assistant turns included, ending with a user turn), which
`specdec.train.data.load_conversations` reads; "template" names the template that wrote the
row. The same (num_prompts, seed) gives the same rows. No prompt repeats another, no template
writes more than `MAX_TEMPLATE_SHARE` of the rows, and no row shares text with the benchmark
prompts in `data/prompts` (checked by `find_overlaps`, enforced by tests/test_corpus.py).

Template syntax: `{slot}` draws a filler (the same draw everywhere in one prompt), `{slot#2}` a
second distinct draw, `{slot.1}` a field of a tuple filler, `{passage:recipe,email}` a source
paragraph of those kinds; `[[a|b|c]]` picks one phrasing.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Union

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
EVAL_PROMPTS_DIRS = (DATA_DIR / "prompts", DATA_DIR / "questions")  # bench prompts, Spec-Bench-form questions
DEFAULT_CORPUS = DATA_DIR / "train_corpus.jsonl"
CORPUS_DATA_DIR = DATA_DIR / "corpus"
MAX_TEMPLATE_SHARE = 0.04  # of num_prompts, per template
MAX_PROMPT_CHARS = 600  # one user prompt
MAX_CONVERSATION_CHARS = 900  # all turns of a multi-turn row
OVERLAP_NGRAM = 8
_SECTION = re.compile(r"=== (.+) ===")


@functools.cache
def _sections(name: str) -> dict[str, str]:
    """The sections of data/corpus/<name>.txt by title, in file order: a line "=== title ==="
    opens one, and the text before the first title is a note for the reader."""
    path = CORPUS_DATA_DIR / f"{name}.txt"
    sections: dict[str, list[str]] = {}
    body = None
    for line in path.read_text(encoding="utf-8").split("\n"):
        m = _SECTION.fullmatch(line)
        if m:
            if m.group(1) in sections:
                raise ValueError(f"{path}: two sections titled {m.group(1)!r}")
            body = sections[m.group(1)] = []
        elif body is not None:
            body.append(line)
    return {title: "\n".join(body) for title, body in sections.items()}


def _lines(block: str) -> list[str]:
    return [line.strip() for line in block.strip().splitlines() if line.strip()]


def _pairs(block: str, sep: str = " | ") -> list[tuple[str, ...]]:
    return [tuple(part.strip() for part in line.split(sep)) for line in _lines(block)]


@dataclass(frozen=True)
class Passage:
    kind: str  # news, product, email, casual, recipe, instructions, history, science, ...
    about: str  # "a library extending its opening hours"
    text: str


def _passages(block: str) -> list[Passage]:
    """Entries separated by blank lines: a "kind | about" line, then the text (dialogue keeps
    its line breaks; other kinds join their wrapped lines with spaces)."""
    out = []
    for entry in block.strip().split("\n\n"):
        head, *body = [line.strip() for line in entry.strip().splitlines()]
        kind, about = (s.strip() for s in head.split("|"))
        text = ("\n" if kind == "dialogue" else " ").join(body)
        out.append(Passage(kind, about, text))
    return out


# ---------------------------------------------------------------------------------------------
# Source paragraphs for the grounded tasks, and how a prompt names each kind (passages.txt).

KIND_LABELS = dict(_pairs(_sections("passages")["kind_labels"]))
PASSAGES = _passages(_sections("passages")["passages"])


# ---------------------------------------------------------------------------------------------
# Word-level fillers (fillers.txt).

_FILLERS = _sections("fillers")
CONCEPTS = _lines(_FILLERS["concepts"])
AUDIENCES = _lines(_FILLERS["audiences"])
WHY = _lines(_FILLERS["why"])
PROCESSES = _lines(_FILLERS["processes"])
INVENTIONS = _lines(_FILLERS["inventions"])
LIST_SUBJECTS = _lines(_FILLERS["list_subjects"])
TRIPS = _lines(_FILLERS["trips"])
MEAL_PLANS = _lines(_FILLERS["meal_plans"])
CHECKLIST_GOALS = _lines(_FILLERS["checklist_goals"])
HOWTO_TASKS = _lines(_FILLERS["howto_tasks"])
COMPARE_PAIRS = _pairs(_FILLERS["compare_pairs"])
CHOICES = _pairs(_FILLERS["choices"])
CODE_LANGUAGES = _lines(_FILLERS["code_languages"])
CODE_TASKS = _lines(_FILLERS["code_tasks"])
CODE_CONCEPTS = _lines(_FILLERS["code_concepts"])
SQL_TASKS = _pairs(_FILLERS["sql_tasks"])
SHELL_TASKS = _lines(_FILLERS["shell_tasks"])
REGEX_TARGETS = _lines(_FILLERS["regex_targets"])
ERRORS = _lines(_FILLERS["errors"])
SITUATIONS = _lines(_FILLERS["situations"])
RECOMMENDATIONS = _lines(_FILLERS["recommendations"])
GOOD_THINGS = _lines(_FILLERS["good_things"])
FACT_TOPICS = _lines(_FILLERS["fact_topics"])
JOKE_TOPICS = _lines(_FILLERS["joke_topics"])
GOALS = _lines(_FILLERS["goals"])
MAIL = _pairs(_FILLERS["mail"])
TEXT_PURPOSES = _lines(_FILLERS["text_purposes"])
COMPLAINTS = _pairs(_FILLERS["complaints"])
CHARACTERS = _lines(_FILLERS["characters"])
STORY_EVENTS = _lines(_FILLERS["story_events"])
SETTINGS = _lines(_FILLERS["settings"])
POEM_SUBJECTS = _lines(_FILLERS["poem_subjects"])
POEM_FORMS = _lines(_FILLERS["poem_forms"])
GENRES = _lines(_FILLERS["genres"])
DIALOGUE_TOPICS = _lines(_FILLERS["dialogue_topics"])
RIDDLE_ANSWERS = _lines(_FILLERS["riddle_answers"])
LANGUAGES = _lines(_FILLERS["languages"])
EN_SENTENCES = _lines(_FILLERS["en_sentences"])
FOREIGN_SENTENCES = _lines(_FILLERS["foreign_sentences"])
WORDS = _lines(_FILLERS["words"])
PHRASES = _pairs(_FILLERS["phrases"])
READING_QUESTIONS = _lines(_FILLERS["reading_questions"])
REVIEW_LINES = _lines(_FILLERS["review_lines"])
HEADLINES = _lines(_FILLERS["headlines"])
STATEMENTS = _lines(_FILLERS["statements"])
NAME_TARGETS = _lines(_FILLERS["name_targets"])
IDEA_TARGETS = _lines(_FILLERS["idea_targets"])
GIFT_PEOPLE = _lines(_FILLERS["gift_people"])
ASK_TARGETS = _lines(_FILLERS["ask_targets"])
PERSONAS = _lines(_FILLERS["personas"])

# Members of simple groups, for continue/sort/classify tasks built from the RNG.
GROUPS = {
    title.removeprefix("group: "): _lines(block) for title, block in _FILLERS.items() if title.startswith("group: ")
}

FIRST_NAMES = _lines(_FILLERS["first_names"])
LAST_NAMES = _lines(_FILLERS["last_names"])


# ---------------------------------------------------------------------------------------------
# Conversations for multi-turn rows (conversations.txt).


@dataclass(frozen=True)
class Conversation:
    kind: str  # prose, code, creative, math: picks the generic follow-ups that fit
    turns: tuple[dict, ...]
    followups: tuple[str, ...]


def _conversations(block: str) -> list[Conversation]:
    """Entries separated by blank lines: "[kind]", then U:/A: turns in order, then F: lines, each
    one possible last user turn. Lines without a tag continue the turn above (code, poems)."""
    out = []
    for entry in block.strip().split("\n\n"):
        lines = entry.strip().splitlines()
        kind = lines[0].strip("[]")
        turns: list[dict] = []
        followups: list[str] = []
        for line in lines[1:]:
            tag, _, rest = line.partition(": ")
            if tag in ("U", "A"):
                turns.append({"role": "user" if tag == "U" else "assistant", "content": rest})
            elif tag == "F":
                followups.append(rest)
            else:
                turns[-1]["content"] += "\n" + line.rstrip()
        out.append(Conversation(kind, tuple(turns), tuple(followups)))
    return out


CONVERSATIONS = _conversations(_sections("conversations")["conversations"])
GENERIC_FOLLOWUPS = {
    title.removeprefix("generic_followups: "): _lines(block)
    for title, block in _sections("conversations").items()
    if title.startswith("generic_followups: ")
}
PASSAGE_FOLLOWUPS = _lines(_sections("conversations")["passage_followups"])


@dataclass(frozen=True)
class Snippet:
    language: str  # python, javascript
    does: str  # what it does ("adds up the even numbers in a list"), or for a buggy one, its bug
    code: str


def _snippets(block: str) -> list[Snippet]:
    out = []
    for entry in block.strip().split("@@ ")[1:]:
        head, _, code = entry.partition("\n")
        language, does = (s.strip() for s in head.split("|"))
        out.append(Snippet(language, does, code.strip("\n")))
    return out


SNIPPETS = _snippets(_sections("snippets")["snippets"])
BUGGY_SNIPPETS = _snippets(_sections("snippets")["buggy_snippets"])


# ---------------------------------------------------------------------------------------------
# Text transforms for proofreading tasks.

MISSPELLINGS = dict(_pairs(_FILLERS["misspellings"]))


def _typo(word: str, r: random.Random) -> str:
    low = word.lower()
    if low in MISSPELLINGS and r.random() < 0.7:
        new = MISSPELLINGS[low]
        return new.capitalize() if word[0].isupper() else new
    j = r.randrange(1, len(word) - 2)
    kind = r.randrange(3)
    if kind == 0 and word[j] != word[j + 1]:  # swap two letters
        return word[:j] + word[j + 1] + word[j] + word[j + 2 :]
    if kind == 1:  # double a letter
        return word[: j + 1] + word[j:]
    return word[:j] + word[j + 1 :]  # drop a letter


def add_typos(text: str, r: random.Random, num_typos: int) -> str:
    """`text` with `num_typos` words (of 4+ letters) misspelled; spacing and punctuation kept."""
    tokens = re.split(r"(\W+)", text)
    candidates = [i for i, t in enumerate(tokens) if t.isalpha() and len(t) >= 4]
    for i in sorted(r.sample(candidates, min(num_typos, len(candidates)))):
        tokens[i] = _typo(tokens[i], r)
    return "".join(tokens)


def strip_case_and_punctuation(text: str) -> str:
    """Lower case, no sentence punctuation (decimal points and times such as 5:45 survive)."""
    text = re.sub(r"[.,!?;:\"]+(?=\s|$)|\"", "", text.lower())
    return re.sub(r"\s+", " ", text).strip()


# ---------------------------------------------------------------------------------------------
# Prompts whose numbers come from the RNG: math, sequences, tables of records, and the
# multi-turn rows built from the conversations and passages above (their fillers: fillers.txt).

SHOP_ITEMS = _pairs(_FILLERS["shop_items"])
SHARE_THINGS = _lines(_FILLERS["share_things"])
VEHICLES = _pairs(_FILLERS["vehicles"])
ROOMS = _lines(_FILLERS["rooms"])
RECIPE_AMOUNTS = _pairs(_FILLERS["recipe_amounts"])
EVENTS = _lines(_FILLERS["events"])
UNITS = _pairs(_FILLERS["units"])
SAVINGS_GOALS = _pairs(_FILLERS["savings_goals"])
GROCERIES = _pairs(_FILLERS["groceries"])
APPOINTMENTS = _lines(_FILLERS["appointments"])
DAYS = _lines(_FILLERS["days"])
MONTHS = _lines(_FILLERS["months"])


def _money(x: float) -> str:
    return f"{x:.2f}" if x != int(x) else str(int(x))


def _item(r: random.Random) -> tuple[str, str, int]:
    singular, plural, low, high = r.choice(SHOP_ITEMS)
    return singular, plural, r.randint(int(low), int(high))


def _article(word: str) -> str:
    return ("an " if word[0].lower() in "aeiou" else "a ") + word


def math_shopping(r):
    (_, p1, c1), (_, p2, c2) = _item(r), _item(r)
    a, b, name = r.randint(2, 9), r.randint(2, 6), r.choice(FIRST_NAMES)
    if p1 == p2:
        return f"{name} buys {a} {p1} at {c1} dollars each. What is the total cost?"
    return r.choice([
        f"{name} buys {a} {p1} at {c1} dollars each and {b} {p2} at {c2} dollars each. How much is that altogether?",
        f"At a market stall, {p1} cost {c1} dollars each and {p2} cost {c2} dollars each. What do {a} {p1} and {b} {p2} cost in total?",
    ])


def math_change(r):
    _, plural, price = _item(r)
    n = r.randint(2, 6)
    note = next(v for v in (20, 50, 100, 200) if v > n * price)
    return f"{r.choice(FIRST_NAMES)} pays for {n} {plural} costing {price} dollars each with a {note}-dollar note. How much change should come back?"


def math_speed(r):
    vehicle, low, high = r.choice(VEHICLES)
    v, t = r.randint(int(low), int(high)), r.choice([1.5, 2, 2.5, 3, 4, 5])
    d = _money(v * t)
    if r.random() < 0.5:
        return f"A {vehicle} covers {d} kilometers in {_money(t)} hours at a steady pace. What is its average speed in kilometers per hour?"
    return f"A {vehicle} keeps up an average of {v} km/h. How many hours does a trip of {d} km take?"


def math_area(r):
    room, a, b = r.choice(ROOMS), r.randint(3, 14), r.randint(2, 9)
    if r.random() < 0.5:
        return f"A {room} measures {a} m by {b} m. Find its area and its perimeter."
    return f"Floor tiles cost {r.randint(12, 45)} dollars per square meter. How much will it cost to tile a {room} that measures {a} m by {b} m?"


def math_percent(r):
    price = r.randint(2, 30) * 10
    off = r.choice([10, 15, 20, 25, 30, 40, 50])
    return r.choice([
        f"A jacket costs {price} dollars and is on sale for {off}% off. What is the sale price?",
        f"What is {off}% of {price}?",
        f"A restaurant bill is {price} dollars. How much is a {r.choice([10, 15, 20])}% tip, and what is the total with the tip?",
        f"A town had {price * 100} residents. The population grew by {off // 5}% this year. How many people live there now?",
    ])


def math_average(r):
    scores = [r.randint(55, 100) for _ in range(r.randint(3, 6))]
    return f"{r.choice(FIRST_NAMES)}'s test scores are {', '.join(map(str, scores[:-1]))} and {scores[-1]}. What is the average score?"


def math_share(r):
    people, things = r.randint(3, 9), r.choice(SHARE_THINGS)
    total = people * r.randint(3, 15) + r.randint(0, people - 1)
    return f"{people} friends share {total} {things} as equally as they can. How many does each friend get, and how many are left over?"


def math_equation(r):
    x, a, b = r.randint(-9, 15), r.randint(2, 9), r.randint(1, 30)
    if r.random() < 0.5:
        return f"Solve for x: {a}x + {b} = {a * x + b}."
    c = r.randint(1, 9)
    return f"Solve {a}(x - {c}) = {a * (x - c)} and check your answer."


def math_recipe(r):
    ingredient, unit = r.choice(RECIPE_AMOUNTS)
    serves, wanted = r.choice([(2, 6), (4, 6), (4, 10), (3, 9), (6, 9), (8, 2), (4, 3)])
    amount = r.randint(2, 12) * 25
    return f"A recipe for {serves} people needs {amount} {unit} of {ingredient}. How much {ingredient} is needed for {wanted} people?"


def math_clock(r):
    h, m, dur = r.randint(7, 20), r.choice([0, 10, 15, 20, 30, 40, 45, 50]), r.randint(35, 200)
    return f"A {r.choice(EVENTS)} starts at {h}:{m:02d} and lasts {dur} minutes. At what time does it end?"


def math_ages(r):
    n1, n2 = r.sample(FIRST_NAMES, 2)
    young, gap, years = r.randint(4, 30), r.randint(2, 25), r.randint(2, 10)
    total = 2 * young + gap + 2 * years
    return f"{n1} is {gap} years older than {n2}. In {years} years, their ages will add up to {total}. How old is each of them now?"


def math_convert(r):
    small, big, factor = r.choice(UNITS)
    n = r.choice([1.5, 2, 2.5, 3, 4, 5, 6, 8, 12])
    if r.random() < 0.5:
        return f"How many {small} are there in {_money(n)} {big}?"
    return f"Convert {int(n * int(factor))} {small} into {big}."


def math_expression(r):
    a, b, c = r.randint(11, 99), r.randint(3, 29), r.randint(5, 99)
    return r.choice([
        f"Calculate {a} × {b} − {c}, showing your steps.",
        f"Work out ({a} + {b}) × {c % 9 + 2} step by step.",
        f"What is {a * 4} divided by {4 if a % 2 else 8}?",
        f"Compute {a}² − {b}².",
    ])


def math_savings(r):
    thing, low, high = r.choice(SAVINGS_GOALS)
    price, weekly = r.randint(int(low), int(high)), r.choice([5, 8, 10, 12, 15, 20, 25])
    return f"{r.choice(FIRST_NAMES)} saves {weekly} dollars a week to buy a {thing} that costs {price} dollars. How many weeks will it take?"


def math_fraction(r):
    num, den = r.choice([(1, 3), (2, 3), (3, 4), (2, 5), (3, 5), (5, 8), (3, 10), (7, 12)])
    total = den * r.randint(2, 20)
    return r.choice([
        f"What is {num}/{den} of {total}?",
        f"A class has {total} pupils and {num}/{den} of them walk to school. How many pupils do not walk?",
        f"Add {num}/{den} and 1/{r.choice([2, 6, 7, 9])}, and simplify the result.",
    ])


def math_divisors(r):
    n = r.randint(24, 240)
    a, b = r.randint(4, 30), r.randint(4, 30)
    return r.choice([
        f"List all the divisors of {n}.",
        f"Is {r.randrange(31, 400, 2)} a prime number? Show how you checked.",
        f"What is the least common multiple of {a} and {b}?",
        f"Find the greatest common divisor of {a * 6} and {b * 6}.",
    ])


def math_interest(r):
    p, rate, years = r.randint(5, 80) * 100, r.choice([2, 3, 4, 5, 6]), r.randint(2, 8)
    if r.random() < 0.5:
        return f"How much simple interest do {p} dollars earn in {years} years at {rate}% per year?"
    return f"If {p} dollars earn {rate}% interest per year, compounded yearly, how much is there after {years} years?"


def math_probability(r):
    red, blue, green = r.randint(1, 9), r.randint(1, 9), r.randint(1, 9)
    color = r.choice(["red", "blue", "green", "not blue"])
    return f"A bag holds {red} red, {blue} blue and {green} green marbles. If you pick one without looking, what is the probability that it is {color}?"


def sequence_count(r):
    start, step, n = r.randint(2, 60), r.choice([2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 15, 25]), r.randint(8, 20)
    end = start + step * (n - 1)
    if r.random() < 0.5:
        return f"Count from {start} to {end} in steps of {step}."
    return f"Count down from {end} to {start} in steps of {step}, {r.choice(['one number per line', 'separated by commas'])}."


def sequence_table(r):
    n = r.choice([k for k in range(2, 26) if k != 3])
    return f"Write out the multiplication table for {n}, from {n} x 1 up to {n} x {r.choice([10, 12, 15])}."


def sequence_ordered(r):
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    i = r.randrange(0, 14)
    j = r.randrange(i + 6, 26)
    return r.choice([
        f"List the months of the year starting from {r.choice(MONTHS[1:])} and wrapping around to the start.",
        f"Name the days of the week beginning with {r.choice(DAYS[1:])}, one per line.",
        f"List the first {r.randint(8, 20)} prime numbers.",
        f"Write the first {r.randint(8, 20)} square numbers.",
        f"List the powers of 2 from 1 up to {2 ** r.randint(8, 16)}.",
        f"Write the odd numbers between {r.randint(10, 60)} and {r.randint(70, 130)}.",
        f"Write the letters from {letters[i]} to {letters[j]}, each followed by its position in the alphabet.",
        f"Write the Roman numerals from I to {['X', 'XV', 'XX', 'XXV', 'XXX'][r.randrange(5)]}.",
    ])


def sequence_next(r):
    kind = r.randrange(4)
    a, d = r.randint(1, 30), r.randint(2, 13)
    if kind == 0:
        seq = [a + d * k for k in range(5)]
    elif kind == 1:
        seq = [a * r.choice([2, 3]) ** k for k in range(5)] if a < 10 else [a - d * k for k in range(5)]
    elif kind == 2:
        seq = [(k + a % 5 + 1) ** 2 for k in range(5)]
    else:
        seq = [a, a + d]
        while len(seq) < 6:
            seq.append(seq[-1] + seq[-2])
    return f"What are the next three numbers in this sequence, and what is the rule? {', '.join(map(str, seq))}, ..."


def sequence_words(r):
    a = r.randint(1, 990)
    return f"Write the numbers from {a} to {a + r.randint(7, 14)} in words."


def _people(r: random.Random, k: int) -> list[tuple[str, int, str, str]]:
    firsts, lasts = r.sample(FIRST_NAMES, k), r.sample(LAST_NAMES, k)
    return [(f"{f} {l}", r.randint(19, 68), r.choice(GROUPS["cities"]), r.choice(GROUPS["jobs"])) for f, l in zip(firsts, lasts)]


def _people_text(r: random.Random, people) -> str:
    style = r.randrange(3)
    if style == 0:
        forms = [
            "{n} is {a} and works as {j} in {c}.",
            "{n}, {a}, is {j} based in {c}.",
            "{n} ({a}) lives in {c} and works as {j}.",
        ]
        return " ".join(r.choice(forms).format(n=n, a=a, c=c, j=_article(j)) for n, a, c, j in people)
    if style == 1:
        return "\n".join(f"- {n.lower()} / {a} / {c.lower()} / {j}" for n, a, c, j in people)
    return "; ".join(f"{n}, {a}, {c}, {j}" for n, a, c, j in people)


def reformat_records(r):
    people = _people(r, r.randint(3, 5))
    task = r.choice([
        "Make a Markdown table of these people, with one column each for name, age, city and job:",
        "Convert these details into a JSON list of objects with the keys name, age, city and job:",
        "Write this information as CSV with a header row (name,age,city,job):",
        "List these people sorted from youngest to oldest, one per line, as 'Name (age), job, city':",
    ])
    return f"{task}\n\n{_people_text(r, people)}"


def reformat_receipt(r):
    items = r.sample(GROCERIES, r.randint(3, 6))
    lines = "\n".join(f"{r.randint(1, 4)} x {name} @ {price}" for name, price in items)
    return f"Here is my shopping receipt:\n\n{lines}\n\nPut it in a table with a line total for each item and the overall total at the bottom."


def reformat_schedule(r):
    entries = []
    for what in r.sample(APPOINTMENTS, r.randint(4, 6)):
        day = r.choice(DAYS)[:3].lower() if r.random() < 0.5 else r.choice(DAYS)
        entries.append(f"{day} {r.randint(7, 20)}:{r.choice(['00', '15', '30', '45'])} {what}")
    sep = r.choice(["; ", ", ", "\n"])
    return f"Rewrite my notes for this week as a tidy schedule, sorted by day and time:\n\n{sep.join(entries)}"


def _group_items(r: random.Random, k: int) -> tuple[str, list[str]]:
    label = r.choice(list(GROUPS))
    return label, r.sample(GROUPS[label], k)


def repeat_continue_list(r):
    label, items = _group_items(r, r.randint(3, 5))
    n = r.randint(3, 6)
    if r.random() < 0.5:
        bullets = "\n".join(f"- {x}" for x in items)
        return f"Continue this list of {label} with {n} more, in the same format:\n\n{bullets}"
    return f"Here are some {label}: {', '.join(items)}. Add {n} more to the list, keeping the same style."


def repeat_sort(r):
    label, items = _group_items(r, r.randint(5, 8))
    return r.choice([
        f"Sort these {label} alphabetically: {', '.join(items)}.",
        f"Put these words in alphabetical order, one per line: {', '.join(items)}.",
        "Write this list in reverse order:\n\n" + "\n".join(f"{i}. {x}" for i, x in enumerate(items, 1)),
        f"Number these {label}, keeping their order: {', '.join(items)}.",
    ])


def classify_sort(r):
    (la, lb) = r.sample(list(GROUPS), 2)
    items = r.sample(GROUPS[la], r.randint(3, 4)) + r.sample(GROUPS[lb], r.randint(3, 4))
    r.shuffle(items)
    return f"Sort these into two groups, {la} and {lb}: {', '.join(items)}."


def classify_odd_one_out(r):
    la, lb = r.sample(list(GROUPS), 2)
    items = r.sample(GROUPS[la], 3) + [r.choice(GROUPS[lb])]
    r.shuffle(items)
    return f"Which one does not belong, and why? {', '.join(items)}"


def qa_statement(r):
    prose = [p for p in PASSAGES if p.kind not in ("dialogue", "casual")]
    passage = r.choice(prose)
    source = passage if r.random() < 0.5 else r.choice(prose)  # the claim is in the text, or is not
    claim = r.choice([s for s in re.split(r"(?<=[.!?])\s+", source.text) if len(s.split()) >= 5])
    return f"Does the text below say this: \"{claim}\"? Answer yes or no, and quote the sentence that shows it.\n\n{passage.text}"


def code_port(r):
    snippet = r.choice(SNIPPETS)
    language = r.choice([x for x in CODE_LANGUAGES if x.lower() != snippet.language])
    return f"Rewrite this {snippet.language.capitalize()} code in {language}:\n\n{snippet.code}"


def multi_turn_followup(r):
    conversation = r.choice(CONVERSATIONS)
    return [*map(dict, conversation.turns), {"role": "user", "content": r.choice(conversation.followups)}]


def multi_turn_generic(r):
    conversation = r.choice(CONVERSATIONS)
    return [*map(dict, conversation.turns), {"role": "user", "content": r.choice(GENERIC_FOLLOWUPS[conversation.kind])}]


def multi_turn_passage(r):
    passage = r.choice(PASSAGES)
    ask = r.choice(["Can you read this and tell me what it is about?", "What is this text about?", "Here is something I found. What is it?"])
    label = KIND_LABELS[passage.kind]
    answer = r.choice([f"It is {label} about {passage.about}.", f"This is {label} about {passage.about}.", f"Sure. It's {label} about {passage.about}."])
    return [
        {"role": "user", "content": f"{ask}\n\n{passage.text}"},
        {"role": "assistant", "content": answer},
        {"role": "user", "content": r.choice(PASSAGE_FOLLOWUPS)},
    ]


def multi_turn_code(r):
    snippet = r.choice(SNIPPETS)
    other = "Python" if snippet.language == "javascript" else "JavaScript"
    followups = [
        "Can you add comments to it?", f"Rewrite it in {other}.", "How could I make it shorter?",
        "Write two test cases for it.", "What happens if the input is empty?", "Can you give the function a better name?",
    ]
    return [
        {"role": "user", "content": f"What does this code do?\n\n{snippet.code}"},
        {"role": "assistant", "content": f"It {snippet.does}."},
        {"role": "user", "content": r.choice(followups)},
    ]


def multi_turn_math(r):
    _, plural, price = _item(r)
    n = r.randint(2, 9)
    if r.random() < 0.5:
        follow = r.choice([
            f"And if I buy {n + r.randint(1, 5)} instead?",
            f"What if they were {r.choice([10, 20, 25, 50])}% off?",
            f"How much change would I get from {next(v for v in (20, 50, 100, 200) if v > n * price)} dollars?",
            "Can you check that another way?",
        ])
        return [
            {"role": "user", "content": f"I'm buying {n} {plural} at {price} dollars each. How much is that?"},
            {"role": "assistant", "content": f"{n} × {price} = {n * price}, so the total is {n * price} dollars."},
            {"role": "user", "content": follow},
        ]
    v, t = r.choice([40, 50, 60, 75, 80, 90, 100, 120]), r.choice([2, 3, 4, 5])
    return [
        {"role": "user", "content": f"If I drive at {v} km/h, how long does a {v * t} km trip take?"},
        {"role": "assistant", "content": f"{v * t} ÷ {v} = {t}, so it takes {t} hours."},
        {"role": "user", "content": r.choice([
            f"And at {v + r.choice([10, 20, 30])} km/h?", "What if I stop for a 30-minute break on the way?", f"How far would I get in {t + 2} hours?",
        ])},
    ]


def _persona(user_text: str) -> Callable[[random.Random], list]:
    def make(r):
        return [{"role": "system", "content": r.choice(PERSONAS)}, {"role": "user", "content": _fill(user_text, r)}]

    return make


# ---------------------------------------------------------------------------------------------
# Slots and templates.

PROSE_KINDS = "news,product,email,recipe,instructions,history,science,story,notice,review,bio"
_SLOT = re.compile(r"\{(\w+)(?::([\w,]+))?(?:#(\d))?(?:\.(\d))?\}")
_ALTERNATIVES = re.compile(r"\[\[(.+?)\]\]", re.DOTALL)
_passage_pools: dict[str | None, list[Passage]] = {}


def _passage_pool(kinds: str | None) -> list[Passage]:
    if kinds not in _passage_pools:
        wanted = kinds.split(",") if kinds else list(KIND_LABELS)
        unknown = [k for k in wanted if k not in KIND_LABELS]
        if unknown:
            raise ValueError(f"unknown passage kinds {unknown}; known: {sorted(KIND_LABELS)}")
        _passage_pools[kinds] = [p for p in PASSAGES if p.kind in wanted]
    return _passage_pools[kinds]


def _pick(seq):
    return lambda r, arg: r.choice(seq)


SLOTS: dict[str, Callable[[random.Random, Union[str, None]], object]] = {
    "concept": _pick(CONCEPTS),
    "audience": _pick(AUDIENCES),
    "why": _pick(WHY),
    "process": _pick(PROCESSES),
    "invention": _pick(INVENTIONS),
    "list_subject": _pick(LIST_SUBJECTS),
    "trip": _pick(TRIPS),
    "meal_plan": _pick(MEAL_PLANS),
    "checklist_goal": _pick(CHECKLIST_GOALS),
    "howto": _pick(HOWTO_TASKS),
    "pair": _pick(COMPARE_PAIRS),
    "choice": _pick(CHOICES),
    "code_language": _pick(CODE_LANGUAGES),
    "code_task": _pick(CODE_TASKS),
    "code_concept": _pick(CODE_CONCEPTS),
    "sql": _pick(SQL_TASKS),
    "shell_task": _pick(SHELL_TASKS),
    "regex_target": _pick(REGEX_TARGETS),
    "error": _pick(ERRORS),
    "situation": _pick(SITUATIONS),
    "recommend": _pick(RECOMMENDATIONS),
    "good_thing": _pick(GOOD_THINGS),
    "fact_topic": _pick(FACT_TOPICS),
    "joke_topic": _pick(JOKE_TOPICS),
    "goal": _pick(GOALS),
    "mail": _pick(MAIL),
    "text_purpose": _pick(TEXT_PURPOSES),
    "complaint": _pick(COMPLAINTS),
    "character": _pick(CHARACTERS),
    "story_event": _pick(STORY_EVENTS),
    "setting": _pick(SETTINGS),
    "poem_subject": _pick(POEM_SUBJECTS),
    "poem_form": _pick(POEM_FORMS),
    "genre": _pick(GENRES),
    "dialogue_topic": _pick(DIALOGUE_TOPICS),
    "riddle": _pick(RIDDLE_ANSWERS),
    "language": _pick(LANGUAGES),
    "en_sentence": _pick(EN_SENTENCES),
    "en_quote": lambda r, arg: r.choice(EN_SENTENCES).removesuffix("."),
    "foreign": _pick(FOREIGN_SENTENCES),
    "word": _pick(WORDS),
    "phrase": _pick(PHRASES),
    "reading_q": _pick(READING_QUESTIONS),
    "review_line": _pick(REVIEW_LINES),
    "headline": _pick(HEADLINES),
    "statement": _pick(STATEMENTS),
    "name_target": _pick(NAME_TARGETS),
    "idea_target": _pick(IDEA_TARGETS),
    "gift_person": _pick(GIFT_PEOPLE),
    "ask_target": _pick(ASK_TARGETS),
    "name": _pick(FIRST_NAMES),
    "passage": lambda r, arg: r.choice(_passage_pool(arg)).text,
    "typo_passage": lambda r, arg: add_typos(r.choice(_passage_pool(arg or PROSE_KINDS)).text, r, r.randint(4, 7)),
    "lower_passage": lambda r, arg: strip_case_and_punctuation(r.choice(_passage_pool(arg or PROSE_KINDS)).text),
    "snippet": lambda r, arg: r.choice([s for s in SNIPPETS if arg in (None, s.language)]).code,
    "buggy": lambda r, arg: r.choice(BUGGY_SNIPPETS).code,
    "n": lambda r, arg: str(r.randint(3, 7)),
    "few": lambda r, arg: r.choice(["two", "three", "four"]),
}


def _fill(text: str, r: random.Random) -> str:
    """Resolve [[a|b]] phrasings, then {slot} fillers (see the module docstring)."""
    text = _ALTERNATIVES.sub(lambda m: r.choice(m.group(1).split("|")), text)
    drawn: dict[tuple, object] = {}

    def fill(m: re.Match) -> str:
        name, arg, draw, field = m.groups()
        if name not in SLOTS:
            raise ValueError(f"unknown slot {{{name}}} in template {text!r}")
        key = (name, arg, draw)
        if key not in drawn:
            taken = [v for (n, a, _), v in drawn.items() if (n, a) == (name, arg)]
            value = SLOTS[name](r, arg)
            for _ in range(20):  # a second draw of the same slot differs from the first
                if value not in taken:
                    break
                value = SLOTS[name](r, arg)
            drawn[key] = value
        value = drawn[key]
        return value[int(field)] if field is not None else value

    return _SLOT.sub(fill, text)


Maker = Union[str, Callable[[random.Random], Union[str, list]]]


@dataclass(frozen=True)
class Template:
    name: str  # "<category>.<task>"
    category: str
    make: Maker  # a template string, or a function of the RNG -> prompt str | messages
    grounded: bool  # the answer reuses text given in the prompt


# Relative share of each category (see `category_quotas`).
CATEGORY_WEIGHTS = {
    "explain": 8, "list": 4.5, "howto": 5, "compare": 3.5, "code": 9, "math": 7.5, "chat": 5.5,
    "email": 5, "creative": 7, "translation": 5, "summarize": 4, "extraction": 4, "rewrite": 4.5,
    "reformat": 3.5, "repeat": 3, "qa_context": 2, "classify": 3, "brainstorm": 3,
    "sequence": 2.5, "multi_turn": 7, "persona": 2,
}

# The tasks that write their own prompts, for "@name" in templates.txt.
MAKERS: dict[str, Callable[[random.Random], Union[str, list]]] = {f.__name__: f for f in (
    math_shopping, math_change, math_speed, math_area, math_percent, math_average, math_share,
    math_equation, math_recipe, math_clock, math_ages, math_convert, math_expression, math_savings,
    math_fraction, math_divisors, math_interest, math_probability, sequence_count, sequence_table,
    sequence_ordered, sequence_next, sequence_words, reformat_records, reformat_receipt,
    reformat_schedule, repeat_continue_list, repeat_sort, classify_sort, classify_odd_one_out,
    qa_statement, code_port, multi_turn_followup, multi_turn_generic, multi_turn_passage,
    multi_turn_code, multi_turn_math,
)}

_TEMPLATE_LINE = re.compile(r"(\w+)(?: \(([\w, ]+)\))?: (.+)")
TEMPLATE_FLAGS = {"grounded", "persona"}


def _templates(block: str, category: str) -> list[Template]:
    """One template a line: "name: text" or "name (flag, ...): text"; in the text, \\n is a line
    break, and "@name" stands for MAKERS[name]."""
    out = []
    for line in _lines(block):
        m = _TEMPLATE_LINE.fullmatch(line)
        if not m:
            raise ValueError(f"templates.txt, {category}: expected 'name: text' or 'name (flags): text', got {line!r}")
        name, flags, text = m.group(1), {f.strip() for f in (m.group(2) or "").split(",") if f.strip()}, m.group(3)
        if flags - TEMPLATE_FLAGS:
            raise ValueError(f"templates.txt, {category}.{name}: unknown flags {sorted(flags - TEMPLATE_FLAGS)}")
        if text.startswith("@"):
            if text[1:] not in MAKERS:
                raise ValueError(f"templates.txt, {category}.{name}: no task {text[1:]!r} in MAKERS")
            if "persona" in flags:
                raise ValueError(f"templates.txt, {category}.{name}: a persona template needs a text, not a task")
            make: Maker = MAKERS[text[1:]]
        else:
            text = text.replace("\\n", "\n")
            make = _persona(text) if "persona" in flags else text
        out.append(Template(f"{category}.{name}", category, make, "grounded" in flags))
    return out


if set(_sections("templates")) != set(CATEGORY_WEIGHTS):
    raise ValueError(f"the categories of templates.txt, {sorted(_sections('templates'))}, "
                     f"differ from those of CATEGORY_WEIGHTS, {sorted(CATEGORY_WEIGHTS)}")
TEMPLATES = [t for category, block in _sections("templates").items() for t in _templates(block, category)]
TEMPLATES_BY_NAME = {t.name: t for t in TEMPLATES}


def num_fillers() -> int:
    """Distinct hand-written fillers of every kind (passages, conversations, code, words)."""
    pools = [PASSAGES, CONVERSATIONS, SNIPPETS, BUGGY_SNIPPETS, PERSONAS, FIRST_NAMES, LAST_NAMES]
    pools += [seq for name, seq in globals().items() if name.isupper() and isinstance(seq, list) and seq and isinstance(seq[0], (str, tuple))]
    pools += list(GROUPS.values()) + list(GENERIC_FOLLOWUPS.values())
    return len({(type(x).__name__, repr(x)) for pool in pools for x in pool})


# ---------------------------------------------------------------------------------------------
# Sampling.

MAX_MISSES = 30  # consecutive duplicate (or too long) draws before a template counts as used up


def _fits(content) -> bool:
    if isinstance(content, str):
        return len(content) <= MAX_PROMPT_CHARS
    users_fit = all(len(m["content"]) <= MAX_PROMPT_CHARS for m in content if m["role"] == "user")
    return users_fit and sum(len(m["content"]) for m in content) <= MAX_CONVERSATION_CHARS


def category_quotas(num_prompts: int) -> dict[str, int]:
    """`num_prompts` split by CATEGORY_WEIGHTS (largest remainders round up)."""
    total = sum(CATEGORY_WEIGHTS.values())
    exact = {c: num_prompts * w / total for c, w in CATEGORY_WEIGHTS.items()}
    quotas = {c: math.floor(x) for c, x in exact.items()}
    by_remainder = sorted(exact, key=lambda c: (quotas[c] - exact[c], c))
    for c in by_remainder[: num_prompts - sum(quotas.values())]:
        quotas[c] += 1
    return quotas


def build_corpus(num_prompts: int = 6000, seed: int = 0) -> list[dict]:
    """`num_prompts` distinct rows, deterministic in (num_prompts, seed), in sampled order.

    Each draw picks a category still under its quota (by CATEGORY_WEIGHTS), then one of its
    templates, and fills it; a duplicate or over-long prompt is a miss. A template leaves the
    pool after MAX_MISSES misses in a row (its fillers are used up) or once it wrote
    MAX_TEMPLATE_SHARE of the rows. If a category runs out of templates, the others fill its
    quota by weight.
    """
    if num_prompts < 1:
        raise ValueError(f"num_prompts must be >= 1, got {num_prompts}")
    r = random.Random(seed)
    cap = max(1, math.floor(MAX_TEMPLATE_SHARE * num_prompts))
    quotas = category_quotas(num_prompts)
    pool = {c: [t for t in TEMPLATES if t.category == c] for c in CATEGORY_WEIGHTS}
    counts: Counter = Counter()  # rows per template, and per category
    misses: Counter = Counter()
    seen: set[str] = set()
    picked: list[tuple[Template, object]] = []
    while len(picked) < num_prompts:
        open_ = [c for c in pool if pool[c] and counts[c] < quotas[c]] or [c for c in pool if pool[c]]
        if not open_:
            raise ValueError(f"the templates make only {len(picked)} distinct prompts, fewer than num_prompts={num_prompts}")
        category = r.choices(open_, weights=[CATEGORY_WEIGHTS[c] for c in open_])[0]
        t = r.choice(pool[category])
        content = _fill(t.make, r) if isinstance(t.make, str) else t.make(r)
        key = content if isinstance(content, str) else json.dumps(content, sort_keys=True)
        if key in seen or not _fits(content):
            misses[t.name] += 1
            if misses[t.name] >= MAX_MISSES:
                pool[category].remove(t)
            continue
        misses[t.name] = 0
        seen.add(key)
        counts[t.name] += 1
        counts[category] += 1
        picked.append((t, content))
        if counts[t.name] >= cap:
            pool[category].remove(t)
    rows, per_category = [], Counter()
    for t, content in picked:
        per_category[t.category] += 1
        row = {"id": f"corpus-{t.category}-{per_category[t.category]:04d}", "category": t.category, "template": t.name}
        row["prompt" if isinstance(content, str) else "messages"] = content
        rows.append(row)
    return rows


# Passage kinds a reply of the target can stand in for (explanations, how-tos, stories).
REPLY_KINDS = {"news", "instructions", "history", "science", "story", "bio"}
_SOURCE_SLOT = re.compile(r"\{(passage|typo_passage|lower_passage|en_sentence|en_quote)(?::([\w,]+))?\}")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def reply_templates() -> list[Template]:
    """The string templates with one source slot that any prose can fill: a passage of no
    kind outside REPLY_KINDS (with or without typos), or one English sentence."""
    picked = []
    for t in TEMPLATES:
        if not isinstance(t.make, str):
            continue
        slots = _SOURCE_SLOT.findall(t.make)
        if len(slots) != 1 or re.search(r"\{(snippet|buggy|\w+#)", t.make):
            continue
        kinds = slots[0][1]
        if kinds and not set(kinds.split(",")) & REPLY_KINDS:
            continue
        picked.append(t)
    return picked


def _sentences(text: str) -> list[str]:
    return [x for x in _SENTENCE_END.split(text) if 30 <= len(x) <= 160 and x[0].isupper() and x[-1] == "."]


def grounded_in(texts: list[str], num_prompts: int, seed: int = 0) -> list[dict]:
    """Rows whose source text comes from `texts`, each text used at most once.

    `specdec train-draft` feeds the target's own earlier replies here: every prompt then
    quotes prose the head has not seen before, so it has to learn to copy, summarize,
    rewrite and translate from its context rather than recall the few hundred PASSAGES and
    sentences of data/corpus/. The templates are `reply_templates()`, filled as
    `build_corpus` fills them; a sentence slot takes one sentence of the text. Deterministic
    in (texts, seed)."""
    r = random.Random(seed)
    templates = reply_templates()
    takes_passage = {t.name: "passage" in _SOURCE_SLOT.search(t.make).group(1) for t in templates}
    passage_templates = [t for t in templates if takes_passage[t.name]]
    order = list(range(len(texts)))
    r.shuffle(order)
    rows = []
    for i in order[:num_prompts]:
        text = texts[i]
        t = r.choice(templates)
        sentences = _sentences(text)
        if not takes_passage[t.name] and not sentences:
            t = r.choice(passage_templates)
        sentence = r.choice(sentences) if sentences else ""
        source = {"passage": text,
                  "typo_passage": add_typos(text, r, r.randint(4, 7)),
                  "lower_passage": strip_case_and_punctuation(text),
                  "en_sentence": sentence,
                  "en_quote": sentence.removesuffix(".")}
        marked = _SOURCE_SLOT.sub(lambda m: "\x00" + m.group(1) + "\x00", t.make)
        prompt = re.sub("\x00(\\w+)\x00", lambda m: source[m.group(1)], _fill(marked, r))
        rows.append({"id": f"reply-{len(rows):05d}", "category": t.category, "template": t.name, "prompt": prompt})
    return rows


def write_corpus(path: str | Path = DEFAULT_CORPUS, num_prompts: int = 6000, seed: int = 0) -> list[dict]:
    """Build the corpus, check it against the benchmark prompts, write it as JSONL; the rows."""
    rows = build_corpus(num_prompts, seed)
    problems = find_overlaps(rows, eval_user_texts())
    if problems:
        raise ValueError(f"{len(problems)} corpus rows overlap the benchmark prompts, e.g. {problems[:3]}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return rows


def corpus_stats(rows: list[dict]) -> dict:
    templates = Counter(row["template"] for row in rows)
    name, top = templates.most_common(1)[0]
    texts = {row.get("prompt") or json.dumps(row["messages"]) for row in rows}
    return {
        "num_rows": len(rows),
        "num_distinct": len(texts),
        "categories": dict(sorted(Counter(row["category"] for row in rows).items())),
        "num_templates_used": len(templates),
        "num_templates": len(TEMPLATES),
        "max_template": name,
        "max_template_share": round(top / len(rows), 4),
        "grounded_share": round(sum(n for t, n in templates.items() if TEMPLATES_BY_NAME[t].grounded) / len(rows), 4),
        "multi_turn_rows": sum("messages" in row for row in rows),
        "num_fillers": num_fillers(),
    }


# ---------------------------------------------------------------------------------------------
# No overlap with the benchmark prompts.


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def eval_user_texts(prompts_dirs: str | Path | tuple = EVAL_PROMPTS_DIRS) -> list[tuple[str, str]]:
    """(prompt id, text) for every user turn of every benchmark prompt or question in `prompts_dirs`."""
    texts = []
    dirs = (prompts_dirs,) if isinstance(prompts_dirs, (str, Path)) else prompts_dirs
    paths = sorted(p for d in dirs for p in Path(d).glob("*.jsonl"))
    if not paths:
        raise FileNotFoundError(f"no benchmark prompt files (*.jsonl) in {', '.join(map(str, dirs))}")
    for path in paths:
        for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            row = json.loads(line)
            where = str(row.get("id", row.get("question_id", f"{path.name}:{line_no}")))
            if "turns" in row:
                texts.extend((where, turn) for turn in row["turns"])
            elif "prompt" in row:
                texts.append((where, row["prompt"]))
            elif "messages" in row:
                texts.extend((where, m["content"]) for m in row["messages"] if m["role"] == "user")
            else:
                raise ValueError(f"{path}:{line_no}: expected a 'prompt', 'messages' or 'turns' field")
    return texts


def _row_texts(row: dict) -> list[str]:
    return [row["prompt"]] if "prompt" in row else [m["content"] for m in row["messages"]]


def find_overlaps(rows: list[dict], eval_texts: list[tuple[str, str]], ngram: int = OVERLAP_NGRAM) -> list[str]:
    """One line per row that contains a benchmark prompt's text or shares an `ngram`-word run
    with one (words: lower-cased \\w+ runs, so case, spacing and punctuation are ignored)."""
    grams: dict[tuple[str, ...], str] = {}
    short: list[tuple[str, str]] = []  # prompts under `ngram` words: checked by containment
    for eval_id, text in eval_texts:
        words = _words(text)
        if 0 < len(words) < ngram:
            short.append((eval_id, f" {' '.join(words)} "))
        for i in range(len(words) - ngram + 1):
            grams.setdefault(tuple(words[i : i + ngram]), eval_id)
    problems = []
    for row in rows:
        for text in _row_texts(row):
            words = _words(text)
            joined = f" {' '.join(words)} "
            problems += [f"{row['id']}: contains eval prompt {eval_id} ({phrase.strip()!r})" for eval_id, phrase in short if phrase in joined]
            hit = next((g for g in zip(*(words[k:] for k in range(ngram))) if g in grams), None)
            if hit is not None:
                problems.append(f"{row['id']}: shares {' '.join(hit)!r} with eval prompt {grams[hit]}")
    return problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m specdec.train.corpus", description="write the synthetic training prompt corpus")
    p.add_argument("--out", default=str(DEFAULT_CORPUS), help="JSONL path (default: the shipped corpus)")
    p.add_argument("--num-prompts", type=int, default=6000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    rows = write_corpus(args.out, args.num_prompts, args.seed)
    stats = corpus_stats(rows)
    print(json.dumps({"out": args.out, "bytes": Path(args.out).stat().st_size, **stats}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
