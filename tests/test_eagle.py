"""EAGLE heads: shapes, cache and tree-mask consistency, the proposer's alignment and
losslessness through the engine (untrained heads), training, and import/export layouts."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from safetensors.torch import load_file

from specdec.config import SamplingParams, SpeculativeConfig
from conftest import FrozenCost
from specdec.models.linear import blocked_supported
from specdec.engine.engine import Engine
from specdec.models.eagle import EagleConfig, EagleHead, load_native_head, save_head
from specdec.models.head_io import import_head, load_head, target_lm_head_weight
from specdec.models.loader import load_model
from specdec.proposers.eagle import EagleProposer, TreeConfig
from specdec.proposers.factory import build_proposers
from specdec.train.export import export_head
from test_lossless import check_joint, tiny_native


@pytest.fixture(scope="module")
def tiny_target(tiny_model_dir):
    return load_model(tiny_model_dir, "float32", "cpu", 512)


def make_head(target, arch="eagle1", draft_vocab=None, seed=0) -> EagleHead:
    torch.manual_seed(seed)
    head = EagleHead(EagleConfig.for_target(target.config, arch, draft_vocab))
    with torch.no_grad():
        for name, p in head.named_parameters():
            if p.dim() > 1 and "lm_head" not in name:
                p.normal_(0.0, 0.08)
        if head.draft_to_target is not None:
            g = torch.Generator().manual_seed(seed)
            head.draft_to_target.copy_(torch.randperm(target.config.vocab_size, generator=g)[:draft_vocab].sort().values)
            head.init_from_target(target_lm_head_weight(target.model), target.model.norm.weight)
    return head.eval().requires_grad_(False).attach(target.model.embed, target.model.lm_head)


def features_for(target, token_ids: list[int], layers) -> torch.Tensor:
    """[T, F] target features by one full forward."""
    model = target.model
    ids = torch.tensor([token_ids])
    out = model(ids, torch.arange(len(token_ids))[None], model.new_cache(1, len(token_ids)), hidden_layers=layers)
    return torch.cat([out.hidden_states[i][0] for i in layers], dim=-1)


CASES = [("eagle1", None), ("eagle1", 3000), ("eagle3", 3000)]


@pytest.mark.parametrize("arch, draft_vocab", CASES)
def test_head_shapes_and_vocab_maps(tiny_target, arch, draft_vocab):
    head = make_head(tiny_target, arch, draft_vocab)
    c = head.config
    feats = torch.randn(2, 5, c.feature_size)
    tokens = torch.randint(0, c.vocab_size, (2, 5))
    cache = head.new_cache(16, batch_size=2)
    hidden = head.step(head.fuse_features(feats), tokens, torch.arange(5)[None].expand(2, 5), cache)
    assert hidden.shape == (2, 5, c.hidden_size) and cache.length == 5
    logits = head.logits(hidden)
    assert logits.shape == (2, 5, c.draft_vocab_size)
    full = head.full_vocab_logits(logits)
    assert full.shape == (2, 5, c.vocab_size)
    ids = head.to_target_ids(logits.argmax(-1))
    assert torch.equal(full.argmax(-1), ids)
    if draft_vocab:
        outside = torch.ones(c.vocab_size, dtype=torch.bool)
        outside[head.draft_to_target] = False
        assert torch.isinf(full[..., outside]).all() and torch.isfinite(full[..., ~outside]).all()


@pytest.mark.parametrize("arch, draft_vocab", CASES[::2])
def test_incremental_steps_equal_one_causal_pass(tiny_target, arch, draft_vocab):
    head = make_head(tiny_target, arch, draft_vocab)
    feats = head.fuse_features(torch.randn(1, 6, head.config.feature_size))
    tokens = torch.randint(0, 1000, (1, 6))
    full = head.step(feats, tokens, torch.arange(6)[None], head.new_cache(8))
    cache = head.new_cache(8)
    steps = [head.step(feats[:, i : i + 1], tokens[:, i : i + 1], torch.tensor([[i]]), cache) for i in range(6)]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)


def test_tree_mask_in_the_head_equals_separate_branches(tiny_target):
    head = make_head(tiny_target)
    d = head.config.hidden_size
    prefix, kids = torch.randn(1, 4, d), torch.randn(1, 2, d)
    ids, kid_ids = torch.randint(0, 1000, (1, 4)), torch.randint(0, 1000, (1, 2))
    cache = head.new_cache(8)
    head.step(prefix, ids, torch.arange(4)[None], cache)
    mask = torch.tensor([[[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 0, 1]]], dtype=torch.bool)  # siblings
    both = head.step(kids, kid_ids, torch.tensor([[4, 4]]), cache, mask)
    for i in range(2):
        cache.truncate(4)
        alone = head.step(kids[:, i : i + 1], kid_ids[:, i : i + 1], torch.tensor([[4]]), cache)
        torch.testing.assert_close(both[:, i : i + 1], alone, atol=1e-5, rtol=1e-5)


def run(target, proposer, params, k=3, prompt="The cat sat on the mat. The cat"):
    spec = SpeculativeConfig(method="eagle" if proposer else "none", num_speculative_tokens=k)
    return Engine(target, proposer, spec, 512).generate(target.tokenizer.encode(prompt), params)


@pytest.mark.parametrize("arch, draft_vocab", CASES)
@pytest.mark.parametrize("tree", [None, TreeConfig(top_k=3, num_nodes=8)])
def test_eagle_greedy_equals_plain(tiny_target, arch, draft_vocab, tree):
    params = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)
    plain = run(tiny_target, None, params)
    head = make_head(tiny_target, arch, draft_vocab)
    result = run(tiny_target, EagleProposer(head, tiny_target.model, 512, tree), params, k=4)
    assert result.token_ids == plain.token_ids
    assert result.stats.num_drafts > 0


@pytest.mark.parametrize("tree", [None, TreeConfig(top_k=4, num_nodes=10)])
def test_head_cache_holds_exactly_the_real_pairs(tiny_target, tree):
    """After a sampled run with accepted drafts, the head's cache equals a from-scratch pass
    over the pairs (f_t, token t+1) at positions t: the alignment and rollback are right."""
    head = make_head(tiny_target, "eagle1")
    proposer = EagleProposer(head, tiny_target.model, 512, tree)
    params = SamplingParams(temperature=1.0, max_tokens=30, ignore_eos=True, seed=3)
    result = run(tiny_target, proposer, params, k=3, prompt="Hello there, how are you?")
    if tree is None:
        assert result.stats.num_accepted_tokens > 0  # the rollback must have kept some drafts
    tokens = result.prompt_ids + result.token_ids
    n = proposer.num_real
    assert 0 < n < len(tokens)
    feats = features_for(tiny_target, tokens[:n], head.config.feature_layers)
    cache = head.new_cache(n)
    head.step(feats[None], torch.tensor([tokens[1 : n + 1]]), torch.arange(n)[None], cache)
    torch.testing.assert_close(proposer.cache.k[..., :n, :], cache.k[..., :n, :], atol=1e-4, rtol=1e-4)


def test_sampled_chain_q_is_a_full_vocab_distribution(tiny_target):
    head = make_head(tiny_target, "eagle1", 3000)
    proposer = EagleProposer(head, tiny_target.model, 512)
    prompt = tiny_target.tokenizer.encode("Hello")
    model = tiny_target.model
    out = model(torch.tensor([prompt]), torch.arange(len(prompt))[None], model.new_cache(1, 64), hidden_layers=(-1,))
    from specdec.drafts import SequenceState

    params = SamplingParams(temperature=0.7, top_p=0.9)
    state = SequenceState(prompt + [42], len(prompt), params, torch.Generator().manual_seed(0), out.hidden_states[-1][0])
    proposer.start(state)
    proposal = proposer.propose(state, 4)
    q = proposal.probs[0]  # [K, V]
    assert q.shape == (4, tiny_target.config.vocab_size)
    torch.testing.assert_close(q.sum(-1), torch.ones(4))
    outside = torch.ones(q.shape[-1], dtype=torch.bool)
    outside[head.draft_to_target] = False
    assert (q[:, outside] == 0).all()
    assert (q.gather(1, proposal.token_ids[0][:, None]) > 0).all()


# A cost curve for the tiny six-token target: the controller drafts K = 2 and the pruner
# keeps a first token only if its calibrated confidence beats 0.4, so 0, 1 and 2 tokens
# are all verified (an untrained head over a real vocabulary would be pruned every step).
STEEP = [1.0, 1.4, 1.6]


@pytest.mark.parametrize("tree", [None, TreeConfig(top_k=2, num_nodes=4)])
def test_auto_k_with_confidence_pruning_greedy_equals_plain(tree):
    """Auto K prunes drafts by their own confidence (engine.prune); the output is plain decoding's."""
    target = tiny_native(0)
    params = SamplingParams(temperature=0, max_tokens=40, ignore_eos=True)
    spec = SpeculativeConfig(method="eagle", num_speculative_tokens="auto", tree_nodes=tree.num_nodes if tree else 0)
    pruned = drafts = 0
    for prompt in ([1, 4, 2], [3, 3, 5, 0], [2, 1, 2, 1, 2]):
        plain = Engine(target, None, None, 64).generate(prompt, params)
        proposer = EagleProposer(make_head(target), target.model, 64, tree)
        result = Engine(target, proposer, spec, 64, cost=FrozenCost(list(STEEP))).generate(prompt, params)
        assert result.token_ids == plain.token_ids
        pruned += result.stats.num_pruned_tokens
        drafts += result.stats.num_drafts
    assert drafts > 0 and pruned > 0


