"""One decoder block against Hugging Face's LlamaDecoderLayer, and the block's own claims.

The transformer-block page may not import transformers, so the parity with the reference
layer is checked here: same weights (copied by name), same input, same output.
"""

import pytest
import torch

from llm_glossary.model import Block, FeedForward, Llama, LlamaConfig, count_parameters, llama_ffn_hidden
from llm_glossary.model import config_to_transformers

transformers = pytest.importorskip("transformers")
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding  # noqa: E402


def _pair(config: LlamaConfig, seed: int = 0):
    torch.manual_seed(seed)
    ours = Block(config).double().eval()
    hf_config = config_to_transformers(config)
    ref = LlamaDecoderLayer(hf_config, layer_idx=0).double().eval()
    with torch.no_grad():
        for p in ours.parameters():
            p.normal_(0, 0.2)  # RMSNorm gains away from 1, so a missing gain would show
    ref.load_state_dict(ours.state_dict(), strict=True)  # names follow Hugging Face
    return ours, ref, hf_config


@pytest.mark.parametrize("n_kv_heads", [4, 2, 1])
def test_block_matches_llama_decoder_layer(n_kv_heads):
    config = LlamaConfig(vocab_size=50, dim=32, n_layers=1, n_heads=4, n_kv_heads=n_kv_heads, ffn_hidden=48,
                         max_seq_len=16, rope_theta=10000.0)
    ours, ref, hf_config = _pair(config)
    x = torch.randn(2, 7, 32, dtype=torch.float64)
    positions = torch.arange(7)
    cos, sin = LlamaRotaryEmbedding(hf_config)(x, positions[None])
    with torch.no_grad():
        want = ref(x, attention_mask=None, position_ids=positions[None], position_embeddings=(cos, sin))
        want = want[0] if isinstance(want, tuple) else want
        got = ours(x, positions=positions)
    assert got.shape == want.shape == (2, 7, 32)
    # float64 weights; transformers computes the RoPE angles in float32, hence 1e-6, not 1e-12
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    assert (got - x).abs().max() > 0.1  # the layer did change its input


def test_block_is_causal_and_residual():
    config = LlamaConfig(vocab_size=50, dim=16, n_layers=1, n_heads=2, ffn_hidden=32, max_seq_len=8)
    torch.manual_seed(0)
    block = Block(config).eval()
    x = torch.randn(1, 6, 16)
    y = block(x, positions=torch.arange(6))
    x2 = x.clone()
    x2[0, 4:] += 1.0  # change the future only
    y2 = block(x2, positions=torch.arange(6))
    torch.testing.assert_close(y[0, :4], y2[0, :4])
    assert not torch.allclose(y[0, 4:], y2[0, 4:])
    with torch.no_grad():  # both sub-layers write nothing: the block passes its input through
        block.self_attn.o_proj.weight.zero_()
        block.mlp.down_proj.weight.zero_()
    torch.testing.assert_close(block(x, positions=torch.arange(6)), x, rtol=0, atol=0)


def test_swiglu_width_keeps_the_parameters_of_a_4c_mlp():
    for dim in (768, 3072, 4096):
        hidden = llama_ffn_hidden(dim, multiple_of=1)  # no rounding: int(8 * dim / 3)
        assert hidden == int(2 * 4 * dim / 3)
        swiglu = sum(p.numel() for p in FeedForward(dim, hidden).parameters()) if dim <= 768 else 3 * dim * hidden
        assert abs(swiglu - 2 * dim * 4 * dim) <= 3 * dim  # within one row of rounding
    assert llama_ffn_hidden(4096, 1.3, 1024) == 14336  # Llama 3 8B config.json intermediate_size


def test_tied_embeddings_share_one_matrix_and_count_once():
    config = LlamaConfig(vocab_size=100, dim=16, n_layers=1, n_heads=2, ffn_hidden=32, max_seq_len=8,
                         tie_embeddings=True)
    model = Llama(config)
    assert model.lm_head.weight.data_ptr() == model.embed_tokens.weight.data_ptr()
    assert count_parameters(config) == sum(p.numel() for p in model.parameters())
    untied = LlamaConfig(**{**config.to_dict(), "tie_embeddings": False})
    assert count_parameters(untied) - count_parameters(config) == 100 * 16
