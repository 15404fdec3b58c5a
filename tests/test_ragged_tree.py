"""Tree attention masks in the ragged batch forward (models/llama.py `_forward_rows`): each
row of a batch, causal or verifying its own draft tree, against that row run alone through
the one-sequence forward with the same mask.

Where the C kernels run (float32 and bfloat16 on the CPU) the ragged entry must give every
row bit for bit what the one-sequence kernel gives it alone (csrc/attention.c), through the
per-layer path and through the C stack (csrc/layers.c); the PyTorch (SDPA) path agrees within
float tolerance.
"""

from __future__ import annotations

import pytest
import torch

from specdec.models import attention, linear, llama, native

needs_native = pytest.mark.skipif(native.native_library() is None, reason="the C kernels did not build here")

SEQ_LENS = (12, 30, 0)  # three rows of cached history
T = 40  # row (a) has more new tokens than a kernel unit's 32 positions


def tree_mask(parents: list[int]) -> torch.Tensor:
    """[N, N] bool: node i sees itself and its ancestors."""
    mask = torch.eye(len(parents), dtype=torch.bool)
    for i, p in enumerate(parents[1:], 1):
        mask[i] |= mask[p]
    return mask


def random_tree(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask [n, n] bool, depths [n]) of a random tree in topological order."""
    parents = [-1] + [int(torch.randint(0, i, (1,), generator=gen)) for i in range(1, n)]
    depths = [0] * n
    for i in range(1, n):
        depths[i] = depths[parents[i]] + 1
    return tree_mask(parents), torch.tensor(depths)


def random_model(dtype, seed=0):
    from specdec.config import ModelConfig

    torch.manual_seed(seed)
    config = ModelConfig(vocab_size=300, hidden_size=96, intermediate_size=160, num_layers=3, num_heads=6,
                         num_kv_heads=2, head_dim=16, max_position_embeddings=256)
    model = llama.LlamaModel(config, 256)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * (0.3 if "norm" not in name else 0.2) + (1.0 if "norm" in name else 0.0))
    return linear.pack_linears_for_cpu(model.to(dtype).eval().requires_grad_(False))


def ragged_batch(vocab: int, seed: int = 1):
    """Rows (a) a 40-node tree, (b) 5 causal tokens, (c) a 9-node tree over an empty cache.
    Mask entries past a row's new tokens are random: the forward must ignore them."""
    gen = torch.Generator().manual_seed(seed)
    num_new = torch.tensor([40, 5, 9])
    seq_lens = torch.tensor(SEQ_LENS)
    ids = torch.randint(0, vocab, (3, T), generator=gen)
    history = torch.randint(0, vocab, (3, max(SEQ_LENS)), generator=gen)
    attn_mask = torch.rand(3, T, T, generator=gen) < 0.5
    positions = torch.randint(0, 200, (3, T), generator=gen)
    row_masks = []
    for r, tree in enumerate((True, False, True)):
        n, start = int(num_new[r]), SEQ_LENS[r]
        if tree:
            mask, depths = random_tree(n, gen)
            positions[r, :n] = start + depths
        else:
            mask = torch.ones(n, n, dtype=torch.bool).tril()
            positions[r, :n] = start + torch.arange(n)
        attn_mask[r, :n, :n] = mask
        row_masks.append(mask if tree else None)
    return ids, positions, seq_lens, num_new, attn_mask, row_masks, history


def clone_cache(model, cache):
    copy = model.new_cache(cache.batch_size, cache.max_seq_len)
    copy.k.copy_(cache.k)
    copy.v.copy_(cache.v)
    return copy


