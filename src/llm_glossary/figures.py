"""Figures for the pages: matplotlib rendered to inline SVG at build time.

Pages print ``svg(fig)`` from a block with ``html="on"``. The SVG keeps its text as
real text (so Korean labels are drawn by the reader's browser fonts, not by whatever
fonts the build machine happens to have), has a transparent background, and draws
black ink in ``currentColor`` so that it follows the page colour in light and dark mode.

Every text stays readable in both colour schemes (WCAG AA, a contrast of 4.5 : 1): a
label drawn on a filled cell gets black or white, whichever reads on that cell over both
page backgrounds (a translucent cell under a label is made opaque when neither does); a
coloured label on the page itself that cannot meet 4.5 : 1 on both backgrounds takes the
page's text colour. The figure's accessible name (``aria-label``) is the ``alt`` text or,
without one, its titles.

matplotlib is a docs dependency, imported only when a figure is made.
"""

from __future__ import annotations

import html
import io
import re
from typing import Any

__all__ = ["contrast", "new_figure", "readable_text_colours", "svg"]

_INK = "#000000"
# The page behind a figure and its text colour, in Material's light ("default") and dark
# ("slate") schemes: --md-default-bg-color and --md-typeset-color.
PAGE_BACKGROUNDS = {"light": (1.0, 1.0, 1.0), "dark": (30 / 255, 33 / 255, 41 / 255)}
PAGE_TEXT = {"light": (0.0, 0.0, 0.0, 0.87), "dark": (226 / 255, 228 / 255, 233 / 255, 0.82)}
MIN_CONTRAST = 4.5  # WCAG 2 AA for text
# Black that stays black in both schemes: svg() turns #000000 into currentColor.
FIXED_BLACK = "#010101"


def new_figure(*args: Any, **kwargs: Any):
    """``plt.subplots`` with the non-interactive SVG backend and page-friendly defaults.

    Returns:
        ``(fig, ax)`` exactly like ``matplotlib.pyplot.subplots``.
    """
    import matplotlib

    matplotlib.use("svg", force=True)
    import matplotlib.pyplot as plt

    with plt.rc_context(_rc()):
        fig, ax = plt.subplots(*args, **kwargs)
    return fig, ax


def _rc() -> dict[str, Any]:
    return {
        "svg.fonttype": "none",  # keep text as <text>, drawn with the browser's fonts
        "font.family": "sans-serif",
        "font.sans-serif": ["Noto Sans CJK KR", "Apple SD Gothic Neo", "Malgun Gothic", "DejaVu Sans"],
        "text.color": _INK,
        "axes.labelcolor": _INK,
        "axes.edgecolor": _INK,
        "xtick.color": _INK,
        "ytick.color": _INK,
        "figure.facecolor": "none",
        "axes.facecolor": "none",
        "savefig.facecolor": "none",
        "savefig.transparent": True,
    }


def _over(top: tuple[float, ...], bottom: tuple[float, ...]) -> tuple[float, float, float]:
    a = top[3] if len(top) > 3 else 1.0
    return tuple(t * a + b * (1 - a) for t, b in zip(top[:3], bottom[:3]))  # type: ignore[return-value]


