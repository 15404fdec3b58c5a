"""Built-in prompt sets and the JSONL loader's validation."""

import json

import pytest

from specdec.bench.workloads import CATEGORIES, GROUPS, Prompt, list_categories, load_workload

SPEC_BENCH = ["multi_turn", "translation", "summarization", "qa", "math", "rag"]


def test_every_category_ships_prompts():
    prompts = load_workload()
    assert list_categories() == list(CATEGORIES)
    assert set(SPEC_BENCH) | {"predictable", "semi_predictable", "creative", "grounded"} == set(CATEGORIES)
    for cat in CATEGORIES:
        n = sum(p.category == cat for p in prompts)
        assert 6 <= n <= 8, (cat, n)
    ids = [p.id for p in prompts]
    assert len(ids) == len(set(ids))
    assert not any(p.id.startswith("heldout") for p in prompts)  # held out of the default


def test_prompts_are_well_formed():
    for p in load_workload(["all", "heldout"]):
        assert (p.prompt is None) != (p.messages is None), p.id
        msgs = p.as_messages()
        assert msgs[-1]["role"] == "user" and msgs[-1]["content"].strip()
    turns = load_workload(["multi_turn"])
    assert all(p.messages and len(p.messages) >= 3 for p in turns)  # previous turns included


def test_grounded_prompts_carry_their_source_text():
    for p in load_workload(["grounded", "summarization"]):
        instruction, _, source = p.prompt.partition("\n\n")
        assert 60 <= len(source.split()) <= 150, (p.id, len(source.split()))
    for p in load_workload(["rag"]):
        assert "[1]" in p.prompt and "[3]" in p.prompt and "Question:" in p.prompt


def test_heldout_is_separate_grounded_and_creative():
    held = load_workload(["heldout"])
    assert {p.category for p in held} == {"grounded", "creative"}
    shipped = {p.prompt for p in load_workload()}
    assert not shipped & {p.prompt for p in held}


def test_names_groups_and_cap():
    assert [p.category for p in load_workload(["spec_bench"], max_per_category=1)] == SPEC_BENCH
    assert tuple(GROUPS["spec_bench"]) == tuple(SPEC_BENCH)
    two = load_workload(["qa", "qa", "math"], max_per_category=2)
    assert [p.id for p in two] == ["qa-01", "qa-02", "math-01", "math-02"]
    # the held-out set is capped on its own, not against the shipped grounded prompts
    mixed = load_workload(["grounded", "heldout"], max_per_category=1)
    assert [p.id for p in mixed] == ["grounded-01", "heldout-01", "heldout-04"]
    questions = load_workload(["qa", "spec_bench_heldout"], max_per_category=1)
    assert [p.id for p in questions] == ["qa-01", "sbq-multi_turn-1", "sbq-translation-1", "sbq-summarization-1",
                                         "sbq-qa-1", "sbq-math-1", "sbq-rag-1"]
    with pytest.raises(ValueError, match="unknown workload 'poetry'"):
        load_workload(["poetry"])
    with pytest.raises(ValueError, match="max_per_category"):
        load_workload(max_per_category=0)


def test_user_file(tmp_path):
    f = tmp_path / "mine.jsonl"
    f.write_text("\n".join([
        json.dumps({"id": "a", "category": "code", "prompt": "Write hello world in C."}),
        "",
        json.dumps({"prompt": "No id, no category."}),
        json.dumps({"id": 7, "category": "code", "messages": [
            {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]}),
    ]) + "\n")
    prompts = load_workload(path=str(f))
    assert prompts == [
        Prompt("a", "code", "Write hello world in C.", None),
        Prompt("mine-3", "custom", "No id, no category.", None),
        Prompt("7", "code", None, [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]),
    ]
    assert [p.id for p in load_workload(["code"], path=str(f), max_per_category=1)] == ["a"]
    with pytest.raises(ValueError, match="no prompts in category math; it has code, custom"):
        load_workload(["math"], path=str(f))


@pytest.mark.parametrize("line, message", [
    ('{"id": "x", "prompt": "ok"', "bad.jsonl:2: not valid JSON"),
    ('{"id": "x", "category": "c"}', 'bad.jsonl:2: needs exactly one of "prompt"'),
    ('{"prompt": "a", "messages": [{"role": "user", "content": "b"}]}', "got prompt and messages"),
    ('{"prompt": ""}', '"prompt" must be a non-empty string'),
    ('{"messages": []}', '"messages" must be a non-empty list'),
    ('{"messages": [{"role": "robot", "content": "hi"}]}', "messages[0] must be"),
    ('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}',
     "last message must be the user's turn"),
    ('["a list"]', "expected a JSON object, got list"),
    ('{"id": "first", "prompt": "again"}', "duplicate id 'first' (first on line 1)"),
    ('{"prompt": "x", "category": 3}', '"category" must be a non-empty string'),
])
def test_bad_jsonl_names_file_and_line(tmp_path, line, message):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"id": "first", "prompt": "fine"}\n' + line + "\n")
    with pytest.raises(ValueError) as e:
        load_workload(path=str(f))
    assert message in str(e.value) and str(f) in str(e.value)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such prompt file"):
        load_workload(path=str(tmp_path / "absent.jsonl"))
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(ValueError, match="empty.jsonl: no prompts"):
        load_workload(path=str(tmp_path / "empty.jsonl"))
