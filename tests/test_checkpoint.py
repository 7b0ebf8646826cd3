"""llm_glossary.checkpoint: atomic writes, checkpoint folders, safetensors through the library."""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
from pathlib import Path

import pytest
import safetensors.torch as st
import torch

from llm_glossary import checkpoint
from llm_glossary.checkpoint import (
    CheckpointError,
    atomic_file,
    atomic_folder,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    load_safetensors,
    read_safetensors_header,
    save_safetensors,
)
from llm_glossary.model import Llama, LlamaConfig
from llm_glossary.tokenizer import ByteFallbackBPE

TINY = dict(vocab_size=61, dim=16, n_layers=2, n_heads=4, n_kv_heads=2, ffn_hidden=24, max_seq_len=32)


def tiny_model(seed: int, **changes) -> Llama:
    torch.manual_seed(seed)
    return Llama(LlamaConfig(**{**TINY, **changes}))


# The concurrent writers save models of different shapes, so a reader that took config.json
# from one save and the weights from the other would fail with a shape error.
RACERS = {10: dict(vocab_size=61), 11: dict(vocab_size=67, n_layers=1)}


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def leftovers(parent: Path) -> list[str]:
    """Hidden temporary names the writers use (.NAME.tmp-*, .NAME.new-*, .NAME.old-*)."""
    return sorted(str(p.relative_to(parent)) for p in parent.rglob(".*"))


def same_weights(a: Llama, b: Llama) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


# ---------------------------------------------------------------------- atomic files


