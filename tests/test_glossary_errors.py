"""Glossary files the build must refuse with one error naming the file (issue 10, section 4)."""

import sys
import textwrap

import pytest

ENTRY = textwrap.dedent(
    """\
    slug: {slug}
    ko: 용어 {slug}
    en: Term {slug}
    definition:
      ko: 한 줄 정의.
      en: One sentence.
    """
)


def write(folder, name, text):
    (folder / name).write_text(text, encoding="utf-8")
    return folder / name


def one_line(err) -> str:
    message = str(err.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_an_entry_named_yaml_is_an_error_not_skipped(glossary_hook, tmp_path):
    write(tmp_path, "aaa.yml", ENTRY.format(slug="aaa"))
    write(tmp_path, "bbb.yaml", ENTRY.format(slug="bbb"))  # before: silently ignored
    with pytest.raises(glossary_hook.GlossaryError) as err:
        glossary_hook.load_glossary(tmp_path)
    assert one_line(err).endswith("bbb.yaml: glossary entries must be named <slug>.yml; rename it to bbb.yml")


def test_a_duplicate_key_is_an_error(glossary_hook, tmp_path):
    write(tmp_path, "aaa.yml", ENTRY.format(slug="aaa") + "en: Another name\n")  # before: the last en: won
    with pytest.raises(glossary_hook.GlossaryError) as err:
        glossary_hook.load_glossary(tmp_path)
    message = one_line(err)
    assert "aaa.yml: not valid YAML" in message and "duplicate key 'en' (first on line 3)" in message


def test_a_folder_named_like_an_entry_is_one_error(glossary_hook, tmp_path):
    write(tmp_path, "aaa.yml", ENTRY.format(slug="aaa"))
    (tmp_path / "zzz.yml").mkdir()  # before: a 43-line traceback
    with pytest.raises(glossary_hook.GlossaryError) as err:
        glossary_hook.load_glossary(tmp_path)
    assert one_line(err).endswith("zzz.yml: is a folder; expected a glossary entry file <slug>.yml")


def test_a_file_that_is_not_utf8_is_one_error(glossary_hook, tmp_path):
    (tmp_path / "aaa.yml").write_bytes(ENTRY.format(slug="aaa").encode("utf-8") + b"\xff")
    with pytest.raises(glossary_hook.GlossaryError) as err:
        glossary_hook.load_glossary(tmp_path)
    assert "aaa.yml: not UTF-8 text" in one_line(err)


@pytest.fixture
def raising_module(tmp_path, monkeypatch):
    (tmp_path / "broken_for_glossary_test.py").write_text("import json\nraise RuntimeError('no GPU here\\nsecond line')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "broken_for_glossary_test"
    sys.modules.pop("broken_for_glossary_test", None)


def test_a_symbol_whose_module_raises_names_the_yml_file(glossary_hook, tmp_path, raising_module):
    term = glossary_hook.parse_term(
        {"slug": "x", "ko": "가", "en": "X", "definition": {"ko": "가.", "en": "X."}, "symbols": [f"{raising_module}.f"]},
        "glossary/x.yml",
    )
    with pytest.raises(glossary_hook.GlossaryError) as err:
        glossary_hook.check_symbols(glossary_hook.Glossary([term]))  # before: a 47-line traceback
    assert one_line(err) == (
        "glossary/x.yml: symbol 'broken_for_glossary_test.f' cannot be imported (RuntimeError: no GPU here second line)"
    )


@pytest.mark.parametrize(
    "symbol, message",
    [
        ("os", r"symbol 'os' must be a dotted path module.name \(for example llm_glossary.norm.RMSNorm\)"),  # before: "Empty module name"
        ("llm_glossary.norm.NoSuchThing", r"symbol 'llm_glossary.norm.NoSuchThing' cannot be imported \(ModuleNotFoundError"),
        ("no_such_package_xyz.f", r"symbol 'no_such_package_xyz.f' cannot be imported \(ModuleNotFoundError: No module named 'no_such_package_xyz'\)"),
        ("llm_glossary..norm", r"symbol 'llm_glossary\.\.norm' must be a dotted path"),
    ],
)
def test_bad_symbols_are_one_error_naming_the_file(glossary_hook, symbol, message):
    term = glossary_hook.parse_term(
        {"slug": "x", "ko": "가", "en": "X", "definition": {"ko": "가.", "en": "X."}, "symbols": [symbol]}, "glossary/x.yml"
    )
    with pytest.raises(glossary_hook.GlossaryError, match="glossary/x.yml: " + message):
        glossary_hook.check_symbols(glossary_hook.Glossary([term]))


def test_module_paths_and_attributes_resolve(glossary_hook):
    term = glossary_hook.parse_term(
        {"slug": "x", "ko": "가", "en": "X", "definition": {"ko": "가.", "en": "X."},
         "symbols": ["llm_glossary.norm.RMSNorm", "llm_glossary.checkpoint"]},
        "glossary/x.yml",
    )
    glossary_hook.check_symbols(glossary_hook.Glossary([term]))
