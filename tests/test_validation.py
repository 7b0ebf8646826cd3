"""Bad arguments to the model, attention, positions and norms: one clear error (issue 10, section 3)."""

from __future__ import annotations

import math

import pytest
import torch

from llm_glossary.attention import (
    SelfAttention,
    attention,
    attention_fast,
    attention_reference,
    block_local_mask,
    repeat_kv,
)
from llm_glossary.model import Llama, LlamaConfig
from llm_glossary.norm import RMSNorm, layer_norm, rms
from llm_glossary.position import SinusoidalPositionalEmbedding, apply_rope, rope_frequencies, sinusoidal_positions


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return Llama(LlamaConfig(vocab_size=50, dim=16, n_layers=1, n_heads=2, ffn_hidden=32, max_seq_len=32)).eval()


PROMPT = torch.tensor([[1, 2, 3]])


# ---------------------------------------------------------------------- generate


@pytest.mark.parametrize(
    "stop, message",
    [
        ("35", r"stop_tokens must be a list of token ids, got str '35'"),  # before: stops at 3 and 5
        (35, r"stop_tokens must be a list of token ids, got int 35"),
        (None, r"stop_tokens must be a list of token ids, got NoneType None"),
        ([45.7], r"stop token 45.7 is not a token id: expected ints in 0 .. 49"),  # before: stopped at 45
        (["3"], r"stop token '3' is not a token id"),
        ([2**70], r"stop token 1180591620717411303424 is not a token id: expected ints in 0 .. 49"),
        ([True], r"stop token True is not a token id"),
    ],
)
def test_generate_names_bad_stop_tokens(model, stop, message):
    with pytest.raises(ValueError, match=message):
        model.generate(PROMPT, 2, stop_tokens=stop)


def test_generate_accepts_integer_stop_tokens_of_any_integer_kind(model):
    import numpy as np

    first = int(model.generate(PROMPT, 1)[0, -1])
    for stop in ([first], (np.int64(first),), torch.tensor([first])):
        out = model.generate(PROMPT, 5, stop_tokens=stop)
        assert out.shape == (1, 4) and int(out[0, -1]) == first


@pytest.mark.parametrize(
    "idx, message",
    [
        ([[1, 2, 3]], r"expected token ids of shape \(B, T\) and dtype int64, got list"),  # before: AttributeError
        (torch.zeros(0, 3, dtype=torch.long), r"expected at least one prompt, got a batch of 0"),  # before: blamed the KV cache
    ],
)
def test_generate_names_bad_prompts(model, idx, message):
    with pytest.raises(ValueError, match=message):
        model.generate(idx, 2)


@pytest.mark.parametrize("temperature", [True, "1", float("nan"), -0.5])
def test_generate_refuses_bad_temperatures(model, temperature):
    with pytest.raises(ValueError, match="temperature must be a finite number >= 0"):
        model.generate(PROMPT, 2, temperature=temperature)


@pytest.mark.parametrize("temperature", [1e-39, 1e-300, 5e-324])
def test_a_tiny_temperature_samples_like_greedy(model, temperature):
    """Before: logits / 1e-39 overflowed to inf and multinomial failed on inf/nan."""
    g = torch.Generator().manual_seed(0)
    sampled = model.generate(PROMPT, 4, temperature=temperature, generator=g)
    assert torch.equal(sampled, model.generate(PROMPT, 4))


def test_top_p_true_is_refused(model):
    with pytest.raises(ValueError, match=r"top_p must be in \(0, 1\], got True"):
        model.generate(PROMPT, 2, temperature=1.0, top_p=True)


def test_generate_restores_train_mode_when_it_fails(model, monkeypatch):
    model.train()

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(model, "new_caches", broken)
    with pytest.raises(RuntimeError, match="out of memory"):
        model.generate(PROMPT, 2)
    assert model.training  # before: left in eval mode
    model.eval()


# ---------------------------------------------------------------------- attention