def ragged_and_alone(model, layers=(2, -1), seed=1):
    """The batch through the ragged forward, and each row alone on a one-row view of a copy
    of the same cache: (packed outputs per row, alone outputs per row, the two caches)."""
    ids, positions, seq_lens, num_new, attn_mask, row_masks, history = ragged_batch(model.config.vocab_size, seed)
    cache = model.new_cache(3, 128)
    with torch.inference_mode():
        for r, n in enumerate(SEQ_LENS):  # each row's history, alone
            if n:
                model(history[r : r + 1, :n], torch.arange(n)[None], cache.row_view(r, 0))
        alone_cache = clone_cache(model, cache)
        out = model(ids, positions, cache, seq_lens=seq_lens, num_new=num_new, attn_mask=attn_mask, hidden_layers=layers)
        sizes = num_new.tolist()
        packed = [list(parts) for parts in zip(out.logits.split(sizes), *(out.hidden_states[i].split(sizes) for i in layers))]
        alone = []
        for r, n in enumerate(sizes):
            mask = None if row_masks[r] is None else row_masks[r][None]
            o = model(ids[r : r + 1, :n], positions[r : r + 1, :n], alone_cache.row_view(r, SEQ_LENS[r]), attn_mask=mask,
                      hidden_layers=layers)
            alone.append([o.logits[0], *(o.hidden_states[i][0] for i in layers)])
    assert out.logits.shape == (int(num_new.sum()), model.config.vocab_size)
    return packed, alone, cache, alone_cache


def assert_rows_equal(packed, alone, cache, alone_cache):
    for r, (p, a) in enumerate(zip(packed, alone)):
        for what, x, y in zip(("logits", "hidden[2]", "hidden[-1]"), p, a):
            assert torch.equal(x, y), f"row {r} {what}"
    assert torch.equal(cache.k, alone_cache.k) and torch.equal(cache.v, alone_cache.v)


def dtype_runs_here(dtype):
    """Whether this CPU runs the model's linears in dtype (bfloat16 oneDNN needs AVX-512 or AVX-NE-CONVERT)."""
    try:
        torch.nn.functional.linear(torch.ones(2, 32, dtype=dtype), torch.ones(48, 32, dtype=dtype))
        linear.pack_linears_for_cpu(torch.nn.Sequential(torch.nn.Linear(32, 48).to(dtype)))(torch.ones(2, 32, dtype=dtype))
    except RuntimeError as e:
        pytest.skip(f"{dtype} linears do not run on this CPU: {e}")


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("use_stack", [True, False])
def test_ragged_tree_rows_equal_each_row_alone(dtype, use_stack):
    """Logits, hidden states (layer 2 and the final norm) and the KV entries written, bit for
    bit, per row against the one-sequence forward with that row's mask; through the C stack
    where the model's linears are the C ones, else (and with use_stack False) through the
    layers and the ragged attention entry."""
    dtype_runs_here(dtype)
    model = random_model(dtype)
    model.use_native_stack = use_stack
    calls = []
    stack = model.native_stack() if use_stack else None
    if stack is not None:
        run = stack.forward_rows
        stack.forward_rows = lambda *a, **k: calls.append(k.get("masks", a[7] if len(a) > 7 else None)) or run(*a, **k)
    packed, alone, cache, alone_cache = ragged_and_alone(model)
    assert_rows_equal(packed, alone, cache, alone_cache)
    if stack is not None:
        assert len(calls) == 1 and calls[0] is not None  # the stack ran, with the rows' masks