def test_atomic_writers_round_trip_and_leave_no_temporary_files(tmp_path):
    atomic_write_bytes(tmp_path / "a.bin", b"\x00\x01")
    atomic_write_text(tmp_path / "b.txt", "한국어\n")
    atomic_write_json(tmp_path / "c.json", {"x": [1, 2], "이름": "값"})
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "b.txt").read_bytes() == "한국어\n".encode("utf-8")
    assert json.loads((tmp_path / "c.json").read_text(encoding="utf-8")) == {"x": [1, 2], "이름": "값"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.txt", "c.json"]


def test_atomic_write_json_refuses_nan_and_infinity_without_touching_the_file(tmp_path):
    path = tmp_path / "c.json"
    atomic_write_json(path, {"ok": 1})
    with pytest.raises(ValueError, match="c.json: cannot write .* as standard JSON"):
        atomic_write_json(path, {"rope_theta": float("inf")})
    assert json.loads(path.read_text()) == {"ok": 1}
    assert leftovers(tmp_path) == []


def test_a_write_that_fails_half_way_keeps_the_old_file_bit_identical(tmp_path):
    path = tmp_path / "data.bin"
    atomic_write_bytes(path, b"old content")
    with pytest.raises(OSError, match="No space left"):
        with atomic_file(path) as f:
            f.write(b"new con")  # half of the new file is written ...
            disk_full()  # ... then the disk fills
    assert path.read_bytes() == b"old content"
    assert leftovers(tmp_path) == []


def test_a_full_disk_at_fsync_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "t.txt"
    atomic_write_text(path, "old")
    monkeypatch.setattr(os, "fsync", disk_full)  # delayed ENOSPC surfaces at fsync (NFS, quotas)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_text(path, "new text")
    monkeypatch.undo()
    assert path.read_text() == "old"
    assert leftovers(tmp_path) == []


def test_tokenizer_save_and_save_hf_keep_the_old_file_when_the_disk_fills(tmp_path, monkeypatch):
    old = ByteFallbackBPE.train("aa bb aa bb ab", vocab_size=262 + 3)
    new = ByteFallbackBPE.train("xyz xyz xyz", vocab_size=262 + 4)
    for method in ("save", "save_hf"):
        path = tmp_path / f"{method}.json"
        getattr(old, method)(path)
        before = path.read_bytes()
        with monkeypatch.context() as m:
            m.setattr(os, "fsync", disk_full)
            with pytest.raises(OSError, match="No space left"):
                getattr(new, method)(path)
        assert path.read_bytes() == before
    assert ByteFallbackBPE.load(tmp_path / "save.json").encode("aa bb") == old.encode("aa bb")
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------------- checkpoint folders


def test_a_failed_model_save_leaves_the_previous_checkpoint_loadable_and_bit_identical(tmp_path, monkeypatch):
    folder = tmp_path / "ckpt"
    first = tiny_model(0)
    first.save(folder)
    before = snapshot(folder)
    real_save_file = st.save_file

    def half_then_full(tensors, filename, metadata=None):
        real_save_file(tensors, filename, metadata=metadata)
        with open(filename, "r+b") as f:
            f.truncate(os.path.getsize(filename) // 2)
        disk_full()

    monkeypatch.setattr(st, "save_file", half_then_full)
    with pytest.raises(OSError, match="No space left"):
        tiny_model(1).save(folder)  # config.json is already written when the weights fail
    monkeypatch.undo()
    assert snapshot(folder) == before
    assert same_weights(Llama.load(folder), first)
    assert leftovers(tmp_path) == []


def test_a_dtype_the_file_cannot_hold_fails_before_anything_is_written(tmp_path):
    folder = tiny_model(0).save(tmp_path / "ckpt")
    before = snapshot(folder)
    with pytest.raises(CheckpointError, match=r"tensor 'x' has dtype torch.complex64"):
        save_safetensors({"x": torch.zeros(2, dtype=torch.complex64)}, folder / "model.safetensors")
    assert snapshot(folder) == before
    assert leftovers(tmp_path) == []


def test_model_save_keeps_other_files_in_the_folder(tmp_path):
    folder = tiny_model(0).save(tmp_path / "ckpt")
    (folder / "tokenizer.json").write_text("{}")
    (folder / ".config.json.tmp-x1y2.tmp").write_text("left by a crash")  # not carried over
    tiny_model(1).save(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
    assert same_weights(Llama.load(folder), tiny_model(1))


def test_atomic_folder_replaces_the_whole_folder_or_nothing(tmp_path):
    target = tmp_path / "run"
    with atomic_folder(target) as tmp:
        (tmp / "a").write_text("1")
        (tmp / "b").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_folder(target) as tmp:
            (tmp / "a").write_text("2")
            raise RuntimeError("crash while writing")
    assert snapshot(target) == {"a": b"1", "b": b"1"}
    with atomic_folder(target) as tmp:
        (tmp / "c").write_text("3")
    assert snapshot(target) == {"c": b"3"}  # carry_over=False: exactly the new folder
    assert leftovers(tmp_path) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match="file: exists and is not a folder"):
        with atomic_folder(tmp_path / "file"):
            pass


def test_the_swap_works_without_rename_exchange(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint, "_exchange", lambda a, b: False)
    folder = tiny_model(0).save(tmp_path / "ckpt")
    tiny_model(1).save(folder)
    assert same_weights(Llama.load(folder), tiny_model(1))
    assert leftovers(tmp_path) == []


def _crash_between_the_renames(folder: str) -> None:
    """Child process: save with the two-rename swap and die (os._exit) between the renames."""
    checkpoint._exchange = lambda a, b: False
    real_rename = os.rename

    def rename(src, dst):
        if Path(dst) == Path(folder) and ".new-" in str(src):
            os._exit(3)  # power cut: the old folder is aside, the new one not yet in place
        real_rename(src, dst)

    os.rename = rename
    tiny_model(1).save(folder)
    os._exit(0)


def test_a_crash_between_the_two_renames_still_loads_a_complete_checkpoint(tmp_path):
    folder = tmp_path / "ckpt"
    tiny_model(0).save(folder)
    child = multiprocessing.get_context("fork").Process(target=_crash_between_the_renames, args=(str(folder),))
    child.start()
    child.join(60)
    assert child.exitcode == 3
    assert not folder.exists()
    assert any(".ckpt.old-" in name for name in leftovers(tmp_path))
    assert same_weights(Llama.load(folder), tiny_model(1))  # the complete new folder beside it
    tiny_model(2).save(folder)  # the next save works normally
    assert same_weights(Llama.load(folder), tiny_model(2))


def _save_repeatedly(folder: str, seed: int, barrier, times: int) -> None:
    model = tiny_model(seed, **RACERS[seed])
    barrier.wait()
    for _ in range(times):
        model.save(folder)
        save_safetensors(model.hf_state_dict(), Path(folder).parent / "one.safetensors")


def _load_repeatedly(folder: str, barrier, times: int, queue) -> None:
    a, b = (tiny_model(s, **RACERS[s]) for s in (10, 11))
    barrier.wait()
    seen = set()
    for _ in range(times):
        m = Llama.load(folder)  # a mix of two saves would raise a shape error here
        seen.add("a" if m.config == a.config and same_weights(m, a) else "b" if same_weights(m, b) else "mix")
    queue.put(sorted(seen))


def test_concurrent_saves_to_one_path_leave_one_complete_checkpoint(tmp_path):
    folder = tmp_path / "ckpt"
    tiny_model(10, **RACERS[10]).save(folder)
    ctx = multiprocessing.get_context("fork")
    barrier, queue = ctx.Barrier(3), ctx.Queue()
    procs = [ctx.Process(target=_save_repeatedly, args=(str(folder), seed, barrier, 8)) for seed in (10, 11)]
    procs.append(ctx.Process(target=_load_repeatedly, args=(str(folder), barrier, 16, queue)))
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    seen = queue.get(timeout=5)
    assert seen and "mix" not in seen  # every read saw one complete checkpoint, old or new
    final = Llama.load(folder)
    models = [tiny_model(s, **RACERS[s]) for s in (10, 11)]
    assert any(final.config == m.config and same_weights(final, m) for m in models)
    one = load_safetensors(tmp_path / "one.safetensors")
    assert any(one.keys() == m.hf_state_dict().keys() and all(torch.equal(one[k], v) for k, v in m.hf_state_dict().items()) for m in models)
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------------- safetensors


def test_save_safetensors_writes_what_the_library_reads_and_back(tmp_path):
    tensors = {
        "f32": torch.randn(3, 4),
        "bf16": torch.randn(5).to(torch.bfloat16),
        "i64": torch.arange(6).reshape(2, 3),
        "flag": torch.tensor([True, False]),
        "empty": torch.zeros(0, 3),
        "strided": torch.randn(4, 6)[:, ::2],
    }
    ours = save_safetensors(tensors, tmp_path / "ours.safetensors", metadata={"format": "pt"})
    for name, t in st.load_file(ours).items():
        assert t.dtype == tensors[name].dtype and torch.equal(t, tensors[name]), name
    theirs = tmp_path / "theirs.safetensors"
    st.save_file({k: v.contiguous() for k, v in tensors.items()}, theirs)
    loaded = load_safetensors(theirs)
    assert loaded.keys() == tensors.keys()
    assert all(torch.equal(loaded[k], tensors[k]) for k in tensors)
    header = read_safetensors_header(ours)
    assert header["f32"].shape == (3, 4) and header["f32"].dtype == torch.float32
    assert checkpoint.read_safetensors_metadata(ours) == {"format": "pt"}


def test_model_module_keeps_the_old_names(tmp_path):
    from llm_glossary import model

    assert model.CheckpointError is CheckpointError
    assert model.save_safetensors is save_safetensors and model.load_safetensors is load_safetensors


# ---------------------------------------------------------------------- config.json and load


@pytest.fixture
def no_real_model(monkeypatch):
    """Fail if Llama.load builds a real (allocated) model before the weights were checked."""
    from llm_glossary import model as model_module

    real_init, real_check = Llama.__init__, model_module.check_shapes
    checked = []

    def check(*args, **kwargs):
        real_check(*args, **kwargs)
        checked.append(True)

    def guarded(self, config):
        on_meta = torch.empty(0).device.type == "meta"
        assert on_meta or checked, "Llama.load allocated a model before checking the file"
        real_init(self, config)

    def arm():  # once the test's files exist
        monkeypatch.setattr(Llama, "__init__", guarded)
        monkeypatch.setattr(model_module, "check_shapes", check)

    return arm


def edited(tmp_path, name="ckpt", **changes) -> Path:
    folder = tiny_model(0).save(tmp_path / name)
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(changes)
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("hidden_size", 10**9, r"model\.embed_tokens\.weight has shape \(61, 16\), but the config needs \(61, 1000000000\)"),
        ("vocab_size", 10**9, r"model\.embed_tokens\.weight has shape \(61, 16\), but the config needs \(1000000000, 16\)"),
        ("num_hidden_layers", 10**6, r"model.safetensors: holds layers 0 … 1, but .*config.json says num_hidden_layers=1000000"),
        ("num_hidden_layers", 40, r"holds layers 0 … 1, but .*config.json says num_hidden_layers=40"),
    ],
)
def test_load_checks_every_tensor_against_the_config_before_allocating(tmp_path, no_real_model, field, value, message):
    folder = edited(tmp_path, **{field: value, "head_dim": None})
    no_real_model()
    with pytest.raises(CheckpointError, match=message):
        Llama.load(folder)


