"""The Llama model against Hugging Face transformers: logits, generation, parameter counts, files."""

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from llm_glossary.model import (  # noqa: E402
    PRESETS,
    CheckpointError,
    Llama,
    LlamaConfig,
    config_to_transformers,
    count_parameters,
    load_safetensors,
    save_safetensors,
)

TINY = {
    "gqa": dict(vocab_size=97, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_hidden=48, max_seq_len=64),
    "mha": dict(vocab_size=61, dim=24, n_layers=3, n_heads=3, n_kv_heads=3, ffn_hidden=40, max_seq_len=64, rope_theta=10000.0),
    "mqa-tied": dict(vocab_size=50, dim=32, n_layers=2, n_heads=4, n_kv_heads=1, ffn_hidden=64, max_seq_len=64, tie_embeddings=True),
    "mistral": dict(vocab_size=80, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_hidden=48, max_seq_len=64, rope_theta=10000.0, sliding_window=5),
}


def _hf_model(name, seed=0):
    torch.manual_seed(seed)
    ours = Llama(LlamaConfig(**TINY[name]))
    for p in ours.parameters():  # random norms too, so a wrong norm weight shows up
        torch.nn.init.normal_(p, std=0.3)
    return ours.to_transformers()


@pytest.mark.parametrize("name", sorted(TINY))
def test_logits_match_transformers(name):
    hf = _hf_model(name)
    model = Llama.from_transformers(hf).eval()
    idx = torch.randint(0, model.config.vocab_size, (2, 19), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf(idx).logits
        for impl in ("reference", "fast"):
            torch.testing.assert_close(model(idx, impl=impl), expected, atol=1e-4, rtol=1e-4)


def test_mistral_window_really_limits_attention():
    hf = _hf_model("mistral")
    model = Llama.from_transformers(hf).eval()
    assert isinstance(hf, transformers.MistralForCausalLM) and hf.config.sliding_window == 5
    idx = torch.randint(0, 80, (1, 20), generator=torch.Generator().manual_seed(2))
    changed = idx.clone()
    changed[0, 0] = (idx[0, 0] + 1) % 80
    with torch.no_grad():
        a, b = model(idx), model(changed)
    # token 0 reaches at most (W - 1) * layers = 8 positions further; position 19 cannot see it
    assert torch.allclose(a[0, 19], b[0, 19])
    assert not torch.allclose(a[0, 5], b[0, 5])


@pytest.mark.parametrize("name", ["gqa", "mistral"])
def test_greedy_generation_matches_transformers(name):
    hf = _hf_model(name, seed=3)
    model = Llama.from_transformers(hf).eval()
    prompt = torch.randint(0, model.config.vocab_size, (2, 7), generator=torch.Generator().manual_seed(4))
    expected = hf.generate(prompt, max_new_tokens=20, do_sample=False, min_new_tokens=20, pad_token_id=0, eos_token_id=None)
    assert torch.equal(model.generate(prompt, 20), expected)


@pytest.mark.parametrize("name", ["gqa", "mistral"])
def test_cache_equals_recomputation(name):
    torch.manual_seed(5)
    model = Llama(LlamaConfig(**TINY[name])).eval()
    prompt = torch.randint(0, model.config.vocab_size, (3, 4))
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    with_cache = model.generate(prompt, 30, temperature=1.0, top_k=20, generator=g1)
    without = model.generate(prompt, 30, temperature=1.0, top_k=20, generator=g2, use_cache=False)
    assert torch.equal(with_cache, without)
    # the logits of every step agree too
    caches = model.new_caches(3, 34)
    with torch.no_grad():
        steps = [model(with_cache[:, :4], caches=caches)] + [model(with_cache[:, t : t + 1], caches=caches) for t in range(4, 34)]
        torch.testing.assert_close(torch.cat(steps, 1), model(with_cache), atol=1e-5, rtol=1e-4)


def test_generate_stops_and_pads_finished_rows():
    torch.manual_seed(0)
    model = Llama(LlamaConfig(**TINY["gqa"])).eval()
    prompt = torch.randint(0, 97, (2, 3))
    free = model.generate(prompt, 12)
    stop = int(free[0, 5])  # the third generated token of row 0
    out = model.generate(prompt, 12, stop_tokens=[stop])
    row0 = out[0, 3:].tolist()
    first = row0.index(stop)
    assert out[0, : 3 + first + 1].tolist() == free[0, : 3 + first + 1].tolist()
    assert all(t == stop for t in row0[first:])
    assert out.shape[1] <= free.shape[1]


def test_sampling_respects_top_k_and_top_p():
    from llm_glossary.model import _pick

    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0, -1.0]]).repeat(500, 1)
    g = torch.Generator().manual_seed(0)
    assert set(_pick(logits, 1.0, 2, None, g).tolist()) <= {0, 1}
    probs = torch.softmax(logits[0], -1)  # 0.636, 0.234, 0.086, ...: top_p 0.8 keeps two tokens
    assert probs[0] < 0.8 < probs[0] + probs[1]
    assert set(_pick(logits, 1.0, None, 0.8, g).tolist()) == {0, 1}
    assert set(_pick(logits, 1.0, None, 0.5, g).tolist()) == {0}
    assert _pick(logits[:1], 0.0, None, None, g).tolist() == [0]


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_parameter_counts_match_transformers_on_meta(name):
    config = LlamaConfig.from_preset(name)
    hf_config = config_to_transformers(config)
    cls = transformers.MistralForCausalLM if config.sliding_window else transformers.LlamaForCausalLM
    with torch.device("meta"):
        hf = cls(hf_config)
    assert count_parameters(config) == sum(p.numel() for p in hf.parameters())


