"""Byte-fallback BPE in the convention of Llama 2 / Mistral sentencepiece models.

Byte-pair encoding (Sennrich et al., 2016, arXiv:1508.07909) starts from characters and
repeatedly merges the most frequent adjacent pair into a new piece. The Llama 2 and Mistral
tokenizers (sentencepiece, Kudo & Richardson, 2018, arXiv:1808.06226) add two things:

* **Whitespace as a symbol.** Every space becomes "▁" (U+2581) and one "▁" is prepended, so
  ``"Hello world"`` is seen as ``"▁Hello▁world"``. Words start at a "▁" and merges never
  cross words, line breaks or other whitespace; no piece is longer than 16 characters
  (sentencepiece's ``max_sentencepiece_length``).
* **Byte fallback.** The 256 pieces ``<0x00>`` … ``<0xFF>`` are always in the vocabulary.
  A character that is not a piece is written as its UTF-8 bytes, one piece per byte, so
  encoding never needs ``<unk>`` and ``decode(encode(s)) == s``.

Vocabulary layout of a trained tokenizer (ids in order):

    0 ``<unk>``, 1 ``<s>``, 2 ``</s>``
    3 … 258 the byte pieces ``<0x00>`` … ``<0xFF>``
    then the alphabet: characters covering ``character_coverage`` of the training text,
    most frequent first (ties: by code point), "▁" always included
    then one piece per merge, in the order the merges were learned.

Training tie-break (both trainers): the pair with the highest count wins; among equal
counts the pair that is smallest in Python string order, comparing the left piece first and
then the right piece. A merge whose result would read like a special or a byte piece
(``"<s>"``, ``"<0x41>"``) is never chosen, so text never turns into those ids.
Should a merge produce a string that is already a piece (``"▁a"+"b"`` after ``"▁"+"ab"``),
the merge is kept but takes no new id, so the vocabulary still ends at ``vocab_size``.

Encoding has the same semantics as Hugging Face ``tokenizers``' BPE model: split a word
into characters (unknown characters into byte pieces), then repeatedly apply the merge with
the lowest rank among adjacent pairs, the leftmost one among equal ranks.

The one string that does not round trip: a literal "▁" (U+2581) in the input is read as a
space, exactly as sentencepiece and the Hugging Face Llama tokenizers read it, so it decodes
to ``" "``. Every string without U+2581 round trips.
"""

from __future__ import annotations

import heapq
import json
import operator
import re
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from .checkpoint import _no_duplicates, _reject_constant, atomic_folder, atomic_write_text

__all__ = [
    "ByteFallbackBPE",
    "TokenizerFileError",
    "SPACE",
    "normalize",
    "split_words",
    "byte_fallback",
    "count_words",
    "naive_train",
    "learn_merges",
    "SPECIALS",
    "BYTE_PIECES",
    "DUMMY_PREFIXES",
    "corpus_tokenizer",
    "CHAT_SPECIALS",
]

SPACE = "\u2581"  # "▁", sentencepiece's visible space
UNK, BOS, EOS = "<unk>", "<s>", "</s>"
SPECIALS = (UNK, BOS, EOS)
BYTE_PIECES = tuple(f"<0x{b:02X}>" for b in range(256))
_RESERVED = frozenset(SPECIALS) | frozenset(BYTE_PIECES)
# The chat special tokens of the Llama 3 layout plus a padding token (llm_glossary.dialog).
BEGIN_OF_TEXT, START_HEADER, END_HEADER = "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>"
EOT, PAD = "<|eot_id|>", "<|pad|>"
CHAT_SPECIALS = (BEGIN_OF_TEXT, START_HEADER, END_HEADER, EOT, PAD)
FORMAT = "llm-glossary-bpe"
FORMAT_VERSION = 1
DUMMY_PREFIXES = ("always", "if_missing")

_WORD_RE = re.compile(f"{SPACE}[^{SPACE}]*|[^{SPACE}]+")
# Training words: a "▁" and what follows up to the next "▁" or whitespace. Other whitespace
# (line breaks, tabs, ideographic spaces) separates words: no piece spans it.
_TRAIN_WORD_RE = re.compile(rf"{SPACE}[^{SPACE}\s]*|[^{SPACE}\s]+")
_OTHER_SPACE_RE = re.compile(r"[^\S ]")  # whitespace except " " (which normalize turns into "▁")
MAX_PIECE_LENGTH = 16  # characters, as sentencepiece's max_sentencepiece_length default
_MAX_SEGMENT = 64  # training cuts longer runs (text without spaces) into chunks of this size


