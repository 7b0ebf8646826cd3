"""Claims of the sliding-window and positional-encoding pages, checked against closed forms."""

import json
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_glossary.attention import block_local_mask, sliding_window_mask


def reach(mask: torch.Tensor, layers: int) -> torch.Tensor:
    """Boolean product: can position j's input reach position i's output after `layers` layers."""
    r = torch.eye(mask.shape[0], dtype=torch.bool)
    for _ in range(layers):
        r = (mask.int() @ r.int()) > 0
    return r


@settings(max_examples=40, deadline=None)
@given(T=st.integers(1, 40), W=st.integers(1, 12), L=st.integers(1, 6))
def test_sliding_window_reach_grows_by_w_minus_1_per_layer(T, W, L):
    r = reach(sliding_window_mask(T, W), L)
    for i in range(T):
        visible = r[i].nonzero().flatten().tolist()
        assert visible == list(range(max(0, i - L * (W - 1)), i + 1))


@settings(max_examples=40, deadline=None)
@given(T=st.integers(1, 40), B=st.integers(1, 12), L=st.integers(1, 6))
def test_block_local_reach_never_crosses_a_block(T, B, L):
    r = reach(block_local_mask(T, B), L)
    for i in range(T):
        visible = r[i].nonzero().flatten().tolist()
        assert visible == list(range(i // B * B, i + 1))


def test_mistral_reach_figures():
    from llm_glossary.model import LlamaConfig

    cfg = LlamaConfig.from_preset("mistral-7b")
    # Mistral 7B paper, section 2: W = 4096, 32 layers, "approximately 131K tokens".
    assert cfg.sliding_window * cfg.n_layers == 4096 * 32 == 131_072


BENCH = Path(__file__).resolve().parents[1] / "docs" / "data" / "sliding_window_bench.json"


@pytest.mark.skipif(not BENCH.exists(), reason="benchmark output not saved yet")
def test_saved_benchmark_has_what_the_page_prints():
    bench = json.loads(BENCH.read_text(encoding="utf-8"))
    assert {"machine", "date", "torch", "device", "rows", "goals"} <= set(bench)
    assert bench["rows"]
    for row in bench["rows"]:
        assert {"T", "dense_ms", "fast_ms", "time_ratio", "dense_mem_mib", "fast_mem_mib", "mem_ratio"} <= set(row)
        assert row["time_ratio"] == pytest.approx(row["dense_ms"] / row["fast_ms"])
