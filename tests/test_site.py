"""The site build is a test: every executed block runs, strictly, in both languages."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import build_site as _build  # the `site` fixture (the strict build) lives in conftest.py


def _page(site: Path, lang: str, slug: str) -> str:
    base = site if lang == "ko" else site / "en"
    return (base / slug / "index.html").read_text(encoding="utf-8")


def test_rmsnorm_page_shows_executed_values_in_both_languages(site):
    for lang in ("ko", "en"):
        html = _page(site, lang, "rmsnorm")
        for value in ("5.4772", "0.3651, 0.7303, 1.0954, 1.4606", "-1.3416, -0.4472, 0.4472, 1.3416", "55.90", "2.5820", "2.2361"):
            assert value in html, f"{lang}: {value} missing from the executed output"


def test_korean_particle_after_a_term_gets_the_hover_definition(site):
    found = [
        (path.parent.name, m.group(1))
        for path in site.glob("*/index.html")
        for m in re.finditer(r'<abbr title="[^"]*">([A-Za-z][A-Za-z0-9 -]*)</abbr>[가-힣]', path.read_text("utf-8"))
    ]
    assert found, "no Latin term right before a Korean particle got its hover definition"


def test_terms_are_marked_once_per_page_and_not_on_their_own_page(site):
    html = _page(site, "ko", "rmsnorm")
    assert "RMSNorm은" in html and "<abbr" not in html.split("<article", 1)[1]
    for lang in ("ko", "en"):
        for path in (site if lang == "ko" else site / "en").glob("*/index.html"):
            marked = re.findall(r'<abbr title="([^"]*)">', path.read_text("utf-8"))
            assert len(marked) == len(set(marked)), f"{lang}/{path.parent.name}: a term is marked twice"
    home = (site / "index.html").read_text("utf-8")
    assert "<abbr" not in home.split("<table", 1)[1].split("</table>", 1)[0]


def test_headings_keep_hangul_anchors(site):
    html = _page(site, "ko", "rmsnorm")
    for anchor in ("한-줄-정의", "직관", "수식", "코드", "실행", "흔한-오해", "더-읽기"):
        assert f'id="{anchor}"' in html, anchor


def test_every_term_page_follows_the_page_pattern(site, glossary_hook, root):
    sections = {
        "ko": ["한 줄 정의", "직관", "수식", "코드", "실행", "흔한 오해", "더 읽기"],
        "en": ["In one sentence", "Intuition", "The math", "The code", "Run it", "Common misconceptions", "Sources"],
    }
    for term in glossary_hook.load_glossary(root / "glossary").terms:
        if term.page_slug != term.slug:
            continue  # explained in a section of another page, which has its own outline
        for lang, names in sections.items():
            text = (root / "docs" / f"{term.slug}.{lang}.md").read_text(encoding="utf-8")
            headings = re.findall(r"^## (.+?)\s*$", text, flags=re.M)
            positions = [headings.index(n) if n in headings else -1 for n in names]
            assert -1 not in positions, f"{term.slug}.{lang}.md lacks sections {[n for n, p in zip(names, positions) if p < 0]}"
            assert positions == sorted(positions), f"{term.slug}.{lang}.md: sections out of order"


def test_language_switcher_goes_to_the_same_page(site):
    assert 'href="../en/rmsnorm/" hreflang="en"' in _page(site, "ko", "rmsnorm")
    assert 'href="../../rmsnorm/" hreflang="ko"' in _page(site, "en", "rmsnorm")


def test_glossary_index_lists_every_term_in_both_languages(site, glossary_hook, root):
    terms = glossary_hook.load_glossary(root / "glossary").terms
    ko, en = (site / "index.html").read_text("utf-8"), (site / "en" / "index.html").read_text("utf-8")
    for term in terms:
        slug, _, anchor = (term.page or term.slug).partition("#")
        target = f"{slug}/" + (f"#{anchor}" if anchor else "")
        assert f'href="{target}">{term.ko}</a>' in ko
        assert f'href="{target}">{term.en}</a>' in en


_REMOTE = re.compile(
    r"""<(?:script|img|iframe|source|audio|video)\b[^>]*\ssrc=["'](?:https?:)?//"""
    r"""|<link\b(?![^>]*\srel=["']canonical["'])[^>]*\shref=["'](?:https?:)?//"""  # a canonical URL is no request
    r"""|url\(\s*["']?(?:https?:)?//"""
    r"""|@import\s+["'](?:https?:)?//""",
    re.I,
)


