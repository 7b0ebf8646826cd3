"""A Llama-3-style decoder assembled from the project's own parts.

Token embedding → n_layers × [RMSNorm → self-attention (GQA, RoPE, optional sliding
window) → residual, RMSNorm → SwiGLU feed-forward → residual] → RMSNorm → linear head.
The pieces are the ones the glossary pages explain (``norm.RMSNorm``,
``attention.SelfAttention``, ``position.apply_rope``); nothing is implemented twice.

Parameter names follow Hugging Face ``LlamaForCausalLM`` / ``MistralForCausalLM``, so
weights move between the two by name (``from_transformers`` / ``to_transformers``) and
``save`` writes a folder (config.json + model.safetensors) that transformers can load.
Loading reads safetensors only: it never unpickles anything.

Sources: Llama (Touvron et al., 2023, arXiv:2302.13971), Llama 2 (arXiv:2307.09288),
Llama 3 (Grattafiori et al., 2024, arXiv:2407.21783), Mistral 7B (arXiv:2310.06825),
SwiGLU (Shazeer, 2020, arXiv:2002.05202); Meta's reference code (github.com/meta-llama/llama3,
model.py) for the feed-forward width rule.

Shapes: idx (B, T) token ids; activations (B, T, C); logits (B, T, V).
"""

from __future__ import annotations

import contextlib
import math
import operator
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import finite_number as _finite_number
from ._checks import positive_int as _positive_int
from .checkpoint import (
    CheckpointError,
    atomic_folder,
    atomic_write_json,
    check_shapes,
    load_safetensors,
    read_folder,
    read_json,
    read_safetensors_header,
    save_safetensors,
)
from .attention import KVCache, RollingKVCache, SelfAttention, _check_key_mask
from .norm import RMSNorm
from .position import rope_cos_sin

__all__ = [
    "LlamaConfig",
    "PRESETS",
    "count_parameters",
    "FeedForward",
    "Block",
    "Llama",
    "CheckpointError",
    "save_safetensors",
    "load_safetensors",
]


# --8<-- [start:ffn_rule]
def llama_ffn_hidden(
    dim: int, multiplier: float | None = None, multiple_of: int = 256
) -> int:
    """Feed-forward width by Llama's rule: 2/3 · 4 · dim, times a multiplier,
    rounded up.

    SwiGLU has three matrices instead of two, so Llama shrinks the usual 4 · dim
    by 2/3 to keep the parameter count, then rounds up to a multiple of
    ``multiple_of``.

    Examples:
        >>> llama_ffn_hidden(4096, 1.3, 1024)  # Llama 3 8B
        14336
    """
    hidden = int(2 * (4 * dim) / 3)
    if multiplier is not None:
        hidden = int(multiplier * hidden)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)
# --8<-- [end:ffn_rule]


# --8<-- [start:config]
@dataclass
class LlamaConfig:
    """Sizes of a Llama-style decoder.

    Attributes:
        vocab_size: V, tokens in the vocabulary.
        dim: C, the model width.
        n_layers: number of transformer blocks.
        n_heads: query heads Hq; head size D = dim / n_heads.
        n_kv_heads: key/value heads Hkv (GQA when smaller than n_heads).
        ffn_hidden: feed-forward width; None → Llama's rule from ffn_multiplier
            and multiple_of.
        norm_eps: RMSNorm epsilon.
        rope_theta: RoPE base (Llama 3: 500,000; Llama 2 and Mistral: 10,000).
        max_seq_len: longest sequence (prompt plus generated tokens).
        sliding_window: W for sliding-window attention (Mistral), or None.
        tie_embeddings: share the embedding matrix with the output head.
    """

    vocab_size: int = 32000
    dim: int = 4096
    n_layers: int = 32
    n_heads: int = 32
    n_kv_heads: int | None = None
    ffn_hidden: int | None = None
    norm_eps: float = 1e-5
    rope_theta: float = 500000.0
    max_seq_len: int = 8192
    sliding_window: int | None = None
    tie_embeddings: bool = False
    ffn_multiplier: float | None = None
    multiple_of: int = 256

    def __post_init__(self) -> None:
        for name in (
            "vocab_size",
            "dim",
            "n_layers",
            "n_heads",
            "max_seq_len",
            "multiple_of",
        ):
            _positive_int(getattr(self, name), name)
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        _positive_int(self.n_kv_heads, "n_kv_heads")
        if self.dim % self.n_heads:
            raise ValueError(
                f"dim={self.dim} must be divisible by n_heads={self.n_heads}"
            )
        if self.n_heads % self.n_kv_heads:
            raise ValueError(
                f"n_heads={self.n_heads} must be a multiple of "
                f"n_kv_heads={self.n_kv_heads}"
            )
        if (self.dim // self.n_heads) % 2:
            raise ValueError(
                f"head size dim / n_heads = {self.dim // self.n_heads} must be "
                f"even for RoPE"
            )
        if self.sliding_window is not None:
            _positive_int(self.sliding_window, "sliding_window")
        if self.ffn_hidden is None:
            self.ffn_hidden = llama_ffn_hidden(
                self.dim, self.ffn_multiplier, self.multiple_of
            )
        _positive_int(self.ffn_hidden, "ffn_hidden")
        _finite_number(self.norm_eps, "norm_eps")
        _finite_number(self.rope_theta, "rope_theta")
        if not isinstance(self.tie_embeddings, bool):
            raise ValueError(
                "tie_embeddings must be True or False, "
                f"got {self.tie_embeddings!r}"
            )

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @classmethod
    def from_preset(cls, name: str) -> "LlamaConfig":
        """A published configuration: see ``PRESETS`` for names and sources."""
        if name not in PRESETS:
            raise ValueError(
                f"unknown preset {name!r}; choose one of {sorted(PRESETS)}"
            )
        return cls(**PRESETS[name])

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "LlamaConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown LlamaConfig fields {sorted(unknown)}")
        return cls(**data)
