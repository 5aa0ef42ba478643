#!/usr/bin/env python3
"""The table of bench/compare_algorithms.sh: one row per algorithm over its seeds' result.json.

usage: compare_algorithms.py OUT_DIR ALGORITHM...   (runs in OUT_DIR/<algorithm>-seed<s>/result.json)

Columns (mean +- sample std over the seeds; held-out prompts, the same sampling before and after):
gold gain and proxy gain (final - SFT policy), KL(final || SFT policy), the algorithm's steps in CPU
seconds (one thread: the work) and in wall seconds (sum of time/step_s: the shared machine's load
shows), and the algorithm's arena bytes.
"""
import glob
import json
import os
import statistics
import sys


def mean_std(values, digits=3):
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    m = statistics.mean(values)
    s = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{m:.{digits}f} +- {s:.{digits}f}"


def main():
    out, algorithms = sys.argv[1], sys.argv[2:]
    print("| algorithm | seeds | gold gain | proxy gain | KL to SFT | steps, CPU s | steps, wall s | arena bytes |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for a in algorithms:
        runs = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(out, f"{a}-seed*", "result.json")))]
        if not runs:
            continue
        gold = [r["final_gold"] - r["sft_gold"] for r in runs]
        proxy = [r["final_proxy"] - r["sft_proxy"] if r["final_proxy"] is not None and r["sft_proxy"] is not None
                 else None for r in runs]
        arena = {r["arena_bytes"] for r in runs}
        arena_text = " / ".join(f"{b} ({b / 2**20:.1f} MiB)" for b in sorted(arena))
        print(f"| {a} | {', '.join(str(r['seed']) for r in runs)} | {mean_std(gold)} | {mean_std(proxy)} "
              f"| {mean_std([r['final_kl'] for r in runs])} | {mean_std([r['train_cpu_seconds'] for r in runs], 1)} "
              f"| {mean_std([r['train_seconds'] for r in runs], 1)} | {arena_text} |")
    print()
    print("| algorithm | " + " | ".join(f"seed {s}: SFT -> final gold" for s in range(1, 5)) + " |")
    print("|---|" + "---:|" * 4)
    for a in algorithms:
        runs = {json.load(open(p))["seed"]: json.load(open(p))
                for p in glob.glob(os.path.join(out, f"{a}-seed*", "result.json"))}
        cells = [f"{runs[s]['sft_gold']:.3f} -> {runs[s]['final_gold']:.3f}" if s in runs else "-" for s in range(1, 5)]
        print(f"| {a} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
