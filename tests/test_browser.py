"""The built site in a real browser (Playwright driving Chromium), as a reader meets it.

The site is served on 127.0.0.1 under a subpath (``/llm-glossary/``, as on GitHub Pages) by a
thread of this process. Playwright cannot download its browsers on every machine, so a system
Chromium is used when there is one (Debian: ``apt-get install chromium fonts-noto-cjk``); else
the one ``python -m playwright install chromium`` fetched. A missing browser fails the tests
with that advice; it never skips them.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page, expect

SUBPATH = "/llm-glossary/"
SYSTEM_CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
INSTALL_ADVICE = (
    "no Chromium for the browser tests: install one with "
    "`apt-get install -y chromium fonts-noto-cjk` (Debian/Ubuntu, as root), or "
    "`python -m playwright install --with-deps chromium`, or point CHROMIUM=/path/to/chrome at one "
    "(`make env` does the first or the second)"
)
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_executable() -> str | None:
    """A system Chromium, or None to let Playwright use the browser it installed."""
    explicit = os.environ.get("CHROMIUM")
    if explicit:
        return explicit
    for path in SYSTEM_CHROMIUM:
        if os.access(path, os.X_OK):
            return path
    return shutil.which("chromium")


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    args = {**browser_type_launch_args, "headless": True, "args": CHROMIUM_ARGS}
    executable = chromium_executable()
    if executable:
        args["executable_path"] = executable
    return args


@pytest.fixture(scope="session")
def browser(browser_type, browser_type_launch_args):
    try:
        browser = browser_type.launch(**browser_type_launch_args)
    except PlaywrightError as exc:
        pytest.fail(f"{INSTALL_ADVICE}\n(Playwright said: {str(exc).splitlines()[0]})", pytrace=False)
    yield browser
    browser.close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002
        pass


@pytest.fixture(scope="session")
def server(site, tmp_path_factory):
    """Serve the built site at http://127.0.0.1:<free port>/llm-glossary/."""
    root = tmp_path_factory.mktemp("served")
    (root / SUBPATH.strip("/")).symlink_to(site, target_is_directory=True)
    handler = functools.partial(_QuietHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}{SUBPATH}"
    httpd.shutdown()
    httpd.server_close()


def site_pages(site: Path) -> list[str]:
    """Every page of both languages, from the two sitemaps, relative to the site root."""
    ns = {"s": "http://www.sitemaps.org/schemas/sitemap/0.9"}
    pages = []
    for sitemap in (site / "sitemap.xml", site / "en" / "sitemap.xml"):
        for loc in ET.parse(sitemap).getroot().iterfind("s:url/s:loc", ns):
            pages.append(re.sub(r"^[a-z]+://[^/]+/[^/]*/?", "", loc.text, count=1, flags=re.I))
    return pages


class Recorder:
    """Every request, failed response and console error of a page."""

    def __init__(self, page: Page, allowed_host: str = "127.0.0.1"):
        self.foreign: list[str] = []
        self.failed: list[str] = []
        self.errors: list[str] = []
        self.redirects: list[str] = []

        def route(route):
            host = re.sub(r"^[a-z]+://([^/:]+).*$", r"\1", route.request.url)
            if route.request.url.startswith(("data:", "blob:")) or host == allowed_host:
                route.continue_()
            else:
                self.foreign.append(route.request.url)
                route.abort()

        page.route("**/*", route)
        page.on("response", lambda r: r.status >= 400 and self.failed.append(f"{r.status} {r.url}"))
        page.on("response", lambda r: 300 <= r.status < 400 and self.redirects.append(f"{r.status} {r.url}"))
        page.on("console", lambda m: m.type == "error" and self.errors.append(f"{page.url}: {m.text}"))
        page.on("pageerror", lambda e: self.errors.append(f"{page.url}: {e}"))

    def assert_clean(self):
        assert not self.foreign, f"requests to other hosts: {self.foreign[:10]}"
        assert not self.failed, f"failed responses: {self.failed[:10]}"
        assert not self.errors, f"console errors: {self.errors[:10]}"


# ---- checks run in the page ------------------------------------------------------------------

