"""The engine batched is lossless: every row of a batch reproduces its solo run (a batch of one).

Also the ragged forward against one-row forwards, requests joining and leaving between
steps, trees verified per row in one ragged pass, and `LLM`'s continuous batch over a
list of prompts. The planner's choices are tested in test_planner.py.
"""

from __future__ import annotations

import pytest
import torch

from specdec.config import SamplingParams, SpeculativeConfig
from specdec.engine.engine import Engine
from conftest import FrozenCost
from specdec.proposers.factory import build_proposers
from specdec.models.loader import load_model
from specdec.proposers.ngram import NgramProposer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROMPTS = [
    "the cat sat on the mat. the cat sat on the mat. the cat",
    "1 2 3 4 1 2 3 4 1 2",
    "Hello",
    "Write a list: apples, pears, apples, pears, apples, pears, apples, pears, and then",
    "a b c d e f g h i j k l m n o p",
]


@pytest.fixture(scope="module")
def target(tiny_model_dir):
    return load_model(str(tiny_model_dir), "float32", "cpu", 256)


def encode(target, text: str) -> list[int]:
    return target.tokenizer.encode(text)


def run_batch(engine: Engine, jobs: dict[str, tuple[list[int], SamplingParams]], join_at=None, cancel=None):
    """Add jobs (some at later steps), step to completion; tokens, fates and steps per job."""
    join_at = join_at or {}
    tokens = {rid: [] for rid in jobs}
    steps, step_no = [], 0
    pending = dict(jobs)
    while True:
        for rid in [r for r in pending if join_at.get(r, 0) <= step_no]:
            prompt, params = pending.pop(rid)
            _, first = engine.add(rid, prompt, params)
            tokens[rid].extend(first.token_ids)
        if cancel and cancel[1] == step_no:
            assert engine.cancel(cancel[0])
        outputs = engine.step()
        steps.append({req.request_id: out for req, out in outputs})
        for req, out in outputs:
            tokens[req.request_id].extend(out.token_ids)
        step_no += 1
        if not outputs and not pending:
            return tokens, steps
        assert step_no < 500


def solo(target, prompt, params, proposer=None, k=None) -> list[int]:
    spec = SpeculativeConfig(method="ngram", num_speculative_tokens=k) if proposer else None
    return Engine(target, proposer, spec, 256).generate(prompt, params).token_ids


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_ragged_forward_matches_one_row_forwards(tiny_model_dir, dtype):
    """Each row of a ragged forward against a one-sequence forward over the same tokens:
    bit for bit where the C kernels run it (row-invariant linears, the ragged attention
    entry), within float tolerance on the PyTorch path."""
    target = load_model(str(tiny_model_dir), dtype, "cpu", 256)
    model = target.model
    from specdec.models.native import native_linear_supported

    exact = model.row_layout(torch.tensor([0]), torch.tensor([1]), 1, model.new_cache(1, 64)).native and \
        native_linear_supported(model.dtype)  # row-invariant linears too, or rows may round differently
    prompts = [encode(target, p) for p in PROMPTS[:4]]
    new = [[11, 12, 13], [], [14], [15, 16]]
    cache = model.new_cache(4, 128)
    with torch.inference_mode():
        for b, p in enumerate(prompts):
            model(torch.tensor([p]), torch.arange(len(p))[None], cache.row_view(b, 0))
        ids = torch.zeros(4, 3, dtype=torch.long)
        positions = torch.zeros(4, 3, dtype=torch.long)
        for b, n in enumerate(new):
            ids[b, : len(n)] = torch.tensor(n, dtype=torch.long)
            positions[b, : len(n)] = torch.arange(len(prompts[b]), len(prompts[b]) + len(n))
        seq_lens = torch.tensor([len(p) for p in prompts])
        out = model(ids, positions, cache, seq_lens=seq_lens, num_new=torch.tensor([len(n) for n in new]))
        assert out.logits.shape == (6, model.config.vocab_size)
        packed = out.logits.split([len(n) for n in new])
        for b, n in enumerate(new):
            full = prompts[b] + n
            ref = model(torch.tensor([full]), torch.arange(len(full))[None], model.new_cache(1, 128)).logits[0]
            if exact:
                assert torch.equal(packed[b], ref[len(prompts[b]) :]), f"row {b}"
            else:
                tol = 1e-4 if dtype == "float32" else 5e-2
                torch.testing.assert_close(packed[b], ref[len(prompts[b]) :], atol=tol, rtol=tol)