@pytest.mark.parametrize("meta_above", [0, 10**9])  # a large model is built on the meta device
def test_load_builds_after_checking_and_loads_in_place(tmp_path, no_real_model, monkeypatch, meta_above):
    from llm_glossary import model as model_module

    monkeypatch.setattr(model_module, "_META_ABOVE", meta_above)
    folder = tiny_model(0).save(tmp_path / "ckpt")
    expected = tiny_model(0)
    Llama(LlamaConfig(**{**TINY, "tie_embeddings": True})).save(tmp_path / "tied")
    no_real_model()
    loaded = Llama.load(folder)
    assert same_weights(loaded, expected)
    assert all(p.device.type == "cpu" for p in loaded.parameters())
    again = Llama.load(tmp_path / "tied")
    assert again.lm_head.weight is again.embed_tokens.weight


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("tie_word_embeddings", "false", r"field 'tie_word_embeddings' must be true or false, got 'false'"),
        ("hidden_size", 16.7, r"field 'hidden_size' must be a positive integer, got 16.7"),
        ("hidden_size", True, r"field 'hidden_size' must be a positive integer, got True"),
        ("num_attention_heads", 0, r"field 'num_attention_heads' must be a positive integer, got 0"),
        ("num_key_value_heads", 0, r"field 'num_key_value_heads' must be a positive integer, got 0"),
        ("rope_parameters", [1], r"field 'rope_parameters' must be an object or null, got \[1\]"),
        ("rms_norm_eps", -1, r"field 'rms_norm_eps' must be a finite number > 0, got -1"),
        ("rope_theta", "1e4", r"field 'rope_theta' must be a finite number > 0, got '1e4'"),
        ("max_position_embeddings", 1.5, r"field 'max_position_embeddings' must be a positive integer"),
        ("attention_bias", "no", r"field 'attention_bias' must be true or false"),
    ],
)
def test_config_json_is_validated_strictly_naming_file_and_field(tmp_path, no_real_model, field, value, message):
    folder = edited(tmp_path, **{field: value})
    if field == "rope_theta":  # the value that counts sits in rope_parameters when present
        cfg = json.loads((folder / "config.json").read_text())
        cfg["rope_parameters"]["rope_theta"] = value
        (folder / "config.json").write_text(json.dumps(cfg))
    no_real_model()
    with pytest.raises(CheckpointError, match="config.json: " + message):
        Llama.load(folder)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"[1, 2]", "the top level must be a JSON object, got list"),
        (b'{"rope_theta": Infinity}', "not valid JSON \\(Infinity is not standard JSON\\)"),
        (b'{"model_type": "llama", "model_type": "gpt2"}', r"not valid JSON \(duplicate key 'model_type'\)"),
        ("{\"model_type\": \"llama\"} \xff".encode("latin-1"), "not UTF-8 text"),
        (b"{", "not valid JSON"),
    ],
)
def test_a_malformed_config_json_is_one_checkpoint_error(tmp_path, content, message):
    folder = tiny_model(0).save(tmp_path / "ckpt")
    (folder / "config.json").write_bytes(content)
    with pytest.raises(CheckpointError, match="config.json: " + message):
        Llama.load(folder)


