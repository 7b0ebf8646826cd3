"""The text corpus written for this project, shipped as package data.

Korean and English, everyday and technical, written fresh for llm-glossary (no text is
copied from elsewhere). The tokenizer pages and benchmarks train on the ``train`` split
and measure on the ``heldout`` split; the dialog walkthrough pretrains on ``train``.

Layout: ``llm_glossary/data/corpus/<split>/<lang>-<topic>.txt``, UTF-8, one paragraph
per line.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["SPLITS", "corpus_files", "load_corpus", "corpus_lines"]

SPLITS = ("train", "heldout")
LANGS = ("ko", "en")


def _root() -> Path:
    return Path(str(resources.files("llm_glossary") / "data" / "corpus"))


def corpus_files(split: str = "train", lang: str | None = None) -> list[Path]:
    """The corpus files of one split, sorted by name.

    Args:
        split: ``"train"`` or ``"heldout"``.
        lang: ``"ko"``, ``"en"`` or ``None`` for both.

    Raises:
        ValueError: on an unknown split or language, or when the split has no files.
    """
    if split not in SPLITS:
        raise ValueError(f"corpus split must be one of {SPLITS}, got {split!r}")
    if lang is not None and lang not in LANGS:
        raise ValueError(f"corpus lang must be one of {LANGS} or None, got {lang!r}")
    folder = _root() / split
    pattern = f"{lang}-*.txt" if lang else "*.txt"
    files = sorted(folder.glob(pattern))
    if not files:
        raise ValueError(f"no corpus files matching {pattern!r} in {folder}")
    return files


def corpus_lines(split: str = "train", lang: str | None = None) -> list[str]:
    """Every non-empty line (paragraph) of a split, in file order."""
    lines: list[str] = []
    for path in corpus_files(split, lang):
        text = path.read_text(encoding="utf-8")
        lines.extend(line for line in text.splitlines() if line.strip())
    return lines


def load_corpus(split: str = "train", lang: str | None = None) -> str:
    """The whole split as one string, paragraphs separated by newlines.

    Examples:
        >>> text = load_corpus("train")
        >>> len(text.encode("utf-8")) > 200_000
        True
    """
    return "\n".join(corpus_lines(split, lang))
