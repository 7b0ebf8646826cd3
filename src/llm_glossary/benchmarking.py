"""Small measuring tools shared by the benchmark commands and the pages.

Benchmarks compare two implementations in the same process and report ratios, so the
numbers mean something on any machine. Tests never assert on these timings.

Peak extra memory: on CUDA, ``torch.cuda.max_memory_allocated`` above what was allocated
before the call. On Linux CPUs, the peak resident set size (VmHWM) is reset through
``/proc/self/clear_refs`` before the call and read after it; elsewhere it is not measured.
"""

from __future__ import annotations

import gc
import platform
import re
import time
from typing import Callable

import torch
import torch.nn.functional as F

from .attention import attention_fast, sliding_window_mask

__all__ = ["time_ms", "peak_extra_mib", "machine_description", "sliding_window_timings", "dense_sliding_window"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(fn: Callable[[], object], *, repeat: int = 5, warmup: int = 1, device: torch.device | str = "cpu") -> float:
    """Best wall time of ``fn()`` over ``repeat`` runs, in milliseconds (the least disturbed run)."""
    device = torch.device(device)
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - start) * 1000)
    return min(times)


def _rss_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        return int(re.search(rf"{field}:\s+(\d+) kB", f.read()).group(1))


def _malloc_trim() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def peak_extra_mib(fn: Callable[[], object], *, device: torch.device | str = "cpu") -> float | None:
    """Peak memory that ``fn()`` needs on top of what is already allocated, in MiB (None if unmeasurable)."""
    device = torch.device(device)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        result = fn()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        del result
        return (peak - before) / 2**20
    _malloc_trim()  # hand freed heap memory back, so that new allocations show in the RSS
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")  # reset the peak resident set size to the current one
        before = _rss_kib("VmRSS")
    except OSError:
        return None
    result = fn()
    peak = _rss_kib("VmHWM")
    del result
    return (peak - before) / 1024


def machine_description(device: torch.device | str = "cpu") -> str:
    """A one-line description of where a benchmark ran."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            model = re.search(r"model name\s*:\s*(.+)", f.read())
        cpu = model.group(1).strip() if model else cpu
    except OSError:
        pass
    return f"{cpu}, {torch.get_num_threads()} threads, {platform.system()}"


def dense_sliding_window(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int) -> torch.Tensor:
    """The dense baseline: a full (T, S) boolean mask handed to scaled_dot_product_attention."""
    T, S = q.shape[2], k.shape[2]
    mask = sliding_window_mask(T, window, S, device=q.device)  # (T, S): T·S booleans
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=q.shape[1] != k.shape[1])


def sliding_window_timings(
    lengths: list[int],
    *,
    window: int = 256,
    heads: int = 8,
    head_dim: int = 64,
    batch: int = 1,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    repeat: int = 3,
    memory: bool = False,
    seed: int = 0,
    memo: bool = False,
) -> list[dict]:
    """Dense masked SDPA against the chunked sliding-window path, one row per length T.

    Returns rows with T, dense_ms, fast_ms, time_ratio (dense / fast), max_abs_diff and,
    with ``memory=True``, dense_mem_mib, fast_mem_mib and mem_ratio. With ``memo=True`` a
    second call in the same process with the same arguments and thread count returns
    (copies of) the first call's rows instead of measuring again: the Korean and English
    pages then show one measurement and the build pays for one.
    """
    lengths = list(lengths)
    key = (tuple(lengths), window, heads, head_dim, batch, dtype, str(device), repeat, memory, seed,
           torch.get_num_threads())
    if memo and key in _TIMINGS:
        return [dict(row) for row in _TIMINGS[key]]
    rows = _sliding_window_timings(lengths, window, heads, head_dim, batch, dtype, device, repeat, memory, seed)
    if memo:
        _TIMINGS[key] = [dict(row) for row in rows]
    return rows


_TIMINGS: dict[tuple, list[dict]] = {}


def _sliding_window_timings(lengths, window, heads, head_dim, batch, dtype, device, repeat, memory, seed) -> list[dict]:
    device = torch.device(device)
    g = torch.Generator(device="cpu").manual_seed(seed)
    rows = []
    for T in lengths:
        q, k, v = (torch.randn(batch, heads, T, head_dim, generator=g).to(device=device, dtype=dtype) for _ in range(3))
        with torch.no_grad():
            dense = dense_sliding_window(q, k, v, window)
            fast = attention_fast(q, k, v, window=window)
            diff = (dense.float() - fast.float()).abs().max().item()
            del dense, fast
            row = {
                "T": T,
                "dense_ms": time_ms(lambda: dense_sliding_window(q, k, v, window), repeat=repeat, device=device),
                "fast_ms": time_ms(lambda: attention_fast(q, k, v, window=window), repeat=repeat, device=device),
                "max_abs_diff": diff,
            }
            row["time_ratio"] = row["dense_ms"] / row["fast_ms"]
            if memory:
                row["dense_mem_mib"] = peak_extra_mib(lambda: dense_sliding_window(q, k, v, window), device=device)
                row["fast_mem_mib"] = peak_extra_mib(lambda: attention_fast(q, k, v, window=window), device=device)
                if row["dense_mem_mib"] is not None and row["fast_mem_mib"]:
                    row["mem_ratio"] = row["dense_mem_mib"] / row["fast_mem_mib"]
                else:
                    row["mem_ratio"] = None
        rows.append(row)
        del q, k, v
    return rows
