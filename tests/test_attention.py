"""Attention against torch's scaled_dot_product_attention, masks, caches, and the module."""

import math

import pytest
import torch
import torch.nn.functional as F

from llm_glossary.attention import (
    KVCache,
    RollingKVCache,
    SelfAttention,
    attention,
    attention_fast,
    attention_reference,
    block_local_mask,
    causal_mask,
    kv_cache_bytes,
    repeat_kv,
    sliding_window_mask,
)

TOL = {torch.float32: dict(atol=2e-5, rtol=1e-4), torch.bfloat16: dict(atol=2e-2, rtol=2e-2)}


def _qkv(B, Hq, Hkv, T, S, D, dtype=torch.float32, seed=0, grad=False):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, Hq, T, D, generator=g).to(dtype)
    k = torch.randn(B, Hkv, S, D, generator=g).to(dtype)
    v = torch.randn(B, Hkv, S, D, generator=g).to(dtype)
    if grad:
        for t in (q, k, v):
            t.requires_grad_(True)
    return q, k, v


def _torch_reference(q, k, v, *, causal=True, window=None):
    """torch's own kernel with an explicit boolean mask built from positions (not our helpers)."""
    T, S = q.shape[2], k.shape[2]
    i = torch.arange(S - T, S).unsqueeze(1)
    j = torch.arange(S).unsqueeze(0)
    allowed = torch.ones(T, S, dtype=torch.bool)
    if causal:
        allowed &= j <= i
    if window is not None:
        allowed &= j > i - window
    return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, enable_gqa=q.shape[1] != k.shape[1])


SHAPES = [
    # B, Hq, Hkv, T, S, window
    (1, 4, 4, 7, 7, None),  # multi-head
    (2, 8, 2, 9, 9, None),  # GQA
    (2, 6, 1, 5, 5, None),  # multi-query
    (1, 4, 2, 1, 12, None),  # decode step: T = 1, S > 1
    (2, 4, 2, 3, 10, None),  # several new tokens after a cache
    (2, 4, 2, 40, 40, 8),  # T > W
    (1, 4, 4, 6, 6, 16),  # T < W: the window changes nothing
    (1, 8, 2, 1, 30, 5),  # windowed decode step
    (2, 4, 1, 13, 29, 4),  # windowed, cached keys before the queries
    (1, 2, 2, 300, 300, 37),  # several chunks, window not dividing the chunk
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("B,Hq,Hkv,T,S,window", SHAPES)
def test_both_paths_match_torch_sdpa(B, Hq, Hkv, T, S, window, dtype):
    q, k, v = _qkv(B, Hq, Hkv, T, S, 16, dtype)
    expected = _torch_reference(q, k, v, window=window)
    for impl in ("reference", "fast"):
        got = attention(q, k, v, window=window, impl=impl)
        assert got.shape == (B, Hq, T, 16) and got.dtype == dtype
        torch.testing.assert_close(got, expected, **TOL[dtype], msg=f"impl={impl}")


def test_full_causal_matches_is_causal_and_enable_gqa():
    q, k, v = _qkv(2, 8, 2, 11, 11, 8)
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    torch.testing.assert_close(attention(q, k, v, impl="reference"), expected, **TOL[torch.float32])
    torch.testing.assert_close(attention(q, k, v, impl="fast"), expected, **TOL[torch.float32])


def test_non_causal_matches_sdpa():
    q, k, v = _qkv(1, 4, 2, 5, 9, 8)
    expected = F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    for impl in ("reference", "fast"):
        torch.testing.assert_close(attention(q, k, v, causal=False, impl=impl), expected, **TOL[torch.float32])


def test_custom_scale():
    q, k, v = _qkv(1, 2, 2, 4, 4, 8)
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.5)
    for impl in ("reference", "fast"):
        torch.testing.assert_close(attention(q, k, v, scale=0.5, impl=impl), expected, **TOL[torch.float32])


@pytest.mark.parametrize("window", [None, 3, 50])
def test_gradients_match_sdpa(window):
    q, k, v = _qkv(2, 4, 2, 20, 20, 8, grad=True)
    weights = torch.randn(2, 4, 20, 8)
    expected_grads = torch.autograd.grad((_torch_reference(q, k, v, window=window) * weights).sum(), (q, k, v))
    for impl in ("reference", "fast"):
        grads = torch.autograd.grad((attention(q, k, v, window=window, impl=impl) * weights).sum(), (q, k, v))
        for name, g, e in zip("qkv", grads, expected_grads):
            torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-4, msg=f"impl={impl} d{name}")