def test_a_config_json_folder_or_a_missing_one_is_a_checkpoint_error(tmp_path):
    folder = tiny_model(0).save(tmp_path / "ckpt")
    (folder / "config.json").unlink()
    with pytest.raises(CheckpointError, match="config.json: no such file"):
        Llama.load(folder)
    (folder / "config.json").mkdir()
    with pytest.raises(CheckpointError, match="config.json: is a folder, expected a file"):
        Llama.load(folder)
    (tmp_path / "plain").write_text("x")
    with pytest.raises(CheckpointError, match="plain: is a file, expected a checkpoint folder"):
        Llama.load(tmp_path / "plain")


def test_a_config_with_infinity_is_never_written(tmp_path):
    with pytest.raises(ValueError, match=r"rope_theta must be a finite number > 0, got inf"):
        LlamaConfig(**{**TINY, "rope_theta": float("inf")})
    with pytest.raises(ValueError, match="tie_embeddings must be True or False, got 'false'"):
        LlamaConfig(**{**TINY, "tie_embeddings": "false"})


def test_hf_tensor_shapes_match_the_real_model():
    from llm_glossary.model import hf_tensor_shapes

    for tied in (False, True):
        config = LlamaConfig(**{**TINY, "tie_embeddings": tied})
        real = {k: tuple(v.shape) for k, v in Llama(config).hf_state_dict().items()}
        assert hf_tensor_shapes(config) == real


