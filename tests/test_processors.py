"""Logits processors and logprobs under speculation.

Penalties, logit_bias, min_p, min_tokens and stop_token_ids change p at every position from
the tokens before it, so the verifier must see, at each drafted position, what plain
decoding sees there. Tested as pure functions, then end to end: with every proposer,
greedy and seeded sampled output and the logprobs equal plain decoding's.
"""

from __future__ import annotations

import math

import pytest
import torch

from conftest import FrozenCost
from specdec.config import SamplingParams, SpeculativeConfig
from specdec.engine.engine import Engine
from specdec.models.loader import load_model
from specdec.proposers.factory import build_proposers
from specdec.sampling import logits_to_probs, process_logits, token_logprobs

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_openai_penalties_and_logit_bias():
    logits = torch.tensor([[1.0, 2.0, -1.0, 0.5, 3.0]])
    params = SamplingParams(presence_penalty=0.5, frequency_penalty=0.25, logit_bias={3: 2.0})
    got = process_logits(logits, params, [4], [1, 1, 2], [[]], set())
    # token 1 twice, token 2 once in the output; the prompt's token 4 is not penalized
    want = torch.tensor([[1.0, 2.0 - 0.5 - 0.5, -1.0 - 0.5 - 0.25, 2.5, 3.0]])
    torch.testing.assert_close(got, want)


def test_repetition_penalty_reads_prompt_and_output():
    logits = torch.tensor([[1.0, 2.0, -1.0, 0.5, 3.0]])
    got = process_logits(logits, SamplingParams(repetition_penalty=2.0), [4], [2], [[]], set())
    torch.testing.assert_close(got, torch.tensor([[1.0, 2.0, -2.0, 0.5, 1.5]]))


def test_rows_see_their_own_drafts():
    """Row i of a verify block equals the block's history plus drafts 0..i-1 processed alone."""
    torch.manual_seed(0)
    logits = torch.randn(4, 50)
    params = SamplingParams(presence_penalty=0.7, frequency_penalty=0.3, repetition_penalty=1.3, min_tokens=5)
    drafts = [3, 3, 9]
    block = process_logits(logits, params, [1, 2], [5, 6], [drafts[:i] for i in range(4)], {0, 7})
    for i in range(4):
        alone = process_logits(logits[i : i + 1], params, [1, 2], [5, 6] + drafts[:i], [[]], {0, 7})
        assert torch.equal(block[i], alone[0]), i
    # min_tokens 5: rows with fewer than 5 tokens before them cannot stop
    assert torch.isinf(block[:3, [0, 7]]).all() and not torch.isinf(block[3]).any()


def test_min_p_keeps_tokens_near_the_top():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.1, 0.06, 0.04]))
    probs = logits_to_probs(logits, 1.0, min_p=0.15)  # keeps p >= 0.075
    torch.testing.assert_close(probs, torch.tensor([0.5, 0.3, 0.1, 0.0, 0.0]) / 0.9)
    assert torch.equal(logits_to_probs(logits, 1.0, min_p=0.0), logits_to_probs(logits, 1.0))


def test_token_logprobs_are_raw_log_softmax():
    torch.manual_seed(1)
    logits = torch.randn(2, 30)
    out = token_logprobs(logits, [4, 7], 3)
    ref = torch.log_softmax(logits, -1)
    assert out[0]["token_id"] == 4 and out[0]["logprob"] == pytest.approx(float(ref[0, 4]))
    assert [t for t, _ in out[1]["top"]] == ref[1].topk(3).indices.tolist()
    assert token_logprobs(logits, [4, 7], 0)[0]["top"] == []


def test_bad_logit_bias_token_is_refused():
    with pytest.raises(ValueError, match="outside the vocabulary"):
        process_logits(torch.zeros(1, 10), SamplingParams(logit_bias={10: 1.0}), [1], [], [[]], set())


# --- the engine ---------------------------------------------------------------------------

PROMPTS = ["the cat sat on the mat. the cat sat on the mat. the cat", "1 2 3 4 1 2 3 4 1 2"]


@pytest.fixture(scope="module")
def target(tiny_model_dir):
    return load_model(str(tiny_model_dir), "float32", "cpu", 256)


def params_cases(target) -> list[SamplingParams]:
    repeated = target.tokenizer.encode(" cat")[0]
    common = dict(max_tokens=20, logprobs=2, ignore_eos=True)
    return [
        SamplingParams(temperature=0, presence_penalty=0.4, frequency_penalty=0.2, logit_bias={repeated: 3.0},
                       **common),
        # the biased stop token wins as soon as min_tokens lets it: the request ends at token 7
        SamplingParams(temperature=0, repetition_penalty=1.5, min_tokens=6, stop_token_ids=[repeated],
                       logit_bias={repeated: 30.0}, **common),
        SamplingParams(temperature=0.9, top_k=4, min_p=0.05, frequency_penalty=0.5, seed=11, **common),
        SamplingParams(temperature=1.0, top_k=3, repetition_penalty=1.2, logit_bias={repeated: 5.0}, seed=3, **common),
    ]


@pytest.mark.parametrize("method, k, tree_nodes", [("ngram", 3, 0), ("ngram", "auto", 0), ("eagle", 3, 8),
                                                   ("hybrid", "auto", 8)])
def test_processed_outputs_and_logprobs_equal_plain(target, method, k, tree_nodes, monkeypatch):
    from test_eagle import make_head

    from specdec.proposers import factory

    head = make_head(target)
    monkeypatch.setattr(factory, "build_eagle_head", lambda spec, target, dtype: head)
    spec = SpeculativeConfig(method=method, num_speculative_tokens=k, tree_nodes=tree_nodes, prune=False)
    cost = FrozenCost([1.0 + 0.002 * n for n in range(1, 80)])
    engine = Engine(target, build_proposers(spec, target, "float32", "cpu", 256, 2), spec, 256, cost)
    plain = Engine(target, None, SpeculativeConfig(), 256)
    cases = params_cases(target)
    prompts = [target.tokenizer.encode(p) for p in PROMPTS]
    jobs = [(ids, params) for ids in prompts for params in cases]
    results = engine.generate_batch([ids for ids, _ in jobs], [params for _, params in jobs])
    for (ids, params), got in zip(jobs, results):
        ref = plain.generate(ids, params)
        assert got.token_ids == ref.token_ids, params
        got_lp = [lp for step in got.steps for lp in step.logprobs]
        ref_lp = [lp for step in ref.steps for lp in step.logprobs]
        assert len(got_lp) == len(got.token_ids)
        # the same logits rows up to float32 rounding: a verify block and a ragged batch run
        # other kernels than a decode step unless batch-invariant (test_batch_invariance.py)
        for a, b in zip(got_lp, ref_lp):
            assert a["token_id"] == b["token_id"] and a["logprob"] == pytest.approx(b["logprob"], abs=1e-4)
            assert [t for t, _ in a["top"]] == [t for t, _ in b["top"]]
        assert all(math.isfinite(lp["logprob"]) and len(lp["top"]) == 2 for lp in got_lp)
        if params.stop_token_ids:
            assert len(got.token_ids) == params.min_tokens + 1 and got.finish_reason == "stop"
            assert got.token_ids[-1] in params.stop_token_ids
    assert engine.stats.num_draft_tokens > 0
