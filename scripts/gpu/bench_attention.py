#!/usr/bin/env python3
"""Attention forward, in ONE run on the GPU machine: flashscan's bench_attention binary,
then torch scaled_dot_product_attention with the flash (FlashAttention-2), cuDNN and
efficient backends, and a naive matmul-softmax-matmul, on the same shapes. Prints
TFLOP/s and ratios, writes attention_bench.json and (if matplotlib is there) a PNG.
With --bwd: the backward instead (ours in its fast and deterministic modes; torch's
flash, cuDNN and efficient backward kernels timed through autograd.grad of one saved
forward graph), FLOPs 2.5x the forward's; attention_bwd_bench.json / .png.

    python3 bench_attention.py [path/to/bench_attention] [--quick] [--bwd] [--out DIR] [--ns 2048,4096]

--ns replaces the list of sequence lengths (passed on to the binary).
"""
import json, os, subprocess, sys, time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

args = [a for a in sys.argv[1:] if not a.startswith("--")]
quick = "--quick" in sys.argv
bwd = "--bwd" in sys.argv
tag = "attention_bwd_bench" if bwd else "attention_bench"
out_dir = sys.argv[sys.argv.index("--out") + 1] if "--out" in sys.argv else "."
ns_arg = sys.argv[sys.argv.index("--ns") + 1] if "--ns" in sys.argv else None
args = [a for a in args if a not in (out_dir, ns_arg)]
binary = args[0] if args else os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples", "bench_attention")

ours = {}
proc = subprocess.run([binary] + (["--quick"] if quick else []) + (["--bwd"] if bwd else []) + (["--ns", ns_arg] if ns_arg else []), capture_output=True, text=True)
sys.stderr.write(proc.stderr)
for line in proc.stdout.splitlines():
    r = json.loads(line)
    ours[(r["d"], r["n"], r["causal"], r.get("deterministic", False))] = r
if proc.returncode != 0:
    print("bench_attention failed", proc.returncode)

def time_fn(fn, sets, iters):
    for i in range(3):
        fn(*sets[i % len(sets)])
    torch.cuda.synchronize()
    times = []
    for i in range(iters):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn(*sets[i % len(sets)])
        e.record()
        times.append((s, e))
    torch.cuda.synchronize()
    ms = sorted(s.elapsed_time(e) for s, e in times)
    return ms[len(ms) // 2]

def naive(q, k, v, causal):
    s = (q @ k.transpose(-1, -2)) * (q.shape[-1] ** -0.5)
    if causal:
        n = q.shape[-2]
        s = s.masked_fill(torch.ones(n, n, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
    return torch.softmax(s.float(), dim=-1).to(q.dtype) @ v

results = []
ns = [int(n) for n in ns_arg.split(",")] if ns_arg else [1024, 4096] if quick else [512, 1024, 2048, 4096, 8192, 16384]
print(torch.cuda.get_device_name(0), "torch", torch.__version__)
for d in (64, 128):
    for causal in (False, True):
        for n in ns:
            b, h = 16384 // n, 2048 // d
            flops = 4 * b * h * n * n * d / (2 if causal else 1)
            # torch SDPA takes [b, h, n, d]; ours is [b, n, h, d] (same bytes, transposed view).
            sets = [tuple(torch.randn(b, n, h, d, device="cuda", dtype=torch.bfloat16).transpose(1, 2) for _ in range(3)) for _ in range(3)]
            row = {"d": d, "n": n, "batch": b, "heads": h, "causal": causal}
            r = ours.get((d, n, causal, False))
            row["flashscan"] = r["tflops"] if r else None
            if bwd:
                flops *= 2.5
                r = ours.get((d, n, causal, True))
                row["flashscan_det"] = r["tflops"] if r else None
            for name, backend in (("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION), ("efficient", SDPBackend.EFFICIENT_ATTENTION)):
                try:
                    with sdpa_kernel(backend):
                        if bwd:
                            # One saved forward graph per input set; time the backward only.
                            graphs = []
                            for q, k, v in sets:
                                q, k, v = (t.detach().requires_grad_() for t in (q, k, v))
                                out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
                                graphs.append((out, (q, k, v), torch.randn_like(out)))
                            ms = time_fn(lambda g: torch.autograd.grad(g[0], g[1], g[2], retain_graph=True), [(g,) for g in graphs], 20)
                            del graphs
                        else:
                            ms = time_fn(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=causal), sets, 20)
                    row[name] = flops / (ms * 1e-3) / 1e12
                except Exception as e:  # backend unavailable for this shape
                    row[name] = None
            if n <= 8192 and not bwd:
                try:
                    torch.cuda.reset_peak_memory_stats()
                    base = torch.cuda.memory_allocated()
                    ms = time_fn(lambda q, k, v: naive(q, k, v, causal), sets[:1], 5)
                    row["naive"] = flops / (ms * 1e-3) / 1e12
                    row["naive_peak_extra_gib"] = (torch.cuda.max_memory_allocated() - base) / 2**30
                except torch.OutOfMemoryError:
                    row["naive"] = None
            del sets
            torch.cuda.empty_cache()
            fmt = lambda x: "   -  " if x is None else f"{x:6.1f}"
            ratio = lambda a, b: "  -  " if (a is None or b is None) else f"{a / b:5.2f}"
            det = f" det {fmt(row.get('flashscan_det'))}" if bwd else ""
            print(f"{'bwd' if bwd else 'fwd'} d={d:3} N={n:5} causal={causal!s:5} | flashscan {fmt(row['flashscan'])}{det} | flash {fmt(row['flash'])} cudnn {fmt(row['cudnn'])} "
                  f"eff {fmt(row['efficient'])} naive {fmt(row.get('naive'))} TFLOP/s | vs flash {ratio(row['flashscan'], row['flash'])} vs cudnn {ratio(row['flashscan'], row['cudnn'])}",
                  flush=True)
            results.append(row)

os.makedirs(out_dir, exist_ok=True)
with open(os.path.join(out_dir, tag + ".json"), "w") as f:
    json.dump({"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "results": results}, f, indent=1)
try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 4, figsize=(20, 4.5))
    for ax, (d, causal) in zip(axes, [(64, False), (64, True), (128, False), (128, True)]):
        rows = [r for r in results if r["d"] == d and r["causal"] == causal]
        for key in ("flashscan", "flashscan_det", "flash", "cudnn", "efficient", "naive"):
            pts = [(r["n"], r[key]) for r in rows if r.get(key)]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=key)
        ax.set_xscale("log", base=2)
        ax.set_title(f"{'bwd' if bwd else 'fwd'} d={d} {'causal' if causal else 'non-causal'}")
        ax.set_xlabel("N")
        ax.set_ylabel("TFLOP/s")
        ax.legend()
    fig.savefig(os.path.join(out_dir, tag + ".png"), dpi=90, bbox_inches="tight")
except ImportError:
    print("matplotlib not installed: no plot")
