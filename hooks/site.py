"""MkDocs hook: what the built site needs beyond the glossary (hooks/glossary.py).

- mkdocstrings gets the language of each build, so the API page's section labels are Korean
  on the Korean site (templates/python/material/languages/ko.html.jinja).

The functions are plain Python so that tests can call them without a build.
"""

from __future__ import annotations

try:  # MkDocs is present during a build; tests of the pure functions do not need it.
    from mkdocs.exceptions import PluginError
    from mkdocs.plugins import event_priority
except ImportError:  # pragma: no cover
    PluginError = RuntimeError  # type: ignore[misc,assignment]

    def event_priority(priority):  # type: ignore[no-redef]
        return lambda f: f


LANGS = ("ko", "en")
DEFAULT_LANG = "ko"


class SiteError(PluginError):
    """The configuration does not give what the site hook expects."""


def _build_language(config) -> str:
    i18n = config.plugins.get("i18n")
    language = getattr(i18n, "current_language", None) or config.theme.get("language")
    if language not in LANGS:
        raise SiteError(f"site hook: the i18n plugin builds {language!r}, expected one of {LANGS}")
    return language


@event_priority(10)  # before mkdocstrings (priority 0) reads its locale
def on_config(config):
    # mkdocstrings reads its locale in its own on_config, before mkdocs-static-i18n (which runs
    # last) sets theme.language; the i18n plugin picks each build's language before that build
    # starts, so it can be read here and handed to mkdocstrings' `locale` option.
    mkdocstrings = config.plugins.get("mkdocstrings")
    if mkdocstrings is not None:
        mkdocstrings.config["locale"] = _build_language(config)
    return config