def test_ragged_forward_rejects_overflow(target):
    model = target.model
    cache = model.new_cache(2, 8)
    with pytest.raises(ValueError, match="KV cache full"):
        model(torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, 2, dtype=torch.long), cache,
              seq_lens=torch.tensor([7, 0]), num_new=torch.tensor([2, 1]))


@pytest.mark.parametrize("k", [3, "auto"])
def test_batched_greedy_rows_equal_solo_plain_engine(target, k):
    check_batched_greedy_rows(target, k)


def test_batched_bfloat16_rows_equal_solo_plain_engine_bit_for_bit(tiny_model_dir):
    """In bfloat16 the rows of a ragged verify pass must score as a solo decode step does, or
    greedy output drifts: the C stack's ragged entry computes each row as that sequence alone."""
    target = load_model(str(tiny_model_dir), "bfloat16", "cpu", 256)
    if not target.model.row_layout(torch.tensor([0]), torch.tensor([1]), 1, target.model.new_cache(1, 64)).native:
        pytest.skip("no C kernels here: the PyTorch ragged forward is not row-invariant in bfloat16")
    check_batched_greedy_rows(target, 3, "bfloat16")


def check_batched_greedy_rows(target, k, dtype="float32"):
    spec = SpeculativeConfig(method="ngram", num_speculative_tokens=k)
    cost = FrozenCost([1.0 + 0.02 * n for n in range(1, 40)])  # memory-bound: drafts pay
    engine = Engine(target, build_proposers(spec, target, dtype, "cpu", 256, 4), spec, 256, cost)
    params = SamplingParams(temperature=0, max_tokens=40, ignore_eos=True)
    jobs = {f"r{i}": (encode(target, p), params) for i, p in enumerate(PROMPTS[:4])}
    tokens, steps = run_batch(engine, jobs)
    for rid, (prompt, _) in jobs.items():
        assert tokens[rid] == solo(target, prompt, params), rid
    # The batch really was ragged: rows drafted and accepted different amounts in one step.
    ragged = [s for s in steps if len(s) > 1 and len({o.num_accepted for o in s.values()}) > 1]
    assert ragged, "no step had rows with different acceptance"
    assert engine.stats.num_accepted_tokens > 0
    assert engine.num_running == 0 and engine.num_free == 4


def test_batched_draft_model_rows_equal_solo_plain_engine(target, tiny_draft_dir):
    spec = SpeculativeConfig(method="draft", draft_model=str(tiny_draft_dir), num_speculative_tokens=3)
    proposers = build_proposers(spec, target, "float32", "cpu", 256, 3)
    assert len({id(p) for p in proposers}) == 3 and len({id(p.model) for p in proposers}) == 1  # one draft model, own caches
    engine = Engine(target, proposers, spec, 256)
    params = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)
    jobs = {f"d{i}": (encode(target, p), params) for i, p in enumerate(PROMPTS[:3])}
    tokens, _ = run_batch(engine, jobs)
    for rid, (prompt, _) in jobs.items():
        assert tokens[rid] == solo(target, prompt, params), rid
    assert 0 < engine.stats.num_accepted_tokens < engine.stats.num_draft_tokens  # drafts both pass and fail


