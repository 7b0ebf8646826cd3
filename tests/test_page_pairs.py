"""The Korean and English page of a pair run the same code and have the same outline.

Only prose, comments and string literals (labels, printed captions) may differ between the
two languages; every executed block, its options and every heading level must match. Code is
compared as syntax trees, so line wrapping (parentheses, a trailing comma) may differ where a
longer caption in one language needs a break.
"""

import ast
import io
import re
import tokenize
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"

FENCE = re.compile(r"^```python([^\n]*)\n(.*?)^```", re.S | re.M)
SKIP = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}
STRINGS = {tokenize.STRING} | {getattr(tokenize, n) for n in ("FSTRING_START", "FSTRING_MIDDLE", "FSTRING_END") if hasattr(tokenize, n)}


class _Strings(ast.NodeTransformer):
    """Every string literal, f-strings included, becomes the name STR."""

    def visit_JoinedStr(self, node):
        return ast.copy_location(ast.Name("STR", ast.Load()), node)

    def visit_Constant(self, node):
        if isinstance(node.value, str):
            return ast.copy_location(ast.Name("STR", ast.Load()), node)
        return node


def code_shape(code: str) -> list[str]:
    """A code block's syntax tree with every string as "STR" (comments and layout do not count).

    Blocks that are not Python on their own (snippet markers) fall back to their tokens, with
    comments dropped and each run of string pieces as one "STR".
    """
    try:
        return [ast.dump(_Strings().visit(ast.parse(code)))]
    except SyntaxError:
        pass
    out: list[str] = []
    for tok in tokenize.generate_tokens(io.StringIO(code).readline):
        if tok.type in SKIP:
            continue
        word = "STR" if tok.type in STRINGS else tok.string
        if not (word == "STR" and out and out[-1] == "STR"):
            out.append(word)
    return out


def blocks(text: str) -> list[tuple[str, list[str]]]:
    return [(re.sub(r'session="(ko|en)-', 'session="', opts), code_shape(code)) for opts, code in FENCE.findall(text)]


def outline(text: str) -> list[int]:
    body = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return [len(m.group(1)) for m in re.finditer(r"^(#{1,6}) ", body, flags=re.M)]


PAIRS = sorted(p.name[: -len(".ko.md")] for p in DOCS.glob("*.ko.md"))


def test_code_shape_sees_code_but_not_comments_or_strings():
    assert code_shape('x = f(1)  # 설명\nprint("안녕")') == code_shape('x = f(1)  # note\nprint("hello")')
    assert code_shape("x = f(1)") != code_shape("x = f(2)")
    assert code_shape('f(\n    "a "\n    "b",\n)') == code_shape('f("긴 설명")')
    assert code_shape("assert (\n    x == 1\n)") == code_shape("assert x == 1")
    assert code_shape("assert x == 1") != code_shape("assert x != 1")


@pytest.mark.parametrize("slug", PAIRS)
def test_korean_and_english_pages_run_the_same_code(slug):
    ko = (DOCS / f"{slug}.ko.md").read_text(encoding="utf-8")
    en = (DOCS / f"{slug}.en.md").read_text(encoding="utf-8")
    ko_blocks, en_blocks = blocks(ko), blocks(en)
    assert len(ko_blocks) == len(en_blocks), f"{slug}: {len(ko_blocks)} code blocks in ko, {len(en_blocks)} in en"
    for i, ((ko_opts, ko_code), (en_opts, en_code)) in enumerate(zip(ko_blocks, en_blocks)):
        assert ko_opts == en_opts, f"{slug} block {i}: options differ: {ko_opts!r} / {en_opts!r}"
        assert ko_code == en_code, f"{slug} block {i}: the code differs between ko and en"
    assert outline(ko) == outline(en), f"{slug}: heading outline differs"
