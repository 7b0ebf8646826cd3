"""Dialog files and the chat template: from a JSON file to ``(ids, labels)`` and a batch.

The steps, one function each (torchtune's chat datasets and LLMs-from-scratch ch. 7 are
organised the same way):

1. :func:`load_dialogs` reads a dialog file and checks it, collecting every problem into one
   :class:`DialogFormatError` that names the file, the line and column (syntax) or the JSON
   path and dialog id (content).
2. :func:`render` writes a conversation in the Llama 3 chat layout::

       <|begin_of_text|><|start_header_id|>user<|end_header_id|>\\n\\nHi!<|eot_id|>...

3. :func:`encode_dialog` turns it into token ids and labels: -100 (ignored by the loss)
   everywhere except the assistant's content and its ``<|eot_id|>``. It encodes message by
   message, so a boundary between trained and untrained tokens never falls inside a token.
4. :func:`collate` pads a batch on the right with ``<|pad|>`` and counts the target tokens,
   so that a loss can be a sum over target tokens divided by their total count.

Roles are "system" (instructions, first only), "user" and "assistant", as in OpenAI
messages, Llama 3 and Hugging Face chat templates. Files that call the replying side
"system" are read with ``role_map={"system": "assistant"}``, never guessed.
"""

from __future__ import annotations

import difflib
import json
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Union

from llm_glossary.tokenizer import (
    BEGIN_OF_TEXT,
    CHAT_SPECIALS,
    END_HEADER,
    EOT,
    PAD,
    START_HEADER,
    ByteFallbackBPE,
    corpus_tokenizer,
)

__all__ = [
    "ROLES",
    "BEGIN_OF_TEXT",
    "START_HEADER",
    "END_HEADER",
    "EOT",
    "PAD",
    "CHAT_SPECIALS",
    "CHAT_TEMPLATE",
    "IGNORE_INDEX",
    "MAX_CONTENT_CHARS",
    "MAX_SHOWN_PROBLEMS",
    "TRAIN_ON",
    "Message",
    "Dialog",
    "DialogFormatError",
    "Batch",
    # "load_dialogs", "save_dialogs": next commit
    "dialog_schema",
    "schema_path",
    "chat_tokenizer",
    "render",
    "encode_dialog",
    "encode_prompt",
    "collate",
]

ROLES = ("system", "user", "assistant")
IGNORE_INDEX = -100  # the label PyTorch's cross_entropy skips (its default ignore_index)
TRAIN_ON = ("assistant", "all", "last")
MAX_CONTENT_CHARS = 8000  # longest message content accepted by load_dialogs, in characters
MAX_SHOWN_PROBLEMS = 20  # problems listed in a DialogFormatError message; the rest are counted
_MAX_KEPT_PROBLEMS = 1000  # problems kept in .problems (a huge broken file stays cheap)


# ------------------------------------------------------------------ data model
@dataclass(frozen=True)
class Message:
    """One message of a conversation.

    Args:
        role: "system", "user" or "assistant".
        content: the text (any string without lone surrogates).
    """

    role: str
    content: str

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"Message role must be one of {ROLES}, got {self.role!r}")
        if not isinstance(self.content, str):
            raise ValueError(f"Message content must be a str, got {type(self.content).__name__}")
        bad = _lone_surrogate(self.content)
        if bad is not None:
            raise ValueError(
                f"Message content has a lone surrogate {self.content[bad]!r} at index {bad}")


@dataclass(frozen=True)
class Dialog:
    """A conversation and where it came from.

    Args:
        id: the dialog's id (an int or a string), unique within a file.
        messages: the messages in order.
        source: where it was read: ``"file.json: dialogs[3]"`` or ``"file.jsonl:12"``.
    """

    id: Union[int, str]
    messages: tuple[Message, ...]
    source: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.messages, tuple):
            object.__setattr__(self, "messages", tuple(self.messages))
        for m in self.messages:
            if not isinstance(m, Message):
                raise ValueError(f"Dialog messages must be Message objects, got {type(m).__name__}")
        if isinstance(self.id, bool) or not isinstance(self.id, (int, str)):
            raise ValueError(f"Dialog id must be an int or a str, got {self.id!r}")