def test_no_page_requests_anything_from_the_network(site):
    offenders = []
    for path in site.rglob("*"):
        if path.suffix in {".html", ".css", ".js"}:
            text = path.read_text(encoding="utf-8", errors="replace")
            for m in _REMOTE.finditer(text):
                offenders.append(f"{path.relative_to(site)}: {text[m.start():m.start() + 120]}")
    assert not offenders, "remote requests:\n" + "\n".join(offenders[:20])


def test_math_and_fonts_are_served_locally(site):
    html = _page(site, "ko", "rmsnorm")
    assert 'src="../assets/katex/katex.min.js"' in html
    assert 'href="../assets/katex/katex.min.css"' in html
    assert 'class="arithmatex"' in html
    fonts = list((site / "assets" / "katex" / "fonts").glob("*.woff2"))
    assert len(fonts) >= 20
    css = (site / "assets" / "katex" / "katex.min.css").read_text("utf-8")
    for ref in set(re.findall(r"url\((fonts/[^)]+\.woff2)\)", css)):
        assert (site / "assets" / "katex" / ref).is_file(), ref


def test_search_is_configured_for_korean_and_english(site):
    config = (site / "search" / "search_index.json").read_text("utf-8")
    assert '"lang":["ko","en"]' in config.replace(" ", "")


def test_a_planted_failing_block_fails_the_build(root, tmp_path, site, site_cache):
    """Copy the project, plant a failing executed block, and expect the strict build to fail.

    The copy reuses the session build's walkthrough cache (the same code and data, so the same
    cache key): the walkthrough does not train a second time.
    """
    work = tmp_path / "project"
    work.mkdir()
    for name in ("mkdocs.yml",):
        shutil.copy2(root / name, work / name)
    for name in ("docs", "glossary", "hooks", "templates"):
        shutil.copytree(root / name, work / name, ignore=shutil.ignore_patterns("__pycache__"))
    (work / "src").symlink_to(root / "src")
    block = '```python exec="on" session="{lang}-planted"\nvalue = 1 + 1\nassert value == 3, "planted failure"\n```\n'
    for lang in ("ko", "en"):
        (work / "docs" / f"planted.{lang}.md").write_text(f"# Planted\n\n{block.format(lang=lang)}", encoding="utf-8")
    assert list(site_cache.glob("walkthrough-*"))  # filled by the session's build
    result = _build(work, tmp_path / "out", cache=site_cache)
    output = result.stdout + result.stderr
    assert result.returncode != 0, "a failing executed block did not fail the strict build"
    assert "planted failure" in output and "AssertionError" in output


def _executed_output(html: str) -> str:
    """The text that executed blocks printed (markdown-exec's result divs), tags stripped."""
    import html as html_lib

    chunks = re.findall(r'<div class="result">(.*?)</code></pre>', html, flags=re.S)
    return html_lib.unescape(re.sub(r"<[^>]+>", "", "\n".join(chunks)))


# Values the issues name, printed by each page's executed code (not merely written in its prose).
EXECUTED_VALUES = {
    "self-attention": ["0.8044", "0.1084", "0.4458"],
    "gqa": ["1.00 GiB", "4.00 GiB"],
    "sliding-window-attention": ["[1, 2, 3, 3, 3]", "131,072"],
    "positional-encoding": ["0.8415, 0.5403, 0.0100, 1.0000", "KeyError", "NameError", "TypeError"],
    "bpe": ["<0xED>", "<0x96>", "<0x8F>", "<0xF0>"],  # 햏 = ED 96 8F, never seen in training; emoji and 𝔘 start with F0
    "hyangga": ["<0xE6>", "<0xE1>"],  # byte pieces of 東 and of the archaic jamo
    "matrix-vs-array": ["[[1, 4], [9, 16]]", "[[7, 10], [15, 22]]", "PendingDeprecationWarning"],
    "llama3-training": ["8,030,261,248", "7.2"],
    # the seed's quote named by code point; (ln(1 + 4004·e^-10) + ln 4005) / 2 = 4.2312, the mean of
    # per-dialog means when one reply is predicted with logit 10 and the other uniformly over 4005 ids
    "dialog-format": ["line 1, column 2: typographic quote “ (U+201C", "4.2312"],
}