_PAGE_CHECKS = r"""
() => {
  const problems = [];
  const article = document.querySelector("article");
  // KaTeX typeset every formula, and no raw TeX is left in the text outside code.
  for (const el of article.querySelectorAll(".arithmatex")) {
    if (!el.querySelector(".katex")) problems.push("math not rendered: " + el.textContent.slice(0, 60));
  }
  const walker = document.createTreeWalker(article, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    if (n.parentElement.closest("pre, code, .katex, script, style, svg, .md-tooltip, .md-tooltip2")) continue;
    if (/\\\(|\\\)|\\\[|\\\]|\$\$|\\(frac|sqrt|sum|mathrm|text|cdot|left|right)\b/.test(n.textContent))
      problems.push("raw TeX: " + n.textContent.trim().slice(0, 80));
  }
  // Figures have an accessible name.
  for (const svg of article.querySelectorAll("svg[role=img]")) {
    const named = (svg.getAttribute("aria-label") || "").trim() ||
      (svg.querySelector(":scope > title") || {}).textContent;
    if (!named) problems.push("figure without an accessible name");
  }
  return problems;
}
"""

_MATH_CUT = r"""
() => {
  // Display math wider than its column must scroll, and scrolling must reach both ends.
  const cut = [];
  function extent(el) {
    let left = Infinity, right = -Infinity;
    // The glyphs: KaTeX's leaf spans with text (its struts and clipped SVG tails are not ink).
    for (const c of el.querySelectorAll(".katex-html span")) {
      if (c.children.length || !c.textContent.trim()) continue;
      const b = c.getBoundingClientRect();
      if (b.width > 0) { left = Math.min(left, b.left); right = Math.max(right, b.right); }
    }
    return [left, right];
  }
  for (const el of document.querySelectorAll("article div.arithmatex")) {
    const box = el.getBoundingClientRect();
    const scrolls = ["auto", "scroll"].includes(getComputedStyle(el).overflowX);
    el.scrollLeft = 0;
    const [left] = extent(el);
    el.scrollLeft = el.scrollWidth;
    const [, right] = extent(el);
    el.scrollLeft = 0;
    const what = el.textContent.trim().slice(0, 50);
    if (left < box.left - 1) cut.push(`start cut off by ${Math.round(box.left - left)}px: ${what}`);
    if (right > box.right + 1) cut.push(`end cut off by ${Math.round(right - box.right)}px: ${what}`);
    if (el.scrollWidth > el.clientWidth + 1 && !scrolls) cut.push(`wider than its column and not scrollable: ${what}`);
  }
  return cut;
}
"""

_TABLE_FIT = r"""
() => {
  // At desktop width every table fits the text column (no sideways scrolling of the table).
  const column = document.querySelector("article").getBoundingClientRect();
  return [...document.querySelectorAll("article table")]
    .map(t => t.getBoundingClientRect())
    .filter(r => r.width > column.width + 1)
    .map(r => `table ${Math.round(r.width)}px wide in a ${Math.round(column.width)}px column`);
}
"""

_OVERFLOW = r"""
() => {
  const width = document.documentElement.clientWidth;
  const over = document.documentElement.scrollWidth - width;
  if (over <= 0) return [];
  const wide = [];
  for (const el of document.querySelectorAll("article *")) {
    const r = el.getBoundingClientRect();
    if (r.right > width + 1 && r.width > 0) {
      let clipped = false;
      for (let p = el.parentElement; p && p !== document.body; p = p.parentElement) {
        const o = getComputedStyle(p).overflowX;
        if (o !== "visible") { clipped = true; break; }
      }
      if (!clipped) wide.push(`${el.tagName.toLowerCase()}.${el.className} right=${Math.round(r.right)}`);
    }
  }
  return [`page is ${over}px wider than the ${width}px window`, ...wide.slice(0, 5)];
}
"""