def test_chunk_size_does_not_change_the_result():
    q, k, v = _qkv(1, 4, 2, 100, 100, 8)
    expected = attention_reference(q, k, v, window=7)
    for chunk in (1, 5, 7, 64, 500):
        torch.testing.assert_close(attention_fast(q, k, v, window=7, chunk=chunk), expected, **TOL[torch.float32])


def test_softmax_rows_sum_to_one_and_masked_keys_get_zero_weight():
    # With v = identity rows, the output row is exactly the attention weights.
    T = 6
    q = torch.randn(1, 1, T, T)
    k = torch.randn(1, 1, T, T)
    v = torch.eye(T).view(1, 1, T, T)
    weights = attention(q, k, v, window=3, impl="reference")[0, 0]
    torch.testing.assert_close(weights.sum(-1), torch.ones(T))
    assert torch.all(weights[~sliding_window_mask(T, 3)] == 0)


def test_masks_count_visible_keys():
    assert sliding_window_mask(5, 3).sum(1).tolist() == [1, 2, 3, 3, 3]
    assert causal_mask(5).sum(1).tolist() == [1, 2, 3, 4, 5]
    assert block_local_mask(5, 3).sum(1).tolist() == [1, 2, 3, 1, 2]
    # decode rows: the newest query of 10 keys sees the last 4 under a window of 4
    assert sliding_window_mask(1, 4, 10).nonzero()[:, 1].tolist() == [6, 7, 8, 9]
    # the window mask is the causal mask minus what is further back than W - 1
    i, j = torch.meshgrid(torch.arange(9), torch.arange(9), indexing="ij")
    assert torch.equal(sliding_window_mask(9, 4), (j <= i) & (i - j < 4))


def test_repeat_kv_matches_hugging_face_layout():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(2, 3, 4, 5)
    # Hugging Face's repeat_kv: expand a new axis after the head axis, then flatten.
    hf = x[:, :, None].expand(2, 3, 2, 4, 5).reshape(2, 6, 4, 5)
    assert torch.equal(repeat_kv(x, 2), hf)
    assert not torch.equal(x.repeat(1, 2, 1, 1), hf)  # tiling pairs heads wrongly


def _decode_all(module, x, cache):
    outs = [module(x[:, t : t + 1], cache=cache) for t in range(x.shape[1])]
    return torch.cat(outs, dim=1)


@pytest.mark.parametrize("window", [None, 4])
def test_cached_decoding_equals_full_recomputation(window):
    torch.manual_seed(0)
    module = SelfAttention(32, 4, 2, window=window).eval()
    x = torch.randn(2, 15, 32)
    full = module(x)
    with torch.no_grad():
        cache = module.new_cache(2, 15)
        assert isinstance(cache, RollingKVCache if window else KVCache)
        step = _decode_all(module, x, cache)
        torch.testing.assert_close(step, full, atol=1e-5, rtol=1e-4)
        # prefill a prompt, then decode the rest one token at a time
        cache = module.new_cache(2, 15)
        head = module(x[:, :6], cache=cache)
        tail = _decode_all(module, x[:, 6:], cache)
        torch.testing.assert_close(torch.cat([head, tail], 1), full, atol=1e-5, rtol=1e-4)
        assert cache.length == 15


def test_rolling_cache_keeps_position_i_in_slot_i_mod_w():
    cache = RollingKVCache(1, 1, 3, 1)
    for pos in range(7):
        value = torch.full((1, 1, 1, 1), float(pos))
        keys, _ = cache.update(value, value)
        assert keys.flatten().tolist() == [float(p) for p in range(max(0, pos - 2), pos + 1)]
    assert cache.k.flatten().tolist() == [6.0, 4.0, 5.0]  # 6 % 3 = 0, 4 % 3 = 1, 5 % 3 = 2
    assert cache.length == 7


def test_rolling_cache_prefill_longer_than_window():
    cache = RollingKVCache(1, 1, 4, 1)
    x = torch.arange(10, dtype=torch.float32).view(1, 1, 10, 1)
    keys, _ = cache.update(x, x)
    assert keys.flatten().tolist() == list(range(10))
    assert sorted(cache.k.flatten().tolist()) == [6.0, 7.0, 8.0, 9.0]