@needs_native
def test_ragged_tree_rows_through_the_c_stack_with_portable_linears(monkeypatch):
    """The C stack's ragged entry with tree masks on any CPU: float32 linears packed for the C
    kernel (its portable loops where the build has no AVX-512 tiles)."""
    monkeypatch.setattr(linear, "native_linear_supported", lambda dtype, device="cpu": dtype == torch.float32)
    model = random_model(torch.float32)
    monkeypatch.undo()
    stack = model.native_stack()
    assert stack is not None
    calls, run = [], stack.forward_rows
    stack.forward_rows = lambda *a, **k: calls.append(1) or run(*a, **k)
    packed, alone, cache, alone_cache = ragged_and_alone(model)
    assert len(calls) == 1
    assert_rows_equal(packed, alone, cache, alone_cache)
    # the layers and the ragged attention entry give the same bits as the stack
    model.use_native_stack = False
    packed2, _, cache2, _ = ragged_and_alone(model)
    assert all(torch.equal(x, y) for p, q in zip(packed, packed2) for x, y in zip(p, q))
    assert torch.equal(cache.k, cache2.k) and torch.equal(cache.v, cache2.v)


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_ragged_attention_entry_takes_per_row_masks(dtype):
    """native_attention_rows with tree masks: each row bit for bit `native_attention` with its
    mask alone, for any thread count; a causal mask given as a mask changes no bit; the masks
    really change the tree rows."""
    h, h_kv, d, slots = 9, 3, 64, 320
    gen = torch.Generator().manual_seed(5)
    k_cache = torch.randn(5, h_kv, slots, d, generator=gen).to(dtype)
    v_cache = torch.randn(5, h_kv, slots, d, generator=gen).to(dtype)
    starts = torch.tensor([10, 0, 50, 0, 7])
    num_new = torch.tensor([40, 5, 9, 0, 3])
    offsets = torch.cat((torch.zeros(1, dtype=torch.long), num_new.cumsum(0)))
    q = torch.randn(int(offsets[-1]), h + 2 * h_kv, d, generator=gen).to(dtype)[:, :h]  # a strided view
    m0, m2 = random_tree(40, gen)[0].to(torch.uint8), random_tree(9, gen)[0].to(torch.uint8)
    m4 = torch.tensor([[0, 0, 0], [1, 0, 0], [0, 1, 1]], dtype=torch.uint8)  # row 0 sees the prefix only
    masks = torch.cat((m0.flatten(), m2.flatten(), m4.flatten()))
    mask_offsets = torch.tensor([0, -1, 1600, -1, 1681])
    ref = native.native_attention_rows(q, k_cache, v_cache, offsets, starts, masks, mask_offsets, threads=1)
    for r, m in ((0, m0), (1, None), (2, m2), (4, m4)):
        a, b = int(offsets[r]), int(offsets[r + 1])
        alone = native.native_attention(q[None, a:b], k_cache[r : r + 1], v_cache[r : r + 1], int(starts[r]), m)[0]
        assert torch.equal(ref[a:b], alone), f"row {r}"
    for threads in (2, 3):
        assert torch.equal(native.native_attention_rows(q, k_cache, v_cache, offsets, starts, masks, mask_offsets,
                                                        threads=threads), ref)
    causal = native.native_attention_rows(q, k_cache, v_cache, offsets, starts)
    with_tril = torch.cat((masks, torch.ones(5, 5, dtype=torch.uint8).tril().flatten()))
    as_mask = native.native_attention_rows(q, k_cache, v_cache, offsets, starts, with_tril,
                                           torch.tensor([0, 1690, 1600, -1, 1681]))
    assert torch.equal(as_mask, ref)
    assert torch.equal(causal[40:45], ref[40:45]) and not torch.equal(causal[:40], ref[:40])
    assert not torch.equal(causal[45:54], ref[45:54])


@needs_native
def test_ragged_masks_are_checked():
    h, h_kv, d = 4, 2, 32
    k_cache = torch.randn(2, h_kv, 64, d)
    v_cache = torch.randn(2, h_kv, 64, d)
    q = torch.randn(5, h, d)
    offsets, starts = torch.tensor([0, 3, 5]), torch.tensor([0, 4])
    blind = torch.tensor([[1, 0, 0], [0, 0, 0], [0, 1, 1]], dtype=torch.uint8)  # query 1 sees nothing
    with pytest.raises(RuntimeError, match="sees no key"):
        native.native_attention_rows(q, k_cache, v_cache, offsets, starts, blind.flatten(), torch.tensor([0, -1]))
    # a prefix to see: the same mask is fine on a row with cached tokens
    both = torch.cat((torch.ones(3, 3, dtype=torch.uint8).tril().flatten(), blind[:2, :2].flatten()))
    native.native_attention_rows(q, k_cache, v_cache, offsets, starts, both, torch.tensor([0, 9]))
    with pytest.raises(ValueError, match="runs past"):
        native.native_attention_rows(q, k_cache, v_cache, offsets, starts, both, torch.tensor([0, 10]))
    with pytest.raises(ValueError, match="uint8"):
        native.native_attention_rows(q, k_cache, v_cache, offsets, starts, both.bool(), torch.tensor([0, 9]))
    with pytest.raises(ValueError, match="mask_offsets"):
        native.native_attention_rows(q, k_cache, v_cache, offsets, starts, both, torch.tensor([0]))