# --8<-- [end:config]


# Published configurations. Sources: each model's params.json / config.json on the Hugging Face
# Hub and the papers: Llama 2 (arXiv:2307.09288, table 1), Llama 3 (arXiv:2407.21783, table 3),
# Mistral 7B (arXiv:2310.06825, table 1). ffn_hidden follows from ffn_multiplier and multiple_of
# exactly as in Meta's reference code (Llama 3 8B: 14,336; 70B: 28,672; 405B: 53,248).
PRESETS: dict[str, dict] = {
    "llama2-7b": dict(vocab_size=32000, dim=4096, n_layers=32, n_heads=32, n_kv_heads=32, multiple_of=256, rope_theta=10000.0, max_seq_len=4096),
    "llama2-70b": dict(vocab_size=32000, dim=8192, n_layers=80, n_heads=64, n_kv_heads=8, ffn_multiplier=1.3, multiple_of=4096, rope_theta=10000.0, max_seq_len=4096),
    "llama3-8b": dict(vocab_size=128256, dim=4096, n_layers=32, n_heads=32, n_kv_heads=8, ffn_multiplier=1.3, multiple_of=1024, rope_theta=500000.0, max_seq_len=8192),
    "llama3-70b": dict(vocab_size=128256, dim=8192, n_layers=80, n_heads=64, n_kv_heads=8, ffn_multiplier=1.3, multiple_of=4096, rope_theta=500000.0, max_seq_len=8192),
    "llama3.1-405b": dict(vocab_size=128256, dim=16384, n_layers=126, n_heads=128, n_kv_heads=8, ffn_multiplier=1.2, multiple_of=4096, rope_theta=500000.0, max_seq_len=131072),
    "mistral-7b": dict(vocab_size=32000, dim=4096, n_layers=32, n_heads=32, n_kv_heads=8, ffn_hidden=14336, rope_theta=10000.0, max_seq_len=32768, sliding_window=4096),
}


# --8<-- [start:count]
def count_parameters(config: LlamaConfig) -> int:
    """Number of parameters, from the configuration alone (nothing is
    allocated).

    Examples:
        >>> count_parameters(LlamaConfig.from_preset("llama3-8b"))
        8030261248
    """
    C, V, F_ = config.dim, config.vocab_size, config.ffn_hidden
    D, Hq, Hkv = config.head_dim, config.n_heads, config.n_kv_heads
    # q, k, v, o projections
    attention = C * Hq * D + 2 * C * Hkv * D + Hq * D * C
    feed_forward = 3 * C * F_  # gate, up, down
    norms = 2 * C  # before attention and before the feed-forward
    per_layer = attention + feed_forward + norms
    embedding = V * C
    head = 0 if config.tie_embeddings else V * C
    # + the final norm
    return embedding + config.n_layers * per_layer + C + head
# --8<-- [end:count]


