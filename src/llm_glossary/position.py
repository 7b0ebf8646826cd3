"""Positional information for attention: sinusoidal positions and rotary embeddings (RoPE).

Attention by itself treats its input as a set: permute the tokens and every output is
permuted the same way (see the positional-encoding page). Two ways to give it order:

- Sinusoidal positions (Vaswani et al., 2017, arXiv:1706.03762, section 3.5): a fixed table
  added to the token embeddings once, at the bottom of the network.
- Rotary position embedding, RoPE (Su et al., 2021, arXiv:2104.09864): every query and key
  vector is rotated by an angle proportional to its position, in every attention layer, so
  that q·k depends on the positions only through their difference m − n.

RoPE here uses the split-halves layout of Hugging Face's Llama (``rotate_half``): the pair
rotated together is (x[i], x[i + D/2]), not (x[2i], x[2i + 1]) as in the paper and Meta's
reference code. Both are the same rotation up to a fixed permutation of the q/k projection
rows; the split-halves layout is what Llama checkpoints on the Hub are stored for.

Shapes: positions (T,) or (B, T); per-head tensors (B, H, T, D).
"""

from __future__ import annotations

import torch
from torch import nn

from ._checks import even_int as _even_dim
from ._checks import finite_number as _finite_number
from ._checks import positive_int as _positive_int

__all__ = [
    "sinusoidal_positions",
    "SinusoidalPositionalEmbedding",
    "rope_frequencies",
    "rope_cos_sin",
    "rotate_half",
    "apply_rope",
    "rotate",
]


