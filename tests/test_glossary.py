"""The glossary: entry validation, page pairing, the index, and hover definitions."""

import textwrap

import pytest


def _entry(slug="gqa", **over):
    data = {
        "slug": slug,
        "ko": "그룹 쿼리 어텐션",
        "en": "Grouped-query attention",
        "abbr": "GQA",
        "definition": {"ko": "쿼리 헤드 여러 개가 키·값 헤드 하나를 나눠 쓰는 어텐션.", "en": "Attention where groups of query heads share one key/value head."},
    }
    data.update(over)
    return data


def test_real_glossary_is_valid_and_every_page_has_its_pair(glossary_hook, root):
    glossary = glossary_hook.load_glossary(root / "glossary")
    assert glossary.terms, "the glossary is empty"
    glossary_hook.check_symbols(glossary)
    glossary_hook.check_pages(glossary, root / "docs")


def test_missing_page_in_one_language_fails(glossary_hook, tmp_path):
    (tmp_path / "glossary").mkdir()
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "gqa.ko.md").write_text("# GQA\n", encoding="utf-8")
    glossary = glossary_hook.Glossary([glossary_hook.parse_term(_entry(), "gqa.yml")])
    with pytest.raises(glossary_hook.GlossaryError) as err:
        glossary_hook.check_pages(glossary, tmp_path / "docs")
    message = str(err.value)
    assert "gqa.en.md" in message and "no English counterpart" in message and "has no page" in message


def test_page_without_counterpart_fails(glossary_hook, tmp_path):
    (tmp_path / "orphan.en.md").write_text("# Orphan\n", encoding="utf-8")
    with pytest.raises(glossary_hook.GlossaryError, match=r"orphan\.en\.md has no Korean counterpart .*orphan\.ko\.md"):
        glossary_hook.check_pages(glossary_hook.Glossary([]), tmp_path)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"slug": "Bad Slug"}, "slug 'Bad Slug'"),
        ({"definition": {"ko": "정의"}}, "field 'en' must be a non-empty string"),
        ({"aliases": "GQA"}, "field 'aliases' must be a list"),
        ({"colour": "red"}, "unknown field"),
        ({"ko": ""}, "field 'ko' must be a non-empty string"),
    ],
)
def test_bad_entries_name_the_problem(glossary_hook, change, message):
    with pytest.raises(glossary_hook.GlossaryError, match=message):
        glossary_hook.parse_term(_entry(**change), "glossary/gqa.yml")


def test_file_name_must_match_slug_and_names_are_unique(glossary_hook, tmp_path):
    (tmp_path / "other.yml").write_text("slug: gqa\nko: 가\nen: A\ndefinition: {ko: 가, en: A}\n", encoding="utf-8")
    with pytest.raises(glossary_hook.GlossaryError, match=r"expected gqa\.yml"):
        glossary_hook.load_glossary(tmp_path)
    (tmp_path / "other.yml").unlink()
    for slug in ("one", "two"):
        (tmp_path / f"{slug}.yml").write_text(
            f"slug: {slug}\nko: 이름{slug}\nen: Name {slug}\nabbr: ABC\ndefinition: {{ko: 가, en: A}}\n", encoding="utf-8"
        )
    with pytest.raises(glossary_hook.GlossaryError, match="'ABC' is already used by term 'one'"):
        glossary_hook.load_glossary(tmp_path)


def test_invalid_yaml_names_the_file(glossary_hook, tmp_path):
    (tmp_path / "x.yml").write_text("slug: [unclosed\n", encoding="utf-8")
    with pytest.raises(glossary_hook.GlossaryError, match=r"x\.yml: not valid YAML"):
        glossary_hook.load_glossary(tmp_path)


def test_unimportable_symbol_fails(glossary_hook):
    term = glossary_hook.parse_term(_entry(symbols=["llm_glossary.norm.NoSuchThing"]), "gqa.yml")
    with pytest.raises(glossary_hook.GlossaryError, match="NoSuchThing"):
        glossary_hook.check_symbols(glossary_hook.Glossary([term]))


