#!/usr/bin/env python3
"""Flash-Decoding, in ONE run on the GPU machine: flashscan's bench_decode binary, then
torch scaled_dot_product_attention on the same shapes (q length 1, bf16, d=128, the cache
as [b, kv_heads, L, d]): the default dispatch (enable_gqa=True for GQA), and the flash
backend where it runs. Prints the fraction of the copy bandwidth spent reading K and V and
our speed over torch's, writes decode_bench.json.

    python3 bench_decode.py [path/to/bench_decode] [--quick] [--splits N,M] [--out DIR]
(--splits: also ours with those split counts; splits 0 is the default count)
"""
import json, os, subprocess, sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

def opt(name):
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else None

quick = "--quick" in sys.argv
out_dir = opt("--out") or "."
splits = opt("--splits")
values = {v for v in (opt("--out"), splits) if v is not None}
args = [a for a in sys.argv[1:] if not a.startswith("--") and a not in values]
binary = args[0] if args else os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples", "bench_decode")

cmd = [binary] + (["--quick"] if quick else []) + (["--splits", splits] if splits else [])
proc = subprocess.run(cmd, capture_output=True, text=True)
sys.stderr.write(proc.stderr)
ours = [json.loads(l) for l in proc.stdout.splitlines() if l.startswith("{")]
if proc.returncode != 0:
    print("bench_decode failed", proc.returncode)

def time_fn(fn, iters):
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    evs = []
    for _ in range(iters):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record(); fn(); e.record()
        evs.append((s, e))
    torch.cuda.synchronize()
    ms = sorted(s.elapsed_time(e) for s, e in evs)
    return ms[len(ms) // 2]

def torch_case(b, h, kv, L, d):
    q = torch.randn(b, h, 1, d, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(b, kv, L, d, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(b, kv, L, d, device="cuda", dtype=torch.bfloat16)
    iters = 50 if b * L >= (1 << 20) else 200
    res = {}
    gqa = kv != h
    res["sdpa"] = time_fn(lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=gqa), iters)
    if gqa:
        kr, vr = k.repeat_interleave(h // kv, 1), v.repeat_interleave(h // kv, 1)
        res["sdpa_repeat"] = time_fn(lambda: F.scaled_dot_product_attention(q, kr, vr), iters)
        del kr, vr
    try:
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            res["flash"] = time_fn(lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=gqa), iters)
    except Exception as e:
        res["flash"] = None
    del q, k, v
    torch.cuda.empty_cache()
    return res

print(torch.cuda.get_device_name(0), "torch", torch.__version__)
rows = []
cache = {}
for r in ours:
    key = (r["batch"], r["heads_q"], r["heads_kv"], r["seqlen_k"], r["d"])
    if key not in cache:
        cache[key] = torch_case(*key)
    t = cache[key]
    copy = r["copy_gbs"]
    frac = lambda ms: r["kv_bytes"] / (ms * 1e-3) / 1e9 / copy if ms else None
    row = dict(r, torch=t, torch_fraction={k: frac(v) for k, v in t.items()},
               speedup_vs_sdpa=t["sdpa"] / r["ms"],
               speedup_vs_flash=(t["flash"] / r["ms"]) if t.get("flash") else None)
    rows.append(row)
    fl = f"{t['flash']:.4f}" if t.get("flash") else "  n/a "
    print(f"b={r['batch']:<3} kv={r['heads_kv']:<2} L={r['seqlen_k']:<7} {'paged' if r['paged'] else 'contig':6} "
          f"splits {r.get('splits', 0):<3} "
          f"ours {r['ms']:.4f} ms ({r['fraction_of_copy']:.3f} of copy) | sdpa {t['sdpa']:.4f} ({frac(t['sdpa']):.3f}) "
          f"flash {fl} | ours/sdpa speed {t['sdpa'] / r['ms']:.2f}x")
with open(os.path.join(out_dir, "decode_bench.json"), "w") as f:
    json.dump(rows, f, indent=1)
