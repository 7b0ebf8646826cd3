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

from llm_glossary.checkpoint import atomic_write_text
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
    "load_dialogs",
    "save_dialogs",
    "dialog_schema",
    "schema_path",
    "chat_tokenizer",
    "render",
    "render_template",
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
def render(
    messages: Dialog | Iterable, *, add_generation_prompt: bool = False
) -> str:
    """The conversation as one string in the Llama 3 chat layout.

    ``<|begin_of_text|>``, then per message ``<|start_header_id|>``, the
    role, ``<|end_header_id|>``, a blank line, the content, ``<|eot_id|>``.
    The generation prompt is the assistant header with its blank line:
    where the model writes next.

    Args:
        messages: a :class:`Dialog`, Messages, or ``{"role", "content"}``
            dicts.
        add_generation_prompt: end with the assistant header.

    Examples:
        >>> hi = [Message("user", "Hi!")]
        >>> print(render(hi, add_generation_prompt=True))
        <|begin_of_text|><|start_header_id|>user<|end_header_id|>
        <BLANKLINE>
        Hi!<|eot_id|><|start_header_id|>assistant<|end_header_id|>
        <BLANKLINE>
        <BLANKLINE>
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


def render_template(
    messages: Dialog | Iterable, *, add_generation_prompt: bool = False, template: str = CHAT_TEMPLATE
) -> tuple[str, list[tuple[int, int]]]:
    """Render a Jinja chat template the way transformers does, with its generation spans.

    Uses Jinja2's sandboxed environment with ``trim_blocks`` and ``lstrip_blocks`` (the
    settings of transformers' ``apply_chat_template``) and a ``{% generation %}`` tag that
    records the characters it wraps, which is what transformers turns into the assistant
    mask. Jinja2 is a dependency of MkDocs, so pages can run this; the tests compare it
    with transformers' own renderer.

    Returns:
        ``(text, spans)``: the rendered string and the ``(start, end)`` character spans of
        the ``{% generation %}`` blocks.

    Examples:
        >>> text, spans = render_template([Message("user", "Hi"), Message("assistant", "Yo")])
        >>> text == render([Message("user", "Hi"), Message("assistant", "Yo")])
        True
        >>> [text[a:b] for a, b in spans]
        ['Yo<|eot_id|>']
    """
    import jinja2
    from jinja2.ext import Extension
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    blocks: list[str] = []
    spans: list[tuple[int, int]] = []

    class Generation(Extension):
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_mark"), [], [], body).set_lineno(lineno)

        def _mark(self, caller):
            text = caller()
            start = len("".join(blocks))  # everything rendered before this block
            spans.append((start, start + len(text)))
            return text

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[Generation])
    as_dicts = [{"role": m.role, "content": m.content} for m in _as_messages(messages)]
    for block in env.from_string(template).generate(
            messages=as_dicts, add_generation_prompt=add_generation_prompt):
        blocks.append(block)
    return "".join(blocks), spans


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
    dialog: Dialog | Iterable,
    tokenizer: ByteFallbackBPE,
    *,
    train_on: str = "assistant",
    train_eot: bool = True,
) -> tuple[list[int], list[int]]:
    """Token ids and labels of one conversation, encoded message by message.

    Args:
        dialog: a :class:`Dialog` or a sequence of messages.
        tokenizer: a tokenizer with the chat special tokens
            (:func:`chat_tokenizer`).
        train_on: ``"assistant"`` (every assistant message), ``"last"``
            (the last assistant message only) or ``"all"`` (every token).
        train_eot: False leaves every ``<|eot_id|>`` out of the targets
            (only to show what a model trained that way never learns).

    Returns:
        ``(ids, labels)`` of equal length. ``labels[i]`` is ``ids[i]``
        where the token is a target and -100 elsewhere. A trained message
        contributes its content and its ``<|eot_id|>``, never its header.
        The loss shifts by one position (the logits at ``i`` predict
        ``labels[i + 1]``), as in Hugging Face.

    Examples:
        >>> tok = chat_tokenizer()
        >>> ids, labels = encode_dialog([Message("user", "Hi"),
        ...                              Message("assistant", "Hello")], tok)
        >>> trained = [i for i, label in zip(ids, labels) if label != -100]
        >>> tok.decode(trained, skip_special=False)
        'Hello<|eot_id|>'
    """
    if train_on not in TRAIN_ON:
        raise ValueError(
            f"train_on must be one of {TRAIN_ON}, got {train_on!r}")
    if not isinstance(train_eot, bool):
        raise ValueError(
            f"train_eot must be True or False, got {train_eot!r}")
    messages = _as_messages(dialog)
    ids4 = _chat_ids(tokenizer)
    assistant = [k for k, m in enumerate(messages) if m.role == "assistant"]
    last = assistant[-1] if assistant else -1
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
    if not train_eot:  # ids4[3] is <|eot_id|>
        labels = [IGNORE_INDEX if i == ids4[3] else label
                  for i, label in zip(ids, labels)]
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
    """A padded batch; tensors of shape (B, T).

    Attributes:
        input_ids: (B, T) long, right-padded with the pad id.
        labels: (B, T) long, -100 at padding and untrained positions.
        attention_mask: (B, T) bool, False at padding.
        n_targets: positions ``t >= 1`` with ``labels[:, t] != -100``:
            the targets left after the one-position shift (the logits
            at ``t - 1`` predict ``labels[:, t]``).
    """

    input_ids: Any
    labels: Any
    attention_mask: Any
    n_targets: int

    def to(self, device) -> Batch:
        """The same batch on ``device``."""
        return Batch(self.input_ids.to(device), self.labels.to(device),
                     self.attention_mask.to(device), self.n_targets)


def collate(
    examples: Sequence[tuple[Sequence[int], Sequence[int]]], pad_id: int
) -> Batch:
    """Pad ``(ids, labels)`` pairs on the right into one :class:`Batch`.

    Args:
        examples: pairs as returned by :func:`encode_dialog`.
        pad_id: the padding id (``tokenizer.pad_id``), never the
            end-of-turn id: a model whose input holds ``<|eot_id|>`` as
            filler cannot tell the end of a turn from padding, and labels
            made by masking the pad id would erase every real end of turn.

    Examples:
        >>> b = collate([([5, 6, 7], [-100, 6, 7]), ([5, 8], [-100, 8])], 0)
        >>> b.input_ids.tolist(), b.labels.tolist(), b.n_targets
        ([[5, 6, 7], [5, 8, 0]], [[-100, 6, 7], [-100, 8, -100]], 3)
    """
    import torch

    _check_examples(examples, pad_id)
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


def _check_examples(examples, pad_id) -> None:
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


# ------------------------------------------------------------------ files
def schema_path() -> Path:
    """Path of the JSON Schema of the project format (package data ``dialogs.schema.json``)."""
    return Path(str(resources.files("llm_glossary") / "data" / "dialogs.schema.json"))


@lru_cache(maxsize=1)
def dialog_schema() -> dict:
    """The JSON Schema (draft 2020-12) of the project format, as a dict."""
    return json.loads(schema_path().read_text(encoding="utf-8"))



# The three dialog layouts load_dialogs reads: (list key, role key, content key, schema def).
_KINDS = {
    "conversation": ("speaker", "utterance", "dialog"),  # the project format
    "messages": ("role", "content", "openai_dialog"),  # OpenAI chat messages
    "conversations": ("from", "value", "sharegpt_dialog"),  # ShareGPT
}
_DEFAULT_NAMES = {
    "conversation": {r: r for r in ROLES},
    "messages": {r: r for r in ROLES},
    "conversations": {"human": "user", "gpt": "assistant", "system": "system",
                      "user": "user", "assistant": "assistant"},
}
# Quotes that word processors, blogs and input methods put where JSON needs '"' (U+0022).
_TYPOGRAPHIC_QUOTES = "\u201c\u201d\u2018\u2019\u201e\u201f\u201a\u2033\u00ab\u00bb\uff02"
_QUOTE_ADVICE = (
    "JSON needs the straight quote \" (U+0022) around keys and strings; word processors, "
    "blogs and some input methods replace it with typographic quotes (\u201c \u201d \u2018 \u2019), "
    "often when an example is copied from a web page. Retype them as \", or turn off "
    "'smart quotes' in the editor")


class _Obj(dict):
    """A JSON object that remembers keys given more than once (JSON keeps the last)."""

    duplicate_keys: tuple = ()


def _object_pairs(pairs):
    obj = _Obj(pairs)
    if len(obj) != len(pairs):
        seen: set = set()
        obj.duplicate_keys = tuple(dict.fromkeys(k for k, _ in pairs if k in seen or seen.add(k)))
    return obj


class _Problems:
    """Collects problems (keeps the first _MAX_KEPT_PROBLEMS, counts the rest)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.items: list[str] = []
        self.n_more = 0

    def add(self, where: str, what: str) -> None:
        if len(self.items) < _MAX_KEPT_PROBLEMS:
            self.items.append(f"{self.path}: {where}: {what}" if where else f"{self.path}: {what}")
        else:
            self.n_more += 1

    def __len__(self) -> int:
        return len(self.items) + self.n_more

    def fail(self) -> DialogFormatError:
        return DialogFormatError(self.path, self.items, self.n_more)


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the string {_short(value)}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _short(value: Any, n: int = 40) -> str:
    text = json.dumps(value, ensure_ascii=False) if isinstance(value, str) else repr(value)
    return text if len(text) <= n else text[: n - 1] + "…"


