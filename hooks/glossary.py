"""MkDocs hook: the glossary in glossary/*.yml drives the site.

- Validates every entry (required fields, types, unique slugs and terms, importable symbols).
- Fails the build when a term's page is missing in either language, or when a page in
  docs/ lacks its other-language counterpart (``<slug>.ko.md`` / ``<slug>.en.md``).
- Replaces ``<!-- glossary-index -->`` on a page with the index of terms in that page's language.
- Wraps every mention of a term in page text in ``<abbr title="definition">``, so hovering it
  shows the definition. The match is done on the rendered HTML with a boundary check on
  Latin letters and digits only, so "GQA를" and "RMSNorm은" match, where Python-Markdown's
  ``abbr`` extension (which needs a word boundary) does not.

The functions are plain Python so that tests can call them without a build.
"""

from __future__ import annotations

import html
import importlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

try:  # MkDocs is present during a build; tests of the pure functions do not need it.
    from mkdocs.exceptions import PluginError
except ImportError:  # pragma: no cover
    PluginError = RuntimeError  # type: ignore[misc,assignment]

LANGS = ("ko", "en")
INDEX_MARKER = "<!-- glossary-index -->"
_SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")


class GlossaryError(PluginError):
    """A glossary entry or the page set is inconsistent."""


@dataclass(frozen=True)
class Term:
    slug: str
    ko: str
    en: str
    definition: dict[str, str]
    abbr: str | None = None
    aliases: tuple[str, ...] = ()
    symbols: tuple[str, ...] = ()
    source: str = ""
    page: str = ""  # the page pair that explains the term: "<page-slug>" or "<page-slug>#<anchor>"

    @property
    def page_slug(self) -> str:
        """The slug of the page pair (``docs/<page_slug>.ko.md`` / ``.en.md``)."""
        return (self.page or self.slug).partition("#")[0]

    def href(self) -> str:
        """Link target relative to the home page, anchor included."""
        slug, _, anchor = (self.page or self.slug).partition("#")
        return f"{slug}.md" + (f"#{anchor}" if anchor else "")

    def names(self) -> list[str]:
        """Every string that gets the hover definition, longest first."""
        names = {self.ko, self.en, *self.aliases}
        if self.abbr:
            names.add(self.abbr)
        return sorted((n for n in names if n), key=len, reverse=True)

    def label(self, lang: str) -> str:
        main, other = (self.ko, self.en) if lang == "ko" else (self.en, self.ko)
        abbr = f" ({self.abbr})" if self.abbr else ""
        return f"{main}{abbr} — {other}"


@dataclass
class Glossary:
    terms: list[Term] = field(default_factory=list)

    def by_slug(self) -> dict[str, Term]:
        return {t.slug: t for t in self.terms}


