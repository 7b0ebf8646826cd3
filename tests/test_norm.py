"""RMSNorm: parity with torch.nn.RMSNorm, the worked examples, and the errors."""

import math

import pytest
import torch

from llm_glossary.norm import RMSNorm, layer_norm, rms, standardize_stats


def _pair(dim, eps=1e-5, seed=0):
    torch.manual_seed(seed)
    ours, ref = RMSNorm(dim, eps=eps), torch.nn.RMSNorm(dim, eps=eps)
    with torch.no_grad():
        gain = torch.randn(dim)
        ours.weight.copy_(gain)
        ref.weight.copy_(gain)
    return ours, ref


@pytest.mark.parametrize("shape", [(7,), (3, 16), (2, 5, 64), (2, 3, 4, 32)])
def test_forward_matches_torch_float32(shape):
    ours, ref = _pair(shape[-1])
    x = torch.randn(*shape) * 3
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shape", [(2, 5, 64), (4, 128)])
def test_gradients_match_torch_float32(shape):
    ours, ref = _pair(shape[-1], seed=3)
    x1 = torch.randn(*shape, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_(True)
    upstream = torch.randn(*shape)
    (ours(x1) * upstream).sum().backward()
    (ref(x2) * upstream).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, rtol=1e-5, atol=1e-5)


def test_bfloat16_matches_float32_math_and_keeps_dtype():
    ours, ref = _pair(64, seed=1)
    x = (torch.randn(2, 5, 64) * 4).bfloat16()
    ours_bf, ref_bf = ours.bfloat16(), ref.bfloat16()
    y = ours_bf(x)
    assert y.dtype == torch.bfloat16
    # Reference computed in float32 from the same bf16 inputs, rounded as the Llama code does.
    x32 = x.float()
    expected = (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + 1e-5)).bfloat16() * ours_bf.weight
    torch.testing.assert_close(y, expected, rtol=0, atol=0)
    torch.testing.assert_close(y.float(), ref_bf(x).float(), rtol=2e-2, atol=2e-2)


def test_bfloat16_gradients_close_to_torch():
    ours, ref = _pair(32, seed=2)
    ours, ref = ours.bfloat16(), ref.bfloat16()
    x1 = torch.randn(3, 32).bfloat16().requires_grad_(True)
    x2 = x1.detach().clone().requires_grad_(True)
    ours(x1).float().pow(2).sum().backward()
    ref(x2).float().pow(2).sum().backward()
    torch.testing.assert_close(x1.grad.float(), x2.grad.float(), rtol=5e-2, atol=5e-2)


def test_worked_example():
    x = torch.tensor([2.0, 4.0, 6.0, 8.0])
    assert rms(x).item() == pytest.approx(math.sqrt(30), rel=1e-6)
    expected = torch.tensor([v / math.sqrt(30) for v in (2, 4, 6, 8)])
    torch.testing.assert_close(RMSNorm(4, eps=0.0)(x), expected)
    mean, std = 5.0, math.sqrt(5.0)
    torch.testing.assert_close(layer_norm(x), torch.tensor([(v - mean) / std for v in (2, 4, 6, 8)]))


def test_layer_norm_matches_torch_without_affine():
    x = torch.randn(3, 10)
    torch.testing.assert_close(layer_norm(x, eps=1e-5), torch.nn.functional.layer_norm(x, (10,), eps=1e-5))


def test_standardize_stats_apples():
    s = standardize_stats(torch.tensor([200.0, 300.0, 150.0, 250.0]))
    assert s["mean"] == 225.0
    assert s["std_population"] == pytest.approx(math.sqrt(12500 / 4))
    assert s["std_sample"] == pytest.approx(math.sqrt(12500 / 3))
    assert s["rms"] == pytest.approx(math.sqrt((200**2 + 300**2 + 150**2 + 250**2) / 4))


def test_scale_invariance_and_gradient_scaling():
    norm = RMSNorm(8, eps=0.0)
    x, w, c = torch.randn(8), torch.randn(8), 7.0
    torch.testing.assert_close(norm(c * x), norm(x))

    def grad(inp):
        inp = inp.clone().requires_grad_(True)
        (norm(inp) * w).sum().backward()
        return inp.grad

    torch.testing.assert_close(grad(c * x), grad(x) / c)


def test_wrong_last_dimension_names_both_sizes():
    with pytest.raises(ValueError, match=r"expected the last dimension of x to be 8, got 5"):
        RMSNorm(8)(torch.randn(2, 5))


@pytest.mark.parametrize("dim", [0, -3, 2.5, True])
def test_bad_dim(dim):
    with pytest.raises(ValueError, match="positive int"):
        RMSNorm(dim)


def test_integer_input_rejected():
    with pytest.raises(ValueError, match="floating-point"):
        RMSNorm(3)(torch.tensor([1, 2, 3]))


def test_standardize_stats_needs_a_vector():
    with pytest.raises(ValueError, match=r"1-D vector"):
        standardize_stats(torch.randn(2, 2))
