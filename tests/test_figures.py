"""Figures: inline SVG whose black ink follows the page colour (light and dark mode)."""

import re

import pytest

from llm_glossary.figures import new_figure, svg


def test_svg_ink_follows_the_page_colour_and_text_stays_text():
    fig, ax = new_figure(figsize=(2, 1))
    ax.plot([0, 1], [0, 1], color="black")
    ax.set_title("쿼리 헤드")
    ax.text(0.5, 0.5, "kv0")
    out = svg(fig)
    root = out[: out.index(">") + 1]
    assert out.startswith("<svg") and 'fill="currentColor"' in root and "height=" not in root
    assert "#000000" not in out
    # text keeps no fill of its own, so it inherits currentColor from the root
    titles = re.findall(r"<text[^>]*>쿼리 헤드</text>", out)
    assert titles and "fill" not in titles[0]
    assert "stroke: currentColor" in out
    # no RDF metadata (creation date, generator), and the search index leaves the figure out
    assert "<metadata" not in out and "image/svg+xml" not in out
    assert "data-search-exclude" in root


def _wcag(hex_a: str, hex_b: str) -> float:
    """WCAG 2 contrast of two hex colours, written out here independently of the package."""

    def lum(h: str) -> float:
        rgb = [int(h[i:i + 2], 16) / 255 for i in (1, 3, 5)]
        lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]

    hi, lo = sorted((lum(hex_a), lum(hex_b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def _text_fill(out: str, label: str) -> str | None:
    m = re.search(r'<text[^>]*style="([^"]*)"[^>]*>' + re.escape(label) + "</text>", out)
    assert m, f"no text {label!r} in the SVG"
    fill = re.search(r"fill: (#[0-9a-f]{6})", m.group(1))
    return fill.group(1) if fill else None


def test_labels_on_cells_get_a_fixed_colour_that_reads_on_the_cell():
    import numpy as np

    fig, ax = new_figure(figsize=(3, 1.5))
    ax.pcolormesh(np.array([[0.0, 1.0]]), cmap="Greys", vmin=0, vmax=1)  # white cell, black cell
    ax.text(0.5, 0.5, "light", ha="center", va="center")
    ax.text(1.5, 0.5, "dark", ha="center", va="center")
    ax.set_title("cells")
    out = svg(fig)
    # Opaque cells look the same in both schemes, so the label colour must be fixed (not
    # currentColor, which turns light on a dark page) and read on its cell.
    assert _wcag(_text_fill(out, "light"), "#ffffff") >= 4.5
    assert _wcag(_text_fill(out, "dark"), "#000000") >= 4.5


def test_a_translucent_cell_under_a_label_becomes_opaque_when_no_colour_reads_on_both_pages():
    import numpy as np

    fig, ax = new_figure(figsize=(2, 1.5))
    ax.pcolormesh(np.array([[0.5]]), cmap="Blues", vmin=0, vmax=1, alpha=0.5)
    ax.text(0.5, 0.5, "7", ha="center", va="center")
    ax.set_title("one cell")
    out = svg(fig)
    cell = re.search(r'<path [^>]*clip-path[^>]*style="([^"]*)"', out).group(1)
    assert "fill-opacity" not in cell, cell
    assert _wcag(_text_fill(out, "7"), re.search(r"fill: (#[0-9a-f]{6})", cell).group(1)) >= 4.5


def test_a_pale_label_on_the_page_takes_the_page_colour():
    fig, ax = new_figure(figsize=(2, 1))
    ax.text(0.1, 0.5, "orange", color="#d8774f")  # 3.1:1 on white: unreadable in light mode
    ax.set_title("label")
    out = svg(fig)
    assert _text_fill(out, "orange") is None  # no fill of its own: currentColor


def test_figures_have_an_accessible_name():
    fig, axes = new_figure(1, 2, figsize=(3, 1))
    axes[0].set_title("쿼리 헤드")
    axes[1].set_title("$H_{kv}$ = 2")
    out = svg(fig)
    assert 'aria-label="쿼리 헤드 · Hkv = 2"' in out[: out.index(">")]
    fig, ax = new_figure(figsize=(2, 1))
    out = svg(fig, alt='A & "B"')
    assert 'aria-label="A &amp; &quot;B&quot;"' in out[: out.index(">")]
    fig, ax = new_figure(figsize=(2, 1))
    with pytest.raises(ValueError, match="alt="):
        svg(fig)