# --8<-- [start:model]
# --8<-- [start:feed_forward]
class FeedForward(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x)), (B, T, C) -> (B, T, C)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, T, F) -> (B, T, C)
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
# --8<-- [end:feed_forward]


class Block(nn.Module):
    """One decoder layer: pre-norm attention and pre-norm feed-forward, each
    with a residual."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.dim, config.norm_eps)
        self.self_attn = SelfAttention(
            config.dim,
            config.n_heads,
            config.n_kv_heads,
            window=config.sliding_window,
            rope_theta=config.rope_theta,
        )
        self.post_attention_layernorm = RMSNorm(config.dim, config.norm_eps)
        self.mlp = FeedForward(config.dim, config.ffn_hidden)

    def forward(
        self,
        x: torch.Tensor,
        *,
        positions: torch.Tensor,
        cache=None,
        impl: str = "auto",
        rope=None,
        key_mask=None,
    ) -> torch.Tensor:
        # (B, T, C)
        x = x + self.self_attn(
            self.input_layernorm(x),
            positions=positions,
            cache=cache,
            impl=impl,
            rope=rope,
            key_mask=key_mask,
        )
        return x + self.mlp(self.post_attention_layernorm(x))  # (B, T, C)


class Llama(nn.Module):
    """The decoder: token ids (B, T) -> next-token logits (B, T, V)."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        if not isinstance(config, LlamaConfig):
            raise ValueError(
                f"Llama needs a LlamaConfig, got {type(config).__name__}"
            )
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.dim)
        self.layers = nn.ModuleList(
            Block(config) for _ in range(config.n_layers)
        )
        self.norm = RMSNorm(config.dim, config.norm_eps)
        self.lm_head = nn.Linear(config.dim, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight

    def forward(
        self,
        idx: torch.Tensor,
        *,
        caches: list | None = None,
        impl: str = "auto",
        last_only: bool = False,
        logits_at: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits for every position (B, T, V), for the last one (B, 1, V)
        with ``last_only``, or (N, V) at the N positions where the bool
        mask ``logits_at`` (B, T) is True.

        With ``caches``, idx holds only the new tokens. ``attention_mask``
        (B, S), S = the cached and the new tokens, is False at padding (on the
        left): no real token attends to padding and each row's positions count
        only its real tokens, so a row's logits at its real positions are those
        it gets alone.
        """
        self._check_idx(idx, caches)
        if logits_at is not None:
            self._check_logits_at(idx, logits_at, last_only)
        B, T = idx.shape
        start = caches[0].length if caches else 0
        positions = torch.arange(start, start + T, device=idx.device)  # (T,)
        if attention_mask is not None:  # padding: (B, T), real tokens only
            positions = self._padded_positions(attention_mask, idx, caches)
        # once for every layer
        rope = rope_cos_sin(
            positions, self.config.head_dim, self.config.rope_theta
        )
        x = self.embed_tokens(idx)  # (B, T, C)
        for i, layer in enumerate(self.layers):
            # (B, T, C)
            x = layer(
                x,
                positions=positions,
                cache=caches[i] if caches else None,
                impl=impl,
                rope=rope,
                key_mask=attention_mask,
            )
        if last_only:
            x = x[:, -1:]  # generation needs only the next token's logits
        elif logits_at is not None:
            # training needs logits only where a target is: (N, C)
            x = x[logits_at]
        return self.lm_head(self.norm(x))  # (B, T, V)

    # --8<-- [end:model]

    @staticmethod
    def _check_logits_at(idx: torch.Tensor, mask, last_only: bool) -> None:
        if last_only:
            raise ValueError("pass either last_only or logits_at, not both")
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.shape != idx.shape:
            got = f"shape {tuple(mask.shape)} dtype {mask.dtype}" if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise ValueError(f"logits_at must be a bool mask of the ids' shape {tuple(idx.shape)}, got {got}")

    def _padded_positions(self, mask, idx: torch.Tensor, caches) -> torch.Tensor:
        """(B, T) positions of the new tokens ``idx`` that count only real ones: a
        row's tokens are at 0, 1, 2, ... whatever padding precedes them."""
        B, T = idx.shape
        start = caches[0].length if caches else 0
        self._check_attention_mask(mask, B, start + T, idx.device)
        return (mask.long().cumsum(-1) - 1).clamp(min=0)[:, start:]

    @staticmethod
    def _check_attention_mask(mask, B: int, S: int, device) -> None:
        _check_key_mask(mask, B, S, device, name="attention_mask", of="the token ids",
                        what=" (the cached and the new tokens)")

    def _check_idx(self, idx: torch.Tensor, caches) -> None:
        if not isinstance(idx, torch.Tensor) or idx.dim() != 2 or idx.dtype not in (torch.int64, torch.int32):
            got = f"shape {tuple(idx.shape)} dtype {idx.dtype}" if isinstance(idx, torch.Tensor) else type(idx).__name__
            raise ValueError(f"expected token ids of shape (B, T) and dtype int64, got {got}")
        if idx.shape[1] == 0:
            raise ValueError("expected at least one token, got T = 0")
        start = caches[0].length if caches else 0
        if start + idx.shape[1] > self.config.max_seq_len:
            raise ValueError(
                f"sequence of {start + idx.shape[1]} tokens is longer than "
                f"max_seq_len={self.config.max_seq_len}"
            )
        if idx.numel():
            lo, hi = int(idx.min()), int(idx.max())
            if lo < 0 or hi >= self.config.vocab_size:
                bad = lo if lo < 0 else hi
                raise ValueError(f"token id {bad} is outside the vocabulary 0 .. {self.config.vocab_size - 1}")
        if caches is not None and len(caches) != len(self.layers):
            raise ValueError(f"need one cache per layer ({len(self.layers)}), got {len(caches)}")

    # ------------------------------------------------------------------ generation

    def new_caches(self, batch: int, max_len: int | None = None) -> list[KVCache | RollingKVCache]:
        """One empty KV cache per layer (rolling ones when the model has a sliding window)."""
        weight = self.lm_head.weight
        max_len = self.config.max_seq_len if max_len is None else max_len
        return [layer.self_attn.new_cache(batch, max_len, dtype=weight.dtype, device=weight.device) for layer in self.layers]

    # --8<-- [start:generate]
    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        *,
        temperature: float = 0.0,
        top_k: int | None = None,
        top_p: float | None = None,
        stop_tokens: Iterable[int] = (),
        generator: torch.Generator | None = None,
        use_cache: bool = True,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Continue each prompt by up to ``max_new_tokens`` tokens.

        Args:
            idx: prompts (B, T) of token ids.
            max_new_tokens: how many tokens to add at most.
            temperature: 0 picks the most likely token (greedy); above 0 samples
                from softmax(logits / temperature).
            top_k: sample only among the k most likely tokens.
            top_p: sample only among the most likely tokens whose probabilities
                add up to p.
            stop_tokens: ids that end a sequence (the stop token is kept). A
                finished row is padded with its stop token until every row has
                finished.
            generator: random generator for reproducible sampling.
            use_cache: decode with a KV cache (True) or recompute the whole
                sequence at every step (False, for comparison).
            attention_mask: (B, T) bool, False at padding, for prompts of
                unequal length padded on the left (every row's last prompt
                token is real; T counts the padding). Each row is continued as
                it would be alone.

        Returns:
            (B, T + n) ids: the prompts followed by the n ≤ max_new_tokens new
            tokens.
        """
        _check_sampling(max_new_tokens, temperature, top_k, top_p)
        self._check_idx(idx, None)
        stop = torch.tensor(
            self._stop_ids(stop_tokens), dtype=torch.long, device=idx.device
        )
        B, T = idx.shape
        if B == 0:
            raise ValueError(
                "expected at least one prompt, got a batch of 0 "
                f"(idx of shape {tuple(idx.shape)})"
            )
        if T + max_new_tokens > self.config.max_seq_len:
            raise ValueError(
                f"prompt of {T} tokens + max_new_tokens={max_new_tokens} "
                f"exceeds max_seq_len={self.config.max_seq_len}"
            )
        if attention_mask is not None:
            self._check_left_padding(attention_mask, B, T, idx.device)
        was_training = self.training
        self.eval()
        try:
            return self._generate(
                idx, max_new_tokens, temperature, top_k, top_p, stop,
                generator, use_cache, attention_mask,
            )
        finally:
            self.train(was_training)  # even when interrupted or failing

    def _generate(
        self, idx, max_new_tokens, temperature, top_k, top_p, stop,
        generator, use_cache, mask=None,
    ) -> torch.Tensor:
        B, T = idx.shape
        caches = self.new_caches(B, T + max_new_tokens) if use_cache else None
        out = idx
        finished = torch.zeros(B, dtype=torch.bool, device=idx.device)
        last_stop = torch.zeros(B, dtype=torch.long, device=idx.device)
        step_input = idx
        real = torch.ones(B, 1, dtype=torch.bool, device=idx.device)
        # --8<-- [start:decode_loop]
        for _ in range(max_new_tokens):
            # (B, V)
            logits = self(
                step_input if use_cache else out, caches=caches, last_only=True,
                attention_mask=mask,  # None, or padding in the prompts
            )[:, -1, :].float()
            # (B,)
            next_id = _pick(logits, temperature, top_k, top_p, generator)
            # finished rows repeat their stop token
            next_id = torch.where(finished, last_stop, next_id)
            out = torch.cat([out, next_id[:, None]], dim=1)  # (B, T + 1)
            step_input = next_id[:, None]
            if mask is not None:
                mask = torch.cat([mask, real], dim=1)  # the new token is real
            if stop.numel():
                hit = torch.isin(next_id, stop) & ~finished
                last_stop = torch.where(hit, next_id, last_stop)
                finished |= hit
                if bool(finished.all()):
                    break
        # --8<-- [end:decode_loop]
        return out

    # --8<-- [end:generate]

    def _check_left_padding(self, mask, B: int, T: int, device) -> None:
        self._check_attention_mask(mask, B, T, device)
        if not bool(mask[:, -1].all()):
            rows = (~mask[:, -1]).nonzero().flatten().tolist()
            raise ValueError(
                f"attention_mask: the prompts must be padded on the left (each row's last "
                f"token real), rows {rows[:10]} end in padding"
            )

    def _stop_ids(self, stop_tokens) -> list[int]:
        V = self.config.vocab_size
        if isinstance(stop_tokens, (str, bytes)) or not isinstance(stop_tokens, Iterable):
            raise ValueError(f"stop_tokens must be a list of token ids, got {type(stop_tokens).__name__} {stop_tokens!r}")
        ids = []
        for t in stop_tokens:
            try:
                if isinstance(t, bool) or (isinstance(t, torch.Tensor) and t.dtype == torch.bool):
                    raise TypeError
                i = operator.index(t)  # ints, NumPy ints, 0-d integer tensors; never 45.7 or "3"
            except TypeError:
                i = None
            if i is None or not 0 <= i < V:
                raise ValueError(f"stop token {t!r} is not a token id: expected ints in 0 .. {V - 1}")
            ids.append(i)
        return sorted(set(ids))

    # ------------------------------------------------------------------ Hugging Face interop

    def hf_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights under Hugging Face names (``model.layers.0.self_attn.q_proj.weight`` …)."""
        out = {}
        for name, tensor in self.state_dict().items():
            if name == "lm_head.weight":
                if not self.config.tie_embeddings:
                    out[name] = tensor
            else:
                out["model." + name] = tensor
        return out

    def load_hf_state_dict(self, state: dict[str, torch.Tensor], *, source: str = "checkpoint", assign: bool = False) -> None:
        """Load weights named as by Hugging Face; every tensor's shape is checked by name.

        With ``assign`` the tensors become the parameters (for a model built on the meta device).
        """
        own = self.state_dict()
        expected = {("model." + k if k != "lm_head.weight" else k): v for k, v in own.items()}
        if self.config.tie_embeddings:
            expected.pop("lm_head.weight")
            state = {k: v for k, v in state.items() if k != "lm_head.weight"}
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected) - {k for k in state if k.endswith("rotary_emb.inv_freq")})
        if missing:
            raise CheckpointError(f"{source}: missing tensors {missing[:5]}{' …' if len(missing) > 5 else ''}")
        if unexpected:
            raise CheckpointError(f"{source}: unexpected tensors {unexpected[:5]}{' …' if len(unexpected) > 5 else ''}")
        renamed = {}
        for name, want in expected.items():
            got = state[name]
            if tuple(got.shape) != tuple(want.shape):
                raise CheckpointError(
                    f"{source}: tensor {name} has shape {tuple(got.shape)}, "
                    f"but the config needs {tuple(want.shape)}"
                )
            renamed[name[len("model.") :] if name.startswith("model.") else name] = got
        if self.config.tie_embeddings:
            renamed["lm_head.weight"] = renamed["embed_tokens.weight"]
        self.load_state_dict(renamed, assign=assign)
        if self.config.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight

    @classmethod
    def from_transformers(cls, hf_model) -> "Llama":
        """Copy a ``LlamaForCausalLM`` or ``MistralForCausalLM`` (configuration and weights)."""
        config = config_from_transformers(hf_model.config)
        dtype = next(hf_model.parameters()).dtype
        model = cls(config).to(dtype)
        model.load_hf_state_dict(dict(hf_model.state_dict()), source=type(hf_model).__name__)
        return model

    def to_transformers(self):
        """A ``LlamaForCausalLM`` (or ``MistralForCausalLM`` when windowed) with the same weights."""
        import transformers

        hf_config = config_to_transformers(self.config)
        cls = transformers.MistralForCausalLM if self.config.sliding_window is not None else transformers.LlamaForCausalLM
        hf_model = cls(hf_config).to(self.lm_head.weight.dtype)
        result = hf_model.load_state_dict(self.hf_state_dict(), strict=False)
        allowed_missing = {"lm_head.weight"} if self.config.tie_embeddings else set()
        if set(result.missing_keys) - allowed_missing or result.unexpected_keys:
            raise RuntimeError(f"weights did not map onto {cls.__name__}: {result}")
        if self.config.tie_embeddings:
            hf_model.tie_weights()
        return hf_model.eval()

    # ------------------------------------------------------------------ files

    def save(self, folder: str | Path) -> Path:
        """Write ``config.json`` (Hugging Face style) and ``model.safetensors`` into a folder.

        The folder is replaced as a whole (``checkpoint.atomic_folder``): a reader, or a crash,
        sees the previous checkpoint or this one, never config.json of one and weights of the
        other. Other files already in the folder (a tokenizer, a README) are kept.
        """
        folder = Path(folder)
        hf = config_to_hf_dict(self.config)
        hf["torch_dtype"] = str(self.lm_head.weight.dtype).removeprefix("torch.")
        state = self.hf_state_dict()
        with atomic_folder(folder, carry_over=True) as tmp:
            atomic_write_json(tmp / "config.json", hf)
            save_safetensors(state, tmp / "model.safetensors", metadata={"format": "pt"})
        return folder

    @classmethod
    def load(cls, folder: str | Path, *, device: torch.device | str | None = None) -> "Llama":
        """Read a folder written by ``save`` (or a Llama/Mistral ``save_pretrained`` folder).

        Nothing is allocated before config.json is validated and every tensor's name and shape
        in the safetensors header matches what the config implies; the model is then built on
        the meta device and takes the loaded tensors in place.
        """
        return read_folder(folder, lambda f: cls._load_folder(f, device))

    @classmethod
    def _load_folder(cls, folder: Path, device) -> "Llama":
        config_path = folder / "config.json"
        config = config_from_hf_dict(read_json(config_path), source=str(config_path))
        weights = folder / "model.safetensors"
        infos = read_safetensors_header(weights)
        layers = {int(m.group(1)) for m in map(_LAYER.match, infos) if m}
        if layers != set(range(config.n_layers)):  # before listing n_layers × 9 expected names
            held = f"layers 0 … {max(layers)}" if layers == set(range(len(layers))) and layers else f"{len(layers)} layers"
            raise CheckpointError(
                f"{weights}: holds {held}, but {config_path} says num_hidden_layers={config.n_layers}"
            )
        expected = hf_tensor_shapes(config)
        if config.tie_embeddings and "lm_head.weight" in infos:  # transformers ignores it too
            expected["lm_head.weight"] = expected["model.embed_tokens.weight"]
        for name in infos:
            if name.endswith("rotary_emb.inv_freq"):  # older transformers saved this buffer
                expected[name] = infos[name].shape
        check_shapes(infos, expected, str(weights))
        dtypes = {info.dtype for info in infos.values()}
        bad = sorted(str(d) for d in dtypes - _MODEL_DTYPES)
        if bad:
            raise CheckpointError(f"{weights}: tensors of dtype {bad[0]}; expected one of float32, float16, bfloat16, float64")
        state = load_safetensors(weights, expected=expected)
        # Every shape now matches the file, so the model is no larger than the file. A large one
        # is built on the meta device (no memory, no random init) and takes the tensors in place;
        # a small one is built directly (the meta device's first use costs about a second).
        big = count_parameters(config) > _META_ABOVE
        with torch.device("meta") if big else contextlib.nullcontext():
            model = cls(config)
        dtype = dtypes.pop() if len(dtypes) == 1 else torch.float32
        state = {k: v.to(dtype) for k, v in state.items()}
        model.load_hf_state_dict(state, source=str(weights), assign=True)
        return model.to(device) if device is not None else model