def _suggest(key: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(options), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _join_path(base: str, parts: Iterable) -> str:
    out = base
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


@lru_cache(maxsize=None)
def _validator(definition: str):
    import jsonschema

    schema = dialog_schema()
    root = {"$schema": schema["$schema"], "$defs": schema["$defs"], "$ref": f"#/$defs/{definition}"}
    return jsonschema.Draft202012Validator(root)


def _schema_problems(obj: Any, definition: str, where: str, label: str, problems: _Problems) -> None:
    """Validate ``obj`` with the schema and turn each error into one plain message."""
    errors = sorted(_validator(definition).iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))
    typo_fixed: set = set()  # (path, key) of required keys explained by an unknown near miss
    for e in errors:
        if e.validator == "additionalProperties" and isinstance(e.instance, dict):
            allowed = list(e.schema.get("properties", {}))
            for key in e.instance:
                if key in allowed:
                    continue
                close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
                if close and close[0] not in e.instance:
                    typo_fixed.add((tuple(e.absolute_path), close[0]))
    for e in errors:
        place = _join_path(where, e.absolute_path) + label
        v, inst = e.validator, e.instance
        if v == "required":
            for key in e.validator_value:
                if isinstance(inst, dict) and key not in inst and (tuple(e.absolute_path), key) not in typo_fixed:
                    problems.add(place, f"missing key {key!r} (expected the keys "
                                        f"{', '.join(map(repr, e.schema.get('properties', {})))})")
        elif v == "additionalProperties":
            allowed = list(e.schema.get("properties", {}))
            for key in inst:
                if key not in allowed:
                    hint = _suggest(str(key), allowed) or _foreign_key_hint(str(key))
                    problems.add(place, f"unknown key {key!r} (allowed: "
                                        f"{', '.join(map(repr, allowed))}){hint}")
        elif v == "type":
            want = e.validator_value
            want = " or ".join({"integer": "an integer", "string": "a string", "array": "a list",
                                "object": "an object"}.get(w, w) for w in ([want] if isinstance(want, str) else want))
            problems.add(place, f"expected {want}, found {_type_name(inst)}")
        elif v == "minItems":
            problems.add(place, "the list is empty; expected at least one item")
        elif v in ("minLength", "pattern") and isinstance(inst, str):
            what = "an empty string" if not inst else f"only whitespace ({_short(inst)})"
            problems.add(place, f"{what}; expected some text")
        elif v == "maxLength":
            problems.add(place, f"{len(inst)} characters long; the limit is {MAX_CONTENT_CHARS} "
                                "(llm_glossary.dialog.MAX_CONTENT_CHARS): split or shorten the message")
        elif v == "enum":
            continue  # roles are checked in code, where role_map is known
        else:
            problems.add(place, e.message)


