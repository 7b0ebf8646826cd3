"""Sliding-window attention: the chunked fast path against dense masked SDPA.

    python benchmarks/sliding_window.py                 # T = 1k … 16k, W = 256, 8 heads, D = 64
    python benchmarks/sliding_window.py --json docs/data/sliding_window_bench.json

Both paths run in this process on the same inputs; the table shows their times, their peak
extra memory and the ratios dense / fast. Goals (issue #3): at T = 8,192 the fast path takes at
most 1/10 of the dense path's time and 1/7 of its extra memory, and its time grows linearly in T.
The sliding-window page shows the saved JSON, labelled with the machine it ran on.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import sys
from pathlib import Path

import torch

from llm_glossary.benchmarking import machine_description, sliding_window_timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384])
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", type=Path, help="also save the results here")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    rows = sliding_window_timings(
        args.lengths, window=args.window, heads=args.heads, head_dim=args.head_dim, batch=args.batch,
        device=device, repeat=args.repeat, memory=True,
    )
    machine = machine_description(device)
    print(f"sliding-window attention, W={args.window}, B={args.batch}, heads={args.heads}, D={args.head_dim}, float32")
    print(f"machine: {machine}; torch {torch.__version__}")
    header = f"{'T':>6} | {'dense ms':>9} | {'fast ms':>8} | {'time ×':>6} | {'dense MiB':>9} | {'fast MiB':>8} | {'mem ×':>6} | max |diff|"
    print(header)
    print("-" * len(header))
    for r in rows:
        mem = "n/a" if r["mem_ratio"] is None else f"{r['mem_ratio']:.1f}"
        dm = "n/a" if r["dense_mem_mib"] is None else f"{r['dense_mem_mib']:.1f}"
        fm = "n/a" if r["fast_mem_mib"] is None else f"{r['fast_mem_mib']:.1f}"
        print(f"{r['T']:>6} | {r['dense_ms']:>9.1f} | {r['fast_ms']:>8.1f} | {r['time_ratio']:>6.1f} | {dm:>9} | {fm:>8} | {mem:>6} | {r['max_abs_diff']:.1e}")

    goals = []
    at = {r["T"]: r for r in rows}
    if 8192 in at:
        r = at[8192]
        goals.append(("time at T=8192 ≤ 1/10 of dense", r["time_ratio"], r["time_ratio"] >= 10))
        if r["mem_ratio"] is not None:
            goals.append(("extra memory at T=8192 ≤ 1/7 of dense", r["mem_ratio"], r["mem_ratio"] >= 7))
    big = [r for r in rows if r["T"] >= 2048]
    if len(big) >= 2:
        # slope of log(time) against log(T): 1 is linear, 2 is quadratic
        xs = [math.log(r["T"]) for r in big]
        ys = [math.log(r["fast_ms"]) for r in big]
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
        goals.append(("fast time grows linearly in T (log-log slope ≤ 1.2)", slope, slope <= 1.2))
    print()
    for name, value, ok in goals:
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {value:.2f}")

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "machine": machine,
            "date": dt.date.today().isoformat(),
            "torch": torch.__version__,
            "device": device.type,
            "window": args.window, "heads": args.heads, "head_dim": args.head_dim, "batch": args.batch,
            "dtype": "float32",
            "rows": rows,
            "goals": [{"goal": n, "value": v, "pass": ok} for n, v, ok in goals],
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        print(f"\nsaved {args.json}")
    return 0 if all(ok for _, _, ok in goals) else 1


if __name__ == "__main__":
    sys.exit(main())
