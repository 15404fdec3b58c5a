"""The synthetic training corpus: deterministic, well-formed, diverse, and clear of the benchmarks."""

import json
import random
import re
from collections import Counter

import pytest

from specdec.train import corpus
from specdec.train.corpus import (
    DEFAULT_CORPUS,
    MAX_PROMPT_CHARS,
    build_corpus,
    category_quotas,
    corpus_stats,
    eval_user_texts,
    find_overlaps,
    write_corpus,
)
from specdec.train.data import load_conversations

NUM_PROMPTS = 6000
ROW_KEYS = {"id", "category", "template"}


@pytest.fixture(scope="module")
def rows():
    return build_corpus(NUM_PROMPTS, seed=0)


def _text(row):
    return row["prompt"] if "prompt" in row else json.dumps(row["messages"])


def test_same_seed_same_rows_other_seed_other_rows():
    assert build_corpus(500, seed=3) == build_corpus(500, seed=3)
    assert build_corpus(500, seed=3) != build_corpus(500, seed=4)


def test_shipped_file_is_the_default_build(rows):
    shipped = [json.loads(line) for line in DEFAULT_CORPUS.read_text().splitlines()]
    assert shipped == rows, "regenerate: python -m specdec.train.corpus --out src/specdec/data/train_corpus.jsonl --num-prompts 6000"
    assert DEFAULT_CORPUS.stat().st_size < 3_000_000


def test_size_ids_and_distinct_prompts(rows):
    assert len(rows) == NUM_PROMPTS
    assert len({row["id"] for row in rows}) == NUM_PROMPTS
    assert len({_text(row) for row in rows}) == NUM_PROMPTS
    with pytest.raises(ValueError, match="num_prompts"):
        build_corpus(0)


def test_rows_load_as_conversations(rows, tmp_path):
    path = tmp_path / "corpus.jsonl"
    assert write_corpus(path, NUM_PROMPTS, seed=0) == rows
    conversations = load_conversations(path)
    assert len(conversations) == NUM_PROMPTS
    for row, messages in zip(rows, conversations):
        assert set(row) in (ROW_KEYS | {"prompt"}, ROW_KEYS | {"messages"}), row
        assert row["template"] in corpus.TEMPLATES_BY_NAME and row["category"] == corpus.TEMPLATES_BY_NAME[row["template"]].category
        if "messages" in row:
            assert messages == row["messages"]  # nothing trimmed: the row already ends with a user turn
            assert [m["role"] for m in messages][-1] == "user"
            assert {m["role"] for m in messages} <= {"system", "user", "assistant"}
            if row["category"] == "multi_turn":
                assert any(m["role"] == "assistant" for m in messages), row["id"]
        else:
            assert messages == [{"role": "user", "content": row["prompt"]}]
        assert all(m["content"].strip() for m in messages)
        assert all(len(m["content"]) <= MAX_PROMPT_CHARS for m in messages if m["role"] == "user"), row["id"]


def test_templates_fully_resolved(rows):
    slot = re.compile(r"\[\[|\]\]|\{(" + "|".join(corpus.SLOTS) + r")\b")
    assert [row["id"] for row in rows if slot.search(_text(row))] == []


def test_category_coverage(rows):
    counts = Counter(row["category"] for row in rows)
    assert len(counts) >= 15
    assert counts == Counter(category_quotas(NUM_PROMPTS))
    assert {"summarize", "extraction", "rewrite", "reformat", "repeat", "multi_turn", "math", "code"} <= set(counts)


def test_diversity(rows):
    stats = corpus_stats(rows)
    assert stats["num_templates_used"] >= 80
    assert stats["max_template_share"] <= 0.05
    assert stats["num_fillers"] >= 500
    assert 0.2 <= stats["grounded_share"] <= 0.4
    assert stats["multi_turn_rows"] >= 300
    assert len(corpus.PASSAGES) >= 120
    assert len({p.text for p in corpus.PASSAGES}) == len(corpus.PASSAGES)
    assert all(len(p.text) <= 450 for p in corpus.PASSAGES)
    assert set(corpus.KIND_LABELS) == {p.kind for p in corpus.PASSAGES}