_META_ABOVE = 20_000_000  # parameters; above this Llama.load builds the model on the meta device
_LAYER = re.compile(r"model\.layers\.(0|[1-9][0-9]{0,8})\.")
_MODEL_DTYPES = {torch.float32, torch.float16, torch.bfloat16, torch.float64}


def hf_tensor_shapes(config: LlamaConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor's Hugging Face name and shape for a configuration (nothing is allocated)."""
    C, V, F_ = config.dim, config.vocab_size, config.ffn_hidden
    q, kv = config.n_heads * config.head_dim, config.n_kv_heads * config.head_dim
    shapes = {"model.embed_tokens.weight": (V, C)}
    for i in range(config.n_layers):
        p = f"model.layers.{i}."
        shapes.update({
            p + "input_layernorm.weight": (C,),
            p + "self_attn.q_proj.weight": (q, C),
            p + "self_attn.k_proj.weight": (kv, C),
            p + "self_attn.v_proj.weight": (kv, C),
            p + "self_attn.o_proj.weight": (C, q),
            p + "post_attention_layernorm.weight": (C,),
            p + "mlp.gate_proj.weight": (F_, C),
            p + "mlp.up_proj.weight": (F_, C),
            p + "mlp.down_proj.weight": (C, F_),
        })
    shapes["model.norm.weight"] = (C,)
    if not config.tie_embeddings:
        shapes["lm_head.weight"] = (V, C)
    return shapes


def _check_sampling(max_new_tokens, temperature, top_k, top_p) -> None:
    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    if isinstance(temperature, bool) or not (isinstance(temperature, (int, float)) and temperature >= 0 and math.isfinite(temperature)):
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}")
    if top_k is not None:
        _positive_int(top_k, "top_k")
    if top_p is not None and (isinstance(top_p, bool) or not (isinstance(top_p, (int, float)) and 0 < top_p <= 1)):
        raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")


