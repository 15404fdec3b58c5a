"""The C attention kernel (models/native.py, models/csrc/attention.c): the values of SDPA,
every row bit for bit the same whatever else the call holds, and tree drafts that score
each node as the decode step after compaction does.

Every test here skips where no C compiler works; the engine then runs its PyTorch plans
(tests/test_batch_invariance.py covers those).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from specdec.models import native
from specdec.models.attention import attend, plan_attention
from specdec.models.loader import load_model, resolve_batch_invariant
from specdec.drafts import tree_attention_mask

needs_native = pytest.mark.skipif(native.native_library() is None, reason="the C kernels did not build here")


def reference(q, k_cache, v_cache, start, mask=None):
    """float64 attention of the new queries: slots [0, start + T - W) plus those of the last W
    that the [T, W] mask allows (W = T: the new ones; no mask: causal)."""
    _, t, h, d = q.shape
    rep = h // k_cache.shape[1]
    end = start + t
    new = torch.ones(t, t, dtype=torch.bool).tril() if mask is None else mask.bool()
    allowed = torch.cat((torch.ones(t, end - new.shape[1], dtype=torch.bool), new), dim=1)
    k = k_cache[0, :, :end].double().repeat_interleave(rep, 0)
    v = v_cache[0, :, :end].double().repeat_interleave(rep, 0)
    out = F.scaled_dot_product_attention(q[0].double().transpose(0, 1), k, v, attn_mask=allowed)
    return out.transpose(0, 1).reshape(1, t, h * d)


def make(dtype, h, h_kv, d, slots, t, seed=0):
    gen = torch.Generator().manual_seed(seed)
    k_cache = torch.randn(1, h_kv, slots, d, generator=gen).to(dtype)
    v_cache = torch.randn(1, h_kv, slots, d, generator=gen).to(dtype)
    qkv = torch.randn(1, t, h + 2 * h_kv, d, generator=gen).to(dtype)
    return qkv[:, :, :h], k_cache, v_cache  # q a strided view, as in the model


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("h,h_kv,d", [(9, 3, 64), (4, 4, 128), (6, 2, 80), (2, 1, 24)])
def test_native_matches_reference_attention(dtype, h, h_kv, d):
    q, k_cache, v_cache = make(dtype, h, h_kv, d, 512, 7)
    for start in (0, 1, 100, 400):
        out = native.native_attention(q, k_cache, v_cache, start)
        tol = 1e-5 if dtype == torch.float32 else 1e-2  # bfloat16: one rounding of the output
        torch.testing.assert_close(out.double(), reference(q, k_cache, v_cache, start), atol=tol, rtol=tol)


@needs_native
def test_native_masks_with_a_tree_and_rejects_bad_arguments():
    q, k_cache, v_cache = make(torch.float32, 9, 3, 64, 256, 5)
    parents = [-1, 0, 0, 1, 2]
    mask = tree_attention_mask(parents).to(torch.uint8)
    out = native.native_attention(q, k_cache, v_cache, 50, mask)
    torch.testing.assert_close(out.double(), reference(q, k_cache, v_cache, 50, mask), atol=1e-5, rtol=1e-5)
    # a mask over the 7 slots before the new ones too (an EAGLE tree level's earlier levels)
    wide = torch.randint(0, 2, (5, 12), generator=torch.Generator().manual_seed(1)).to(torch.uint8)
    wide[:, 7:] = mask
    for dtype, tol in ((torch.float32, 1e-5), (torch.bfloat16, 1e-2)):
        qd, kd, vd = q.to(dtype), k_cache.to(dtype), v_cache.to(dtype)
        out = native.native_attention(qd, kd, vd, 50, wide)
        torch.testing.assert_close(out.double(), reference(qd, kd, vd, 50, wide), atol=tol, rtol=tol)
    full_prefix = torch.cat((torch.ones(5, 7, dtype=torch.uint8), mask), dim=1)  # same slots seen: same bits
    assert torch.equal(native.native_attention(q, k_cache, v_cache, 50, full_prefix), native.native_attention(q, k_cache, v_cache, 50, mask))
    with pytest.raises(ValueError, match="T=5 <= W"):
        native.native_attention(q, k_cache, v_cache, 2, wide)  # wider than the 7 slots there are
    with pytest.raises(ValueError, match="contiguous"):
        native.native_attention(q, k_cache.transpose(2, 3), v_cache, 50)
    with pytest.raises(RuntimeError, match="rejected"):
        native.native_attention(q[:, :, :8], k_cache, v_cache, 50)  # 8 heads over 3 KV heads


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_every_row_is_computed_alone(dtype):
    """Row t of a T-token pass == the decode step at its slot, bitwise, for T = 1..17."""
    q, k_cache, v_cache = make(dtype, 9, 3, 64, 1200, 17)
    start = 1000
    singles = [native.native_attention(q[:, j : j + 1], k_cache, v_cache, start + j)[0, 0] for j in range(17)]
    for t in range(2, 18):
        rows = native.native_attention(q[:, :t], k_cache, v_cache, start)[0]
        assert all(torch.equal(rows[j], singles[j]) for j in range(t)), f"T = {t}"
    # stale entries past a row's last slot are never read
    k_cache[0, :, start + 17 :] = float("nan")
    assert torch.equal(native.native_attention(q[:, :3], k_cache, v_cache, start)[0, 2], singles[2])


@needs_native
@pytest.mark.parametrize("h,h_kv", [(9, 3), (8, 1), (4, 4)])
def test_rows_do_not_depend_on_threads_or_on_the_other_heads(h, h_kv):
    """Every thread count splits the work differently (units of a KV group and a run of
    positions); rep > 4 takes the value sum in several blocks of heads."""
    q, k_cache, v_cache = make(torch.bfloat16, h, h_kv, 64, 700, 13, seed=3)
    ref = native.native_attention(q, k_cache, v_cache, 600, threads=1)
    for threads in (2, 3, 8):
        assert torch.equal(native.native_attention(q, k_cache, v_cache, 600, threads=threads), ref)
    one_head = native.native_attention(q[:, :, :1], k_cache[:, :1], v_cache[:, :1], 600)
    assert torch.equal(one_head[0, :, :64], ref[0, :, :64])
    torch.testing.assert_close(ref.double(), reference(q, k_cache, v_cache, 600), atol=1e-2, rtol=1e-2)


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_ragged_rows_equal_their_one_sequence_calls(dtype):
    """native_attention_rows: every row of a ragged batch (no new tokens, one, more than a
    unit's 32, an empty cache) bit for bit its own one-sequence call, for any thread count."""
    h, h_kv, d, slots = 9, 3, 64, 320
    gen = torch.Generator().manual_seed(5)
    k_cache = torch.randn(6, h_kv, slots, d, generator=gen).to(dtype)
    v_cache = torch.randn(6, h_kv, slots, d, generator=gen).to(dtype)
    starts = torch.tensor([0, 17, 100, 3, 200])  # five rows of a six-row cache
    num_new = torch.tensor([4, 1, 0, 40, 17])
    offsets = torch.cat((torch.zeros(1, dtype=torch.long), num_new.cumsum(0)))
    qkv = torch.randn(int(offsets[-1]), h + 2 * h_kv, d, generator=gen).to(dtype)
    q = qkv[:, :h]  # a strided view, as in the model
    ref = native.native_attention_rows(q, k_cache, v_cache, offsets, starts, threads=1)
    assert ref.shape == (int(offsets[-1]), h * d)
    for r in range(5):
        a, b = int(offsets[r]), int(offsets[r + 1])
        if b > a:
            alone = native.native_attention(q[None, a:b], k_cache[r : r + 1], v_cache[r : r + 1], int(starts[r]))[0]
            assert torch.equal(ref[a:b], alone), f"row {r}"
    for threads in (2, 3):
        assert torch.equal(native.native_attention_rows(q, k_cache, v_cache, offsets, starts, threads=threads), ref)
    with pytest.raises(ValueError, match="end at N"):
        native.native_attention_rows(q, k_cache, v_cache, offsets[:-1], starts[:-1])
    with pytest.raises(ValueError, match="cache holds"):
        native.native_attention_rows(q, k_cache, v_cache, offsets, starts + 300)
    with pytest.raises(ValueError, match="rows >"):
        native.native_attention_rows(q, k_cache[:4], v_cache[:4], offsets, starts)


@needs_native
def test_a_tree_node_scores_as_the_decode_step_after_compaction():
    """Node i of a tree sees the prefix and its ancestors; after compact(path) the decode step
    at the same slot sees the same keys in the same order, so the bits agree."""
    dtype = torch.bfloat16
    q, k_cache, v_cache = make(dtype, 9, 3, 64, 400, 6, seed=3)
    start, parents = 300, [-1, 0, 0, 1, 3, 2]
    mask = tree_attention_mask(parents).to(torch.uint8)
    tree = native.native_attention(q, k_cache, v_cache, start, mask)[0]
    for node in range(len(parents)):
        path = [node]
        while parents[path[-1]] >= 0:
            path.append(parents[path[-1]])
        path.reverse()
        k2, v2 = k_cache.clone(), v_cache.clone()
        k2[0, :, start : start + len(path)] = k_cache[0, :, [start + i for i in path]]
        v2[0, :, start : start + len(path)] = v_cache[0, :, [start + i for i in path]]
        step = native.native_attention(q[:, node : node + 1], k2, v2, start + len(path) - 1)[0, 0]
        assert torch.equal(tree[node], step), f"node {node}"


@needs_native
def test_plans_pick_the_kernel():
    assert plan_attention(100, 1, 3).native  # decode
    assert plan_attention(100, 5, 3, dtype=torch.bfloat16).native  # a verify pass
    assert not plan_attention(100, 200, 3).native  # prefill outside invariant mode: SDPA
    assert plan_attention(100, 200, 3, invariant=True, max_keys=512).native  # invariant: always the kernel
    assert not plan_attention(100, 5, 3, batch_size=2).native  # batched rows: SDPA
    assert not plan_attention(100, 5, 3, native=False).native
    assert not plan_attention(100, 5, 3, dtype=torch.float16).native
    q, k_cache, v_cache = make(torch.float32, 9, 3, 64, 512, 5)
    # the SDPA plan and the kernel plan agree on values
    a = attend(q, k_cache, v_cache, plan_attention(200, 5, 3, native=False, max_keys=512))
    b = attend(q, k_cache, v_cache, plan_attention(200, 5, 3, max_keys=512))
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_without_a_compiler_the_engine_warns_and_falls_back(monkeypatch, tmp_path):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    native.native_library.cache_clear()
    try:
        with pytest.warns(UserWarning, match="no C compiler"):
            assert native.native_library() is None
        assert not plan_attention(100, 1, 3).native
        assert not native.native_attention_supported(torch.float32, "cpu")
        monkeypatch.setenv("SPECDEC_NATIVE", "0")
        monkeypatch.delenv("CC")
        native.native_library.cache_clear()
        assert native.native_library() is None
    finally:
        native.native_library.cache_clear()


def test_a_failing_build_names_the_command(monkeypatch, tmp_path):
    cc = tmp_path / "cc"
    cc.write_text("#!/bin/sh\necho 'cc: error: simulated' >&2\nexit 1\n")
    cc.chmod(0o755)
    monkeypatch.setenv("CC", str(cc))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    native.native_library.cache_clear()
    try:
        with pytest.warns(UserWarning, match="simulated"):
            assert native.native_library() is None
    finally:
        native.native_library.cache_clear()


@needs_native
def test_trees_are_batch_invariant_with_the_kernel(monkeypatch):
    assert resolve_batch_invariant("auto", "bfloat16", trees=True)
    assert resolve_batch_invariant("on", "float32", trees=True)
    import specdec.models.loader as loader

    monkeypatch.setattr(loader, "native_attention_supported", lambda *a, **k: False)
    assert not resolve_batch_invariant("auto", "bfloat16", trees=True)
    with pytest.raises(ValueError, match="C attention kernel"):
        resolve_batch_invariant("on", "bfloat16", trees=True)


@needs_native
@pytest.mark.parametrize("mode", ["bfloat16:none", "bfloat16:int4", "float32:none"])
def test_tiny_model_tree_verify_equals_decode_along_each_path(tiny_model_dir, default_tokenizer, mode):
    """A tree verify pass gives each node the logits of plain decoding along its path."""
    dtype, quant = mode.split(":")
    model = load_model(tiny_model_dir, dtype, "cpu", 256, quant=quant, batch_invariant="on").model
    ids = default_tokenizer.encode("Explain in a few sentences why the sky is blue, and what makes sunsets red.")
    p = len(ids)
    parents = [-1, 0, 0, 1, 1, 2, 3, 6]
    tokens = [311, 4224, 892, 17, 2060, 338, 1201, 95]
    depth = [0] * len(parents)
    for i, par in enumerate(parents):
        depth[i] = 0 if par < 0 else depth[par] + 1
    cache = model.new_cache(1, 256)
    with torch.inference_mode():
        model(torch.tensor([ids]), torch.arange(p)[None], cache, logits_indices=slice(-1, None))
        mask = tree_attention_mask(parents)[None]
        tree = model(torch.tensor([tokens]), torch.tensor([[p + d for d in depth]]), cache, attn_mask=mask).logits[0]
        for node in range(len(parents)):
            path = [node]
            while parents[path[-1]] >= 0:
                path.append(parents[path[-1]])
            path.reverse()
            cache.truncate(p)
            for i, n in enumerate(path):
                step = model(torch.tensor([[tokens[n]]]), torch.tensor([[p + i]]), cache).logits[0, 0]
            assert torch.equal(step, tree[node]), f"node {node}"


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("dim", [576, 100, 4096])
def test_native_rms_norm_matches_torch_and_is_row_invariant(dtype, dim):
    gen = torch.Generator().manual_seed(1)
    x = (torch.randn(2, 9, dim, generator=gen) * 3).to(dtype)
    w = torch.randn(dim, generator=gen).to(dtype)
    out = native.native_rms_norm(x, w, 1e-5)
    ref = F.rms_norm(x.double(), (dim,), w.double(), 1e-5)
    tol = 1e-5 if dtype == torch.float32 else 2e-2  # bfloat16: one rounding of the output
    torch.testing.assert_close(out.double(), ref, atol=tol, rtol=tol)
    assert all(torch.equal(native.native_rms_norm(x[b, t], w, 1e-5), out[b, t]) for b in range(2) for t in range(9))
    assert torch.equal(native.native_rms_norm(x[:, ::2], w, 1e-5), out[:, ::2])  # strided input: copied first


@needs_native
def test_rms_norm_module_uses_the_kernel_for_inference_only():
    from specdec.models.llama import RMSNorm

    norm = RMSNorm(64, 1e-6)
    x = torch.randn(3, 64, requires_grad=True)
    assert not native.native_rms_norm_supported(x, norm.weight)  # training: autograd needs F.rms_norm
    norm(x).sum().backward()
    assert x.grad is not None and norm.weight.grad is not None
    with torch.inference_mode():
        assert native.native_rms_norm_supported(x.detach(), norm.weight)
        torch.testing.assert_close(norm(x.detach()), F.rms_norm(x.detach(), (64,), norm.weight, 1e-6))


# -- argmax and swiglu (csrc/elementwise.c) ------------------------------------------------


@pytest.fixture(params=["engine", "portable"])
def elementwise_lib(request, tmp_path):
    if request.param == "engine":
        if native.native_library() is None:
            pytest.skip("no C kernels here")
        return native.native_library()
    return portable_library(tmp_path)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("n", [49152, 100, 17, 16, 1])
def test_argmax_kernel_answers_as_torch_argmax(elementwise_lib, dtype, n):
    gen = torch.Generator().manual_seed(n)
    x = torch.randint(-3, 4, (12, n), generator=gen).to(dtype)  # few levels: ties everywhere
    x[1] = -float("inf")  # all -inf: index 0
    x[2, n // 2] = float("inf")
    x[3, -1] = 9.0  # the maximum in the tail past the last full vector
    x[4, n // 3] = float("nan")  # torch ranks NaN above everything: the first NaN wins
    x[4, -1] = float("nan")
    x[5, :] = float("nan")
    x[6] = torch.randn(n, generator=gen).to(dtype)
    x[7] = -x[6]
    out = native.native_argmax(x, lib=elementwise_lib)
    assert out.dtype == torch.int64 and torch.equal(out, x.argmax(-1))
    cube = x.reshape(3, 4, n)
    assert torch.equal(native.native_argmax(cube, lib=elementwise_lib), cube.argmax(-1))
    assert torch.equal(native.native_argmax(x[:, ::1][::2], lib=elementwise_lib), x[::2].argmax(-1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("n,k", [(49152, 8), (100, 8), (17, 3), (5, 5)])
def test_top_labels_kernel_gives_softmax_top_k_and_torch_argmax(elementwise_lib, dtype, n, k):
    """native_top_labels: the k largest values (descending, equal values by index), their
    probabilities under the softmax of the whole row, and torch.argmax's answer."""
    gen = torch.Generator().manual_seed(n + k)
    x = (torch.randn(6, n, generator=gen) * 4).to(dtype)
    x[1] = torch.randint(-2, 3, (n,), generator=gen).to(dtype)  # few levels: ties everywhere
    x[2, -1] = 30.0  # the maximum in the tail past the last full vector
    ids, probs, greedy = native.native_top_labels(x, k, lib=elementwise_lib)
    xf = x.float()
    assert torch.equal(greedy, xf.argmax(-1))
    values = xf.gather(-1, ids.long())
    assert torch.equal(values, xf.topk(k, -1).values)
    for r in range(6):  # among equal values the lower index first, and no index twice
        row = ids[r].tolist()
        assert len(set(row)) == k
        assert all(values[r, j] > values[r, j + 1] or row[j] < row[j + 1] for j in range(k - 1))
    torch.testing.assert_close(probs, torch.softmax(xf, -1).gather(-1, ids.long()), rtol=1e-5, atol=1e-7)
    with pytest.raises(RuntimeError, match="rejected"):
        native.native_top_labels(x, n + 1, lib=elementwise_lib)


def test_greedy_reads_logits_through_the_kernel_with_torch_answers():
    from specdec.sampling import greedy

    logits = torch.randn(5, 17, 300).bfloat16()
    assert torch.equal(greedy(logits), logits.argmax(-1))
    assert torch.equal(greedy(logits.float()), logits.float().argmax(-1))
    assert torch.equal(greedy(logits.half()), logits.half().argmax(-1))  # no kernel: torch's


def reference_swiglu(gate_up):
    gate, up = gate_up.double().chunk(2, dim=-1)
    return F.silu(gate) * up


@pytest.mark.parametrize("inter", [1536, 100, 7])
def test_swiglu_kernel_matches_silu_times_up(elementwise_lib, inter):
    gen = torch.Generator().manual_seed(inter)
    gu = torch.randn(9, 2 * inter, generator=gen) * 6
    gu[0, :4] = torch.tensor([0.0, -0.0, 87.5, -86.0])  # zero, and the ends of exp's range
    ref = reference_swiglu(gu)
    out = native.native_swiglu(gu, lib=elementwise_lib)
    torch.testing.assert_close(out.double(), ref, rtol=1e-6, atol=1e-30)  # a few ulp of float32
    # bfloat16: float32 inside and one rounding, so within one bfloat16 step of the exact value
    gb = gu.bfloat16()
    out_b = native.native_swiglu(gb, lib=elementwise_lib).double()
    ref_b = reference_swiglu(gb)
    step = ref_b.abs().clamp_min(1e-30) * 2.0**-7
    assert ((out_b - ref_b).abs() <= step).all()
    assert (out_b == ref_b.bfloat16().double()).float().mean() > 0.99  # nearly always the correctly rounded one


def test_swiglu_kernel_beyond_exp_range_gives_tiny_values_of_the_right_sign(elementwise_lib):
    gate = torch.tensor([-100.0, -1e30, -float("inf"), 100.0, 1e30, float("nan")] * 3)  # 18: vector and tail
    gu = torch.cat([gate, torch.linspace(1, 2, 18)])[None]
    out = native.native_swiglu(gu, lib=elementwise_lib)[0]
    ref = F.silu(gate) * gu[0, 18:]
    small = (gate < -88) & gate.isfinite()  # exactly -3.7e-42 and -0.0: the kernel gives -0.0
    assert (out[small] == 0).all() and torch.signbit(out[small]).all()
    assert torch.equal(out[~small].isnan(), ref[~small].isnan())  # -inf (as torch's -inf / inf) and NaN
    finite = ~small & ~ref.isnan()
    assert torch.equal(out[finite], ref[finite])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("threads", [1, 2])
def test_swiglu_kernel_rows_do_not_depend_on_the_row_or_thread_count(elementwise_lib, dtype, threads):
    gu = (torch.randn(33, 2 * 1536, generator=torch.Generator().manual_seed(3)) * 4).to(dtype)
    full = native.native_swiglu(gu, threads=1, lib=elementwise_lib)
    singles = torch.cat([native.native_swiglu(gu[j : j + 1], threads=threads, lib=elementwise_lib) for j in range(33)])
    assert torch.equal(full, singles)
    assert torch.equal(native.native_swiglu(gu.view(3, 11, -1), threads=threads, lib=elementwise_lib), full.view(3, 11, -1))


def reference_label_ce(x, ids, probs):
    """The loss and its gradient (for an upstream grad of 1 per row) in float64."""
    xd = x.double().requires_grad_(True)
    loss = -(probs.double() * torch.log_softmax(xd, -1).gather(-1, ids)).sum(-1)
    loss.sum().backward()
    return loss.detach(), xd.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("n,k", [(8192, 8), (100, 8), (17, 3), (5, 5)])
def test_label_ce_kernel_gives_the_soft_label_loss_its_gradient_and_argmax(elementwise_lib, dtype, n, k):
    """native_label_ce_forward/backward: sum_j p_j (lse - x[id_j]), torch.argmax's answer, and
    d/dx = P softmax - (the probs at their ids, repeated ids summed), for an upstream grad g."""
    gen = torch.Generator().manual_seed(n * k)
    x = (torch.randn(7, n, generator=gen) * 5).to(dtype)
    x[1] = torch.randint(-2, 3, (n,), generator=gen).to(dtype)  # ties: argmax takes the first
    x[2, -1] = 40.0  # the maximum in the tail past the last full vector
    ids = torch.randint(0, n, (7, k), generator=gen)
    ids[3, 1] = ids[3, 0]  # a repeated label: its probs add up
    probs = torch.rand(7, k, generator=gen)
    probs = probs / probs.sum(-1, keepdim=True)
    probs[4] = 0.0  # a row whose labels all fell outside the draft vocabulary
    probs[5, 1:] = 0.0  # one label
    lse, loss, greedy = native.native_label_ce_forward(x, ids, probs, lib=elementwise_lib)
    ref_loss, ref_grad = reference_label_ce(x, ids, probs)
    assert torch.equal(greedy, x.float().argmax(-1))
    torch.testing.assert_close(lse.double(), torch.logsumexp(x.double(), -1), rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(loss.double(), ref_loss, rtol=1e-5, atol=1e-5)
    assert loss[4] == 0
    g = torch.linspace(-1.0, 2.0, 7)
    dx = native.native_label_ce_backward(x, ids, probs, lse, g, lib=elementwise_lib)
    assert dx.dtype == dtype and dx.shape == x.shape
    ref = ref_grad * g.double()[:, None]
    # relative to each value (exp to a few ulp; bfloat16: one rounding), and to g where the
    # label's prob cancels the softmax (float32 arithmetic before that rounding)
    tol = 1e-5 if dtype == torch.float32 else 2.0**-8
    assert ((dx.double() - ref).abs() <= tol * ref.abs() + 1e-5 * g.abs().double()[:, None]).all()
    assert (dx[4] == 0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_label_ce_kernel_rows_do_not_depend_on_the_row_or_thread_count(elementwise_lib, dtype):
    """Each row by the same fixed steps: a training run is deterministic whatever the threads."""
    gen = torch.Generator().manual_seed(5)
    x = (torch.randn(40, 8192, generator=gen) * 4).to(dtype)
    ids = torch.randint(0, 8192, (40, 8), generator=gen)
    probs = torch.rand(40, 8, generator=gen)
    g = torch.randn(40, generator=gen)
    full = native.native_label_ce_forward(x, ids, probs, threads=1, lib=elementwise_lib)
    dx = native.native_label_ce_backward(x, ids, probs, full[0], g, threads=1, lib=elementwise_lib)
    for threads in (1, 2):
        parts = [native.native_label_ce_forward(x[j : j + 8], ids[j : j + 8], probs[j : j + 8], threads=threads, lib=elementwise_lib)
                 for j in range(0, 40, 8)]
        for a, b in zip(full, zip(*parts)):
            assert torch.equal(a, torch.cat(b))
        assert torch.equal(native.native_label_ce_backward(x, ids, probs, full[0], g, threads=threads, lib=elementwise_lib), dx)


def test_label_ce_kernel_rejects_bad_labels(elementwise_lib):
    x = torch.randn(3, 50)
    with pytest.raises(RuntimeError, match="rejected"):
        native.native_label_ce_forward(x, torch.full((3, 2), 50), torch.ones(3, 2), lib=elementwise_lib)
    with pytest.raises(RuntimeError, match="rejected"):
        native.native_label_ce_forward(x, torch.full((3, 2), -1), torch.ones(3, 2), lib=elementwise_lib)
    with pytest.raises(RuntimeError, match="rejected"):  # the backward checks its labels too
        native.native_label_ce_backward(x, torch.full((3, 2), 50), torch.ones(3, 2), torch.zeros(3), torch.ones(3), lib=elementwise_lib)
    with pytest.raises(ValueError, match="int64"):
        native.native_label_ce_forward(x, torch.zeros(3, 2, dtype=torch.int32), torch.ones(3, 2), lib=elementwise_lib)
    with pytest.raises(ValueError, match=r"\[M, V\]"):
        native.native_label_ce_forward(x[None], torch.zeros(3, 2, dtype=torch.long), torch.ones(3, 2), lib=elementwise_lib)
    with pytest.raises(ValueError, match="must be"):
        native.native_label_ce_backward(x, torch.zeros(3, 2, dtype=torch.long), torch.ones(3, 2), torch.zeros(2), torch.ones(3), lib=elementwise_lib)


def test_elementwise_kernels_reject_bad_arguments(elementwise_lib):
    assert elementwise_lib.specdec_argmax_f32(None, 1, 0, None, 1) != 0
    assert elementwise_lib.specdec_argmax_bf16(None, -1, 4, None, 1) != 0
    assert elementwise_lib.specdec_swiglu_f32(None, None, 1, 0, 1) != 0
    assert elementwise_lib.specdec_swiglu_bf16(None, None, 1, 4, 0) != 0
    with pytest.raises(ValueError, match="even last dim"):
        native.native_swiglu(torch.zeros(2, 5), lib=elementwise_lib)


@needs_native
def test_mlp_uses_the_swiglu_kernel_for_inference_only():
    from specdec.config import ModelConfig
    from specdec.models.llama import MLP

    torch.manual_seed(0)
    mlp = MLP(ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_layers=1, num_heads=2, num_kv_heads=1, head_dim=16))
    x = torch.randn(3, 32, requires_grad=True)
    assert not native.native_swiglu_supported(mlp.w13(x))  # training: autograd needs F.silu
    mlp(x).sum().backward()
    assert x.grad is not None and mlp.w13.weight.grad is not None
    gate, up = mlp.w13(x.detach()).chunk(2, dim=-1)
    with torch.inference_mode():
        torch.testing.assert_close(mlp(x.detach()), mlp.w2(F.silu(gate) * up), rtol=1e-5, atol=1e-6)


# -- the float32 linear kernel (csrc/matmul.c) ---------------------------------------------

needs_linear = pytest.mark.skipif(not native.native_linear_supported(torch.float32), reason="no AVX-512 build of csrc/matmul.c here")


def portable_library(tmp_path):
    """csrc built without -march=native: the kernel's portable loops, loaded beside the engine's."""
    import ctypes

    cc = native._compiler()
    if cc is None:
        pytest.skip("no C compiler")
    target = tmp_path / "portable.so"
    native._build(cc, list(native.FLAG_SETS[-1]), target)
    lib = ctypes.CDLL(str(target))
    native._bind_linear(lib)
    native._bind_elementwise(lib)
    assert not lib.specdec_linear_vectorized()
    return lib


@pytest.fixture(params=["engine", "portable"])
def linear_lib(request, tmp_path):
    if request.param == "engine":
        if not native.native_linear_supported(torch.float32):
            pytest.skip("no AVX-512 build of csrc/matmul.c here")
        return native.native_library()
    return portable_library(tmp_path)


@pytest.mark.parametrize("n, k", [(960, 576), (50, 17), (97, 1), (48, 1536)])
def test_linear_kernel_matches_f_linear_and_packs_exactly(linear_lib, n, k):
    gen = torch.Generator().manual_seed(n + k)
    w, b, x = torch.randn(n, k, generator=gen), torch.randn(n, generator=gen), torch.randn(3, 5, k, generator=gen)
    packed = native.native_pack(w, linear_lib)
    assert torch.equal(native.native_unpack(packed, n, k), w)
    panel = linear_lib.specdec_linear_panel()
    assert packed.shape == ((n + panel - 1) // panel, k, panel)
    assert not packed[-1, :, n - (packed.shape[0] - 1) * panel :].any()  # zero past n
    out = native.native_linear(x, packed, n, k, b, lib=linear_lib)
    assert out.shape == (3, 5, n)
    torch.testing.assert_close(out.double(), F.linear(x.double(), w.double(), b.double()), atol=1e-4, rtol=1e-4)
    assert native.native_linear(x[:, :0], packed, n, k, lib=linear_lib).shape == (3, 0, n)


@pytest.mark.parametrize("threads", [1, 2])
def test_linear_kernel_rows_do_not_depend_on_the_row_or_thread_count(linear_lib, threads):
    """Every row of an M-row product equals, bit for bit, the same row alone (M = 1: a
    decode step) and at any thread count: no padding needed for batch invariance."""
    gen = torch.Generator().manual_seed(3)
    w, b, x = torch.randn(576, 1536, generator=gen), torch.randn(576, generator=gen), torch.randn(33, 1536, generator=gen)
    packed = native.native_pack(w, linear_lib)
    full = native.native_linear(x, packed, 576, 1536, b, threads=1, lib=linear_lib)
    singles = torch.cat([native.native_linear(x[j : j + 1], packed, 576, 1536, b, threads=threads, lib=linear_lib) for j in range(33)])
    assert torch.equal(full, singles)
    for m in (2, 3, 5, 8, 9, 16, 17):
        assert torch.equal(native.native_linear(x[:m], packed, 576, 1536, b, threads=threads, lib=linear_lib), full[:m]), m


needs_linear_bf16 = pytest.mark.skipif(not native.native_linear_supported(torch.bfloat16), reason="no AVX512_BF16 build of csrc/matmul.c here")


@needs_linear_bf16
@pytest.mark.parametrize("n, k", [(960, 576), (50, 17), (97, 1), (48, 1536)])
def test_bfloat16_linear_kernel_matches_f_linear_and_packs_exactly(n, k):
    gen = torch.Generator().manual_seed(n + k)
    w, b, x = (torch.randn(n, k, generator=gen).bfloat16(), torch.randn(n, generator=gen).bfloat16(),
               torch.randn(3, 5, k, generator=gen).bfloat16())
    packed = native.native_pack(w)
    panel = native.native_library().specdec_linear_panel()
    assert packed.shape == ((n + panel - 1) // panel, (k + 1) // 2, panel, 2)
    assert torch.equal(native.native_unpack(packed, n, k), w)
    out = native.native_linear(x, packed, n, k, b)
    assert out.dtype == torch.bfloat16 and out.shape == (3, 5, n)
    # float32 accumulation of exact products, one rounding to bfloat16 at the end
    ref = F.linear(x.double(), w.double(), b.double())
    torch.testing.assert_close(out.double(), ref, atol=1e-2 * ref.abs().max().item(), rtol=1e-2)
    with pytest.raises(TypeError, match="packed weight"):
        native.native_linear(x.float(), packed, n, k)


@needs_linear_bf16
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("k", [1535, 1536])  # 1536: whole 32-k tiles, the AMX route where granted
def test_bfloat16_linear_kernel_rows_do_not_depend_on_the_row_or_thread_count(threads, k):
    gen = torch.Generator().manual_seed(4)
    w, x = torch.randn(100, k, generator=gen).bfloat16(), torch.randn(33, k, generator=gen).bfloat16()
    bias = torch.randn(100, generator=gen).bfloat16()
    packed = native.native_pack(w)
    full = native.native_linear(x, packed, 100, k, bias, threads=1)
    singles = torch.cat([native.native_linear(x[j : j + 1], packed, 100, k, bias, threads=threads) for j in range(33)])
    assert torch.equal(full, singles)
    for m in (2, 3, 5, 8, 9, 16, 17, 18, 31, 32):  # AMX row blocks: 17 = 9 + 9 overlapping by one
        assert torch.equal(native.native_linear(x[:m], packed, 100, k, bias, threads=threads), full[:m]), m
    assert native.native_library().specdec_linear_bf16_amx() in (0, 1)


def test_linear_kernel_rejects_bad_arguments(linear_lib):
    rc = linear_lib.specdec_linear_f32(None, None, None, None, 1, 0, 4, 1)
    assert rc != 0
    assert linear_lib.specdec_pack_f32(None, None, 4, 0, 1) != 0


@needs_linear
def test_packed_linear_module_keeps_a_dense_state_dict_and_ties():
    from specdec.config import ModelConfig
    from specdec.models.linear import PackedLinear, pack_linears_for_cpu
    from specdec.models.llama import LlamaModel

    torch.manual_seed(0)
    config = ModelConfig(vocab_size=64, hidden_size=64, intermediate_size=96, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16)
    dense = LlamaModel(config, 32).eval().requires_grad_(False)
    packed = LlamaModel(config, 32).eval().requires_grad_(False)
    packed.load_state_dict(dense.state_dict())
    packed.lm_head.weight = packed.embed.weight
    dense.lm_head.weight = dense.embed.weight
    pack_linears_for_cpu(packed)
    w13 = packed.layers[0].mlp.w13
    assert isinstance(w13, PackedLinear) and w13._dense is None  # only the packed copy stays
    assert isinstance(packed.lm_head, PackedLinear) and packed.lm_head.weight is packed.embed.weight
    assert torch.equal(w13.weight, dense.layers[0].mlp.w13.weight)
    assert set(packed.state_dict()) == set(dense.state_dict())
    for name, tensor in dense.state_dict().items():
        assert torch.equal(packed.state_dict()[name], tensor), name
    ids = torch.randint(0, 64, (1, 12))
    with torch.no_grad():
        a = dense(ids, torch.arange(12)[None], dense.new_cache()).logits
        b = packed(ids, torch.arange(12)[None], packed.new_cache()).logits
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    with pytest.raises(TypeError, match="float32 CPU"):
        w13(torch.randn(2, 64).to(torch.bfloat16))
    x = torch.randn(2, 64, requires_grad=True)  # autograd takes F.linear
    w13(x).sum().backward()
    assert x.grad is not None
    assert resolve_batch_invariant("auto", "float32")  # free with this kernel


# -- the decoder stack in one call (csrc/layers.c) ---------------------------------------------


def random_packed_model(dtype, head_dim=64, heads=4, kv_heads=2, bias=False, seed=0):
    from specdec.config import ModelConfig
    from specdec.models.linear import pack_linears_for_cpu
    from specdec.models.llama import LlamaModel

    torch.manual_seed(seed)
    config = ModelConfig(vocab_size=300, hidden_size=96, intermediate_size=160, num_layers=3, num_heads=heads,
                         num_kv_heads=kv_heads, head_dim=head_dim, attention_bias=bias, max_position_embeddings=512)
    model = LlamaModel(config, 512)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * (0.3 if "norm" not in name else 0.2) + (1.0 if "norm" in name else 0.0))
    return pack_linears_for_cpu(model.to(dtype).eval().requires_grad_(False))


def stack_and_layers(model, passes):
    """Run the same passes through the C stack and through the PyTorch layers: outputs, caches."""
    results, calls = [], []
    stack = model.native_stack()
    run = stack.forward
    stack.forward = lambda *a, **k: calls.append(1) or run(*a, **k)  # the stack really runs
    for use in (True, False):
        model.use_native_stack = use
        cache = model.new_cache(1, 512)
        outs = []
        with torch.inference_mode():
            for ids, positions, mask, layers in passes:
                out = model(ids, positions, cache, attn_mask=mask, hidden_layers=layers)
                outs += [out.logits, *(out.hidden_states[i] for i in layers)]
        model.use_native_stack = True
        results.append(outs + [cache.k[:, :, :, : cache.length].clone(), cache.v[:, :, :, : cache.length].clone()])
        assert len(calls) == len(passes)
    del stack.forward
    return results


def mixed_passes(vocab, prompt=40):
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(0, vocab, (1, prompt + 40), generator=gen)
    parents, depth = [-1, 0, 0, 1, 1, 2, 3, 6], [0, 1, 1, 2, 2, 2, 3, 3]
    passes = [(ids[:, :prompt], torch.arange(prompt)[None], None, (0, 2, -1))]  # prefill
    p = prompt
    for t in (1, 17, 3):  # a decode step and chain verify passes
        passes.append((ids[:, p : p + t], torch.arange(p, p + t)[None], None, (1, 3)))
        p += t
    passes.append((ids[:, p : p + 8], torch.tensor([[p + d for d in depth]]), tree_attention_mask(parents)[None], ()))
    return passes


@pytest.mark.skipif(not native.native_linear_supported(torch.float32), reason="no vectorized C linears here")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [dict(), dict(head_dim=24, heads=6, kv_heads=3, bias=True), dict(head_dim=32, heads=3, kv_heads=1)])
def test_native_stack_equals_the_pytorch_layers(dtype, shape):
    """Logits, hidden states and cache entries bit for bit, in prefill, decode, chain and tree
    passes; head_dim 24 takes the scalar RoPE loop, and a q/k/v bias."""
    if not native.native_linear_supported(dtype):
        pytest.skip(f"no vectorized C linears for {dtype} here")
    model = random_packed_model(dtype, **shape)
    model.set_batch_invariant(True)  # the prefill runs native too
    assert model.native_stack() is not None
    stack, layers = stack_and_layers(model, mixed_passes(model.config.vocab_size))
    assert len(stack) == len(layers)
    assert all(torch.equal(a, b) for a, b in zip(stack, layers))


@pytest.mark.skipif(not native.native_linear_supported(torch.float32), reason="no vectorized C linears here")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [dict(), dict(head_dim=24, heads=6, kv_heads=3, bias=True)])
def test_native_stack_runs_ragged_batches_as_its_layers(dtype, shape):
    """A ragged batch (prefill beside decode tokens, an idle row, more than a unit's 32 new
    tokens) through the stack's ragged entry: logits, hidden states and every row's cache
    bit for bit the PyTorch layers' (which run the ragged attention entry) and, per row, a
    one-sequence forward over the same tokens."""
    if not native.native_linear_supported(dtype):
        pytest.skip(f"no vectorized C linears for {dtype} here")
    model = random_packed_model(dtype, **shape)
    stack = model.native_stack()
    assert stack is not None
    gen = torch.Generator().manual_seed(4)
    seq_lens, num_new = torch.tensor([0, 5, 30, 0]), torch.tensor([40, 1, 3, 0])
    ids = torch.randint(0, model.config.vocab_size, (4, 40), generator=gen)
    positions = seq_lens[:, None] + torch.arange(40)[None]
    history = torch.randint(0, model.config.vocab_size, (4, 30), generator=gen)
    calls, run = [], stack.forward_rows
    stack.forward_rows = lambda *a, **k: calls.append(1) or run(*a, **k)
    results = []
    for use in (True, False):
        model.use_native_stack = use
        cache = model.new_cache(4, 128)
        with torch.inference_mode():
            for r in range(4):  # each row's history, alone
                n = int(seq_lens[r])
                if n:
                    model(history[r : r + 1, :n], torch.arange(n)[None], cache.row_view(r, 0))
            out = model(ids, positions, cache, seq_lens=seq_lens, num_new=num_new, hidden_layers=(0, 2, -1))
        results.append([out.logits, *out.hidden_states.values(), cache.k.clone(), cache.v.clone()])
    model.use_native_stack = True
    del stack.forward_rows
    assert len(calls) == 1 and out.logits.shape[0] == int(num_new.sum())
    assert all(torch.equal(a, b) for a, b in zip(*results))
    packed = results[0][0].split(num_new.tolist())
    with torch.inference_mode():
        for r in range(3):
            tokens = torch.cat((history[r, : seq_lens[r]], ids[r, : num_new[r]]))[None]
            alone = model(tokens, torch.arange(tokens.shape[1])[None], model.new_cache(1, 128)).logits[0]
            assert torch.equal(packed[r], alone[int(seq_lens[r]) :]), f"row {r}"


@pytest.mark.skipif(not native.native_linear_supported(torch.bfloat16), reason="no vectorized bfloat16 C linears here")
def test_native_stack_runs_the_default_model_as_its_layers(default_model):
    from specdec.models.loader import load_model

    model = load_model(None, "bfloat16", "cpu", 512, batch_invariant="on").model
    assert model.native_stack() is not None
    stack, layers = stack_and_layers(model, mixed_passes(model.config.vocab_size, prompt=70))
    assert all(torch.equal(a, b) for a, b in zip(stack, layers))


@pytest.mark.skipif(not native.native_linear_supported(torch.float32), reason="no vectorized C linears here")
def test_native_stack_is_rebuilt_or_dropped_when_the_model_changes():
    from specdec.models.quant import quantize_model

    model = random_packed_model(torch.float32)
    first = model.native_stack()
    assert first is not None and model.native_stack() is first  # built once
    model.requires_grad_(True)
    assert model.native_stack() is None  # trainable weights: the PyTorch layers
    model.requires_grad_(False)
    assert model.native_stack() is not None and model.native_stack() is not first
    quantize_model(model, "int8")
    assert model.native_stack() is None  # quantized linears are not the stack's
    with torch.inference_mode():  # and the model still runs, through its layers
        model(torch.tensor([[1, 2, 3]]), torch.arange(3)[None], model.new_cache(1, 64))
    stack = random_packed_model(torch.float32).native_stack()
    x = torch.zeros(2, 96, dtype=torch.bfloat16)
    cache = random_packed_model(torch.float32).new_cache(1, 64)
    with pytest.raises(ValueError, match="contiguous"):
        stack.forward(x, torch.zeros(2, 64), torch.zeros(2, 64), cache.k, cache.v, 0)