def eagle_rows(target, method: str, num_rows: int, monkeypatch) -> list:
    """build_row_proposers' EAGLE/hybrid rows over one random tiny head (test_eagle.make_head)."""
    from test_eagle import make_head

    from specdec.proposers import factory

    head = make_head(target)
    monkeypatch.setattr(factory, "build_eagle_head", lambda spec, target, dtype: head)
    # a random head's confidence is near zero: the pruner would drop every draft it makes
    spec = SpeculativeConfig(method=method, num_speculative_tokens="auto", prune=False)
    return spec, build_proposers(spec, target, "float32", "cpu", 256, num_rows)


@pytest.mark.parametrize("method", ["eagle", "hybrid"])
def test_batched_eagle_and_hybrid_rows_equal_solo_plain_engine(target, method, monkeypatch):
    """Each row's head is fed its own target features out of the packed ragged forward."""
    spec, proposers = eagle_rows(target, method, 4, monkeypatch)
    heads = {id(p.eagle.head if method == "hybrid" else p.head) for p in proposers}
    assert len({id(p) for p in proposers}) == 4 and len(heads) == 1  # one head, a cache per row
    cost = FrozenCost([1.0 + 0.02 * n for n in range(1, 40)])
    engine = Engine(target, proposers, spec, 256, cost)
    params = SamplingParams(temperature=0, max_tokens=40, ignore_eos=True)
    jobs = {f"e{i}": (encode(target, p), params) for i, p in enumerate(PROMPTS[:4])}
    tokens, steps = run_batch(engine, jobs, join_at={"e3": 5})
    for rid, (prompt, _) in jobs.items():
        assert tokens[rid] == solo(target, prompt, params), rid
    classes = {o.draft_class for s in steps for o in s.values() if o.draft_ids}
    if method == "hybrid":  # both kinds drafted, each counted under its class
        assert "eagle" in classes and any(c.startswith("ngram:") for c in classes)
        assert set(engine.stats.by_class) == classes
        assert engine.stats.num_accepted_tokens > 0
    # a random head's greedy drafts rarely pass; the sampled test below has accepted EAGLE drafts
    assert engine.stats.num_drafts > 0


def test_batched_hybrid_rows_keep_the_eagle_cache_aligned(target, monkeypatch):
    """After a batched run, a row's head cache holds exactly the pairs a from-scratch feed would."""
    from test_eagle import features_for

    spec, proposers = eagle_rows(target, "hybrid", 2, monkeypatch)
    engine = Engine(target, proposers, spec, 256, FrozenCost([1.0 + 0.02 * n for n in range(1, 40)]))
    params = SamplingParams(temperature=0, max_tokens=150, ignore_eos=True)
    jobs = {f"a{i}": (encode(target, p), params) for i, p in enumerate(PROMPTS[:2])}
    engine.add("a0", *jobs["a0"])
    req, _ = engine.add("a1", *jobs["a1"])
    for _ in range(6):
        engine.step()
    eagle = req.proposer.eagle
    feats = features_for(target, req.state.token_ids[:-1], eagle.target_hidden_layers)
    eagle.propose(req.state, 1)  # feeds what is queued
    n = len(req.state.token_ids) - 1
    assert eagle.num_real == n
    with torch.inference_mode():
        head = eagle.head
        ref = head.new_cache(256)
        head.step(head.fuse_features(feats.to(head.dtype))[None], torch.tensor([req.state.token_ids[1 : n + 1]]),
                  torch.arange(n)[None], ref)
    torch.testing.assert_close(eagle.cache.k[..., :n, :], ref.k[..., :n, :], atol=1e-4, rtol=1e-4)


