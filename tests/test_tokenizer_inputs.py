"""Tokenizer training boundaries, crafted files and argument checks (issue 10, section 2)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import sentencepiece as spm
import torch

from llm_glossary import tokenizer as T
from llm_glossary.corpus import corpus_lines
from llm_glossary.tokenizer import (
    BYTE_PIECES,
    SPECIALS,
    ByteFallbackBPE,
    TokenizerFileError,
    count_words,
    naive_train,
)

MIN = len(SPECIALS) + len(BYTE_PIECES)


@pytest.fixture(scope="module")
def tok():
    return ByteFallbackBPE.train(corpus_lines("train", "en")[:30], vocab_size=MIN + 120)


# ---------------------------------------------------------------------- training boundaries


def test_line_breaks_are_word_boundaries_in_training():
    segments, alphabet = count_words("ab cd\nef gh\n\nij", character_coverage=1.0)
    assert segments == {"▁ab": 1, "▁cd": 1, "ef": 1, "▁gh": 1, "ij": 1}  # before: "▁cd\nef", "▁gh\n\nij"
    assert "\n" in alphabet  # still a character of the text, so it gets a piece, never a merge
    lines = corpus_lines("train", "en")[:25] + corpus_lines("train", "ko")[:25]
    merges = ByteFallbackBPE.train("\n".join(lines), vocab_size=MIN + 800).merges
    assert not [a + b for a, b in merges if "\n" in a + b]  # before: ".\n", "다.\n", ".\nThe" …


@pytest.mark.parametrize("space", ["\t", "\n", "\r", "\u3000", "\x0b"])
def test_no_piece_spans_a_whitespace_character(space):
    text = f"ab{space}cd " * 30
    merges = ByteFallbackBPE.train(text, vocab_size=MIN + 30).merges
    assert merges and not [m for m in merges if space in m[0] + m[1]]
    assert naive_train(text, vocab_size=MIN + 30) == merges


def test_pieces_are_at_most_16_characters_like_sentencepiece():
    word = "abcdefghijklmnopqrstuvwxyz"  # 27 characters with its "▁"
    lines = [" ".join([word] * 8)] * 20
    ours = ByteFallbackBPE.train(lines, vocab_size=MIN + 27 + 40)
    assert max(len(a + b) for a, b in ours.merges) == 16  # before: "▁abc…xyz", 27 characters
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(  # its largest vocabulary for this text
        sentence_iterator=iter(lines), model_writer=model, model_type="bpe", vocab_size=354,
        byte_fallback=True, character_coverage=1.0, normalization_rule_name="identity",
        add_dummy_prefix=True, remove_extra_whitespaces=False, unk_id=0, bos_id=1, eos_id=2,
        pad_id=-1, minloglevel=2, num_threads=1,
    )
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    sp_pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size()) if not sp.is_byte(i) and not sp.is_control(i)]
    assert max(len(p) for p in sp_pieces if p != "<unk>") == 16  # the reference stops at 16 too
    assert naive_train(lines, vocab_size=MIN + 27 + 40) == ours.merges
    short = ByteFallbackBPE.train(lines, vocab_size=MIN + 27 + 40, max_piece_length=4)
    assert max(len(a + b) for a, b in short.merges) == 4


def test_a_long_text_without_spaces_is_cut_into_short_training_segments():
    rng = np.random.default_rng(0)
    word = "".join(rng.choice(list("가나다라마바사아자차"), size=5000))  # one 5000-character word
    segments, _ = count_words(word)
    assert max(map(len, segments)) == 64  # before: one 5001-character segment, trained quadratically
    tok = ByteFallbackBPE.train(word, vocab_size=MIN + 11 + 50)
    assert tok.vocab_size == MIN + 11 + 50 and tok.decode(tok.encode(word)) == word


@pytest.mark.parametrize("value", [0, 1, 17.5, True, None])
def test_max_piece_length_is_checked(value):
    with pytest.raises(ValueError, match=f"max_piece_length must be an int >= 2 \\(characters\\), got {value!r}"):
        ByteFallbackBPE.train("ab ab", vocab_size=MIN + 3, max_piece_length=value)


# ---------------------------------------------------------------------- training and decode arguments


@pytest.mark.parametrize("texts, got", [(None, "NoneType"), (5, "int"), (b"ab ab", "bytes")])
def test_train_names_texts_that_are_not_text(texts, got):
    with pytest.raises(TypeError, match=f"training texts must be a str or an iterable of str, got {got}"):
        ByteFallbackBPE.train(texts, vocab_size=MIN + 3)


@pytest.mark.parametrize("coverage", ["0.9", None, True])
def test_character_coverage_must_be_a_number(coverage):
    with pytest.raises(TypeError, match=r"character_coverage must be a number in \(0, 1\], got"):
        ByteFallbackBPE.train("ab ab", vocab_size=MIN + 3, character_coverage=coverage)


@pytest.mark.parametrize(
    "ids, got",
    [
        (torch.tensor([True]), r"a 1-d tensor/array of dtype bool"),  # before: "" (True read as <s>)
        (np.array([1.0, 2.0]), r"a 1-d tensor/array of dtype float64"),
        (torch.tensor(5), r"a 0-d tensor/array of dtype int64"),
        (torch.tensor([[5, 6]]), r"a 2-d tensor/array of dtype int64"),
        (b"de", r"bytes b'de'"),  # before: "ab" (bytes 100, 101 read as ids)
        ("de", r"str 'de'"),
        (None, r"NoneType None"),
        (5, r"int 5"),
    ],
)
def test_decode_accepts_only_integer_sequences_and_tensors(tok, ids, got):
    with pytest.raises(TypeError, match=r"decode: expected a sequence of int ids or a 1-d integer tensor/array, got " + got):
        tok.decode(ids)


def test_decode_still_reads_integer_tensors_arrays_and_lists(tok):
    ids = tok.encode("the model")
    text = tok.decode(ids)
    assert tok.decode(torch.tensor(ids)) == tok.decode(np.array(ids, dtype=np.int32)) == tok.decode(tuple(ids)) == text
    with pytest.raises(ValueError, match="id True is not an integer"):
        tok.decode([True])


def test_the_encode_cache_is_bounded_by_size_not_by_count():
    tok = ByteFallbackBPE.train("ab ab ab", vocab_size=MIN + 3)
    long_words = [chr(0x4E00 + i) * 2000 for i in range(40)]
    tok.encode(" ".join(long_words))
    assert sum(map(len, tok._cache)) < 2000  # before: 40 words of 2000 characters kept
    tok._CACHE_CHARS = 100
    tok.encode(" ".join(f"w{i:08d}" for i in range(50)))  # 50 words of 10 characters
    assert sum(map(len, tok._cache)) <= 100  # before: the limit counted 200,000 entries


# ---------------------------------------------------------------------- crafted files


def crafted(tmp_path, pieces_extra, merges, **changes):
    data = {
        "format": "llm-glossary-bpe", "version": 1, "dummy_prefix": "always",
        "pieces": [*SPECIALS, *BYTE_PIECES, "▁", "a", "b", *pieces_extra], "merges": merges,
    }
    data.update(changes)
    path = tmp_path / "tok.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def chain(target: str) -> tuple[list[str], list[list[str]]]:
    """Pieces and left-to-right merges that build ``target`` from its characters."""
    pieces = [c for c in dict.fromkeys(target) if c not in ("▁", "a", "b")]
    merges, left = [], target[0]
    for c in target[1:]:
        merges.append([left, c])
        left += c
        if left not in pieces and left not in SPECIALS and left not in BYTE_PIECES:
            pieces.append(left)
    return pieces, merges


@pytest.mark.parametrize("reserved", ["<s>", "<0x41>", "<unk>"])
def test_a_merge_that_builds_a_special_or_byte_piece_is_refused(tmp_path, reserved):
    """Before: accepted, and then "a <s> b" encoded to the BOS id and decoded to "a  b"."""
    pieces, merges = chain(reserved)
    path = crafted(tmp_path, pieces, merges)
    with pytest.raises(TokenizerFileError, match=f"tok.json: merge {len(merges) - 1} .* builds the reserved piece '{reserved}'"):
        ByteFallbackBPE.load(path)


def test_from_hf_refuses_a_merge_that_builds_a_special(tmp_path):
    tok = ByteFallbackBPE.train("ab ab < s >", vocab_size=MIN + 8)
    data = tok.to_hf_dict()
    data["model"]["vocab"]["<s"] = len(data["model"]["vocab"])
    data["model"]["merges"] += [["<", "s"], ["<s", ">"]]
    (tmp_path / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(TokenizerFileError, match=r"builds the reserved piece '<s>'"):
        ByteFallbackBPE.from_hf(tmp_path / "tokenizer.json")


@pytest.mark.parametrize(
    "change, problem",
    [
        (dict(version=True), r"expected \"version\": 1, got True"),
        (dict(pieces=[*SPECIALS, *BYTE_PIECES, "▁", "a", "b", ""]), r"piece 262 must be a non-empty string, got ''"),
    ],
)
def test_load_refuses_crafted_values(tmp_path, change, problem):
    path = crafted(tmp_path, [], [], **change)
    with pytest.raises(TokenizerFileError, match="tok.json: " + problem):
        ByteFallbackBPE.load(path)


def test_load_refuses_duplicate_keys_and_deep_nesting(tmp_path):
    path = crafted(tmp_path, [], [])
    text = path.read_text()
    path.write_text(text[:-1] + ', "dummy_prefix": "if_missing"}')
    with pytest.raises(TokenizerFileError, match=r"tok.json: not valid JSON \(duplicate key 'dummy_prefix'\)"):
        ByteFallbackBPE.load(path)
    path.write_text("[" * 100_000 + "]" * 100_000)
    for read in (ByteFallbackBPE.load, ByteFallbackBPE.from_hf):
        with pytest.raises(TokenizerFileError, match=r"tok.json: not valid JSON \(nested too deeply\)"):
            read(path)


def test_from_hf_refuses_a_truthy_string_flag_and_an_added_token_on_a_taken_id(tmp_path):
    tok = ByteFallbackBPE.train("ab ab", vocab_size=MIN + 3)
    path = tmp_path / "tokenizer.json"
    data = tok.to_hf_dict()
    data["model"]["byte_fallback"] = "no"
    path.write_text(json.dumps(data))
    with pytest.raises(TokenizerFileError, match=r"expected \"byte_fallback\": true in the BPE model, got 'no'"):
        ByteFallbackBPE.from_hf(path)
    data = tok.to_hf_dict()
    data["added_tokens"].append({"id": 5, "content": "<|eot_id|>", "special": True})
    path.write_text(json.dumps(data))
    with pytest.raises(TokenizerFileError, match=r"added_tokens\[3\] gives id 5 to '<\|eot_id\|>', but the vocabulary gives it to '<0x02>'"):
        ByteFallbackBPE.from_hf(path)


def test_trained_tokenizers_still_load(tmp_path, tok):
    tok.save(tmp_path / "a.json")
    tok.save_hf(tmp_path / "b.json")
    assert ByteFallbackBPE.load(tmp_path / "a.json").merges == tok.merges
    assert ByteFallbackBPE.from_hf(tmp_path / "b.json").encode("the model") == tok.encode("the model")
    assert T.MAX_PIECE_LENGTH == 16