def test_kv_cache_overflow_and_shape_errors():
    cache = KVCache(1, 2, 3, 4)
    cache.update(torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 4))
    with pytest.raises(ValueError, match="holds 3 positions"):
        cache.update(torch.zeros(1, 2, 1, 4), torch.zeros(1, 2, 1, 4))
    with pytest.raises(ValueError, match=r"\(1, 2, t, 4\)"):
        KVCache(1, 2, 3, 4).update(torch.zeros(1, 3, 1, 4), torch.zeros(1, 3, 1, 4))


def test_kv_cache_bytes_llama3_8b():
    gib = 2**30
    assert kv_cache_bytes(32, 8, 128, 8192) == 1 * gib
    assert kv_cache_bytes(32, 32, 128, 8192) == 4 * gib
    cache = KVCache(1, 8, 8192, 128, dtype=torch.bfloat16)
    assert cache.nbytes() * 32 == kv_cache_bytes(32, 8, 128, 8192)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(q=(2, 4, 3), k=(1, 2, 3, 8), v=(1, 2, 3, 8)), r"q must have shape \(B, H, T, D\).*\(2, 4, 3\)"),
        (dict(q=(1, 6, 3, 8), k=(1, 4, 3, 8), v=(1, 4, 3, 8)), r"Hq=6 must be a multiple of key/value heads Hkv=4"),
        (dict(q=(1, 4, 3, 8), k=(1, 2, 3, 8), v=(1, 2, 4, 8)), r"k and v must have the same shape"),
        (dict(q=(1, 4, 3, 8), k=(1, 2, 3, 16), v=(1, 2, 3, 16)), r"agree in batch B and head size D"),
        (dict(q=(1, 4, 5, 8), k=(1, 2, 3, 8), v=(1, 2, 3, 8)), r"T=5, k has S=3"),
        (dict(q=(1, 4, 3, 8), k=(1, 2, 3, 8), v=(1, 2, 3, 8), window=0), r"window must be a positive int or None, got 0"),
        (dict(q=(1, 4, 3, 8), k=(1, 2, 3, 8), v=(1, 2, 3, 8), window=-2), r"got -2"),
        (dict(q=(1, 4, 3, 8), k=(1, 2, 3, 8), v=(1, 2, 3, 8), window=2, causal=False), r"needs causal=True"),
        (dict(q=(1, 4, 3, 8), k=(1, 2, 3, 8), v=(1, 2, 3, 8), impl="flash"), r"impl must be one of"),
    ],
)
def test_attention_errors_name_the_values(kwargs, match):
    kwargs = dict(kwargs)
    q, k, v = (torch.zeros(kwargs.pop(n)) for n in "qkv")
    impls = [kwargs.pop("impl")] if "impl" in kwargs else ["reference", "fast"]
    for impl in impls:
        with pytest.raises(ValueError, match=match):
            attention(q, k, v, impl=impl, **kwargs)


def test_integer_inputs_are_rejected():
    x = torch.zeros(1, 1, 2, 2, dtype=torch.long)
    with pytest.raises(ValueError, match="floating-point"):
        attention(x, x, x)


def test_self_attention_module_errors():
    with pytest.raises(ValueError, match="dim=30 must be divisible by n_heads=4"):
        SelfAttention(30, 4)
    with pytest.raises(ValueError, match="n_heads=6 must be a multiple of n_kv_heads=4"):
        SelfAttention(48, 6, 4)
    with pytest.raises(ValueError, match=r"expects x of shape \(B, T, 32\), got \(2, 5, 16\)"):
        SelfAttention(32, 4)(torch.zeros(2, 5, 16))


def test_self_attention_matches_hugging_face_llama_attention():
    transformers = pytest.importorskip("transformers")
    from transformers.models.llama.modeling_llama import LlamaAttention, LlamaRotaryEmbedding

    config = transformers.LlamaConfig(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, rope_theta=500000.0, max_position_embeddings=64)
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    hf = LlamaAttention(config, layer_idx=0).eval()
    ours = SelfAttention(32, 4, 2, rope_theta=500000.0).eval()
    ours.load_state_dict(hf.state_dict())
    x = torch.randn(2, 9, 32)
    position_ids = torch.arange(9).unsqueeze(0)
    cos, sin = LlamaRotaryEmbedding(config)(x, position_ids)
    mask = torch.full((9, 9), float("-inf")).triu(1).view(1, 1, 9, 9)
    expected, _ = hf(x, position_embeddings=(cos, sin), attention_mask=mask)
    torch.testing.assert_close(ours(x), expected, atol=1e-5, rtol=1e-4)
    assert math.isclose(ours.head_dim, 8)