# --8<-- [start:pick]
def _pick(
    logits: torch.Tensor,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    generator,
) -> torch.Tensor:
    """Next token per row from (B, V) logits: argmax when temperature is 0, else
    a sample."""
    if temperature == 0:
        return logits.argmax(dim=-1)  # greedy
    scaled = logits / temperature
    # a tiny temperature overflowed: shift by the maximum, in float64
    if bool((~torch.isfinite(scaled) & torch.isfinite(logits)).any()):
        z = logits.double()
        scaled = (z - z.amax(dim=-1, keepdim=True)) / temperature
    logits = scaled
    if top_k is not None and top_k < logits.shape[-1]:
        # (B, 1): the k-th largest
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = torch.softmax(sorted_logits, dim=-1)
        # tokens after the mass already reached p
        drop = probs.cumsum(dim=-1) - probs >= top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(
            -1, order, sorted_logits
        )
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)  # (B,)
# --8<-- [end:pick]


# ---------------------------------------------------------------------- configurations


def config_to_hf_dict(config: LlamaConfig) -> dict:
    """A Hugging Face config.json dictionary (Llama, or Mistral when windowed)."""
    mistral = config.sliding_window is not None
    return {
        "architectures": ["MistralForCausalLM" if mistral else "LlamaForCausalLM"],
        "model_type": "mistral" if mistral else "llama",
        "vocab_size": config.vocab_size,
        "hidden_size": config.dim,
        "intermediate_size": config.ffn_hidden,
        "num_hidden_layers": config.n_layers,
        "num_attention_heads": config.n_heads,
        "num_key_value_heads": config.n_kv_heads,
        "head_dim": config.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": config.max_seq_len,
        "rms_norm_eps": config.norm_eps,
        "rope_theta": config.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": config.rope_theta},
        "sliding_window": config.sliding_window,
        "tie_word_embeddings": config.tie_embeddings,
        "attention_bias": False,
        "mlp_bias": False,
    }