# ---------------------------------------------------------------------- crafted safetensors files

F32_2 = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}


def crafted(path: Path, header: bytes | dict, data: bytes = b"\0" * 8) -> Path:
    """A safetensors file by hand: 8-byte little-endian header length, JSON header, data."""
    head = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(len(head).to_bytes(8, "little") + head + data)
    return path


CRAFTED = {
    # name: (header, data, the library refuses it too, our message)
    "overlap": ({"a": F32_2, "b": F32_2}, b"\0" * 8, True, r"tensor '[ab]' \(bytes 0..8\) overlaps the previous tensor"),
    "trailing bytes": ({"a": F32_2}, b"\0" * 12, True, r"4 bytes after the last tensor"),
    "gap": ({"a": {**F32_2, "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8, True, r"tensor 'a' \(bytes 4..8\) leaves a gap of 4 bytes"),
    "float offsets": ({"a": {**F32_2, "data_offsets": [0.0, 8.0]}}, b"\0" * 8, True, r"tensor 'a': data_offsets must be two integers, got \[0.0, 8.0\]"),
    "string offsets": ({"a": {**F32_2, "data_offsets": ["0", "8"]}}, b"\0" * 8, True, r"tensor 'a': data_offsets must be two integers"),
    "float shape": ({"a": {**F32_2, "shape": [2.5]}}, b"\0" * 8, True, r"tensor 'a': shape must be a list of integers >= 0, got \[2.5\]"),
    "negative shape": ({"a": {**F32_2, "shape": [-2]}}, b"\0" * 8, True, r"tensor 'a': shape must be a list of integers >= 0, got \[-2\]"),
    "shape and bytes disagree": ({"a": {**F32_2, "shape": [3]}}, b"\0" * 8, True, r"tensor 'a': bytes 0..8 do not hold shape \[3\] F32 \(12 bytes\)"),
    "unknown dtype": ({"a": {**F32_2, "dtype": "F31"}}, b"\0" * 8, True, r"tensor 'a': unknown dtype 'F31'"),
    "Infinity offset": (b'{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, Infinity]}}', b"\0" * 8, True, r"header is not valid JSON \(Infinity is not standard JSON\)"),
    "deep nesting": (b'{"__metadata__": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", b"", True, r"header is not valid JSON \(nested too deeply\)"),
    "5000-digit integer": (b'{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, ' + b"9" * 5000 + b"]}}", b"\0" * 8, True, r"header is not valid JSON \(integer with 5000 digits\)"),
    "duplicate key": (b'{"a": ' + json.dumps(F32_2).encode() + b', "a": ' + json.dumps(F32_2).encode() + b"}", b"\0" * 8, False, r"header is not valid JSON \(duplicate key 'a'\)"),
    "header not an object": (b"[1]", b"", True, r"header must be a JSON object, got list"),
    "metadata not strings": ({"__metadata__": {"step": 3}}, b"", True, r"__metadata__ must map strings to strings"),
}


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_a_crafted_safetensors_file_is_one_checkpoint_error_naming_file_and_tensor(tmp_path, case):
    header, data, library_refuses, message = CRAFTED[case]
    path = crafted(tmp_path / "w.safetensors", header, data)
    try:
        st.load_file(path)
        refused = False
    except Exception:
        refused = True
    assert refused == library_refuses  # where the library accepts it, only our header check refuses
    for read in (load_safetensors, read_safetensors_header):
        with pytest.raises(CheckpointError, match=r"w\.safetensors: .*" + message):
            read(path)


def test_a_folder_or_a_short_file_in_place_of_the_weights_is_a_checkpoint_error(tmp_path):
    (tmp_path / "d.safetensors").mkdir()
    with pytest.raises(CheckpointError, match=r"d\.safetensors: is a folder, expected a safetensors file"):
        load_safetensors(tmp_path / "d.safetensors")
    (tmp_path / "s.safetensors").write_bytes(b"\x01\x02")
    with pytest.raises(CheckpointError, match=r"s\.safetensors: too short to be a safetensors file \(2 bytes\)"):
        load_safetensors(tmp_path / "s.safetensors")
    with pytest.raises(CheckpointError, match=r"none\.safetensors: no such file"):
        load_safetensors(tmp_path / "none.safetensors")


def test_llama_load_refuses_overlapping_embedding_and_head(tmp_path):
    """Observed before: lm_head pointing at embed_tokens' bytes loaded, the two then equal."""
    folder = tiny_model(0).save(tmp_path / "ckpt")
    weights = folder / "model.safetensors"
    raw = weights.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    header["lm_head.weight"]["data_offsets"] = header["model.embed_tokens.weight"]["data_offsets"]
    crafted(weights, header, raw[8 + n :])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: tensor '(lm_head|model\.embed_tokens)\.weight' .* overlaps"):
        Llama.load(folder)


def test_llama_load_refuses_tensors_of_a_dtype_the_model_cannot_use(tmp_path):
    model = tiny_model(0)
    folder = model.save(tmp_path / "ckpt")
    save_safetensors({k: v.to(torch.int32) for k, v in model.hf_state_dict().items()}, folder / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"model\.safetensors: tensors of dtype torch.int32; expected one of float32"):
        Llama.load(folder)


@pytest.mark.parametrize("kind", ["llama", "mistral-tied"])
def test_strict_validation_still_reads_a_transformers_save_pretrained_folder(tmp_path, kind):
    transformers = pytest.importorskip("transformers")
    sizes = dict(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=32)
    if kind == "llama":
        hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**sizes)).eval()
    else:
        config = transformers.MistralConfig(**sizes, sliding_window=8, tie_word_embeddings=True)
        hf = transformers.MistralForCausalLM(config).eval()
    hf.save_pretrained(tmp_path / "hf")
    ours = Llama.load(tmp_path / "hf")
    x = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        torch.testing.assert_close(ours(x), hf(x).logits, atol=1e-5, rtol=1e-4)
    assert ours.config.tie_embeddings == (kind != "llama")


def test_tokenizer_save_pretrained_swaps_both_files_in_and_keeps_the_model(tmp_path):
    folder = tiny_model(0).save(tmp_path / "export")
    tok = ByteFallbackBPE.train("aa bb aa bb ab", vocab_size=262 + 3)
    tok.save_pretrained(folder)
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
    assert same_weights(Llama.load(folder), tiny_model(0))
    assert ByteFallbackBPE.from_hf(folder / "tokenizer.json").encode("aa bb") == tok.encode("aa bb")
    assert leftovers(tmp_path) == []
