"""Normalization layers: RMSNorm, with LayerNorm-style standardization for contrast.

RMSNorm (Zhang & Sennrich, 2019, arXiv:1910.07467) rescales each token vector by the
root mean square of its features and multiplies by a learned gain. Unlike LayerNorm it
does not subtract the mean and has no bias.

Shapes: x is (..., C) — usually (B, T, C); the statistic is taken over the last
dimension C, one value per token vector.
"""

from __future__ import annotations

import torch
from torch import nn

from ._checks import finite_number, positive_int

__all__ = ["RMSNorm", "rms", "layer_norm", "standardize_stats"]


def _check_float(x: torch.Tensor, name: str = "x") -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() == 0:
        raise ValueError(f"{name} must have at least one dimension (the features), got a 0-d tensor")
    if not torch.is_floating_point(x):
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")


# --8<-- [start:rms]
def rms(x: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """Root mean square over the last dimension, one value per vector.

    RMS(x) = sqrt(mean(x_i^2) + eps), computed over the features of each vector.

    Args:
        x: tensor of shape (..., C).
        eps: added inside the square root (0 gives the plain RMS).

    Returns:
        Tensor of shape (..., 1).

    Examples:
        >>> # sqrt((4 + 16 + 36 + 64) / 4) = sqrt(30)
        >>> rms(torch.tensor([2.0, 4.0, 6.0, 8.0]))
        tensor([5.4772])
    """
    _check_float(x)
    finite_number(eps, "rms eps", strict=False)
    return torch.sqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps)  # (..., 1)
# --8<-- [end:rms]


# --8<-- [start:rmsnorm]
class RMSNorm(nn.Module):
    """Root mean square layer normalization, as in Llama and Mistral.

    y = x / sqrt(mean(x^2) + eps) * weight

    The statistic is computed in float32 and the result cast back to the input
    dtype, as the Llama reference code does, so bfloat16 activations keep their
    precision here.

    Args:
        dim: size C of the last dimension (the features of one token vector).
        eps: small constant inside the square root, for numerical safety.

    Examples:
        >>> norm = RMSNorm(4)
        >>> norm(torch.tensor([2.0, 4.0, 6.0, 8.0]))  # weight starts at 1
        tensor([0.3651, 0.7303, 1.0954, 1.4606], grad_fn=<MulBackward0>)
    """

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        positive_int(dim, "RMSNorm dim")
        finite_number(eps, "RMSNorm eps", strict=False)
        self.dim = dim
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))  # learnable gain g, (C,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_float(x)
        if x.shape[-1] != self.dim:
            raise ValueError(
                f"RMSNorm expected the last dimension of x to be {self.dim}, "
                f"got {x.shape[-1]} (x has shape {tuple(x.shape)})"
            )
        # (..., C) in float32
        x32 = x.float()
        # 1 / RMS(x), (..., 1)
        inv_rms = torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        # x / RMS(x) * g
        return (x32 * inv_rms).type_as(x) * self.weight

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}"
# --8<-- [end:rmsnorm]


# --8<-- [start:layer_norm]
def layer_norm(x: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """LayerNorm without its affine part: subtract the mean, divide by the
    standard deviation.

    y = (x - mean(x)) / sqrt(var(x) + eps), with the population variance (divide
    by C), as torch.nn.LayerNorm does. This is standardization, which RMSNorm
    does *not* do.

    Args:
        x: tensor of shape (..., C).
        eps: added to the variance.

    Returns:
        Tensor of shape (..., C).

    Examples:
        >>> layer_norm(torch.tensor([2.0, 4.0, 6.0, 8.0]))
        tensor([-1.3416, -0.4472,  0.4472,  1.3416])
    """
    _check_float(x)
    finite_number(eps, "layer_norm eps", strict=False)
    mean = x.mean(dim=-1, keepdim=True)  # (..., 1)
    # population variance, (..., 1)
    var = x.var(dim=-1, keepdim=True, unbiased=False)
    return (x - mean) / torch.sqrt(var + eps)
# --8<-- [end:layer_norm]


def standardize_stats(x: torch.Tensor) -> dict[str, float]:
    """Summary statistics of a 1-D vector, to compare what each normalization divides by.

    Args:
        x: a 1-D floating-point tensor with at least two elements.

    Returns:
        A dict with the mean, the population standard deviation (divide by n), the
        sample standard deviation (divide by n - 1) and the RMS.

    Examples:
        >>> s = standardize_stats(torch.tensor([2.0, 4.0, 6.0, 8.0]))
        >>> round(s["std_population"], 3), round(s["std_sample"], 3), round(s["rms"], 3)
        (2.236, 2.582, 5.477)
    """
    _check_float(x)
    if x.dim() != 1 or x.numel() < 2:
        raise ValueError(f"expected a 1-D vector with at least 2 elements, got shape {tuple(x.shape)}")
    x64 = x.double()
    return {
        "mean": x64.mean().item(),
        "std_population": x64.std(unbiased=False).item(),
        "std_sample": x64.std(unbiased=True).item(),
        "rms": x64.pow(2).mean().sqrt().item(),
    }