def _foreign_key_hint(key: str) -> str:
    for list_key, (role_key, content_key, _) in _KINDS.items():
        if key in (role_key, content_key):
            return (f"; {role_key!r}/{content_key!r} belong to dialogs written with "
                    f"{list_key!r}; keep one layout per dialog")
    return ""


def _dialog_from(obj: Any, where: str, source: str, default_id: str, names: dict,
                 role_map_given: bool, problems: _Problems) -> Dialog | None:
    """Check one dialog object (any of the three layouts); a Dialog, or None on problems."""
    before = len(problems)
    if not isinstance(obj, dict):
        problems.add(where, f"expected a dialog object, found {_type_name(obj)}")
        return None
    for key in getattr(obj, "duplicate_keys", ()):
        problems.add(where, f"key {key!r} appears more than once (JSON keeps only the last)")
    kinds = [k for k in _KINDS if k in obj]
    if len(kinds) != 1:
        if kinds:
            problems.add(where, f"both {kinds[0]!r} and {kinds[1]!r}; expected one list of messages")
        else:
            hint = ""
            for key in obj:
                hint = _suggest(str(key), _KINDS)
                if hint:
                    hint = f" (found {key!r}{hint})"
                    break
            problems.add(where, "missing key 'conversation'; a dialog holds its messages in "
                                "'conversation' (project format), 'messages' (OpenAI) or "
                                f"'conversations' (ShareGPT){hint}")
        return None
    kind = kinds[0]
    role_key, content_key, definition = _KINDS[kind]
    did = obj.get("id", default_id)
    label = f" (dialog id {_short(did)})" if "id" in obj and isinstance(did, (int, str)) else ""
    _schema_problems(obj, definition, where, label, problems)
    turns = obj[kind] if isinstance(obj[kind], list) else []
    roles: list[str | None] = []
    for t, turn in enumerate(turns):
        place = f"{where}.{kind}[{t}]" if where else f"{kind}[{t}]"
        if not isinstance(turn, dict):
            roles.append(None)
            continue
        for key in getattr(turn, "duplicate_keys", ()):
            problems.add(place + label, f"key {key!r} appears more than once (JSON keeps only the last)")
        name, content = turn.get(role_key), turn.get(content_key)
        role = names.get(name) if isinstance(name, str) else None
        if isinstance(name, str) and role is None:
            allowed = ", ".join(repr(n) for n in names)
            problems.add(f"{place}.{role_key}{label}", (
                f"unknown role {name!r}; expected one of {allowed}. For other names pass "
                f"role_map, e.g. load_dialogs(path, role_map={{{name!r}: 'assistant'}})"))
        if isinstance(content, str):
            bad = _lone_surrogate(content)
            if bad is not None:
                problems.add(f"{place}.{content_key}{label}",
                             f"a lone surrogate {content[bad]!r} at index {bad} (a \\u escape "
                             "without its pair); expected valid Unicode text")
        roles.append(role)
    if len(problems) > before:
        return None
    prefix = f"{where}.{kind}" if where else kind
    seed = next((t for t in range(1, len(roles)) if roles[t] == "system" and roles[t - 1] == "user"), None)
    if seed is not None:
        names_used = {turn.get(role_key) for turn in turns}
        fix = ("" if role_map_given else
               " or read the file with load_dialogs(path, role_map={'system': 'assistant'})")
        problems.add(f"{prefix}[{seed}].{role_key}{label}", (
            f"{turns[seed].get(role_key)!r} answers the user here. In OpenAI messages, Llama 3 "
            "and Hugging Face chat templates 'system' is the instruction placed before a "
            "conversation and the replying side is 'assistant'. Rename the speaker to "
            f"'assistant'{fix}"
            + (" (this dialog has no 'assistant' at all)" if "assistant" not in names_used else "")))
        return None
    for t in range(1, len(roles)):
        if roles[t] == "system":
            problems.add(f"{prefix}[{t}].{role_key}{label}",
                         "a 'system' message after the start; 'system' may only come first")
        elif roles[t] == roles[t - 1]:
            problems.add(f"{prefix}[{t}].{role_key}{label}",
                         f"two {roles[t]!r} messages in a row ({kind}[{t - 1}] and [{t}]); "
                         "expected 'user' and 'assistant' to take turns (merge them into one)")
    if roles and "assistant" not in roles:
        problems.add(f"{where}{label}" if where else label.strip(" ()") or "dialog",
                     "no 'assistant' message, so there is nothing to learn from; "
                     "expected at least one reply")
    if len(problems) > before:
        return None
    messages = tuple(Message(r, turn[content_key]) for r, turn in zip(roles, turns))
    return Dialog(did, messages, source)


