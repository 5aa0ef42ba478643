#!/usr/bin/env python3
"""One side-by-side table from `ppo bench --json` (engine) and `torch_ppo_step.py --json` (peer).

  python3 bench/compare_table.py ENGINE.json PEER.json [--json OUT] [--markdown]

Rows: the phases (generate, reference, reward, value, advantages, train, total) in mean seconds per
timed step, response tokens/s (valid response tokens / step time), and peak memory where known
(engine: the planned arena, which holds everything the step allocates; peer: per phase
torch.cuda.max_memory_allocated on CUDA or the resident set on the CPU; the latter includes the torch
runtime, so no ratio is given on the CPU). speedup = peer / engine
for times and memory (> 1: the engine is faster or smaller), engine / peer for tokens/s.
Standard library only (no torch).
"""
import argparse
import json
import sys

PHASES = ["generate", "reference", "reward", "value", "advantages", "train", "total"]


def fmt_seconds(s):
    return "-" if s is None else f"{s:.4g}"


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def build_rows(engine, peer):
    rows = []
    for k in PHASES:
        e, p = engine["phases"][k]["seconds"], peer["phases"][k]["seconds"]
        rows.append({"row": f"{k} (s)", "engine": e, "peer": p, "speedup": ratio(p, e), "kind": "s"})
    e, p = engine["response_tokens_per_s"], peer["response_tokens_per_s"]
    rows.append({"row": "response tokens/s", "engine": e, "peer": p, "speedup": ratio(e, p), "kind": "rate"})
    peer_mem = [v.get("peak_memory_bytes") for v in peer["phases"].values() if v.get("peak_memory_bytes")]
    e = engine.get("arena_bytes")
    p = max(peer_mem) if peer_mem else None
    kind = peer.get("memory_kind", "?")
    # cpu_rss is the whole process (the torch runtime included), not the step's tensors: no ratio
    rows.append({"row": f"peak memory MiB (engine arena; peer {kind})", "engine": None if e is None else e / 2**20,
                 "peer": None if p is None else p / 2**20,
                 "speedup": ratio(p, e) if kind == "cuda_max_allocated" else None, "kind": "mib"})
    return rows


def header(engine, peer):
    c = engine["config"]
    pol = c["policy"]
    shape = (f"{pol.get('arch')} L={pol.get('n_layer')} C={pol.get('d_model')} NH={pol.get('n_head')} "
             f"V={pol.get('vocab_size')}; B={c['rollout_batch_size']} P={c['prompt_length']} "
             f"R={c['response_length']} micro={c['micro_batch_size']} minibatches={c['num_minibatches']} "
             f"epochs={c['ppo_epochs']}")
    dev = (f"engine: {engine['device']} {engine['dtype']} | peer: torch {peer.get('torch')} transformers "
           f"{peer.get('transformers')} {peer['device']} {peer['dtype']}"
           f"{' +compile' if peer.get('compile') else ' eager'}")
    steps = (f"timed steps: engine {engine['steps']} (warmup {engine['warmup']}), peer {peer['steps']} "
             f"(warmup {peer['warmup']}); fixed response length: engine {engine['fixed_response_length']}, "
             f"peer {peer['fixed_response_length']}")
    return [shape, dev, steps]


def cell(v, kind):
    if v is None:
        return "-"
    if kind == "s":
        return fmt_seconds(v)
    return f"{v:.1f}" if kind == "rate" else f"{v:.0f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("engine")
    ap.add_argument("peer")
    ap.add_argument("--json", help="write the rows and header as JSON")
    ap.add_argument("--markdown", action="store_true", help="a Markdown table")
    a = ap.parse_args()
    with open(a.engine) as f:
        engine = json.load(f)
    with open(a.peer) as f:
        peer = json.load(f)
    rows, head = build_rows(engine, peer), header(engine, peer)
    for line in head:
        print(("" if a.markdown else "# ") + line + ("  " if a.markdown else ""))
    print()
    if a.markdown:
        print("| row | engine | peer | peer/engine |\n|---|---:|---:|---:|")
    else:
        print(f"{'row':<44}{'engine':>12}{'peer':>12}{'peer/engine':>16}")
    for r in rows:
        sp = "-" if r["speedup"] is None else f"{r['speedup']:.2f}x"
        if r["kind"] == "rate":
            sp += " (e/p)"
        e, p = cell(r["engine"], r["kind"]), cell(r["peer"], r["kind"])
        if a.markdown:
            print(f"| {r['row']} | {e} | {p} | {sp} |")
        else:
            print(f"{r['row']:<44}{e:>12}{p:>12}{sp:>16}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"header": head, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    sys.exit(main())
