"""The shipped everyday dialogs: format, split, lengths, languages and the token budget.

The files live in the package (``llm_glossary/data/dialogs/everyday/{train,heldout}/{ko,en}.json``)
and are read here both as plain JSON and, when present, through ``llm_glossary.dialog``.
"""

import glob
import importlib.resources
import importlib.util
import json
import re
import unicodedata

import pytest

LANGS = ("ko", "en")
SPLITS = ("train", "heldout")
MIN_DIALOGS = 300  # per language, both splits together
HELDOUT_SHARE = (0.10, 0.14)  # the split holds out about 12 % of each language
MAX_CHARS = {"system": 120, "user": 120, "assistant": 140}
MAX_REPLY_TOKENS = 96  # a reply and its end-of-turn token must fit the reply budget
NEAR_DUPLICATE = 0.3  # character-trigram Jaccard similarity a held-out dialog stays below

HANGUL = re.compile(r"[\uac00-\ud7a3]")
LETTER = re.compile(r"[A-Za-z\uac00-\ud7a3]")
MARKUP = re.compile(r"[\u2018\u2019\u201c\u201d`*#_<>\[\]{}|]")


def _path(split, lang):
    return importlib.resources.files("llm_glossary") / f"data/dialogs/everyday/{split}/{lang}.json"


@pytest.fixture(scope="module")
def files():
    """{(split, lang): list of dialog objects} read with the json module."""
    out = {}
    for split in SPLITS:
        for lang in LANGS:
            data = json.loads(_path(split, lang).read_text(encoding="utf-8"))
            assert list(data) == ["dialogs"], f"{split}/{lang}.json top-level keys {list(data)}"
            out[split, lang] = data["dialogs"]
    return out


def _messages(files):
    for (split, lang), dialogs in files.items():
        for d in dialogs:
            for m in d["conversation"]:
                yield split, lang, d["id"], m["speaker"], m["utterance"]


def _norm(text):
    return re.sub(r"\W", "", text.casefold())


def _trigrams(dialog):
    text = _norm(" ".join(m["utterance"] for m in dialog["conversation"]))
    return {text[i : i + 3] for i in range(len(text) - 2)}


def test_files_are_package_data():
    for split in SPLITS:
        for lang in LANGS:
            assert _path(split, lang).is_file(), f"{split}/{lang}.json missing from the package"


def test_pyproject_ships_the_files(root):
    """A wheel carries the files only if a package-data glob in pyproject.toml matches them."""
    tomllib = pytest.importorskip("tomllib")  # standard library from Python 3.11
    config = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = config["tool"]["setuptools"]["package-data"]["llm_glossary"]
    package = root / "src" / "llm_glossary"
    shipped = {f for pattern in patterns for f in glob.glob(pattern, root_dir=package)}
    for split in SPLITS:
        for lang in LANGS:
            name = f"data/dialogs/everyday/{split}/{lang}.json"
            assert name in shipped, f"{name} matches no package-data glob in {patterns}"


def test_counts_and_heldout_share(files):
    for lang in LANGS:
        train, held = len(files["train", lang]), len(files["heldout", lang])
        assert train + held >= MIN_DIALOGS, f"{lang}: {train + held} dialogs"
        share = held / (train + held)
        assert HELDOUT_SHARE[0] <= share <= HELDOUT_SHARE[1], f"{lang}: held-out share {share:.3f}"


def test_ids_unique_and_named_by_language(files):
    ids = [d["id"] for dialogs in files.values() for d in dialogs]
    assert len(ids) == len(set(ids)), "duplicate ids across the four files"
    for (split, lang), dialogs in files.items():
        for d in dialogs:
            assert re.fullmatch(rf"{lang}-\d{{4}}", d["id"]), f"{split}/{lang}: id {d['id']!r}"


