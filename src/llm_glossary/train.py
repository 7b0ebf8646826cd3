"""Training: next-token pretraining, dialog fine-tuning, evaluation and replies.

Plain PyTorch, one loop for both kinds of training:

* ``pretrain`` trains on windows of a 1-D token tensor (every next token is a target);
* ``finetune`` trains on dialogs encoded by ``llm_glossary.dialog.encode_dialog`` (by default
  only the assistant's content and its ``<|eot_id|>`` are targets) and padded by ``collate``.

Both use AdamW, a linear warm-up then a cosine decay of the learning rate, gradient clipping
and gradient accumulation. The loss of one optimizer step is the *sum* of the cross-entropy
over every target token of the step divided by the number of those target tokens, counted
over all micro-batches and, under ``torch.distributed``, over all processes. Averaging the
per-micro-batch means instead (what ``loss / accumulation_steps`` does) weighs a token of a
short micro-batch more than a token of a long one, so accumulation would no longer equal
one big batch; see the Hugging Face transformers fix for exactly this (PR #34191, 2024).

The caller chooses the device (CPU by default; "cuda" or "mps"); on CUDA the forward runs
under bf16 autocast. On CPU a run is deterministic for a seed: the data order and the
learning rate are pure functions of (seed, step), so two runs — or a run interrupted and
resumed from a checkpoint — give the same loss trace bit for bit.

The library prints nothing: progress goes to the ``on_step`` callback, results are returned.
"""

from __future__ import annotations

import codecs
import contextlib
import dataclasses
import math
import os
import random
import re
import shutil
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .dialog import TRAIN_ON

__all__ = [
    "TrainConfig",
    "StepInfo",
    "History",
    "Evaluation",
    "Reply",
    "Checkpointing",
    "learning_rate",
    "pretrain",
    "finetune",
    "evaluate",
    "reply",
    "resolve_device",
    "token_loss_sum",
    "shift_batch",
    "accumulate_gradients",
    "clip_gradients",
    "list_checkpoints",
    "read_trainer_state",
]

IGNORE = -100  # label of a position that is not a target (PyTorch's and Hugging Face's value)
LONG_DIALOGS = ("truncate", "drop")


# ---------------------------------------------------------------------- configuration

# --8<-- [start:config]
@dataclass(frozen=True)
class TrainConfig:
    """How to train: sizes of the batch, the schedule and the optimizer.

    Attributes:
        steps: optimizer steps.
        batch_size: sequences per optimizer step, over every process.
        micro_batch_size: sequences per forward pass; one step accumulates
            batch_size / (micro_batch_size × processes) micro-batches.
        seq_len: tokens per training sequence (the forward pass length).
        lr: peak learning rate, reached at the end of the warm-up.
        min_lr: learning rate of the last step (the cosine's floor).
        warmup_steps: steps of linear warm-up up to lr.
        weight_decay: AdamW's decoupled weight decay (weight matrices).
        betas: AdamW's moment coefficients.
        eps: AdamW's epsilon.
        grad_clip: largest global gradient norm (0: no clipping).
        seed: seeds the data order (nothing else in training is random).
        train_on: the targets of a dialog, for ``encode_dialog``:
            "assistant" (each assistant message and its <|eot_id|>),
            "last" (the last assistant message) or "all" (every token).
        eval_every: held-out loss every this many steps (0: at the end).
        eval_max_sequences: at most this many held-out windows (pretrain).
        long_dialogs: a dialog over seq_len + 1 tokens is "truncate"d
            from the left by whole exchanges (a system message stays) or
            "drop"ped; either way it is counted in ``History``.
        group_by_length: fine-tuning only: sort each run of this many
            batches of an epoch by length, then shuffle the batches, so
            that a micro-batch holds dialogs of similar length and pads
            little (0: off, every batch is a random draw).
        embedding_lr_scale: the input embedding learns at lr × this. Adam
            moves every weight by about lr per step whatever its size, so
            unit-variance embedding rows change by a fraction lr of their
            size while a matrix of std 1/√C changes by lr·√C: a scale of
            about √C gives both the same relative speed.
        train_eot: False leaves <|eot_id|> out of the targets (only to
            show that the model then never learns to stop).
    """

    steps: int = 100
    batch_size: int = 16
    micro_batch_size: int = 16
    seq_len: int = 128
    lr: float = 3e-3
    min_lr: float = 3e-4
    warmup_steps: int = 10
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    grad_clip: float = 1.0
    seed: int = 0
    train_on: str = "assistant"
    eval_every: int = 0
    eval_max_sequences: int | None = None
    long_dialogs: str = "truncate"
    group_by_length: int = 0
    embedding_lr_scale: float = 1.0
    train_eot: bool = True
# --8<-- [end:config]

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "micro_batch_size", "seq_len"):
            _positive_int(getattr(self, name), f"TrainConfig.{name}")
        for name in ("warmup_steps", "eval_every", "seed", "group_by_length"):
            _nonnegative_int(getattr(self, name), f"TrainConfig.{name}")
        if self.eval_max_sequences is not None:
            _positive_int(self.eval_max_sequences, "TrainConfig.eval_max_sequences")
        if self.warmup_steps > self.steps:
            raise ValueError(f"TrainConfig.warmup_steps={self.warmup_steps} exceeds steps={self.steps}")
        if self.batch_size % self.micro_batch_size:
            raise ValueError(
                f"TrainConfig.batch_size={self.batch_size} must be divisible by "
                f"micro_batch_size={self.micro_batch_size}"
            )
        for name in ("lr", "min_lr", "weight_decay", "grad_clip", "eps", "embedding_lr_scale"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"TrainConfig.{name} must be a finite number >= 0, got {value!r}")
        if not self.lr > 0:
            raise ValueError(f"TrainConfig.lr must be > 0, got {self.lr!r}")
        if not self.embedding_lr_scale > 0:
            raise ValueError(f"TrainConfig.embedding_lr_scale must be > 0, got {self.embedding_lr_scale!r}")
        if self.min_lr > self.lr:
            raise ValueError(f"TrainConfig.min_lr={self.min_lr} exceeds lr={self.lr}")
        betas = tuple(self.betas) if isinstance(self.betas, (list, tuple)) else None
        if (
            betas is None
            or len(betas) != 2
            or not all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in betas)
        ):
            raise ValueError(f"TrainConfig.betas must be two numbers in [0, 1), got {self.betas!r}")
        object.__setattr__(self, "betas", (float(betas[0]), float(betas[1])))  # frozen dataclass
        if self.train_on not in TRAIN_ON:
            raise ValueError(f"TrainConfig.train_on must be one of {TRAIN_ON}, got {self.train_on!r}")
        if not isinstance(self.train_eot, bool):
            raise ValueError(f"TrainConfig.train_eot must be True or False, got {self.train_eot!r}")
        if self.long_dialogs not in LONG_DIALOGS:
            raise ValueError(f"TrainConfig.long_dialogs must be one of {LONG_DIALOGS}, got {self.long_dialogs!r}")

    def to_dict(self) -> dict:
        """A JSON-ready dictionary (``betas`` as a list)."""
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        """The inverse of ``to_dict``; unknown keys are an error naming them."""
        if not isinstance(data, dict):
            raise ValueError(f"TrainConfig.from_dict needs a dict, got {type(data).__name__}")
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {unknown}")
        return cls(**data)

    def accumulation(self, world_size: int = 1) -> int:
        """Micro-batches per process per optimizer step."""
        per_forward = self.micro_batch_size * world_size
        if self.batch_size % per_forward:
            raise ValueError(
                f"TrainConfig.batch_size={self.batch_size} is not divisible by micro_batch_size "
                f"× world size = {self.micro_batch_size} × {world_size} = {per_forward}"
            )
        return self.batch_size // per_forward