def _quote_problems(text: str, problems: _Problems, line0: int = 1) -> bool:
    """Report typographic quotes that stand outside JSON strings; True if any were found."""
    found: dict[str, list[tuple[int, int]]] = {}
    in_str = esc = False
    line, col = line0, 1
    for ch in text:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"' or ch == "\n":
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in _TYPOGRAPHIC_QUOTES:
            found.setdefault(ch, []).append((line, col))
        if ch == "\n":
            line, col = line + 1, 1
        else:
            col += 1
    for k, (ch, places) in enumerate(sorted(found.items(), key=lambda kv: kv[1][0])):
        (l, c), rest = places[0], places[1:]
        more = ""
        if rest:
            shown = ", ".join(f"{a}:{b}" for a, b in rest[:5])
            more = f" (and {len(rest)} more at line:column {shown}" + (" …)" if len(rest) > 5 else ")")
        problems.add(f"line {l}, column {c}", (
            f"typographic quote {ch} (U+{ord(ch):04X} {unicodedata.name(ch, '?')}) where JSON "
            f"needs \"{more}" + (f". {_QUOTE_ADVICE}" if k == 0 else "")))
    return bool(found)


def _syntax_hint(err: json.JSONDecodeError) -> str:
    doc, pos, msg = err.doc, err.pos, err.msg
    at = doc[pos] if pos < len(doc) else ""
    if not doc[pos:].strip():
        return "; the text ends early: an unclosed [ or {, or a missing value"
    if at == "'":
        return "; JSON strings and keys use double quotes \", not single quotes '"
    if msg.startswith("Expecting property name") and at == "}":
        return "; a trailing comma before } (JSON allows no comma after the last item)"
    if msg == "Expecting value" and at in "]}" and at:
        return f"; a trailing comma before {at} (JSON allows no comma after the last item)"
    if msg.startswith("Expecting ',' delimiter"):
        return "; a missing comma between two items, or an unclosed [ or {"
    if msg.startswith("Unterminated string"):
        return "; a string without its closing \""
    if msg.startswith("Invalid control character"):
        return "; a raw line break or tab inside a string: write \\n or \\t"
    if msg.startswith("Invalid \\escape"):
        return "; a backslash inside a string must be written \\\\"
    if msg == "Extra data":
        return ("; more than one JSON value: wrap the dialogs in {\"dialogs\": [...]}, or "
                "name the file .jsonl if it holds one dialog per line")
    return ""