@pytest.mark.parametrize("native_kernel", [True, False])
def test_a_mask_row_that_sees_nothing_is_an_error(monkeypatch, native_kernel):
    """Over an empty cache a tree row whose mask leaves a token no key is refused before
    anything is written, on the kernel's path and the SDPA path alike."""
    if not native_kernel:
        monkeypatch.setattr(llama, "native_attention_supported", lambda *a, **k: False)
    elif native.native_library() is None:
        pytest.skip("the C kernels did not build here")
    model = random_model(torch.float32)
    ids, positions, seq_lens, num_new, attn_mask, _, _ = ragged_batch(model.config.vocab_size)
    attn_mask[2, 4, :] = False  # row (c), empty cache: node 4 sees nothing
    cache = model.new_cache(3, 128)
    with torch.inference_mode(), pytest.raises(ValueError, match="row 2's new token 4 no key"):
        model(ids, positions, cache, seq_lens=seq_lens, num_new=num_new, attn_mask=attn_mask)
    assert not cache.k.any() and not cache.v.any()
    attn_mask[0, 4, :] = False  # row (a) has 12 cached tokens to see: allowed
    attn_mask[2, 4, 4] = True
    with torch.inference_mode():
        out = model(ids, positions, cache, seq_lens=seq_lens, num_new=num_new, attn_mask=attn_mask)
    assert torch.isfinite(out.logits).all()
    with pytest.raises(ValueError, match=r"\[B, T, T\]"):
        model(ids, positions, cache, seq_lens=seq_lens, num_new=num_new, attn_mask=attn_mask[:, :5, :5])


def test_sdpa_ragged_tree_rows_match_each_row_alone(monkeypatch):
    """The PyTorch path (no C attention kernel: as on CUDA, float16 or SPECDEC_NATIVE=0) builds
    each row's key mask from its tree: per row close to the one-sequence SDPA forward, and the
    trees matter (a causal batch gives other logits)."""
    monkeypatch.setattr(llama, "native_attention_supported", lambda *a, **k: False)
    monkeypatch.setattr(attention, "native_attention_supported", lambda *a, **k: False)
    model = random_model(torch.float32)
    model.use_native_stack = False
    assert not model.row_layout(torch.tensor([0]), torch.tensor([1]), 1, model.new_cache(1, 64)).native
    packed, alone, cache, alone_cache = ragged_and_alone(model)
    for r, (p, a) in enumerate(zip(packed, alone)):
        for what, x, y in zip(("logits", "hidden[2]", "hidden[-1]"), p, a):
            torch.testing.assert_close(x, y, atol=1e-4, rtol=1e-4, msg=f"row {r} {what}")
    torch.testing.assert_close(cache.k, alone_cache.k, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cache.v, alone_cache.v, atol=1e-5, rtol=1e-5)
    ids, positions, seq_lens, num_new, attn_mask, _, _ = ragged_batch(model.config.vocab_size)
    with torch.inference_mode():
        causal = model(ids, positions, model.new_cache(3, 128), seq_lens=seq_lens, num_new=num_new).logits
    assert not torch.allclose(causal[:40], packed[0][0], atol=1e-3)


@needs_native
def test_a_causal_mask_gives_todays_bits():
    """A batch whose masks are all causal (tril) over the new tokens, with garbage past them,
    is the causal ragged forward bit for bit; so is a causal row beside tree rows."""
    model = random_model(torch.float32)
    ids, positions, seq_lens, num_new, attn_mask, _, _ = ragged_batch(model.config.vocab_size)
    tril = attn_mask.clone()
    for r, n in enumerate(num_new.tolist()):
        tril[r, :n, :n] = torch.ones(n, n, dtype=torch.bool).tril()
    with torch.inference_mode():
        plain = model(ids, positions, model.new_cache(3, 128), seq_lens=seq_lens, num_new=num_new).logits
        masked = model(ids, positions, model.new_cache(3, 128), seq_lens=seq_lens, num_new=num_new, attn_mask=tril).logits
        trees = model(ids, positions, model.new_cache(3, 128), seq_lens=seq_lens, num_new=num_new, attn_mask=attn_mask).logits
    assert torch.equal(plain, masked)
    assert torch.equal(plain[40:45], trees[40:45]) and not torch.equal(plain[:40], trees[:40])
    rows = model.row_layout(seq_lens, num_new, T, model.new_cache(3, 128), tril)
    assert rows.masks is None and rows.mask_offsets is None  # all causal: the causal call
    rows = model.row_layout(seq_lens, num_new, T, model.new_cache(3, 128), attn_mask)
    assert rows.mask_offsets.tolist() == [0, -1, 1600] and rows.masks.numel() == 1600 + 81