def test_structure_and_alternation(files):
    for (split, lang), dialogs in files.items():
        for d in dialogs:
            assert set(d) == {"id", "conversation"}, f"{d['id']}: keys {sorted(d)}"
            conv = d["conversation"]
            for m in conv:
                assert set(m) == {"speaker", "utterance"}, f"{d['id']}: message keys {sorted(m)}"
            roles = [m["speaker"] for m in conv]
            body = roles[1:] if roles[0] == "system" else roles
            assert "system" not in body, f"{d['id']}: system message not first"
            assert 2 <= len(body) <= 6, f"{d['id']}: {len(body)} messages"
            expected = ["user", "assistant"] * (len(body) // 2)
            assert body == expected, f"{d['id']}: roles {roles}"


def test_lengths_and_plain_text(files):
    for split, lang, did, role, text in _messages(files):
        assert text == text.strip() and text, f"{did}: empty or padded {role} message"
        assert len(text) <= MAX_CHARS[role], f"{did}: {role} has {len(text)} characters"
        assert "<|" not in text, f"{did}: special-token look-alike in {text!r}"
        assert not MARKUP.search(text), f"{did}: markup or typographic quote in {text!r}"
        symbols = [c for c in text if unicodedata.category(c) in ("So", "Cs", "Co", "Cc")]
        assert not symbols, f"{did}: symbols {symbols} in {text!r}"


def test_languages_not_mixed(files):
    for split, lang, did, role, text in _messages(files):
        if lang == "en":
            assert text.isascii(), f"{did}: non-ASCII in English text {text!r}"
        else:
            letters = LETTER.findall(text)
            hangul = HANGUL.findall(text)
            assert hangul and len(hangul) >= 0.6 * len(letters), f"{did}: not Korean: {text!r}"


def test_heldout_is_not_a_copy_of_train(files):
    for lang in LANGS:
        train, held = files["train", lang], files["heldout", lang]
        train_users = {
            _norm(m["utterance"]) for d in train for m in d["conversation"] if m["speaker"] == "user"
        }
        train_grams = [_trigrams(d) for d in train]
        for d in held:
            for m in d["conversation"]:
                if m["speaker"] == "user":
                    assert _norm(m["utterance"]) not in train_users, f"{d['id']}: {m['utterance']!r}"
            g = _trigrams(d)
            worst = max(len(g & t) / len(g | t) for t in train_grams)
            assert worst < NEAR_DUPLICATE, f"{d['id']}: near-duplicate of a training dialog ({worst:.2f})"


def test_no_duplicate_dialogs(files):
    for lang in LANGS:
        seen = {}
        for split in SPLITS:
            for d in files[split, lang]:
                key = _norm(" ".join(m["utterance"] for m in d["conversation"]))
                assert key not in seen, f"{d['id']} repeats {seen.get(key)}"
                seen[key] = d["id"]


def test_replies_fit_the_token_budget(files):
    from llm_glossary.tokenizer import corpus_tokenizer

    tokenizer = corpus_tokenizer()
    for split, lang, did, role, text in _messages(files):
        if role == "assistant":
            n = len(tokenizer.encode(text)) + 1  # + the end-of-turn token
            assert n <= MAX_REPLY_TOKENS, f"{did}: reply takes {n} tokens: {text!r}"


@pytest.mark.skipif(
    importlib.util.find_spec("llm_glossary.dialog") is None,
    reason="llm_glossary.dialog (branch dialog) not merged yet",
)
def test_load_dialogs_reads_every_file(files):
    from llm_glossary.dialog import load_dialogs

    for (split, lang), raw in files.items():
        with importlib.resources.as_file(_path(split, lang)) as path:
            dialogs = load_dialogs(path)
        assert [d.id for d in dialogs] == [d["id"] for d in raw]
        for d, r in zip(dialogs, raw):
            got = [(m.role, m.content) for m in d.messages]
            assert got == [(m["speaker"], m["utterance"]) for m in r["conversation"]]