# The contrast of every text of every figure against what is drawn behind it (WCAG 2).
_FIGURE_CONTRAST = r"""
() => {
  function rgba(css) {
    const m = css.match(/rgba?\(([^)]+)\)/);
    if (!m) return null;
    const p = m[1].split(/[ ,\/]+/).filter(Boolean).map(Number);
    return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
  }
  function over(top, bottom) {
    const a = top[3];
    return [0, 1, 2].map(i => top[i] * a + bottom[i] * (1 - a)).concat([1]);
  }
  function luminance(c) {
    const [r, g, b] = c.slice(0, 3).map(v => {
      v /= 255;
      return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  }
  function ratio(a, b) {
    const [hi, lo] = [luminance(a), luminance(b)].sort((x, y) => y - x);
    return (hi + 0.05) / (lo + 0.05);
  }
  function pageBackground(el) {
    for (let p = el; p; p = p.parentElement) {
      const c = rgba(getComputedStyle(p).backgroundColor);
      if (c && c[3] > 0) return c;
    }
    return [255, 255, 255, 1];
  }
  const results = [];
  document.querySelectorAll("article svg[role=img]").forEach((svg, figure) => {
    svg.scrollIntoView({block: "center"});
    const base = pageBackground(svg);
    for (const text of svg.querySelectorAll("text")) {
      if (!text.textContent.trim()) continue;
      const style = getComputedStyle(text);
      let ink = rgba(style.fill);
      if (!ink) continue;
      ink[3] *= Number(style.fillOpacity) * Number(style.opacity);
      const box = text.getBoundingClientRect();
      const x = box.left + box.width / 2, y = box.top + box.height / 2;
      // Shapes under the text centre, topmost first; composite them over the page.
      const layers = document.elementsFromPoint(x, y)
        .filter(el => svg.contains(el) && el !== svg && el.tagName !== "text" && !text.contains(el))
        .map(el => {
          const s = getComputedStyle(el);
          const c = rgba(s.fill);
          if (!c || s.fill === "none") return null;
          c[3] *= Number(s.fillOpacity) * Number(s.opacity);
          return c;
        })
        .filter(Boolean);
      let back = base;
      for (const layer of layers.reverse()) back = over(layer, back);
      const fg = over(ink, back);
      results.push({figure, text: text.textContent.trim().slice(0, 30), ratio: ratio(fg, back)});
    }
  });
  return results;
}
"""


def _open(page: Page, url: str) -> None:
    page.goto(url, wait_until="load")
    page.wait_for_function("() => typeof renderMathInElement !== 'function' || "
                           "[...document.querySelectorAll('.arithmatex')].every(e => e.querySelector('.katex'))")


def test_every_page_loads_cleanly_renders_math_and_fits(browser, server, site):
    """All pages of both languages: only 127.0.0.1, no failed request, no console error, KaTeX
    typeset, named figures, no math cut off and no table wider than the column at 1280 px, and no
    page wider than a 390 px phone."""
    pages = site_pages(site)
    assert len(pages) >= 20, pages
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    recorder = Recorder(page)
    problems = []
    for path in pages:
        page.set_viewport_size({"width": 1280, "height": 900})
        _open(page, server + path)
        problems += [f"{path}: {p}" for p in page.evaluate(_PAGE_CHECKS)]
        problems += [f"{path} at 1280 px: {p}" for p in page.evaluate(_MATH_CUT)]
        problems += [f"{path} at 1280 px: {p}" for p in page.evaluate(_TABLE_FIT)]
        page.set_viewport_size({"width": 390, "height": 844})
        problems += [f"{path} at 390 px: {p}" for p in page.evaluate(_OVERFLOW)]
    context.close()
    recorder.assert_clean()
    assert not problems, "\n".join(problems)