# --8<-- [start:sinusoidal]
def sinusoidal_positions(
    max_len: int,
    dim: int,
    base: float = 10000.0,
    *,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The fixed sinusoidal position table of the original Transformer.

    PE[p, 2i]   = sin(p / base^(2i / dim))
    PE[p, 2i+1] = cos(p / base^(2i / dim))

    Args:
        max_len: number of positions (rows), positions 0 .. max_len - 1.
        dim: embedding width C (even).
        base: the wavelength base, 10000 in the paper.
        dtype: dtype of the result; the table is computed in float64 either way.

    Returns:
        tensor of shape (max_len, dim).

    Examples:
        >>> # sin 1, cos 1, sin 0.01, cos 0.01
        >>> sinusoidal_positions(3, 4, dtype=torch.float64)[1]
        tensor([0.8415, 0.5403, 0.0100, 1.0000], dtype=torch.float64)
    """
    _positive_int(max_len, "max_len")
    _even_dim(dim, "dim")
    _finite_number(base, "base")
    # (max_len, 1)
    position = torch.arange(max_len, dtype=torch.float64).unsqueeze(1)
    # (dim/2,)
    inv_freq = base ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    angle = position * inv_freq  # (max_len, dim/2)
    pe = torch.empty(max_len, dim, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(angle)  # even columns: sine
    pe[:, 1::2] = torch.cos(angle)  # odd columns: cosine
    return pe.to(dtype)
# --8<-- [end:sinusoidal]


# --8<-- [start:sinusoidal_module]
class SinusoidalPositionalEmbedding(nn.Module):
    """Adds the sinusoidal table to token embeddings: (B, T, C) -> (B, T, C).

    The table is a buffer (it moves with ``.to(device)`` and is not a
    parameter). It is registered once, under a name that no attribute already
    uses.

    Args:
        max_len: longest sequence the table covers.
        dim: embedding width C.

    Examples:
        >>> emb = SinusoidalPositionalEmbedding(max_len=8, dim=4)
        >>> # zero embeddings: what is left is position 1
        >>> emb(torch.zeros(1, 2, 4))[0, 1]
        tensor([0.8415, 0.5403, 0.0100, 0.9999])

        (cos 0.01 = 0.99995 rounds to 0.9999 in float32 and to 1.0000 in
        float64.)
    """

    def __init__(self, max_len: int, dim: int) -> None:
        super().__init__()
        self.max_len = _positive_int(max_len, "max_len")
        self.dim = _even_dim(dim, "dim")
        self.register_buffer(
            "pe", sinusoidal_positions(max_len, dim), persistent=False
        )

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        if (
            not isinstance(x, torch.Tensor)
            or x.dim() != 3
            or not torch.is_floating_point(x)
        ):
            got = (
                tuple(x.shape)
                if isinstance(x, torch.Tensor)
                else type(x).__name__
            )
            kind = x.dtype if isinstance(x, torch.Tensor) else ""
            raise ValueError(
                f"expected float token embeddings of shape (B, T, {self.dim}), "
                f"got {got} {kind}".rstrip()
                + " — pass embeddings, not token or position ids"
            )
        B, T, C = x.shape
        if C != self.dim:
            raise ValueError(
                f"expected embeddings of width {self.dim}, got shape "
                f"{tuple(x.shape)}"
            )
        if not isinstance(offset, int) or isinstance(offset, bool):
            raise ValueError(
                "offset must be an int >= 0 (the position of the first "
                f"token), got {offset!r}"
            )
        if offset < 0 or offset + T > self.max_len:
            raise ValueError(
                f"positions {offset}..{offset + T - 1} exceed "
                f"max_len={self.max_len}"
            )
        # (B, T, C) + (T, C)
        return x + self.pe[offset : offset + T].to(x.dtype)
# --8<-- [end:sinusoidal_module]


# --8<-- [start:rope]
def rope_frequencies(
    head_dim: int,
    theta: float = 500000.0,
    *,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Rotation speeds of RoPE: inv_freq[i] = theta^(-2i / D), i = 0 .. D/2 - 1.

    Llama 3 uses theta = 500,000 (Llama 2: 10,000). Pair i turns by position ·
    inv_freq[i]
    radians: the first pair fastest (one radian per token), the last pair
    slowest.

    Examples:
        >>> rope_frequencies(4, theta=10000.0)
        tensor([1.0000, 0.0100])
    """
    _even_dim(head_dim, "head_dim")
    _finite_number(theta, "theta")
    exponent = (
        torch.arange(0, head_dim, 2, dtype=torch.int64).to(dtype) / head_dim
    )
    # (D/2,), in float32 exactly as Hugging Face computes it
    return 1.0 / (theta**exponent)


def rope_cos_sin(
    positions: torch.Tensor,
    head_dim: int,
    theta: float = 500000.0,
    *,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotation angles, in the split-halves layout.

    Args:
        positions: integer positions, shape (T,) or (B, T).
        head_dim: D (even).
        dtype: precision of the angles: float32 as in Hugging Face, or float64.

    Returns:
        (cos, sin), each of shape positions.shape + (D,); columns i and i + D/2
        share the angle position · inv_freq[i].
    """
    positions = _check_positions(positions)
    inv_freq = rope_frequencies(head_dim, theta, dtype=dtype).to(
        positions.device
    )
    # (..., T, D/2)
    angle = positions.to(inv_freq.dtype).unsqueeze(-1) * inv_freq
    # (..., T, D): halves share angles
    angle = torch.cat([angle, angle], dim=-1)
    return angle.cos(), angle.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) on the two halves of the last dimension.

    With cos/sin from ``rope_cos_sin``, ``x * cos + rotate_half(x) * sin``
    rotates every pair (x[i], x[i + D/2]) by its angle.
    """
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(
    x: torch.Tensor, positions: torch.Tensor, theta: float = 500000.0
) -> torch.Tensor:
    """Rotate queries or keys by their positions (RoPE), as Hugging Face Llama
    does.

    Args:
        x: (B, H, T, D) queries or keys, D even.
        positions: (T,) or (B, T) integer positions of the T tokens.
        theta: RoPE base (500,000 for Llama 3).

    Returns:
        Tensor shaped and typed like x.

    Examples:
        >>> q = torch.tensor([[[[1.0, 0.0]]]])  # one head, one token, D = 2
        >>> # turned by 1 radian: (cos 1, sin 1)
        >>> apply_rope(q, torch.tensor([1]))
        tensor([[[[0.5403, 0.8415]]]])
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        got = (
            tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        )
        raise ValueError(
            f"apply_rope expects x of shape (B, H, T, D), got {got}"
        )
    # integer x would get cos/sin cast to integers (0 and 1)
    if not torch.is_floating_point(x):
        raise ValueError(
            "apply_rope expects floating-point queries or keys, "
            f"got dtype {x.dtype}"
        )
    B, H, T, D = x.shape
    positions = _check_positions(positions)
    if positions.shape[-1] != T or (
        positions.dim() == 2 and positions.shape[0] not in (1, B)
    ):
        raise ValueError(
            f"positions of shape {tuple(positions.shape)} do not fit x of "
            f"shape {tuple(x.shape)}: expected ({T},) or ({B}, {T})"
        )
    # Angles in float32 like Hugging Face (float64 for float64 inputs), then
    # cast to x's dtype.
    angle_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    # (T, D) or (B, T, D)
    cos, sin = rope_cos_sin(positions, D, theta, dtype=angle_dtype)
    return rotate(x, cos, sin)


def rotate(
    x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> torch.Tensor:
    """x · cos + rotate_half(x) · sin with cos/sin of shape (T, D) or (B, T, D),
    for x (B, H, T, D)."""
    if cos.dim() == 3:
        # (B, 1, T, D): same for every head
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return x * cos + rotate_half(x) * sin
# --8<-- [end:rope]


def _check_positions(positions: object) -> torch.Tensor:
    if not isinstance(positions, torch.Tensor):
        raise ValueError(f"positions must be an integer torch.Tensor, got {type(positions).__name__}")
    if positions.dtype.is_floating_point or positions.dtype == torch.bool or positions.dim() not in (1, 2):
        raise ValueError(f"positions must be integers of shape (T,) or (B, T), got dtype {positions.dtype} shape {tuple(positions.shape)}")
    return positions