def test_known_parameter_counts():
    assert count_parameters(LlamaConfig.from_preset("llama3-8b")) == 8_030_261_248
    c = LlamaConfig.from_preset("llama3-8b")
    assert (c.ffn_hidden, c.head_dim, c.n_kv_heads) == (14336, 128, 8)
    tiny = LlamaConfig(**TINY["mqa-tied"])
    assert count_parameters(tiny) == sum(p.numel() for p in Llama(tiny).parameters())


def test_save_load_round_trip_and_transformers_reads_the_folder(tmp_path):
    torch.manual_seed(0)
    model = Llama(LlamaConfig(**TINY["mistral"])).eval()
    folder = model.save(tmp_path / "ckpt")
    loaded = Llama.load(folder)
    assert loaded.config == model.config
    for (n1, a), (n2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert n1 == n2 and torch.equal(a, b)
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    idx = torch.randint(0, 80, (1, 12))
    with torch.no_grad():
        torch.testing.assert_close(model(idx), hf(idx).logits, atol=1e-4, rtol=1e-4)


def test_round_trip_through_transformers_bf16(tmp_path):
    torch.manual_seed(1)
    model = Llama(LlamaConfig(**TINY["mqa-tied"])).to(torch.bfloat16)
    back = Llama.from_transformers(model.to_transformers())
    assert back.lm_head.weight is back.embed_tokens.weight
    for (n, a), b in zip(model.state_dict().items(), back.state_dict().values()):
        assert a.dtype == torch.bfloat16 and torch.equal(a, b), n
    model.save(tmp_path / "m")
    again = Llama.load(tmp_path / "m")
    assert again.lm_head.weight.dtype == torch.bfloat16
    assert torch.equal(again.embed_tokens.weight, model.embed_tokens.weight)


def test_own_safetensors_matches_the_safetensors_library(tmp_path):
    st = pytest.importorskip("safetensors.torch")
    tensors = {
        "a": torch.randn(3, 4),
        "b": torch.randn(2, 5).to(torch.bfloat16),
        "c": torch.arange(7, dtype=torch.int64),
        "d": torch.randn(0, 3),
        "e": torch.tensor(2.5, dtype=torch.float16),
    }
    ours = tmp_path / "ours.safetensors"
    save_safetensors(tensors, ours)
    for name, t in st.load_file(ours).items():
        assert t.dtype == tensors[name].dtype and torch.equal(t, tensors[name]), name
    theirs = tmp_path / "theirs.safetensors"
    st.save_file(tensors, theirs)
    for name, t in load_safetensors(theirs).items():
        assert t.dtype == tensors[name].dtype and torch.equal(t, tensors[name]), name


def test_checkpoint_errors_name_the_file_and_tensor(tmp_path):
    model = Llama(LlamaConfig(**TINY["gqa"]))
    folder = model.save(tmp_path / "ok")
    # shapes that do not fit: change vocab_size in config.json
    cfg = json.loads((folder / "config.json").read_text())
    cfg["vocab_size"] = 98
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"model\.embed_tokens\.weight has shape \(97, 32\), but the config needs \(98, 32\)"):
        Llama.load(folder)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(CheckpointError, match="bad.safetensors: header is not valid JSON"):
        load_safetensors(bad)
    bad.write_bytes(b"PK\x03\x04 pickled zip")
    with pytest.raises(CheckpointError, match="bad.safetensors: header size"):
        load_safetensors(bad)
    with pytest.raises(CheckpointError, match="no such file"):
        Llama.load(tmp_path / "nowhere")
    (tmp_path / "gpt" / "config.json").parent.mkdir()
    (tmp_path / "gpt" / "config.json").write_text('{"model_type": "gpt2"}')
    with pytest.raises(CheckpointError, match="model_type must be 'llama' or 'mistral', got 'gpt2'"):
        Llama.load(tmp_path / "gpt")


