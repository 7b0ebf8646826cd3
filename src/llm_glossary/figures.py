"""Figures for the pages: matplotlib rendered to inline SVG at build time.

Pages print ``svg(fig)`` from a block with ``html="on"``. The SVG keeps its text as
real text (so Korean labels are drawn by the reader's browser fonts, not by whatever
fonts the build machine happens to have), has a transparent background, and draws
black ink in ``currentColor`` so that it follows the page colour in light and dark mode.

matplotlib is a docs dependency, imported only when a figure is made.
"""

from __future__ import annotations

import io
import re
from typing import Any

__all__ = ["new_figure", "svg"]

_INK = "#000000"


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


def svg(fig: Any, *, max_width: str = "100%") -> str:
    """Render a matplotlib figure as an inline ``<svg>`` element and close it.

    Args:
        fig: a matplotlib Figure.
        max_width: CSS ``max-width`` of the drawing.

    Returns:
        The SVG markup, without XML prolog, with black replaced by ``currentColor``.
    """
    import logging
    import warnings

    import matplotlib.pyplot as plt

    buf = io.StringIO()
    logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)
    with plt.rc_context(_rc()), warnings.catch_warnings():
        # Glyph metrics for Hangul may be missing on the build machine; the text stays text
        # and the browser draws it, so the warning is not useful here.
        warnings.simplefilter("ignore", UserWarning)
        fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    text = re.sub(r"#000000\b", "currentColor", text)
    end = text.index(">")
    root = re.sub(r'\sheight="[^"]*"', "", text[:end])  # the viewBox keeps the aspect ratio
    # matplotlib leaves out the fill of black text and paths (SVG's default is black): make that
    # default the page's text colour too, so labels stay readable in dark mode.
    root = root.replace("<svg", f'<svg role="img" fill="currentColor" style="max-width:{max_width};height:auto"', 1)
    return root + text[end:]