@pytest.mark.parametrize("tree", [None, TreeConfig(top_k=2, num_nodes=4)])
@pytest.mark.parametrize("auto", [False, True])
def test_sampled_joint_matches_target(tree, auto):
    """EAGLE chains and trees, fixed K = 2 and auto K with confidence pruning: the joint of
    the first tokens (prefill, then the first speculative step) is the target's."""
    target = tiny_native(0)
    proposer = EagleProposer(make_head(target), target.model, 64, tree)
    spec = SpeculativeConfig("eagle", None, "auto" if auto else 2, tree_nodes=tree.num_nodes if tree else 0)
    engine = Engine(target, proposer, spec, 64, cost=FrozenCost(list(STEEP)) if auto else None)
    stats = check_joint(engine, target, [1, 4, 2], top_k=0)
    # trees are deterministic top-k nodes, so the pruner may cut them when sampling; sampled
    # chains carry no scores (pruning by a sampled token's own q is biased)
    assert (stats.num_pruned_tokens > 0) == (auto and tree is not None)


def started_proposer(target, tree=None, prompt="Hello there, how are you?"):
    from specdec.drafts import SequenceState

    proposer = EagleProposer(make_head(target, "eagle1"), target.model, 512, tree)
    ids = target.tokenizer.encode(prompt)
    model = target.model
    out = model(torch.tensor([ids]), torch.arange(len(ids))[None], model.new_cache(1, 64), hidden_layers=(-1,))
    state = SequenceState(ids + [42], len(ids), SamplingParams(temperature=0), torch.Generator(), out.hidden_states[-1][0])
    proposer.start(state)
    return proposer, state


def test_drafts_carry_their_confidence_and_trees_come_in_rank_order(tiny_target):
    proposer, state = started_proposer(tiny_target)
    chain = proposer.propose(state, 4)
    assert chain.scores.shape == (1, 4) and (chain.scores[0].diff() <= 0).all() and (chain.scores < 0).all()
    proposer, state = started_proposer(tiny_target, TreeConfig(top_k=3, num_nodes=9))
    tree = proposer.propose(state, 4).tree
    scores, parents = tree.scores, tree.parents.tolist()
    assert scores[0] == 0 and (scores[1:].diff() <= 0).all()  # rank order: every prefix is the best subtree
    assert all(scores[i] <= scores[p] for i, p in enumerate(parents[1:], 1))
    assert int(tree.depths.max()) >= 2


