#!/usr/bin/env python3
"""PyTorch SDPA (flash backend) peer of kernel_bench's attention rows.

Same shapes as bench/kernels/kernel_bench.cpp, bf16, causal, no padding; q (B,NH,T,HS), k and v
(B,NKV,T,HS). Grouped-query heads through enable_gqa=True when the flash backend accepts it, else
k and v repeat_interleave'd to NH heads inside the timed region (what Hugging Face's repeat_kv does).
Timing: warm-up, then repetitions each preceded by a write of a buffer larger than L2, bracketed by
CUDA events; the median. FLOPs as kernel_bench counts them (causal half): forward 2 B NH T^2 HS,
forward+backward 3.5 x that. Each shape is first checked against the math backend in float32 on
upcast inputs (relative L2 of out and of the input gradients).

    python3 bench/peers/sdpa_bench.py [--json out.json] [--budget-ms 150]

Prints one JSON document (also written to --json, default $OUT/sdpa_bench.json when OUT is set);
kernel_bench --sdpa-json FILE reads it. Exits 2 when torch has no CUDA device.
"""
import argparse
import json
import os
import statistics
import sys

SHAPES = [  # (B, T, NH, NKV, HS), as in kernel_bench
    (8, 192, 12, 12, 64),
    (8, 192, 14, 2, 64),
    (8, 1024, 12, 12, 64),
    (8, 1024, 14, 2, 64),
]


def rel_l2(got, want):
    return float((got.float() - want.float()).norm() / want.float().norm().clamp_min(1e-30))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", default=None, help="output file (default $OUT/sdpa_bench.json when OUT is set)")
    parser.add_argument("--budget-ms", type=float, default=150.0, help="device time per measurement")
    args = parser.parse_args()

    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if not torch.cuda.is_available():
        print("sdpa_bench: torch sees no CUDA device", file=sys.stderr)
        return 2
    dev = torch.device("cuda")
    props = torch.cuda.get_device_properties(dev)
    l2 = getattr(props, "L2_cache_size", 50 << 20)
    flush = torch.empty(max(2 * l2, 64 << 20), dtype=torch.uint8, device=dev)

    def time_ms(fn):
        for _ in range(3):
            fn()
        torch.cuda.synchronize()
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        flush.zero_()
        start.record()
        fn()
        stop.record()
        torch.cuda.synchronize()
        reps = int(min(200, max(10, args.budget_ms / max(start.elapsed_time(stop), 1e-3))))
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
        for i, (a, b) in enumerate(events):
            flush.fill_(i & 0xFF)
            a.record()
            fn()
            b.record()
        torch.cuda.synchronize()
        return statistics.median(a.elapsed_time(b) for a, b in events)

    def attention(q, k, v, gqa):
        nh, nkv = q.shape[1], k.shape[1]
        if nh != nkv and gqa == "repeat_interleave":
            k, v = k.repeat_interleave(nh // nkv, dim=1), v.repeat_interleave(nh // nkv, dim=1)
        extra = {"enable_gqa": True} if nh != nkv and gqa == "enable_gqa" else {}
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, **extra)

    results = []
    gen = torch.Generator(device=dev).manual_seed(1234)
    for B, T, NH, NKV, HS in SHAPES:
        q = torch.randn(B, NH, T, HS, device=dev, dtype=torch.bfloat16, generator=gen).requires_grad_()
        k = torch.randn(B, NKV, T, HS, device=dev, dtype=torch.bfloat16, generator=gen).requires_grad_()
        v = torch.randn(B, NKV, T, HS, device=dev, dtype=torch.bfloat16, generator=gen).requires_grad_()
        dout = torch.randn(B, NH, T, HS, device=dev, dtype=torch.bfloat16, generator=gen)
        row = {"B": B, "T": T, "NH": NH, "NKV": NKV, "HS": HS}
        gqa = "mha" if NH == NKV else "enable_gqa"
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            try:
                attention(q, k, v, gqa)
            except RuntimeError:
                gqa = "repeat_interleave"
            row["gqa"] = gqa

            # Check against float32 math on the first batch row.
            q1, k1, v1 = (t[:1].detach().requires_grad_() for t in (q, k, v))
            d1 = dout[:1]
            out1 = attention(q1, k1, v1, gqa)
            grads1 = torch.autograd.grad(out1, (q1, k1, v1), d1)
        with sdpa_kernel(SDPBackend.MATH):
            qf, kf, vf = (t.detach().float().requires_grad_() for t in (q1, k1, v1))
            ref = attention(qf, kf, vf, "repeat_interleave")
            grads_ref = torch.autograd.grad(ref, (qf, kf, vf), d1.float())
        row["rel_l2_out"] = rel_l2(out1, ref)
        row["rel_l2_grads"] = max(rel_l2(g, r) for g, r in zip(grads1, grads_ref))

        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            def fwd():
                with torch.no_grad():
                    attention(q, k, v, gqa)

            def fwd_bwd():
                out = attention(q, k, v, gqa)
                torch.autograd.grad(out, (q, k, v), dout)

            row["fwd_ms"] = time_ms(fwd)
            row["fwd_bwd_ms"] = time_ms(fwd_bwd)
        flops = 2.0 * B * NH * T * T * HS
        row["fwd_tflops"] = flops / (row["fwd_ms"] * 1e-3) / 1e12
        row["fwd_bwd_tflops"] = 3.5 * flops / (row["fwd_bwd_ms"] * 1e-3) / 1e12
        results.append(row)
        print(f"sdpa B={B} T={T} NH={NH} NKV={NKV} HS={HS} ({gqa}): fwd {row['fwd_ms']:.4f} ms "
              f"{row['fwd_tflops']:.1f} TFLOP/s, fwd+bwd {row['fwd_bwd_ms']:.4f} ms {row['fwd_bwd_tflops']:.1f} TFLOP/s, "
              f"rel_l2 out {row['rel_l2_out']:.1e} grads {row['rel_l2_grads']:.1e}", file=sys.stderr)

    doc = {"device": torch.cuda.get_device_name(dev), "torch": torch.__version__, "backend": "flash",
           "dtype": "bf16", "causal": True, "flops": "fwd 2 B NH T^2 HS (causal half); fwd+bwd 3.5 x fwd",
           "results": results}
    text = json.dumps(doc, indent=2)
    path = args.json or (os.path.join(os.environ["OUT"], "sdpa_bench.json") if os.environ.get("OUT") else None)
    if path:
        with open(path, "w") as f:
            f.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
