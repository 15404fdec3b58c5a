"""Prompts the target writes itself (Magpie, Xu et al. 2024), for `specdec train-draft
--prompt-source self|mix`.

    self_prompts(target, num_prompts, cache, seed, max_tokens, batch_size) -> list[str]

1) open    `user_turn_opening`: the chat template renders one user turn holding a sentinel;
           the text before the sentinel is the prompt the target continues (for ChatML: the
           system turn the template adds by default, then `<|im_start|>user\\n`), and the first
           token after it, when a special token, ends the turn
2) sample  through the engine in continuous batches (`sample_user_turns`): temperature 1,
           top-p 0.95, candidate i seeded by (seed, i), so a rerun writes the same prompts;
           a turn ends at its end token, EOS or `max_tokens`
3) filter  in this order, each stage's survivors counted on stderr: the turn ended (not cut
           at max_tokens); its length in words; English (`is_english`); no overlap with the
           bench prompts and held-out questions (corpus.find_overlaps, the template corpus's
           guard: data/prompts/ and data/questions/); no near-copy of a prompt kept before it,
           one that shares at least MAX_OVERLAP of its word n-grams with the kept prompts
           (`NgramIndex`: one hash set, linear in the words)
4) cache   after every round (twice the prompts still missing, at most ROUND_BATCHES batches,
           so a stopped run loses one round at most) the kept prompts are written to a JSONL
           file of {"prompt", "index"} rows (usable as `--prompts`) and the next candidate's
           index to a sidecar JSON; a rerun with the same settings samples only what is missing
"""

from __future__ import annotations

import json
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from specdec.train.corpus import eval_user_texts, find_overlaps

SENTINEL = "SPECDEC-USER-MESSAGE-7f3a"
TEMPERATURE = 1.0
TOP_P = 0.95
NGRAM = 5  # words per n-gram of the overlap checks
MAX_OVERLAP = 0.5  # share of a prompt's n-grams among the kept prompts' that makes it a near-copy
MIN_WORDS, MAX_WORDS = 4, 300
MIN_ASCII_LETTERS = 0.95  # share of a prompt's letters that are ASCII
MIN_STOPWORDS = 0.1  # share of a prompt's words that are common English function words
TRIES_PER_PROMPT = 8  # candidates sampled at most per prompt asked for
ROUND_BATCHES = 4  # a round samples at most this many batches of candidates, then writes the cache
STAGES = ("sampled", "ended", "length", "english", "not_bench", "unique")
STOPWORDS = frozenset(
    "a an the and or but if of to in on at by for with from about into as is are was were be been "
    "do does did have has had can could would should will i me my you your we our it its this that "
    "these those what which who how why when where there not no".split()
)


@dataclass
class UserTurnOpening:
    text: str  # the chat template's rendering up to the user's message
    token_ids: list[int]
    end_token_id: int | None  # the special token that closes a user turn, if the template has one


def user_turn_opening(tokenizer) -> UserTurnOpening:
    """The opening of a user turn, cut from the template's rendering of a sentinel message."""
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError("self prompts need the target's chat template; this tokenizer has none")
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": SENTINEL}], tokenize=False,
                                             add_generation_prompt=False)
    if rendered.count(SENTINEL) != 1:
        raise ValueError(f"the chat template does not render a user message verbatim once: {rendered!r}")
    opening, after = rendered.split(SENTINEL)
    # as encode_prompt does: the template writes its own special tokens, the tokenizer adds none
    token_ids = list(tokenizer.encode(opening, add_special_tokens=False))
    after_ids = tokenizer.encode(after.lstrip(), add_special_tokens=False)
    end = after_ids[0] if after_ids and after_ids[0] in set(tokenizer.all_special_ids) else None
    return UserTurnOpening(opening, token_ids, end)


def word_ngrams(text: str, n: int = NGRAM) -> set[tuple[str, ...]]:
    """Lower-cased word n-grams; a text of fewer than n words is one gram of all its words."""
    words = re.findall(r"\w+", text.lower())
    if len(words) < n:
        return {tuple(words)} if words else set()
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


class NgramIndex:
    """The word n-grams of the texts added; `overlap` is the share of a text's n-grams among them."""

    def __init__(self, texts: list[str] = (), n: int = NGRAM) -> None:
        self.n = n
        self.grams: set[tuple[str, ...]] = set()
        for text in texts:
            self.add(text)

    def add(self, text: str) -> None:
        self.grams |= word_ngrams(text, self.n)

    def overlap(self, text: str) -> float:
        grams = word_ngrams(text, self.n)
        return sum(g in self.grams for g in grams) / len(grams) if grams else 1.0


def length_ok(text: str) -> bool:
    return MIN_WORDS <= len(text.split()) <= MAX_WORDS


def is_english(text: str) -> bool:
    """Mostly ASCII letters, and common English function words among the words."""
    letters = [c for c in text if c.isalpha()]
    words = re.findall(r"[a-z']+", text.lower())
    if not letters or not words:
        return False
    ascii_share = sum(c.isascii() for c in letters) / len(letters)
    return ascii_share >= MIN_ASCII_LETTERS and sum(w in STOPWORDS for w in words) / len(words) >= MIN_STOPWORDS


def interleave(first: list, second: list) -> list:
    """first[0], second[0], first[1], second[1], ...; the longer list's tail at the end."""
    out = []
    for i in range(max(len(first), len(second))):
        out += first[i : i + 1] + second[i : i + 1]
    return out