def test_failed_save_keeps_the_previous_checkpoint(tmp_path):
    model = Llama(LlamaConfig(**TINY["gqa"]))
    path = tmp_path / "w.safetensors"
    save_safetensors(model.hf_state_dict(), path)
    before = path.read_bytes()
    with pytest.raises(ValueError, match="dtype torch.complex64"):
        save_safetensors({"x": torch.zeros(2, dtype=torch.complex64)}, path)
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(dim=30, n_heads=4), r"dim=30 must be divisible by n_heads=4"),
        (dict(dim=48, n_heads=6, n_kv_heads=4), r"n_heads=6 must be a multiple of n_kv_heads=4"),
        (dict(vocab_size=0), r"vocab_size must be a positive int, got 0"),
        (dict(sliding_window=0), r"sliding_window must be a positive int, got 0"),
    ],
)
def test_config_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LlamaConfig(**{**TINY["gqa"], **kwargs})


def test_input_errors():
    model = Llama(LlamaConfig(**TINY["gqa"]))
    with pytest.raises(ValueError, match="longer than max_seq_len=64"):
        model(torch.zeros(1, 65, dtype=torch.long))
    with pytest.raises(ValueError, match=r"prompt of 60 tokens \+ max_new_tokens=10 exceeds max_seq_len=64"):
        model.generate(torch.zeros(1, 60, dtype=torch.long), 10)
    with pytest.raises(ValueError, match=r"token id 97 is outside the vocabulary 0 \.\. 96"):
        model(torch.tensor([[1, 97]]))
    with pytest.raises(ValueError, match=r"shape \(B, T\) and dtype int64, got shape \(3,\)"):
        model(torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="unknown preset 'llama4'"):
        LlamaConfig.from_preset("llama4")
    with pytest.raises(ValueError, match="top_p must be in"):
        model.generate(torch.zeros(1, 2, dtype=torch.long), 2, temperature=1.0, top_p=1.5)


def test_last_only_gives_the_last_row_of_the_logits():
    torch.manual_seed(0)
    model = Llama(LlamaConfig(**TINY["gqa"])).eval()
    idx = torch.randint(0, 97, (2, 9))
    with torch.no_grad():
        full, last = model(idx), model(idx, last_only=True)
    assert last.shape == (2, 1, 97)
    torch.testing.assert_close(last, full[:, -1:], atol=1e-6, rtol=1e-5)


