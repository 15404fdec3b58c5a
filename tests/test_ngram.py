"""n-gram (prompt lookup) proposer: worked matching examples and a brute-force reference."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from specdec.config import SamplingParams
from specdec.drafts import SequenceState
from specdec.proposers.base import Proposer
from specdec.proposers.ngram import NgramIndex, NgramProposer


def reference_lookup(ids, num_tokens, ngram_min, ngram_max, periodic=True):
    """Rescan the whole context: longest n first, most recent earlier occurrence first."""
    if num_tokens <= 0:
        return []
    size = len(ids)
    for n in range(ngram_max, ngram_min - 1, -1):
        suffix = ids[size - n :]
        for s in range(size - n - 1, -1, -1):  # occurrences that end before the suffix does
            if ids[s : s + n] == suffix:
                start = s + n
                if not periodic:
                    return ids[start : start + num_tokens]
                seq = list(ids)
                for i in range(num_tokens):
                    seq.append(seq[start + i])
                return seq[size:]
    return []


def index_of(ids, ngram_min=1, ngram_max=4, periodic=True):
    index = NgramIndex(ngram_min, ngram_max, periodic)
    index.extend(ids)
    return index


def test_overlapping_match_continues_periodically():
    # a b a b a: n=4 suffix (b a b a) never occurred before; n=3 suffix (a b a) occurred
    # at 0..2, followed by position 3: the continuation b a runs into the suffix itself.
    a, b = 7, 8
    assert index_of([a, b, a, b, a]).lookup(4) == [b, a, b, a]
    assert index_of([a, b, a, b, a], periodic=False).lookup(4) == [b, a]


def test_periodic_text_proposes_the_period():
    assert index_of([1, 2, 1, 2, 1, 2]).lookup(5) == [1, 2, 1, 2, 1]
    assert index_of([3, 3, 3]).lookup(4) == [3, 3, 3, 3]


def test_match_at_the_very_end():
    # (1, 2) at 0..1 is followed by 3 1 2 and then the end of the context.
    assert index_of([1, 2, 3, 1, 2], periodic=False).lookup(5) == [3, 1, 2]
    assert index_of([1, 2, 3, 1, 2]).lookup(5) == [3, 1, 2, 3, 1]
    assert index_of([1, 2, 3, 1, 2]).lookup(2) == [3, 1]


def test_no_match_gives_nothing():
    assert index_of([1, 2, 3, 4]).lookup(4) == []
    assert index_of([]).lookup(4) == []
    assert index_of([5]).lookup(4) == []
    assert index_of([1, 2, 1]).lookup(0) == []
    # ngram_min=2 ignores the unigram match of the final 2.
    assert index_of([1, 2, 3, 2], ngram_min=2, ngram_max=3).lookup(2) == []
    assert index_of([1, 2, 3, 2], ngram_min=1, ngram_max=3).lookup(2) == [3, 2]


def test_longest_n_is_preferred_over_a_more_recent_shorter_match():
    ids = [5, 1, 2, 9, 3, 2, 7, 1, 2]
    assert index_of(ids).lookup(1) == [9]  # (1, 2) at 1..2
    assert index_of(ids, ngram_max=1).lookup(1) == [7]  # (2,) most recently at 5


def test_most_recent_occurrence_is_preferred():
    ids = [1, 2, 3, 1, 2, 4, 1, 2]
    assert index_of(ids).lookup(3) == [4, 1, 2]


def test_incremental_extend_is_token_by_token():
    index = NgramIndex(1, 3)
    index.extend([1, 2, 3])
    assert index.lookup(2) == []
    index.extend([1])
    assert index.lookup(2) == [2, 3]
    index.extend(torch.tensor([2, 3]).tolist())
    assert index.lookup(2) == [1, 2]
    assert len(index) == 6


@pytest.mark.parametrize("bad", [(0, 2), (3, 2)])
def test_bad_ngram_range_is_rejected(bad):
    with pytest.raises(ValueError, match="ngram_min"):
        NgramIndex(*bad)
    with pytest.raises(ValueError, match="ngram_min"):
        NgramProposer(*bad)


@settings(max_examples=150, deadline=None)
@given(
    ids=st.lists(st.integers(0, 3), max_size=40),
    cuts=st.lists(st.integers(0, 40), max_size=4),
    ngram_min=st.integers(1, 3),
    span=st.integers(0, 2),
    num_tokens=st.integers(0, 6),
    periodic=st.booleans(),
)
def test_incremental_index_matches_brute_force(ids, cuts, ngram_min, span, num_tokens, periodic):
    ngram_max = ngram_min + span
    index = NgramIndex(ngram_min, ngram_max, periodic)
    done = 0
    for cut in sorted(c for c in cuts if c <= len(ids)) + [len(ids)]:
        index.extend(ids[done:cut])
        done = cut
        expected = reference_lookup(ids[:cut], num_tokens, ngram_min, ngram_max, periodic)
        assert index.lookup(num_tokens) == expected
    scratch = index_of(ids, ngram_min, ngram_max, periodic)
    assert scratch.lookup(num_tokens) == index.lookup(num_tokens)


def make_state(ids):
    return SequenceState(
        token_ids=list(ids),
        num_prompt_tokens=len(ids),
        params=SamplingParams(temperature=0.0),
        generator=torch.Generator().manual_seed(0),
    )


def test_proposer_drafts_from_the_growing_sequence():
    proposer = NgramProposer(ngram_min=1, ngram_max=3)
    assert isinstance(proposer, Proposer)
    state = make_state([10, 11, 12, 13])
    proposer.start(state)

    miss = proposer.propose(state, 3)
    assert miss.token_ids.shape == (1, 0) and miss.token_ids.dtype == torch.long
    assert miss.num_tokens == 0 and miss.probs is None

    state.token_ids += [10, 11]  # committed by the engine
    proposer.observe(state, None)
    hit = proposer.propose(state, 3)
    assert hit.token_ids.tolist() == [[12, 13, 10]]
    assert hit.token_ids.dtype == torch.long and hit.probs is None


def test_proposer_needs_start_and_a_consistent_sequence():
    proposer = NgramProposer()
    state = make_state([1, 2, 3])
    with pytest.raises(RuntimeError, match="start"):
        proposer.propose(state, 2)
    proposer.start(state)
    with pytest.raises(ValueError, match="index already holds 3"):
        proposer.propose(make_state([1, 2]), 2)
    proposer.start(make_state([4, 4]))  # a new request starts a fresh index
    assert proposer.propose(make_state([4, 4]), 2).token_ids.tolist() == [[4, 4]]


def test_match_length_is_the_suffix_lookup_copies_from():
    index = index_of([5, 6, 7, 8, 1, 6, 7, 8], ngram_max=4)
    assert index.match_length() == 3  # (6, 7, 8) seen before; (1, 6, 7, 8) not
    assert index.lookup(2) == [1, 6]
    assert index_of([1, 2, 3]).match_length() == 0 and index_of([1, 2, 3]).lookup(2) == []
    assert index_of([4, 4]).match_length() == 1  # the overlapping match at the very end


def test_proposer_reports_the_bucket_of_its_next_draft():
    proposer = NgramProposer(ngram_min=1, ngram_max=4)
    state = make_state([10, 11, 12, 13])
    proposer.start(state)
    assert proposer.draft_bucket(state) == 0
    state.token_ids += [10, 11, 12]  # the bucket follows the committed tokens, like propose
    assert proposer.draft_bucket(state) == 3
    assert proposer.propose(state, 2).token_ids.tolist() == [[13, 10]]
