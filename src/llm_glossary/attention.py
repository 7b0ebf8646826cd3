"""Scaled dot-product attention with its masks, grouped-query heads, sliding windows and KV caches.

Attention (Vaswani et al., 2017, arXiv:1706.03762):

    Attention(Q, K, V) = softmax(Q Kᵀ / √D + mask) V

Grouped-query attention, GQA (Ainslie et al., 2023, arXiv:2305.13245): Hq query heads share
Hkv key/value heads, Hq / Hkv query heads per group. Hkv == Hq is multi-head attention,
Hkv == 1 is multi-query attention (Shazeer, 2019, arXiv:1911.02150).

Sliding-window attention as in Mistral 7B (Jiang et al., 2023, arXiv:2310.06825): the query
at position i sees the keys j with i − W < j ≤ i, so every row sees at most W keys; layers
stack, so information still travels further than W.

Shapes: q (B, Hq, T, D); k and v (B, Hkv, S, D); S ≥ T. When S > T the T queries are the
last T positions of the S (decoding with a cache). Masks are boolean, True = may attend.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import finite_number as _finite_number
from ._checks import positive_int as _positive_int
from .position import apply_rope, rotate

__all__ = [
    "attention",
    "attention_reference",
    "attention_fast",
    "causal_mask",
    "sliding_window_mask",
    "block_local_mask",
    "repeat_kv",
    "KVCache",
    "RollingKVCache",
    "SelfAttention",
    "kv_cache_bytes",
]

IMPLS = ("auto", "reference", "fast")


# --------------------------------------------------------------------------- masks


# --8<-- [start:masks]
def causal_mask(
    T: int, S: int | None = None, *, device: torch.device | str | None = None
) -> torch.Tensor:
    """Boolean (T, S) mask: query i (at position S − T + i) sees keys 0 .. S − T
    + i.

    Examples:
        >>> causal_mask(3).int()
        tensor([[1, 0, 0],
                [1, 1, 0],
                [1, 1, 1]], dtype=torch.int32)
    """
    S = T if S is None else S
    _positive_int(T, "T")
    _positive_int(S, "S")
    if S < T:
        raise ValueError(
            f"need at least as many keys as queries, got T={T}, S={S}"
        )
    query_pos = torch.arange(S - T, S, device=device).unsqueeze(1)  # (T, 1)
    key_pos = torch.arange(S, device=device).unsqueeze(0)  # (1, S)
    return key_pos <= query_pos


def sliding_window_mask(
    T: int,
    window: int,
    S: int | None = None,
    *,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Boolean (T, S) mask: query at position i sees keys j with i − W < j ≤ i.

    Every row sees at most W keys, and a row's keys always end at the query
    itself.

    Examples:
        >>> sliding_window_mask(5, 3).int()
        tensor([[1, 0, 0, 0, 0],
                [1, 1, 0, 0, 0],
                [1, 1, 1, 0, 0],
                [0, 1, 1, 1, 0],
                [0, 0, 1, 1, 1]], dtype=torch.int32)
    """
    _positive_int(window, "window")
    mask = causal_mask(T, S, device=device)
    S = mask.shape[1]
    query_pos = torch.arange(S - T, S, device=device).unsqueeze(1)
    key_pos = torch.arange(S, device=device).unsqueeze(0)
    return mask & (key_pos > query_pos - window)