def qkv(B=1, Hq=2, Hkv=1, T=4, D=8, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    return (
        torch.randn(B, Hq, T, D, generator=g, dtype=dtype),
        torch.randn(B, Hkv, T, D, generator=g, dtype=dtype),
        torch.randn(B, Hkv, T, D, generator=g, dtype=dtype),
    )


@pytest.mark.parametrize("where", ["q", "k", "v"])
@pytest.mark.parametrize("causal, window", [(True, None), (False, None), (True, 2)])
@pytest.mark.parametrize("T", [4, 1])
def test_fast_and_reference_agree_on_nan(where, causal, window, T):
    q, k, v = qkv()
    q = q[:, :, -T:].clone()
    t = {"q": q, "k": k, "v": v}[where]
    t[0, 0, -1, 3] = float("nan")
    ref = attention_reference(q, k, v, causal=causal, window=window)
    fast = attention_fast(q, k, v, causal=causal, window=window, chunk=2 if window else None)
    assert torch.isnan(ref).any()
    assert torch.equal(torch.isnan(ref), torch.isnan(fast))  # before: NaN in q came out as 0.0
    finite = ~torch.isnan(ref)
    torch.testing.assert_close(fast[finite], ref[finite])


@pytest.mark.parametrize("scale", [0, -1.0, float("inf"), float("nan"), True, "0.5"])
@pytest.mark.parametrize("impl", ["reference", "fast"])
def test_attention_scale_must_be_a_finite_positive_number(scale, impl):
    q, k, v = qkv()
    with pytest.raises(ValueError, match="attention scale must be a finite number > 0"):
        attention(q, k, v, scale=scale, impl=impl)


def test_attention_scale_is_used_the_same_by_both_paths():
    q, k, v = qkv()
    torch.testing.assert_close(attention(q, k, v, scale=0.3, impl="fast"), attention(q, k, v, scale=0.3, impl="reference"))


def test_attention_refuses_mixed_dtypes_and_empty_heads():
    q, k, v = qkv()
    with pytest.raises(ValueError, match=r"q, k and v must share one dtype and device, got torch.float32 on cpu, torch.float64"):
        attention(q, k.double(), v)
    q0, k0, v0 = qkv(D=0)
    with pytest.raises(ValueError, match=r"need at least one head and head size D >= 1, got q \(1, 2, 4, 0\)"):
        attention(q0, k0, v0)
    q, k, v = qkv(Hkv=0)
    with pytest.raises(ValueError, match=r"need at least one head .* k \(1, 0, 4, 8\) \(B, Hkv, S, D\)"):
        attention(q, k, v, impl="reference")  # before: ZeroDivisionError


@pytest.mark.parametrize("n_rep", [0, -1, 1.5, True])
def test_repeat_kv_needs_a_positive_int(n_rep):
    with pytest.raises(ValueError, match=f"n_rep must be a positive int, got {n_rep!r}"):
        repeat_kv(torch.zeros(1, 2, 3, 4), n_rep)  # before: 0 returned zero heads


def test_block_local_mask_names_a_negative_length():
    with pytest.raises(ValueError, match="T must be a positive int, got -3"):
        block_local_mask(-3, 2)


@pytest.mark.parametrize("theta", [-1, 0, float("inf"), "x"])
def test_self_attention_checks_rope_theta_when_built(theta):
    with pytest.raises(ValueError, match="rope_theta must be a finite number > 0"):
        SelfAttention(16, 2, rope_theta=theta)  # before: accepted, failed only at forward


# ---------------------------------------------------------------------- positions and norms


def test_apply_rope_refuses_integer_tensors():
    x = torch.ones(1, 1, 2, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="apply_rope expects floating-point queries or keys, got dtype torch.int64"):
        apply_rope(x, torch.arange(2))  # before: int64 with cos/sin truncated to 0 and 1


@pytest.mark.parametrize("theta", ["x", 0, -1.0, float("nan")])
def test_rope_theta_is_a_finite_positive_number(theta):
    with pytest.raises(ValueError, match="theta must be a finite number > 0"):
        rope_frequencies(8, theta)


@pytest.mark.parametrize("base", ["x", 0, -10.0, float("inf")])
def test_sinusoidal_base_is_a_finite_positive_number(base):
    with pytest.raises(ValueError, match="base must be a finite number > 0"):
        sinusoidal_positions(4, 8, base)  # before: "x" TypeError, <= 0 non-finite or zero table


@pytest.mark.parametrize("offset", [1.5, "1", True])
def test_sinusoidal_offset_is_an_int(offset):
    emb = SinusoidalPositionalEmbedding(8, 4)
    with pytest.raises(ValueError, match="offset must be an int >= 0"):
        emb(torch.zeros(1, 2, 4), offset)


@pytest.mark.parametrize("eps", ["x", float("inf"), float("nan"), -1e-5, None])
def test_norm_eps_is_a_finite_number_at_least_zero(eps):
    x = torch.randn(2, 4)
    with pytest.raises(ValueError, match="RMSNorm eps must be a finite number >= 0"):
        RMSNorm(4, eps)  # before: "x" TypeError, inf gave all zeros
    with pytest.raises(ValueError, match="layer_norm eps must be a finite number >= 0"):
        layer_norm(x, eps)
    with pytest.raises(ValueError, match="rms eps must be a finite number >= 0"):
        rms(x, eps)


def test_valid_numbers_still_pass():
    assert RMSNorm(4, 0)(torch.ones(1, 4)).shape == (1, 4)
    assert math.isclose(float(layer_norm(torch.tensor([1.0, 3.0]), 1e-5)[1]), 1.0, rel_tol=1e-4)
    import numpy as np

    assert rope_frequencies(4, np.float32(10000.0)).shape == (2,)