class DialogFormatError(ValueError):
    """A dialog file with problems; ``.problems`` lists them all (each names its place).

    The message shows the first :data:`MAX_SHOWN_PROBLEMS` and counts the rest.
    """

    def __init__(self, path: str | Path, problems: Sequence[str], n_more: int = 0) -> None:
        self.path = str(path)
        self.problems = list(problems)
        total = len(self.problems) + n_more
        shown = self.problems[:MAX_SHOWN_PROBLEMS]
        head = f"{path}: {total} problem{'s' if total != 1 else ''}"
        lines = [head] + [f"  - {p}" for p in shown]
        if total > len(shown):
            lines.append(f"  ... and {total - len(shown)} more")
        super().__init__("\n".join(lines))


def _lone_surrogate(text: str) -> int | None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        return err.start
    return None


# ------------------------------------------------------------------ tokens
_CHAT_TOKENIZERS: dict[int, ByteFallbackBPE] = {}


def chat_tokenizer(vocab_size: int = 4000) -> ByteFallbackBPE:
    """The shared corpus tokenizer plus the five chat special tokens (memoized).

    A new tokenizer object (the shared :func:`~llm_glossary.tokenizer.corpus_tokenizer` is
    not changed): the same pieces and merges, so its ids of plain text are the corpus
    tokenizer's, then ``<|begin_of_text|>``, ``<|start_header_id|>``, ``<|end_header_id|>``,
    ``<|eot_id|>`` and ``<|pad|>`` as the last five ids.

    Examples:
        >>> tok = chat_tokenizer()
        >>> tok is chat_tokenizer(), tok.vocab_size
        (True, 4005)
        >>> tok.eot_id != tok.pad_id
        True
    """
    if vocab_size not in _CHAT_TOKENIZERS:
        _CHAT_TOKENIZERS[vocab_size] = corpus_tokenizer(vocab_size).with_special_tokens(CHAT_SPECIALS)
    return _CHAT_TOKENIZERS[vocab_size]


# --8<-- [start:render]
def render(messages: Dialog | Iterable, *, add_generation_prompt: bool = False) -> str:
    """The conversation as one string in the Llama 3 chat layout.

    ``<|begin_of_text|>``, then per message
    ``<|start_header_id|>{role}<|end_header_id|>\\n\\n{content}<|eot_id|>``; the generation
    prompt is the assistant header (with its blank line), where the model writes next.

    Args:
        messages: a :class:`Dialog`, or Messages, or ``{"role", "content"}`` dicts.
        add_generation_prompt: end with the assistant header.

    Examples:
        >>> render([Message("user", "Hi!")], add_generation_prompt=True)
        '<|begin_of_text|><|start_header_id|>user<|end_header_id|>\\n\\nHi!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\\n\\n'
    """
    parts = [BEGIN_OF_TEXT]
    for m in _as_messages(messages):
        parts += [START_HEADER, m.role, END_HEADER, "\n\n", m.content, EOT]
    if add_generation_prompt:
        parts += [START_HEADER, "assistant", END_HEADER, "\n\n"]
    return "".join(parts)
# --8<-- [end:render]


# The same layout for Hugging Face (tokenizer_config.json): assistant content and its
# <|eot_id|> sit inside {% generation %}, the block return_assistant_tokens_mask marks.
CHAT_TEMPLATE = (
    "{{- '" + BEGIN_OF_TEXT + "' }}"
    "{%- for message in messages %}"
    "{{- '" + START_HEADER + "' + message['role'] + '" + END_HEADER + "\\n\\n' }}"
    "{%- if message['role'] == 'assistant' %}"
    "{% generation %}{{- message['content'] + '" + EOT + "' }}{% endgeneration %}"
    "{%- else %}"
    "{{- message['content'] + '" + EOT + "' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '" + START_HEADER + "assistant" + END_HEADER + "\\n\\n' }}"
    "{%- endif %}"
)


def _as_messages(messages: Dialog | Iterable) -> tuple[Message, ...]:
    if isinstance(messages, Dialog):
        return messages.messages
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Iterable):
        raise ValueError(
            f"expected a Dialog or a sequence of messages, got {type(messages).__name__}")
    out = []
    for i, m in enumerate(messages):
        if isinstance(m, Message):
            out.append(m)
        elif isinstance(m, Mapping) and set(m) >= {"role", "content"}:
            out.append(Message(m["role"], m["content"]))
        else:
            raise ValueError(
                f"message {i} must be a Message or a {{'role', 'content'}} dict, got {m!r}")
    return tuple(out)