def test_seeded_sampled_eagle_rows_reproduce_solo_runs(target, monkeypatch):
    """Sampled EAGLE drafts (q from the head) in a batch: each row draws what its solo run draws."""
    from specdec.proposers.eagle import EagleProposer

    spec, proposers = eagle_rows(target, "eagle", 3, monkeypatch)
    spec = SpeculativeConfig(method="eagle", num_speculative_tokens=3)
    engine = Engine(target, proposers, spec, 256)
    jobs = {
        f"q{i}": (encode(target, p), SamplingParams(temperature=1.0, max_tokens=30, seed=7 + i, ignore_eos=True))
        for i, p in enumerate(PROMPTS[:3])
    }
    tokens, _ = run_batch(engine, jobs)
    head = proposers[0].head
    for rid, (prompt, params) in jobs.items():
        ref = Engine(target, EagleProposer(head, target.model, 256), spec, 256).generate(prompt, params).token_ids
        assert tokens[rid] == ref, rid
    assert 0 < engine.stats.num_accepted_tokens < engine.stats.num_draft_tokens


def test_batched_eagle_asks_for_a_head(target):
    for method in ("eagle", "hybrid"):  # the tiny target has no shipped head
        with pytest.raises(ValueError, match="--speculative-draft-model-path DIR"):
            build_proposers(SpeculativeConfig(method=method, num_speculative_tokens="auto"), target, "float32", "cpu", 256, 2)


@pytest.mark.parametrize("method", ["eagle", "hybrid"])
@pytest.mark.parametrize("k, prune", [(3, False), ("auto", False), ("auto", True)])
def test_batched_tree_rows_equal_solo_plain_engine(target, method, k, prune, monkeypatch):
    """EAGLE-2 trees (and the hybrid's grafts) in a batch: one ragged pass with each row's tree
    mask, each row's accepted path compacted into place; greedy rows equal plain decoding.
    With confidence pruning (auto K) each row's tree is cut by its own pruner."""
    from test_eagle import make_head

    from specdec.proposers import factory

    head = make_head(target)
    monkeypatch.setattr(factory, "build_eagle_head", lambda spec, target, dtype: head)
    spec = SpeculativeConfig(method=method, num_speculative_tokens=k, tree_nodes=8, prune=prune)
    cost = FrozenCost([1.0 + 0.002 * n for n in range(1, 80)])  # memory-bound: trees pay
    engine = Engine(target, build_proposers(spec, target, "float32", "cpu", 256, 3), spec, 256, cost)
    params = SamplingParams(temperature=0, max_tokens=40, ignore_eos=True)
    jobs = {f"t{i}": (encode(target, p), params) for i, p in enumerate(PROMPTS[:3])}
    tokens, steps = run_batch(engine, jobs, join_at={"t2": 3})
    for rid, (prompt, _) in jobs.items():
        assert tokens[rid] == solo(target, prompt, params), rid
    if prune:  # a random head's trees promise little: the rows' pruners cut them
        assert engine.stats.num_pruned_tokens > 0
    else:
        batched_trees = [s for s in steps if sum(len(o.draft_ids) > 1 for o in s.values()) > 1]
        assert batched_trees, "no step verified trees of several rows together"
        assert engine.stats.num_drafts > 0


def test_llm_generate_runs_a_list_as_one_continuous_batch(tiny_model_dir):
    """LLM.generate over more prompts than rows: every output equals its one-at-a-time run."""
    from specdec import LLM

    params = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
    batched = LLM(str(tiny_model_dir), speculative_method="ngram", num_speculative_tokens=3, max_num_seqs=3,
                  max_model_len=256)
    outs = batched.generate(PROMPTS, params, use_tqdm=False)
    one = LLM(str(tiny_model_dir), speculative_method="ngram", num_speculative_tokens=3, max_num_seqs=1, max_model_len=256)
    for prompt, out in zip(PROMPTS, outs):
        [ref] = one.generate(prompt, params, use_tqdm=False)
        assert out.outputs[0].token_ids == ref.outputs[0].token_ids
        assert out.outputs[0].text == ref.outputs[0].text and out.outputs[0].finish_reason == "length"
    assert batched.stats.num_generated_tokens == len(PROMPTS) * (params.max_tokens - 1)