def block_local_mask(
    T: int, block: int, *, device: torch.device | str | None = None
) -> torch.Tensor:
    """Boolean (T, T) mask of block-local causal attention, for contrast with a
    sliding window.

    The sequence is cut into blocks of ``block`` tokens; a query sees the
    earlier keys of its own block only. The first token of every block sees
    nothing before it.

    Examples:
        >>> block_local_mask(5, 3).int()
        tensor([[1, 0, 0, 0, 0],
                [1, 1, 0, 0, 0],
                [1, 1, 1, 0, 0],
                [0, 0, 0, 1, 0],
                [0, 0, 0, 1, 1]], dtype=torch.int32)
    """
    _positive_int(T, "T")
    _positive_int(block, "block")
    pos = torch.arange(T, device=device)
    same_block = (pos.unsqueeze(1) // block) == (pos.unsqueeze(0) // block)
    return causal_mask(T, device=device) & same_block
# --8<-- [end:masks]


# --------------------------------------------------------------------------- heads


# --8<-- [start:repeat_kv]
def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """Give every query head its key/value head: (B, Hkv, S, D) -> (B, Hkv ·
    n_rep, S, D).

    Query head h uses key/value head h // n_rep, so each key/value head is
    repeated n_rep times *in place* (``repeat_interleave``), not the whole stack
    tiled (``repeat``), which would pair query head h with key/value head h %
    Hkv.
    """
    _positive_int(n_rep, "n_rep")
    if n_rep == 1:
        return x
    return x.repeat_interleave(n_rep, dim=1)
# --8<-- [end:repeat_kv]


def _check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, window: int | None) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{name} must have shape (B, H, T, D) (4 dimensions), got shape {tuple(t.shape)}")
        if not torch.is_floating_point(t):
            raise ValueError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    if not q.dtype == k.dtype == v.dtype or not q.device == k.device == v.device:
        raise ValueError(
            f"q, k and v must share one dtype and device, got {q.dtype} on {q.device}, "
            f"{k.dtype} on {k.device} and {v.dtype} on {v.device}"
        )
    if k.shape != v.shape:
        raise ValueError(f"k and v must have the same shape (B, Hkv, S, D), got k {tuple(k.shape)} and v {tuple(v.shape)}")
    B, Hq, T, D = q.shape
    Bk, Hkv, S, Dk = k.shape
    if B != Bk or D != Dk:
        raise ValueError(f"q {tuple(q.shape)} and k {tuple(k.shape)} must agree in batch B and head size D")
    if D == 0 or Hq == 0 or Hkv == 0:
        raise ValueError(
            f"need at least one head and head size D >= 1, got q {tuple(q.shape)} (B, Hq, T, D) "
            f"and k {tuple(k.shape)} (B, Hkv, S, D)"
        )
    if Hq % Hkv:
        raise ValueError(f"query heads Hq={Hq} must be a multiple of key/value heads Hkv={Hkv} (q {tuple(q.shape)}, k {tuple(k.shape)})")
    if S < T:
        raise ValueError(f"need at least as many keys as queries: q has T={T}, k has S={S}")
    if T == 0:
        raise ValueError(f"q has no query positions: shape {tuple(q.shape)}")
    if window is not None:
        if not isinstance(window, int) or isinstance(window, bool) or window <= 0:
            raise ValueError(f"window must be a positive int or None, got {window!r}")
        if not causal:
            raise ValueError(f"a sliding window (window={window}) needs causal=True")


def _check_scale(scale: float | None, D: int) -> float:
    """The default 1/√D, or ``scale`` if it is a finite number > 0."""
    if scale is None:
        return 1.0 / math.sqrt(D)
    return float(_finite_number(scale, "attention scale"))


def _mask(T: int, S: int, causal: bool, window: int | None, device: torch.device) -> torch.Tensor | None:
    if window is not None:
        return sliding_window_mask(T, window, S, device=device)
    if causal:
        return causal_mask(T, S, device=device)
    return None


def _check_key_mask(
    key_mask, B: int, S: int, device: torch.device, *, name: str = "key_mask", of: str = "the keys", what: str = ""
) -> None:
    """A (B, S) bool padding mask on ``device`` (``Llama`` checks its attention_mask here too)."""
    if not isinstance(key_mask, torch.Tensor) or key_mask.dtype != torch.bool or tuple(key_mask.shape) != (B, S):
        got = f"shape {tuple(key_mask.shape)} dtype {key_mask.dtype}" if isinstance(key_mask, torch.Tensor) else type(key_mask).__name__
        raise ValueError(f"{name} must be a bool tensor of shape (B, S) = ({B}, {S}){what}, True for real tokens, got {got}")
    if key_mask.device != torch.device(device):
        raise ValueError(f"{name} is on {key_mask.device}, {of} on {device}: move it with .to({str(device)!r})")


def _with_key_mask(mask: torch.Tensor | None, key_mask: torch.Tensor, T: int) -> torch.Tensor:
    """(B, 1, T, S): ``mask`` (T, S) or None, and only the keys that ``key_mask`` (B, S)
    keeps, except that every query still sees its own position (a padding query, whose
    output nobody reads, then attends to itself instead of to nothing, which would be NaN)."""
    B, S = key_mask.shape
    rows = torch.arange(T, device=key_mask.device)
    own = rows[:, None] + (S - T) == torch.arange(S, device=key_mask.device)  # (T, S)
    keep = key_mask[:, None, None, :] | own  # (B, 1, T, S)
    return keep if mask is None else keep & mask