@pytest.mark.parametrize("slug", sorted(EXECUTED_VALUES))
def test_pages_print_the_values_the_issues_name(site, slug):
    for lang in ("ko", "en"):
        out = _executed_output(_page(site, lang, slug))
        missing = [v for v in EXECUTED_VALUES[slug] if v not in out]
        assert not missing, f"{lang}/{slug}: executed output lacks {missing}"


def test_sliding_window_page_shows_the_saved_benchmark_with_its_machine(site, root):
    import json

    saved = json.loads((root / "docs" / "data" / "sliding_window_bench.json").read_text(encoding="utf-8"))
    for lang in ("ko", "en"):
        html = _page(site, lang, "sliding-window-attention")
        assert saved["machine"] in html
        assert "8192" in html or "8,192" in html


def test_kv_cache_page_shows_the_saved_model_benchmark_with_its_machine(site, root):
    import json

    saved = json.loads((root / "docs" / "data" / "model_bench.json").read_text(encoding="utf-8"))
    for lang in ("ko", "en"):
        out = _executed_output(_page(site, lang, "kv-cache"))
        html = _page(site, lang, "kv-cache")
        assert saved["machine"] in html and saved["date"] in html
        for row in saved["generate"]:
            assert f"{row['ratio']:.1f}×" in html, (lang, row)
        assert out  # the page's other executed blocks printed too


def test_figures_are_inline_svg_with_text_kept_as_text(site):
    for lang in ("ko", "en"):
        for slug in ("gqa", "sliding-window-attention", "positional-encoding", "hyangga"):
            html = _page(site, lang, slug)
            assert "<svg" in html, f"{lang}/{slug} has no figure"
    ko = _page(site, "ko", "gqa")
    assert re.search(r"<text[^>]*>[^<]*[가-힣]", ko) or re.search(r"<!--[^>]*[가-힣]", ko), "Korean labels missing from the GQA figure"


def test_search_indexes_prose_not_the_figures_insides(site):
    """Tick labels, legends and matplotlib's SVG metadata are not page text for the search:
    on every page with a figure, no label that appears only inside its figures is indexed."""
    import html as html_lib

    checked = 0  # labels found only inside figures
    for lang, prefix in (("ko", ""), ("en", "en/")):
        index = json.loads((site / prefix / "search" / "search_index.json").read_text(encoding="utf-8"))
        for slug in ("gqa", "sliding-window-attention", "positional-encoding", "hyangga", "sampling", "self-attention"):
            page = _page(site, lang, slug)
            article = page[page.index("<article"):page.index("</article>")]
            figures = re.findall(r"<svg.*?</svg>", article, re.S)
            labels = {html_lib.unescape(t).strip() for f in figures for t in re.findall(r"<text[^>]*>([^<]+)</text>", f)}
            prose = html_lib.unescape(re.sub(r"<[^>]+>", " ", re.sub(r"<svg.*?</svg>", " ", article, flags=re.S)))
            def has(label, text):
                return re.search(r"(?<!\w)" + re.escape(label) + r"(?!\w)", text) is not None

            only_in_figures = {t for t in labels if len(t) >= 2 and not has(t, prose)}
            text = " ".join(d["text"] for d in index["docs"] if d["location"].split("#")[0] == f"{slug}/")
            assert text and not [t for t in only_in_figures if has(t, text)], (lang, slug)
            assert "image/svg+xml" not in text and "matplotlib.org" not in text, (lang, slug)
            checked += len(only_in_figures)
    assert checked >= 20  # the check had labels to look for