def test_prune_keeps_a_chain_prefix_a_tree_prefix_or_nothing():
    from specdec.engine.controller import ConfidencePruner
    from specdec.engine.engine import prune
    from specdec.drafts import DraftProposal
    from specdec.drafts import DraftTree

    curve = [1.0, 1.1, 1.2, 1.3, 1.4]
    chain = DraftProposal(torch.tensor([[5, 6, 7]]), torch.full((1, 3, 10), 0.1), scores=torch.tensor([[0.9, 0.72, 0.01]]).log())
    kept, (scores, depths) = prune(chain, ConfidencePruner(4), curve.__getitem__, 0.0)
    assert kept.token_ids.tolist() == [[5, 6]] and kept.probs.shape == (1, 2, 10) and depths == [1, 2]
    # root, a (0.9) and b (0.05) under it, c (0.8) under a: rank order a, c, b
    tree = DraftTree(torch.tensor([0, 5, 6, 7]), torch.tensor([-1, 0, 1, 0]), scores=torch.tensor([1.0, 0.9, 0.8, 0.05]).log())
    kept, (scores, depths) = prune(DraftProposal(tree.token_ids[1:][None], None, tree), ConfidencePruner(4), curve.__getitem__, 0.0)
    assert kept.tree.token_ids.tolist() == [0, 5, 6] and kept.tree.parents.tolist() == [-1, 0, 1] and depths == [1, 2]
    doubtful = DraftProposal(torch.tensor([[5]]), None, scores=torch.tensor([[0.01]]).log())
    kept, confidence = prune(doubtful, ConfidencePruner(4), curve.__getitem__, 0.0)
    assert kept.num_tokens == 0 and confidence == ([], [])
    plain = DraftProposal(torch.tensor([[5]]))  # no scores: left as it is
    assert prune(plain, ConfidencePruner(4), curve.__getitem__, 0.0) == (plain, None)


# ---------------------------------------------------------------- training


def test_a_few_training_steps_lower_the_loss(tiny_target, tmp_path):
    from specdec.train.data import build_dataset, load_dataset
    from specdec.train.trainer import TrainConfig, Trainer

    convs = [[{"role": "user", "content": f"Tell me about number {i}."}] for i in range(4)]
    build_dataset(tiny_target, convs, tmp_path / "data", (1, 2, -1), max_new_tokens=12, batch_size=4)
    info, seqs3 = load_dataset(tmp_path / "data")
    d = tiny_target.config.hidden_size
    assert len(seqs3) == 4 and seqs3[0]["features"].shape[-1] == 3 * d and info.feature_layers == [1, 2, -1]
    seqs1 = [dict(s, features=s["features"][:, 2 * d :]) for s in seqs3]  # layer -1 alone
    lm = target_lm_head_weight(tiny_target.model)
    # eagle3 starts from a random layer under the target's norm + LM head (cross-entropy ~20
    # nats) and, with no regression term, moves slower in 16 steps than eagle1
    cases = (("eagle1", 4000, seqs1, (-1,), 0.85), ("eagle3", None, seqs3, (1, 2, -1), 0.98))
    for arch, draft_vocab, seqs, layers, ratio in cases:
        torch.manual_seed(0)
        head = EagleHead(EagleConfig.for_target(tiny_target.config, arch, draft_vocab, layers))
        if draft_vocab:
            counts = sum(torch.bincount(s["token_ids"].long(), minlength=tiny_target.config.vocab_size) for s in seqs)
            head.draft_to_target.copy_(torch.sort(counts, descending=True, stable=True).indices[:draft_vocab].sort().values)
        head.init_from_target(lm, tiny_target.model.norm.weight)
        config = TrainConfig(epochs=8, lr=3e-3, warmup_steps=2, max_tokens_per_batch=256, unroll=2, cls_weight=0.1, checkpoint_every=5)
        trainer = Trainer(head, tiny_target.model.embed.weight, lm, seqs, config, tmp_path / arch)
        before = trainer.evaluate(seqs)["loss"]
        trainer.train()
        after = trainer.evaluate(seqs)["loss"]
        assert after < ratio * before, (arch, before, after)
    # resume: a trainer with more epochs continues from the last checkpoint's step
    resumed = Trainer(head, tiny_target.model.embed.weight, lm, seqs, TrainConfig(epochs=9, max_tokens_per_batch=256), tmp_path / "eagle3")
    resumed.load_checkpoint()
    assert resumed.step == trainer.step > 0


def test_compact_rows_packs_each_batch_row_in_order():
    from specdec.train.trainer import compact_rows, compact_unroll_mask, unroll_mask

    keep = torch.tensor([[0, 1, 1, 0, 1], [0, 0, 0, 1, 0], [0, 0, 0, 0, 0]], dtype=torch.bool)
    rows, valid = compact_rows(keep)
    assert rows.shape == valid.shape == (3, 3)
    assert rows[0].tolist() == [1, 2, 4] and rows[1, 0] == 3
    assert valid.tolist() == [[True] * 3, [True, False, False], [False] * 3]
    assert bool((keep.gather(1, rows) == valid).all())
    mask = compact_unroll_mask(rows, 5, 2)  # [B, 3, 5 + 2 * 3]
    assert mask[0, 1].tolist() == [True, True, True, False, False] + [False, True, False] * 2
    # every row kept: the unrolled step's mask
    everything = compact_rows(torch.ones(2, 4, dtype=torch.bool))[0]
    assert torch.equal(compact_unroll_mask(everything, 4, 2), unroll_mask(4, 2)[None].expand(2, -1, -1))
    # widths rounded up to a multiple, at most L: the same rows first, the rest invalid
    rows4, valid4 = compact_rows(keep, 4)
    assert rows4.shape == (3, 4) and torch.equal(rows4[:, :3], rows) and not valid4[:, 3].any()
    assert compact_rows(keep, 8)[0].shape == (3, 5)