def test_hover_matches_before_korean_particles(glossary_hook):
    glossary = glossary_hook.Glossary([glossary_hook.parse_term(_entry(), "gqa.yml")])
    html = "<p>GQAX is another word. GQA를 쓰면 캐시가 줄고, GQA는 빠릅니다.</p>"
    out = glossary_hook.annotate_html(html, glossary, "ko")
    assert out.count("<abbr") == 1  # the first mention only
    assert "</abbr>를" in out and " GQA는" in out
    assert out.startswith("<p>GQAX is")
    assert "쿼리 헤드 여러 개가" in out  # the Korean definition on a Korean page
    assert "groups of query heads" in glossary_hook.annotate_html(html, glossary, "en")


def test_hover_leaves_code_links_headings_and_math_alone(glossary_hook):
    glossary = glossary_hook.Glossary([glossary_hook.parse_term(_entry(), "gqa.yml")])
    html = textwrap.dedent(
        """\
        <h2 id="gqa">GQA</h2>
        <p><code>GQA</code> <a href="gqa/">GQA</a> <span class="arithmatex">\\(GQA\\)</span> GQA</p>
        <pre><code>GQA = 1</code></pre>"""
    )
    out = glossary_hook.annotate_html(html, glossary, "en")
    assert out.count("<abbr") == 1 and out.endswith("<pre><code>GQA = 1</code></pre>")
    assert "</span> <abbr" in out  # the mention in running text, after the skipped ones


def test_hover_marks_running_text_only_once_and_never_citations_tables_or_the_own_page(glossary_hook):
    glossary = glossary_hook.Glossary([glossary_hook.parse_term(_entry(), "gqa.yml")])
    html = textwrap.dedent(
        """\
        <table><tr><td>GQA</td></tr></table>
        <blockquote><p>GQA quoted</p></blockquote>
        <p><cite>GQA: Training Generalized Multi-Query Transformer Models</cite></p>
        <p class="admonition-title">GQA note</p>
        <p>Running text: GQA here, GQA again.</p>
        <h2 id="sources">Sources</h2>
        <ul><li>Ainslie et al., GQA: Training ... (2023)</li></ul>
        <div class="footnote"><p>GQA</p></div>"""
    )
    out = glossary_hook.annotate_html(html, glossary, "en", page_slug="self-attention")
    assert out.count("<abbr") == 1
    assert "Running text: <abbr" in out and "</abbr> here, GQA again" in out
    # on the term's own page nothing is marked: the page is the definition
    assert "<abbr" not in glossary_hook.annotate_html(html, glossary, "en", page_slug="gqa")


def test_index_is_generated_in_each_language(glossary_hook):
    glossary = glossary_hook.Glossary([glossary_hook.parse_term(_entry(), "gqa.yml")])
    ko = glossary_hook.index_markdown(glossary, "ko")
    en = glossary_hook.index_markdown(glossary, "en")
    assert "[그룹 쿼리 어텐션](gqa.md)" in ko and "| 용어 |" in ko
    assert "[Grouped-query attention](gqa.md)" in en and "| Term |" in en


def test_page_field_points_a_term_into_another_page(glossary_hook, tmp_path):
    term = glossary_hook.parse_term(_entry(page="dialog-format#chat-template"), "x.yml")
    assert term.page_slug == "dialog-format"
    assert term.href() == "dialog-format.md#chat-template"
    assert "[Grouped-query attention](dialog-format.md#chat-template)" in glossary_hook.index_markdown(
        glossary_hook.Glossary([term]), "en"
    )
    docs = tmp_path / "docs"
    docs.mkdir()
    with pytest.raises(glossary_hook.GlossaryError, match="has no page .*dialog-format.ko.md"):
        glossary_hook.check_pages(glossary_hook.Glossary([term]), docs)
    for lang in ("ko", "en"):
        (docs / f"dialog-format.{lang}.md").write_text("# x\n", encoding="utf-8")
    glossary_hook.check_pages(glossary_hook.Glossary([term]), docs)  # the term needs no gqa.*.md


@pytest.mark.parametrize("page", ["Dialog Format", "a#b#c", "x# y", 5])
def test_page_field_must_be_a_slug_with_an_optional_anchor(glossary_hook, page):
    with pytest.raises(glossary_hook.GlossaryError, match="field 'page' must be a page slug"):
        glossary_hook.parse_term(_entry(page=page), "x.yml")