# --------------------------------------------------------------------------- attention


# --8<-- [start:reference]
def attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = True,
    window: int | None = None,
    scale: float | None = None,
    key_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """softmax(Q Kᵀ / √D + mask) V, written out step by step (the version the
    pages show)."""
    _check_qkv(q, k, v, causal, window)
    B, Hq, T, D = q.shape
    S = k.shape[2]
    if key_mask is not None:  # padding in a batch of unequal sequences
        _check_key_mask(key_mask, B, S, q.device)
    scale = _check_scale(scale, D)  # 1/√D unless given
    # (B, Hq, S, D): each group's shared head
    k = repeat_kv(k, Hq // k.shape[1])
    v = repeat_kv(v, Hq // v.shape[1])  # (B, Hq, S, D)
    # (B, Hq, T, S): one score per query-key pair
    scores = (q @ k.transpose(-2, -1)) * scale
    mask = _mask(T, S, causal, window, q.device)  # (T, S), True = may attend
    if key_mask is not None:
        mask = _with_key_mask(mask, key_mask, T)  # (B, 1, T, S)
    if mask is not None:
        # hidden keys get weight exp(-inf) = 0
        scores = scores.masked_fill(~mask, float("-inf"))
    # (B, Hq, T, S), rows sum to 1
    weights = torch.softmax(scores.float(), dim=-1).to(q.dtype)
    return weights @ v  # (B, Hq, T, D): weighted average of the value vectors
# --8<-- [end:reference]


def _sdpa(q, k, v, mask, is_causal, scale):
    gqa = q.shape[1] != k.shape[1]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, scale=scale, enable_gqa=gqa)


# --8<-- [start:sliding_chunks]
def _sliding_window_chunked(
    q, k, v, window: int, scale: float, chunk: int
) -> torch.Tensor:
    """Sliding-window attention in query chunks: time and memory grow with T·W,
    not T·S.

    A chunk of queries at positions p0 .. p1 − 1 needs only the keys p0 − W + 1
    .. p1 − 1, so each step multiplies a (chunk × (chunk + W − 1)) block; the T
    × S score matrix is never built.
    """
    B, Hq, T, D = q.shape
    S = k.shape[2]
    offset = S - T  # absolute position of query 0
    out = q.new_empty(B, Hq, T, D)
    for t0 in range(0, T, chunk):
        t1 = min(t0 + chunk, T)
        # absolute positions of this chunk's queries
        p0, p1 = offset + t0, offset + t1
        s0 = max(0, p0 - window + 1)  # first key any of them can see
        # keys s0 .. p1 - 1, the chunk's queries being the last t1 - t0 of
        # them: (c, c + W - 1) at most
        mask = sliding_window_mask(t1 - t0, window, p1 - s0, device=q.device)
        out[:, :, t0:t1] = _sdpa(
            q[:, :, t0:t1], k[:, :, s0:p1], v[:, :, s0:p1], mask, False, scale
        )
    return out
# --8<-- [end:sliding_chunks]


def attention_fast(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = True,
    window: int | None = None,
    scale: float | None = None,
    chunk: int | None = None,
    key_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """The same result as ``attention_reference`` through torch's fused kernels.

    Full attention goes to ``scaled_dot_product_attention`` (GQA without copying key/value
    heads). A sliding window narrower than the keys goes to the chunked path. With a
    ``key_mask`` (padding) every case goes to the fused kernel with one explicit (B, 1, T, S)
    mask, window included (dense, not chunked). Inputs that
    hold a NaN go to ``attention_reference``: the fused kernels drop a NaN query (0 instead
    of NaN) or spread a masked NaN key, so only then do both paths agree on NaN.
    """
    _check_qkv(q, k, v, causal, window)
    B, Hq, T, D = q.shape
    S = k.shape[2]
    scale = _check_scale(scale, D)
    if bool(torch.isnan(q).any() | torch.isnan(k).any() | torch.isnan(v).any()):
        return attention_reference(q, k, v, causal=causal, window=window, scale=scale, key_mask=key_mask)
    if key_mask is not None:  # padding: one explicit (B, 1, T, S) mask
        _check_key_mask(key_mask, B, S, q.device)
        mask = _with_key_mask(_mask(T, S, causal, window, q.device), key_mask, T)
        return _sdpa(q, k, v, mask, False, scale)
    if window is not None and window < S:
        chunk = max(window, 128) if chunk is None else _positive_int(chunk, "chunk")
        return _sliding_window_chunked(q, k, v, window, scale, chunk)
    if not causal or T == 1:  # a single newest query sees every key
        return _sdpa(q, k, v, None, False, scale)
    if T == S:
        return _sdpa(q, k, v, None, True, scale)
    return _sdpa(q, k, v, causal_mask(T, S, device=q.device), False, scale)  # cached keys before the queries


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = True,
    window: int | None = None,
    scale: float | None = None,
    impl: str = "auto",
    key_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Scaled dot-product attention with optional causal mask, sliding window and GQA.

    Args:
        q: queries (B, Hq, T, D).
        k: keys (B, Hkv, S, D), S ≥ T; Hq must be a multiple of Hkv.
        v: values (B, Hkv, S, D).
        causal: hide the keys after each query.
        window: if set, query i sees only keys j with i − W < j ≤ i (needs causal).
        scale: multiplies QKᵀ; default 1/√D.
        impl: "reference" (written out), "fast" (fused kernels, chunked window) or
            "auto" (= "fast").
        key_mask: (B, S) bool, False for padding: those keys are hidden from every
            query but the one at their own position (batches of sequences of unequal
            length, as ``Llama.generate(attention_mask=...)`` decodes them).

    Returns:
        (B, Hq, T, D).

    Raises:
        ValueError: wrong ranks or sizes, Hq not a multiple of Hkv, S < T, window ≤ 0,
            a key_mask that is not a (B, S) bool tensor on the keys' device.

    Examples:
        >>> q = k = v = torch.ones(1, 1, 2, 4)
        >>> attention(q, k, v).shape
        torch.Size([1, 1, 2, 4])
    """
    if impl == "reference":
        return attention_reference(q, k, v, causal=causal, window=window, scale=scale, key_mask=key_mask)
    if impl in ("fast", "auto"):
        return attention_fast(q, k, v, causal=causal, window=window, scale=scale, key_mask=key_mask)
    raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")


# --------------------------------------------------------------------------- caches


def _check_kv_step(cache, k: torch.Tensor, v: torch.Tensor) -> None:
    expected = (cache.batch, cache.n_kv_heads, cache.head_dim)
    for name, t in (("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor) or t.dim() != 4 or (t.shape[0], t.shape[1], t.shape[3]) != expected:
            got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{name} must have shape ({cache.batch}, {cache.n_kv_heads}, t, {cache.head_dim}) for this cache, got {got}")
    if k.shape != v.shape:
        raise ValueError(f"k and v must have the same shape, got {tuple(k.shape)} and {tuple(v.shape)}")


# --8<-- [start:kv_cache]
class KVCache:
    """Keys and values of every past position, so decoding computes only the new
    token's.

    A preallocated (B, Hkv, max_len, D) buffer for keys and one for values;
    ``update`` writes the new positions and returns all keys and values so far.

    Args:
        batch: B, sequences decoded together.
        n_kv_heads: Hkv, key/value heads.
        max_len: positions the buffer holds.
        head_dim: D, size of one head.
        dtype: dtype of the buffers.
        device: device of the buffers.
    """

    def __init__(
        self,
        batch: int,
        n_kv_heads: int,
        max_len: int,
        head_dim: int,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        self.batch = _positive_int(batch, "batch")
        self.n_kv_heads = _positive_int(n_kv_heads, "n_kv_heads")
        self.max_len = _positive_int(max_len, "max_len")
        self.head_dim = _positive_int(head_dim, "head_dim")
        self.k = torch.zeros(
            batch, n_kv_heads, max_len, head_dim, dtype=dtype, device=device
        )
        self.v = torch.zeros_like(self.k)
        self.length = 0  # positions stored so far = position of the next token
        self.window = None

    def update(
        self, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Append (B, Hkv, t, D) keys and values; return all (B, Hkv, length, D)
        so far."""
        _check_kv_step(self, k, v)
        t = k.shape[2]
        if self.length + t > self.max_len:
            raise ValueError(
                f"KV cache holds {self.max_len} positions: cannot add {t} to "
                f"the {self.length} stored"
            )
        self.k[:, :, self.length : self.length + t] = k
        self.v[:, :, self.length : self.length + t] = v
        self.length += t
        return self.k[:, :, : self.length], self.v[:, :, : self.length]

    def nbytes(self) -> int:
        return self.k.numel() * self.k.element_size() * 2
# --8<-- [end:kv_cache]


# --8<-- [start:rolling_cache]
class RollingKVCache:
    """A rolling buffer of W slots for sliding-window attention (Mistral 7B's
    cache).

    Position i is kept in slot i mod W, overwriting position i − W, which no
    later query can see. Memory stays W positions however long the text grows.
    ``update`` returns the keys and values the new queries can see, oldest
    first, so ``attention(..., window=W)`` gives the same result as recomputing
    the whole sequence.
    """

    def __init__(
        self,
        batch: int,
        n_kv_heads: int,
        window: int,
        head_dim: int,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        self.batch = _positive_int(batch, "batch")
        self.n_kv_heads = _positive_int(n_kv_heads, "n_kv_heads")
        self.window = _positive_int(window, "window")
        self.head_dim = _positive_int(head_dim, "head_dim")
        self.k = torch.zeros(
            batch, n_kv_heads, window, head_dim, dtype=dtype, device=device
        )
        self.v = torch.zeros_like(self.k)
        self.length = 0  # positions seen so far = position of the next token

    def slots(self, positions: torch.Tensor) -> torch.Tensor:
        return positions % self.window  # position i lives in slot i mod W

    def update(
        self, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Add t new positions; return (B, Hkv, m + t, D): the m ≤ W − 1 cached
        ones before them, then the new ones."""
        _check_kv_step(self, k, v)
        t, W = k.shape[2], self.window
        # older positions the first new query can still see
        m = min(self.length, W - 1)
        old = torch.arange(self.length - m, self.length, device=self.k.device)
        # oldest first
        keys = torch.cat([self.k[:, :, self.slots(old)], k], dim=2)
        values = torch.cat([self.v[:, :, self.slots(old)], v], dim=2)
        keep = min(t, W)  # only the last W new positions stay in the buffer
        new = torch.arange(
            self.length + t - keep, self.length + t, device=self.k.device
        )
        self.k[:, :, self.slots(new)] = k[:, :, t - keep :]
        self.v[:, :, self.slots(new)] = v[:, :, t - keep :]
        self.length += t
        return keys, values

    def nbytes(self) -> int:
        return self.k.numel() * self.k.element_size() * 2
# --8<-- [end:rolling_cache]


def kv_cache_bytes(n_layers: int, n_kv_heads: int, head_dim: int, seq_len: int, batch: int = 1, bytes_per_value: int = 2) -> int:
    """Bytes of a full KV cache: 2 (K and V) × layers × Hkv × D × tokens × batch × bytes.

    Examples:
        >>> # Llama 3 8B, 8K tokens, bf16
        >>> kv_cache_bytes(32, 8, 128, 8192) / 2**30
        1.0
    """
    for name, value in (("n_layers", n_layers), ("n_kv_heads", n_kv_heads), ("head_dim", head_dim), ("seq_len", seq_len), ("batch", batch), ("bytes_per_value", bytes_per_value)):
        _positive_int(value, name)
    return 2 * n_layers * n_kv_heads * head_dim * seq_len * batch * bytes_per_value


# --------------------------------------------------------------------------- module


# --8<-- [start:self_attention]
class SelfAttention(nn.Module):
    """Multi-head self-attention with grouped key/value heads, RoPE and an
    optional window.

    Q, K and V are three learned projections of the same input x. Parameter
    names follow Hugging Face Llama/Mistral (q_proj, k_proj, v_proj, o_proj), so
    weights load by name.

    Args:
        dim: model width C.
        n_heads: query heads Hq; head size D = C / Hq.
        n_kv_heads: key/value heads Hkv (default Hq); Hq must be a multiple of
            it.
        window: sliding window W, or None for full causal attention.
        rope_theta: RoPE base, or None for no rotary embedding.
        bias: add biases to the projections (Llama: no).
    """

    def __init__(
        self,
        dim: int,
        n_heads: int,
        n_kv_heads: int | None = None,
        *,
        window: int | None = None,
        rope_theta: float | None = 500000.0,
        bias: bool = False,
    ) -> None:
        super().__init__()
        _positive_int(dim, "dim")
        _positive_int(n_heads, "n_heads")
        n_kv_heads = (
            n_heads
            if n_kv_heads is None
            else _positive_int(n_kv_heads, "n_kv_heads")
        )
        if dim % n_heads:
            raise ValueError(
                f"dim={dim} must be divisible by n_heads={n_heads}"
            )
        if n_heads % n_kv_heads:
            raise ValueError(
                f"n_heads={n_heads} must be a multiple of "
                f"n_kv_heads={n_kv_heads}"
            )
        if window is not None:
            _positive_int(window, "window")
        if rope_theta is not None:
            _finite_number(rope_theta, "rope_theta")
        self.dim, self.n_heads, self.n_kv_heads = dim, n_heads, n_kv_heads
        self.head_dim = dim // n_heads
        self.window = window
        self.rope_theta = rope_theta
        self.q_proj = nn.Linear(dim, n_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(dim, n_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(dim, n_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(n_heads * self.head_dim, dim, bias=bias)

    def new_cache(
        self, batch: int, max_len: int, *, dtype=None, device=None
    ) -> KVCache | RollingKVCache:
        """An empty cache for decoding: rolling (W slots) when windowed and W <
        max_len."""
        dtype = dtype or self.q_proj.weight.dtype
        device = device or self.q_proj.weight.device
        if self.window is not None and self.window < max_len:
            return RollingKVCache(
                batch,
                self.n_kv_heads,
                self.window,
                self.head_dim,
                dtype=dtype,
                device=device,
            )
        return KVCache(
            batch,
            self.n_kv_heads,
            max_len,
            self.head_dim,
            dtype=dtype,
            device=device,
        )

    def forward(
        self,
        x: torch.Tensor,
        *,
        positions: torch.Tensor | None = None,
        cache: KVCache | RollingKVCache | None = None,
        impl: str = "auto",
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        key_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, T, C) -> (B, T, C). With a cache, x holds only the new tokens.

        ``rope`` may pass precomputed (cos, sin) from ``position.rope_cos_sin``
        for these positions, so a model computes them once instead of once per
        layer. ``key_mask`` (B, every position so far), False for padding,
        hides padded keys (see :func:`attention`); with a rolling cache only its
        last columns, those of the keys the cache returns, are used.
        """
        if (
            not isinstance(x, torch.Tensor)
            or x.dim() != 3
            or x.shape[-1] != self.dim
        ):
            got = (
                tuple(x.shape)
                if isinstance(x, torch.Tensor)
                else type(x).__name__
            )
            raise ValueError(
                f"SelfAttention expects x of shape (B, T, {self.dim}), got "
                f"{got}"
            )
        B, T, C = x.shape
        start = cache.length if cache is not None else 0
        if positions is None:
            positions = torch.arange(start, start + T, device=x.device)  # (T,)
        # (B, Hq, T, D)
        q = (
            self.q_proj(x)
            .view(B, T, self.n_heads, self.head_dim)
            .transpose(1, 2)
        )
        # (B, Hkv, T, D)
        k = (
            self.k_proj(x)
            .view(B, T, self.n_kv_heads, self.head_dim)
            .transpose(1, 2)
        )
        # (B, Hkv, T, D)
        v = (
            self.v_proj(x)
            .view(B, T, self.n_kv_heads, self.head_dim)
            .transpose(1, 2)
        )
        if rope is not None:
            # rotate by position (precomputed angles)
            q, k = rotate(q, *rope), rotate(k, *rope)
        elif self.rope_theta is not None:
            q = apply_rope(q, positions, self.rope_theta)  # rotate by position
            k = apply_rope(k, positions, self.rope_theta)
        if cache is not None:
            # (B, Hkv, S, D): the past and the new keys
            k, v = cache.update(k, v)
            if key_mask is not None:  # a rolling cache returns the last S only
                key_mask = key_mask[:, key_mask.shape[1] - k.shape[2] :]
        # (B, Hq, T, D)
        y = attention(
            q, k, v, causal=True, window=self.window, impl=impl,
            key_mask=key_mask,  # None, or padding in a batch
        )
        # heads side by side
        y = y.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim)
        return self.o_proj(y)  # (B, T, C)
# --8<-- [end:self_attention]
