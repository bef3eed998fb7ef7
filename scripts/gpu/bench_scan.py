#!/usr/bin/env python3
"""Selective scan, forward and backward: flashscan against PyTorch references and two
floors, in ONE run.

    python3 bench_scan.py [path/to/bench_scan] [--quick] [--fwd-only | --bwd-only] [--out DIR]

Runs our benchmark binary (JSON lines: time, minimum bytes, the copy bandwidth it
measured), then on the same GPU, for every size: a sequential PyTorch scan (one step of
the recurrence per iteration, the state [b, dim, n] in f32) and a parallel-scan
formulation (Hillis-Steele doubling over the (a, b) pairs with the associative operator
(a1, b1) o (a2, b2) = (a1 a2, a2 b1 + b2), channels processed in pieces of at most 2 GiB
per tensor). The backward references are autograd through the same two (timed from
after the forward to the end of backward(); n/a where they run out of memory, and only
at dim 4096, L <= 4096, d_state 16: autograd keeps every step's state). Floors: HBM =
minimum bytes / measured copy bandwidth; SFU = one ex2 per (step, state): b dim L n /
(SMs x 16 per clock x max SM clock), for the backward too (it needs each decay once at
the least). Prints a table, writes bench_scan[_bwd].json (and a .png with matplotlib).
"""
import json, os, subprocess, sys, time

import torch

args = [a for a in sys.argv[1:] if not a.startswith("--")]
quick = "--quick" in sys.argv
bwd_only = "--bwd-only" in sys.argv
fwd_only = "--fwd-only" in sys.argv
out_dir = sys.argv[sys.argv.index("--out") + 1] if "--out" in sys.argv else "."
binary = args[0] if args else os.path.join(os.path.dirname(__file__), "..", "examples", "bench_scan")

flags = (["--quick"] if quick else []) + (["--bwd-only"] if bwd_only else []) + (["--fwd-only"] if fwd_only else [])
proc = subprocess.run([binary] + flags, capture_output=True, text=True)
sys.stderr.write(proc.stderr)
if proc.returncode != 0:
    sys.exit(f"bench_scan failed (rc={proc.returncode})")
ours = [json.loads(l) for l in proc.stdout.splitlines() if l.startswith("{")]

dev = torch.device("cuda")
props = torch.cuda.get_device_properties(dev)
try:
    clock_mhz = float(subprocess.run(["nvidia-smi", "--query-gpu=clocks.max.sm", "--format=csv,noheader,nounits"],
                                     capture_output=True, text=True).stdout.split()[0])
except Exception:
    clock_mhz = 1980.0
sms = props.multi_processor_count
print(f"{props.name} torch {torch.__version__}: {sms} SMs, max SM clock {clock_mhz:.0f} MHz")
DT = {"bf16": torch.bfloat16, "f32": torch.float32}


def inputs(r, grad=False):
    b, d, l, n = r["batch"], r["dim"], r["seqlen"], r["d_state"]
    g = torch.Generator(device=dev).manual_seed(0)
    dt = DT[r["dtype"]]
    rnd = lambda shape, lo, hi: (torch.rand(shape, device=dev, generator=g) * (hi - lo) + lo)
    if grad:
        x = inputs(r)
        return {k: v.detach().clone().requires_grad_(True) for k, v in x.items()}
    return dict(u=rnd((b, d, l), -1, 1).to(dt), delta=rnd((b, d, l), -3, 0).to(dt), z=rnd((b, d, l), -2, 2).to(dt),
                B=rnd((b, 1, n, l), -1, 1).to(dt), C=rnd((b, 1, n, l), -1, 1).to(dt),
                A=rnd((d, n), -4, -0.5), D=rnd((d,), 0.5, 1.5), bias=rnd((d,), -1, 0))