def _positive_int(value: object, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _nonnegative_int(value: object, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be an int >= 0, got {value!r}")
    return value


# ---------------------------------------------------------------------- schedule

# --8<-- [start:schedule]
def learning_rate(step: int, config: TrainConfig) -> float:
    """The learning rate of optimizer step ``step`` (1 = the first step).

    Linear warm-up: lr · step / warmup_steps up to warmup_steps, so the
    first step already moves the weights. Then a cosine from lr down to
    min_lr, reached exactly at the last step (t = step, w = warmup_steps,
    n = steps):

        lr_t = min_lr + ½ (lr − min_lr) (1 + cos(π (t − w) / (n − w)))

    Examples:
        >>> c = TrainConfig(steps=110, warmup_steps=10, lr=1.0, min_lr=0.0)
        >>> [learning_rate(t, c) for t in (5, 10, 60, 110)]
        [0.5, 1.0, 0.5, 0.0]
    """
    w, n = config.warmup_steps, config.steps
    if step <= w:
        return config.lr * step / w
    progress = (step - w) / (n - w)  # in (0, 1]
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))  # from 1 to 0
    return config.min_lr + (config.lr - config.min_lr) * cosine
# --8<-- [end:schedule]


# ---------------------------------------------------------------------- results


@dataclass(frozen=True)
class StepInfo:
    """What ``on_step`` receives after every optimizer step.

    Attributes:
        step: the step just taken (1 … steps).
        steps: the total number of steps.
        loss: mean cross-entropy per target token of this step (all processes).
        lr: the learning rate used in this step.
        tokens: input tokens processed so far (all steps, all processes, pads excluded).
        tokens_per_s: input tokens per second since this call started.
        elapsed_s: seconds of training so far (including runs before a resume).
        heldout_loss: the held-out loss when it was evaluated at this step, else None.
        grad_norm: the global gradient norm before clipping.
        targets: target tokens in this step (all processes).
    """

    step: int
    steps: int
    loss: float
    lr: float
    tokens: int
    tokens_per_s: float
    elapsed_s: float
    heldout_loss: float | None = None
    grad_norm: float = 0.0
    targets: int = 0


@dataclass
class History:
    """Per-step traces of one training run (JSON-ready through ``to_dict``).

    ``step``, ``loss``, ``lr``, ``grad_norm``, ``tokens`` (input tokens of the step) and
    ``targets`` (target tokens of the step) have one entry per step; ``heldout_step`` and
    ``heldout_loss`` one per evaluation. ``n_examples`` counts the training sequences
    (windows or dialogs) after fitting to seq_len, ``n_truncated`` and ``n_dropped`` the
    dialogs that were too long. ``elapsed_s`` is wall time, the only field that is not
    reproducible.
    """

    kind: str
    step: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    targets: list[int] = field(default_factory=list)
    heldout_step: list[int] = field(default_factory=list)
    heldout_loss: list[float] = field(default_factory=list)
    n_examples: int = 0
    n_truncated: int = 0
    n_dropped: int = 0
    elapsed_s: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "History":
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown History fields {unknown}")
        return cls(**data)


@dataclass(frozen=True)
class Evaluation:
    """Loss, perplexity (exp of the loss) and accuracy over the target tokens."""

    loss: float
    perplexity: float
    accuracy: float
    n_tokens: int
    n_truncated: int = 0
    n_dropped: int = 0


@dataclass(frozen=True)
class Reply:
    """A generated assistant turn.

    Attributes:
        text: the decoded reply without the end-of-turn token.
        ids: the generated ids, including ``<|eot_id|>`` when it was produced.
        ended: the reply stopped on ``<|eot_id|>`` within ``max_new_tokens``.
        role_leak: the reply contains a header token or a special token other than
            ``<|eot_id|>`` (the model started writing another turn or a control token).
    """

    text: str
    ids: list[int]
    ended: bool
    role_leak: bool


