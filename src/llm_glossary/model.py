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

import json
import math
import struct
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import positive_int as _positive_int
from .attention import KVCache, RollingKVCache, SelfAttention
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


class CheckpointError(ValueError):
    """A checkpoint file is missing, malformed, or does not fit the configuration."""


# --8<-- [start:ffn_rule]
def llama_ffn_hidden(dim: int, multiplier: float | None = None, multiple_of: int = 256) -> int:
    """Feed-forward width by Llama's rule: 2/3 · 4 · dim, times a multiplier, rounded up.

    SwiGLU has three matrices instead of two, so Llama shrinks the usual 4 · dim by 2/3 to
    keep the parameter count, then rounds up to a multiple of ``multiple_of``.

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
        ffn_hidden: feed-forward width; None → Llama's rule from ffn_multiplier and multiple_of.
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
        for name in ("vocab_size", "dim", "n_layers", "n_heads", "max_seq_len", "multiple_of"):
            _positive_int(getattr(self, name), name)
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        _positive_int(self.n_kv_heads, "n_kv_heads")
        if self.dim % self.n_heads:
            raise ValueError(f"dim={self.dim} must be divisible by n_heads={self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads={self.n_heads} must be a multiple of n_kv_heads={self.n_kv_heads}")
        if (self.dim // self.n_heads) % 2:
            raise ValueError(f"head size dim / n_heads = {self.dim // self.n_heads} must be even for RoPE")
        if self.sliding_window is not None:
            _positive_int(self.sliding_window, "sliding_window")
        if self.ffn_hidden is None:
            self.ffn_hidden = llama_ffn_hidden(self.dim, self.ffn_multiplier, self.multiple_of)
        _positive_int(self.ffn_hidden, "ffn_hidden")
        if not self.norm_eps > 0:
            raise ValueError(f"norm_eps must be > 0, got {self.norm_eps!r}")
        if not self.rope_theta > 0:
            raise ValueError(f"rope_theta must be > 0, got {self.rope_theta!r}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @classmethod
    def from_preset(cls, name: str) -> "LlamaConfig":
        """A published configuration: see ``PRESETS`` for names and sources."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
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
    """Number of parameters, from the configuration alone (nothing is allocated).

    Examples:
        >>> count_parameters(LlamaConfig.from_preset("llama3-8b"))
        8030261248
    """
    C, V, F_ = config.dim, config.vocab_size, config.ffn_hidden
    D, Hq, Hkv = config.head_dim, config.n_heads, config.n_kv_heads
    attention = C * Hq * D + 2 * C * Hkv * D + Hq * D * C  # q, k, v, o projections
    feed_forward = 3 * C * F_  # gate, up, down
    norms = 2 * C  # before attention and before the feed-forward
    per_layer = attention + feed_forward + norms
    embedding = V * C
    head = 0 if config.tie_embeddings else V * C
    return embedding + config.n_layers * per_layer + C + head  # + the final norm
# --8<-- [end:count]


# --8<-- [start:model]
class FeedForward(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x)), (B, T, C) -> (B, T, C)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))  # (B, T, F) -> (B, T, C)


