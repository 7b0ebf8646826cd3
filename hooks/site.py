"""MkDocs hook: what the built site needs beyond the glossary (hooks/glossary.py).

mkdocs-static-i18n builds the Korean site into the root and the English one into ``en/``, one
build after the other in the same process. This hook finishes what the plugin and the theme
leave undone, without overriding any theme template (so a move to Zensical stays cheap):

- **Search per language.** The i18n plugin writes one index for both languages (its issue
  #271). After the last build the index is split: ``search/search_index.json`` keeps the
  Korean pages, ``en/search/search_index.json`` the English ones, and the English pages tell
  the theme's search (``__config.base``) to load the English index.
- **Language links that survive hosting.** The switcher's links are relative (the plugin makes
  the home pages' links absolute, ``/`` and ``/en/``, which breaks under a subpath). The
  ``<link rel="alternate" hreflang>`` tags leave the page head: the theme fetches
  ``<alternate>/sitemap.xml`` for each of them (a 404 per page), and the sitemaps already carry
  the same hreflang pairs. Each switcher link carries a map of heading anchors to the other
  language's (the page pairs have the same outline), and ``assets/javascripts/language.js``
  keeps the reader's section when switching.
- **One sitemap per language** (``sitemap.xml``, ``en/sitemap.xml``) with absolute URLs from
  ``site_url`` and hreflang alternates; a 404 page in both languages.
- **Interface text in the page's language**: mkdocstrings' section labels, the heading
  permalinks' tooltip, the code-result tabs, the English home page's title.

The functions are plain Python so that tests can call them without a build.
"""

from __future__ import annotations

import gzip
import html
import json
import posixpath
import re
from pathlib import Path
from xml.sax.saxutils import escape as xml_escape

try:  # MkDocs is present during a build; tests of the pure functions do not need it.
    from mkdocs.exceptions import PluginError
    from mkdocs.plugins import event_priority
except ImportError:  # pragma: no cover
    PluginError = RuntimeError  # type: ignore[misc,assignment]

    def event_priority(priority):  # type: ignore[no-redef]
        return lambda f: f


LANGS = ("ko", "en")
DEFAULT_LANG = "ko"

PERMALINK_TITLE = {"ko": "이 절의 링크", "en": "Link to this section"}
TAB_LABELS = {"ko": {"Result": "결과", "Source": "코드"}, "en": {}}
NOT_FOUND = """
<h1>페이지를 찾을 수 없습니다 · Page not found</h1>
<p lang="ko">찾는 페이지가 없습니다. 주소가 바뀌었을 수 있습니다. <a href="{root}">용어집 처음으로</a> 가거나 검색해 보세요.</p>
<p lang="en">There is no page at this address; it may have moved. Go to the <a href="{root}en/">glossary home</a> or search.</p>
"""


class SiteError(PluginError):
    """The configuration does not give what the site hook expects."""


# ---- pure functions ----------------------------------------------------------------------


def page_key(src_uri: str) -> tuple[str, str] | None:
    """``("rmsnorm", "en")`` for ``rmsnorm.en.md``; None for a file without a language suffix."""
    match = re.match(r"^(.*)\.(ko|en)\.md$", src_uri)
    return (match.group(1), match.group(2)) if match else None


def split_search_index(index: dict) -> dict[str, dict]:
    """One search index per language from the i18n plugin's shared one.

    English entries live under ``en/``; their locations become relative to the English root,
    where the English pages' search looks for them.
    """
    docs: dict[str, list[dict]] = {lang: [] for lang in LANGS}
    for doc in index["docs"]:
        location = doc["location"]
        lang = next((lang for lang in LANGS if lang != DEFAULT_LANG and location.startswith(f"{lang}/")), DEFAULT_LANG)
        if lang != DEFAULT_LANG:
            doc = {**doc, "location": location[len(lang) + 1:]}
        docs[lang].append(doc)
    return {lang: {**index, "docs": docs[lang]} for lang in LANGS}


def anchor_map(source_ids: list[str], target_ids: list[str]) -> dict[str, str]:
    """Pair heading anchors of two pages with the same outline, by position.

    When the outlines differ in length only anchors present on both pages pair up
    (the API pages' anchors are the same in both languages).
    """
    if len(source_ids) == len(target_ids):
        return dict(zip(source_ids, target_ids))
    common = set(target_ids)
    return {a: a for a in source_ids if a in common}


def site_path(site_url: str | None) -> str:
    """The path part of ``site_url``, with a trailing slash ("/" when there is none)."""
    path = re.sub(r"^[a-z][a-z0-9+.-]*://[^/]*", "", site_url or "", flags=re.I)
    return path.rstrip("/") + "/"


