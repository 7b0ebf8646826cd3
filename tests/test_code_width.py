"""Code on the pages is read, not only run: no line of it is wider than 80 characters.

Checks every fenced block in docs/*.md, and the source lines a snippet marker
(``--8<-- "src/...:section"``) pulls into a block, as they render on the page.
"""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
LIMIT = 80

FENCE = re.compile(r"^([ \t]*)(`{3,}|~{3,})([^\n]*)\n(.*?)^\1\2[ \t]*$", re.S | re.M)
SNIPPET = re.compile(r'^\s*--8<--\s+"([^":]+)(?::([\w-]+))?"\s*$')


def snippet_lines(path: str, section: str | None) -> list[str]:
    """The lines a snippet marker includes (section markers themselves never render)."""
    lines = (ROOT / path).read_text(encoding="utf-8").splitlines()
    if section is None:
        return [line for line in lines if "--8<--" not in line]
    out, inside = [], False
    for line in lines:
        if f"[start:{section}]" in line:
            inside = True
        elif f"[end:{section}]" in line:
            inside = False
        elif inside and "--8<--" not in line:
            out.append(line)
    assert out, f"{path}: snippet section {section!r} is empty or missing"
    return out


def rendered_code_lines(text: str):
    """(where, line) for every line of code a page shows, snippets expanded."""
    for m in FENCE.finditer(text):
        indent, body = m.group(1), m.group(4)
        start = text.count("\n", 0, m.start()) + 2
        for k, line in enumerate(body.splitlines()):
            line = line[len(indent):] if line.startswith(indent) else line
            snip = SNIPPET.match(line)
            if snip:
                for src in snippet_lines(snip.group(1), snip.group(2)):
                    yield f"{snip.group(1)}:{snip.group(2)}", src
            else:
                yield f"line {start + k}", line


def test_rendered_code_lines_expand_snippets_and_see_indented_fences():
    text = '```python\nx = 1\n--8<-- "src/llm_glossary/norm.py:rms"\n```\n\n    ```py\n    y = 2\n    ```\n'
    lines = [line for _, line in rendered_code_lines(text)]
    assert lines[0] == "x = 1" and lines[-1] == "y = 2"
    assert any(line.startswith("def rms") for line in lines)
    assert not any("--8<--" in line for line in lines)


PAGES = sorted(p.name for p in DOCS.glob("*.md"))


@pytest.mark.parametrize("page", PAGES)
def test_code_lines_fit_in_80_characters(page):
    text = (DOCS / page).read_text(encoding="utf-8")
    wide = [f"{where} ({len(line)}): {line.strip()[:60]}" for where, line in rendered_code_lines(text) if len(line) > LIMIT]
    assert not wide, f"{page}: {len(wide)} code lines wider than {LIMIT} characters:\n" + "\n".join(wide)