class Block(nn.Module):
    """One decoder layer: pre-norm attention and pre-norm feed-forward, each with a residual."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.dim, config.norm_eps)
        self.self_attn = SelfAttention(
            config.dim, config.n_heads, config.n_kv_heads, window=config.sliding_window, rope_theta=config.rope_theta
        )
        self.post_attention_layernorm = RMSNorm(config.dim, config.norm_eps)
        self.mlp = FeedForward(config.dim, config.ffn_hidden)

    def forward(self, x: torch.Tensor, *, positions: torch.Tensor, cache=None, impl: str = "auto", rope=None) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), positions=positions, cache=cache, impl=impl, rope=rope)  # (B, T, C)
        return x + self.mlp(self.post_attention_layernorm(x))  # (B, T, C)


class Llama(nn.Module):
    """The decoder: token ids (B, T) -> next-token logits (B, T, V)."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        if not isinstance(config, LlamaConfig):
            raise ValueError(f"Llama needs a LlamaConfig, got {type(config).__name__}")
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.dim)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.dim, config.norm_eps)
        self.lm_head = nn.Linear(config.dim, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight

    def forward(self, idx: torch.Tensor, *, caches: list | None = None, impl: str = "auto", last_only: bool = False) -> torch.Tensor:
        """Logits for every position (B, T, V), or for the last one (B, 1, V) with ``last_only``.

        With ``caches``, idx holds only the new tokens.
        """
        self._check_idx(idx, caches)
        B, T = idx.shape
        start = caches[0].length if caches else 0
        positions = torch.arange(start, start + T, device=idx.device)  # (T,)
        rope = rope_cos_sin(positions, self.config.head_dim, self.config.rope_theta)  # once for every layer
        x = self.embed_tokens(idx)  # (B, T, C)
        for i, layer in enumerate(self.layers):
            x = layer(x, positions=positions, cache=caches[i] if caches else None, impl=impl, rope=rope)  # (B, T, C)
        if last_only:
            x = x[:, -1:]  # generation needs only the next token's logits
        return self.lm_head(self.norm(x))  # (B, T, V)
# --8<-- [end:model]

    def _check_idx(self, idx: torch.Tensor, caches) -> None:
        if not isinstance(idx, torch.Tensor) or idx.dim() != 2 or idx.dtype not in (torch.int64, torch.int32):
            got = f"shape {tuple(idx.shape)} dtype {idx.dtype}" if isinstance(idx, torch.Tensor) else type(idx).__name__
            raise ValueError(f"expected token ids of shape (B, T) and dtype int64, got {got}")
        if idx.shape[1] == 0:
            raise ValueError("expected at least one token, got T = 0")
        start = caches[0].length if caches else 0
        if start + idx.shape[1] > self.config.max_seq_len:
            raise ValueError(
                f"sequence of {start + idx.shape[1]} tokens is longer than max_seq_len={self.config.max_seq_len}"
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
    ) -> torch.Tensor:
        """Continue each prompt by up to ``max_new_tokens`` tokens.

        Args:
            idx: prompts (B, T) of token ids.
            max_new_tokens: how many tokens to add at most.
            temperature: 0 picks the most likely token (greedy); above 0 samples from
                softmax(logits / temperature).
            top_k: sample only among the k most likely tokens.
            top_p: sample only among the most likely tokens whose probabilities add up to p.
            stop_tokens: ids that end a sequence (the stop token is kept). A finished row is
                padded with its stop token until every row has finished.
            generator: random generator for reproducible sampling.
            use_cache: decode with a KV cache (True) or recompute the whole sequence at every
                step (False, for comparison).

        Returns:
            (B, T + n) ids: the prompts followed by the n ≤ max_new_tokens new tokens.
        """
        _check_sampling(max_new_tokens, temperature, top_k, top_p)
        stop = torch.tensor(sorted(set(int(t) for t in stop_tokens)), dtype=torch.long, device=idx.device)
        self._check_idx(idx, None)
        B, T = idx.shape
        if T + max_new_tokens > self.config.max_seq_len:
            raise ValueError(
                f"prompt of {T} tokens + max_new_tokens={max_new_tokens} exceeds max_seq_len={self.config.max_seq_len}"
            )
        was_training = self.training
        self.eval()
        caches = self.new_caches(B, T + max_new_tokens) if use_cache else None
        out = idx
        finished = torch.zeros(B, dtype=torch.bool, device=idx.device)
        last_stop = torch.zeros(B, dtype=torch.long, device=idx.device)
        step_input = idx
        for _ in range(max_new_tokens):
            logits = self(step_input if use_cache else out, caches=caches, last_only=True)[:, -1, :].float()  # (B, V)
            next_id = _pick(logits, temperature, top_k, top_p, generator)  # (B,)
            next_id = torch.where(finished, last_stop, next_id)  # finished rows repeat their stop token
            out = torch.cat([out, next_id[:, None]], dim=1)  # (B, T + 1)
            step_input = next_id[:, None]
            if stop.numel():
                hit = torch.isin(next_id, stop) & ~finished
                last_stop = torch.where(hit, next_id, last_stop)
                finished |= hit
                if bool(finished.all()):
                    break
        self.train(was_training)
        return out
    # --8<-- [end:generate]

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

    def load_hf_state_dict(self, state: dict[str, torch.Tensor], *, source: str = "checkpoint") -> None:
        """Load weights named as by Hugging Face; every tensor's shape is checked by name."""
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
                    f"{source}: tensor {name} has shape {tuple(got.shape)}, but the config needs {tuple(want.shape)}"
                )
            renamed[name[len("model.") :] if name.startswith("model.") else name] = got
        if self.config.tie_embeddings:
            renamed["lm_head.weight"] = renamed["embed_tokens.weight"]
        self.load_state_dict(renamed)

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
        """Write ``config.json`` (Hugging Face style) and ``model.safetensors`` into a folder."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        hf = config_to_hf_dict(self.config)
        hf["torch_dtype"] = str(self.lm_head.weight.dtype).removeprefix("torch.")
        (folder / "config.json").write_text(json.dumps(hf, indent=2) + "\n", encoding="utf-8")
        save_safetensors(self.hf_state_dict(), folder / "model.safetensors", metadata={"format": "pt"})
        return folder

    @classmethod
    def load(cls, folder: str | Path, *, device: torch.device | str | None = None) -> "Llama":
        """Read a folder written by ``save`` (or a Llama/Mistral ``save_pretrained`` folder)."""
        folder = Path(folder)
        config_path = folder / "config.json"
        try:
            hf = json.loads(config_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CheckpointError(f"{config_path}: no such file") from None
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{config_path}: not valid JSON ({e.msg} at line {e.lineno})") from None
        config = config_from_hf_dict(hf, source=str(config_path))
        weights = folder / "model.safetensors"
        state = load_safetensors(weights)
        dtypes = {t.dtype for t in state.values()}
        model = cls(config).to(dtypes.pop() if len(dtypes) == 1 else torch.float32)
        model.load_hf_state_dict(state, source=str(weights))
        return model.to(device) if device is not None else model


def _check_sampling(max_new_tokens, temperature, top_k, top_p) -> None:
    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    if not (isinstance(temperature, (int, float)) and temperature >= 0 and math.isfinite(temperature)):
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}")
    if top_k is not None:
        _positive_int(top_k, "top_k")
    if top_p is not None and not (isinstance(top_p, (int, float)) and 0 < top_p <= 1):
        raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")


# --8<-- [start:pick]
def _pick(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None, generator) -> torch.Tensor:
    """Next token per row from (B, V) logits: argmax when temperature is 0, else a sample."""
    if temperature == 0:
        return logits.argmax(dim=-1)  # greedy
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1): the k-th largest
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = torch.softmax(sorted_logits, dim=-1)
        drop = probs.cumsum(dim=-1) - probs >= top_p  # tokens after the mass already reached p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
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


def config_from_hf_dict(hf: dict, *, source: str = "config") -> LlamaConfig:
    """Read a Llama/Mistral config.json dictionary; refuse what this model cannot represent."""
    model_type = hf.get("model_type")
    if model_type not in ("llama", "mistral"):
        raise CheckpointError(f"{source}: model_type must be 'llama' or 'mistral', got {model_type!r}")
    try:
        dim, heads = int(hf["hidden_size"]), int(hf["num_attention_heads"])
        rope = hf.get("rope_parameters") or {}
        if isinstance(hf.get("rope_scaling"), dict) and hf["rope_scaling"].get("rope_type", hf["rope_scaling"].get("type")) not in (None, "default"):
            rope = {**hf["rope_scaling"], **rope}
        if rope.get("rope_type", "default") != "default":
            raise CheckpointError(f"{source}: RoPE scaling {rope.get('rope_type')!r} is not supported (only the default RoPE)")
        theta = rope.get("rope_theta", hf.get("rope_theta", 10000.0))
        head_dim = hf.get("head_dim") or dim // heads
        if head_dim != dim // heads:
            raise CheckpointError(f"{source}: head_dim={head_dim} differs from hidden_size / num_attention_heads = {dim // heads}")
        for flag in ("attention_bias", "mlp_bias"):
            if hf.get(flag):
                raise CheckpointError(f"{source}: {flag}=true is not supported")
        if hf.get("hidden_act", "silu") != "silu":
            raise CheckpointError(f"{source}: hidden_act must be 'silu', got {hf['hidden_act']!r}")
        window = hf.get("sliding_window") if model_type == "mistral" else None
        return LlamaConfig(
            vocab_size=int(hf["vocab_size"]),
            dim=dim,
            n_layers=int(hf["num_hidden_layers"]),
            n_heads=heads,
            n_kv_heads=int(hf.get("num_key_value_heads") or heads),
            ffn_hidden=int(hf["intermediate_size"]),
            norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            rope_theta=float(theta),
            max_seq_len=int(hf.get("max_position_embeddings", 2048)),
            sliding_window=int(window) if window else None,
            tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        )
    except KeyError as e:
        raise CheckpointError(f"{source}: missing field {e.args[0]!r}") from None
    except (TypeError, ValueError) as e:
        if isinstance(e, CheckpointError):
            raise
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


# ---------------------------------------------------------------------- safetensors

_ST_DTYPES = {
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.float64: "F64",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}
_ST_NAMES = {v: k for k, v in _ST_DTYPES.items()}


# --8<-- [start:safetensors]
def save_safetensors(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Write tensors in the safetensors format: an 8-byte header size, a JSON header, raw bytes.

    The file is written to a temporary name first and renamed, so an interrupted save
    never leaves a half-written checkpoint in place of a good one.
    """
    path = Path(path)
    header: dict[str, object] = {"__metadata__": dict(metadata or {})}
    blobs, offset = [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        if t.dtype not in _ST_DTYPES:
            raise ValueError(f"tensor {name} has dtype {t.dtype}, which safetensors cannot store here")
        data = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""  # little-endian raw bytes
        header[name] = {"dtype": _ST_DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    head = json.dumps(header, separators=(",", ":")).encode("utf-8")
    head += b" " * (-len(head) % 8)  # pad so the data starts 8-byte aligned
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for data in blobs:
            f.write(data)
    tmp.replace(path)


def load_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file (no pickle: only a JSON header and raw tensor bytes)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    if len(raw) < 8:
        raise CheckpointError(f"{path}: too short to be a safetensors file ({len(raw)} bytes)")
    (n,) = struct.unpack("<Q", raw[:8])
    if n > len(raw) - 8:
        raise CheckpointError(f"{path}: header size {n} exceeds the file ({len(raw)} bytes): not a safetensors file")
    try:
        header = json.loads(raw[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(f"{path}: header is not valid JSON: not a safetensors file") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: header must be a JSON object")
    header.pop("__metadata__", None)
    data = memoryview(raw)[8 + n :]
    out = {}
    for name, info in header.items():
        try:
            dtype = _ST_NAMES[info["dtype"]]
            shape = [int(s) for s in info["shape"]]
            begin, end = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path}: tensor {name}: malformed header entry {info!r}") from None
        itemsize = torch.empty(0, dtype=dtype).element_size()
        if not 0 <= begin <= end <= len(data) or end - begin != math.prod(shape) * itemsize:
            raise CheckpointError(f"{path}: tensor {name}: byte range {begin}..{end} does not fit shape {shape} {info['dtype']}")
        buf = bytearray(data[begin:end])
        t = torch.frombuffer(buf, dtype=torch.uint8) if buf else torch.empty(0, dtype=torch.uint8)
        out[name] = t.view(dtype).reshape(shape)
    return out
# --8<-- [end:safetensors]