def _luminance(rgb: tuple[float, ...]) -> float:
    def channel(c: float) -> float:
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(c) for c in rgb[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """WCAG 2 contrast ratio of two opaque RGB colours (components in 0..1).

    Examples:
        >>> round(contrast((0, 0, 0), (1, 1, 1)), 1)
        21.0
    """
    hi, lo = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def readable_text_colours(fill: tuple[float, ...]) -> tuple[str | None, float]:
    """The text colour that reads best on ``fill`` (RGBA) in both schemes, and its contrast.

    Candidates are the page's text colour (None: keep ``currentColor``), black and white;
    the contrast returned is the lower of the two schemes'.

    Examples:
        >>> readable_text_colours((1.0, 1.0, 1.0, 1.0))[0]  # white cell: black text
        '#010101'
        >>> readable_text_colours((0.0, 0.0, 0.0, 0.0))[0]  # no fill: the page's own colour
    """
    best: tuple[str | None, float] = (None, 0.0)
    for name, ink in ((None, None), (FIXED_BLACK, (1 / 255, 1 / 255, 1 / 255, 1)), ("#ffffff", (1, 1, 1, 1))):
        worst = float("inf")
        for scheme, page in PAGE_BACKGROUNDS.items():
            back = _over(fill, page)
            text = _over(PAGE_TEXT[scheme] if ink is None else ink, back)
            worst = min(worst, contrast(text, back))
        if worst > best[1] + 1e-9:
            best = (name, worst)
    return best


def _fill_under(ax: Any, x: float, y: float, canvas: Any) -> tuple[Any, int | None, tuple[float, ...]] | None:
    """The topmost filled patch or mesh cell of ``ax`` at display point (x, y)."""
    from matplotlib.backend_bases import MouseEvent
    from matplotlib.collections import QuadMesh
    from matplotlib.colors import to_rgba

    found = None
    event = MouseEvent("motion_notify_event", canvas, x, y)
    for artist in sorted([*ax.patches, *ax.collections], key=lambda a: a.get_zorder()):
        if not artist.get_visible():
            continue
        if isinstance(artist, QuadMesh):
            hit, info = artist.contains(event)
            if hit and len(info.get("ind", [])):
                index = int(info["ind"][-1])
                colours = artist.get_facecolor()
                if len(colours) > index:
                    found = (artist, index, tuple(colours[index]))
        elif hasattr(artist, "contains_point") and hasattr(artist, "get_facecolor"):
            try:
                if artist.contains_point((x, y)):
                    colour = to_rgba(artist.get_facecolor())
                    if colour[3] > 0:
                        found = (artist, None, colour)
            except (TypeError, ValueError):
                continue
    return found


def _readable(fig: Any) -> None:
    """Give every text of ``fig`` a contrast of 4.5 : 1 in both schemes (see the module doc)."""
    import numpy as np
    from matplotlib.colors import to_hex, to_rgba

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if not any(t.get_visible() and t.get_text().strip() for ax in fig.axes for t in ax.texts):
        return  # no text drawn over the data: nothing to check (and no drawing to pay for)
    canvas = FigureCanvasAgg(fig)  # display coordinates and a renderer for the text extents
    fig.draw_without_rendering()  # the layout only: positions and sizes, no pixels
    renderer = canvas.get_renderer()
    for ax in fig.axes:
        for text in ax.texts:
            if not text.get_visible() or not text.get_text().strip():
                continue
            box = text.get_window_extent(renderer)
            x, y = (box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2
            under = _fill_under(ax, x, y, canvas)
            if under is None:
                colour = to_rgba(text.get_color())
                if to_hex(colour) == _INK:
                    continue  # becomes currentColor, the page's own text colour
                worst = min(contrast(_over(colour, page), page) for page in PAGE_BACKGROUNDS.values())
                if worst < MIN_CONTRAST:
                    text.set_color(_INK)
                continue
            artist, index, fill = under
            name, worst = readable_text_colours(fill)
            if worst < MIN_CONTRAST:
                # Translucent: it looks different on each page. Make it opaque (as on a light
                # page) so that one text colour reads on it in both schemes.
                opaque = (*_over(fill, PAGE_BACKGROUNDS["light"]), 1.0)
                if index is None:
                    artist.set_alpha(None)
                    artist.set_facecolor(opaque)
                else:
                    colours = np.array(artist.get_facecolor(), dtype=float)
                    colours[index] = opaque
                    artist.set_array(None)  # keep these colours instead of the colormap's
                    artist.set_alpha(None)
                    artist.set_facecolor(colours)
                name, worst = readable_text_colours(opaque)
            text.set_color(name or _INK)


def _accessible_name(fig: Any) -> str:
    titles = [fig._suptitle.get_text()] if getattr(fig, "_suptitle", None) is not None else []
    titles += [ax.get_title() for ax in fig.axes]
    if not any(t.strip() for t in titles):
        titles = [label for ax in fig.axes for label in (ax.get_ylabel(), ax.get_xlabel())]
    if not any(t.strip() for t in titles):  # last resort: the labels drawn in it, in order
        texts = [t.get_text().strip() for ax in fig.axes for t in ax.texts if t.get_text().strip()]
        titles = [" ".join(texts[:12]) + (" …" if len(texts) > 12 else "")] if texts else []
    name = " · ".join(t.replace("\n", " ").strip() for t in titles if t.strip())
    return re.sub(r"\$([^$]*)\$", lambda m: re.sub(r"[\\{}_^]", "", m.group(1)), name)


def svg(fig: Any, *, max_width: str = "100%", alt: str | None = None) -> str:
    """Render a matplotlib figure as an inline ``<svg>`` element and close it.

    Args:
        fig: a matplotlib Figure.
        max_width: CSS ``max-width`` of the drawing.
        alt: the figure's accessible name (``aria-label``); default: its titles joined,
            else its axis labels, else the labels drawn in it.

    Returns:
        The SVG markup, without XML prolog and metadata, with black replaced by
        ``currentColor``, kept out of the site's search index.

    Raises:
        ValueError: the figure has no title, axis label or text and no ``alt`` was given.
    """
    import logging
    import warnings

    import matplotlib.pyplot as plt

    buf = io.StringIO()
    logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)
    name = (alt if alt is not None else _accessible_name(fig)).strip()
    if not name:
        plt.close(fig)
        raise ValueError("svg(fig): the figure has no title, axis label or text to name it; pass alt='what it shows'")
    with plt.rc_context(_rc()), warnings.catch_warnings():
        # Glyph metrics for Hangul may be missing on the build machine; the text stays text
        # and the browser draws it, so the warning is not useful here.
        warnings.simplefilter("ignore", UserWarning)
        _readable(fig)
        fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    # matplotlib's RDF metadata (creation date, "image/svg+xml", its own name) is neither seen
    # nor useful inline, and the site search would index it as page text
    text = re.sub(r"\s*<metadata>.*?</metadata>", "", text, count=1, flags=re.S)
    text = re.sub(r"#000000\b", "currentColor", text)
    end = text.index(">")
    root = re.sub(r'\sheight="[^"]*"', "", text[:end])  # the viewBox keeps the aspect ratio
    # matplotlib leaves out the fill of black text and paths (SVG's default is black): make that
    # default the page's text colour too, so labels stay readable in dark mode.
    label = html.escape(name, quote=True)
    # data-search-exclude: the search index gets the page's prose, not tick labels and legends
    # (the figure is named by its aria-label)
    root = root.replace(
        "<svg",
        f'<svg role="img" aria-label="{label}" data-search-exclude fill="currentColor" '
        f'style="max-width:{max_width};height:auto"',
        1,
    )
    return root + text[end:]