def _chat_ids(tokenizer: ByteFallbackBPE) -> tuple[int, int, int, int]:
    try:
        return tuple(tokenizer.piece_to_id(t) for t in (BEGIN_OF_TEXT, START_HEADER, END_HEADER, EOT))
    except ValueError:
        missing = [t for t in CHAT_SPECIALS if t not in tokenizer.special_tokens]
        raise ValueError(
            f"the tokenizer has no chat special token {missing[0]!r}; use chat_tokenizer() or "
            "tokenizer.with_special_tokens(CHAT_SPECIALS)") from None


@lru_cache(maxsize=64)
def _separator(tokenizer: ByteFallbackBPE) -> tuple[int, ...]:
    return tuple(tokenizer.encode("\n\n"))


def _message_parts(m: Message, tokenizer: ByteFallbackBPE, ids4) -> tuple[list[int], list[int]]:
    """(header ids, content ids + <|eot_id|>) of one message."""
    _, start, end, eot = ids4
    sep = list(_separator(tokenizer))
    # The text between <|end_header_id|> and <|eot_id|> is one piece of text ("\n\n" +
    # content), as a whole-string tokenizer sees it; check that its tokens split exactly at
    # the blank line, so the trained span starts on a token boundary.
    body = tokenizer.encode("\n\n" + m.content)
    if body[: len(sep)] != sep:
        raise ValueError(
            "the tokenizer merges the header's blank line with the content "
            f"{m.content[:20]!r}, so the trained span would start inside a token")
    header = [start, *tokenizer.encode(m.role), end, *sep]
    return header, [*body[len(sep):], eot]


# --8<-- [start:encode_dialog]
def encode_dialog(
    dialog: Dialog | Iterable, tokenizer: ByteFallbackBPE, *, train_on: str = "assistant"
) -> tuple[list[int], list[int]]:
    """Token ids and labels of one conversation, encoded message by message.

    Args:
        dialog: a :class:`Dialog` or a sequence of messages.
        tokenizer: a tokenizer with the chat special tokens (:func:`chat_tokenizer`).
        train_on: ``"assistant"`` (every assistant message), ``"last"`` (the last assistant
            message only) or ``"all"`` (every token).

    Returns:
        ``(ids, labels)`` of equal length. ``labels[i]`` is ``ids[i]`` where the token is a
        target and -100 elsewhere; a trained message contributes its content and its
        ``<|eot_id|>``, never its header. The loss shifts by one position (the logits at
        ``i`` predict ``labels[i + 1]``), as in Hugging Face.

    Examples:
        >>> tok = chat_tokenizer()
        >>> ids, labels = encode_dialog([Message("user", "Hi"),
        ...                              Message("assistant", "Hello")], tok)
        >>> tok.decode([i for i, l in zip(ids, labels) if l != -100],
        ...            skip_special=False)
        'Hello<|eot_id|>'
    """
    if train_on not in TRAIN_ON:
        raise ValueError(f"train_on must be one of {TRAIN_ON}, got {train_on!r}")
    messages = _as_messages(dialog)
    ids4 = _chat_ids(tokenizer)
    last = max((k for k, m in enumerate(messages) if m.role == "assistant"), default=-1)
    ids, labels = [ids4[0]], [IGNORE_INDEX]
    for k, m in enumerate(messages):
        header, content = _message_parts(m, tokenizer, ids4)
        trained = train_on == "all" or (
            m.role == "assistant" and (train_on == "assistant" or k == last))
        ids += header + content
        labels += header if train_on == "all" else [IGNORE_INDEX] * len(header)
        labels += content if trained else [IGNORE_INDEX] * len(content)
    if train_on == "all":
        labels[0] = ids[0]
    return ids, labels
# --8<-- [end:encode_dialog]


