"""The walkthrough's data, cache and run (tiny recipe: seconds)."""

import shutil
import types
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
    for part in ("openings", "frames", "closings", "follow_ups"):
        assert not set(train[part]) & set(held[part]), part
    for e in glossary_entries():
        names = dialog_data._names(e, lang)
        names += [n.lower() for n in names]  # training questions may type a name in lower case

        def every(t):
            return {dialog_data.question(e, lang, f, o, n, c) for f in t["frames"] for o in t["openings"]
                    for n in names for c in ["", *t["closings"]]}

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


# ------------------------------------------------------------------ initial weights


def test_init_weights_scales_every_matrix_to_its_fan_in():
    from llm_glossary.model import Llama, LlamaConfig

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=3000, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_hidden=256,
                         max_seq_len=32, tie_embeddings=False)
    model = walkthrough.init_weights(Llama(config))
    for name, p in model.named_parameters():
        std = float(p.detach().std())
        if name == "lm_head.weight":
            assert std == pytest.approx(0.02, rel=0.02), name
        elif name == "embed_tokens.weight":
            assert std == pytest.approx(1.0, rel=0.02), name
        elif p.dim() == 2:
            assert std == pytest.approx(p.shape[1] ** -0.5, rel=0.05), name  # 1/√fan_in
        else:
            assert torch.equal(p, torch.ones_like(p)), name  # the RMSNorm gains
    tied = walkthrough.init_weights(Llama(LlamaConfig(**{**config.to_dict(), "tie_embeddings": True})))
    assert tied.lm_head.weight is tied.embed_tokens.weight
    assert float(tied.embed_tokens.weight.detach().std()) == pytest.approx(0.02, rel=0.02)


# ------------------------------------------------------------------ the exact-answer check


class _Oracle(torch.nn.Module):
    """A 'model' whose most likely next token is the next id of one of the given sequences."""

    def __init__(self, sequences, vocab_size):
        super().__init__()
        self.lm_head = torch.nn.Linear(1, vocab_size, bias=False)  # for .weight.device
        self.config = types.SimpleNamespace(max_seq_len=max(map(len, sequences)))
        self.next = {}
        for ids in sequences:
            for t in range(len(ids) - 1):
                self.next[tuple(ids[: t + 1])] = ids[t + 1]
        self.vocab_size = vocab_size

    def forward(self, idx, logits_at=None):
        B, T = idx.shape
        logits = torch.zeros(B, T, self.vocab_size)
        for b in range(B):
            row = idx[b].tolist()
            for t in range(T):
                logits[b, t, self.next.get(tuple(row[: t + 1]), 0)] = 1.0
        return logits[logits_at] if logits_at is not None else logits


def test_teacher_forced_check_uses_the_answer_ids_that_training_uses():
    """An oracle that continues every prompt with its answer exactly as encode_dialog encodes
    it passes; the answer's ids as tokenizer.encode(answer) gives them (a leading '▁' on the
    first piece) would fail on the first token."""
    from llm_glossary.dialog import Message, chat_tokenizer, encode_dialog, encode_prompt

    tok = chat_tokenizer()
    prompts = [s for s in walkthrough.eval_prompts() if s.kind != "everyday"][:12]
    sequences = [encode_dialog([*[Message(r, c) for r, c in s.messages], Message("assistant", s.expected)], tok)[0]
                 for s in prompts]
    first = sequences[0][len(encode_prompt([Message(r, c) for r, c in prompts[0].messages], tok))]
    assert first != tok.encode(prompts[0].expected)[0]  # the case the check must get right
    assert walkthrough.teacher_forced_exact(_Oracle(sequences, tok.vocab_size), tok, prompts) == [True] * 12
    # an oracle that knows every answer but the last one's final token before <|eot_id|>
    broken = [list(ids) for ids in sequences]
    broken[-1][-2] = (broken[-1][-2] + 1) % 100
    got = walkthrough.teacher_forced_exact(_Oracle(broken, tok.vocab_size), tok, prompts, batch_size=5)
    assert got == [True] * 11 + [False]