def _hf_int(hf: dict, key: str, source: str, default=None, *, required: bool = True, nullable: bool = False):
    if key not in hf or (nullable and hf[key] is None):
        if required and key not in hf:
            raise CheckpointError(f"{source}: missing field {key!r} (a positive integer)")
        return default
    value = hf[key]
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise CheckpointError(f"{source}: field {key!r} must be a positive integer, got {value!r}")
    return value


def _hf_float(d: dict, key: str, source: str, default: float) -> float:
    value = d.get(key, default)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise CheckpointError(f"{source}: field {key!r} must be a finite number > 0, got {value!r}")
    return float(value)


def _hf_bool(hf: dict, key: str, source: str) -> bool:
    value = hf.get(key, False)
    if not isinstance(value, bool):
        raise CheckpointError(f"{source}: field {key!r} must be true or false, got {value!r}")
    return value


def config_from_hf_dict(hf: dict, *, source: str = "config") -> LlamaConfig:
    """Read a Llama/Mistral config.json dictionary strictly; refuse what this model cannot represent.

    Sizes must be positive integers, floats finite and positive, flags true or false; every
    error is a CheckpointError naming ``source`` and the field.
    """
    if not isinstance(hf, dict):
        raise CheckpointError(f"{source}: the top level must be a JSON object, got {type(hf).__name__}")
    model_type = hf.get("model_type")
    if model_type not in ("llama", "mistral"):
        raise CheckpointError(f"{source}: model_type must be 'llama' or 'mistral', got {model_type!r}")
    vocab = _hf_int(hf, "vocab_size", source)
    dim = _hf_int(hf, "hidden_size", source)
    ffn = _hf_int(hf, "intermediate_size", source)
    layers = _hf_int(hf, "num_hidden_layers", source)
    heads = _hf_int(hf, "num_attention_heads", source)
    kv_heads = _hf_int(hf, "num_key_value_heads", source, heads, required=False, nullable=True)
    max_len = _hf_int(hf, "max_position_embeddings", source, 2048, required=False)
    rope = {}
    for key in ("rope_scaling", "rope_parameters"):  # rope_parameters (transformers >= 5) wins
        value = hf.get(key)
        if value is not None and not isinstance(value, dict):
            raise CheckpointError(f"{source}: field {key!r} must be an object or null, got {value!r}")
        if value:
            kind = value.get("rope_type", value.get("type", "default"))
            if kind != "default":
                raise CheckpointError(f"{source}: {key}.rope_type {kind!r} is not supported (only the default RoPE)")
            rope.update(value)
    theta_source = rope if "rope_theta" in rope else hf
    theta = _hf_float(theta_source, "rope_theta", source, 10000.0)
    eps = _hf_float(hf, "rms_norm_eps", source, 1e-6)
    if dim % heads:
        raise CheckpointError(f"{source}: hidden_size={dim} must be divisible by num_attention_heads={heads}")
    head_dim = _hf_int(hf, "head_dim", source, dim // heads, required=False, nullable=True)
    if head_dim != dim // heads:
        raise CheckpointError(f"{source}: head_dim={head_dim} differs from hidden_size / num_attention_heads = {dim // heads}")
    for flag in ("attention_bias", "mlp_bias"):
        if _hf_bool(hf, flag, source):
            raise CheckpointError(f"{source}: {flag}=true is not supported")
    tied = _hf_bool(hf, "tie_word_embeddings", source)
    act = hf.get("hidden_act", "silu")
    if act != "silu":
        raise CheckpointError(f"{source}: field 'hidden_act' must be 'silu', got {act!r}")
    window = _hf_int(hf, "sliding_window", source, None, required=False, nullable=True) if model_type == "mistral" else None
    try:
        return LlamaConfig(
            vocab_size=vocab, dim=dim, n_layers=layers, n_heads=heads, n_kv_heads=kv_heads,
            ffn_hidden=ffn, norm_eps=eps, rope_theta=theta, max_seq_len=max_len,
            sliding_window=window, tie_embeddings=tied,
        )
    except ValueError as e:
        raise CheckpointError(f"{source}: {e}") from None


def config_from_transformers(hf_config) -> LlamaConfig:
    return config_from_hf_dict(hf_config.to_dict(), source=type(hf_config).__name__)


def config_to_transformers(config: LlamaConfig):
    import transformers

    d = config_to_hf_dict(config)
    cls = transformers.MistralConfig if config.sliding_window is not None else transformers.LlamaConfig
    kwargs = {k: v for k, v in d.items() if k not in ("architectures", "model_type", "rope_theta")}
    if config.sliding_window is None:
        kwargs.pop("sliding_window")
    hf = cls(**kwargs)
    hf._attn_implementation = "sdpa"
    return hf
