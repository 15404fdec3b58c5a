"""Spec-Bench-form questions in `specdec bench`: the "turns" form, the shipped held-out
questions, later turns prompted with each config's own answers, and the per-category table."""

from __future__ import annotations

import io
import json
import math
import statistics
from collections import defaultdict
from importlib.resources import files
from types import SimpleNamespace

import pytest

from specdec.bench.peers import Measurement, Peer
from specdec.bench.runner import encode, run_rounds
from specdec.bench.workloads import GROUPS, Prompt, load_workload
from specdec.cli import main

QUESTIONS = [
    {"question_id": 1, "category": "multi_turn",
     "turns": ["Name a fruit that is yellow.", "Now name one that is red, and say where it grows."]},
    {"question_id": "q2", "category": "qa", "turns": ["How many days are there in a leap year?"]},
]


def write_jsonl(path, rows) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


# ---------------------------------------------------------------------------------------
# the file form


def test_questions_parse_into_turns_and_samples(tmp_path):
    first, second = load_workload(path=write_jsonl(tmp_path / "q.jsonl", QUESTIONS))
    assert first == Prompt("1", "multi_turn", turns=QUESTIONS[0]["turns"])
    assert (first.num_turns, second.num_turns) == (2, 1)
    assert first.as_messages() == [{"role": "user", "content": "Name a fruit that is yellow."}]
    t1 = first.sample([])
    assert t1.id == "1/turn1" and t1.messages == first.as_messages() and t1.category == "multi_turn"
    t2 = first.sample(["A banana."])
    assert t2.id == "1/turn2" and [m["role"] for m in t2.messages] == ["user", "assistant", "user"]
    assert t2.messages[1]["content"] == "A banana." and t2.messages[2]["content"] == QUESTIONS[0]["turns"][1]
    assert second.sample([]).id == "q2"  # a one-turn question keeps its id
    with pytest.raises(ValueError, match="no turn 3"):
        first.sample(["a", "b"])
    with pytest.raises(ValueError, match="no turn 2"):
        Prompt("p", "qa", prompt="hi").sample(["an answer"])
    assert [p.id for p in load_workload(["qa"], path=str(tmp_path / "q.jsonl"))] == ["q2"]


@pytest.mark.parametrize("line, message", [
    ({"question_id": 9, "category": "qa"}, 'question 9 has no "turns"'),
    ({"question_id": 9, "turns": []}, '"turns" must be a non-empty list'),
    ({"question_id": 9, "turns": "Hi there"}, '"turns" must be a non-empty list'),
    ({"question_id": 9, "turns": ["Hi", "  "]}, "turns[1] is empty"),
    ({"question_id": 9, "turns": ["Hi", 3]}, "turns[1] must be a string, got int"),
    ({"question_id": 1, "turns": ["again"]}, "duplicate question_id '1' (first on line 1)"),
    ({"question_id": 9, "id": "x", "turns": ["Hi"]}, 'one of "id" or "question_id", got both'),
    ({"question_id": 9, "prompt": "Hi", "turns": ["Hi"]}, "got prompt and turns"),
    ({"question_id": None, "turns": ["Hi"]}, '"question_id" must be a non-empty string or an integer'),
])
def test_bad_question_files_name_file_line_and_fault(tmp_path, line, message):
    path = write_jsonl(tmp_path / "bad.jsonl", [QUESTIONS[0], line])
    with pytest.raises(ValueError) as e:
        load_workload(path=path)
    assert message in str(e.value) and f"{path}:2" in str(e.value)


# ---------------------------------------------------------------------------------------
# the shipped held-out questions


def test_shipped_questions_cover_spec_bench_categories():
    questions = load_workload(["spec_bench_heldout"])
    by_cat = defaultdict(list)
    for q in questions:
        by_cat[q.category].append(q)
    assert list(by_cat) == list(GROUPS["spec_bench"])
    assert all(len(qs) >= 4 for qs in by_cat.values())
    assert all(q.num_turns == 2 for q in by_cat["multi_turn"])
    assert all(q.num_turns == 1 for cat, qs in by_cat.items() if cat != "multi_turn" for q in qs)
    assert all("Question:" in q.turns[0] and "Document 3:" in q.turns[0] for q in by_cat["rag"])
    assert all(60 <= len(q.turns[0].partition("\n\n")[2].split()) <= 150 for q in by_cat["summarization"])
    assert not {q.id for q in questions} & {p.id for p in load_workload()}  # held out of "all"
    assert [q.category for q in load_workload(["spec_bench_heldout"], max_per_category=1)] == list(GROUPS["spec_bench"])


