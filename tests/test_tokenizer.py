"""Byte-fallback BPE: round trips, parity with Hugging Face tokenizers and sentencepiece,
the naive and incremental trainers, files, and errors."""

import io
import json
from collections import Counter

import pytest
import sentencepiece as spm
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from llm_glossary.corpus import corpus_lines
from llm_glossary.tokenizer import (
    BYTE_PIECES,
    SPACE,
    SPECIALS,
    ByteFallbackBPE,
    TokenizerFileError,
    byte_fallback,
    corpus_tokenizer,
    count_words,
    naive_train,
)

VOCAB = 1600
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Characters that tokenizers get wrong: conjoining jamo (가 as ᄀ + ᅡ + ᆨ), an emoji ZWJ
# sequence, a skin-tone modifier, NUL, tab, CR LF, a lone CR, repeated spaces, text that
# reads like a special or a byte piece, a combining accent, a non-BMP character.
TRICKY = [
    "\u1100\u1161\u11a8", "👩\u200d👩\u200d👧", "👍🏽", "\x00", "\t", "\r\n", "\r", "  ", "   ",
    " ", "<s>", "</s>", "<unk>", "<0xED>", "<0x00>", "e\u0301", "𝔸", "\ufeff", "한국어", "token",
]
# Any Unicode scalar value except a literal "▁" (read as a space, see the module docstring).
_chars = st.characters(exclude_categories=("Cs",), exclude_characters=(SPACE,))
texts = st.lists(st.one_of(st.text(_chars, max_size=8), st.sampled_from(TRICKY)), max_size=8).map("".join)


@pytest.fixture(scope="module")
def lines():
    return corpus_lines("train")


@pytest.fixture(scope="module")
def tok(lines):
    return ByteFallbackBPE.train(lines, VOCAB)


@pytest.fixture(scope="module")
def small_tok():
    """Many merges over a tiny alphabet: long chains of merges and many equal pairs."""
    text = "ab aab abab ba bba aaa bbb 가각 한한 👩\u200d👩"
    return ByteFallbackBPE.train([text] * 3, 300, character_coverage=1.0)


@pytest.fixture(scope="module")
def hf(tok, tmp_path_factory):
    path = tmp_path_factory.mktemp("hf") / "tokenizer.json"
    tok.save_hf(path)
    hf = Tokenizer.from_file(str(path))
    hf.encode_special_tokens = True  # read "<s>" in text as plain text, as ours does
    return hf


# ---------------------------------------------------------------- round trip, no <unk>

@SETTINGS
@given(text=texts)
def test_round_trip_arbitrary_unicode(tok, text):
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.unk_id not in ids and tok.bos_id not in ids and tok.eos_id not in ids


EDGE = [
    *TRICKY, "", " leading", "trailing ", "a  b   c", "\r\n\tx\x00 y ",
    # spaces that are not U+0020 stay themselves; a long word of fallback bytes (heap loop)
    "\u00a0x\u3000y\u2028z", "\ufeff\ufeff", "x\U0001d518" * 30, "a\u0300\u0301\u0302" * 20,
]


@pytest.mark.parametrize("text", EDGE)
def test_round_trip_edge_cases(tok, hf, text):
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert ids == hf.encode(text, add_special_tokens=False).ids


def test_round_trip_corpus(tok):
    heldout = corpus_lines("heldout")
    for line in heldout:
        assert tok.decode(tok.encode(line)) == line
    joined = "\n".join(heldout)
    assert tok.decode(tok.encode(joined)) == joined


def test_literal_space_symbol_reads_as_space(tok, hf):
    """The documented exception: "▁" in the input is a space, as in sentencepiece and HF."""
    assert tok.encode("a▁b") == tok.encode("a b") == hf.encode("a▁b", add_special_tokens=False).ids
    assert tok.decode(tok.encode("a▁b")) == "a b"


def test_unknown_characters_become_their_utf8_bytes(tok):
    assert "\U0001d538" not in tok.pieces  # 𝔸 never occurs in the corpus
    pieces = tok.tokenize("\U0001d538")
    expected = [f"<0x{b:02X}>" for b in "\U0001d538".encode("utf-8")]
    assert pieces[-4:] == expected == byte_fallback("\U0001d538")


