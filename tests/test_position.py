"""Sinusoidal positions and RoPE: closed-form values, the relative property, Hugging Face parity."""

import math

import pytest
import torch

from llm_glossary.attention import attention
from llm_glossary.position import (
    SinusoidalPositionalEmbedding,
    apply_rope,
    rope_cos_sin,
    rope_frequencies,
    rotate_half,
    sinusoidal_positions,
)


def test_sinusoidal_closed_form():
    pe = sinusoidal_positions(50, 8, dtype=torch.float64)
    for p in (0, 1, 7, 49):
        for i in range(4):
            angle = p / 10000 ** (2 * i / 8)
            assert math.isclose(pe[p, 2 * i].item(), math.sin(angle), abs_tol=1e-12)
            assert math.isclose(pe[p, 2 * i + 1].item(), math.cos(angle), abs_tol=1e-12)
    row = sinusoidal_positions(2, 4, dtype=torch.float64)[1].tolist()
    assert [round(x, 4) for x in row] == [0.8415, 0.5403, 0.01, 1.0]
    assert torch.equal(sinusoidal_positions(3, 4)[0], torch.tensor([0.0, 1.0, 0.0, 1.0]))


def test_sinusoidal_module_adds_the_table_and_is_a_buffer():
    emb = SinusoidalPositionalEmbedding(16, 6)
    x = torch.randn(2, 5, 6)
    torch.testing.assert_close(emb(x), x + sinusoidal_positions(16, 6)[:5])
    torch.testing.assert_close(emb(x, offset=3), x + sinusoidal_positions(16, 6)[3:8])
    assert "pe" in dict(emb.named_buffers()) and not list(emb.parameters())
    assert "pe" not in emb.state_dict()  # derived from max_len and dim: nothing to save


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda e: e(torch.arange(5).unsqueeze(0)), r"pass embeddings, not token or position ids"),
        (lambda e: e(torch.zeros(1, 5, 4)), r"width 6, got shape \(1, 5, 4\)"),
        (lambda e: e(torch.zeros(1, 17, 6)), r"exceed max_len=16"),
    ],
)
def test_sinusoidal_module_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call(SinusoidalPositionalEmbedding(16, 6))


def test_sinusoidal_errors():
    with pytest.raises(ValueError, match="dim must be even"):
        sinusoidal_positions(4, 5)
    with pytest.raises(ValueError, match="max_len must be a positive int, got 0"):
        sinusoidal_positions(0, 4)


def test_rope_frequencies_closed_form():
    f = rope_frequencies(8, theta=500000.0)
    expected = torch.tensor([500000.0 ** (-i / 8) for i in (0, 2, 4, 6)])
    torch.testing.assert_close(f, expected)
    with pytest.raises(ValueError, match="head_dim must be even"):
        rope_frequencies(7)


def test_rope_rotates_pairs_by_position_times_frequency():
    D, theta = 8, 10000.0
    x = torch.randn(1, 1, 1, D, dtype=torch.float64)
    m = 5
    y = apply_rope(x.float(), torch.tensor([m]), theta).double()[0, 0, 0]
    x = x[0, 0, 0]
    for i in range(D // 2):
        a = m * theta ** (-2 * i / D)
        x1, x2 = x[i].item(), x[i + D // 2].item()
        assert math.isclose(y[i].item(), x1 * math.cos(a) - x2 * math.sin(a), abs_tol=1e-5)
        assert math.isclose(y[i + D // 2].item(), x2 * math.cos(a) + x1 * math.sin(a), abs_tol=1e-5)


def test_rope_keeps_length_and_position_zero_is_identity():
    x = torch.randn(2, 3, 7, 16)
    pos = torch.arange(7)
    torch.testing.assert_close(apply_rope(x, pos).norm(dim=-1), x.norm(dim=-1))
    torch.testing.assert_close(apply_rope(x, torch.zeros(7, dtype=torch.long)), x)


@pytest.mark.parametrize("theta", [10000.0, 500000.0])
def test_rope_dot_product_depends_only_on_the_offset(theta):
    torch.manual_seed(0)
    q = torch.randn(1, 1, 1, 64, dtype=torch.float64)
    k = torch.randn(1, 1, 1, 64, dtype=torch.float64)

    def score(m, n):
        qm = apply_rope(q, torch.tensor([m]), theta)
        kn = apply_rope(k, torch.tensor([n]), theta)
        return (qm * kn).sum().item()

    for offset in (0, 1, 3, 17):
        values = [score(n + offset, n) for n in (0, 5, 100, 2000)]
        assert max(values) - min(values) < 1e-9 * max(1.0, abs(values[0]))  # float64 angles for float64 inputs
    assert abs(score(3, 0) - score(4, 0)) > 1e-6  # but a different offset changes it


def test_rope_matches_hugging_face_llama():
    transformers = pytest.importorskip("transformers")
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb
    from transformers.models.llama.modeling_llama import rotate_half as hf_rotate_half

    config = transformers.LlamaConfig(hidden_size=64, num_attention_heads=4, rope_theta=500000.0, max_position_embeddings=128)
    x = torch.randn(2, 4, 11, 16)
    k = torch.randn(2, 4, 11, 16)
    position_ids = torch.arange(3, 14).unsqueeze(0).expand(2, 11)
    cos, sin = LlamaRotaryEmbedding(config)(x, position_ids)
    hq, hk = apply_rotary_pos_emb(x, k, cos, sin)
    torch.testing.assert_close(apply_rope(x, position_ids, 500000.0), hq)
    torch.testing.assert_close(apply_rope(k, torch.arange(3, 14), 500000.0), hk)
    ours_cos, ours_sin = rope_cos_sin(position_ids, 16, 500000.0)
    torch.testing.assert_close(ours_cos, cos)
    torch.testing.assert_close(ours_sin, sin)
    torch.testing.assert_close(rotate_half(x), hf_rotate_half(x))


def test_apply_rope_errors():
    with pytest.raises(ValueError, match=r"\(B, H, T, D\), got \(4, 16\)"):
        apply_rope(torch.zeros(4, 16), torch.arange(4))
    with pytest.raises(ValueError, match=r"positions of shape \(5,\) do not fit"):
        apply_rope(torch.zeros(1, 1, 4, 16), torch.arange(5))
    with pytest.raises(ValueError, match="integers"):
        apply_rope(torch.zeros(1, 1, 4, 16), torch.arange(4.0))


def test_attention_without_positions_cannot_see_order():
    torch.manual_seed(0)
    x = torch.randn(1, 1, 6, 8)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    out = attention(x, x, x, causal=False)
    out_perm = attention(x[:, :, perm], x[:, :, perm], x[:, :, perm], causal=False)
    torch.testing.assert_close(out_perm, out[:, :, perm])  # same rows, only shuffled
    pos = torch.arange(6)
    xr = apply_rope(x, pos)
    xp = apply_rope(x[:, :, perm], pos)
    with_pos = attention(xr, xr, x, causal=False)
    with_pos_perm = attention(xp, xp, x[:, :, perm], causal=False)
    assert not torch.allclose(with_pos_perm, with_pos[:, :, perm], atol=1e-4)