def test_requests_join_leave_and_cancel(target):
    spec = SpeculativeConfig(method="ngram", num_speculative_tokens=4)
    engine = Engine(target, build_proposers(spec, target, "float32", "cpu", 256, 3), spec, 256)
    short = SamplingParams(temperature=0, max_tokens=7, ignore_eos=True)
    long = SamplingParams(temperature=0, max_tokens=30, ignore_eos=True)
    jobs = {
        "a": (encode(target, PROMPTS[0]), long),
        "b": (encode(target, PROMPTS[1]), short),  # leaves early, its row is reused by d
        "c": (encode(target, PROMPTS[2]), long),  # cancelled at step 3
        "d": (encode(target, PROMPTS[3]), long),
        "e": (encode(target, PROMPTS[4]), short),
    }
    join_at = {"c": 1, "d": 6, "e": 9}
    tokens, _ = run_batch(engine, jobs, join_at, cancel=("c", 3))
    for rid in "abde":
        prompt, params = jobs[rid]
        assert tokens[rid] == solo(target, prompt, params), rid
    assert 0 < len(tokens["c"]) < 30
    assert engine.num_free == 3 and not engine.cancel("c")


def test_seeded_sampled_rows_reproduce_solo_runs(target):
    spec = SpeculativeConfig(method="ngram", num_speculative_tokens=3)
    engine = Engine(target, build_proposers(spec, target, "float32", "cpu", 256, 3), spec, 256)
    jobs = {
        f"s{i}": (encode(target, p), SamplingParams(temperature=0.8, top_k=50, max_tokens=30, seed=100 + i, ignore_eos=True))
        for i, p in enumerate(PROMPTS[:3])
    }
    tokens, _ = run_batch(engine, jobs)
    for rid, (prompt, params) in jobs.items():
        assert tokens[rid] == solo(target, prompt, params, NgramProposer(), 3), rid


def test_choices_of_one_prompt_share_its_prefill(target, monkeypatch):
    """Rows that join with the same prompt before the next step (a request's n choices) prefill
    once: the others copy that row's cache and reuse its logits and features. Each choice still
    gives its solo run, seeded sampled and greedy, with EAGLE reading the shared features."""
    spec, proposers = eagle_rows(target, "eagle", 4, monkeypatch)
    engine = Engine(target, proposers, spec, 256, FrozenCost([1.0 + 0.02 * n for n in range(1, 40)]))
    prefills = []
    forward = engine.model.forward
    monkeypatch.setattr(engine.model, "forward", lambda ids, *a, **k: prefills.append(ids.shape) or forward(ids, *a, **k))
    prompt, other = encode(target, PROMPTS[0]), encode(target, PROMPTS[3])
    jobs = {f"n{i}": (prompt, SamplingParams(temperature=0.9, max_tokens=25, seed=7 + i, ignore_eos=True)) for i in range(3)}
    jobs["g"] = (other, SamplingParams(temperature=0, max_tokens=25, ignore_eos=True))
    tokens, _ = run_batch(engine, jobs)
    assert [s for s in prefills if s[1] > 1 and s[0] == 1][:2] == [(1, len(prompt)), (1, len(other))]  # two prefills
    assert len({tuple(tokens[f"n{i}"]) for i in range(3)}) == 3  # three different samples
    for rid, (ids, params) in jobs.items():
        assert tokens[rid] == solo(target, ids, params), rid
    late = Engine(target, [None, None], None, 256)  # a row that joins after the first stepped prefills anew
    late.add("a", prompt, SamplingParams(temperature=0, max_tokens=5))
    late.step()
    assert late._prefilled(prompt) is None


def test_check_request_and_full_batch(target):
    engine = Engine(target, [None], None, 64)
    with pytest.raises(ValueError, match="exceeds the context"):
        engine.add("x", [1] * 60, SamplingParams(max_tokens=10))
    with pytest.raises(ValueError, match="empty"):
        engine.add("x", [], SamplingParams())
    engine.add("x", [1, 2, 3], SamplingParams(max_tokens=5))
    with pytest.raises(RuntimeError, match="busy"):
        engine.add("y", [1, 2, 3], SamplingParams(max_tokens=5))