# ---------------------------------------------------------------------- devices


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` → CPU; "cpu", "cuda", "cuda:N" or "mps" (checked to be available)."""
    if device is None:
        return torch.device("cpu")
    if isinstance(device, torch.device):
        dev = device
    elif isinstance(device, str):
        try:
            dev = torch.device(device)
        except RuntimeError:
            dev = None
        if dev is None or dev.type not in ("cpu", "cuda", "mps"):
            raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'mps', got {device!r}")
    else:
        raise ValueError(f"device must be a string such as 'cpu' or 'cuda', got {type(device).__name__}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} was requested, but CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError(f"device {device!r} was requested, but MPS is not available on this machine")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'mps', got {device!r}")
    return dev


def _autocast(device: torch.device):
    """bf16 autocast on CUDA; full precision elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _model_device(model: nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


# ---------------------------------------------------------------------- the loss

# --8<-- [start:loss]
def token_loss_sum(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy of logits (B, T, V) at the targets (B, T).

    A target of -100 is no target (a pad, a prompt token): it adds
    nothing. The sum, not the mean, lets the caller divide by the number
    of targets in the whole optimizer step.
    """
    V = logits.shape[-1]
    return F.cross_entropy(
        logits.reshape(-1, V).float(),  # (B·T, V)
        targets.reshape(-1),  # (B·T,)
        ignore_index=IGNORE,
        reduction="sum",
    )
# --8<-- [end:loss]


# ---------------------------------------------------------------------- data


class _Windows:
    """Training sequences cut from one long token tensor.

    Epoch e starts at a random offset in [0, seq_len) (from seed and e) and cuts
    non-overlapping windows of seq_len + 1 tokens; the input is a window without its last
    token, the target the window without its first: every token is a target.
    """

    def __init__(self, tokens: torch.Tensor, seq_len: int, seed: int) -> None:
        self.tokens, self.seq_len, self.seed = tokens, seq_len, seed
        self.n = tokens.numel() // seq_len - 1  # windows that fit at any offset
        self._offset_epoch, self._offset = -1, 0

    def offset(self, epoch: int) -> int:
        if epoch != self._offset_epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch + 1)
            self._offset_epoch, self._offset = epoch, int(torch.randint(self.seq_len, (1,), generator=g))
        return self._offset

    def batch(self, indices: Sequence[int], epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        L, start = self.seq_len, self.offset(epoch)
        rows = torch.stack([self.tokens[start + i * L : start + i * L + L + 1] for i in indices])  # (b, L + 1)
        return rows[:, :-1], rows[:, 1:]  # inputs (b, L), targets (b, L)

    def n_inputs(self, indices: Sequence[int]) -> int:
        return len(indices) * self.seq_len

    def fingerprint(self) -> dict:
        t = self.tokens
        return {"kind": "tokens", "n_tokens": t.numel(), "checksum": _checksum(t)}


class _Dialogs:
    """Encoded dialogs; a micro-batch is padded by ``collate`` and shifted by one."""

    def __init__(self, examples: list[tuple[list[int], list[int]]], pad_id: int, ids_checksum: int) -> None:
        self.examples, self.pad_id, self.n = examples, pad_id, len(examples)
        self.lengths = [len(ids) for ids, _ in examples]  # for group_by_length
        self._checksum = ids_checksum

    def batch(self, indices: Sequence[int], epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        from .dialog import collate

        return shift_batch(collate([self.examples[i] for i in indices], self.pad_id))

    def n_inputs(self, indices: Sequence[int]) -> int:
        return sum(len(self.examples[i][0]) - 1 for i in indices)  # pads excluded

    def fingerprint(self) -> dict:
        return {"kind": "dialogs", "n_examples": self.n, "checksum": self._checksum}


# --8<-- [start:shift]
def shift_batch(batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) of a padded dialog ``Batch``, shifted by one.

    ``labels[:, t]`` is the token at t (or -100) and the logits at t - 1
    predict it: the inputs drop the last position, the targets the first.
    A dialog's last input is its final <|eot_id|>, which predicts nothing;
    that <|eot_id|> stays a target, predicted from the token before it.
    Pads are on the right: under causal attention no real token sees
    them, and their targets are -100.
    """
    mask = batch.attention_mask
    if bool((mask[:, 1:] & ~mask[:, :-1]).any()):  # a token after a pad
        raise ValueError("the batch must be padded on the right (as collate)")
    return batch.input_ids[:, :-1], batch.labels[:, 1:]  # (B, T - 1) each
# --8<-- [end:shift]


def _checksum(t: torch.Tensor) -> int:
    """A cheap order-sensitive checksum of an integer tensor (to refuse resuming on other data)."""
    t = t.reshape(-1).to(torch.int64)
    weights = torch.arange(1, t.numel() + 1, dtype=torch.int64) % 1_000_003
    return int((t * weights).sum() % (2**61 - 1))


# --8<-- [start:sampler]
class _Order:
    """Which examples an optimizer step uses: a function of (seed, step).

    Each epoch is a seeded permutation of the examples (the one that
    DistributedSampler draws after set_epoch); step s of epoch e takes the
    next batch_size of them, so no step depends on the ones before: a
    resumed run at step s reads the same examples. With group_by_length k,
    each run of k batches is sorted by length and the epoch's batches are
    then shuffled, so a batch holds examples of similar length. With P
    processes, process r takes every P-th example of the step's batch from
    r on: the P shares make up exactly the batch one process would take.
    """

    def __init__(self, n: int, config: TrainConfig, world: int, rank: int,
                 lengths: Sequence[int] | None = None):
        if n < config.batch_size:
            raise ValueError(
                f"need at least batch_size={config.batch_size} training "
                f"sequences, got {n}: use a smaller batch_size or seq_len, "
                "or more data"
            )
        self.n, self.world, self.rank = n, world, rank
        self.batch_size, self.seed = config.batch_size, config.seed
        self.group = config.group_by_length if lengths is not None else 0
        self.lengths = lengths
        self.steps_per_epoch = n // config.batch_size  # the rest is skipped
        self._epoch, self._batches = -1, []

    def _epoch_batches(self, epoch: int) -> list[list[int]]:
        g = torch.Generator().manual_seed(self.seed + epoch)
        B, k = self.batch_size, self.group
        perm = torch.randperm(self.n, generator=g).tolist()
        perm = perm[: self.steps_per_epoch * B]
        if k:
            runs = [perm[i : i + k * B] for i in range(0, len(perm), k * B)]
            perm = [j for run in runs
                    for j in sorted(run, key=self.lengths.__getitem__)]
        batches = [perm[i : i + B] for i in range(0, len(perm), B)]
        if k:
            shuffled = torch.randperm(len(batches), generator=g).tolist()
            batches = [batches[i] for i in shuffled]
        return batches

    def position(self, step: int) -> dict:
        """Epoch and batch within the epoch of step ``step`` (1-based)."""
        epoch, batch = divmod(step - 1, self.steps_per_epoch)
        return {"epoch": epoch, "batch": batch}

    def indices(self, step: int) -> tuple[int, list[int]]:
        pos = self.position(step)
        if pos["epoch"] != self._epoch:
            self._epoch = pos["epoch"]
            self._batches = self._epoch_batches(self._epoch)
        batch = self._batches[pos["batch"]]
        return pos["epoch"], batch[self.rank :: self.world]
# --8<-- [end:sampler]


# ---------------------------------------------------------------------- distributed


def _dist():
    """(world_size, rank) of an initialised process group, else (1, 0)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size(), torch.distributed.get_rank()
    return 1, 0


def _all_reduce_sum(values: list[float], device: torch.device, world_size: int) -> list[float]:
    """Sum numbers over the processes (float64: integers up to 2**53 stay exact)."""
    if world_size == 1:
        return [float(v) for v in values]
    t = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
    return t.tolist()


# ---------------------------------------------------------------------- optimizer


def _optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW; weight decay on weight matrices only — not on norm gains nor the embedding.

    Decay pulls weights towards zero; a norm gain of zero silences a channel and an
    embedding row of a rare token would shrink between its updates, so both are left out
    (a common choice, e.g. in Hugging Face's Trainer for norms). With tied embeddings the
    output head is the embedding and is not decayed either. The embeddings learn at
    ``lr × config.embedding_lr_scale`` (the group's ``lr_scale``, applied by the loop).
    """
    embeddings: set[int] = set()
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            embeddings.add(id(module.weight))
    decay, other, embedding, seen = [], [], [], set()
    for p in model.parameters():
        if id(p) in seen or not p.requires_grad:
            continue
        seen.add(id(p))
        if id(p) in embeddings:
            embedding.append(p)
        else:
            (other if p.dim() < 2 else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": other, "weight_decay": 0.0},
    ]
    if embedding:
        groups.append({"params": embedding, "weight_decay": 0.0, "lr_scale": config.embedding_lr_scale})
    for group in groups:
        group["lr"] = learning_rate(1, config) * group.get("lr_scale", 1.0)
    # one fused kernel for the whole update on CPU and CUDA (about 6x faster than a loop over
    # the tensors for this site's small models); elsewhere PyTorch's default implementation
    fused = True if _model_device(model).type in ("cpu", "cuda") else None
    return torch.optim.AdamW(
        groups, lr=learning_rate(1, config), betas=config.betas, eps=config.eps, fused=fused
    )


# ---------------------------------------------------------------------- the loop


def _train(
    kind: str,
    model: nn.Module,
    data,
    config: TrainConfig,
    *,
    heldout_loss: Callable[[nn.Module], float] | None,
    device: torch.device,
    on_step: Callable[[StepInfo], None] | None,
    checkpoint: "Checkpointing | None",
    history: History,
    stop_at: int | None = None,
) -> History:
    world_size, rank = _dist()
    accumulation = config.accumulation(world_size)
    if stop_at is not None:
        _positive_int(stop_at, "stop_at")
        if stop_at > config.steps:
            raise ValueError(f"stop_at={stop_at} exceeds TrainConfig.steps={config.steps}")
    last = config.steps if stop_at is None else stop_at
    if checkpoint is not None and not isinstance(checkpoint, Checkpointing):
        raise ValueError(f"checkpoint must be a Checkpointing or None, got {type(checkpoint).__name__}")
    if on_step is not None and not callable(on_step):
        raise ValueError(f"on_step must be callable or None, got {type(on_step).__name__}")
    order = _Order(data.n, config, world_size, rank, getattr(data, "lengths", None))
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())  # under torchrun: set by the caller
    if checkpoint is not None:
        if not (hasattr(model, "save") and hasattr(model, "load_hf_state_dict")):
            raise ValueError(f"checkpointing needs a Llama (save / load_hf_state_dict), got {type(model).__name__}")
        latest = checkpoint.latest()
        if latest is not None and not checkpoint.resume:
            raise _ckpt().CheckpointError(
                f"{checkpoint.dir} already holds checkpoints (newest: {latest.name}); pass resume=True "
                "to continue that run, or choose an empty folder"
            )
    model.to(device)
    model.train()
    optimizer = _optimizer(model, config)
    start = 0
    if checkpoint is not None and checkpoint.resume:
        found = checkpoint.load_latest(kind, model, optimizer, config, data.fingerprint(), device)
        if found is not None:
            start, history = found
    if world_size > 1 and checkpoint is not None:
        torch.distributed.barrier()  # every process has read the checkpoints before process 0 writes one
    net = model
    if world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    t0 = time.perf_counter()
    elapsed_before = history.elapsed_s
    tokens_total = sum(history.tokens)
    tokens_here = 0
    done = start  # last completed step
    updating = False  # between optimizer.step() and the history entry of that step
    try:
        for step in range(start + 1, last + 1):
            # --8<-- [start:step]
            epoch, indices = order.indices(step)
            mb = config.micro_batch_size
            micro = [  # this process's micro-batches: (inputs, targets)
                data.batch(indices[i : i + mb], epoch)
                for i in range(0, len(indices), mb)
            ]
            assert len(micro) == accumulation
            lr = learning_rate(step, config)
            for group in optimizer.param_groups:
                group["lr"] = lr * group.get("lr_scale", 1.0)
            loss, n_targets = accumulate_gradients(
                net, micro, world_size=world_size, device=device
            )
            _check_finite(loss, kind, step, config)
            grad_norm = clip_gradients(model, config.grad_clip)
            _check_finite(grad_norm, kind, step, config, "gradient norm")
            updating = True  # weights ahead of the history until `done = step`
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            # --8<-- [end:step]
            (n_inputs,) = _all_reduce_sum([data.n_inputs(indices)], device, world_size)
            n_inputs = int(n_inputs)
            history.step.append(step)
            history.loss.append(loss)
            history.lr.append(lr)
            history.grad_norm.append(grad_norm)
            history.tokens.append(n_inputs)
            history.targets.append(n_targets)
            done, updating = step, False
            held = None
            if heldout_loss is not None and (
                step == last or (config.eval_every and step % config.eval_every == 0)
            ):
                held = heldout_loss(model)
                _check_finite(held, kind, step, config, "held-out loss")
                history.heldout_step.append(step)
                history.heldout_loss.append(held)
            tokens_total += n_inputs
            tokens_here += n_inputs
            now = time.perf_counter() - t0
            history.elapsed_s = elapsed_before + now
            if checkpoint is not None and (step % checkpoint.every == 0 or step == last):
                checkpoint.save(kind, step, model, optimizer, config, order, data.fingerprint(), history, device)
            if on_step is not None:
                on_step(
                    StepInfo(
                        step=step,
                        steps=config.steps,
                        loss=loss,
                        lr=lr,
                        tokens=tokens_total,
                        tokens_per_s=tokens_here / now if now > 0 else 0.0,
                        elapsed_s=history.elapsed_s,
                        heldout_loss=held,
                        grad_norm=grad_norm,
                        targets=n_targets,
                    )
                )
    except KeyboardInterrupt:
        # Keep the last completed step, unless the interrupt fell between optimizer.step()
        # and the step's history entry: weights, optimizer and history would not belong to
        # one step, so the previous checkpoint stands.
        if checkpoint is not None and not updating and done > start and done not in checkpoint.saved:
            checkpoint.save(kind, done, model, optimizer, config, order, data.fingerprint(), history, device)
        raise
    model.eval()
    return history


# --8<-- [start:accumulate]
def accumulate_gradients(
    net: nn.Module,
    micro: Sequence[tuple[torch.Tensor, torch.Tensor]],
    *,
    world_size: int = 1,
    device: torch.device | str | None = None,
) -> tuple[float, int]:
    """The backward passes of one optimizer step.

    ``micro`` holds this process's micro-batches (inputs, targets). Each
    adds the gradient of its summed loss / n_targets, where n_targets
    counts the targets of the whole step: every micro-batch of every
    process, summed before the first backward pass. The gradient is then
    that of the step's mean loss per target token, exactly as for one big
    batch, however the tokens fall into micro-batches and processes.

    Returns:
        (mean loss per target token of the step, n_targets).
    """
    device = torch.device("cpu") if device is None else torch.device(device)
    ddp = hasattr(net, "no_sync")  # a DistributedDataParallel wrapper
    local = sum(int((targets != IGNORE).sum()) for _, targets in micro)
    n_targets = int(_all_reduce_sum([local], device, world_size)[0])
    loss_sum = 0.0
    for i, (inputs, targets) in enumerate(micro):
        inputs, targets = inputs.to(device), targets.to(device)
        last = i == len(micro) - 1
        # DDP all-reduces the gradients in the last backward pass only
        sync = contextlib.nullcontext() if last or not ddp else net.no_sync()
        with sync:
            with _autocast(device):
                if _selects_logits(net):
                    keep = targets != IGNORE  # (b, T)
                    # the output head only where a target is: (N, V)
                    logits = net(inputs, logits_at=keep)
                    targets = targets[keep]  # (N,)
                else:
                    logits = net(inputs)  # (b, T, V)
            s = token_loss_sum(logits, targets)
            # DDP averages the gradients of the processes; × world_size
            # makes that a sum: ∇(all losses of the step) / n_targets
            (s * (world_size / max(n_targets, 1))).backward()
        loss_sum += float(s.detach())
    total = _all_reduce_sum([loss_sum], device, world_size)[0]
    return total / max(n_targets, 1), n_targets
# --8<-- [end:accumulate]


def _selects_logits(net: nn.Module) -> bool:
    """Whether the model (or the one DistributedDataParallel wraps) takes ``logits_at``."""
    from .model import Llama

    return isinstance(getattr(net, "module", net), Llama)


def _check_finite(
    loss: float, kind: str, step: int, config: TrainConfig, what: str = "loss"
) -> None:
    if not math.isfinite(loss):
        raise RuntimeError(
            f"{kind}: the {what} is {loss} at step {step}: training diverged "
            f"(try a lower lr than {config.lr})"
        )


def clip_gradients(model: nn.Module, max_norm: float) -> float:
    """Clip the global gradient norm to ``max_norm`` (0: no clipping); returns the norm before."""
    params = [p for p in model.parameters() if p.grad is not None]
    if not params:
        return 0.0
    if max_norm > 0:
        return float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params])))


# ---------------------------------------------------------------------- pretraining


def _check_model(model: nn.Module, seq_len: int | None = None) -> None:
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module (a Llama), got {type(model).__name__}")
    config = getattr(model, "config", None)
    if seq_len is not None and config is not None and seq_len > config.max_seq_len:
        raise ValueError(f"TrainConfig.seq_len={seq_len} exceeds the model's max_seq_len={config.max_seq_len}")


def _check_tokens(tokens, name: str, vocab_size: int | None) -> torch.Tensor:
    if isinstance(tokens, (list, tuple)):
        try:
            tokens = torch.tensor(tokens, dtype=torch.long)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(f"{name} must be a 1-D sequence of token ids") from None
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 1 or tokens.dtype not in (
        torch.int64,
        torch.int32,
        torch.int16,
        torch.uint8,
    ):
        got = f"shape {tuple(tokens.shape)} dtype {tokens.dtype}" if isinstance(tokens, torch.Tensor) else type(tokens).__name__
        raise ValueError(f"{name} must be a 1-D integer tensor of token ids, got {got}")
    tokens = tokens.to(torch.long).cpu()
    if vocab_size is not None and tokens.numel():
        lo, hi = int(tokens.min()), int(tokens.max())
        if lo < 0 or hi >= vocab_size:
            raise ValueError(f"{name}: token id {lo if lo < 0 else hi} is outside the vocabulary 0 .. {vocab_size - 1}")
    return tokens


def pretrain(
    model: nn.Module,
    tokens,
    config: TrainConfig,
    *,
    heldout=None,
    device: str | torch.device | None = None,
    on_step: Callable[[StepInfo], None] | None = None,
    checkpoint: "Checkpointing | None" = None,
    stop_at: int | None = None,
) -> History:
    """Next-token training on a 1-D token tensor; the model is trained in place.

    Arguments, one by one:

    - ``model``: a ``Llama`` (any module mapping ids (B, T) to logits (B, T, V) trains).
    - ``tokens``: the training token ids, a 1-D integer tensor (or list).
    - ``config``: the schedule and batch sizes.
    - ``heldout``: held-out token ids; their loss is evaluated every ``eval_every`` steps and at
      the end (``History.heldout_loss``).
    - ``device``: "cpu" (default), "cuda" or "mps"; the model is moved there.
    - ``on_step``: called with a ``StepInfo`` after every step.
    - ``checkpoint``: a ``Checkpointing`` to save (and resume) the run.
    - ``stop_at``: end after this step; the schedule still spans ``config.steps``, so the
      run is exactly the first ``stop_at`` steps of the full one.

    Returns the ``History`` of the run.

    Raises:
        ValueError: a bad config, too few tokens for one batch, ids outside the vocabulary.
    """
    _check_config(config)
    _check_model(model, config.seq_len)
    dev = resolve_device(device)
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    tokens = _check_tokens(tokens, "tokens", vocab)
    data = _Windows(tokens, config.seq_len, config.seed)
    need = (config.batch_size + 1) * config.seq_len
    if data.n < config.batch_size:
        raise ValueError(
            f"tokens: {tokens.numel()} tokens give {max(data.n, 0)} windows of seq_len={config.seq_len}, "
            f"fewer than batch_size={config.batch_size} (need at least {need} tokens)"
        )
    held_fn = None
    if heldout is not None:
        held = _check_tokens(heldout, "heldout", vocab)
        if held.numel() < config.seq_len + 1:
            raise ValueError(f"heldout: {held.numel()} tokens, fewer than seq_len + 1 = {config.seq_len + 1}")
        held_fn = lambda m: heldout_token_loss(m, held, config, device=dev)  # noqa: E731
    history = History(kind="pretrain", n_examples=data.n)
    return _train(
        "pretrain", model, data, config, heldout_loss=held_fn, device=dev, on_step=on_step,
        checkpoint=checkpoint, history=history, stop_at=stop_at,
    )


@torch.no_grad()
def heldout_token_loss(model: nn.Module, tokens: torch.Tensor, config: TrainConfig, *, device=None) -> float:
    """Mean next-token loss over non-overlapping windows of seq_len + 1 held-out tokens."""
    dev = resolve_device(device) if not isinstance(device, torch.device) else device
    L = config.seq_len
    n = (tokens.numel() - 1) // L
    if config.eval_max_sequences is not None:
        n = min(n, config.eval_max_sequences)
    was = model.training
    model.eval()
    total, count = 0.0, 0
    for s in range(0, n, config.micro_batch_size):
        rows = torch.stack([tokens[i * L : i * L + L + 1] for i in range(s, min(n, s + config.micro_batch_size))])
        rows = rows.to(dev)
        with _autocast(dev):
            logits = model(rows[:, :-1])
        total += float(token_loss_sum(logits, rows[:, 1:]))
        count += rows[:, 1:].numel()
    model.train(was)
    return total / max(count, 1)


def _check_config(config) -> None:
    if not isinstance(config, TrainConfig):
        raise ValueError(f"config must be a TrainConfig, got {type(config).__name__}")


# ---------------------------------------------------------------------- fine-tuning


def _fit_dialogs(dialogs, tokenizer, max_ids: int, train_on: str, long_dialogs: str, train_eot: bool = True):
    """Encode dialogs, fitting each into ``max_ids`` ids; returns (examples, truncated, dropped)."""
    from .dialog import Dialog, encode_dialog

    if isinstance(dialogs, (str, bytes)) or not isinstance(dialogs, Sequence):
        raise ValueError(f"dialogs must be a list of Dialog, got {type(dialogs).__name__}")
    examples, truncated, dropped = [], 0, 0
    for k, dialog in enumerate(dialogs):
        if not isinstance(dialog, Dialog):
            raise ValueError(f"dialogs[{k}] must be a Dialog, got {type(dialog).__name__}")
        ids, labels = encode_dialog(dialog, tokenizer, train_on=train_on, train_eot=train_eot)
        if len(ids) <= max_ids:
            examples.append((ids, labels))
            continue
        fitted = None
        if long_dialogs == "truncate":
            fitted = _truncate_left(dialog, tokenizer, max_ids, train_on, train_eot)
        if fitted is None:
            dropped += 1
        else:
            truncated += 1
            examples.append(fitted)
    return examples, truncated, dropped


def _truncate_left(dialog, tokenizer, max_ids: int, train_on: str, train_eot: bool = True):
    """Drop the oldest user/assistant exchanges (keeping a system message) until it fits."""
    from .dialog import encode_dialog

    messages = list(dialog.messages)
    head = messages[:1] if messages and messages[0].role == "system" else []
    body = messages[len(head) :]
    while True:
        # drop up to and including the next assistant message, so the rest starts with a user
        cut = next((i for i, m in enumerate(body) if m.role == "assistant"), None)
        if cut is None or cut + 1 >= len(body):
            return None
        body = body[cut + 1 :]
        if not any(m.role == "assistant" for m in body):
            return None
        try:
            shorter = dataclasses.replace(dialog, messages=tuple(head + body))
            ids, labels = encode_dialog(shorter, tokenizer, train_on=train_on, train_eot=train_eot)
        except ValueError:
            return None
        if len(ids) <= max_ids:
            return ids, labels


def finetune(
    model: nn.Module,
    dialogs,
    tokenizer,
    config: TrainConfig,
    *,
    heldout=None,
    device: str | torch.device | None = None,
    on_step: Callable[[StepInfo], None] | None = None,
    checkpoint: "Checkpointing | None" = None,
    stop_at: int | None = None,
) -> History:
    """Supervised fine-tuning on dialogs; the model is trained in place.

    Each dialog is encoded with ``encode_dialog(d, tokenizer, train_on=config.train_on,
    train_eot=config.train_eot)``
    (by default the targets are the assistant's content and its ``<|eot_id|>``) and a
    micro-batch is padded with ``collate``. A dialog longer than seq_len + 1 ids is
    truncated from the left by whole exchanges or dropped (``config.long_dialogs``); the
    counts are in ``History.n_truncated`` and ``History.n_dropped``.

    Arguments, one by one:

    - ``model``: a ``Llama`` whose vocabulary covers the tokenizer (with chat tokens).
    - ``dialogs``: the training dialogs (``llm_glossary.dialog.Dialog``).
    - ``tokenizer``: the chat tokenizer (``llm_glossary.dialog.chat_tokenizer()``).
    - ``config``: the schedule and batch sizes.
    - ``heldout``: held-out dialogs; their loss on the same targets is evaluated every
      ``eval_every`` steps and at the end.
    - ``device``, ``on_step``, ``checkpoint``, ``stop_at``: as in ``pretrain``.

    Returns the ``History`` of the run.
    """
    _check_config(config)
    _check_model(model, config.seq_len)
    dev = resolve_device(device)
    _check_vocab(model, tokenizer)
    examples, truncated, dropped = _fit_dialogs(
        dialogs, tokenizer, config.seq_len + 1, config.train_on, config.long_dialogs, config.train_eot
    )
    if not examples:
        raise ValueError(f"no dialog fits seq_len={config.seq_len} (dropped {dropped} of {len(dialogs)})")
    flat = torch.tensor([i for ids, labels in examples for i in (*ids, *labels, -1)], dtype=torch.long)
    data = _Dialogs(examples, tokenizer.pad_id, _checksum(flat))
    held_fn = None
    if heldout is not None:
        # encoded (and checked) once, before training: the same targets as ``evaluate``
        held, _, held_dropped = _fit_dialogs(heldout, tokenizer, config.seq_len + 1, config.train_on, "truncate")
        if not held:
            raise ValueError(f"heldout: no dialog fits seq_len={config.seq_len} (dropped {held_dropped})")

        def held_fn(m):
            return _evaluate_examples(m, held, tokenizer.pad_id, dev, config.micro_batch_size).loss

    history = History(kind="finetune", n_examples=len(examples), n_truncated=truncated, n_dropped=dropped)
    return _train(
        "finetune", model, data, config, heldout_loss=held_fn, device=dev, on_step=on_step,
        checkpoint=checkpoint, history=history, stop_at=stop_at,
    )


def _check_vocab(model: nn.Module, tokenizer) -> None:
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    if vocab is not None and tokenizer.vocab_size > vocab:
        raise ValueError(
            f"the tokenizer has {tokenizer.vocab_size} pieces but the model's vocab_size is {vocab}: "
            "build the model with the chat tokenizer's vocab_size"
        )


# ---------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dialogs,
    tokenizer,
    *,
    device: str | torch.device | None = None,
    batch_size: int = 16,
    train_on: str = "assistant",
    seq_len: int | None = None,
) -> Evaluation:
    """Loss, perplexity and next-token accuracy on the dialogs' target tokens.

    The targets are those training uses (``encode_dialog(..., train_on=train_on)``):
    by default the assistant's content and its ``<|eot_id|>``. Accuracy counts the
    targets whose most likely next token (argmax) is the target.

    Arguments, one by one:

    - ``model``: the model (left on its device unless ``device`` is given).
    - ``dialogs``: ``Dialog`` objects.
    - ``tokenizer``: the chat tokenizer.
    - ``device``: where to run; default the model's device.
    - ``batch_size``: dialogs per forward pass.
    - ``train_on``: which tokens are targets (as in ``TrainConfig.train_on``).
    - ``seq_len``: longest forward pass; longer dialogs are truncated from the left by whole
      exchanges (or dropped) and counted; default the model's max_seq_len.

    Returns ``Evaluation(loss, perplexity, accuracy, n_tokens, n_truncated, n_dropped)``.
    """
    _check_model(model)
    _positive_int(batch_size, "batch_size")
    dev = resolve_device(device) if device is not None else _model_device(model)
    model.to(dev)
    _check_vocab(model, tokenizer)
    if seq_len is None:
        seq_len = getattr(getattr(model, "config", None), "max_seq_len", None)
        if seq_len is None:
            raise ValueError("evaluate needs seq_len for a model without config.max_seq_len")
    _positive_int(seq_len, "seq_len")
    examples, truncated, dropped = _fit_dialogs(dialogs, tokenizer, seq_len + 1, train_on, "truncate")
    if not examples:
        raise ValueError(f"evaluate: no dialog to evaluate (got {len(dialogs)}, {dropped} too long)")
    ev = _evaluate_examples(model, examples, tokenizer.pad_id, dev, batch_size)
    if ev.n_tokens == 0:
        raise ValueError(f"evaluate: the dialogs have no target tokens for train_on={train_on!r}")
    return dataclasses.replace(ev, n_truncated=truncated, n_dropped=dropped)


@torch.no_grad()
def _evaluate_examples(model, examples, pad_id: int, dev: torch.device, batch_size: int) -> Evaluation:
    """Sum the loss and count the correct argmax over the targets of encoded dialogs."""
    from .dialog import collate

    was = model.training
    model.eval()
    total, correct, count = 0.0, 0, 0
    # sums do not depend on the order: batch dialogs of similar length, which pad little
    examples = sorted(examples, key=lambda ex: len(ex[0]))
    for s in range(0, len(examples), batch_size):
        inputs, targets = shift_batch(collate(examples[s : s + batch_size], pad_id))
        inputs, targets = inputs.to(dev), targets.to(dev)
        with _autocast(dev):
            if _selects_logits(model):
                keep = targets != IGNORE
                logits, targets = model(inputs, logits_at=keep), targets[keep]  # (N, V), (N,)
            else:
                logits = model(inputs)  # (B, T, V)
        total += float(token_loss_sum(logits, targets))
        is_target = targets != IGNORE
        correct += int(((logits.argmax(dim=-1) == targets) & is_target).sum())
        count += int(is_target.sum())
    model.train(was)
    loss = total / max(count, 1)
    return Evaluation(loss=loss, perplexity=math.exp(loss), accuracy=correct / max(count, 1), n_tokens=count)


# ---------------------------------------------------------------------- replies


def _check_messages(messages) -> None:
    from .dialog import Message

    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise ValueError(f"messages must be a list of Message, got {type(messages).__name__}")
    if not messages:
        raise ValueError("messages is empty: it must end with a user message")
    for k, m in enumerate(messages):
        if not isinstance(m, Message):
            raise ValueError(f"messages[{k}] must be a Message, got {type(m).__name__}")
    if messages[-1].role != "user":
        raise ValueError(f"the last message must be from the user, got role {messages[-1].role!r}")


def _special_ids(tokenizer) -> set[int]:
    """Every special id the tokenizer knows: the added (chat) tokens and <unk>, <s>, </s>."""
    ids = {tokenizer.unk_id, tokenizer.bos_id, tokenizer.eos_id}
    ids.update(tokenizer.piece_to_id(t) for t in tokenizer.special_tokens)
    return ids


class _Stream:
    """Turns generated ids into text pieces without splitting a UTF-8 character.

    The text so far is decoded from all ids; a trailing run of byte pieces that is a valid
    but unfinished UTF-8 sequence is held back until its last byte arrives.
    """

    def __init__(self, tokenizer, skip: set[int]) -> None:
        self.tokenizer, self.skip = tokenizer, skip
        self.ids: list[int] = []
        self.emitted = ""

    def _byte(self, i: int) -> int | None:
        piece = self.tokenizer.id_to_piece(i)
        if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
            return int(piece[3:5], 16)
        return None

    def push(self, i: int) -> str:
        if i in self.skip:
            return ""
        self.ids.append(i)
        k = len(self.ids)
        while k > 0 and self._byte(self.ids[k - 1]) is not None:
            k -= 1  # ids[k:] is the trailing run of byte pieces
        tail = bytes(self._byte(j) for j in self.ids[k:])
        decoder = codecs.getincrementaldecoder("utf-8")()
        try:
            decoder.decode(tail, final=False)
            pending = len(decoder.getstate()[0])  # bytes of an unfinished character
        except UnicodeDecodeError:
            pending = 0  # invalid bytes: shown as U+FFFD now, they will never complete
        upto = len(self.ids) - pending
        return self._emit(self.tokenizer.decode(self.ids[:upto]))

    def finish(self) -> str:
        return self._emit(self.tokenizer.decode(self.ids))

    def _emit(self, text: str) -> str:
        if not text.startswith(self.emitted):
            return ""  # cannot happen for a prefix-stable decoder; never re-emit text
        new = text[len(self.emitted) :]
        self.emitted = text
        return new


@torch.no_grad()
def reply(
    model: nn.Module,
    tokenizer,
    messages,
    *,
    max_new_tokens: int = 96,
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
    on_token: Callable[[str], None] | None = None,
) -> Reply:
    """Generate the assistant's next turn for a conversation.

    The prompt is ``encode_prompt(messages, tokenizer)`` (the conversation and an open
    assistant header); tokens are generated one at a time with the model's KV cache until
    ``<|eot_id|>`` or ``max_new_tokens``.

    Arguments, one by one:

    - ``model``: a ``Llama`` (runs on its own device).
    - ``tokenizer``: the chat tokenizer.
    - ``messages``: a list of ``Message`` ending with a user message.
    - ``max_new_tokens``: the most tokens to generate.
    - ``temperature``: 0 is greedy; above 0 samples from softmax(logits / temperature).
    - ``generator``: random generator for reproducible sampling.
    - ``on_token``: called with each new piece of text as it is generated (for streaming); a
      character made of several byte pieces is passed whole.

    Returns ``Reply(text, ids, ended, role_leak)``.

    Raises:
        ValueError: messages not a non-empty list of Message ending with a user message,
            a bad max_new_tokens or temperature, or a prompt that leaves no room.
    """
    from .dialog import encode_prompt
    from .model import _check_sampling, _pick

    _check_messages(messages)
    _check_sampling(max_new_tokens, temperature, None, None)
    if on_token is not None and not callable(on_token):
        raise ValueError(f"on_token must be callable or None, got {type(on_token).__name__}")
    eot = tokenizer.eot_id
    specials = _special_ids(tokenizer)
    prompt = encode_prompt(messages, tokenizer)
    limit = model.config.max_seq_len
    if len(prompt) + max_new_tokens > limit:
        raise ValueError(
            f"the prompt has {len(prompt)} tokens; with max_new_tokens={max_new_tokens} that exceeds "
            f"the model's max_seq_len={limit}: shorten the conversation or max_new_tokens"
        )
    dev = _model_device(model)
    was = model.training
    model.eval()
    caches = model.new_caches(1, len(prompt) + max_new_tokens)
    stream = _Stream(tokenizer, skip=specials)  # decode drops special tokens, so does the stream
    step_input = torch.tensor([prompt], dtype=torch.long, device=dev)  # (1, T)
    ids: list[int] = []
    ended = False
    try:
        for _ in range(max_new_tokens):
            # full precision (no autocast): one token at a time is cheap, and the
            # KV cache keeps the model's dtype
            logits = model(step_input, caches=caches, last_only=True)  # (1, 1, V)
            next_id = int(_pick(logits[:, -1, :].float(), temperature, None, None, generator)[0])
            ids.append(next_id)
            if next_id == eot:
                ended = True
                break
            if on_token is not None:
                piece = stream.push(next_id)
                if piece:
                    on_token(piece)
            step_input = torch.tensor([[next_id]], dtype=torch.long, device=dev)
    finally:
        model.train(was)
    if on_token is not None:
        rest = stream.finish()  # a character still held back (bytes that never completed)
        if rest:
            on_token(rest)
    role_leak = any(i in specials and i != eot for i in ids)
    text = tokenizer.decode([i for i in ids if i != eot])  # special tokens are not text
    return Reply(text=text, ids=ids, ended=ended, role_leak=role_leak)


# ---------------------------------------------------------------------- checkpoints

CHECKPOINT_FORMAT = "llm-glossary-train-checkpoint"
CHECKPOINT_VERSION = 1
_STEP_DIR = re.compile(r"^step-(\d{8})$")
# atomic_folder's temporary names (.step-N.tmp-*, .new-*, .old-*) and ours while deleting
_LEFTOVER = re.compile(r"^\.(step-\d{8}\.(tmp|new|old)-.*|deleting-step-\d{8}-\d+)$")


def _ckpt():
    """The package's file module (atomic folders, safetensors, strict JSON)."""
    from . import checkpoint

    return checkpoint


class Checkpointing:
    """Save a run every ``every`` steps and at the end; optionally resume from the newest.

    Pass one as ``checkpoint=`` to ``pretrain`` or ``finetune``. Each checkpoint is a folder
    ``<dir>/step-NNNNNNNN/`` (the step, 8 digits) written through
    ``llm_glossary.checkpoint.atomic_folder``: it appears under its final name only once
    every file in it is complete, so a run killed while saving leaves the previous
    checkpoints as they were and no half-written one is ever read. Layout:

    ```text
    step-00000040/
        model/config.json        the model: Llama.load(folder / "model")
        model/model.safetensors
        optimizer.safetensors    AdamW's tensors, named state/<param index>/<name>
        rng.safetensors          torch's CPU (and CUDA) generator states, numpy's key
        trainer.json             the rest: step, config, schedule, data position,
                                 RNG scalars, optimizer hyper-parameters, History
    ```

    Nothing is pickled: safetensors and JSON only. Only process 0 writes.

    Args:
        dir: the folder that holds the step folders (created when needed).
        every: save every this many steps (and always after the last step).
        keep_last: how many of the newest checkpoints to keep (older ones are deleted).
        resume: continue from the newest checkpoint in ``dir`` (from scratch when there is
            none). Without it, a ``dir`` that already holds checkpoints is an error, so an
            earlier run is never overwritten by accident.
    """

    def __init__(self, dir: str | os.PathLike, every: int, keep_last: int = 3, resume: bool = False) -> None:
        if not isinstance(dir, (str, os.PathLike)):
            raise ValueError(f"Checkpointing dir must be a path, got {type(dir).__name__}")
        self.dir = Path(dir)
        self.every = _positive_int(every, "Checkpointing every")
        self.keep_last = _positive_int(keep_last, "Checkpointing keep_last")
        if not isinstance(resume, bool):
            raise ValueError(f"Checkpointing resume must be True or False, got {resume!r}")
        self.resume = resume
        self.saved: set[int] = set()  # steps saved by this run

    def __repr__(self) -> str:
        return f"Checkpointing({str(self.dir)!r}, every={self.every}, keep_last={self.keep_last}, resume={self.resume})"

    # ------------------------------------------------------------------ finding

    def checkpoints(self) -> list[Path]:
        """The complete checkpoint folders in ``dir``, oldest first."""
        return list_checkpoints(self.dir)

    def latest(self) -> Path | None:
        """The newest complete checkpoint folder, or None."""
        found = self.checkpoints()
        return found[-1] if found else None

    # ------------------------------------------------------------------ saving

    def save(self, kind, step, model, optimizer, config, order, fingerprint, history, device) -> Path | None:
        """Write the checkpoint of ``step`` (process 0 only); returns its folder."""
        world_size, rank = _dist()
        path = self.dir / f"step-{step:08d}"
        if rank == 0:
            ck = _ckpt()
            self.dir.mkdir(parents=True, exist_ok=True)
            tensors, groups = _optimizer_to_files(optimizer)
            rng_tensors, rng_json = _rng_state(device)
            trainer = {
                "format": CHECKPOINT_FORMAT,
                "version": CHECKPOINT_VERSION,
                "kind": kind,
                "step": step,
                "steps": config.steps,
                "config": config.to_dict(),
                "scheduler": {"name": "warmup_cosine", "step": step, "lr": learning_rate(step, config)},
                "data_position": {**order.position(step + 1), "next_step": step + 1, "examples_seen": step * config.batch_size},
                "data": fingerprint,
                "optimizer": groups,
                "rng": rng_json,
                "world_size": world_size,
                "torch_version": torch.__version__,
                "history": history.to_dict(),
            }
            with ck.atomic_folder(path) as tmp:
                tmp = Path(tmp)
                model.save(tmp / "model")
                ck.save_safetensors(tensors, tmp / "optimizer.safetensors", metadata={"format": "pt"})
                ck.save_safetensors(rng_tensors, tmp / "rng.safetensors", metadata={"format": "pt"})
                ck.atomic_write_json(tmp / "trainer.json", trainer, indent=1)
            self._prune()
        self.saved.add(step)
        return path

    def _prune(self) -> None:
        # leftovers of a run killed while saving or deleting (never complete checkpoints)
        for p in self.dir.iterdir():
            if _LEFTOVER.match(p.name):
                shutil.rmtree(p, ignore_errors=True)
        found = self.checkpoints()
        for old in found[: max(0, len(found) - self.keep_last)]:
            # rename first (atomic), so a kill during the deletion leaves no step folder
            # with missing files behind
            doomed = old.with_name(f".deleting-{old.name}-{os.getpid()}")
            os.replace(old, doomed)
            shutil.rmtree(doomed, ignore_errors=True)

    # ------------------------------------------------------------------ loading

    def load_latest(self, kind, model, optimizer, config, fingerprint, device):
        """Restore the newest checkpoint into model and optimizer: (step, History) or None."""
        path = self.latest()
        if path is None:
            return None
        ck = _ckpt()
        trainer = read_trainer_state(path)
        problems = []
        if trainer.get("kind") != kind:
            problems.append(f"it is a {trainer.get('kind')!r} checkpoint, this is {kind!r}")
        saved = trainer.get("config", {})
        now = config.to_dict()
        differ = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
        if differ:
            problems.append(
                "the configuration differs in "
                + ", ".join(f"{k} (saved {saved.get(k)!r}, now {now.get(k)!r})" for k in differ)
            )
        if trainer.get("data") != fingerprint:
            problems.append(f"the training data differ (saved {trainer.get('data')}, now {fingerprint})")
        if problems:
            raise ck.CheckpointError(f"{path}: cannot resume exactly: " + "; ".join(problems))
        weights = ck.load_safetensors(path / "model" / "model.safetensors")
        model.load_hf_state_dict(weights, source=str(path / "model" / "model.safetensors"))
        tensors = ck.load_safetensors(path / "optimizer.safetensors")
        optimizer.load_state_dict(_optimizer_from_files(tensors, trainer["optimizer"], path))
        _set_rng_state(ck.load_safetensors(path / "rng.safetensors"), trainer["rng"], device)
        history = History.from_dict(trainer["history"])
        return int(trainer["step"]), history


def list_checkpoints(dir) -> list[Path]:
    """Complete checkpoint folders (``step-NNNNNNNN`` holding trainer.json) in ``dir``, oldest first."""
    dir = Path(dir)
    if not dir.is_dir():
        return []
    found = []
    for p in dir.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and p.is_dir() and (p / "trainer.json").is_file():
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def read_trainer_state(path) -> dict:
    """The trainer.json of a checkpoint folder, checked for format and version."""
    ck = _ckpt()
    file = Path(path) / "trainer.json"
    data = ck.read_json(file)
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise ck.CheckpointError(f"{file}: not a training checkpoint (format must be {CHECKPOINT_FORMAT!r})")
    if data.get("version") != CHECKPOINT_VERSION:
        raise ck.CheckpointError(f"{file}: version {data.get('version')!r}, this code reads version {CHECKPOINT_VERSION}")
    for key in ("kind", "step", "config", "optimizer", "rng", "history", "data"):
        if key not in data:
            raise ck.CheckpointError(f"{file}: missing field {key!r}")
    return data


def _optimizer_to_files(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state into tensors (for safetensors) and the rest (for JSON)."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, per_param in state["state"].items():
        for name, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state/{index}/{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _optimizer_from_files(tensors: dict[str, torch.Tensor], groups: dict, path: Path) -> dict:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        parts = key.split("/")
        if len(parts) != 3 or parts[0] != "state" or not parts[1].isdigit():
            raise _ckpt().CheckpointError(f"{path / 'optimizer.safetensors'}: unexpected tensor {key!r}")
        state.setdefault(int(parts[1]), {})[parts[2]] = value
    for index, values in groups.get("scalars", {}).items():
        state.setdefault(int(index), {}).update(values)
    param_groups = []
    for g in groups["param_groups"]:
        g = dict(g)
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
        param_groups.append(g)
    return {"state": state, "param_groups": param_groups}


def _rng_state(device: torch.device) -> tuple[dict[str, torch.Tensor], dict]:
    """Every random generator's state: torch CPU (and CUDA), Python's random, numpy's."""
    tensors = {"torch_cpu": torch.get_rng_state()}
    if device.type == "cuda":
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda/{i}"] = s
    version, internal, gauss = random.getstate()
    extra: dict = {"python": {"version": version, "state": list(internal), "gauss_next": gauss}}
    try:
        import numpy as np
    except ImportError:  # numpy is a dependency, but training does not need it
        np = None
    if np is not None:
        name, keys, pos, has_gauss, cached = np.random.get_state()
        tensors["numpy_keys"] = torch.from_numpy(keys.astype("int64"))
        extra["numpy"] = {"name": name, "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}
    return tensors, extra


def _set_rng_state(tensors: dict[str, torch.Tensor], extra: dict, device: torch.device) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    cuda_keys = sorted((k for k in tensors if k.startswith("torch_cuda/")), key=lambda k: int(k.split("/")[1]))
    cuda = [tensors[k] for k in cuda_keys]
    if cuda and device.type == "cuda" and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    py = extra["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]))
    if "numpy" in extra and "numpy_keys" in tensors:
        import numpy as np

        n = extra["numpy"]
        keys = tensors["numpy_keys"].numpy().astype("uint32")
        np.random.set_state((n["name"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
