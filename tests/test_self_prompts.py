"""Self prompts (train/self_prompts.py): the user-turn opening cut from a chat template, the
filters and the n-gram overlap on hand-made strings (the bench filter on a shipped bench prompt
and a held-out question), seeded sampling through the engine on a
tiny random-weight target, the cache, and `train-draft --prompt-source`."""

from __future__ import annotations

import argparse
import copy
import json

import pytest

from specdec.models.loader import load_model
from specdec.train.corpus import EVAL_PROMPTS_DIRS
from specdec.train import self_prompts as sp

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SYSTEM = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"


@pytest.fixture(scope="module")
def tiny_target(tiny_model_dir):
    return load_model(tiny_model_dir, "float32", "cpu", 512)


def test_opening_is_cut_from_the_chat_template(default_tokenizer):
    from specdec.api import encode_prompt

    opening = sp.user_turn_opening(default_tokenizer)
    assert opening.text == SYSTEM + "<|im_start|>user\n"
    assert opening.end_token_id == default_tokenizer.convert_tokens_to_ids("<|im_end|>")
    full = encode_prompt(default_tokenizer, messages=[{"role": "user", "content": "Hello there"}])
    assert full[: len(opening.token_ids)] == opening.token_ids  # the chat path's own tokens
    assert default_tokenizer.decode(full[len(opening.token_ids):]).startswith("Hello there<|im_end|>")

    other = copy.deepcopy(default_tokenizer)  # another template: nothing ChatML is assumed
    other.chat_template = "{% for m in messages %}### {{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    plain = sp.user_turn_opening(other)
    assert plain.text == "### user: " and plain.end_token_id is None  # a newline is no end token
    other.chat_template = "{% for m in messages %}{{ m['content'] }}{{ m['content'] }}{% endfor %}"
    with pytest.raises(ValueError, match="verbatim once"):
        sp.user_turn_opening(other)
    other.chat_template = None
    with pytest.raises(ValueError, match="no chat template|has none"):
        sp.user_turn_opening(other)


def test_ngram_overlap_is_the_share_of_a_texts_ngrams_already_indexed():
    assert sp.word_ngrams("The quick, brown fox jumps!", 3) == {("the", "quick", "brown"), ("quick", "brown", "fox"),
                                                               ("brown", "fox", "jumps")}
    assert sp.word_ngrams("What is 12 + 35?", 5) == {("what", "is", "12", "35")}  # short: one gram of all
    index = sp.NgramIndex(["the quick brown fox jumps over the lazy dog"])
    assert index.overlap("The QUICK brown fox jumps over the lazy dog.") == 1.0
    # 5 grams, of which "the quick brown fox jumps" and "quick brown fox jumps over" are indexed
    assert index.overlap("the quick brown fox jumps over a sleeping cat") == pytest.approx(2 / 5)
    assert index.overlap("a completely different sentence about the sea") == 0.0
    assert index.overlap("") == 1.0  # no words: nothing new
    index.add("a completely different sentence about the sea")
    assert index.overlap("a completely different sentence about the sea") == 1.0


def test_length_and_language_filters():
    assert sp.length_ok("Write a poem about rain.") and not sp.length_ok("Hello there.")
    assert not sp.length_ok("word " * (sp.MAX_WORDS + 1))
    assert sp.is_english("Write a short poem about the sea at night.")
    assert sp.is_english("Explain photosynthesis to me in simple words.")
    assert not sp.is_english("Bonjour, je voudrais reserver une table pour deux personnes ce soir.")  # no function words
    assert not sp.is_english("the Привет как дела сегодня вечером and")  # function words, but few ASCII letters
    assert not sp.is_english("你好，请写一首关于大海的诗。")
    assert not sp.is_english("1234 5678 !!!")


def test_interleave_alternates_and_keeps_the_tail():
    assert sp.interleave([1, 2, 3], ["a", "b"]) == [1, "a", 2, "b", 3]
    assert sp.interleave([1], ["a", "b", "c"]) == [1, "a", "b", "c"]