def test_shipped_questions_share_no_text_with_training_or_bench_prompts():
    """No question contains a training or bench prompt or shares an 8-word run with one, and back."""
    from specdec.train.corpus import EVAL_PROMPTS_DIRS, eval_user_texts, find_overlaps

    def user_texts(row):
        return [row["prompt"]] if "prompt" in row else [m["content"] for m in row["messages"] if m["role"] == "user"]

    data = files("specdec") / "data"
    train = [json.loads(line) for name in ("train_prompts.jsonl", "train_corpus.jsonl")
             for line in (data / name).read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(train) > 6000
    train_texts = [(row["id"], text) for row in train for text in user_texts(row)]
    questions = load_workload(["spec_bench_heldout"])
    rows = [{"id": f"{q.id}/{i}", "prompt": turn} for q in questions for i, turn in enumerate(q.turns)]
    bench = [t for t in eval_user_texts(EVAL_PROMPTS_DIRS) if not t[0].startswith(tuple(q.id for q in questions))]
    assert len(bench) < len(eval_user_texts(EVAL_PROMPTS_DIRS))  # the training overlap guard reads the questions too
    assert find_overlaps(rows, train_texts + bench) == []
    assert find_overlaps(train, [(r["id"], r["prompt"]) for r in rows]) == []


# ---------------------------------------------------------------------------------------
# later turns follow each contender's own answers


class Scripted(Peer):
    """Answers every turn with its own fixed tokens; remembers what it was prompted with."""

    draft_n = None

    def __init__(self, name: str, answer: list[int]) -> None:
        self.name, self.answer, self.seen = name, answer, []

    def measure_once(self, prompt, prompt_ids, temperature, max_tokens, seed) -> Measurement:
        self.seen.append((prompt, list(prompt_ids), seed))
        return Measurement(list(self.answer), 0.01, 0.02, [0.01, 0.01], [1, 1])


def test_later_turns_are_prompted_with_the_contenders_own_answers(default_tokenizer, tmp_path):
    tok = default_tokenizer
    questions = load_workload(path=write_jsonl(tmp_path / "q.jsonl", QUESTIONS))
    a = Scripted("a", tok.encode(" Lemons are yellow.", add_special_tokens=False))
    b = Scripted("b", tok.encode(" A ripe banana!", add_special_tokens=False))
    first_ids = [encode(tok, q) for q in questions]
    args = SimpleNamespace(temperature=[0.0], repeats=1, max_tokens=8, seed=0)
    out = tmp_path / "records.jsonl"
    with open(out, "w") as f:
        records = run_rounds([a, b], questions, first_ids, args, f, tok)
    for c, answer in ((a, " Lemons are yellow."), (b, " A ripe banana!")):
        seen = {p.id: (p, ids, seed) for p, ids, seed in c.seen[1:]}  # after the warm-up
        assert list(seen) == ["1/turn1", "1/turn2", "q2"]
        turn2, ids, seed = seen["1/turn2"]
        assert turn2.messages == [{"role": "user", "content": QUESTIONS[0]["turns"][0]},
                                  {"role": "assistant", "content": answer},
                                  {"role": "user", "content": QUESTIONS[0]["turns"][1]}]
        assert ids == encode(tok, turn2)
        assert seed != seen["1/turn1"][2]  # each turn its own seed
    assert [(r["prompt_id"], r["turn"], r["category"]) for r in records if r["contender"] == "b@T0"] == \
        [("1/turn1", 1, "multi_turn"), ("1/turn2", 2, "multi_turn"), ("q2", 1, "qa")]
    # every contender's turn 1 runs before any turn 2 (interleaved turn by turn)
    assert [r["prompt_id"] for r in records][:4] == ["1/turn1", "1/turn1", "1/turn2", "1/turn2"]
    assert len(out.read_text().splitlines()) == len(records) == 6
    with pytest.raises(ValueError, match="need the tokenizer"):
        run_rounds([a], questions, first_ids, args, io.StringIO())


# ---------------------------------------------------------------------------------------
# end to end on the tiny pair: greedy equality and the table's arithmetic


def expected_cells(records: list[dict], name: str, prompt_ids: set[str]) -> tuple[float, float]:
    """(speedup, mean acceptance length) of config `name` over the samples `prompt_ids`, from the
    records alone: per sample the median tokens/s over repeats / plain's, geometric mean over
    samples; acceptance pooled over runs, 1 + accepted / drafts."""
    def medians(contender):
        runs = defaultdict(list)
        for r in records:
            if r["contender"] == contender and r["prompt_id"] in prompt_ids:
                runs[r["prompt_id"]].append(r["tokens_per_second"])
        return {p: statistics.median(v) for p, v in runs.items()}

    mine, plain = medians(name), medians("none@T0")
    speedup = math.exp(statistics.mean(math.log(mine[p] / plain[p]) for p in mine))
    runs = [r["spec"] for r in records if r["contender"] == name and r["prompt_id"] in prompt_ids]
    drafts = sum(s["num_drafts"] for s in runs)
    return speedup, 1 + sum(s["num_accepted_tokens"] for s in runs) / drafts if drafts else 1.0


def test_bench_on_questions_end_to_end(tiny_model_dir, tiny_draft_dir, default_tokenizer, tmp_path, capsys,
                                       monkeypatch, one_torch_thread):
    monkeypatch.setenv("SPECDEC_CACHE", str(tmp_path / "cache"))
    path = write_jsonl(tmp_path / "questions.jsonl", QUESTIONS)
    out = tmp_path / "results"
    rc = main(["bench", "--threads", "1", "--model", str(tiny_model_dir), "--draft-model", str(tiny_draft_dir),
               "--prompts", path, "--max-tokens", "8", "--repeats", "2", "--speculative", "none,draft",
               "--draft-n", "2", "--temperature", "0", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    stdout = capsys.readouterr().out
    result = json.loads(stdout.strip().splitlines()[-1])
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    names = ["none@T0", "draft:2@T0"]
    assert len(records) == 2 * 3 * 2  # repeats x samples (two turns + one) x configs

    # greedy: every config's tokens are plain's, turn 2 included (its prompt holds its own turn 1)
    plain = {(r["repeat"], r["prompt_id"]): r["token_ids"] for r in records if r["contender"] == "none@T0"}
    assert all(r["token_ids"] == plain[(r["repeat"], r["prompt_id"])] for r in records)
    assert all(c["greedy_mismatches"] == 0 for c in result["configs"])
    for r in (r for r in records if r["turn"] == 2):
        own = next(x for x in records if (x["contender"], x["repeat"], x["prompt_id"]) ==
                   (r["contender"], r["repeat"], "1/turn1"))
        answer = default_tokenizer.decode(own["token_ids"], skip_special_tokens=True)
        turn2 = load_workload(path=path)[0].sample([answer])
        assert r["num_prompt_tokens"] == len(encode(default_tokenizer, turn2))

    # the table: Spec-Bench's layout, every cell what the records give
    table = result["category_table"]
    assert table["columns"] == ["multi_turn", "qa", "overall"]
    assert [row["name"] for row in table["rows"]] == names
    samples = {"multi_turn": {"1/turn1", "1/turn2"}, "qa": {"q2"}}
    samples["overall"] = samples["multi_turn"] | samples["qa"]
    for row in table["rows"]:
        for column, ids in samples.items():
            speedup, length = expected_cells(records, row["name"], ids)
            assert row["speedup"][column] == pytest.approx(speedup, abs=2e-4), (row["name"], column)
            assert row["mean_acceptance_length"][column] == pytest.approx(length, abs=2e-4), (row["name"], column)
    draft = next(row for row in table["rows"] if row["name"] == "draft:2@T0")
    assert draft["mean_acceptance_length"]["overall"] > 1  # the perturbed draft is accepted at times

    # the text report prints the same table
    lines = stdout.splitlines()
    start = lines.index("speedup over plain, by category:")
    assert lines[start + 1].split() == ["config", "multi_turn", "qa", "overall"]
    row = lines[start + 3].split()
    assert row == ["draft:2@T0"] + [f"{draft['speedup'][c]:.2f}x" for c in table["columns"]]
    assert "| config | multi_turn | qa | overall |" in (out / "report.md").read_text()


def test_a_category_named_overall_is_refused_before_the_run(tmp_path, capsys):
    path = write_jsonl(tmp_path / "q.jsonl", [dict(QUESTIONS[1], category="overall")])
    assert main(["bench", "--prompts", path, "--out", str(tmp_path / "out")]) == 2
    assert "may not be named 'overall'" in capsys.readouterr().err