def test_stop_rate_counts_the_answers_after_which_eot_is_most_likely():
    """An oracle of the dialogs' own ids stops after every assistant turn; one that writes
    some other token instead of the eot that ends assistant turns never does; one with
    half of the dialogs altered stops after exactly the other half's turns."""
    from llm_glossary.dialog import chat_tokenizer, encode_dialog

    tok = chat_tokenizer()
    dialogs = shipped_dialogs("heldout")[:10]
    encoded = [encode_dialog(d, tok) for d in dialogs]
    sequences = [ids for ids, _ in encoded]
    assert walkthrough.stop_rate(_Oracle(sequences, tok.vocab_size), tok, dialogs) == 1.0

    def no_stop(ids, labels):  # the eot after each assistant turn replaced by an ordinary id
        return [5 if label == tok.eot_id else i for i, label in zip(ids, labels)]

    never = [no_stop(ids, labels) for ids, labels in encoded]
    assert walkthrough.stop_rate(_Oracle(never, tok.vocab_size), tok, dialogs, batch_size=3) == 0.0
    turns = [sum(label == tok.eot_id for label in labels) for _, labels in encoded]
    half = [never[k] if k % 2 else sequences[k] for k in range(len(dialogs))]
    want = sum(turns[0::2]) / sum(turns)
    assert 0 < want < 1
    assert walkthrough.stop_rate(_Oracle(half, tok.vocab_size), tok, dialogs, batch_size=4) == pytest.approx(want)


def test_teacher_forced_check_agrees_with_greedy_decoding(tmp_path, monkeypatch):
    """On a real (tiny) model: the one-pass check says True exactly where greedy decoding
    reproduces the expected answer's ids and then <|eot_id|> (the oracle test above has the
    True cases; here the model's own replies are expected for half the prompts)."""
    from llm_glossary.dialog import Message, encode_dialog, encode_prompt

    monkeypatch.setenv("LLM_GLOSSARY_NO_CACHE", "1")
    monkeypatch.setattr(walkthrough, "_MEMO", {})
    w = walkthrough.run(recipe="tiny")
    samples = [s for s in walkthrough.eval_prompts() if s.kind != "everyday"][::9]
    # half of them expect what the model really says (its greedy reply), half the reference
    replies = walkthrough.greedy_replies(w.model, w.tokenizer, [walkthrough.Sample(**vars(s)) for s in samples])
    # one left-padded batch replies as one prompt at a time does
    lengths = {len(encode_prompt([Message(r, c) for r, c in s.messages], w.tokenizer)) for s in samples}
    assert len(lengths) > 1  # prompts of unequal token length share the batch
    alone = walkthrough.greedy_replies(w.model, w.tokenizer, [walkthrough.Sample(**vars(s)) for s in samples],
                                       batch_size=1)
    assert [(r.text, r.n_tokens, r.ended) for r in replies] == [(r.text, r.n_tokens, r.ended) for r in alone]
    for k, (s, r) in enumerate(zip(samples, replies)):
        if k % 2 == 0:
            s.expected = r.text[:40]  # (the tiny model does not stop yet: no eot after it)
    got = walkthrough.teacher_forced_exact(w.model, w.tokenizer, samples)
    for s, flag in zip(samples, got):
        msgs = [Message(r, c) for r, c in s.messages]
        prompt = encode_prompt(msgs, w.tokenizer)
        want = encode_dialog([*msgs, Message("assistant", s.expected)], w.tokenizer)[0][len(prompt):]
        out = w.model.generate(torch.tensor([prompt]), len(want), stop_tokens=[w.tokenizer.eot_id])[0, len(prompt):]
        assert flag == (out.tolist() == want), s.messages


# ------------------------------------------------------------------ the misconceptions' runs