def test_figures_are_readable_in_both_colour_schemes(browser, server, site):
    """Every text in every figure has a contrast of at least 4.5:1 (WCAG AA) against what is
    drawn behind it, computed from the colours the browser rendered, in light and dark mode."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    checked, low = {"light": 0, "dark": 0}, []
    for path in site_pages(site):
        if 'role="img"' not in (site / path / "index.html").read_text(encoding="utf-8"):
            continue
        _open(page, server + path)
        for _ in range(2):  # the page's scheme, then the other one through the theme's toggle
            name = page.evaluate("document.body.getAttribute('data-md-color-scheme')")
            scheme = {"default": "light", "slate": "dark"}[name]
            for r in page.evaluate(_FIGURE_CONTRAST):
                checked[scheme] += 1
                if r["ratio"] < 4.5:
                    low.append(f"{scheme}: {path} figure {r['figure']} {r['text']!r}: {r['ratio']:.2f}:1")
            page.locator("form[data-md-component=palette] label:not([hidden])").first.click()
            page.wait_for_function(f"document.body.getAttribute('data-md-color-scheme') !== '{name}'")
    context.close()
    assert min(checked.values()) > 50, f"too few figure texts found: {checked}"
    assert not low, f"{len(low)} figure texts below 4.5:1:\n" + "\n".join(low[:30])


def _search(page: Page, query: str) -> list[str]:
    box = page.locator("input.md-search__input")
    results = page.locator(".md-search-result__item > a")
    for _ in range(5):  # the index may still be loading into the search worker: type again
        box.click()
        box.fill("")
        page.wait_for_function("document.querySelector('[data-md-toggle=search]').checked")
        page.wait_for_timeout(300)
        # Real key presses: the theme searches on key-up. Playwright types a character that is
        # not on the US keyboard (Hangul) as text input, without key events, the way an IME
        # commits a syllable; the reader's next key (here End) then triggers the search.
        page.keyboard.type(query, delay=30)
        page.keyboard.press("End")
        try:
            expect(results.first).to_be_visible(timeout=3_000)
            break
        except AssertionError:
            continue
    expect(results.first).to_be_visible(timeout=1)
    return [a.get_attribute("href") for a in results.all()]


@pytest.mark.parametrize(
    ("start", "query", "first"),
    [
        ("rmsnorm/", "정규화", "rmsnorm/"),
        ("gqa/", "어텐션", None),
        ("en/rmsnorm/", "window", "en/sliding-window-attention/"),
        ("en/gqa/", "attention", None),
    ],
)
def test_search_finds_only_the_pages_of_the_language(browser, server, start, query, first):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    recorder = Recorder(page)
    _open(page, server + start)
    hits = [h.split("?")[0] for h in _search(page, query)]
    context.close()
    recorder.assert_clean()
    english = start.startswith("en/")
    wrong = [h for h in hits if h.startswith(server + "en/") != english]
    assert not wrong, f"{'English' if english else 'Korean'} search for {query!r} returned pages of the other language: {wrong}"
    if first:
        assert hits[0] == server + first, hits


def test_search_finds_a_korean_word_right_after_a_parenthesis(browser, server, site):
    """The Korean RMSNorm page writes "층(어텐션," with no space: "어텐션" must still find it."""
    text = (site / "rmsnorm" / "index.html").read_text(encoding="utf-8")
    assert "(어텐션" in text  # the case this test is about is still on the page
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    _open(page, server + "rmsnorm/")
    _search(page, "어텐션")
    # The results list grows as it scrolls: read every result the worker returned.
    page.wait_for_timeout(300)
    while True:
        before = page.locator(".md-search-result__item").count()
        page.locator(".md-search__scrollwrap").evaluate("e => e.scrollTo(0, e.scrollHeight)")
        page.wait_for_timeout(200)
        if page.locator(".md-search-result__item").count() == before:
            break
    hrefs = [a.get_attribute("href") for a in page.locator(".md-search-result__item > a").all()]
    context.close()
    assert any(re.search(r"(^|/)rmsnorm/", h) for h in hrefs), hrefs


def test_language_switch_keeps_the_page_and_the_section(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    recorder = Recorder(page)
    _open(page, server + "rmsnorm/#수식")
    page.locator(".md-header__option .md-select").hover()
    with page.expect_navigation():
        page.locator("a.md-select__link[hreflang=en]").click()
    assert page.url == server + "en/rmsnorm/#the-math", page.url
    page.locator(".md-header__option .md-select").hover()
    with page.expect_navigation():
        page.locator("a.md-select__link[hreflang=ko]").click()
    assert page.url == server + "rmsnorm/#%EC%88%98%EC%8B%9D", page.url
    # From the home pages, under the subpath, too.
    _open(page, server)
    page.locator(".md-header__option .md-select").hover()
    with page.expect_navigation():
        page.locator("a.md-select__link[hreflang=en]").click()
    assert page.url == server + "en/", page.url
    expect(page.locator("article h1").first).to_contain_text("LLM Glossary")
    assert page.title() == "LLM Glossary", page.title()
    context.close()
    recorder.assert_clean()
    assert not recorder.redirects, f"the language switch went through redirects: {recorder.redirects}"


def test_tooltip_before_a_korean_particle(browser, server, site):
    """A Latin term right before a Korean particle ("GQA는") shows its definition on hover."""
    found = [
        (path.parent.name, m.group(1))
        for path in sorted(site.glob("*/index.html"))
        for m in re.finditer(r'<abbr title="[^"]*">([A-Za-z][A-Za-z0-9 -]*)</abbr>[가-힣]', path.read_text("utf-8"))
    ]
    assert found, "no page has a Latin term right before a Korean particle"
    slug, name = found[0]
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    _open(page, server + slug + "/")
    term = page.locator("article abbr", has_text=name).first
    after = term.evaluate("e => (e.nextSibling && e.nextSibling.textContent || '').slice(0, 1)")
    assert re.match(r"[가-힣]", after), f"expected a Korean particle right after {name!r}, got {after!r}"
    term.hover()
    tooltip = page.locator(".md-tooltip--active, .md-tooltip2--active, [role=tooltip]").first
    expect(tooltip).to_be_visible()
    expect(tooltip).to_contain_text(name)
    context.close()


def test_not_found_page_speaks_both_languages(browser, server):
    context = browser.new_context()
    page = context.new_page()
    recorder = Recorder(page)
    page.goto(server + "404.html")
    expect(page.locator("article")).to_contain_text("페이지를 찾을 수 없습니다")
    expect(page.locator("article")).to_contain_text("Page not found")
    with page.expect_navigation():
        page.locator("article a", has_text="glossary home").click()
    assert page.url == server + "en/", page.url
    context.close()
    recorder.assert_clean()


# ---- the built files behind what the browser shows (no browser needed) ----------------------


def test_each_language_has_its_own_search_index(site):
    import json

    ko = json.loads((site / "search" / "search_index.json").read_text("utf-8"))
    en = json.loads((site / "en" / "search" / "search_index.json").read_text("utf-8"))
    assert ko["docs"] and en["docs"]
    assert not [d["location"] for d in ko["docs"] if d["location"].startswith("en/")]
    assert (site / "en" / en["docs"][0]["location"].split("#")[0] / "index.html").is_file()
    ko_titles = " ".join(d["title"] for d in ko["docs"])
    en_titles = " ".join(d["title"] for d in en["docs"])
    assert "한 줄 정의" in ko_titles and "한 줄 정의" not in en_titles and "In one sentence" in en_titles
    # "(" separates words, so "층(어텐션," is indexed as "층" and "어텐션"
    assert re.split(ko["config"]["separator"], "층(어텐션, 피드포워드)") [:2] == ["층", "어텐션"]


def test_sitemaps_per_language_hold_absolute_urls_with_alternates(site):
    ns = {"s": "http://www.sitemaps.org/schemas/sitemap/0.9", "x": "http://www.w3.org/1999/xhtml"}
    for sitemap, prefix in ((site / "sitemap.xml", ""), (site / "en" / "sitemap.xml", "en/")):
        root = ET.parse(sitemap).getroot()
        locs = [u.findtext("s:loc", namespaces=ns) for u in root.iterfind("s:url", ns)]
        assert len(locs) >= 10
        for loc in locs:
            assert re.match(r"^https://[^/]+/llm-glossary/" + prefix, loc), loc
            assert prefix or "/llm-glossary/en/" not in loc, loc
        langs = {link.get("hreflang") for link in root.iterfind("s:url/x:link", ns)}
        assert langs == {"ko", "en", "x-default"}
    # no page asks the theme to fetch <page>/sitemap.xml (it does so for every alternate link)
    assert 'rel="alternate" href' not in (site / "rmsnorm" / "index.html").read_text("utf-8")


def test_home_pages_link_the_other_language_relatively(site):
    ko = (site / "index.html").read_text("utf-8")
    en = (site / "en" / "index.html").read_text("utf-8")
    assert '<a href="en/" hreflang="en" class="md-select__link"' in ko
    assert '<a href="../" hreflang="ko" class="md-select__link"' in en
    assert not re.search(r'href="/[^/]', ko + en), "an absolute link breaks under a subpath"
    assert "<title>LLM Glossary</title>" in en


def test_interface_text_is_in_the_page_language(site):
    ko = (site / "matrix-vs-array" / "index.html").read_text("utf-8")
    en = (site / "en" / "matrix-vs-array" / "index.html").read_text("utf-8")
    assert ">결과</label>" in ko and ">Result</label>" not in ko and ">Source</label>" not in ko
    assert ">Result</label>" in en
    assert "Permanent link" not in ko + en and 'title="이 절의 링크"' in ko and 'title="Link to this section"' in en
    assert "Made with" not in ko + en
    assert 'title="어두운 화면으로"' in ko and "Dark mode" not in ko
    assert 'title="Dark mode"' in en and "어두운 화면으로" not in en


def test_api_page_examples_are_code_and_labels_follow_the_language(site):
    for lang, labels in (("ko", ("매개변수:", "반환값:", "예외:", "예:")), ("en", ("Parameters:", "Returns:", "Raises:", "Examples:"))):
        html = ((site if lang == "ko" else site / "en") / "api" / "index.html").read_text("utf-8")
        for label in labels:
            assert f'<span class="doc-section-title">{label}</span>' in html, (lang, label)
        assert "<blockquote" not in html, f"{lang}: an Example: section rendered as blockquotes"
        assert "grad_fn=&lt;MulBackward0&gt;" in html
        assert not re.search(r"<code[^>]*>(?:(?!</code>).)*<abbr", html, re.S), f"{lang}: a tooltip inside code"
        for name in ("standardize_stats", "rope_cos_sin", "count_words"):
            start = html.index(f'{name}" class="doc doc-heading')
            section = html[html.index(f'doc-section-title">{labels[1]}', start):]
            table = section[: section.index("</table>")]
            assert table.count("<tr") == 2, f"{lang}: {name}'s Returns table is split into rows"