def sequential(x):
    u, z = x["u"].float(), x["z"].float()
    dl = torch.nn.functional.softplus(x["delta"].float() + x["bias"][None, :, None])
    B, C = x["B"].float()[:, 0], x["C"].float()[:, 0]
    b, d, l = u.shape
    h = torch.zeros(b, d, x["A"].shape[1], device=dev)
    ys = []
    for t in range(l):
        h = torch.exp(dl[:, :, t, None] * x["A"]) * h + (dl[:, :, t] * u[:, :, t])[:, :, None] * B[:, None, :, t]
        ys.append((h * C[:, None, :, t]).sum(-1))
    ys = torch.stack(ys, -1)
    return ((ys + x["D"][None, :, None] * u) * torch.nn.functional.silu(z)).to(x["u"].dtype)


def parallel(x):
    u, z = x["u"].float(), x["z"].float()
    dl = torch.nn.functional.softplus(x["delta"].float() + x["bias"][None, :, None])
    B, C = x["B"].float()[:, 0], x["C"].float()[:, 0]
    b, d, l = u.shape
    n = x["A"].shape[1]
    piece = max(1, (2 << 30) // (b * l * n * 4))
    ys = torch.empty(b, d, l, device=dev)
    for c0 in range(0, d, piece):
        c1 = min(d, c0 + piece)
        a = torch.exp(dl[:, c0:c1, :, None] * x["A"][None, c0:c1, None, :])        # [b, dc, l, n]
        v = (dl[:, c0:c1] * u[:, c0:c1])[..., None] * B.transpose(1, 2)[:, None]   # [b, dc, l, n]
        k = 1
        while k < l:
            v[:, :, k:] = a[:, :, k:] * v[:, :, :-k] + v[:, :, k:]
            a[:, :, k:] = a[:, :, k:] * a[:, :, :-k]
            k *= 2
        ys[:, c0:c1] = torch.einsum("bcln,bnl->bcl", v, C)
        del a, v
    return ((ys + x["D"][None, :, None] * u) * torch.nn.functional.silu(z)).to(x["u"].dtype)


def parallel_autograd(x):
    """`parallel` without in-place updates (autograd keeps every doubling level)."""
    u, z = x["u"].float(), x["z"].float()
    dl = torch.nn.functional.softplus(x["delta"].float() + x["bias"][None, :, None])
    B, C = x["B"].float()[:, 0], x["C"].float()[:, 0]
    l = u.shape[2]
    a = torch.exp(dl[..., None] * x["A"][None, :, None, :])
    v = (dl * u)[..., None] * B.transpose(1, 2)[:, None]
    k = 1
    while k < l:
        v = torch.cat([v[:, :, :k], a[:, :, k:] * v[:, :, :-k] + v[:, :, k:]], 2)
        a = torch.cat([a[:, :, :k], a[:, :, k:] * a[:, :, :-k]], 2)
        k *= 2
    ys = torch.einsum("bcln,bnl->bcl", v, C)
    return ((ys + x["D"][None, :, None] * u) * torch.nn.functional.silu(z)).to(x["u"].dtype)


def time_ms(f, reps):
    f()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        f()
        e.record()
        torch.cuda.synchronize()
        ts.append(s.elapsed_time(e))
    return sorted(ts)[len(ts) // 2]


def time_backward_ms(f, r):
    """The backward of torch reference f: forward with autograd, then time backward()."""
    ts = []
    for _ in range(2):
        x = inputs(r, grad=True)
        out = f(x)
        dout = torch.ones_like(out)
        torch.cuda.synchronize()
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        out.backward(dout)
        e.record()
        torch.cuda.synchronize()
        ts.append(s.elapsed_time(e))
        del x, out
    return min(ts)


def backward_refs(r):
    if r["dim"] != 4096 or r["seqlen"] > 4096 or r["d_state"] != 16:
        return float("nan"), float("nan")
    res = []
    for f in (sequential, parallel_autograd):
        try:
            res.append(time_backward_ms(f, r))
        except torch.OutOfMemoryError:
            res.append(float("nan"))
        torch.cuda.empty_cache()
    return tuple(res)


rows = []
bwd_refs = {}
for r in ours:
    if r.get("pass", "fwd") != "fwd":
        b, d, l, n = r["batch"], r["dim"], r["seqlen"], r["d_state"]
        hbm_ms = r["min_bytes"] / (r["copy_gbs"] * 1e9) * 1e3
        sfu_ms = b * d * l * n / (sms * 16 * clock_mhz * 1e6) * 1e3
        key = (r["dtype"], b, d, l, n)
        if key not in bwd_refs:
            bwd_refs[key] = backward_refs(r)
        seq_ms, par_ms = bwd_refs[key]
        row = dict(r, hbm_floor_ms=hbm_ms, sfu_floor_ms=sfu_ms, torch_sequential_ms=seq_ms, torch_parallel_ms=par_ms)
        rows.append(row)
        print(f"{r['pass']:7} {r['dtype']:4} b={b} dim={d:4} L={l:4} n={n:2} | flashscan {r['ms']:8.4f} ms | "
              f"HBM floor {hbm_ms:7.4f} ({hbm_ms / r['ms']:5.1%}) SFU floor {sfu_ms:7.4f} ({sfu_ms / r['ms']:5.1%}) | "
              f"torch seq {seq_ms:9.2f} ms (x{seq_ms / r['ms']:7.0f}) par {par_ms:8.2f} ms (x{par_ms / r['ms']:6.0f})",
              flush=True)
        continue
    with torch.no_grad():
        x = inputs(r)
        b, d, l, n = r["batch"], r["dim"], r["seqlen"], r["d_state"]
        hbm_ms = r["min_bytes"] / (r["copy_gbs"] * 1e9) * 1e3
        sfu_ms = b * d * l * n / (sms * 16 * clock_mhz * 1e6) * 1e3
        seq_ms = time_ms(lambda: sequential(x), 1)
        try:
            par_ms = time_ms(lambda: parallel(x), 1)
        except torch.OutOfMemoryError:
            par_ms = float("nan")
        torch.cuda.empty_cache()
        row = dict(r, hbm_floor_ms=hbm_ms, sfu_floor_ms=sfu_ms, torch_sequential_ms=seq_ms, torch_parallel_ms=par_ms)
        rows.append(row)
        print(f"{r['dtype']:4} b={b} dim={d:4} L={l:4} n={n:2} | flashscan {r['ms']:8.4f} ms | "
              f"HBM floor {hbm_ms:7.4f} ({hbm_ms / r['ms']:5.1%}) SFU floor {sfu_ms:7.4f} ({sfu_ms / r['ms']:5.1%}) | "
              f"torch seq {seq_ms:9.2f} ms (x{seq_ms / r['ms']:7.0f}) par {par_ms:8.2f} ms (x{par_ms / r['ms']:6.0f})",
              flush=True)
        del x

os.makedirs(out_dir, exist_ok=True)
stem = "bench_scan_bwd" if bwd_only else "bench_scan"
with open(os.path.join(out_dir, stem + ".json"), "w") as f:
    json.dump(dict(gpu=props.name, torch=torch.__version__, sms=sms, clock_mhz=clock_mhz, rows=rows), f, indent=1)
try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 5))
    for dt in DT:
        for n in (16, 64):
            for pas in ("fwd", "bwd"):
                pts = [(r["seqlen"], r["sfu_floor_ms"] / r["ms"]) for r in rows
                       if r.get("pass", "fwd") == pas and r["dtype"] == dt and r["d_state"] == n and r["dim"] == 4096]
                if pts:
                    ax.plot(*zip(*pts), marker="o", label=f"{pas} {dt} n={n} dim=4096")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("seqlen")
    ax.set_ylabel("fraction of the ex2 (SFU) floor")
    ax.set_title(f"flashscan selective scan, {props.name}")
    ax.legend()
    fig.savefig(os.path.join(out_dir, stem + ".png"), dpi=120)
except ImportError:
    print("matplotlib not installed: no plot")