def test_text_that_looks_like_a_piece_is_plain_text(tok):
    for text in ["<s>", "</s>", "<unk>", "<0xED>", "<s><0x41></s>"]:
        ids = tok.encode(text)
        assert not set(ids) & {tok.unk_id, tok.bos_id, tok.eos_id}
        assert tok.piece_to_id("<0xED>") not in ids and tok.piece_to_id("<0x41>") not in ids
        assert tok.decode(ids) == text


def test_bos_eos_and_vocabulary_layout(tok):
    assert (tok.unk_id, tok.bos_id, tok.eos_id) == (0, 1, 2)
    assert len(tok) == tok.vocab_size == VOCAB
    assert [tok.id_to_piece(i) for i in (3, 4, 258)] == ["<0x00>", "<0x01>", "<0xFF>"]
    ids = tok.encode("hi", bos=True, eos=True)
    assert ids[0] == 1 and ids[-1] == 2 and ids[1:-1] == tok.encode("hi")
    assert tok.decode(ids) == "hi"
    assert tok.encode("") == [] and tok.decode([]) == ""


@SETTINGS
@given(word=st.text(alphabet="ab가각한👩\u200dz", max_size=120).map(lambda w: "▁" + w))
def test_long_word_merge_loop_matches_simple_loop(small_tok, word):
    assert small_tok._encode_long_word(word) == small_tok.encode_word(word)


def test_long_words_match_hugging_face(tok, hf, lines):
    # Text without spaces is one long word: the heap-based loop must give HF's ids too.
    for text in ["".join(lines[:30]).replace(" ", ""), "a" * 3000, "한국어" * 500]:
        assert tok.encode(text) == hf.encode(text, add_special_tokens=False).ids


# ---------------------------------------------------------------- Hugging Face parity

@SETTINGS
@given(text=texts)
def test_ids_match_hugging_face(tok, hf, text):
    assert tok.encode(text) == hf.encode(text, add_special_tokens=False).ids


def test_ids_match_hugging_face_on_corpus_and_specials(tok, hf):
    samples = corpus_lines("heldout") + [*TRICKY, "", "<s> hello </s>", "a<s>b", "x <unk> y"]
    for text in samples:
        assert tok.encode(text) == hf.encode(text, add_special_tokens=False).ids, text


def test_hugging_face_loads_vocab_and_merges(tok, hf, tmp_path):
    assert hf.get_vocab() == {p: i for i, p in enumerate(tok.pieces)}
    assert hf.token_to_id("<s>") == tok.bos_id
    hf_json = json.loads(hf.to_str())
    assert [tuple(m) for m in hf_json["model"]["merges"]] == tok.merges


@SETTINGS
@given(ids=st.lists(st.integers(0, VOCAB - 1), max_size=12))
def test_decode_matches_hugging_face_on_any_ids(tok, hf, ids):
    # Includes invalid byte sequences (each such byte becomes U+FFFD) and specials (skipped).
    assert tok.decode(ids) == hf.decode(ids)


@SETTINGS
@given(ids=st.lists(st.one_of(st.integers(3, 258), st.integers(0, VOCAB - 1)), max_size=16))
def test_decode_byte_heavy_ids_never_raises_and_matches_hugging_face(tok, hf, ids):
    # Mostly byte pieces: truncated, overlong and stray continuation bytes are common here.
    assert tok.decode(ids) == hf.decode(ids)
    assert tok.decode(ids, skip_special=False) == hf.decode(ids, skip_special_tokens=False)


def test_decode_accepts_numpy_and_torch_ids(tok):
    import numpy as np
    import torch

    ids = tok.encode("토큰 ids from a model 😀")
    text = tok.decode(ids)
    assert tok.decode(np.array(ids)) == text  # NumPy ints are not Python ints
    assert tok.decode(torch.tensor(ids)) == text  # iterating gives 0-d tensors
    assert tok.id_to_piece(np.int64(ids[0])) == tok.id_to_piece(ids[0])
    for bad in (1.0, "5", True, [5]):
        with pytest.raises(ValueError, match="is not an integer") as info:
            tok.decode([5, bad])
        assert f"vocab_size {VOCAB}" in str(info.value)


