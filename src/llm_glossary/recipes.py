"""Named training recipes: the model size and the two schedules, in one place.

A recipe is what the walkthrough page runs, what the tests run in seconds and what the
command line's ``--config NAME`` reads. Each holds the model's :class:`~llm_glossary.model.LlamaConfig`
keyword arguments (the vocabulary size comes from the tokenizer) and one
:class:`~llm_glossary.train.TrainConfig` for pretraining and one for fine-tuning.

The ``walkthrough`` numbers were chosen by measurement (``benchmarks/walkthrough.py``) so that
pretraining, fine-tuning and evaluation fit in 40 s on a 2-core CPU and meet the walkthrough's
goals. ``walkthrough-gpu`` is a larger model for the same kind of run on one GPU, with the same
design (untied embeddings with a larger learning rate, length-grouped batches), a learning rate
scaled down for its width and a pretraining kept to a few passes over the small corpus; it has
not been run on a GPU yet, so its numbers are a starting point, not a measured choice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from llm_glossary.train import TrainConfig

__all__ = ["Recipe", "RECIPES", "recipe"]


@dataclass(frozen=True)
class Recipe:
    """A model size and the pretraining and fine-tuning schedules that go with it.

    Attributes:
        name: the recipe's name in :data:`RECIPES`.
        model: :class:`~llm_glossary.model.LlamaConfig` keyword arguments without ``vocab_size``.
        pretrain: schedule of next-token training on the corpus.
        finetune: schedule of supervised fine-tuning on the dialogs.
        tokenizer_vocab: vocabulary size of the corpus tokenizer (before the chat tokens).
        eval_replies: held-out prompts per kind and language that the evaluation decodes
            greedily (the exact-answer check covers every held-out prompt regardless).
    """

    name: str
    model: dict = field(default_factory=dict)
    pretrain: TrainConfig = field(default_factory=TrainConfig)
    finetune: TrainConfig = field(default_factory=TrainConfig)
    tokenizer_vocab: int = 4000
    eval_replies: int = 8

    def to_dict(self) -> dict:
        """Plain JSON-able values (for cache keys and for printing)."""
        return {
            "name": self.name,
            "model": dict(self.model),
            "pretrain": self.pretrain.to_dict(),
            "finetune": self.finetune.to_dict(),
            "tokenizer_vocab": self.tokenizer_vocab,
            "eval_replies": self.eval_replies,
        }


# --8<-- [start:recipes]
_WALK_MODEL = dict(
    dim=128,
    n_layers=3,
    n_heads=4,
    n_kv_heads=1,  # multi-query: one key/value head, the cheapest step here
    ffn_hidden=384,
    max_seq_len=320,
    rope_theta=10000.0,
    tie_embeddings=False,
)

RECIPES: dict[str, Recipe] = {
    # seconds on a CPU: for tests
    "tiny": Recipe(
        name="tiny",
        model=dict(
            dim=32,
            n_layers=1,
            n_heads=2,
            n_kv_heads=1,
            ffn_hidden=64,
            max_seq_len=192,
            rope_theta=10000.0,
            tie_embeddings=True,
        ),
        pretrain=TrainConfig(
            steps=6,
            batch_size=4,
            micro_batch_size=4,
            seq_len=64,
            lr=2e-2,
            min_lr=2e-3,
            warmup_steps=1,
            eval_every=3,
            seed=0,
        ),
        finetune=TrainConfig(
            steps=4,
            batch_size=4,
            micro_batch_size=4,
            seq_len=160,
            lr=2e-2,
            min_lr=2e-3,
            warmup_steps=1,
            seed=0,
        ),
        eval_replies=1,
    ),
    # the page's run: under 40 s on a 2-core CPU
    "walkthrough": Recipe(
        name="walkthrough",
        model=_WALK_MODEL,
        pretrain=TrainConfig(
            steps=32,  # 65,536 tokens: about one pass over the corpus
            batch_size=16,
            micro_batch_size=16,
            seq_len=128,
            lr=3e-3,
            min_lr=3e-4,
            warmup_steps=4,
            eval_every=8,
            eval_max_sequences=32,
            seed=0,
            embedding_lr_scale=10.0,
        ),
        finetune=TrainConfig(
            steps=600,
            batch_size=6,
            micro_batch_size=6,
            seq_len=320,
            lr=8e-3,
            min_lr=8e-4,
            warmup_steps=25,
            seed=0,
            group_by_length=16,
            embedding_lr_scale=10.0,
        ),
    ),
    # the same run, larger, on one GPU (not measured on one yet)
    "walkthrough-gpu": Recipe(
        name="walkthrough-gpu",
        model=dict(
            dim=384,
            n_layers=6,
            n_heads=12,
            n_kv_heads=4,
            ffn_hidden=1024,
            max_seq_len=320,
            rope_theta=10000.0,
            tie_embeddings=False,
        ),
        pretrain=TrainConfig(
            steps=60,
            batch_size=32,
            micro_batch_size=32,
            seq_len=256,
            lr=1e-3,
            min_lr=1e-4,
            warmup_steps=10,
            eval_every=10,
            seed=0,
            embedding_lr_scale=20.0,
        ),
        finetune=TrainConfig(
            steps=1500,
            batch_size=32,
            micro_batch_size=32,
            seq_len=320,
            lr=3e-3,
            min_lr=3e-4,
            warmup_steps=50,
            eval_every=500,
            seed=0,
            group_by_length=16,
            embedding_lr_scale=20.0,
        ),
    ),
}
# --8<-- [end:recipes]


def recipe(name: str) -> Recipe:
    """The recipe called ``name``.

    Raises:
        ValueError: an unknown name (the message lists the known ones).

    Examples:
        >>> recipe("tiny").model["dim"]
        32
    """
    if not isinstance(name, str) or name not in RECIPES:
        raise ValueError(
            f"unknown recipe {name!r}; choose one of {sorted(RECIPES)}"
        )
    return RECIPES[name]