def test_logits_at_gives_the_rows_of_the_full_logits_at_the_mask():
    torch.manual_seed(0)
    model = Llama(LlamaConfig(**TINY["gqa"])).eval()
    idx = torch.randint(0, 97, (3, 11), generator=torch.Generator().manual_seed(4))
    mask = torch.rand(3, 11, generator=torch.Generator().manual_seed(5)) < 0.4
    with torch.no_grad():
        full, some = model(idx), model(idx, logits_at=mask)
    assert some.shape == (int(mask.sum()), 97)
    torch.testing.assert_close(some, full[mask], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"logits_at must be a bool mask of the ids' shape \(3, 11\), got shape \(3, 10\)"):
        model(idx, logits_at=mask[:, :10])
    with pytest.raises(ValueError, match=r"logits_at must be a bool mask .* got shape \(3, 11\) dtype torch.int64"):
        model(idx, logits_at=mask.long())
    with pytest.raises(ValueError, match="pass either last_only or logits_at, not both"):
        model(idx, logits_at=mask, last_only=True)


def _left_padded(prompts, pad=0):
    T = max(map(len, prompts))
    idx = torch.full((len(prompts), T), pad, dtype=torch.long)
    mask = torch.zeros(len(prompts), T, dtype=torch.bool)
    for j, p in enumerate(prompts):
        idx[j, T - len(p):] = torch.tensor(p)
        mask[j, T - len(p):] = True
    return idx, mask


def test_a_left_padded_row_gets_the_logits_it_gets_alone():
    torch.manual_seed(0)
    model = Llama(LlamaConfig(**TINY["gqa"])).eval()
    g = torch.Generator().manual_seed(3)
    prompts = [torch.randint(1, 97, (n,), generator=g).tolist() for n in (7, 3, 5)]
    idx, mask = _left_padded(prompts, pad=0)
    with torch.no_grad():
        batched = model(idx, attention_mask=mask)
        unmasked = model(idx)  # what padding without the mask would do
        for j, p in enumerate(prompts):
            alone = model(torch.tensor([p]))[0]
            torch.testing.assert_close(batched[j, -len(p):], alone, atol=1e-5, rtol=1e-4)
        assert not torch.allclose(unmasked[1, -3:], model(torch.tensor([prompts[1]]))[0], atol=1e-3)


@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize("name", ["gqa", "mistral"])
def test_generate_with_padded_prompts_equals_one_prompt_at_a_time(name, use_cache):
    """Left-padded prompts decode as each would alone; for "mistral" the rolling cache
    (W = 5 slots, shorter than the prompts) returns only the last keys and the padding mask
    follows it."""
    from llm_glossary.attention import RollingKVCache

    torch.manual_seed(1)
    model = Llama(LlamaConfig(**TINY[name])).eval()
    for p in model.parameters():  # larger weights: replies that differ from prompt to prompt
        torch.nn.init.normal_(p, std=0.3)
    assert isinstance(model.new_caches(1, 20)[0], RollingKVCache) == (name == "mistral")
    g = torch.Generator().manual_seed(6)
    V = model.config.vocab_size
    prompts = [torch.randint(1, V, (n,), generator=g).tolist() for n in (2, 9, 5, 9)]
    idx, mask = _left_padded(prompts, pad=5)
    out = model.generate(idx, 15, attention_mask=mask, use_cache=use_cache)[:, idx.shape[1]:]
    alone = [model.generate(torch.tensor([p]), 15)[0, len(p):] for p in prompts]
    assert [r.tolist() for r in out] == [r.tolist() for r in alone]
    assert len({tuple(r.tolist()) for r in alone}) > 1  # the check is not trivially true


def test_attention_mask_errors():
    model = Llama(LlamaConfig(**TINY["gqa"]))
    idx = torch.ones(2, 4, dtype=torch.long)
    with pytest.raises(ValueError, match=r"attention_mask must be a bool tensor of shape \(B, S\) = \(2, 4\).*got shape \(2, 3\)"):
        model(idx, attention_mask=torch.ones(2, 3, dtype=torch.bool))
    right_padded = torch.tensor([[True] * 4, [True, True, False, False]])
    with pytest.raises(ValueError, match=r"padded on the left .* rows \[1\] end in padding"):
        model.generate(idx, 3, attention_mask=right_padded)
    with pytest.raises(ValueError, match=r"attention_mask is on meta, the token ids on cpu"):
        model(idx, attention_mask=torch.ones(2, 4, dtype=torch.bool, device="meta"))
