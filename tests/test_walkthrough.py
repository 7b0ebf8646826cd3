"""The walkthrough's data, cache and run (tiny recipe: seconds)."""

import shutil
from pathlib import Path

import pytest
import torch

from llm_glossary import dialog_data, walkthrough
from llm_glossary.dialog_data import (
    FOLLOW_UPS, LANGS, glossary_dialogs, glossary_entries, shipped_dialogs, templates,
)
from llm_glossary.recipes import RECIPES, recipe


# ------------------------------------------------------------------ recipes


def test_recipe_names_and_unknown_name():
    assert {"tiny", "walkthrough", "walkthrough-gpu"} <= set(RECIPES)
    with pytest.raises(ValueError, match=r"unknown recipe 'nope'; choose one of \['tiny'"):
        recipe("nope")
    for r in RECIPES.values():
        assert "vocab_size" not in r.model
        assert r.finetune.seq_len <= r.model["max_seq_len"]


# ------------------------------------------------------------------ glossary dialogs


def test_snapshot_equals_the_checkout():
    """Regenerate with: python -m llm_glossary.dialog_data --write-snapshot"""
    assert glossary_entries("snapshot") == glossary_entries("checkout")


def test_generator_is_deterministic():
    first = glossary_dialogs("train") + glossary_dialogs("heldout")
    dialog_data._glossary_dialogs.cache_clear()
    second = glossary_dialogs("train") + glossary_dialogs("heldout")
    assert first == second and first is not second


@pytest.mark.parametrize("lang", LANGS)
def test_heldout_phrasings_never_occur_in_training(lang):
    train, held = templates("train", lang), templates("heldout", lang)
    for part in ("openings", "frames", "follow_ups"):
        assert not set(train[part]) & set(held[part]), part
    for e in glossary_entries():
        names = dialog_data._names(e, lang)

        def every(t):
            return {dialog_data.question(e, lang, f, o, n) for f in t["frames"] for o in t["openings"] for n in names}

        possible_held, possible_train = every(held), every(train)
        mine = lambda split: [d for d in glossary_dialogs(split, lang) if d.id.endswith(f"-{e['slug']}-" + d.id[-2:])]  # noqa: E731
        held_q = {d.messages[0].content for d in mine("heldout")}
        train_q = {d.messages[0].content for d in mine("train")}
        assert held_q and train_q
        assert held_q <= possible_held and train_q <= possible_train
        assert not held_q & possible_train, e["slug"]
        assert not train_q & possible_held, e["slug"]
        for d in mine("heldout"):
            assert all(m.content in held["follow_ups"] for m in d.messages[2::2])
        for d in mine("train"):
            assert all(m.content in train["follow_ups"] for m in d.messages[2::2])


def test_answers_are_the_definitions_and_follow_ups_come_from_the_entry():
    entries = {e["slug"]: e for e in glossary_entries()}
    for split in ("train", "heldout"):
        for lang in LANGS:
            dialogs = glossary_dialogs(split, lang)
            assert len({d.id for d in dialogs}) == len(dialogs)
            for d in dialogs:
                e = entries[d.id.split("-", 3)[3].rsplit("-", 1)[0]]
                assert d.messages[1].content == e["definition"][lang]
                answers = {dialog_data.follow_up_answer(e, lang, k) for k in FOLLOW_UPS}
                assert all(m.content in answers for m in d.messages[3::2])


def test_every_name_form_is_asked_in_training():
    for e in glossary_entries():
        asked = " ".join(d.messages[0].content for d in glossary_dialogs("train", "ko") if e["slug"] in str(d.id))
        for name in [e["ko"], e["en"], e["abbr"]]:
            if name:
                assert name in asked, (e["slug"], name)


def test_a_new_entry_brings_its_own_dialogs(monkeypatch):
    entry = {"slug": "zz-test", "ko": "시험 용어", "en": "Test term", "abbr": "TT", "aliases": ["시험말"],
             "definition": {"ko": "시험용 정의입니다.", "en": "A definition for testing."}, "page": "zz-test"}
    real = dialog_data.glossary_entries
    monkeypatch.setattr(dialog_data, "glossary_entries", lambda source="auto": real(source) + [entry])
    mine = [d for d in glossary_dialogs("train", "en") if "zz-test" in str(d.id)]
    assert len(mine) == dialog_data.TRAIN_PER_TERM
    assert all(d.messages[1].content == "A definition for testing." for d in mine)