def test_invalid_bytes_decode_to_replacement_character(tok):
    b = [tok.piece_to_id(f"<0x{x:02X}>") for x in (0xED, 0x95)]  # 2 of the 3 bytes of "한"
    assert tok.decode(b) == "\ufffd\ufffd"
    assert tok.decode(b + [tok.piece_to_id("<0x9C>")]) == "한"


# ---------------------------------------------------------------- trainers

@pytest.mark.parametrize("n_lines,vocab_extra", [(40, 150), (120, 60)])
def test_naive_and_incremental_trainers_agree_on_corpus(lines, n_lines, vocab_extra):
    sample = lines[:n_lines]
    _, alphabet = count_words(sample)
    vocab_size = 3 + 256 + len(alphabet) + vocab_extra
    fast = ByteFallbackBPE.train(sample, vocab_size)
    assert fast.merges == naive_train(sample, vocab_size)
    assert len(fast.merges) >= vocab_extra


@settings(max_examples=150, deadline=None)
@given(
    small=st.lists(st.text(alphabet="ab c<s>", max_size=10), min_size=1, max_size=6),
    extra=st.integers(0, 12),
)
def test_naive_and_incremental_agree_with_many_ties(small, extra):
    # A tiny alphabet makes ties, repeated symbols ("aaa") and duplicate results likely.
    _, alphabet = count_words(small)
    vocab_size = 3 + 256 + len(alphabet) + extra
    assert ByteFallbackBPE.train(small, vocab_size).merges == naive_train(small, vocab_size)


def test_tie_break_is_highest_count_then_smallest_pair():
    # "ab" and "cd" occur twice each, "ef" once: the count decides first, then the pair order.
    # ("▁", "a") also occurs twice but "▁" (U+2581) sorts after every ASCII letter.
    vocab_size = 3 + 256 + 7 + 2
    merges = naive_train(["ab cd ab cd ef"], vocab_size)
    assert merges[0] == ("a", "b")  # count 2, and ("a", "b") < ("c", "d")
    assert merges[1] == ("c", "d")
    assert ByteFallbackBPE.train(["ab cd ab cd ef"], vocab_size).merges == merges


def test_character_coverage_leaves_rare_characters_to_bytes():
    text = "a" * 9990 + "b" * 9 + "z"  # with the "▁" in front: 10001 characters
    tok = ByteFallbackBPE.train(text, 400, character_coverage=0.999)
    assert "a" in tok.pieces and "z" not in tok.pieces
    assert tok.tokenize("z") == ["▁", "<0x7A>"]
    assert tok.decode(tok.encode("zab")) == "zab"


def test_alphabet_matches_sentencepiece_character_coverage(lines):
    """Our coverage rule gives the same single characters as sentencepiece's trainer."""
    sample = lines[:200]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sample), model_writer=model, model_type="bpe", vocab_size=1500,
        byte_fallback=True, character_coverage=0.999, normalization_rule_name="identity",
        add_dummy_prefix=True, remove_extra_whitespaces=False, hard_vocab_limit=False,
        minloglevel=2, num_threads=1,
    )
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    sp_chars = {
        sp.id_to_piece(i) for i in range(sp.get_piece_size())
        if len(sp.id_to_piece(i)) == 1 and not (sp.is_byte(i) or sp.is_control(i) or sp.is_unknown(i))
    }
    _, alphabet = count_words(sample, 0.999)
    assert set(alphabet) == sp_chars


# ---------------------------------------------------------------- from_hf