@pytest.mark.parametrize("arch, labels", [("eagle1", True), ("eagle1", False), ("eagle3", True)])
def test_unrolled_steps_on_packed_rows_equal_every_row(tiny_target, tmp_path, arch, labels):
    """The training-time test's steps >= 1 on the packed rows that take a loss (and step 0's
    queries on the rows it needs, shapes rounded up) give the loss, metrics and gradients of
    the same steps over every row at exact shapes (float32, so equal to rounding)."""
    from specdec.train.trainer import TrainConfig, Trainer, collate

    layers = (1, 2, -1) if arch == "eagle3" else (-1,)
    gen = torch.Generator().manual_seed(5)
    vocab, feat = tiny_target.config.vocab_size, len(layers) * tiny_target.config.hidden_size
    seqs = []
    for n, spans in ((23, [(9, 23)]), (17, [(4, 8), (12, 17)]), (30, [(26, 30)])):  # prompts, then replies
        mask = torch.zeros(n, dtype=torch.bool)
        for a, z in spans:
            mask[a:z] = True
        ids = torch.randint(0, vocab, (n,), generator=gen)
        seq = {"features": torch.randn(n, feat, generator=gen), "token_ids": ids,
               "target_ids": torch.cat((ids[1:], ids[:1])), "loss_mask": mask}
        if labels:
            seq["label_ids"] = torch.randint(0, vocab, (n, 4), generator=gen)
            seq["label_probs"] = torch.softmax(torch.randn(n, 4, generator=gen), -1)
        seqs.append(seq)
    lm = target_lm_head_weight(tiny_target.model)
    results = []
    for compact in (True, False):
        torch.manual_seed(0)
        head = EagleHead(EagleConfig.for_target(tiny_target.config, arch, 3000, layers))
        head.draft_to_target.copy_(torch.randperm(vocab, generator=torch.Generator().manual_seed(1))[:3000].sort().values)
        head.init_from_target(lm, tiny_target.model.norm.weight)
        # the packed path with shapes rounded up (a batch width of 32, packed widths of 16, 64
        # rows through the LM head) against the reference's exact shapes
        multiples = dict(width_multiple=16, loss_rows_multiple=64) if compact else dict(width_multiple=1, loss_rows_multiple=1)
        config = TrainConfig(unroll=3, compact_unroll=compact, **multiples)
        trainer = Trainer(head, tiny_target.model.embed.weight, lm, seqs, config, tmp_path)
        loss, metrics = trainer.loss(collate(seqs, [0, 1, 2], config.width_multiple), torch.Generator().manual_seed(3))
        loss.backward()
        results.append((loss.detach(), metrics, {k: p.grad for k, p in head.named_parameters() if p.grad is not None}))
    (loss_c, metrics_c, grads_c), (loss_f, metrics_f, grads_f) = results
    torch.testing.assert_close(loss_c, loss_f, rtol=1e-5, atol=1e-5)
    assert metrics_c.keys() == metrics_f.keys() and {"acc0", "acc1", "acc2"} <= metrics_c.keys()
    for key in metrics_c:
        assert metrics_c[key] == pytest.approx(metrics_f[key], rel=1e-4, abs=1e-5), key
    assert grads_c.keys() == grads_f.keys() and len(grads_c) > 4
    for name in grads_c:
        torch.testing.assert_close(grads_c[name], grads_f[name], rtol=1e-4, atol=1e-6, msg=name)


