"""The dialog fine-tune walkthrough against its goals (issue 11).

    python benchmarks/walkthrough.py                 # CPU, recipe "walkthrough"
    python benchmarks/walkthrough.py --device cuda   # recipe "walkthrough-gpu"
    python benchmarks/walkthrough.py --json out.json
    python benchmarks/walkthrough.py --site          # also the cold strict build of the site

Runs the walkthrough without any cache (``LLM_GLOSSARY_NO_CACHE`` is set) and prints the
wall time of each phase, training tokens per second, the model FLOPs utilization (MFU)
against a matrix-multiply peak measured in the same run (a square float32 matmul, before
and after training; the larger is used), the metrics, and PASS/FAIL per goal:

- held-out assistant-token loss after fine-tuning ≤ 0.5 × the pretrained model's;
- ≥ 95 % of greedy held-out replies end with <|eot_id|> within 96 tokens; 0 role leaks;
- held-out glossary questions reproduce the definition in ≥ 80 %, follow-ups in ≥ 70 %;
- the whole walkthrough (data, pretraining, fine-tuning, evaluation) ≤ 40 s;
- with ``--site``: a cold strict build of the whole site (every page's code, the walkthrough
  trained from an empty cache) ≤ 60 s.

On a shared machine the wall time is inflated by the other load; the MFU line shows how
much of the machine training got relative to a matmul measured at the same time, and
"idle estimate" scales the run to the matmul peak of an idle machine given by --idle-peak.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch


def matmul_peak(device: torch.device, n: int = 1024, seconds: float = 1.0) -> float:
    """FLOP/s of a square float32 matmul (bf16 on CUDA), best of repeated timings."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = 0.0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(4):
            a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = max(best, 4 * 2 * n**3 / (time.perf_counter() - t))
    return best


def train_flops(config, seq_len: int, tokens: int, targets: int) -> float:
    """Training FLOPs: 6 × the layers' matrix parameters and the attention scores for every
    input token, 6 × the output head (C × V) for every target token (the head runs only
    where a target is: Llama.forward(logits_at=...))."""
    C, L, V = config.dim, config.n_layers, config.vocab_size
    kv = config.n_kv_heads * config.head_dim
    per_layer = C * C * 2 + C * kv * 2 + 3 * C * config.ffn_hidden
    attention = 2 * 2 * seq_len * C / 2  # QK^T and AV, causal half, per token and layer
    return tokens * (6 * L * per_layer + 3 * L * attention) + targets * 6 * C * V