@pytest.mark.parametrize("window", [None, 4])
@pytest.mark.parametrize("T,S", [(9, 9), (1, 9), (3, 9)])
def test_key_mask_hides_padding_like_leaving_it_out(window, T, S):
    """A row padded on the left gives, at its real queries, what the row without padding
    gives (both paths); padded queries still get finite values (they see themselves)."""
    pad = 3
    q, k, v = _qkv(2, 4, 2, T, S, 8, seed=7)
    key_mask = torch.ones(2, S, dtype=torch.bool)
    key_mask[1, :pad] = False  # row 1: three padding positions first
    real_q = slice(max(0, T - (S - pad)), T)  # its queries that are real tokens
    alone = attention_reference(q[1:, :, real_q], k[1:, :, pad:], v[1:, :, pad:], window=window)
    for fn in (attention_reference, attention_fast):
        out = fn(q, k, v, window=window, key_mask=key_mask)
        torch.testing.assert_close(out[1:, :, real_q], alone, **TOL[torch.float32])
        torch.testing.assert_close(out[:1], fn(q[:1], k[:1], v[:1], window=window), **TOL[torch.float32])
        assert torch.isfinite(out).all()
    # without the causal mask too, and through the NaN fallback (a NaN in a padded key)
    for fn in (attention_reference, attention_fast):
        full = fn(q, k, v, causal=False, key_mask=key_mask)
        alone_full = attention_reference(q[1:, :, real_q], k[1:, :, pad:], v[1:, :, pad:], causal=False)
        torch.testing.assert_close(full[1:, :, real_q], alone_full, **TOL[torch.float32])
    if window is None:
        k_nan = k.clone()
        k_nan[1, :, 0] = float("nan")  # padding (the reference path masks it with -inf)
        out = attention_fast(q, k_nan, v, key_mask=key_mask)
        torch.testing.assert_close(out[1:, :, real_q], alone, **TOL[torch.float32])
    # a hidden key really changes nothing: alter the padded keys and values
    k2, v2 = k.clone(), v.clone()
    k2[1, :, :pad] += 100.0
    v2[1, :, :pad] -= 50.0
    a = attention_fast(q, k, v, window=window, key_mask=key_mask)[1, :, real_q]
    b = attention_fast(q, k2, v2, window=window, key_mask=key_mask)[1, :, real_q]
    torch.testing.assert_close(a, b, **TOL[torch.float32])


def test_key_mask_errors_name_the_expected_shape():
    q, k, v = _qkv(2, 4, 2, 3, 5, 8)
    with pytest.raises(ValueError, match=r"key_mask must be a bool tensor of shape \(B, S\) = \(2, 5\).*got shape \(2, 3\)"):
        attention(q, k, v, key_mask=torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"got shape \(2, 5\) dtype torch.int64"):
        attention(q, k, v, key_mask=torch.ones(2, 5, dtype=torch.long), impl="reference")
    with pytest.raises(ValueError, match=r"key_mask is on meta, the keys on cpu"):
        attention(q, k, v, key_mask=torch.ones(2, 5, dtype=torch.bool, device="meta"))


def test_sliding_window_timings_memo_measures_once_per_process(monkeypatch):
    from llm_glossary import benchmarking

    calls = []
    monkeypatch.setattr(benchmarking, "time_ms", lambda fn, **kw: calls.append(1) or float(len(calls)))
    monkeypatch.setattr(benchmarking, "_TIMINGS", {})
    args = dict(window=4, heads=1, head_dim=8, repeat=1)
    first = benchmarking.sliding_window_timings([16, 32], memo=True, **args)
    assert len(calls) == 4  # dense and chunked, two lengths
    again = benchmarking.sliding_window_timings([16, 32], memo=True, **args)
    assert again == first and len(calls) == 4  # reused, not measured
    again[0]["dense_ms"] = -1.0  # a copy: the memo keeps its own rows
    assert benchmarking.sliding_window_timings([16, 32], memo=True, **args) == first
    benchmarking.sliding_window_timings([16, 32], memo=True, **{**args, "window": 8})
    benchmarking.sliding_window_timings([16, 32], **args)  # memo off: measured again
    assert len(calls) == 12