_FAULTS_OF_REUSE = textwrap.dedent("""
    import resource, sys, torch
    from specdec.train.trainer import hold_freed_memory
    if sys.argv[1] == "hold" and not hold_freed_memory():
        sys.exit(3)
    for _ in range(4):  # page faults of allocating and touching 5 x 20 MiB, then freeing them
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        blocks = [torch.ones(5 << 20) for _ in range(5)]
        del blocks
        print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


def test_hold_freed_memory_reuses_freed_blocks():
    """A training step's pattern in small: blocks under 32 MiB, more than 64 MiB of them,
    allocated and freed again and again. glibc's defaults hand them back to the kernel and
    fault their pages in again (~25k faults here, at least in the second round, after which its
    adaptive thresholds may catch up); after hold_freed_memory the later rounds reuse them
    (measured: 5120 / 0 / 0 faults against the first round's 25560)."""
    runs = {}
    for mode in ("hold", "default"):
        out = subprocess.run([sys.executable, "-c", _FAULTS_OF_REUSE, mode], capture_output=True, text=True, timeout=120)
        if out.returncode == 3:
            pytest.skip("malloc is not glibc's here")
        assert out.returncode == 0, out.stderr
        runs[mode] = [int(n) for n in out.stdout.split()]
    assert min(runs["hold"][0], runs["default"][0]) > 20000, runs  # both fault in fresh pages first
    assert runs["default"][1] > 20000, runs  # the default again (later rounds vary as its thresholds adapt)
    assert sum(runs["hold"][1:]) < runs["hold"][0] / 2, runs


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_label_cross_entropy_kernel_matches_the_aten_path(dtype, monkeypatch):
    """The trainer's token loss through the C kernel (autograd Function) against the same
    sum through log_softmax: loss, argmax and gradient, with unused labels at probability 0."""
    from specdec.models import native
    from specdec.train.trainer import LabelCrossEntropy, label_cross_entropy

    if not native.native_label_ce_supported(torch.zeros(1)):
        pytest.skip("no C kernels here")
    gen = torch.Generator().manual_seed(2)
    logits = (torch.randn(30, 300, generator=gen) * 4).to(dtype)
    ids = torch.randint(0, 300, (30, 6), generator=gen)
    probs = torch.rand(30, 6, generator=gen) * (torch.rand(30, 6, generator=gen) > 0.3)
    probs = probs / probs.sum(-1, keepdim=True).clamp(min=1e-9)
    weights = torch.rand(30, generator=gen)
    results = []
    for kernel in (True, False):
        monkeypatch.setattr(native, "native_label_ce_supported", lambda x, kernel=kernel: kernel)
        x = logits.clone().requires_grad_(True)
        loss, pred = label_cross_entropy(x, ids, probs)
        (loss * weights).sum().backward()
        results.append((loss.detach(), pred, x.grad))
    (loss_c, pred_c, grad_c), (loss_t, pred_t, grad_t) = results
    assert torch.equal(pred_c, pred_t) and torch.equal(pred_c, logits.float().argmax(-1))
    torch.testing.assert_close(loss_c, loss_t, rtol=1e-5, atol=1e-5)
    assert grad_c.dtype == grad_t.dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 2.0**-7
    torch.testing.assert_close(grad_c.float(), grad_t.float(), rtol=tol, atol=1e-6)
    assert LabelCrossEntropy.apply(logits, ids, probs)[1].requires_grad is False


def test_a_time_budget_shortens_the_schedule_and_stops_the_data(tiny_target, tmp_path, monkeypatch):
    """train-draft's budget: no prompt joins the data past its deadline, and the training
    schedule (and so its cosine decay) is cut to the steps that fit, and stays cut on resume."""
    import time as clock

    from specdec.train.data import build_dataset, load_dataset
    from specdec.train.trainer import TrainConfig, Trainer

    convs = [[{"role": "user", "content": f"Tell me about number {i}."}] for i in range(6)]
    info = build_dataset(tiny_target, convs, tmp_path / "late", (-1,), max_new_tokens=4, batch_size=2,
                         deadline=clock.perf_counter() - 1)
    assert info.num_sequences == 0 and info.shards == []
    info = build_dataset(tiny_target, convs, tmp_path / "data", (-1,), max_new_tokens=4, batch_size=2)
    assert info.num_sequences == 6
    seqs = load_dataset(tmp_path / "data")[1]
    lm = target_lm_head_weight(tiny_target.model)
    head = EagleHead(EagleConfig.for_target(tiny_target.config, "eagle1", None))
    config = TrainConfig(epochs=100, warmup_steps=1, max_tokens_per_batch=64, checkpoint_every=1000)
    trainer = Trainer(head, tiny_target.model.embed.weight, lm, seqs, config, tmp_path / "run")
    planned = trainer.total_steps
    assert planned == 100 * trainer.steps_per_epoch > 60
    now = clock.perf_counter()
    assert not trainer.fit_to_deadline(now + 1e6, 0.01, 0.0)  # plenty of time: the plan
    assert trainer.fit_to_deadline(now + 5.0 + 0.2, 0.01, 0.0) and trainer.total_steps < 20  # ~20 steps of 10 ms fit
    assert trainer.fit_to_deadline(now + 1e6, 0.01, 0.0) and trainer.total_steps == planned  # faster again: back to the plan
    last = trainer.train(eval_sequences=seqs[:2], deadline=clock.perf_counter())  # already late: cut at the first check
    assert trainer.step == last["total_steps"] == 50 < planned
    resumed = Trainer(head, tiny_target.model.embed.weight, lm, seqs, config, tmp_path / "run")
    resumed.load_checkpoint()
    assert resumed.step == resumed.total_steps == 50


def test_a_run_stopped_and_resumed_ends_on_the_same_weights(tiny_target, tmp_path, monkeypatch):
    """train-draft --resume: a run killed mid-epoch, after an epoch's evaluation, continues
    from its checkpoint and best.pt to the same head, bit for bit, as a run never stopped."""
    from specdec.train.data import build_dataset, load_dataset
    from specdec.train.trainer import TrainConfig, Trainer

    convs = [[{"role": "user", "content": f"Say something about {i} apples."}] for i in range(6)]
    build_dataset(tiny_target, convs, tmp_path / "data", (-1,), max_new_tokens=6, batch_size=3)
    seqs = load_dataset(tmp_path / "data")[1]
    lm = target_lm_head_weight(tiny_target.model)
    config = TrainConfig(epochs=3, warmup_steps=1, max_tokens_per_batch=48, unroll=2, checkpoint_every=2)
    # held-out scores that fall with every epoch: the first epoch's weights are the result,
    # so the resumed run must remember a score from before it stopped
    monkeypatch.setattr(Trainer, "evaluate", lambda self, _seqs: {"acc0": 1.0 / self.step, "acc1": 1.0 / self.step})

    def run(out, stop_after=None):
        torch.manual_seed(0)
        head = EagleHead(EagleConfig.for_target(tiny_target.config, "eagle1", None))
        head.init_from_target(lm, tiny_target.model.norm.weight)
        trainer = Trainer(head, tiny_target.model.embed.weight, lm, seqs, config, out)
        if stop_after is not None:
            loss, calls = Trainer.loss, []

            def dying_loss(self, *args):
                calls.append(1)
                if len(calls) > stop_after:
                    raise KeyboardInterrupt
                return loss(self, *args)

            monkeypatch.setattr(Trainer, "loss", dying_loss)
            with pytest.raises(KeyboardInterrupt):
                trainer.train(eval_sequences=seqs[:2])
            monkeypatch.setattr(Trainer, "loss", loss)
            torch.manual_seed(0)
            head = EagleHead(EagleConfig.for_target(tiny_target.config, "eagle1", None))
            trainer = Trainer(head, tiny_target.model.embed.weight, lm, seqs, config, out)
            return trainer, trainer.train(resume=True, eval_sequences=seqs[:2])
        return trainer, trainer.train(eval_sequences=seqs[:2])

    whole, whole_last = run(tmp_path / "whole")
    per_epoch = whole.steps_per_epoch
    assert per_epoch >= 3
    resumed, resumed_last = run(tmp_path / "resumed", stop_after=per_epoch + 1)  # one step into epoch 2, off the checkpoint grid
    assert resumed.step == whole.step == 3 * per_epoch
    assert resumed_last["best_epoch"] == whole_last["best_epoch"] == 1
    for (name, a), b in zip(whole.head.state_dict().items(), resumed.head.state_dict().values()):
        assert torch.equal(a, b), name
    assert resumed_last["train_seconds"] > 0


def test_batched_recording_matches_solo_greedy_and_teacher_forcing(tiny_target):
    """generate_records (the engine's continuous batching, features and labels recorded
    while decoding, rows refilled as sequences end) against the engine's own greedy run and
    a teacher-forced forward over the same tokens."""
    from specdec.api import encode_prompt
    from specdec.train.data import generate_records

    prompts = [encode_prompt(tiny_target.tokenizer, "Tell me a fact about the number " + "1" * i + ".") for i in range(5)]
    every: dict[int, dict] = {}
    records: dict[int, dict] = {}
    generate_records(tiny_target, prompts, 10, 2, (1, -1), 4, every.__setitem__, prompt_labels=True)
    generate_records(tiny_target, prompts, 10, 2, (1, -1), 4, records.__setitem__)  # 5 prompts, 2 rows
    assert sorted(records) == sorted(every) == list(range(5))
    engine = Engine(tiny_target, max_seq_len=512)
    d = tiny_target.config.hidden_size
    for i, ids in enumerate(prompts):
        full, rec = every[i], records[i]
        solo = engine.generate(ids, SamplingParams(temperature=0, max_tokens=10)).token_ids
        assert full["token_ids"].tolist() == rec["token_ids"].tolist() == ids + solo
        assert int(full["loss_mask"].sum()) == len(solo) and full["loss_mask"][: len(ids)].sum() == 0
        assert torch.equal(full["label_ids"][:, 0], full["target_ids"])
        assert full["target_ids"][len(ids) - 1 : -1].tolist() == solo  # greedy: the label is the next token
        assert full["label_probs"].shape == (len(ids) + len(solo), 4) and (full["label_probs"][:, :-1] >= full["label_probs"][:, 1:]).all()
        forced = features_for(tiny_target, full["token_ids"].tolist(), (1, -1))
        assert full["features"].shape == (len(ids) + len(solo), 2 * d)
        torch.testing.assert_close(full["features"].float(), forced, atol=2e-2, rtol=1e-2)  # float16 storage
        # without prompt labels (the default): the same from the prompt's last position on;
        # before it, no labels, and the prompt's own next token as target_ids
        p = len(ids) - 1
        assert torch.equal(rec["features"], full["features"]) and torch.equal(rec["loss_mask"], full["loss_mask"])
        assert torch.equal(rec["label_ids"][p:], full["label_ids"][p:]) and torch.equal(rec["target_ids"][p:], full["target_ids"][p:])
        torch.testing.assert_close(rec["label_probs"][p:], full["label_probs"][p:], atol=1e-3, rtol=0)
        assert not rec["label_ids"][:p].any() and not rec["label_probs"][:p].any()
        assert rec["target_ids"][:p].tolist() == ids[1:]


def test_recording_ends_a_response_at_its_first_eos(tiny_target, monkeypatch):
    """A response ends at its first EOS, kept, with a feature and labels for it (the row runs a
    step past EOS), whether EOS came as the step's last token or inside it."""
    from specdec.api import encode_prompt
    from specdec.train.data import generate_records

    ids = encode_prompt(tiny_target.tokenizer, "Count: one two three")
    solo = Engine(tiny_target, max_seq_len=512).generate(ids, SamplingParams(temperature=0, max_tokens=12)).token_ids
    cut = next(i for i in range(2, len(solo) - 1) if solo[i] not in solo[:i])  # a token first seen there
    monkeypatch.setattr(tiny_target.config, "eos_token_ids", [solo[cut]])
    records: dict[int, dict] = {}
    generate_records(tiny_target, [ids, ids[:-1]], 12, 2, (-1,), 4, records.__setitem__)
    rec = records[0]
    assert rec["token_ids"].tolist() == ids + solo[: cut + 1]
    assert rec["features"].shape[0] == rec["label_ids"].shape[0] == rec["target_ids"].shape[0] == len(ids) + cut + 1
    assert rec["target_ids"][len(ids) - 1 : -1].tolist() == solo[: cut + 1]
    forced = features_for(tiny_target, ids + solo[: cut + 2], (-1,))
    torch.testing.assert_close(rec["features"].float(), forced[: len(ids) + cut + 1], atol=2e-2, rtol=1e-2)
    assert int(rec["target_ids"][-1]) == solo[cut + 1]  # the label after EOS: what the target predicts there


def test_reply_passages_keep_plain_prose_cut_at_a_sentence(tmp_path):
    """train-draft --reply-prompts quotes the first round's replies: prose only, cut after
    a full sentence, in the dataset's order; the prompt part is never quoted."""
    from specdec.train.data import DatasetInfo, _write_shard, load_dataset, reply_passages

    words = ["<eos>", "Rain", "falls", "from", "clouds.", "It", "feeds", "rivers", "and", "fields.", "def", "f():", "{x}", "Snow"]

    class Words:
        def decode(self, ids, skip_special_tokens=True):
            return " ".join(words[i] for i in ids if not (skip_special_tokens and i == 0))

    prose = [1, 2, 3, 4, 5, 6, 7, 8, 9] * 3  # three times the two sentences
    replies = [prose + [0], [10, 11, 12] + prose, prose[:12], [13] * 20 + prose + [1, 2]]
    records = []
    for reply in replies:
        ids = [13, 13] + reply  # a two-token prompt: never quoted
        mask = torch.tensor([0, 0] + [1] * len(reply), dtype=torch.uint8)
        records.append({"token_ids": torch.tensor(ids, dtype=torch.int32), "target_ids": torch.tensor(ids, dtype=torch.int32),
                        "loss_mask": mask, "features": torch.zeros(len(ids), 2, dtype=torch.float16)})
    _write_shard(tmp_path / "shard-0000.safetensors", records, (-1,))
    info = DatasetInfo([-1], 2, len(records), 0, 0, ["shard-0000.safetensors"])
    (tmp_path / "dataset.json").write_text(json.dumps(info.__dict__))
    two = "Rain falls from clouds. It feeds rivers and fields."
    texts = reply_passages(load_dataset(tmp_path)[1], Words(), min_chars=60, max_chars=200)
    # 1: whole (ends at EOS); 2: code left out; 3: too short once cut; 4: cut within 200 chars
    assert texts[0] == " ".join([two] * 3)
    assert len(texts) == 2 and texts[1].startswith("Snow Snow") and texts[1].endswith(".") and 150 <= len(texts[1]) <= 200


def test_dataset_resumes_and_slices_feature_layers(tiny_target, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    from specdec.train.data import build_dataset, load_dataset

    convs = [[{"role": "user", "content": f"Count to {i}."}] for i in range(5)]
    build_dataset(tiny_target, convs, tmp_path, (1, -1), max_new_tokens=6, batch_size=2, shard_size=2)
    shards = sorted(tmp_path.glob("shard-*.safetensors"))
    assert len(shards) == 3
    first = load_dataset(tmp_path)[1]
    shards[-1].unlink()  # a run cut short: the last shard is missing
    for path in shards[:-1]:  # the stopped run took 50 s per shard it wrote
        with safe_open(str(path), "pt") as f:
            meta = f.metadata()
        save_file(load_file(str(path)), str(path), metadata={**meta, "seconds": "50"})
    t0 = time.perf_counter()
    info = build_dataset(tiny_target, convs, tmp_path, (1, -1), max_new_tokens=6, batch_size=2, shard_size=2)
    assert info.num_sequences == 5 and len(info.shards) == 3
    assert 100 <= info.generate_seconds <= 100 + time.perf_counter() - t0 + 0.1  # both runs' generation
    again = load_dataset(tmp_path)[1]
    key = lambda s: s["token_ids"].tolist()  # noqa: E731  shard order may differ after a resume
    assert sorted(map(key, again)) == sorted(map(key, first))
    info1, only_last = load_dataset(tmp_path, (-1,))
    d = tiny_target.config.hidden_size
    assert info1.feature_layers == [-1] and only_last[0]["features"].shape[-1] == d
    assert torch.equal(only_last[0]["features"], again[0]["features"][:, d:])
    with pytest.raises(ValueError, match="not"):
        load_dataset(tmp_path, (2,))
    with pytest.raises(ValueError, match="other prompts"):
        build_dataset(tiny_target, convs[:4], tmp_path, (1, -1), max_new_tokens=6, batch_size=2, shard_size=2)


# ---------------------------------------------------------------- import / export


@pytest.mark.parametrize("arch, draft_vocab", CASES)
def test_export_import_round_trip(tiny_target, tmp_path, arch, draft_vocab):
    head = make_head(tiny_target, arch, draft_vocab, seed=4)
    export_head(head, tmp_path, torch.float32)
    back = import_head(tmp_path, tiny_target.config).attach(tiny_target.model.embed, tiny_target.model.lm_head)
    assert back.config.feature_layers == head.config.feature_layers
    feats = torch.randn(1, 5, head.config.feature_size)
    tokens = torch.randint(0, 1000, (1, 5))
    outs = [h.logits(h.step(h.fuse_features(feats), tokens, torch.arange(5)[None], h.new_cache(8))) for h in (head, back)]
    torch.testing.assert_close(outs[0], outs[1])
    if draft_vocab:
        assert torch.equal(back.draft_to_target, head.draft_to_target)


def test_eagle3_layout_names_shapes_and_config(tiny_target, tmp_path):
    head = make_head(tiny_target, "eagle3", 3000)
    export_head(head, tmp_path)
    c, d, v = head.config, head.config.hidden_size, head.config.vocab_size
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLMEagle3"]
    assert (config["draft_vocab_size"], config["target_hidden_size"], config["vocab_size"]) == (3000, d, v)
    assert config["num_hidden_layers"] == 1
    assert config["eagle_config"]["eagle_aux_hidden_state_layer_ids"] == list(c.feature_layers)
    state = load_file(str(tmp_path / "model.safetensors"))
    q_dim, kv_dim = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim
    expected = {
        "fc.weight": (d, 3 * d),
        "midlayer.self_attn.q_proj.weight": (q_dim, 2 * d),
        "midlayer.self_attn.k_proj.weight": (kv_dim, 2 * d),
        "midlayer.self_attn.v_proj.weight": (kv_dim, 2 * d),
        "midlayer.self_attn.o_proj.weight": (d, q_dim),
        "midlayer.mlp.gate_proj.weight": (c.intermediate_size, d),
        "midlayer.mlp.up_proj.weight": (c.intermediate_size, d),
        "midlayer.mlp.down_proj.weight": (d, c.intermediate_size),
        "midlayer.input_layernorm.weight": (d,),
        "midlayer.hidden_norm.weight": (d,),
        "midlayer.post_attention_layernorm.weight": (d,),
        "norm.weight": (d,),
        "lm_head.weight": (3000, d),
        "d2t": (3000,),
        "t2d": (v,),
    }
    assert {k: tuple(t.shape) for k, t in state.items()} == expected
    assert state["t2d"].dtype == torch.bool and int(state["t2d"].sum()) == 3000
    assert torch.equal(state["d2t"] + torch.arange(3000), head.draft_to_target)  # offsets


def test_eagle1_layout_names_and_config(tiny_target, tmp_path):
    head = make_head(tiny_target, "eagle1")
    export_head(head, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["bias"] is True
    names = set(load_file(str(tmp_path / "model.safetensors")))
    layer = {f"layers.0.self_attn.{x}_proj.weight" for x in "qkvo"} | {f"layers.0.mlp.{x}_proj.weight" for x in ("gate", "up", "down")}
    assert names == {"fc.weight", "fc.bias", "layers.0.post_attention_layernorm.weight"} | layer
    with pytest.raises(ValueError, match="vocab size"):
        bad = dict(config, vocab_size=123)
        (tmp_path / "config.json").write_text(json.dumps(bad))
        import_head(tmp_path, tiny_target.config)


def test_native_save_load_rebuilds_the_frozen_lm_head(tiny_target, tmp_path):
    head = make_head(tiny_target, "eagle1", 3000)
    head.config.lm_head_from_target = True
    save_head(head, tmp_path, torch.float32)
    assert "lm_head.weight" not in load_file(str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match="LM head"):
        load_native_head(tmp_path)
    back = load_head(tmp_path, tiny_target).attach(tiny_target.model.embed)
    torch.testing.assert_close(back.lm_head.weight, head.lm_head.weight)


def test_factory_builds_chain_and_tree_proposers(tiny_target, tmp_path):
    save_head(make_head(tiny_target), tmp_path)
    [chain] = build_proposers(SpeculativeConfig(method="eagle", draft_model=str(tmp_path)), tiny_target, "float32", "cpu", 512)
    # on a CPU with bfloat16 kernels the head drafts in bfloat16 over blocked weights, whatever the file's dtype
    assert load_head(tmp_path, tiny_target, torch.bfloat16).layer.attn.wqkv.weight.dtype == torch.bfloat16
    if blocked_supported():
        assert chain.head.dtype == torch.bfloat16 and type(chain.head.layer.mlp.w13).__name__ in ("PackedLinear", "BlockedLinear")
    else:
        assert chain.head.dtype == torch.float32
    [tree] = build_proposers(SpeculativeConfig(method="eagle", draft_model=str(tmp_path), tree_nodes=12), tiny_target, "float32", "cpu", 512)
    assert isinstance(chain, EagleProposer) and chain.tree is None and chain.target_hidden_layers == (-1,)
    assert tree.tree == TreeConfig(8, 12)
    with pytest.raises(ValueError, match="draft-model"):
        build_proposers(SpeculativeConfig(method="eagle"), tiny_target, "float32", "cpu", 512)
    with pytest.raises(ValueError, match="eagle"):
        SpeculativeConfig(method="ngram", tree_nodes=8)


def test_export_draft_cli_writes_a_head_that_imports_back(tiny_target, tmp_path, capsys):
    from specdec.cli import main

    head = make_head(tiny_target, "eagle1", 3000)
    head.config.lm_head_from_target = True
    save_head(head, tmp_path / "native", torch.float32)
    assert main(["export-draft", str(tmp_path / "native"), "--model", str(tiny_target.path),
                 "--out", str(tmp_path / "public"), "--dtype", "float32", "--format", "sglang"]) == 0
    assert "sglang layout" in capsys.readouterr().out
    config = json.loads((tmp_path / "public" / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["draft_vocab_size"] == 3000
    back = import_head(tmp_path / "public", tiny_target.config).state_dict()
    shared = [name for name in head.state_dict() if name in back]
    assert {"fc.weight", "layer.attn.wqkv.weight", "layer.mlp.w2.weight", "lm_head.weight"} <= set(shared)
    for name in shared:
        torch.testing.assert_close(back[name], head.state_dict()[name], msg=name)
    with pytest.raises(SystemExit, match="own directory"):
        main(["export-draft", str(tmp_path / "public"), "--model", str(tiny_target.path), "--out", str(tmp_path / "public")])


def test_train_draft_cli_end_to_end_and_its_prompt_label_check(tiny_target, tmp_path, capsys):
    """train-draft on the tiny target: data without prompt labels by default, a head that
    loads; --prompt-weight on that data stops with the reason instead of training on zeros."""
    from specdec.cli import main

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Count to {i}, please."}) + "\n" for i in range(3)))
    common = ["train-draft", "-m", str(tiny_target.path), "--prompts", str(prompts), "--max-new-tokens", "6",
              "--epochs", "1", "--draft-vocab", "3000", "--time-budget", "0", "-t", "1"]
    assert main(common + ["--out", str(tmp_path / "run")]) == 0
    info = json.loads((tmp_path / "run" / "data" / "dataset.json").read_text())
    assert info["num_sequences"] == 3 and info["prompt_labels"] is False
    head = load_head(tmp_path / "run", tiny_target)
    assert head.config.draft_vocab_size == 3000 and json.loads(capsys.readouterr().out.splitlines()[-1])["train"]["total_steps"] > 0
    with pytest.raises(SystemExit, match="without labels at prompt positions"):
        main(common + ["--out", str(tmp_path / "weighted"), "--data", str(tmp_path / "run" / "data"), "--prompt-weight", "0.5"])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_packed_eagle1_head_steps_through_the_c_stack_as_its_layer(tiny_target, dtype):
    """Chain steps of a packed CPU eagle1 head run the one-layer C stack (models/eagle.py):
    the PyTorch layer's values up to the attention kernel's rounding, written to the same cache."""
    from specdec.models import native
    from specdec.models.linear import pack_linears_for_cpu

    if not native.native_linear_supported(dtype):
        pytest.skip(f"no vectorized C linears for {dtype} here")
    head = pack_linears_for_cpu(make_head(tiny_target).to(dtype))
    assert head.native_stack() is not None
    assert make_head(tiny_target).to(dtype).native_stack() is None  # dense nn.Linear: the PyTorch layer
    calls = []
    run = head.native_stack().forward
    head.native_stack().forward = lambda *a, **k: calls.append(1) or run(*a, **k)
    feats = torch.randn(1, 7, head.config.feature_size).to(dtype)
    tokens = torch.randint(0, 1000, (1, 7))
    outs, caches = [], []
    for use in (True, False):
        head.use_native_stack = use
        cache = head.new_cache(16)
        with torch.inference_mode():
            first = head.step(feats[:, :5], tokens[:, :5], torch.arange(5)[None], cache)  # catch-up, then steps
            second = head.step(feats[:, 5:6], tokens[:, 5:6], torch.tensor([[5]]), cache)
            third = head.step(second, tokens[:, 6:7], torch.tensor([[6]]), cache)
        outs.append(torch.cat((first, second, third), dim=1).float())
        caches.append(cache.k[:, :, :, :7].float())
    assert len(calls) == 3
    tol = 1e-5 if dtype == torch.float32 else 0.05
    torch.testing.assert_close(outs[0], outs[1], atol=tol, rtol=tol)
    torch.testing.assert_close(caches[0], caches[1], atol=tol, rtol=tol)

    # tree levels: after 5 real pairs, level 1 holds 2 nodes, level 2 three nodes, each of
    # which sees the prefix, its own level-1 parent (not the other) and itself
    level2_mask = torch.zeros(1, 3, 10, dtype=torch.bool)
    level2_mask[0, :, :5] = True
    for row, parent in enumerate((5, 5, 6)):
        level2_mask[0, row, parent] = level2_mask[0, row, 7 + row] = True
    outs, caches = [], []
    for use in (True, False):
        head.use_native_stack = use
        cache = head.new_cache(16)
        with torch.inference_mode():
            head.step(feats[:, :5], tokens[:, :5], torch.arange(5)[None], cache)
            level1_mask = torch.cat((torch.ones(1, 2, 5, dtype=torch.bool), torch.eye(2, dtype=torch.bool)[None]), dim=-1)
            level1 = head.step(feats[:, 5:7], tokens[:, 5:7], torch.full((1, 2), 5), cache, level1_mask)
            level2 = head.step(level1[:, [0, 0, 1]], tokens[:, 4:7], torch.full((1, 3), 6), cache, level2_mask)
        outs.append(torch.cat((level1, level2), dim=1).float())
        caches.append(cache.k[:, :, :, :10].float())
    assert len(calls) == 3 + 3  # the prefix and both levels through the C stack
    torch.testing.assert_close(outs[0], outs[1], atol=tol, rtol=tol)
    torch.testing.assert_close(caches[0], caches[1], atol=tol, rtol=tol)


def test_native_tree_mask_covers_the_slots_after_the_common_prefix():
    from specdec.models.eagle import native_tree_mask

    mask = torch.zeros(2, 7, dtype=torch.bool)  # 5 cached slots, 2 new ones (slots 5 and 6)
    mask[:, :4] = True  # seen by both rows
    mask[0, 5] = True  # row 0: itself
    mask[1, 4] = mask[1, 6] = True  # row 1: slot 4 (its parent) and itself
    out = native_tree_mask(mask, start=5)
    assert out.dtype == torch.uint8 and out.is_contiguous()
    assert out.tolist() == mask[:, 4:].to(torch.uint8).tolist()  # from slot 4, the first one a row cannot see
    assert native_tree_mask(torch.ones(2, 7, dtype=torch.bool), start=5).shape == (2, 2)  # only the new slots