GOOD = ["Write a short story about a dragon who learns to bake bread.",
        "Can you explain how a rainbow forms after the rain?",
        "What are some good habits for learning a new language?",
        "Give me three ideas for a birthday party in the garden.",
        "How do I keep my houseplants healthy during the winter months?"]
# a held-out Spec-Bench-form question (data/questions/), its first turn
QUESTION = json.loads(sorted(EVAL_PROMPTS_DIRS[1].glob("*.jsonl"))[0].read_text().splitlines()[0])["turns"][0]
# (text, ended) and the stage it fails
CANDIDATES = [
    (("Write a long essay about the history of the Roman empire and", False), "ended"),
    ((GOOD[0], True), None),
    (("Hi there.", True), "length"),
    (("Écris un poème sur la mer, mon ami, très vite.", True), "english"),
    (("What is the capital of France?", True), "not_bench"),  # data/prompts/qa.jsonl
    ((GOOD[1], True), None),
    (("Write a short story about a dragon who learns to bake cakes.", True), "unique"),  # near GOOD[0]
    ((QUESTION + " Thanks!", True), "not_bench"),
    ((GOOD[2], True), None),
    ((GOOD[1].upper(), True), "unique"),
    ((GOOD[3], True), None),
    ((GOOD[4], True), None),
]


def fake_sampler(calls, seed=0):
    """CANDIDATES in the order of their seeds' indices; calls gets each round's indices."""
    index = {sp.candidate_seed(seed, i): i for i in range(len(CANDIDATES))}

    def sample(target, opening, seeds, max_tokens, batch_size):
        calls.append([index[s] for s in seeds])
        return [CANDIDATES[index[s]][0] for s in seeds]
    return sample


def test_filters_cache_and_resume(tiny_target, tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(sp, "sample_user_turns", fake_sampler(calls, seed=7))
    cache = tmp_path / "self.jsonl"
    # 2 asked: a round of max(2 * 2 missing, batch 3) candidates, then one of max(2 * 1, 3)
    assert sp.self_prompts(tiny_target, 2, cache, seed=7, batch_size=3) == GOOD[:2]
    assert calls == [[0, 1, 2, 3], [4, 5, 6]]
    err = capsys.readouterr().err
    assert "sampled 7, ended 6, length 5, english 4, not_bench 3, unique 2" in err
    rows = [json.loads(line) for line in cache.read_text().splitlines()]
    assert rows == [{"prompt": GOOD[0], "index": 1}, {"prompt": GOOD[1], "index": 5}]

    calls.clear()  # a rerun asking for as many samples nothing; asking for more goes on from index 7
    assert sp.self_prompts(tiny_target, 2, cache, seed=7, batch_size=3) == GOOD[:2] and calls == []
    assert sp.self_prompts(tiny_target, 4, cache, seed=7, batch_size=3) == GOOD[:4]
    assert calls == [[7, 8, 9, 10]]
    assert "sampled 11, ended 10, length 9, english 8, not_bench 6, unique 4" in capsys.readouterr().err
    assert len(cache.read_text().splitlines()) == 4

    calls.clear()  # rounds of at most ROUND_BATCHES batches: a stopped run loses little
    assert sp.self_prompts(tiny_target, 3, tmp_path / "small.jsonl", seed=7, batch_size=1) == GOOD[:3]
    assert calls == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]

    with pytest.raises(ValueError, match="other settings"):
        sp.self_prompts(tiny_target, 2, cache, seed=8)
    monkeypatch.setattr(sp, "sample_user_turns", lambda *a: [("Hello.", True)] * len(a[2]))
    with pytest.raises(ValueError, match="no usable prompt in 8 tries"):
        sp.self_prompts(tiny_target, 1, tmp_path / "none.jsonl", batch_size=2)


