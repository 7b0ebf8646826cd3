"""One Korean term per concept across the site, with the English in parentheses on first use.

The table is small on purpose: it lists the concepts for which the pages used competing Korean
words. Glossary aliases may keep the other spellings (so a search or a tooltip still finds them),
so alias lines are not checked.
"""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# preferred term -> pattern of the forms the site does not use for that concept
PREFERRED = {
    "Llama": r"라마",
    "사영 (projection)": r"투영",
    "윈도우 (window)": r"윈도(?!우)|(?<![가-힣])창(?=[ (들]|$)",
    "청크 (chunk)": r"덩어리",
    "키·값 (key/value)": r"키/값",
    "문맥 길이 (context length / window)": r"맥락 창|문맥 창",
    "순전파 (forward pass)": r"포워드 패스|순방향 전파",
    "기울기 (gradient)": r"그래디언트|그레이디언트",
}

# on every Korean page that uses the term in its prose, its first use carries the English
FIRST_USE = {
    "기울기": "gradient",
    "하위 층": "sub-layer",
    "사영": "projection",
    "메모리 대역폭": "memory bandwidth",
    "상대 위치": "relative position",
    "스케일링 법칙": "scaling law",
    "온폴리시": "on-policy",
}

KO_PAGES = sorted((ROOT / "docs").glob("*.ko.md"))
FENCE = re.compile(r"^([ \t]*)(`{3,}).*?^\1\2[ \t]*$", re.S | re.M)


def korean_texts():
    for page in KO_PAGES:
        yield page.name, page.read_text(encoding="utf-8")
    for entry in sorted((ROOT / "glossary").glob("*.yml")):
        lines = [line for line in entry.read_text(encoding="utf-8").splitlines() if not line.startswith("aliases:")]
        yield entry.name, "\n".join(lines)


def prose(text: str) -> str:
    """Page text without code blocks, with line breaks as spaces (a term may wrap)."""
    return re.sub(r"\s*\n\s*", " ", FENCE.sub(" ", text))


def test_the_checks_see_what_they_should():
    assert re.search(PREFERRED["윈도우 (window)"], "창 4,096칸") and re.search(PREFERRED["윈도우 (window)"], "창(window)")
    assert not re.search(PREFERRED["윈도우 (window)"], "윈도우 4,096칸, 창문이 아닌 말")
    assert prose("사영\n(projection)\n```python\n사영\n```\n") == "사영 (projection) "


@pytest.mark.parametrize("preferred", sorted(PREFERRED))
def test_one_korean_term_per_concept(preferred):
    pattern = re.compile(PREFERRED[preferred])
    found = []
    for name, text in korean_texts():
        for i, line in enumerate(text.splitlines(), 1):
            found += [f"{name}:{i}: {m.group(0)!r} in {line.strip()[:60]!r}" for m in pattern.finditer(line)]
    assert not found, f"use {preferred}:\n" + "\n".join(found)


@pytest.mark.parametrize("term", sorted(FIRST_USE))
def test_english_in_parentheses_on_first_use(term):
    missing = []
    for page in KO_PAGES:
        text = prose(page.read_text(encoding="utf-8"))
        at = text.find(term)
        if at < 0:
            continue
        after = text[at + len(term) : at + len(term) + 40]
        if not re.match(r"\s*\([^)]*" + re.escape(FIRST_USE[term]), after, flags=re.I):
            missing.append(f"{page.name}: {text[max(0, at - 20) : at + 40]!r}")
    assert not missing, f"first use of {term} needs ({FIRST_USE[term]}):\n" + "\n".join(missing)


def test_an_english_gloss_follows_a_korean_term():
    """'(base model)' once stood after a plain '모델' with no Korean term for it."""
    for page in KO_PAGES:
        text = prose(page.read_text(encoding="utf-8"))
        for at in [i for i in range(len(text)) if text.startswith("(base model)", i)]:
            assert text[:at].endswith("기반 모델"), f"{page.name}: {text[max(0, at - 30) : at + 12]!r}"
