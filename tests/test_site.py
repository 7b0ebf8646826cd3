"""The site build is a test: every executed block runs, strictly, in both languages."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

MKDOCS = [sys.executable, "-m", "mkdocs"]


def _build(cwd: Path, out: Path, config: Path | None = None) -> subprocess.CompletedProcess:
    # Never `-q`: it drops the warning count and lets a strict build pass with failing blocks.
    cmd = [*MKDOCS, "build", "--strict", "--clean", "-d", str(out)]
    if config is not None:
        cmd += ["-f", str(config)]
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, timeout=1200)


@pytest.fixture(scope="session")
def site(root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    result = _build(root, out)
    assert result.returncode == 0, f"strict site build failed:\n{result.stdout[-5000:]}\n{result.stderr[-15000:]}"
    return out


def _page(site: Path, lang: str, slug: str) -> str:
    base = site if lang == "ko" else site / "en"
    return (base / slug / "index.html").read_text(encoding="utf-8")


def test_rmsnorm_page_shows_executed_values_in_both_languages(site):
    for lang in ("ko", "en"):
        html = _page(site, lang, "rmsnorm")
        for value in ("5.4772", "0.3651, 0.7303, 1.0954, 1.4606", "-1.3416, -0.4472, 0.4472, 1.3416", "55.90", "2.5820", "2.2361"):
            assert value in html, f"{lang}: {value} missing from the executed output"


def test_korean_particle_after_a_term_gets_the_hover_definition(site):
    html = _page(site, "ko", "rmsnorm")
    assert re.search(r'<abbr title="[^"]*RMSNorm[^"]*">RMSNorm</abbr>은', html)


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
        assert f'href="{term.slug}/">{term.ko}</a>' in ko
        assert f'href="{term.slug}/">{term.en}</a>' in en


_REMOTE = re.compile(
    r"""<(?:script|img|iframe|source|audio|video)\b[^>]*\ssrc=["'](?:https?:)?//"""
    r"""|<link\b[^>]*\shref=["'](?:https?:)?//"""
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


def test_a_planted_failing_block_fails_the_build(root, tmp_path):
    """Copy the project, plant a failing executed block, and expect the strict build to fail."""
    work = tmp_path / "project"
    work.mkdir()
    for name in ("mkdocs.yml",):
        shutil.copy2(root / name, work / name)
    for name in ("docs", "glossary", "hooks"):
        shutil.copytree(root / name, work / name, ignore=shutil.ignore_patterns("__pycache__"))
    (work / "src").symlink_to(root / "src")
    block = '```python exec="on" session="{lang}-planted"\nvalue = 1 + 1\nassert value == 3, "planted failure"\n```\n'
    for lang in ("ko", "en"):
        (work / "docs" / f"planted.{lang}.md").write_text(f"# Planted\n\n{block.format(lang=lang)}", encoding="utf-8")
    result = _build(work, tmp_path / "out")
    output = result.stdout + result.stderr
    assert result.returncode != 0, "a failing executed block did not fail the strict build"
    assert "planted failure" in output and "AssertionError" in output