def root_relative(link: str, prefix: str) -> str:
    """An absolute site link ("/llm-glossary/en/") relative to the site root ("en/")."""
    if not link.startswith("/"):
        return link
    if link.startswith(prefix):
        link = link[len(prefix):]
    else:
        link = link.lstrip("/")
    return link or "./"


def relative_base(page_url: str, lang_root: str) -> str:
    """The path from the folder of ``page_url`` to ``lang_root`` ("" is the site root)."""
    folder = page_url if page_url.endswith("/") else posixpath.dirname(page_url)
    return posixpath.relpath(lang_root or ".", folder.rstrip("/") or ".")


def sitemap_xml(site_url: str, pages: dict[str, dict[str, str]], lang: str) -> str:
    """A sitemap of ``lang``'s pages, each with its hreflang alternates.

    ``pages`` maps a page key to ``{lang: url relative to the site root}``.
    """
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9" xmlns:xhtml="http://www.w3.org/1999/xhtml">',
    ]
    for key in sorted(pages):
        urls = pages[key]
        if lang not in urls:
            continue
        lines.append("  <url>")
        lines.append(f"    <loc>{xml_escape(site_url + urls[lang])}</loc>")
        for alt in LANGS:
            if alt in urls:
                href = xml_escape(site_url + urls[alt])
                lines.append(f'    <xhtml:link rel="alternate" hreflang="{alt}" href="{href}"/>')
        if DEFAULT_LANG in urls:
            href = xml_escape(site_url + urls[DEFAULT_LANG])
            lines.append(f'    <xhtml:link rel="alternate" hreflang="x-default" href="{href}"/>')
        lines.append("  </url>")
    lines.append("</urlset>")
    return "\n".join(lines) + "\n"


_HEAD_ALTERNATE = re.compile(r'[ \t]*<link rel="alternate" href="[^"]*" hreflang="[^"]*">\n?')
_CONFIG_SCRIPT = re.compile(r'(<script id="__config" type="application/json">)(.*?)(</script>)', re.S)
_TAB_LABELS = re.compile(r'<div class="tabbed-labels">.*?</div>', re.S)
_SELECT_LINK = re.compile(r'<a href="([^"]*)" hreflang="([a-z]{2})" class="md-select__link"')


def relative_select_links(output: str, page_url: str, prefix: str) -> str:
    """Make the switcher's absolute links relative to the page.

    The i18n plugin gives the home pages absolute links ("/llm-glossary/", "/llm-glossary/en/"),
    which break when the site is served under another path.
    """

    def replace(m: re.Match[str]) -> str:
        href = m.group(1)
        if not href.startswith("/"):
            return m.group(0)
        target = root_relative(href, prefix)
        folder = page_url if page_url.endswith("/") else posixpath.dirname(page_url)
        rel = posixpath.relpath(target.rstrip("/") or ".", folder.rstrip("/") or ".")
        rel = "./" if rel == "." else rel + ("/" if target.endswith("/") else "")
        return m.group(0).replace(f'href="{href}"', f'href="{rel}"', 1)

    return _SELECT_LINK.sub(replace, output)


def set_search_base(output: str, base: str) -> str:
    """Point the theme's search (``__config.base``) at ``base``."""

    def replace(m: re.Match[str]) -> str:
        data = json.loads(m.group(2))
        data["base"] = base
        return m.group(1) + json.dumps(data, ensure_ascii=False) + m.group(3)

    new, count = _CONFIG_SCRIPT.subn(replace, output, count=1)
    if count != 1:
        raise SiteError("site hook: no <script id=\"__config\"> in a page; did the theme change?")
    return new


def translate_tab_labels(content: str, lang: str) -> str:
    """markdown-exec's tab labels ("Result", "Source") in the page's language."""
    labels = TAB_LABELS[lang]
    if not labels:
        return content

    def replace(m: re.Match[str]) -> str:
        block = m.group(0)
        for en, local in labels.items():
            block = block.replace(f">{en}</label>", f">{local}</label>")
        return block

    return _TAB_LABELS.sub(replace, content)


def add_anchor_maps(output: str, maps: dict[str, dict[str, str]]) -> str:
    """Give each language link of the switcher the anchors of its target page."""

    def replace(m: re.Match[str]) -> str:
        mapping = maps.get(m.group(2))
        if not mapping:
            return m.group(0)
        data = html.escape(json.dumps(mapping, ensure_ascii=False), quote=True)
        return f'{m.group(0)} data-anchors="{data}"'

    return _SELECT_LINK.sub(replace, output)


# ---- MkDocs events ------------------------------------------------------------------------

# Collected over the builds of one `mkdocs build`: page key -> lang -> {"url", "dest", "ids"}.
_pages: dict[str, dict[str, dict]] = {}
_not_found: dict[str, str] = {}