def _parse(text: str, problems: _Problems, line0: int = 1) -> tuple[bool, Any]:
    """(ok, value) of one JSON text; problems name line and column (file lines)."""
    try:
        return True, json.loads(text, object_pairs_hook=_object_pairs)
    except json.JSONDecodeError as err:
        if not _quote_problems(text, problems, line0):
            line = err.lineno + line0 - 1
            problems.add(f"line {line}, column {err.colno}",
                         f"not valid JSON: {err.msg}{_syntax_hint(err)}")
    except RecursionError:
        problems.add(f"line {line0}" if line0 > 1 else "", "not valid JSON here: nested too deeply")
    except ValueError as err:  # e.g. an integer with more digits than Python converts
        problems.add(f"line {line0}" if line0 > 1 else "", f"not valid JSON here: {err}")
    return False, None


def _decode(data: bytes, problems: _Problems, line0: int = 1) -> str | None:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        problems.add("", "the file is UTF-16 (it starts with a UTF-16 byte order mark); "
                         "expected UTF-8: save it as UTF-8")
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        start = err.start
        line = data.count(b"\n", 0, start) + line0
        col = len(data[data.rfind(b"\n", 0, start) + 1: start].decode("utf-8", "replace")) + 1
        guess = ""
        try:
            data.decode("cp949")
            guess = " It reads as CP949 (EUC-KR), a common Korean encoding."
        except UnicodeDecodeError:
            pass
        problems.add(f"line {line}, column {col}", (
            f"not UTF-8: byte 0x{data[start]:02X} ({err.reason}); expected UTF-8 text "
            f"(a UTF-8 byte order mark is fine).{guess} Save the file as UTF-8"))
        return None