def test_variants_share_the_walkthroughs_first_steps(tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_GLOSSARY_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("LLM_GLOSSARY_NO_CACHE", raising=False)
    monkeypatch.setattr(walkthrough, "_MEMO", {})
    monkeypatch.setattr(walkthrough, "_VARIANT_MEMO", {})
    w = walkthrough.run(recipe="tiny")
    k = walkthrough.variant_steps(recipe("tiny"))
    assert k == recipe("tiny").finetune.steps  # a recipe shorter than VARIANT_STEPS: all of it
    # the "assistant" run is the walkthrough at step k: the same steps again give the same weights
    import copy

    from llm_glossary.train import finetune

    again = copy.deepcopy(w.pretrained)
    finetune(again, shipped_dialogs("train"), w.tokenizer, recipe("tiny").finetune, stop_at=k)
    for (name, a), b in zip(w.early.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name
    v = walkthrough.variants(recipe="tiny")
    assert list(v) == ["assistant", "all", "no-eot"]
    assert all(r["steps"] == k for r in v.values())
    assert v["no-eot"]["stop_rate"] == 0  # never trained to produce <|eot_id|>
    assert not any(r["ended"] for r in v["no-eot"]["reply"].values())
    assert set(v["no-eot"]["reply"]) == {"ko", "en"} and v["assistant"]["reply"] is None
    assert v["all"]["heldout_loss"] != v["assistant"]["heldout_loss"]
    # not paid for
    assert v["all"]["stop_rate"] is None and v["all"]["reply"] is None and v["no-eot"]["heldout_loss"] is None
    assert 0 <= v["assistant"]["stop_rate"] <= 1 and v["assistant"]["heldout_loss"] > 0
    assert v["assistant"]["stop_rate"] == walkthrough.stop_rate(w.early, w.tokenizer, shipped_dialogs("heldout"))
    assert list(tmp_path.glob("variants-*.json"))
    monkeypatch.setattr(walkthrough, "_VARIANT_MEMO", {})
    assert walkthrough.variants(recipe="tiny") == v  # from the disk cache


def test_greedy_replies_give_each_prompt_the_room_it_has():
    """Prompts too long for max_new_tokens more tokens get what room the context leaves them,
    whatever longer or shorter prompts share the call; every reply is the one-prompt decode."""
    from llm_glossary.dialog import Message, chat_tokenizer, encode_prompt
    from llm_glossary.model import Llama, LlamaConfig

    tok = chat_tokenizer()
    torch.manual_seed(0)
    model = Llama(LlamaConfig(vocab_size=tok.vocab_size, dim=32, n_layers=1, n_heads=2, n_kv_heads=1,
                              ffn_hidden=64, max_seq_len=48)).eval()
    texts = ["Hi", "What is RMSNorm?", "Explain grouped-query attention and why Llama 3 uses it, please.",
             "안녕하세요", "슬라이딩 윈도 어텐션은 무엇이고 왜 쓰나요? 자세히 알려 주세요."]
    samples = [walkthrough.Sample("everyday", "en", [("user", t)], None) for t in texts]
    lengths = [len(encode_prompt([Message("user", t)], tok)) for t in texts]
    rooms = [min(16, 48 - n) for n in lengths]
    assert min(rooms) < 16 == max(rooms)  # some prompts have less room than max_new_tokens
    got = walkthrough.greedy_replies(model, tok, samples, max_new_tokens=16)
    for s, n, room in zip(got, lengths, rooms):
        ids = torch.tensor([encode_prompt([Message("user", s.messages[0][1])], tok)])
        alone = model.generate(ids, room, stop_tokens=[tok.eot_id])[0, n:].tolist()
        if tok.eot_id in alone:
            alone = alone[: alone.index(tok.eot_id) + 1]
        assert s.n_tokens == len(alone) and s.text == tok.decode([i for i in alone if i != tok.eot_id])