def cold_site_build() -> float:
    """Seconds of `mkdocs build --strict` into a fresh folder with an empty walkthrough cache.

    As the test suite builds it: every executed block runs, the walkthrough trains. The
    tokenizer's and the walkthrough's in-process memos start empty in the new process.
    """
    import subprocess
    import tempfile
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    mkdocs = Path(sys.executable).with_name("mkdocs")
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "LLM_GLOSSARY_CACHE_DIR": str(Path(tmp) / "cache"), "NO_MKDOCS_2_WARNING": "1"}
        env.pop("LLM_GLOSSARY_NO_CACHE", None)
        t0 = time.perf_counter()
        done = subprocess.run([str(mkdocs), "build", "--strict", "-d", str(Path(tmp) / "site")],
                              cwd=root, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"the site build failed:\n{done.stderr[-3000:]}")
    return seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="cpu (default), cuda or mps")
    parser.add_argument("--recipe", default=None, help="default: walkthrough (walkthrough-gpu on cuda)")
    parser.add_argument("--idle-peak", type=float, default=None, help="GFLOP/s of the idle machine's matmul")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    parser.add_argument("--fill-cache", action="store_true", help="store the run in the walkthrough's disk cache")
    parser.add_argument("--site", action="store_true",
                        help="also time a cold strict build of the whole site (empty walkthrough cache)")
    args = parser.parse_args(argv)
    os.environ["LLM_GLOSSARY_NO_CACHE"] = "1"

    from llm_glossary import walkthrough
    from llm_glossary.benchmarking import machine_description
    from llm_glossary.dialog import chat_tokenizer
    from llm_glossary.recipes import recipe
    from llm_glossary.train import resolve_device

    dev = resolve_device(args.device)
    name = args.recipe or ("walkthrough-gpu" if dev.type == "cuda" else "walkthrough")
    rec = recipe(name)
    peak_before = matmul_peak(dev)
    t0 = time.perf_counter()
    tok = chat_tokenizer(rec.tokenizer_vocab)
    t_tok = time.perf_counter() - t0
    t0 = time.perf_counter()
    w = walkthrough.train_walkthrough(rec, dev, tok)
    total = time.perf_counter() - t0
    peak_after = matmul_peak(dev)
    if args.fill_cache:
        walkthrough._save(walkthrough.cache_dir() / f"walkthrough-{walkthrough.cache_key(rec, str(dev))}", w)
    peak = max(peak_before, peak_after)
    m, times = w.metrics, w.timings

    pre, sft = w.history["pretrain"], w.history["finetune"]
    pre_tokens = rec.pretrain.steps * rec.pretrain.batch_size * rec.pretrain.seq_len
    sft_tokens = sum(sft.tokens) if sft.tokens else 0
    cfg = w.model.config
    mean_len = sft_tokens / max(1, len(sft.step) * rec.finetune.batch_size)  # a dialog's length
    flops = (train_flops(cfg, rec.pretrain.seq_len, pre_tokens, pre_tokens)
             + train_flops(cfg, round(mean_len), sft_tokens, sum(sft.targets)))
    train_s = times["pretrain"] + times["finetune"]
    mfu = flops / train_s / peak
    print(f"machine: {machine_description(dev)}; recipe {name}; load average {os.getloadavg()[0]:.1f}")
    print(f"matmul peak: {peak_before / 1e9:.0f} GFLOP/s before, {peak_after / 1e9:.0f} after training")
    print(f"{'phase':12} {'seconds':>8}")
    print(f"{'tokenizer':12} {t_tok:8.1f}   (shared with the other pages; not counted)")
    for phase in ("data", "pretrain", "finetune", "evaluate"):
        print(f"{phase:12} {times[phase]:8.1f}")
    print(f"{'total':12} {total:8.1f}")
    print(f"training: {pre_tokens:,} pretraining + {sft_tokens:,} fine-tuning tokens, "
          f"{(pre_tokens + sft_tokens) / train_s:,.0f} tokens/s, {flops / train_s / 1e9:.1f} GFLOP/s, MFU {mfu:.1%}")
    if args.idle_peak:
        est = total * peak / (args.idle_peak * 1e9)
        print(f"idle estimate: {est:.1f} s (scaled by matmul peak {peak / 1e9:.0f} -> {args.idle_peak:.0f} GFLOP/s)")
    print()
    for k, v in m.items():
        print(f"  {k:28} {v:.4f}" if isinstance(v, float) else f"  {k:28} {v}")
    goals = [
        ("loss after SFT <= 0.5 x pretrained", m["loss_ratio"] <= 0.5, f"{m['loss_ratio']:.3f}"),
        ("replies ending with <|eot_id|> >= 95 %", m["end_rate"] >= 0.95, f"{m['end_rate']:.1%} of {m['n_replies']}"),
        ("role leaks == 0", m["role_leaks"] == 0, str(m["role_leaks"])),
        ("glossary questions exact >= 80 %", m["question_exact_all"] >= 0.8,
         f"{m['question_exact_all']:.1%} of {m['n_questions_all']}"),
        ("follow-ups exact >= 70 %", m["follow_up_exact_all"] >= 0.7,
         f"{m['follow_up_exact_all']:.1%} of {m['n_follow_ups_all']}"),
        ("walkthrough <= 40 s", total <= 40, f"{total:.1f} s"),
    ]
    if args.site:
        build_s = cold_site_build()
        goals.append(("cold strict site build <= 60 s", build_s <= 60, f"{build_s:.1f} s"))
    print()
    for label, ok, value in goals:
        print(f"{'PASS' if ok else 'FAIL'}  {label:42} {value}")
    if args.json:
        from llm_glossary.checkpoint import atomic_write_json

        atomic_write_json(args.json, {"machine": machine_description(dev), "recipe": name, "timings": times,
                                      "total_s": total, "mfu": mfu, "peak_flops": peak, "metrics": m,
                                      "goals": {g[0]: g[1] for g in goals}})
    return 0 if all(ok for _, ok, _ in goals) else 1


if __name__ == "__main__":
    sys.exit(main())
