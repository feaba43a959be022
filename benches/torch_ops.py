"""PyTorch timings of the ops `examples/kernel_bench.rs` times, with the same case names.

    python3 benches/torch_ops.py [FILTER] [--runs N] [--json FILE] [--threads 2]

Median ms over N runs (after one warm-up) of the forward alone and of forward + backward
(y.backward(r) for a fixed r, gradients for every input), on the CPU in f32 with two
threads (or --threads; run kernel_bench with RAYON_NUM_THREADS to match). `--json FILE` writes {case: [fwd, fwd+bwd]} for `kernel_bench --torch FILE`.
"""

import argparse
import json
import math
import statistics
import time

import torch
import torch.nn.functional as F



def conv(b, cin, cout, h, kk, s, p):
    return (
        f"conv{kk}x{kk}s{s}p{p} {b}x{cin}x{h}x{h}->{cout}",
        [(b, cin, h, h), (cout, cin, kk, kk), (cout,)],
        lambda x, w, bias: F.conv2d(x, w, bias, stride=s, padding=p),
    )


def gn(b, c, h, silu):
    def f(x, g, bt):
        y = F.group_norm(x, 32, g, bt, eps=1e-6)
        return F.silu(y) if silu else y

    return (f"groupnorm32{'+silu' if silu else ''} {b}x{c}x{h}x{h}", [(b, c, h, h), (c,), (c,)], f)


def up(b, c, h):
    return (f"upsample2x {b}x{c}x{h}x{h}", [(b, c, h, h)], lambda x: F.interpolate(x, scale_factor=2, mode="nearest"))


def attn(b, t, s, d):
    scale = 1.0 / math.sqrt(d)

    def f(q, k, v):
        return torch.softmax(q @ k.transpose(1, 2) * scale, dim=-1) @ v

    return (f"attention b{b} t{t} s{s} d{d}", [(b, t, d), (b, s, d), (b, s, d)], f)


def sdpa(b, t, s, d):
    scale = 1.0 / math.sqrt(d)
    return (
        f"sdpa b{b} t{t} s{s} d{d}",
        [(b, t, d), (b, s, d), (b, s, d)],
        lambda q, k, v: F.scaled_dot_product_attention(q, k, v, scale=scale),
    )


CASES = [
    conv(16, 1, 128, 32, 3, 1, 1),
    conv(16, 128, 128, 32, 3, 1, 1),
    conv(16, 128, 128, 33, 3, 2, 0),
    conv(16, 256, 256, 16, 3, 1, 1),
    conv(16, 128, 256, 16, 1, 1, 0),
    conv(16, 256, 256, 8, 3, 1, 1),
    conv(64, 4, 128, 8, 3, 1, 1),
    conv(64, 128, 128, 8, 3, 1, 1),
    conv(64, 256, 256, 4, 3, 1, 1),
    conv(64, 128, 256, 8, 1, 1, 0),
    conv(16, 32, 32, 32, 3, 1, 1),
    conv(64, 64, 64, 8, 3, 1, 1),
    conv(32, 128, 128, 8, 3, 1, 1),
    conv(32, 256, 256, 4, 3, 1, 1),
    conv(32, 256, 256, 2, 3, 1, 1),
    gn(16, 128, 32, True),
    gn(16, 128, 32, False),
    gn(16, 256, 16, True),
    gn(64, 128, 8, True),
    gn(64, 256, 4, True),
    up(16, 256, 16),
    up(64, 256, 4),
    attn(16, 256, 256, 256),
    attn(16, 64, 64, 256),
    attn(64, 64, 64, 64),
    attn(64, 64, 77, 64),
    attn(64, 16, 77, 64),
    ("softmax 16x256x256", [(16, 256, 256)], lambda x: torch.softmax(x, dim=-1)),
    sdpa(16, 256, 256, 256),
    sdpa(64, 64, 77, 64),
]


def timed(runs, f):
    f()
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        f()
        ts.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("filter", nargs="?", default="")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--json")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__} threads {torch.get_num_threads()} runs {a.runs} (median ms)")
    print(f"{'case':<40} {'fwd':>9} {'f+b':>10}")
    out = {}
    for name, shapes, f in CASES:
        if a.filter not in name:
            continue
        xs = [torch.randn(s) for s in shapes]
        with torch.no_grad():
            fwd = timed(a.runs, lambda: f(*xs))
        vs = [x.clone().requires_grad_(True) for x in xs]
        r = torch.randn_like(f(*vs))

        def both():
            for v in vs:
                v.grad = None
            f(*vs).backward(r)

        fb = timed(a.runs, both)
        out[name] = [fwd, fb]
        print(f"{name:<40} {fwd:>9.2f} {fb:>10.2f}")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