@pytest.mark.parametrize("seed", [0, 1])
def test_no_overlap_with_benchmark_prompts(rows, seed):
    built = rows if seed == 0 else build_corpus(NUM_PROMPTS, seed)
    eval_texts = eval_user_texts()
    assert len(eval_texts) >= 80  # every benchmark file was read
    assert find_overlaps(built, eval_texts) == []


def test_find_overlaps_flags_copies_and_long_shared_runs():
    eval_texts = [("e-short", "Why is the sky blue?"), ("e-long", "Write a poem about the quiet harbor at the break of dawn.")]
    rows = [
        {"id": "contains", "prompt": "Quick one:  WHY is the sky blue?! Thanks."},
        {"id": "eight", "messages": [{"role": "user", "content": "Please write a POEM about the quiet harbor at the break, today."}]},
        {"id": "seven", "prompt": "Poem about the quiet harbor at the edge of town."},
        {"id": "short-word-run", "prompt": "Why is the sky bluer in winter?"},
    ]
    problems = find_overlaps(rows, eval_texts)
    assert [p.split(":")[0] for p in problems] == ["contains", "eight"]
    assert "e-short" in problems[0] and "e-long" in problems[1]


def test_typos_and_lowercasing_keep_the_text_recognizable():
    text = corpus.PASSAGES[0].text
    typoed = corpus.add_typos(text, random.Random(0), 5)
    changed = [(a, b) for a, b in zip(re.split(r"(\W+)", text), re.split(r"(\W+)", typoed)) if a != b]
    assert len(changed) == 5 and all(a.isalpha() and b.isalpha() for a, b in changed)
    assert corpus.strip_case_and_punctuation('Buses leave at 5:45 am, costing 1.80. "Great!" she said.') == "buses leave at 5:45 am costing 1.80 great she said"


REPLIES = [
    "Bees carry pollen from flower to flower. Without them many fruits would never form. A single hive can visit millions of blossoms in one summer.",
    "To boil an egg, put it in cold water and heat the pot. Once the water boils, wait about eight minutes. Then cool the egg under the tap before you peel it.",
    "The old lighthouse stood on the cliff for two hundred years. Its keeper climbed the stairs every evening to light the lamp. Ships far out at sea trusted that light.",
] * 7  # 21 texts; rows may quote the same words but draw each text index once


def test_grounded_in_quotes_each_given_text_once():
    rows = corpus.grounded_in(REPLIES, 15, seed=3)
    assert rows == corpus.grounded_in(REPLIES, 15, seed=3)
    assert rows != corpus.grounded_in(REPLIES, 15, seed=4)
    assert len(rows) == 15 and len(corpus.grounded_in(REPLIES, 100, seed=3)) == len(REPLIES)
    names = {t.name for t in corpus.reply_templates()}
    for row in rows:
        assert row["template"] in names and set(row) == ROW_KEYS | {"prompt"}
        prompt = row["prompt"]
        assert "{" not in prompt and "[[" not in prompt and "\x00" not in prompt
        sentences = [s for text in REPLIES for s in re.split(r"(?<=\.)\s+", text)]
        quoted = any(text in prompt for text in REPLIES) or any(s.removesuffix(".") in prompt for s in sentences)
        lowered = any(corpus.strip_case_and_punctuation(text) in prompt for text in REPLIES)
        assert quoted or lowered or row["template"] == "rewrite.typos", prompt


def test_reply_templates_take_any_prose():
    templates = corpus.reply_templates()
    categories = {t.category for t in templates}
    assert {"summarize", "repeat", "rewrite", "translation", "extraction"} <= categories
    for t in templates:  # no template that needs an email, a recipe, code or a second passage
        assert not re.search(r"\{(passage|typo_passage|lower_passage):(email|recipe|product|dialogue|casual|review)\}", t.make)
        assert "{snippet" not in t.make and "{buggy" not in t.make and "#2" not in t.make