def test_korean_particles_follow_the_final_sound():
    q = dialog_data.question
    e = glossary_entries()[0]
    assert q(e, "ko", "{N}{i} 뭐예요?", name="어텐션") == "어텐션이 뭐예요?"
    assert q(e, "ko", "{N}{i} 뭐예요?", name="GQA") == "GQA가 뭐예요?"
    assert q(e, "ko", "{N}{eun} 뭐예요?", name="RMSNorm") == "RMSNorm은 뭐예요?"
    assert q(e, "en", "What is {N}?", "Hey, ", name="GQA") == "Hey, what is GQA?"


def test_shipped_dialogs_combines_both_kinds():
    both = shipped_dialogs("heldout")
    assert both == shipped_dialogs("heldout", kind="everyday") + shipped_dialogs("heldout", kind="glossary")
    with pytest.raises(ValueError, match="kind must be one of"):
        shipped_dialogs("train", kind="nope")
    with pytest.raises(ValueError, match="split must be one of"):
        shipped_dialogs("test")


# ------------------------------------------------------------------ cache


def test_cache_key_changes_with_code_data_and_config(tmp_path):
    import llm_glossary

    pkg = tmp_path / "llm_glossary"
    shutil.copytree(Path(llm_glossary.__file__).parent, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    tiny = recipe("tiny")
    base = walkthrough.cache_key(tiny, "cpu", package_dir=pkg)
    assert base == walkthrough.cache_key(tiny, "cpu", package_dir=pkg)
    assert base != walkthrough.cache_key(recipe("walkthrough"), "cpu", package_dir=pkg)
    assert base != walkthrough.cache_key(tiny, "cuda", package_dir=pkg)
    train_py = pkg / "train.py"
    train_py.write_text(train_py.read_text("utf-8") + "\n# changed\n", "utf-8")
    code_changed = walkthrough.cache_key(tiny, "cpu", package_dir=pkg)
    assert code_changed != base
    corpus = next((pkg / "data" / "corpus" / "train").glob("*.txt"))
    corpus.write_text(corpus.read_text("utf-8") + "한 줄 더.\n", "utf-8")
    assert walkthrough.cache_key(tiny, "cpu", package_dir=pkg) != code_changed


def test_a_cache_hit_returns_identical_metrics_and_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_GLOSSARY_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("LLM_GLOSSARY_NO_CACHE", raising=False)
    monkeypatch.setattr(walkthrough, "_MEMO", {})
    first = walkthrough.run(recipe="tiny")
    assert not first.cached
    assert walkthrough.run(recipe="tiny") is first  # memoized in the process
    assert list(tmp_path.glob("walkthrough-*/model/model.safetensors"))
    assert not list(tmp_path.rglob("*.pt")) and not list(tmp_path.rglob("*.pkl"))
    monkeypatch.setattr(walkthrough, "_MEMO", {})
    second = walkthrough.run(recipe="tiny")
    assert second.cached
    assert second.metrics == first.metrics
    assert second.history["finetune"].loss == first.history["finetune"].loss
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values()):
        assert torch.equal(a, b)
    monkeypatch.setenv("LLM_GLOSSARY_NO_CACHE", "1")
    monkeypatch.setattr(walkthrough, "_MEMO", {})
    assert not walkthrough.run(recipe="tiny").cached


def test_tiny_run_reports_every_metric_and_the_loss_falls(tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_GLOSSARY_NO_CACHE", "1")
    monkeypatch.setattr(walkthrough, "_MEMO", {})
    w = walkthrough.run(recipe="tiny")
    m = w.metrics
    for key in ("loss_pretrained", "loss_finetuned", "loss_ratio", "end_rate", "role_leaks",
                "question_exact_all", "follow_up_exact_all", "pretrain_heldout_loss"):
        assert key in m, key
    assert m["loss_finetuned"] < m["loss_pretrained"]
    pre = w.history["pretrain"].loss
    assert pre[-1] < pre[0]
    assert 0 <= m["end_rate"] <= 1 and m["n_replies"] == len(w.samples) > 0