def _need_str(data: dict, key: str, where: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value.strip():
        raise GlossaryError(f"{where}: field '{key}' must be a non-empty string, got {value!r}")
    return value.strip()


def _str_list(data: dict, key: str, where: str) -> tuple[str, ...]:
    value = data.get(key, [])
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise GlossaryError(f"{where}: field '{key}' must be a list of non-empty strings, got {value!r}")
    return tuple(v.strip() for v in value)


def parse_term(data: object, where: str) -> Term:
    """Check one entry's fields and build a Term. ``where`` names the file in errors."""
    if not isinstance(data, dict):
        raise GlossaryError(f"{where}: expected a mapping of fields, got {type(data).__name__}")
    known = {"slug", "ko", "en", "abbr", "aliases", "definition", "symbols", "page"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise GlossaryError(f"{where}: unknown field(s) {unknown}; expected only {sorted(known)}")
    slug = _need_str(data, "slug", where)
    if not _SLUG.match(slug):
        raise GlossaryError(f"{where}: slug {slug!r} must be lowercase letters, digits and single hyphens")
    definition = data.get("definition")
    if not isinstance(definition, dict):
        raise GlossaryError(f"{where}: field 'definition' must map 'ko' and 'en' to one sentence each")
    defs = {lang: _need_str(definition, lang, f"{where}: definition") for lang in LANGS}
    abbr = data.get("abbr")
    if abbr is not None and (not isinstance(abbr, str) or not abbr.strip()):
        raise GlossaryError(f"{where}: field 'abbr' must be a non-empty string when given, got {abbr!r}")
    page = data.get("page")
    if page is not None:
        if not isinstance(page, str) or not re.match(r"^[a-z0-9]+(?:-[a-z0-9]+)*(?:#[^\s#]+)?$", page):
            raise GlossaryError(
                f"{where}: field 'page' must be a page slug with an optional #anchor "
                f"(for example 'dialog-format#chat-template'), got {page!r}"
            )
    return Term(
        slug=slug,
        page=page or "",
        ko=_need_str(data, "ko", where),
        en=_need_str(data, "en", where),
        definition=defs,
        abbr=abbr.strip() if abbr else None,
        aliases=_str_list(data, "aliases", where),
        symbols=_str_list(data, "symbols", where),
        source=where,
    )


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice (PyYAML silently keeps the last one)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first on line {seen[key] + 1})", key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def _read_entry(path: Path) -> object:
    if path.is_dir():
        raise GlossaryError(f"{path}: is a folder; expected a glossary entry file <slug>.yml")
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        raise GlossaryError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    except UnicodeDecodeError as exc:
        raise GlossaryError(f"{path}: not UTF-8 text (byte {exc.start}); expected a UTF-8 YAML file") from None
    except OSError as exc:
        raise GlossaryError(f"{path}: cannot read the file ({exc.strerror})") from None


def load_glossary(directory: Path) -> Glossary:
    """Read and validate every ``*.yml`` file in ``directory``, one term per file.

    A file that looks like an entry under another name (``*.yaml``, ``*.YML``) is an error,
    not silently skipped: its term would vanish from the index and every tooltip.
    """
    directory = Path(directory)
    misnamed = sorted(p for p in directory.iterdir() if p.suffix.lower() in (".yml", ".yaml") and p.suffix != ".yml")
    if misnamed:
        raise GlossaryError(f"{misnamed[0]}: glossary entries must be named <slug>.yml; rename it to {misnamed[0].stem}.yml")
    files = sorted(directory.glob("*.yml"))
    if not files:
        raise GlossaryError(f"no glossary entries (*.yml) found in {directory}")
    terms: list[Term] = []
    for path in files:
        data = _read_entry(path)
        term = parse_term(data, str(path))
        if path.stem != term.slug:
            raise GlossaryError(f"{path}: file name must be the slug: expected {term.slug}.yml")
        terms.append(term)
    seen: dict[str, str] = {}
    for term in terms:
        for name in term.names():
            key = name.casefold()
            if key in seen and seen[key] != term.slug:
                raise GlossaryError(f"{term.source}: name {name!r} is already used by term '{seen[key]}'")
            seen[key] = term.slug
    return Glossary(terms)


def _resolve(symbol: str) -> None:
    """Import ``package.module.name`` (or a module path); raise what the import raised."""
    module_name, _, attr = symbol.rpartition(".")
    try:
        getattr(importlib.import_module(module_name), attr)
    except AttributeError:
        importlib.import_module(symbol)  # a submodule not imported by its package


def check_symbols(glossary: Glossary) -> None:
    """Every listed symbol must import (module path, then attribute); one error naming the file."""
    for term in glossary.terms:
        for symbol in term.symbols:
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$", symbol):
                raise GlossaryError(
                    f"{term.source}: symbol {symbol!r} must be a dotted path module.name "
                    "(for example llm_glossary.norm.RMSNorm)")
            try:
                _resolve(symbol)
            except (Exception, SystemExit) as exc:  # the module itself may raise anything on import
                reason = " ".join(str(exc).split()) or "no message"
                raise GlossaryError(
                    f"{term.source}: symbol {symbol!r} cannot be imported ({type(exc).__name__}: {reason})"
                ) from None


def check_pages(glossary: Glossary, docs_dir: Path) -> None:
    """Fail when a term's page is missing in a language, or a page lacks its counterpart."""
    docs_dir = Path(docs_dir)
    problems = []
    for term in glossary.terms:
        for lang in LANGS:
            page = docs_dir / f"{term.page_slug}.{lang}.md"
            if not page.is_file():
                problems.append(f"term '{term.slug}' ({term.source}) has no page {page}")
    for page in sorted(docs_dir.rglob("*.md")):
        match = re.match(r"^(.*)\.(ko|en)\.md$", page.name)
        if not match:
            continue
        other = "en" if match.group(2) == "ko" else "ko"
        twin = page.with_name(f"{match.group(1)}.{other}.md")
        if not twin.is_file():
            problems.append(f"page {page} has no {'English' if other == 'en' else 'Korean'} counterpart {twin}")
    if problems:
        raise GlossaryError("glossary and pages disagree:\n  - " + "\n  - ".join(problems))


def index_markdown(glossary: Glossary, lang: str) -> str:
    """The glossary index as a Markdown table in ``lang``."""
    head = {
        "ko": "| 용어 | English | 약어 | 한 줄 정의 |\n|---|---|---|---|",
        "en": "| Term | 한국어 | Abbreviation | In one sentence |\n|---|---|---|---|",
    }[lang]
    key = (lambda t: t.ko) if lang == "ko" else (lambda t: t.en.casefold())
    rows = []
    for t in sorted(glossary.terms, key=key):
        main, other = (t.ko, t.en) if lang == "ko" else (t.en, t.ko)
        cells = [f"[{main}]({t.href()})", other, t.abbr or "", t.definition[lang]]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return head + "\n" + "\n".join(rows)


# Where a hover definition helps: the first mention of a term in running text. Text inside these
# elements is never annotated: code, links, headings, math, existing abbreviations, anything a
# script or a drawing owns, tables (the home page's index, benchmark tables), quotations and
# citations, tab labels and details summaries.
_SKIP = {"code", "pre", "a", "abbr", "script", "style", "svg", "h1", "h2", "h3", "h4", "h5", "h6",
         "kbd", "textarea", "button", "title", "table", "cite", "q", "blockquote", "label", "summary",
         "figcaption", "sup"}
# Elements skipped by class: KaTeX's source (arithmatex), footnotes (citations), admonition titles,
# mkdocstrings' signatures.
_SKIP_CLASS = re.compile(r'\sclass="[^"]*\b(?:arithmatex|footnote|admonition-title|doc-signature)\b')
# The page pattern's last section lists the sources: paper titles there are citations.
SOURCES_ANCHORS = {"더-읽기", "sources"}
_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source",
         "track", "wbr"}