@pytest.fixture(scope="module")
def sentencepiece_llama(lines, tmp_path_factory):
    """A sentencepiece BPE model (byte_fallback) and a Llama-2-style tokenizer.json built from it."""
    from transformers.tokenization_utils_base import generate_merges

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines[:400]), model_writer=model, model_type="bpe", vocab_size=1800,
        byte_fallback=True, character_coverage=0.9995, normalization_rule_name="identity",
        add_dummy_prefix=True, remove_extra_whitespaces=False, unk_id=0, bos_id=1, eos_id=2,
        pad_id=-1, minloglevel=2, num_threads=1,
    )
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    specials = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    merges = generate_merges(vocab, skip_tokens=specials)  # as transformers' LlamaConverter does
    folder = tmp_path_factory.mktemp("llama")
    # 1) the Llama 2 layout: Prepend + Replace normalizer, "a b" string merges
    llama2 = ByteFallbackBPE.to_hf_dict  # reuse the layout, then fill in sentencepiece's pieces
    data = llama2(ByteFallbackBPE(list(vocab), []))
    data["model"]["merges"] = [f"{a} {b}" for a, b in merges]
    (folder / "llama2.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    # 2) the newer layout written by transformers (Metaspace pre-tokenizer, list merges)
    from transformers import LlamaTokenizer

    LlamaTokenizer(vocab=vocab, merges=merges).backend_tokenizer.save(str(folder / "metaspace.json"))
    return sp, folder


@pytest.mark.parametrize("name", ["llama2.json", "metaspace.json"])
def test_from_hf_reproduces_hugging_face_ids(sentencepiece_llama, name):
    sp, folder = sentencepiece_llama
    path = folder / name
    ours = ByteFallbackBPE.from_hf(path)
    hf = Tokenizer.from_file(str(path))
    hf.encode_special_tokens = True
    texts = corpus_lines("heldout") + [*TRICKY, "<s> x </s>", "  two  spaces  "]
    agree_sp = 0
    for text in texts:
        ids = ours.encode(text)
        assert ids == hf.encode(text, add_special_tokens=False).ids, text
        assert ours.decode(ids) == hf.decode(ids)
        if name == "llama2.json" or not text.startswith(" "):
            assert ours.decode(ids) == text
        agree_sp += ids == sp.encode(text)
    # sentencepiece applies merges by piece score, which gives the same ids almost always
    assert agree_sp >= 0.9 * len(texts)
    assert ours.dummy_prefix == ("always" if name == "llama2.json" else "if_missing")
    # and our own writers reproduce the layout they were read from
    again = folder / f"again-{name}"
    ours.save_hf(again)
    assert ByteFallbackBPE.from_hf(again).encode(" x  y") == hf.encode(" x  y", add_special_tokens=False).ids


def test_repeated_merge_takes_its_last_rank_as_hugging_face(tmp_path):
    # ("b", "c") is listed at rank 0 and again at rank 3; HF keeps the last rank, so in "abc"
    # ("a", "b") (rank 1) is applied first and "abc" becomes one piece.
    pieces = [*SPECIALS, *BYTE_PIECES, SPACE, "a", "b", "c", "ab", "bc", "abc"]
    ours = ByteFallbackBPE(pieces, [("b", "c"), ("a", "b"), ("ab", "c"), ("b", "c")])
    path = tmp_path / "tokenizer.json"
    ours.save_hf(path)
    hf = Tokenizer.from_file(str(path))
    for text in ["abc", "abcbc", "bc abc", "aabcc"]:
        assert ours.encode(text) == hf.encode(text, add_special_tokens=False).ids, text


def _hf_file_problems():
    """(name, change to a valid tokenizer.json dict, expected words in the error)."""
    def vocab(key, value):
        return lambda d: d["model"]["vocab"].__setitem__(key, value)

    return [
        ("string id", vocab("a", "5"), "must be an id >= 0"),
        ("negative id", vocab("a", -1), "must be an id >= 0"),
        ("shared id", vocab("zz", 5), "id 5 is given to both"),
        ("gap", lambda d: d["model"]["vocab"].pop("<0x41>"), "id 68 has no piece"),
        ("added token without id", lambda d: d["added_tokens"].append({"content": "q"}), "added_tokens"),
        ("three-part merge", lambda d: d["model"]["merges"].append(["a", "b", "c"]), "merge 1 must be"),
        ("merge of ints", lambda d: d["model"]["merges"].append([1, 2]), "merge 1 must be"),
        ("merges not a list", lambda d: d["model"].__setitem__("merges", "a b"), "must be a list"),
        ("unknown piece", lambda d: d["model"]["merges"].append(["q", "z"]), "not in the vocabulary"),
        ("byte-level", lambda d: d["model"].__setitem__("byte_fallback", False), "byte_fallback"),
        ("word piece", lambda d: d["model"].__setitem__("type", "WordPiece"), "model type 'BPE'"),
        ("suffix", lambda d: d["model"].__setitem__("end_of_word_suffix", "</w>"), "end_of_word_suffix"),
        ("ignore merges", lambda d: d["model"].__setitem__("ignore_merges", True), "ignore_merges"),
        ("malformed normalizer", lambda d: d["normalizer"].__setitem__("normalizers", 5), "whitespace"),
        ("split metaspace", lambda d: d.update(normalizer=None, pre_tokenizer={
            "type": "Metaspace", "replacement": SPACE, "prepend_scheme": "first", "split": True}),
         "whitespace"),
    ]


@pytest.mark.parametrize(
    "name,change,problem", _hf_file_problems(), ids=lambda x: x if isinstance(x, str) else ""
)
def test_from_hf_wrong_file_names_file_and_problem(tmp_path, name, change, problem):
    data = ByteFallbackBPE([*SPECIALS, *BYTE_PIECES, SPACE, "a", "b", "ab"], [("a", "b")]).to_hf_dict()
    change(data)
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(TokenizerFileError, match=problem) as info:
        ByteFallbackBPE.from_hf(path)
    assert str(info.value).startswith(f"{path}: ")


def test_unreadable_path_names_file(tmp_path):
    for read in (ByteFallbackBPE.load, ByteFallbackBPE.from_hf):
        with pytest.raises(TokenizerFileError, match="cannot read") as info:
            read(tmp_path)  # a folder, not a file
        assert str(tmp_path) in str(info.value)


# ---------------------------------------------------------------- files

def test_save_load_identity_with_awkward_pieces(tmp_path):
    # Quotes, backslashes, brackets, commas, newlines and U+2028 as pieces and merges: the
    # one-merge-per-line JSON layout must still be valid JSON that reads back the same.
    text = 'a"b\\c [x, y] "q", \n\t \u2028 \\" ]\n[ ' * 5
    tok = ByteFallbackBPE(*_trained(text), dummy_prefix="if_missing")
    path = tmp_path / "awkward.json"
    tok.save(path)
    back = ByteFallbackBPE.load(path)
    assert (back.pieces, back.merges, back.dummy_prefix) == (tok.pieces, tok.merges, "if_missing")
    assert any('"' in a + b or "\\" in a + b for a, b in tok.merges)
    assert back.encode(" " + text) == tok.encode(" " + text)


def _trained(text):
    t = ByteFallbackBPE.train([text], 300, character_coverage=1.0)
    return t.pieces, t.merges


def test_save_load_identity(tok, tmp_path):
    path = tmp_path / "tok.json"
    tok.save(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["format"] == "llm-glossary-bpe" and data["pieces"][:3] == ["<unk>", "<s>", "</s>"]
    back = ByteFallbackBPE.load(path)
    assert back.pieces == tok.pieces and back.merges == tok.merges
    text = "\n".join(corpus_lines("heldout")[:20]) + " 👩\u200d👩 <s>"
    assert back.encode(text) == tok.encode(text)


@pytest.mark.parametrize(
    "content,problem",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"format": "other", "version": 1, "pieces": [], "merges": []}', "format"),
        ('{"format": "llm-glossary-bpe", "version": 99, "pieces": [], "merges": []}', "version"),
        ('{"format": "llm-glossary-bpe", "version": 1, "merges": []}', "missing key 'pieces'"),
        ('{"format": "llm-glossary-bpe", "version": 1, "pieces": ["a"], "merges": []}', "missing"),
        ('{"format": "llm-glossary-bpe", "version": 1, "pieces": "abc", "merges": []}', "list of strings"),
    ],
)
def test_load_corrupt_file_names_file_and_problem(tmp_path, content, problem):
    path = tmp_path / "broken.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(TokenizerFileError, match=problem) as info:
        ByteFallbackBPE.load(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_load_merge_with_unknown_piece(tok, tmp_path):
    data = tok.to_dict()
    data["merges"].append(["qq", "zz"])
    path = tmp_path / "bad_merge.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(TokenizerFileError, match="not in the vocabulary") as info:
        ByteFallbackBPE.load(path)
    assert str(path) in str(info.value)


def test_load_and_from_hf_reject_each_others_format(tok, tmp_path):
    ours, theirs = tmp_path / "ours.json", tmp_path / "tokenizer.json"
    tok.save(ours)
    tok.save_hf(theirs)
    with pytest.raises(TokenizerFileError, match="tokenizer.json") as info:
        ByteFallbackBPE.from_hf(ours)
    assert str(ours) in str(info.value)
    with pytest.raises(TokenizerFileError, match="format") as info:
        ByteFallbackBPE.load(theirs)
    assert str(theirs) in str(info.value)
    with pytest.raises(TokenizerFileError, match="file not found"):
        ByteFallbackBPE.load(tmp_path / "missing.json")


# ---------------------------------------------------------------- errors

def test_vocab_size_too_small_states_minimum():
    texts = ["hello world", "한국어 토큰"]
    chars = {SPACE} | {c for t in texts for c in t.replace(" ", SPACE)}
    minimum = 3 + 256 + len(chars)
    with pytest.raises(ValueError, match=f"minimum is {minimum}"):
        ByteFallbackBPE.train(texts, minimum - 1, character_coverage=1.0)
    assert len(ByteFallbackBPE.train(texts, minimum, character_coverage=1.0)) == minimum


def test_lone_surrogate_names_position(tok):
    with pytest.raises(ValueError, match="index 1"):
        tok.encode("a\ud800b")
    with pytest.raises(ValueError, match="index 3"):
        ByteFallbackBPE.train(["ok", "abc\udfff"], 400)


def test_decode_out_of_range_names_id_and_vocab_size(tok):
    with pytest.raises(ValueError, match=f"{VOCAB}.*vocab_size {VOCAB}") as info:
        tok.decode([5, VOCAB])
    assert f"id {VOCAB}" in str(info.value)
    with pytest.raises(ValueError, match="id -1"):
        tok.decode([-1])


def test_bad_character_coverage():
    with pytest.raises(ValueError, match="character_coverage"):
        ByteFallbackBPE.train("abc", 300, character_coverage=0)


def test_word_counts_are_counted_once():
    words, alphabet = count_words(["to be or not to be"], 1.0)
    assert words == Counter({"▁to": 2, "▁be": 2, "▁or": 1, "▁not": 1})
    assert alphabet[0] == SPACE  # the most frequent character


# ---------------------------------------------------------------- the pages' shared tokenizer

def test_corpus_tokenizer_is_trained_once_on_the_train_split():
    from llm_glossary.corpus import load_corpus

    first = corpus_tokenizer()
    assert corpus_tokenizer(4000) is first  # kept: the second page reuses the first page's run
    fresh = ByteFallbackBPE.train(load_corpus("train"), 4000)
    assert first.pieces == fresh.pieces and first.merges == fresh.merges
    assert first.vocab_size == 4000
    heldout = load_corpus("heldout")
    assert first.decode(first.encode(heldout)) == heldout


def test_corpus_tokenizer_matches_hugging_face(tmp_path):
    from llm_glossary.corpus import load_corpus

    tok = corpus_tokenizer()
    path = tmp_path / "tokenizer.json"
    tok.save_hf(path)
    hf = Tokenizer.from_file(str(path))
    text = load_corpus("heldout") + " 東京明期月良 ᄆᆞᅀᆞᆷ 햏 😀 𝔘"
    assert tok.encode(text) == hf.encode(text, add_special_tokens=False).ids


def test_corpus_tokenizer_too_small_vocab_states_minimum():
    with pytest.raises(ValueError, match="vocab_size 300 is too small: the minimum is"):
        corpus_tokenizer(300)


def test_changing_the_returned_merges_does_not_change_the_tokenizer(small_tok):
    before = small_tok.encode("ab aab abab")
    merges = small_tok.merges
    merges.clear()
    assert small_tok.merges and small_tok.encode("ab aab abab") == before
