#!/usr/bin/env python3
"""Selective-scan forward: flashscan against PyTorch references and two floors, in ONE run.

    python3 bench_scan.py [path/to/bench_scan] [--quick] [--out DIR]

Runs our benchmark binary (JSON lines: time, minimum bytes, the copy bandwidth it
measured), then on the same GPU, for every size: a sequential PyTorch scan (one step of
the recurrence per iteration, the state [b, dim, n] in f32) and a parallel-scan
formulation (Hillis-Steele doubling over the (a, b) pairs with the associative operator
(a1, b1) o (a2, b2) = (a1 a2, a2 b1 + b2), channels processed in pieces of at most 2 GiB
per tensor). Floors: HBM = minimum bytes / measured copy bandwidth; SFU = one ex2 per
(step, state): b dim L n / (SMs x 16 per clock x max SM clock). Prints a table, writes
bench_scan.json (and bench_scan.png when matplotlib is present).
"""
import json, os, subprocess, sys, time

import torch

args = [a for a in sys.argv[1:] if not a.startswith("--")]
quick = "--quick" in sys.argv
out_dir = sys.argv[sys.argv.index("--out") + 1] if "--out" in sys.argv else "."
binary = args[0] if args else os.path.join(os.path.dirname(__file__), "..", "examples", "bench_scan")

proc = subprocess.run([binary] + (["--quick"] if quick else []), capture_output=True, text=True)
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


def inputs(r):
    b, d, l, n = r["batch"], r["dim"], r["seqlen"], r["d_state"]
    g = torch.Generator(device=dev).manual_seed(0)
    dt = DT[r["dtype"]]
    rnd = lambda shape, lo, hi: (torch.rand(shape, device=dev, generator=g) * (hi - lo) + lo)
    return dict(u=rnd((b, d, l), -1, 1).to(dt), delta=rnd((b, d, l), -3, 0).to(dt), z=rnd((b, d, l), -2, 2).to(dt),
                B=rnd((b, 1, n, l), -1, 1).to(dt), C=rnd((b, 1, n, l), -1, 1).to(dt),
                A=rnd((d, n), -4, -0.5), D=rnd((d,), 0.5, 1.5), bias=rnd((d,), -1, 0))


def sequential(x):
    u, z = x["u"].float(), x["z"].float()
    dl = torch.nn.functional.softplus(x["delta"].float() + x["bias"][None, :, None])
    B, C = x["B"].float()[:, 0], x["C"].float()[:, 0]
    b, d, l = u.shape
    h = torch.zeros(b, d, x["A"].shape[1], device=dev)
    ys = torch.empty(b, d, l, device=dev)
    for t in range(l):
        h = torch.exp(dl[:, :, t, None] * x["A"]) * h + (dl[:, :, t] * u[:, :, t])[:, :, None] * B[:, None, :, t]
        ys[:, :, t] = (h * C[:, None, :, t]).sum(-1)
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


rows = []
with torch.no_grad():
    for r in ours:
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
with open(os.path.join(out_dir, "bench_scan.json"), "w") as f:
    json.dump(dict(gpu=props.name, torch=torch.__version__, sms=sms, clock_mhz=clock_mhz, rows=rows), f, indent=1)
try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 5))
    for dt in DT:
        for n in (16, 64):
            pts = [(r["seqlen"], r["sfu_floor_ms"] / r["ms"]) for r in rows if r["dtype"] == dt and r["d_state"] == n and r["dim"] == 4096]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=f"{dt} n={n} dim=4096")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("seqlen")
    ax.set_ylabel("fraction of the ex2 (SFU) floor")
    ax.set_title(f"flashscan selective scan forward, {props.name}")
    ax.legend()
    fig.savefig(os.path.join(out_dir, "bench_scan.png"), dpi=120)
except ImportError:
    print("matplotlib not installed: no plot")