_TAG = re.compile(r"(<!--.*?-->|<[^>]*>)", re.S)
_TAG_NAME = re.compile(r"^</?\s*([a-zA-Z0-9]+)")
_ID = re.compile(r'\sid="([^"]*)"')


def _term_pattern(glossary: Glossary) -> tuple[re.Pattern[str] | None, dict[str, Term]]:
    lookup: dict[str, Term] = {}
    for term in glossary.terms:
        for name in term.names():
            lookup[name.casefold()] = term
    if not lookup:
        return None, lookup
    names = sorted(lookup, key=len, reverse=True)
    alternation = "|".join(re.escape(html.escape(n, quote=False)) for n in names)
    # Latin letters and digits may not touch the match; Hangul particles may ("GQA를").
    return re.compile(rf"(?<![A-Za-z0-9_])({alternation})(?![A-Za-z0-9_])", re.I), lookup


def annotate_html(
    content: str, glossary: Glossary, lang: str, *, skip_slug: str | None = None, page_slug: str | None = None
) -> str:
    """Wrap the first mention of each term in running text in ``<abbr title=...>``.

    A term is marked once per page, at its first mention outside code, links, headings, math,
    tables, quotations and citations (footnotes, ``<cite>``, the "Sources" section). On the page
    that explains a term (``page_slug`` equal to the term's page) the term is not marked at all:
    the page itself is its definition. ``skip_slug`` leaves one more term unmarked.
    """
    pattern, lookup = _term_pattern(glossary)
    if pattern is None:
        return content
    unmarked = {t.slug for t in glossary.terms if page_slug is not None and t.page_slug == page_slug}
    if skip_slug:
        unmarked.add(skip_slug)
    out: list[str] = []
    stack: list[tuple[str, bool]] = []  # open elements and whether each one is skipped
    skipped = 0  # how many open elements are skipped
    in_sources = False

    def wrap(m: re.Match[str]) -> str:
        term = lookup[html.unescape(m.group(1)).casefold()]
        if term.slug in unmarked:
            return m.group(0)
        unmarked.add(term.slug)  # once per page
        title = html.escape(f"{term.label(lang)}: {term.definition[lang]}", quote=True)
        return f'<abbr title="{title}">{m.group(1)}</abbr>'

    for piece in _TAG.split(content):
        if not piece:
            continue
        if piece.startswith("<"):
            out.append(piece)
            m = _TAG_NAME.match(piece)
            if piece.startswith("<!--") or not m:
                continue
            name = m.group(1).lower()
            if piece.startswith("</"):
                if any(open_name == name for open_name, _ in stack):
                    while stack:
                        open_name, was_skipped = stack.pop()
                        skipped -= was_skipped
                        if open_name == name:
                            break
                continue
            if piece.endswith("/>") or name in _VOID:
                continue
            if name == "h2":
                anchor = _ID.search(piece)
                in_sources = bool(anchor) and anchor.group(1) in SOURCES_ANCHORS
            skip = name in _SKIP or bool(_SKIP_CLASS.search(piece))
            stack.append((name, skip))
            skipped += skip
            continue
        if skipped or in_sources:
            out.append(piece)
            continue
        out.append(pattern.sub(wrap, piece))
    return "".join(out)


# ---- MkDocs events ------------------------------------------------------------------------

_state: dict[str, Glossary] = {}


def _glossary_dir(config) -> Path:
    return Path(config.config_file_path).parent / "glossary"


def on_config(config):
    glossary = load_glossary(_glossary_dir(config))
    check_symbols(glossary)
    check_pages(glossary, Path(config.docs_dir))
    _state["glossary"] = glossary
    return config


def _page_lang(page, config) -> str:
    name = page.file.src_uri.rsplit("/", 1)[-1]
    for lang in LANGS:
        if name.endswith(f".{lang}.md"):
            return lang
    language = config.theme.get("language") if hasattr(config.theme, "get") else None
    return language if language in LANGS else "ko"


def on_page_markdown(markdown, page, config, files):
    if INDEX_MARKER in markdown:
        markdown = markdown.replace(INDEX_MARKER, index_markdown(_state["glossary"], _page_lang(page, config)))
    return markdown


def on_page_content(content, page, config, files):
    glossary = _state.get("glossary")
    if glossary is None:
        return content
    name = page.file.src_uri.rsplit("/", 1)[-1]
    slug = re.sub(r"\.(?:ko|en)\.md$|\.md$", "", name)
    return annotate_html(content, glossary, _page_lang(page, config), page_slug=slug)