def candidate_seed(seed: int, index: int) -> int:
    """Candidate `index`'s sampling seed, within 32 bits (a CPU torch.Generator reads no more):
    each run seed starts its candidates at its own offset."""
    return ((seed & 0xFFFFFFFF) * 0x9E3779B1 + index) & 0xFFFFFFFF


def sample_user_turns(target, opening: UserTurnOpening, seeds: list[int], max_tokens: int,
                      batch_size: int) -> list[tuple[str, bool]]:
    """The target's user turns after the opening, one per seed: (text, whether the turn ended)."""
    from specdec.config import SamplingParams, SpeculativeConfig
    from specdec.engine.build import build_engine

    rows = batch_size if target.is_native else 1  # the transformers adapter runs one row
    # plain decoding: each row samples from its own seeded generator ("rejection" with no
    # drafts), which spares the coupled verifier's per-position noise over the vocabulary
    spec = SpeculativeConfig(sampling_verify="rejection")
    engine = build_engine(target, spec, len(opening.token_ids) + max_tokens + 1, rows)
    stops = [opening.end_token_id] if opening.end_token_id is not None else []
    params = [SamplingParams(temperature=TEMPERATURE, top_p=TOP_P, max_tokens=max_tokens, seed=s, stop_token_ids=stops)
              for s in seeds]
    results = engine.generate_batch([opening.token_ids] * len(seeds), params, progress=True)
    turns = []
    for r in results:
        ended = r.finish_reason == "stop"
        ids = r.token_ids[:-1] if ended else r.token_ids  # without the token that ended the turn
        turns.append((target.tokenizer.decode(ids, skip_special_tokens=True).strip(), ended))
    return turns


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def self_prompts(target, num_prompts: int, cache: str | Path, seed: int = 0, max_tokens: int = 128,
                 batch_size: int = 64, deadline: float | None = None) -> list[str]:
    """num_prompts prompts the target writes (module docstring), read from `cache` where an
    earlier run kept them. Sampling stops after TRIES_PER_PROMPT * num_prompts candidates or
    past `deadline` (time.perf_counter()); fewer prompts than asked are then returned (none: ValueError)."""
    if num_prompts <= 0:
        raise ValueError(f"num_prompts must be positive, got {num_prompts}")
    cache = Path(cache)
    state_path = cache.with_name(cache.name + ".state.json")
    opening = user_turn_opening(target.tokenizer)
    settings = {"target": target.name, "dtype": str(target.model.dtype).removeprefix("torch."), "opening": opening.text,
                "seed": seed, "temperature": TEMPERATURE, "top_p": TOP_P, "max_tokens": max_tokens, "ngram": NGRAM,
                "max_overlap": MAX_OVERLAP, "words": [MIN_WORDS, MAX_WORDS], "ascii": MIN_ASCII_LETTERS,
                "stopwords": MIN_STOPWORDS}
    rows: list[dict] = []
    next_index, counts = 0, dict.fromkeys(STAGES, 0)
    if state_path.is_file():
        state = json.loads(state_path.read_text())
        if state["settings"] != settings:
            raise ValueError(f"{cache} was written with other settings ({state['settings']}, now {settings}); "
                             "use another --self-prompts file or delete it and its .state.json")
        # rows past num_kept come from a round whose state was not saved: it is sampled again
        rows = [json.loads(line) for line in cache.read_text().splitlines() if line.strip()][: state["num_kept"]]
        next_index, counts = state["next_index"], state["counts"]
        print(f"train-draft: {len(rows)} self prompts in {cache}", file=sys.stderr)
    bench, seen = eval_user_texts(), NgramIndex([r["prompt"] for r in rows])
    max_index = TRIES_PER_PROMPT * num_prompts
    while len(rows) < num_prompts and next_index < max_index:
        if deadline is not None and time.perf_counter() >= deadline:
            print(f"train-draft: the time budget stops self prompts at {len(rows)}", file=sys.stderr)
            break
        n = min(max(2 * (num_prompts - len(rows)), batch_size), ROUND_BATCHES * batch_size, max_index - next_index)
        indices = range(next_index, next_index + n)
        turns = sample_user_turns(target, opening, [candidate_seed(seed, i) for i in indices], max_tokens, batch_size)
        for i, (text, ended) in zip(indices, turns):
            checks = (lambda: ended, lambda: length_ok(text), lambda: is_english(text),
                      lambda: not find_overlaps([{"id": i, "prompt": text}], bench), lambda: seen.overlap(text) < MAX_OVERLAP)
            counts["sampled"] += 1
            for stage, passes in zip(STAGES[1:], checks):
                if not passes():
                    break
                counts[stage] += 1
            else:
                seen.add(text)
                rows.append({"prompt": text, "index": i})
        next_index += n
        cache.parent.mkdir(parents=True, exist_ok=True)
        _write(cache, "".join(json.dumps(r) + "\n" for r in rows))
        _write(state_path, json.dumps({"settings": settings, "next_index": next_index, "num_kept": len(rows),
                                       "counts": counts}, indent=2) + "\n")
    print("train-draft: self prompts left after each filter: "
          + ", ".join(f"{stage} {counts[stage]}" for stage in STAGES), file=sys.stderr)
    if not rows:
        raise ValueError(f"the target wrote no usable prompt in {next_index} tries ({counts})")
    if len(rows) < num_prompts:
        print(f"train-draft: {len(rows)} self prompts of the {num_prompts} asked for", file=sys.stderr)
    return [r["prompt"] for r in rows[:num_prompts]]