def _build_language(config) -> str:
    i18n = config.plugins.get("i18n")
    language = getattr(i18n, "current_language", None) or config.theme.get("language")
    if language not in LANGS:
        raise SiteError(f"site hook: the i18n plugin builds {language!r}, expected one of {LANGS}")
    return language


def _final_build(config) -> bool:
    """True in the outer build, after the i18n plugin has built every language."""
    i18n = config.plugins.get("i18n")
    return not getattr(i18n, "building", False)


@event_priority(10)  # before mkdocstrings (priority 0) reads its locale
def on_config(config):
    lang = _build_language(config)
    # mkdocstrings reads its locale in its own on_config, before mkdocs-static-i18n (which runs
    # last) sets theme.language; the i18n plugin picks each build's language before that build
    # starts, so it can be read here and handed to mkdocstrings' `locale` option.
    mkdocstrings = config.plugins.get("mkdocstrings")
    if mkdocstrings is not None:
        mkdocstrings.config["locale"] = lang
    toc = config.mdx_configs.setdefault("toc", {})
    toc["permalink_title"] = PERMALINK_TITLE[lang]
    if lang == DEFAULT_LANG:
        _pages.clear()
        _not_found.clear()
    return config


def on_page_content(content, page, config, files):
    key = page_key(page.file.src_uri)
    if key is None:
        return content
    return translate_tab_labels(content, key[1])


def _toc_ids(toc) -> list[str]:
    ids = []
    for item in toc:
        ids.append(item.id)
        ids.extend(_toc_ids(item.children))
    return ids


@event_priority(-50)
def on_post_page(output, page, config):
    key = page_key(page.file.src_uri)
    if key is None:
        return output
    slug, lang = key
    _pages.setdefault(slug, {})[lang] = {"url": page.url, "dest": page.file.dest_uri, "ids": _toc_ids(page.toc)}
    output = _HEAD_ALTERNATE.sub("", output)
    output = relative_select_links(output, page.url, site_path(config.site_url))
    if lang != DEFAULT_LANG:
        output = set_search_base(output, relative_base(page.url, lang))
    if slug == "index":
        # The theme titles every page but the site's first one "<page> - <site>"; the English
        # home page is a home page too.
        output = re.sub(r"<title>[^<]*</title>", f"<title>{html.escape(config.site_name)}</title>", output, count=1)
    return output


def on_post_template(output_content, template_name, config):
    if template_name != "404.html":
        return output_content
    # Each language build writes the root 404.html; keep the default language's, with a text
    # in both languages (GitHub Pages serves this one file for every missing address).
    if _build_language(config) == DEFAULT_LANG or DEFAULT_LANG not in _not_found:
        body = NOT_FOUND.format(root=html.escape(site_path(config.site_url)))
        new, count = re.subn(r"<h1>404 - [^<]*</h1>", body, output_content, count=1)
        if count != 1:
            raise SiteError("site hook: the theme's 404 page has no '<h1>404 - …</h1>'; did the theme change?")
        _not_found[DEFAULT_LANG] = new
    return _not_found[DEFAULT_LANG]


@event_priority(-200)  # after the i18n plugin (-100) has built every language and its index
def on_post_build(config):
    if not _final_build(config):
        return
    site = Path(config.site_dir)
    # Search: one index per language.
    index_path = site / "search" / "search_index.json"
    if index_path.is_file():
        index = json.loads(index_path.read_text(encoding="utf-8"))
        for lang, part in split_search_index(index).items():
            out = site / ("" if lang == DEFAULT_LANG else lang) / "search" / "search_index.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(part, ensure_ascii=False, separators=(",", ":")), encoding="utf-8")
    # Sitemaps: one per language, absolute URLs.
    site_url = config.site_url or ""
    if site_url and not site_url.endswith("/"):
        site_url += "/"
    urls = {slug: {lang: info["url"] for lang, info in langs.items()} for slug, langs in _pages.items()}
    for lang in LANGS:
        text = sitemap_xml(site_url, urls, lang)
        folder = site / ("" if lang == DEFAULT_LANG else lang)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "sitemap.xml").write_text(text, encoding="utf-8")
        with open(folder / "sitemap.xml.gz", "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as fh:
            fh.write(text.encode("utf-8"))
    # Switcher links: the target page's anchor for each of this page's anchors.
    for slug, langs in _pages.items():
        for lang, info in langs.items():
            maps = {other: anchor_map(info["ids"], langs[other]["ids"]) for other in langs if other != lang}
            path = site / info["dest"]
            path.write_text(add_anchor_maps(path.read_text(encoding="utf-8"), maps), encoding="utf-8")