def _check_role_map(role_map: Mapping[str, str] | None) -> dict:
    if role_map is None:
        return {}
    if not isinstance(role_map, Mapping):
        raise ValueError(f"role_map must be a dict of name -> role, got {type(role_map).__name__}")
    for name, role in role_map.items():
        if not isinstance(name, str) or role not in ROLES:
            raise ValueError(
                f"role_map[{name!r}] = {role!r}: expected a string name mapped to one of {ROLES}")
    return dict(role_map)


def load_dialogs(path: str | Path, *, role_map: Mapping[str, str] | None = None) -> list[Dialog]:
    """Read and check a dialog file; every problem is reported at once.

    Reads:

    * the project format (JSON Schema: :func:`schema_path`)
      ``{"dialogs": [{"id": 1, "conversation": [{"speaker": "user", "utterance": "…"},
      {"speaker": "assistant", "utterance": "…"}]}]}``, or a top-level list of dialogs;
    * JSON Lines (``.jsonl``/``.ndjson``): one dialog object per line, read line by line;
    * dialogs written as OpenAI ``{"messages": [{"role", "content"}]}`` or ShareGPT
      ``{"conversations": [{"from", "value"}]}`` (human → user, gpt → assistant), with an
      optional ``"id"``.

    Args:
        path: the file.
        role_map: extra role names, ``name -> role``; applied before the checks. Files that
            call the replying side "system" (as a widely read example does) need
            ``{"system": "assistant"}``.

    Returns:
        The dialogs in file order. ``source`` says where each came from.

    Raises:
        DialogFormatError: naming the file and, per problem, the line and column (syntax)
            or the JSON path and dialog id: typographic quotes, JSON syntax, encoding, an
            empty file or no dialogs, a wrong top level, missing / unknown / duplicated keys,
            wrong types, empty content or content over :data:`MAX_CONTENT_CHARS` characters,
            unknown roles, "system" answering the user, "system" not first, two messages of
            one role in a row, no assistant message, duplicate ids.
        ValueError: a malformed ``role_map``.

    Examples:
        >>> import json, tempfile, os
        >>> folder = tempfile.mkdtemp()
        >>> p = os.path.join(folder, "d.json")
        >>> with open(p, "w", encoding="utf-8") as f:
        ...     json.dump({"dialogs": [{"id": 1, "conversation": [
        ...         {"speaker": "user", "utterance": "Hi"},
        ...         {"speaker": "system", "utterance": "Hello!"}]}]}, f)
        >>> [m.role for m in load_dialogs(p, role_map={"system": "assistant"})[0].messages]
        ['user', 'assistant']
    """
    extra = _check_role_map(role_map)
    path = Path(path)
    problems = _Problems(path)
    if not path.exists():
        problems.add("", "file not found")
        raise problems.fail()
    if path.is_dir():
        problems.add("", "is a folder; expected a dialog file")
        raise problems.fail()
    dialogs: list[Dialog] = []
    ids: dict[str, str] = {}

    def take(obj: Any, where: str, source: str, default_id: str) -> None:
        kind = next((k for k in _KINDS if isinstance(obj, dict) and k in obj), "conversation")
        names = {**_DEFAULT_NAMES[kind], **extra}
        d = _dialog_from(obj, where, source, default_id, names, bool(extra), problems)
        if isinstance(obj, dict) and "id" in obj and isinstance(obj["id"], (int, str)) \
                and not isinstance(obj["id"], bool):
            key = str(obj["id"])
            if key in ids:
                problems.add(where, f"duplicate id {_short(obj['id'])} (also at {ids[key]}); "
                                    "expected unique ids")
            else:
                ids[key] = where or source
        if d is not None:
            dialogs.append(d)

    try:
        if path.suffix.lower() in (".jsonl", ".ndjson"):
            _load_lines(path, problems, take)
        else:
            _load_document(path, problems, take)
    except OSError as err:
        problems.add("", f"cannot read the file ({err.strerror or err})")
    if problems:
        raise problems.fail()
    return dialogs