def encode_prompt(messages: Dialog | Iterable, tokenizer: ByteFallbackBPE) -> list[int]:
    """Ids of the conversation plus the assistant header: what a model continues.

    Equal to the ids of ``render(messages, add_generation_prompt=True)``; the ids of a
    dialog that ends with an assistant reply start with the prompt of the messages before it.

    Examples:
        >>> tok = chat_tokenizer()
        >>> user, reply = Message("user", "Hi"), Message("assistant", "Hello")
        >>> prompt = encode_prompt([user], tok)
        >>> encode_dialog([user, reply], tok)[0][:len(prompt)] == prompt
        True
    """
    ids4 = _chat_ids(tokenizer)
    ids = [ids4[0]]
    for m in _as_messages(messages):
        header, content = _message_parts(m, tokenizer, ids4)
        ids += header + content
    ids += [ids4[1], *tokenizer.encode("assistant"), ids4[2], *_separator(tokenizer)]
    return ids


# --8<-- [start:collate]
@dataclass
class Batch:
    """A padded batch. Shapes (B, T); ``n_targets`` counts labels that a loss uses.

    Attributes:
        input_ids: (B, T) long, right-padded with the pad id.
        labels: (B, T) long, -100 at padding and untrained positions.
        attention_mask: (B, T) bool, False at padding.
        n_targets: positions ``t >= 1`` with ``labels[:, t] != -100``: the targets left
            after the one-position shift (logits at ``t - 1`` predict ``labels[:, t]``).
    """

    input_ids: Any
    labels: Any
    attention_mask: Any
    n_targets: int

    def to(self, device) -> Batch:
        """The same batch on ``device``."""
        return Batch(self.input_ids.to(device), self.labels.to(device),
                     self.attention_mask.to(device), self.n_targets)


def collate(examples: Sequence[tuple[Sequence[int], Sequence[int]]], pad_id: int) -> Batch:
    """Pad ``(ids, labels)`` pairs on the right into one :class:`Batch`.

    Args:
        examples: pairs as returned by :func:`encode_dialog`.
        pad_id: the padding id (``tokenizer.pad_id``), never the end-of-turn id: a padded
            ``<|eot_id|>`` would teach nothing, but a model that sees pad ids as
            ``<|eot_id|>`` in its input can no longer tell the end of a turn from filler.

    Examples:
        >>> b = collate([([5, 6, 7], [-100, 6, 7]), ([5, 8], [-100, 8])], pad_id=0)
        >>> b.input_ids.tolist(), b.labels.tolist(), b.n_targets
        ([[5, 6, 7], [5, 8, 0]], [[-100, 6, 7], [-100, 8, -100]], 3)
    """
    import torch

    if isinstance(pad_id, bool) or not isinstance(pad_id, int) or pad_id < 0:
        raise ValueError(f"pad_id must be an int >= 0, got {pad_id!r}")
    if isinstance(examples, (str, bytes)) or not isinstance(examples, Sequence) or not examples:
        raise ValueError("examples must be a non-empty sequence of (ids, labels) pairs")
    for k, ex in enumerate(examples):
        if not (isinstance(ex, (tuple, list)) and len(ex) == 2):
            raise ValueError(f"examples[{k}] must be an (ids, labels) pair, got {type(ex).__name__}")
        if len(ex[0]) != len(ex[1]) or len(ex[0]) == 0:
            raise ValueError(
                f"examples[{k}]: ids and labels must be non-empty and of equal length, "
                f"got {len(ex[0])} and {len(ex[1])}")
    T = max(len(ids) for ids, _ in examples)
    B = len(examples)
    input_ids = torch.full((B, T), pad_id, dtype=torch.long)
    labels = torch.full((B, T), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((B, T), dtype=torch.bool)
    for b, (ids, labs) in enumerate(examples):
        n = len(ids)
        input_ids[b, :n] = torch.as_tensor(list(ids), dtype=torch.long)
        labels[b, :n] = torch.as_tensor(list(labs), dtype=torch.long)
        attention_mask[b, :n] = True
    n_targets = int((labels[:, 1:] != IGNORE_INDEX).sum())
    return Batch(input_ids, labels, attention_mask, n_targets)
# --8<-- [end:collate]


# ------------------------------------------------------------------ files
def schema_path() -> Path:
    """Path of the JSON Schema of the project format (package data ``dialogs.schema.json``)."""
    return Path(str(resources.files("llm_glossary") / "data" / "dialogs.schema.json"))


@lru_cache(maxsize=1)
def dialog_schema() -> dict:
    """The JSON Schema (draft 2020-12) of the project format, as a dict."""
    return json.loads(schema_path().read_text(encoding="utf-8"))