def test_sampling_is_seeded_per_prompt(tiny_target, tmp_path):
    """The engine samples each candidate from its own seed: a rerun writes the same turns, in
    any order, and other seeds write others."""
    opening = sp.user_turn_opening(tiny_target.tokenizer)
    seeds = [sp.candidate_seed(0, i) for i in range(3)]
    first = sp.sample_user_turns(tiny_target, opening, seeds, 6, 2)
    assert sp.sample_user_turns(tiny_target, opening, seeds, 6, 2) == first
    assert sp.sample_user_turns(tiny_target, opening, seeds[::-1], 6, 1) == first[::-1]
    assert sp.sample_user_turns(tiny_target, opening, [sp.candidate_seed(1, i) for i in range(3)], 6, 2) != first
    assert len({text for text, _ in first}) == 3 and all(text for text, _ in first)
    assert not any(ended for _, ended in first)  # random weights do not close the turn in 6 tokens
    with pytest.raises(ValueError, match="no usable prompt in 8 tries"):  # so no candidate passes
        sp.self_prompts(tiny_target, 1, tmp_path / "cut.jsonl", max_tokens=4, batch_size=4)


def test_prompt_source_end_to_end(tiny_target, tmp_path, monkeypatch, capsys):
    from specdec.cli import main
    from specdec.train.cli import prompt_conversations

    calls = []
    monkeypatch.setattr(sp, "sample_user_turns", fake_sampler(calls))
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"prompt": f"Count to {i}, please."}) + "\n" for i in range(5)))
    common = ["train-draft", "-m", str(tiny_target.path), "--max-new-tokens", "4", "--epochs", "1",
              "--draft-vocab", "3000", "--time-budget", "0", "-t", "1", "--gen-batch", "4", "--data-dtype", "float32"]
    assert main(common + ["--out", str(tmp_path / "mix"), "--prompt-source", "mix", "--num-prompts", "5",
                          "--prompts", str(corpus)]) == 0
    assert "self prompts left after each filter: sampled 8," in capsys.readouterr().err
    assert json.loads((tmp_path / "mix" / "data" / "dataset.json").read_text())["num_sequences"] == 5
    args = argparse.Namespace(prompts=str(corpus), prompt_source="mix", num_prompts=5, self_prompts=None,
                              seed=0, self_max_tokens=128, gen_batch=4)
    calls.clear()  # the rerun reads the cache: corpus and self prompts interleaved, 3 + 2
    users = [c[-1]["content"] for c in prompt_conversations(args, tiny_target, tmp_path / "mix", None)]
    assert calls == [] and users == ["Count to 0, please.", GOOD[0], "Count to 1, please.", GOOD[1], "Count to 2, please."]
    with pytest.raises(SystemExit, match="train-draft: .* other settings"):  # another seed, the same cache
        main(common + ["--out", str(tmp_path / "mix"), "--data", str(tmp_path / "data2"), "--prompt-source", "mix",
                       "--num-prompts", "5", "--prompts", str(corpus), "--seed", "1"])

    assert main(common + ["--out", str(tmp_path / "self"), "--prompt-source", "self", "--num-prompts", "3"]) == 0
    assert json.loads((tmp_path / "self" / "data" / "dataset.json").read_text())["num_sequences"] == 3
    cached = [json.loads(line)["prompt"] for line in (tmp_path / "self" / "self_prompts.jsonl").read_text().splitlines()]
    assert cached == GOOD[:3]


def test_prompt_source_errors(tiny_target, tmp_path, capsys):
    from specdec.cli import main

    common = ["train-draft", "-m", str(tiny_target.path), "--out", str(tmp_path / "run")]
    with pytest.raises(SystemExit):
        main(common + ["--prompt-source", "web"])
    assert "invalid choice: 'web'" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="needs --num-prompts N > 0"):
        main(common + ["--prompt-source", "self"])
    with pytest.raises(SystemExit, match="not read with --prompt-source self"):
        main(common + ["--prompt-source", "self", "--num-prompts", "2", "--prompts", "x.jsonl"])