def _load_lines(path: Path, problems: _Problems, take) -> None:
    n_lines = 0
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            text = _decode(raw, problems, lineno)
            if text is None or not text.strip():
                continue
            n_lines += 1
            ok, obj = _parse(text, problems, lineno)
            if ok:
                take(obj, f"line {lineno}", f"{path}:{lineno}", f"line {lineno}")
    if n_lines == 0 and not problems:
        problems.add("", "the file is empty; expected one dialog object per line")


def _load_document(path: Path, problems: _Problems, take) -> None:
    data = path.read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    text = _decode(data, problems)
    if text is None:
        return
    if not text.strip():
        problems.add("", "the file is empty; expected {\"dialogs\": [...]}")
        return
    ok, doc = _parse(text, problems)
    if not ok:
        return
    if isinstance(doc, list):
        items, base = doc, ""
    elif isinstance(doc, dict) and "dialogs" in doc:
        for key in getattr(doc, "duplicate_keys", ()):
            problems.add("", f"key {key!r} appears more than once (JSON keeps only the last)")
        for key in doc:
            if key not in ("dialogs", "$schema"):
                problems.add("", f"unknown top-level key {key!r}; expected only 'dialogs'"
                                 f"{_suggest(str(key), ['dialogs'])}")
        items, base = doc["dialogs"], "dialogs"
        if not isinstance(items, list):
            problems.add("dialogs", f"expected a list of dialogs, found {_type_name(items)}")
            return
    elif isinstance(doc, dict):
        near = [k for k in doc if _suggest(str(k), ["dialogs"])]
        if near:
            problems.add("", f"missing key 'dialogs' (found {near[0]!r}; did you mean 'dialogs'?)")
        elif any(k in doc for k in _KINDS):
            problems.add("", "the top level is one dialog; expected {\"dialogs\": [ ... ]} "
                             "around it (or one dialog per line in a .jsonl file)")
        else:
            keys = ", ".join(map(repr, list(doc)[:5]))
            problems.add("", f"the top level is an object with the keys {keys}; expected "
                             "{\"dialogs\": [...]} or a list of dialogs")
        return
    else:
        problems.add("", f"the top level is {_type_name(doc)}; expected {{\"dialogs\": [...]}} "
                         "or a list of dialogs")
        return
    if not items:
        problems.add(base, "no dialogs (the list is empty); expected at least one")
        return
    for i, obj in enumerate(items):
        where = f"{base}[{i}]"
        take(obj, where, f"{path}: {where}", where)


def save_dialogs(dialogs: Iterable[Dialog], path: str | Path) -> None:
    """Write dialogs in the project format, atomically (a ``.jsonl`` path: one per line).

    What :func:`load_dialogs` reads back is equal to what was written (ids, roles, text).

    Raises:
        ValueError: an item that is not a :class:`Dialog`.
    """
    items = []
    for k, d in enumerate(dialogs):
        if not isinstance(d, Dialog):
            raise ValueError(f"dialogs[{k}] must be a Dialog, got {type(d).__name__}")
        items.append({"id": d.id, "conversation": [
            {"speaker": m.role, "utterance": m.content} for m in d.messages]})
    path = Path(path)
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        text = "".join(json.dumps(item, ensure_ascii=False) + "\n" for item in items)
    else:
        text = json.dumps({"dialogs": items}, ensure_ascii=False, indent=1) + "\n"
    atomic_write_text(path, text)