class TokenizerFileError(ValueError):
    """A tokenizer file that is not JSON, or not in the expected format."""

    def __init__(self, path: str | Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem


def _check_text(text: str, what: str = "text") -> None:
    if not isinstance(text, str):
        raise TypeError(f"{what} must be a str, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(
            f"{what} has a lone surrogate {text[err.start]!r} at index "
            f"{err.start}; "
            "expected valid Unicode (surrogates cannot be encoded as UTF-8)"
        ) from None


def normalize(text: str, dummy_prefix: str = "always") -> str:
    """Spaces to "▁" and one "▁" in front, as Llama 2's sentencepiece model does.

    Args:
        text: the input text.
        dummy_prefix: ``"always"`` prepends "▁" to every non-empty text (Llama 2, and
            sentencepiece's ``add_dummy_prefix``); ``"if_missing"`` only when the text does
            not already start with a space (Hugging Face's ``Metaspace`` pre-tokenizer, used
            by newer Llama/Mistral ``tokenizer.json`` files).

    The empty string stays empty (Hugging Face does the same).

    Examples:
        >>> normalize("Hello  world")
        '▁Hello▁▁world'
        >>> normalize(" x"), normalize(" x", "if_missing")
        ('▁▁x', '▁x')
    """
    if not text:
        return ""
    text = text.replace(" ", SPACE)
    if dummy_prefix == "if_missing" and text.startswith(SPACE):
        return text
    return SPACE + text


def split_words(normalized: str) -> list[str]:
    """Split normalized text so that every word starts at a "▁".

    Examples:
        >>> split_words("▁Hello▁▁world")
        ['▁Hello', '▁', '▁world']
    """
    return _WORD_RE.findall(normalized)


# --8<-- [start:byte_fallback]
def byte_fallback(char: str) -> list[str]:
    """The byte pieces of one character: its UTF-8 bytes, one piece per byte.

    Examples:
        >>> byte_fallback("한")  # U+D55C is three bytes in UTF-8
        ['<0xED>', '<0x95>', '<0x9C>']
    """
    return [f"<0x{b:02X}>" for b in char.encode("utf-8")]
# --8<-- [end:byte_fallback]


def count_words(
    texts: str | Iterable[str], character_coverage: float = 0.9995
) -> tuple[Counter, list[str]]:
    """Count the training words once and choose the alphabet.

    Each text is normalized as :meth:`ByteFallbackBPE.encode` normalizes it and split into
    words: a word starts at "▁" and ends before the next "▁" or whitespace character. Line
    breaks and other whitespace (a tab, an ideographic space) separate words: no piece spans
    them, so text without spaces is cut at every line. They still count as characters, so a
    frequent "\\n" gets its own piece instead of byte pieces. Characters (including "▁") are
    counted;
    the most frequent are kept until their share of all characters reaches
    ``character_coverage`` (sentencepiece's rule: a character is added while the share
    covered before it is below the target). "▁" is always kept. Characters outside the
    alphabet are left to byte fallback: they split a word into segments, and merges are
    learned inside segments only.

    Args:
        texts: one text or an iterable of texts.
        character_coverage: share of characters the alphabet must cover, in (0, 1].

    Returns:
        (segments, alphabet): a Counter of alphabet-only segments (str -> count) and the
        alphabet, most frequent first (ties: by code point). A segment longer than 64
        characters (only text without spaces has one) is cut into 64-character chunks, so
        training stays linear in such text; the pair across a cut is not counted.

    Raises:
        TypeError: ``texts`` is not a str or an iterable of str, or ``character_coverage``
            is not a number.
        ValueError: ``character_coverage`` outside (0, 1], or a text with a lone surrogate.
    """
    if not isinstance(character_coverage, (int, float)) or isinstance(character_coverage, bool):
        raise TypeError(
            f"character_coverage must be a number in (0, 1], got {type(character_coverage).__name__} "
            f"{character_coverage!r}")
    if not 0 < character_coverage <= 1:
        raise ValueError(f"character_coverage must be in (0, 1], got {character_coverage!r}")
    if isinstance(texts, str):
        texts = [texts]
    if isinstance(texts, (bytes, bytearray)) or not isinstance(texts, Iterable):
        raise TypeError(
            f"training texts must be a str or an iterable of str, got {type(texts).__name__}")
    words: Counter = Counter()
    spaces: Counter = Counter()
    for i, text in enumerate(texts):
        _check_text(text, f"training text {i}")
        spaces.update(_OTHER_SPACE_RE.findall(text))
        words.update(_TRAIN_WORD_RE.findall(normalize(text)))
    chars: Counter = Counter(spaces)  # whitespace: in the alphabet if frequent, never merged
    for word, n in words.items():
        for ch in word:
            chars[ch] += n
    total = sum(chars.values())
    alphabet: list[str] = []
    covered = 0
    for ch, n in sorted(chars.items(), key=lambda kv: (-kv[1], kv[0])):
        if covered >= character_coverage * total:
            break
        alphabet.append(ch)
        covered += n
    if SPACE not in alphabet:
        alphabet.append(SPACE)
    keep = set(alphabet)
    segments: Counter = Counter()

    def add(segment: str, n: int) -> None:
        for start in range(0, len(segment), _MAX_SEGMENT):
            segments[segment[start : start + _MAX_SEGMENT]] += n

    for word, n in words.items():
        if set(word) <= keep:
            add(word, n)
        else:
            run = []
            for ch in word:
                if ch in keep:
                    run.append(ch)
                elif run:
                    add("".join(run), n)
                    run = []
            if run:
                add("".join(run), n)
    return segments, alphabet


def _min_vocab(alphabet: Sequence[str]) -> int:
    return len(SPECIALS) + len(BYTE_PIECES) + len(alphabet)


def _check_vocab_size(vocab_size: int, alphabet: Sequence[str]) -> None:
    if not isinstance(vocab_size, int) or isinstance(vocab_size, bool):
        raise ValueError(f"vocab_size must be an int, got {vocab_size!r}")
    minimum = _min_vocab(alphabet)
    if vocab_size < minimum:
        raise ValueError(
            f"vocab_size {vocab_size} is too small: the minimum is {minimum} "
            f"({len(SPECIALS)} specials + {len(BYTE_PIECES)} byte pieces + "
            f"{len(alphabet)} alphabet characters)"
        )


def _check_max_piece_length(value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 2:
        raise ValueError(f"max_piece_length must be an int >= 2 (characters), got {value!r}")


def _merge_symbols(symbols: list[str], a: str, b: str) -> list[str]:
    """Replace every non-overlapping (a, b), left to right, by a + b."""
    out: list[str] = []
    i, n = 0, len(symbols)
    while i < n:
        if i < n - 1 and symbols[i] == a and symbols[i + 1] == b:
            out.append(a + b)
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return out


# --8<-- [start:naive_train]
def naive_train(
    texts: str | Iterable[str],
    vocab_size: int,
    *,
    character_coverage: float = 0.9995,
    max_piece_length: int = MAX_PIECE_LENGTH,
) -> list[tuple[str, str]]:
    """The textbook BPE trainer: recount every pair after every merge.

    Slow (each step reads every word) but easy to check;
    ``ByteFallbackBPE.train`` must choose exactly the same merges.

    Examples:
        >>> # 3 specials + 256 bytes + 8 characters (▁ l o w e r s t) + 3 merges
        >>> naive_train("low lower lowest", vocab_size=3 + 256 + 8 + 3)
        [('l', 'o'), ('lo', 'w'), ('▁', 'low')]
    """
    _check_max_piece_length(max_piece_length)
    words, alphabet = count_words(texts, character_coverage)
    _check_vocab_size(vocab_size, alphabet)
    pieces = set(SPECIALS) | set(BYTE_PIECES) | set(alphabet)
    # each word as a list of pieces
    splits = {word: list(word) for word in words}
    merges: list[tuple[str, str]] = []
    while len(pieces) < vocab_size:
        pairs: Counter = Counter()
        for word, n in words.items():
            symbols = splits[word]
            for pair in zip(symbols, symbols[1:]):
                pairs[pair] += n
        # never a special or byte piece, never longer than max_piece_length
        candidates = [
            p for p in pairs
            if p[0] + p[1] not in _RESERVED
            and len(p[0]) + len(p[1]) <= max_piece_length
        ]
        if not candidates:
            break
        # highest count first; equal counts: the smallest (left, right) in
        # string order
        best = min(candidates, key=lambda p: (-pairs[p], p))
        merges.append(best)
        pieces.add(best[0] + best[1])
        for word in words:
            splits[word] = _merge_symbols(splits[word], *best)
    return merges
# --8<-- [end:naive_train]


# --8<-- [start:learn_merges]
def learn_merges(
    words: Counter,
    pieces: set[str],
    vocab_size: int,
    *,
    progress: bool = False,
    max_piece_length: int = MAX_PIECE_LENGTH,
) -> list[tuple[str, str]]:
    """Incremental BPE: count pairs once, then update only the words a merge
    touches.

    Keeps ``pair -> count`` and ``pair -> {word index}``; a heap of ``(-count,
    left, right)`` gives the best pair (stale heap entries are skipped when
    popped). After a merge only the words that contained the pair are re-read,
    and only pairs whose count changed are pushed again. Same merges, same
    tie-break as :func:`naive_train`.

    Args:
        words: segment -> count, as returned by :func:`count_words`.
        pieces: the pieces so far (specials, bytes, alphabet); updated in place.
        vocab_size: stop when ``len(pieces)`` reaches it (or no pair is left).
        progress: print a line to stderr every 500 merges.
        max_piece_length: no merge makes a piece longer than this
            (in characters).
    """
    symbols = [list(w) for w in words]
    counts = list(words.values())
    pair_count: dict[tuple[str, str], int] = {}
    where: dict[tuple[str, str], set[int]] = {}
    for i, (syms, n) in enumerate(zip(symbols, counts)):
        for pair in zip(syms, syms[1:]):
            pair_count[pair] = pair_count.get(pair, 0) + n
            where.setdefault(pair, set()).add(i)
    heap = [(-c, a, b) for (a, b), c in pair_count.items()]
    heapq.heapify(heap)
    merges: list[tuple[str, str]] = []
    while len(pieces) < vocab_size and heap:
        neg, a, b = heapq.heappop(heap)
        stale = pair_count.get((a, b), 0) != -neg
        if stale or a + b in _RESERVED or len(a) + len(b) > max_piece_length:
            # stale entry (the count changed since it was pushed) or forbidden
            continue
        merged = a + b
        merges.append((a, b))
        pieces.add(merged)
        delta: dict[tuple[str, str], int] = {}  # count changes of this step
        for i in where.pop((a, b)):
            old, n = symbols[i], counts[i]
            new = _merge_symbols(old, a, b)
            old_pairs, new_pairs = list(zip(old, old[1:])), list(
                zip(new, new[1:])
            )
            for pair in old_pairs:
                delta[pair] = delta.get(pair, 0) - n
            for pair in new_pairs:
                delta[pair] = delta.get(pair, 0) + n
            old_set, new_set = set(old_pairs), set(new_pairs)
            for pair in old_set - new_set:
                if pair != (a, b):
                    where[pair].discard(i)
            for pair in new_set - old_set:
                where.setdefault(pair, set()).add(i)
            symbols[i] = new
        for pair, d in delta.items():
            if d == 0:
                continue
            c = pair_count.get(pair, 0) + d
            if c > 0:
                pair_count[pair] = c
                heapq.heappush(heap, (-c, *pair))
            else:
                pair_count.pop(pair, None)
                where.pop(pair, None)
        if progress and len(merges) % 500 == 0:
            print(
                f"{len(merges)} merges, {len(pieces)} pieces", file=sys.stderr
            )
    return merges
# --8<-- [end:learn_merges]


class ByteFallbackBPE:
    """A byte-fallback BPE tokenizer (Llama 2 / Mistral convention).

    Build one with :meth:`train`, :meth:`load` or :meth:`from_hf`.

    Args:
        pieces: the vocabulary, piece strings in id order. Must contain ``<unk>``, ``<s>``,
            ``</s>`` and the 256 byte pieces.
        merges: the merges in rank order (lowest rank is applied first). A pair listed twice
            takes its last rank, as in Hugging Face ``tokenizers``.
        dummy_prefix: ``"always"`` (Llama 2, the default) or ``"if_missing"`` (Hugging
            Face Metaspace files); see :func:`normalize`. With ``"if_missing"`` a text that
            starts with a space loses that space in a round trip, as it does in Hugging Face.
        special_tokens: added special tokens such as ``"<|eot_id|>"`` (pieces of
            ``pieces``): atomic ids that plain text never produces. Each must be longer than
            one character and must not be the result of a merge, so :meth:`encode` cannot
            reach it; :meth:`encode` with ``allow_special=True`` and the chat code in
            :mod:`llm_glossary.dialog` place them. Use :meth:`with_special_tokens` to add them
            to a trained tokenizer.

    Examples:
        >>> tok = ByteFallbackBPE.train(["low lower lowest"] * 3, vocab_size=270)
        >>> tok.merges
        [('l', 'o'), ('lo', 'w'), ('▁', 'low')]
        >>> tok.tokenize("lowest low")
        ['▁low', 'e', 's', 't', '▁low']
        >>> tok.decode(tok.encode("lowest 한글"))
        'lowest 한글'
    """

    _CACHE_CHARS = 1_000_000  # characters of words kept in the encode cache (cleared when full)
    _CACHE_WORD = 1_000  # longer words are encoded every time, never cached
    _LONG_WORD = 48  # longer words use the heap-based merge loop

    def __init__(
        self,
        pieces: Sequence[str],
        merges: Sequence[tuple[str, str]],
        *,
        dummy_prefix: str = "always",
        special_tokens: Sequence[str] = (),
    ) -> None:
        if dummy_prefix not in DUMMY_PREFIXES:
            raise ValueError(f"dummy_prefix must be one of {DUMMY_PREFIXES}, got {dummy_prefix!r}")
        self.dummy_prefix = dummy_prefix
        self._pieces = list(pieces)
        bad = next((i for i, p in enumerate(self._pieces) if not isinstance(p, str) or not p), None)
        if bad is not None:
            raise ValueError(f"piece {bad} must be a non-empty string, got {self._pieces[bad]!r}")
        self._ids = {p: i for i, p in enumerate(self._pieces)}
        if len(self._ids) != len(self._pieces):
            dup = next(p for p, n in Counter(self._pieces).items() if n > 1)
            raise ValueError(f"pieces must be unique, {dup!r} appears more than once")
        missing = [p for p in (*SPECIALS, *BYTE_PIECES) if p not in self._ids]
        if missing:
            raise ValueError(
                f"pieces must contain the specials and all 256 byte pieces; "
                f"missing {missing[:5]}"
            )
        self._merges = tuple((str(a), str(b)) for a, b in merges)
        self._ranks: dict[tuple[str, str], tuple[int, str]] = {}
        for rank, (a, b) in enumerate(self._merges):
            for piece in (a, b, a + b):
                if piece not in self._ids:
                    raise ValueError(f"merge {rank} ({a!r}, {b!r}): piece {piece!r} is not in the vocabulary")
            if a + b in _RESERVED:  # text would then encode to a control or byte id
                raise ValueError(
                    f"merge {rank} ({a!r}, {b!r}) builds the reserved piece {a + b!r}; expected merges "
                    "that never produce a special or byte piece (train never learns one)")
            self._ranks[(a, b)] = (rank, a + b)  # a repeated pair: the last rank wins, as in HF
        self.unk_id, self.bos_id, self.eos_id = (self._ids[s] for s in SPECIALS)
        self._byte_ids = [self._ids[p] for p in BYTE_PIECES]
        self._byte_of = {i: b for b, i in enumerate(self._byte_ids)}
        self._special_tokens = self._check_special_tokens(special_tokens)
        self._special_ids = {self.unk_id, self.bos_id, self.eos_id}
        self._special_ids.update(self._ids[s] for s in self._special_tokens)
        # Hugging Face matches every added token in raw text, longest first at each position.
        matched = sorted({*SPECIALS, *self._special_tokens}, key=lambda t: (-len(t), t))
        self._special_re = re.compile("|".join(map(re.escape, matched)))
        self._cache: dict[str, list[int]] = {}
        self._cache_chars = 0  # sum of len(word) over the cache: its size is bounded, not its count

    def _check_special_tokens(self, special_tokens: Sequence[str]) -> tuple[str, ...]:
        if isinstance(special_tokens, str):
            raise ValueError(
                f"special_tokens must be a sequence of strings, got the string {special_tokens!r}")
        tokens = tuple(special_tokens)
        merged = {a + b for a, b in self._merges}
        used = {p for m in self._merges for p in m}
        for t in tokens:
            if not isinstance(t, str):
                raise ValueError(f"special token {t!r} must be a string")
            if t not in self._ids:
                raise ValueError(f"special token {t!r} is not in the vocabulary (pieces)")
            if t in _RESERVED:
                raise ValueError(f"special token {t!r} is already a reserved piece (specials or bytes)")
            if len(t) < 2 or t in merged or t in used:
                raise ValueError(
                    f"special token {t!r} could be produced from plain text (it is a single "
                    "character or takes part in a merge); expected a piece that no text reaches")
        if len(set(tokens)) != len(tokens):
            dup = next(t for t, n in Counter(tokens).items() if n > 1)
            raise ValueError(f"special token {dup!r} is listed more than once")
        return tokens

    @property
    def special_tokens(self) -> tuple[str, ...]:
        """The added special tokens (such as the chat tokens), in the order they were given."""
        return self._special_tokens

    def with_special_tokens(self, tokens: Iterable[str]) -> ByteFallbackBPE:
        """A new tokenizer: this one plus ``tokens`` as atomic special ids at the end.

        The tokenizer itself is not changed (it may be shared); ids of its pieces stay the
        same, so text encoded with it keeps its meaning. A token that is already a special
        token keeps its id.

        Examples:
            >>> tok = ByteFallbackBPE.train("ab ab ab", vocab_size=264)
            >>> chat = tok.with_special_tokens(["<|eot_id|>"])
            >>> chat.eot_id, chat.vocab_size, tok.vocab_size
            (264, 265, 264)
            >>> chat.eot_id in chat.encode("<|eot_id|>")
            False
        """
        if isinstance(tokens, str):
            raise ValueError(f"special tokens must be a sequence of strings, got the string {tokens!r}")
        new = [t for t in dict.fromkeys(tokens) if t not in self._special_tokens]
        taken = [t for t in new if t in self._ids]
        if taken:
            raise ValueError(f"special token {taken[0]!r} is already an ordinary piece of the vocabulary")
        return type(self)(
            [*self._pieces, *new], self._merges, dummy_prefix=self.dummy_prefix,
            special_tokens=[*self._special_tokens, *new],
        )

    def _special_id(self, token: str, name: str) -> int:
        if token not in self._special_tokens:
            raise AttributeError(
                f"this tokenizer has no {token!r} special token, so it has no {name}; use "
                "llm_glossary.dialog.chat_tokenizer() or tokenizer.with_special_tokens(CHAT_SPECIALS)")
        return self._ids[token]

    @property
    def eot_id(self) -> int:
        """Id of ``"<|eot_id|>"`` (end of turn); AttributeError when the token is absent."""
        return self._special_id(EOT, "eot_id")

    @property
    def pad_id(self) -> int:
        """Id of ``"<|pad|>"`` (padding, never the end of turn); AttributeError when absent."""
        return self._special_id(PAD, "pad_id")

    # ----------------------------------------------------------------- training
    @classmethod
    def train(
        cls,
        texts: str | Iterable[str],
        vocab_size: int,
        *,
        character_coverage: float = 0.9995,
        progress: bool = False,
        max_piece_length: int = MAX_PIECE_LENGTH,
    ) -> ByteFallbackBPE:
        """Learn a vocabulary of ``vocab_size`` pieces from ``texts``.

        ``vocab_size`` counts the 3 specials, the 256 byte pieces, the alphabet and the
        merges, as sentencepiece counts it. Training stops early (a smaller vocabulary) when
        no pair is left to merge. No piece is longer than ``max_piece_length`` characters
        (sentencepiece's ``max_sentencepiece_length``, 16 by default), and no piece spans a
        line break or other whitespace (see :func:`count_words`).

        Raises:
            ValueError: ``vocab_size`` below 3 + 256 + alphabet size (the message states the
                minimum), or a training text with a lone surrogate.
        """
        _check_max_piece_length(max_piece_length)
        words, alphabet = count_words(texts, character_coverage)
        _check_vocab_size(vocab_size, alphabet)
        pieces_list = [*SPECIALS, *BYTE_PIECES, *alphabet]
        pieces = set(pieces_list)
        merges = learn_merges(words, pieces, vocab_size, progress=progress, max_piece_length=max_piece_length)
        seen = set(pieces_list)
        for a, b in merges:
            if a + b not in seen:
                seen.add(a + b)
                pieces_list.append(a + b)
        return cls(pieces_list, merges)

    # ----------------------------------------------------------------- vocabulary
    @property
    def vocab_size(self) -> int:
        """Number of pieces (ids run from 0 to vocab_size - 1)."""
        return len(self._pieces)

    @property
    def merges(self) -> list[tuple[str, str]]:
        """The merges in rank order (a copy: the tokenizer itself cannot be changed through it)."""
        return list(self._merges)

    def __len__(self) -> int:
        return len(self._pieces)

    def id_to_piece(self, i: int) -> str:
        """The piece string of id ``i``."""
        return self._pieces[self._check_id(i)]

    def piece_to_id(self, piece: str) -> int:
        """The id of a piece string; ValueError if it is not in the vocabulary."""
        try:
            return self._ids[piece]
        except KeyError:
            raise ValueError(f"piece {piece!r} is not in the vocabulary") from None

    @property
    def pieces(self) -> list[str]:
        """All pieces in id order (a copy)."""
        return list(self._pieces)

    def _check_id(self, i: int) -> int:
        """``i`` as a plain int; integer-likes (NumPy ints, 0-d torch tensors) are accepted."""
        n = len(self._pieces)
        if type(i) is not int:
            try:
                if isinstance(i, bool):
                    raise TypeError
                i = operator.index(i)
            except TypeError:
                raise ValueError(
                    f"id {i!r} is not an integer: expected an int in [0, {n}) "
                    f"(vocab_size {n})"
                ) from None
        if not 0 <= i < n:
            raise ValueError(f"id {i!r} is out of range: expected an int in [0, {n}) (vocab_size {n})")
        return i

    # ----------------------------------------------------------------- encoding
    # --8<-- [start:encode_word]
    def encode_word(self, word: str) -> list[int]:
        """Encode one word (it starts at "▁" and holds no other "▁").

        Characters that are not pieces become byte pieces; then the lowest-rank
        merge among adjacent pairs is applied, the leftmost one on a tie, until
        no pair has a merge.
        """
        symbols: list[str] = []
        for ch in word:
            if ch in self._ids:
                symbols.append(ch)
            else:
                symbols.extend(byte_fallback(ch))  # byte pieces never merge
        ranks = self._ranks
        while len(symbols) > 1:
            best, best_i = None, -1
            for i in range(len(symbols) - 1):
                found = ranks.get((symbols[i], symbols[i + 1]))
                if found is not None and (best is None or found[0] < best[0]):
                    best, best_i = found, i
            if best is None:
                break
            symbols[best_i : best_i + 2] = [best[1]]
        return [self._ids[s] for s in symbols]

    # --8<-- [end:encode_word]

    def _encode_long_word(self, word: str) -> list[int]:
        """Same result as :meth:`encode_word`, in O(n log n) for long words.

        The simple loop rescans the word after every merge (quadratic); a text without
        spaces can be one very long word. Here the symbols form a linked list and a heap
        holds ``(rank, position)`` of candidate pairs, so the lowest rank, then the leftmost
        position, is popped first. An entry is stale when its left symbol was merged away or
        the pair at that position has a different rank now (ranks identify pairs).
        """
        syms: list[str] = []
        for ch in word:
            syms.extend((ch,) if ch in self._ids else byte_fallback(ch))
        n = len(syms)
        nxt = list(range(1, n + 1))  # n means "no next symbol"
        prv = list(range(-1, n - 1))
        alive = [True] * n
        ranks = self._ranks
        heap = []
        for i in range(n - 1):
            found = ranks.get((syms[i], syms[i + 1]))
            if found is not None:
                heap.append((found[0], i))
        heapq.heapify(heap)
        while heap:
            rank, i = heapq.heappop(heap)
            j = nxt[i] if alive[i] else n
            if j >= n:
                continue
            found = ranks.get((syms[i], syms[j]))
            if found is None or found[0] != rank:
                continue  # stale
            syms[i] = found[1]
            alive[j] = False
            nxt[i] = nxt[j]
            if nxt[j] < n:
                prv[nxt[j]] = i
            if prv[i] >= 0:
                left = ranks.get((syms[prv[i]], syms[i]))
                if left is not None:
                    heapq.heappush(heap, (left[0], prv[i]))
            if nxt[i] < n:
                right = ranks.get((syms[i], syms[nxt[i]]))
                if right is not None:
                    heapq.heappush(heap, (right[0], i))
        return [self._ids[syms[i]] for i in range(n) if alive[i]]

    def encode(
        self, text: str, *, bos: bool = False, eos: bool = False, allow_special: bool = False
    ) -> list[int]:
        """Text to ids. Never yields ``<unk>``; text that looks like ``"<s>"`` is plain text.

        Args:
            text: any string without lone surrogates.
            bos: put ``<s>`` first.
            eos: put ``</s>`` last.
            allow_special: read the special tokens' strings in ``text`` (``"<s>"``,
                ``"<|eot_id|>"``, …) as their ids, the way Hugging Face ``tokenizers``
                reads added tokens: the text is cut at each one (the longest first) and every
                piece of text between them is encoded on its own, each with its dummy prefix
                (``"if_missing"`` tokenizers: only a piece at the very start gets one, as
                Metaspace's ``prepend_scheme="first"`` does). Off by default: typed text can
                never become a control token.

        Raises:
            ValueError: a lone surrogate, naming its index.
        """
        _check_text(text)
        ids = [self.bos_id] if bos else []
        if allow_special:
            start = 0
            for m in self._special_re.finditer(text):
                if m.start() > start:
                    ids.extend(self._encode_plain(text[start:m.start()], first=start == 0))
                ids.append(self._ids[m.group()])
                start = m.end()
            if start < len(text):
                ids.extend(self._encode_plain(text[start:], first=start == 0))
        else:
            ids.extend(self._encode_plain(text, first=True))
        if eos:
            ids.append(self.eos_id)
        return ids

    def _encode_plain(self, text: str, *, first: bool) -> list[int]:
        if self.dummy_prefix == "always":
            normalized = normalize(text, "always")
        elif first:
            normalized = normalize(text, "if_missing")
        else:
            normalized = text.replace(" ", SPACE)
        ids: list[int] = []
        cache = self._cache
        for word in split_words(normalized):
            cached = cache.get(word)
            if cached is None:
                if len(word) <= self._LONG_WORD:
                    cached = self.encode_word(word)
                else:
                    cached = self._encode_long_word(word)
                if len(word) <= self._CACHE_WORD:
                    if self._cache_chars + len(word) > self._CACHE_CHARS:
                        cache.clear()
                        self._cache_chars = 0
                    cache[word] = cached
                    self._cache_chars += len(word)
            ids.extend(cached)
        return ids

    def tokenize(self, text: str) -> list[str]:
        """Text to piece strings.

        Examples:
            >>> tok = ByteFallbackBPE.train("ab ab ab", vocab_size=264)
            >>> tok.tokenize("ab ba")
            ['▁ab', '▁', 'b', 'a']
        """
        return [self._pieces[i] for i in self.encode(text)]

    def decode(self, ids: Iterable[int], *, skip_special: bool = True) -> str:
        """Ids to text, as Hugging Face's Llama decoder does.

        "▁" becomes a space; each run of byte pieces is read as UTF-8, and a run that is not
        valid UTF-8 becomes one U+FFFD per byte (never an exception); one leading space is
        removed (the one ``encode`` prepends).

        Args:
            ids: token ids: a sequence of ints (or NumPy ints), or a 1-d integer NumPy array
                or torch tensor. Not a str, bytes, bool tensor or a single int.
            skip_special: drop ``<unk>``, ``<s>``, ``</s>`` and the added special tokens
                (Hugging Face's default).

        Raises:
            TypeError: ``ids`` is not a sequence of ids (None, an int, a str, bytes, a 0-d,
                2-d, bool or float tensor), naming what it got.
            ValueError: an id that is not an integer or is outside ``[0, vocab_size)``,
                naming the id and the vocab size.
        """
        parts: list[str] = []
        run = bytearray()
        for i in _id_sequence(ids):
            i = self._check_id(i)
            if skip_special and i in self._special_ids:
                continue  # dropped before decoding, so byte runs join across it (as in HF)
            b = self._byte_of.get(i)
            if b is not None:
                run.append(b)
                continue
            if run:
                parts.append(_decode_bytes(run))
                run = bytearray()
            parts.append(self._pieces[i].replace(SPACE, " "))
        if run:
            parts.append(_decode_bytes(run))
        text = "".join(parts)
        return text[1:] if text.startswith(" ") else text

    # ----------------------------------------------------------------- files
    def to_dict(self) -> dict:
        """The readable JSON form used by :meth:`save`."""
        data = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "dummy_prefix": self.dummy_prefix,
            "pieces": self._pieces,
            "merges": [list(m) for m in self.merges],
        }
        if self._special_tokens:
            data["special_tokens"] = list(self._special_tokens)
        return data

    def save(self, path: str | Path) -> None:
        """Write the tokenizer as readable JSON (one piece per line), atomically."""
        atomic_write_text(path, _dumps(self.to_dict()))

    @classmethod
    def load(cls, path: str | Path) -> ByteFallbackBPE:
        """Read a file written by :meth:`save`.

        Raises:
            ValueError: a TokenizerFileError naming the file and what is wrong with it.
        """
        data = _read_json(path)
        if not isinstance(data, dict):
            raise TokenizerFileError(path, f"expected a JSON object, got {type(data).__name__}")
        if data.get("format") != FORMAT:
            raise TokenizerFileError(path, f"expected \"format\": {FORMAT!r}, got {data.get('format')!r}")
        if type(data.get("version")) is not int or data["version"] != FORMAT_VERSION:
            raise TokenizerFileError(
                path, f"expected \"version\": {FORMAT_VERSION}, got {data.get('version')!r}"
            )
        for key in ("pieces", "merges"):
            if key not in data:
                raise TokenizerFileError(path, f"missing key {key!r}")
        pieces, merges = data["pieces"], data["merges"]
        if not isinstance(pieces, list) or not all(isinstance(p, str) for p in pieces):
            raise TokenizerFileError(path, "\"pieces\" must be a list of strings")
        if not isinstance(merges, list) or not all(
            isinstance(m, list) and len(m) == 2 and all(isinstance(x, str) for x in m) for m in merges
        ):
            raise TokenizerFileError(path, "\"merges\" must be a list of [left, right] string pairs")
        specials = data.get("special_tokens", [])
        if not isinstance(specials, list) or not all(isinstance(t, str) for t in specials):
            raise TokenizerFileError(path, "\"special_tokens\" must be a list of strings")
        try:
            return cls(pieces, [tuple(m) for m in merges], dummy_prefix=data.get("dummy_prefix", "always"),
                       special_tokens=specials)
        except ValueError as err:
            raise TokenizerFileError(path, str(err)) from None

    def to_hf_dict(self) -> dict:
        """A Hugging Face ``tokenizer.json`` dict in the layout of Llama 2's."""
        if self.dummy_prefix == "always":
            normalizer = {"type": "Sequence", "normalizers": [
                {"type": "Prepend", "prepend": SPACE},
                {"type": "Replace", "pattern": {"String": " "}, "content": SPACE},
            ]}
            pre_tokenizer = None
        else:
            normalizer = None
            pre_tokenizer = {
                "type": "Metaspace", "replacement": SPACE, "prepend_scheme": "first", "split": False,
            }
        added = [
            {"id": self._ids[s], "content": s, "single_word": False, "lstrip": False,
             "rstrip": False, "normalized": False, "special": True}
            for s in (*SPECIALS, *self._special_tokens)
        ]
        return {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": added,
            "normalizer": normalizer,
            "pre_tokenizer": pre_tokenizer,
            "post_processor": None,
            "decoder": {"type": "Sequence", "decoders": [
                {"type": "Replace", "pattern": {"String": SPACE}, "content": " "},
                {"type": "ByteFallback"},
                {"type": "Fuse"},
                {"type": "Strip", "content": " ", "start": 1, "stop": 0},
            ]},
            "model": {
                "type": "BPE", "dropout": None, "unk_token": UNK,
                "continuing_subword_prefix": None, "end_of_word_suffix": None,
                "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                "vocab": dict(self._ids),
                "merges": [list(m) for m in self.merges],
            },
        }

    def save_hf(self, path: str | Path) -> None:
        """Write a ``tokenizer.json`` that Hugging Face ``tokenizers`` loads.

        ``tokenizers.Tokenizer.from_file(path)`` then gives the same ids as :meth:`encode`
        (``encode(text, add_special_tokens=False)``) and the same text from ``decode``. One
        setting is needed for texts that contain ``"<s>"``, ``"</s>"`` or ``"<unk>"``
        literally: Hugging Face matches added tokens in raw text, so set
        ``tok.encode_special_tokens = True`` (tokenizers >= 0.15) to read them as plain
        text, as this tokenizer does.
        """
        atomic_write_text(path, _dumps(self.to_hf_dict()))

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write a folder that ``transformers.AutoTokenizer.from_pretrained`` loads.

        Named as in transformers. The folder gets ``tokenizer.json`` (:meth:`save_hf`, the
        special tokens as added special tokens) and ``tokenizer_config.json``. When the
        tokenizer has the chat special tokens, the config names ``<|begin_of_text|>``,
        ``<|eot_id|>`` and ``<|pad|>`` as bos, eos and pad tokens and holds the Jinja
        ``chat_template`` of :mod:`llm_glossary.dialog`, whose ``{% generation %}`` block
        covers each assistant message's content and its ``<|eot_id|>``: then
        ``apply_chat_template(..., return_assistant_tokens_mask=True)`` gives the ids and the
        trained positions of :func:`llm_glossary.dialog.encode_dialog`.

        Returns:
            The folder's path.
        """
        folder = Path(folder)
        config: dict = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "model_max_length": 1_000_000,
            "clean_up_tokenization_spaces": False,
            "unk_token": UNK,
        }
        if all(t in self._special_tokens for t in CHAT_SPECIALS):
            from llm_glossary.dialog import CHAT_TEMPLATE

            config.update(bos_token=BEGIN_OF_TEXT, eos_token=EOT, pad_token=PAD, chat_template=CHAT_TEMPLATE)
        else:
            config.update(bos_token=BOS, eos_token=EOS)
        # both files change together (a model saved in the same folder is kept)
        with atomic_folder(folder, carry_over=True) as tmp:
            self.save_hf(tmp / "tokenizer.json")
            atomic_write_text(tmp / "tokenizer_config.json",
                              json.dumps(config, ensure_ascii=False, indent=2) + "\n")
        return folder

    @classmethod
    def from_hf(cls, path: str | Path) -> ByteFallbackBPE:
        """Load a Llama-2/Mistral-style ``tokenizer.json`` (BPE with byte fallback).

        Accepts the Llama 2 layout (normalizer Prepend("▁") + Replace(" ", "▁"), no
        pre-tokenizer) and the newer one (no normalizer, Metaspace pre-tokenizer with
        ``split: false``). Merges may be ``"a b"`` strings or ``[a, b]`` lists.

        Raises:
            ValueError: a TokenizerFileError naming the file and what is wrong with it.
        """
        data = _read_json(path)
        if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
            raise TokenizerFileError(path, "expected a Hugging Face tokenizer.json with a \"model\" object")
        model = data["model"]
        if model.get("type", "BPE") != "BPE":
            raise TokenizerFileError(path, f"expected model type 'BPE', got {model.get('type')!r}")
        if model.get("byte_fallback") is not True:
            raise TokenizerFileError(
                path, f"expected \"byte_fallback\": true in the BPE model, got {model.get('byte_fallback')!r}")
        for key in ("dropout", "continuing_subword_prefix", "end_of_word_suffix"):
            if model.get(key) is not None:
                raise TokenizerFileError(
                    path, f"expected \"{key}\": null in the BPE model, got {model[key]!r}")
        if model.get("ignore_merges"):
            raise TokenizerFileError(path, "expected \"ignore_merges\": false in the BPE model")
        dummy_prefix = _dummy_prefix_of(data)
        if dummy_prefix is None:
            raise TokenizerFileError(
                path,
                "expected Llama-style whitespace handling: normalizer "
                "Prepend('▁') + Replace(' ', '▁') "
                "and no pre-tokenizer, or a Metaspace pre-tokenizer with "
                "split=false")
        vocab = model.get("vocab")
        if not isinstance(vocab, dict):
            raise TokenizerFileError(path, "\"model.vocab\" must be an object piece -> id")
        by_id: dict[int, str] = {}
        for piece, i in vocab.items():
            if type(i) is not int or i < 0:
                raise TokenizerFileError(path, f"model.vocab[{piece!r}] must be an id >= 0, got {i!r}")
            if i in by_id:
                raise TokenizerFileError(path, f"id {i} is given to both {by_id[i]!r} and {piece!r}")
            by_id[i] = piece
        added = data.get("added_tokens") or []
        if not isinstance(added, list):
            raise TokenizerFileError(path, "\"added_tokens\" must be a list")
        specials = []
        for k, tok in enumerate(added):
            if not (isinstance(tok, dict) and type(tok.get("id")) is int and tok["id"] >= 0
                    and isinstance(tok.get("content"), str)):
                raise TokenizerFileError(
                    path, f"added_tokens[{k}] must have an \"id\" >= 0 and a string \"content\", got {tok!r}")
            if by_id.setdefault(tok["id"], tok["content"]) != tok["content"]:
                raise TokenizerFileError(
                    path, f"added_tokens[{k}] gives id {tok['id']} to {tok['content']!r}, but the "
                    f"vocabulary gives it to {by_id[tok['id']]!r}; expected one piece per id")
            if tok.get("special") and tok["content"] not in _RESERVED:
                specials.append(tok["content"])
        gap = next((i for i in range(len(by_id)) if i not in by_id), None)
        if gap is not None:
            raise TokenizerFileError(path, f"ids must run from 0 without gaps; id {gap} has no piece")
        pieces = [by_id[i] for i in range(len(by_id))]
        raw_merges = model.get("merges", [])
        if not isinstance(raw_merges, list):
            raise TokenizerFileError(
                path, f"\"model.merges\" must be a list, got {type(raw_merges).__name__}")
        merges = []
        for k, m in enumerate(raw_merges):
            parts = m.split(" ") if isinstance(m, str) else m
            if not (isinstance(parts, list) and len(parts) == 2 and all(isinstance(x, str) for x in parts)):
                raise TokenizerFileError(
                    path, f"merge {k} must be a 'left right' string or a [left, right] pair, got {m!r}")
            merges.append((parts[0], parts[1]))
        try:
            return cls(pieces, merges, dummy_prefix=dummy_prefix, special_tokens=specials)
        except ValueError as err:
            raise TokenizerFileError(path, str(err)) from None


# --8<-- [start:corpus_tokenizer]
# vocab_size -> tokenizer, per process
_CORPUS_TOKENIZERS: dict[int, ByteFallbackBPE] = {}


def corpus_tokenizer(vocab_size: int = 4000) -> ByteFallbackBPE:
    """The tokenizer the pages share: trained once per process on the shipped
    corpus.

    Trains on ``load_corpus("train")`` (Korean and English) and keeps the
    result, so the Korean and English pages of one build reuse a single training
    run. Treat the returned tokenizer as read-only: every caller gets the same
    object.

    Args:
        vocab_size: pieces in the vocabulary, counted as in
            :meth:`ByteFallbackBPE.train`.

    Raises:
        ValueError: ``vocab_size`` too small (the message states the minimum).

    Examples:
        >>> corpus_tokenizer() is corpus_tokenizer(4000)
        True
    """
    if vocab_size not in _CORPUS_TOKENIZERS:
        from llm_glossary.corpus import load_corpus

        _CORPUS_TOKENIZERS[vocab_size] = ByteFallbackBPE.train(
            load_corpus("train"), vocab_size
        )
    return _CORPUS_TOKENIZERS[vocab_size]
# --8<-- [end:corpus_tokenizer]


_PAIR_RE = re.compile(r'\[\n\s*("(?:[^"\\]|\\.)*"),\n\s*("(?:[^"\\]|\\.)*")\n\s*\]')


def _dumps(data: dict) -> str:
    """JSON with one piece or one merge per line (merges as ``["a", "b"]`` on one line)."""
    return _PAIR_RE.sub(r"[\1, \2]", json.dumps(data, ensure_ascii=False, indent=1)) + "\n"


def _id_sequence(ids: object) -> Iterable:
    """``ids`` as an iterable of ids, or a TypeError naming what ``decode`` got instead."""
    expected = "expected a sequence of int ids or a 1-d integer tensor/array"
    if hasattr(ids, "dtype") and hasattr(ids, "ndim") and hasattr(ids, "tolist"):  # torch, NumPy
        dtype = str(ids.dtype).removeprefix("torch.")
        if not dtype.startswith(("int", "uint")) or ids.ndim != 1:
            raise TypeError(f"decode: {expected}, got a {ids.ndim}-d tensor/array of dtype {dtype}")
        return ids.tolist()
    if isinstance(ids, (str, bytes, bytearray, memoryview, dict)) or not isinstance(ids, Iterable):
        raise TypeError(f"decode: {expected}, got {type(ids).__name__} {ids!r:.40}")
    return ids


def _decode_bytes(run: bytearray) -> str:
    try:
        return run.decode("utf-8")
    except UnicodeDecodeError:
        return "\ufffd" * len(run)  # Hugging Face's ByteFallback: one U+FFFD per byte


def _read_json(path: str | Path):
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TokenizerFileError(path, "file not found") from None
    except OSError as err:
        raise TokenizerFileError(path, f"cannot read the file ({err.strerror or err})") from None
    except UnicodeDecodeError as err:
        raise TokenizerFileError(path, f"not UTF-8 text ({err.reason} at byte {err.start})") from None
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except json.JSONDecodeError as err:
        problem = f"not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})"
        raise TokenizerFileError(path, problem) from None
    except RecursionError:
        raise TokenizerFileError(path, "not valid JSON (nested too deeply)") from None
    except ValueError as err:  # a duplicate key, NaN or Infinity
        raise TokenizerFileError(path, f"not valid JSON ({err})") from None


def _dummy_prefix_of(data: dict) -> str | None:
    """"always" for Llama 2's normalizer, "if_missing" for a Metaspace pre-tokenizer, else None."""
    norm, pre = data.get("normalizer"), data.get("pre_tokenizer")
    if isinstance(norm, dict) and pre is None:
        steps = norm.get("normalizers", []) if norm.get("type") == "Sequence" else [norm]
        if not isinstance(steps, list) or not all(
            isinstance(s, dict) and isinstance(s.get("pattern") or {}, dict) for s in steps
        ):
            return None
        kinds = [
            (s.get("type"), s.get("prepend"), (s.get("pattern") or {}).get("String"), s.get("content"))
            for s in steps
        ]
        if kinds == [("Prepend", SPACE, None, None), ("Replace", None, " ", SPACE)]:
            return "always"
    if norm is None and isinstance(pre, dict):
        # With split=false the whole text is one pre-token, so "first" and "always" agree.
        if (pre.get("type") == "Metaspace" and pre.get("replacement") == SPACE
                and pre.get("split") is False and pre.get("prepend_scheme", "always") in ("always", "first")):
            return "if_missing"
    return None
