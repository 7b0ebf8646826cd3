"""Figures: inline SVG whose black ink follows the page colour (light and dark mode)."""

import re

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
