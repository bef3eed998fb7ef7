#!/usr/bin/env python3
"""One table of every benchmark's ratio against its anchor and its target, from the JSON
files the benchmark parts of bench_all.sh write into one folder (a part that did not run
is left out). Prints the table, writes summary.json, and plots the ratios against the
targets: summary.png with matplotlib, else summary.svg (no dependencies).

    python3 summary.py LOGS_DIR

The targets are the issues' acceptance figures. The mamba_ssm CUDA times are the
reference kernel's figures measured on an H100 (DESIGN.md), not rerun here: only that
column comes from another run.
"""
import json, math, os, re, sys, time

logs = sys.argv[1] if len(sys.argv) > 1 else "logs"
rows = []  # dicts: area, case, ours, anchor, ratio, target (ratio >= target is met), note
gpu = None

# mamba_ssm's selective_scan_cuda on the H100 (issue 5): (pass, dtype, d_state) -> ms.
MAMBA_SSM_MS = {("fwd", "bf16", 16): 2.30, ("bwd", "bf16", 16): 9.52, ("fwd", "bf16", 64): 7.79,
                ("bwd", "bf16", 64): 36.8, ("fwd", "f32", 16): 4.68, ("bwd", "f32", 16): 10.9}


def load(name):
    path = os.path.join(logs, name)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        text = f.read()
    try:
        return json.loads(text)
    except ValueError:  # JSON lines
        return [json.loads(l) for l in text.splitlines() if l.startswith("{")]


def add(area, case, ours, anchor, ratio, target=None, note=""):
    rows.append(dict(area=area, case=case, ours=ours, anchor=anchor, ratio=ratio, target=target, note=note))


def attention(name, label):
    global gpu
    data = load(name)
    if not data:
        return
    gpu = gpu or data.get("gpu")
    res = data["results"]
    for d in (64, 128):
        for causal in (False, True):
            mine = [r for r in res if r["d"] == d and r["causal"] == causal and r.get("flashscan") and r.get("flash")]
            if not mine:
                continue
            kind = "causal" if causal else "non-causal"
            # The target holds at N >= 2048: the worst ratio there is the one that counts.
            long = [r for r in mine if r["n"] >= 2048] or mine
            worst = min(long, key=lambda r: r["flashscan"] / r["flash"])
            for r in sorted({worst["n"], max(r["n"] for r in mine)} | ({4096} & {r["n"] for r in mine})):
                r = next(x for x in mine if x["n"] == r)
                cudnn = f", {r['flashscan'] / r['cudnn']:.2f}x cuDNN ({r['cudnn']:.0f})" if r.get("cudnn") else ""
                det = f"; deterministic {r['flashscan_det']:.0f}" if r.get("flashscan_det") else ""
                tag = " (worst N>=2048)" if r is worst else ""
                add(label, f"d={d} N={r['n']} {kind}{tag}", f"{r['flashscan']:.1f} TFLOP/s{det}",
                    f"torch flash {r['flash']:.1f}", r["flashscan"] / r["flash"], 1.0 if r["n"] >= 2048 else None,
                    cudnn.lstrip(", "))


def scan(name):
    global gpu
    data = load(name)
    if not data:
        return
    gpu = gpu or data.get("gpu")
    for r in data["rows"]:
        if r["batch"] != 8 or r["dim"] != 4096 or r["seqlen"] != 4096:
            continue
        pas = r.get("pass", "fwd")
        key = (pas, r["dtype"], r["d_state"])
        ref = MAMBA_SSM_MS.get(key)
        target = {("fwd", "bf16", 16): 1.15, ("bwd", "bf16", 16): 4.8}.get(key)
        floors = f"{r['sfu_floor_ms'] / r['ms']:.1%} of ex2 floor, {r['hbm_floor_ms'] / r['ms']:.1%} of HBM floor"
        refs = []
        for k, what in (("torch_sequential_ms", "PyTorch sequential"), ("torch_parallel_ms", "parallel scan")):
            v = r.get(k)
            if v is not None and not math.isnan(v):
                refs.append(f"{v / r['ms']:.0f}x {what}")
        note = "; ".join([floors] + refs + ([f"target <= {target} ms"] if target else []))
        label = f"{pas} {r['dtype']} n={r['d_state']} b=8 dim=4096 L=4096"
        # Ratio: the speed over mamba_ssm's; the 2x target is the time target.
        add("selective scan", label, f"{r['ms']:.3f} ms", f"mamba_ssm {ref} ms (H100)" if ref else "-",
            ref / r["ms"] if ref else None, (ref / target) if (ref and target) else None, note)


def decode():
    global gpu
    data = load("decode_bench.json")
    if not data:
        return
    heads = [(1, 32, 32768), (1, 8, 32768), (8, 8, 8192), (1, 32, 131072)]
    # The default split count only (rows timed with --splits N carry "splits": N).
    by = {(r["batch"], r["heads_kv"], r["seqlen_k"], r["paged"]): r for r in data if not r.get("splits")}
    for b, kv, l in heads:
        r = by.get((b, kv, l, False))
        if not r:
            continue
        gqa = kv != r["heads_q"]
        case = f"b={b} h={r['heads_q']} kv={kv} L={l // 1024}k"
        sdpa_frac = r["torch_fraction"].get("sdpa")
        add("flash-decoding", case + " fraction of copy", f"{r['ms']:.4f} ms ({r['fraction_of_copy']:.3f})",
            f"torch SDPA {r['torch']['sdpa']:.4f} ms ({sdpa_frac:.3f})", r["fraction_of_copy"], 0.90,
            "fraction of the copy bandwidth spent reading K and V")
        add("flash-decoding", case + " speed vs torch SDPA", f"{r['ms']:.4f} ms", f"{r['torch']['sdpa']:.4f} ms",
            r["speedup_vs_sdpa"], 1.0 if gqa else 0.97, "GQA: at least torch; MHA: within 3%")
        p = by.get((b, kv, l, True))
        if p:
            add("flash-decoding", case + " paged vs contiguous", f"{p['ms']:.4f} ms", f"{r['ms']:.4f} ms",
                r["ms"] / p["ms"], 0.95, "paged within 5% of contiguous")


def bandwidth(name, area):
    data = load(name)
    if not data:
        return
    for r in data:
        k = r.get("kernel")
        if k in (None, "copy"):
            continue
        shape = " ".join(f"{x}={r[x]}" for x in ("batch", "dim", "seqlen", "width", "d_state", "rows", "cols") if x in r)
        headline = k == "conv1d_fwd" and r.get("dtype") == "bf16" and "batch=8 dim=4096 seqlen=4096 width=4" in shape
        add(area, f"{k} {r.get('dtype', '')} {shape}", f"{r['ms']:.4f} ms, {r['gbs']:.0f} GB/s",
            f"copy {r['copy_gbs']:.0f} GB/s", r["fraction_of_copy"], 0.70 if headline else None, "fraction of copy")


def examples():
    for path in sorted(os.listdir(logs)) if os.path.isdir(logs) else []:
        m = re.match(r"(gpt_block|mamba_block)_(\w+)\.txt$", path)
        if not m:
            continue
        with open(os.path.join(logs, path)) as f:
            text = f.read()
        phases = re.findall(r"^(prefill|generation)\s+(\d+)\s+([\d.]+)\s+([\d.]+)", text, re.M)
        device = re.search(r"^device: (.*)$", text, re.M)
        if not phases or not device:
            continue
        n_ok, n_failed = len(re.findall(r"relative error .* ok$", text, re.M)), text.count(") FAILED")
        checks = f"self-check: {n_ok} ok, {n_failed} failed" if n_ok + n_failed else "no self-check"
        desc = ", ".join(f"{p} {float(tps):.0f} tokens/s" for p, _, _, tps in phases)
        add("examples", f"{m.group(1)} {m.group(2)} ({device.group(1)})", desc, "-", None, None, checks)


attention("attention_bench.json", "attention fwd")
attention("attention_bwd_bench.json", "attention bwd")
scan("bench_scan.json")
scan("bench_scan_bwd.json")
decode()
bandwidth("bench_conv.json", "conv1d / decode steps")
bandwidth("bench_norm.json", "norm")
examples()

if not rows:
    sys.exit(f"no benchmark results under {logs}")
for r in rows:
    r["met"] = None if (r["ratio"] is None or r["target"] is None) else r["ratio"] >= r["target"]

gpu = gpu or "GPU"
print(f"\n==== flashscan benchmarks, {gpu}, {time.strftime('%Y-%m-%d')} (ratio: ours over the anchor, higher is better) ====")
w = [max(len(r[k]) for r in rows) for k in ("area", "case", "ours", "anchor")]
print(f"{'area':<{w[0]}}  {'case':<{w[1]}}  {'flashscan':<{w[2]}}  {'anchor':<{w[3]}}  ratio  target  met")
for r in rows:
    ratio = f"{r['ratio']:5.2f}" if r["ratio"] is not None else "    -"
    target = f"{r['target']:6.2f}" if r["target"] is not None else "     -"
    met = {None: "   ", True: "yes", False: " NO"}[r["met"]]
    print(f"{r['area']:<{w[0]}}  {r['case']:<{w[1]}}  {r['ours']:<{w[2]}}  {r['anchor']:<{w[3]}}  {ratio}  {target}  {met}  {r['note']}")
judged = [r for r in rows if r["met"] is not None]
print(f"targets met: {sum(r['met'] for r in judged)} of {len(judged)}")

with open(os.path.join(logs, "summary.json"), "w") as f:
    json.dump(dict(gpu=gpu, date=time.strftime("%Y-%m-%d"), rows=rows), f, indent=1)

# The plot: one bar per row with a ratio, its target as a tick.
plotted = [r for r in rows if r["ratio"] is not None]
try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(11, 0.28 * len(plotted) + 1.5))
    ys = range(len(plotted))
    colors = ["tab:green" if r["met"] else "tab:red" if r["met"] is False else "tab:gray" for r in plotted]
    ax.barh(list(ys), [r["ratio"] for r in plotted], color=colors)
    for y, r in zip(ys, plotted):
        if r["target"] is not None:
            ax.plot([r["target"]] * 2, [y - 0.4, y + 0.4], color="black")
    ax.set_yticks(list(ys))
    ax.set_yticklabels([f"{r['area']}: {r['case']}" for r in plotted], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("ratio to the anchor (black tick: target; green met, red not, gray no target)")
    ax.set_title(f"flashscan vs anchors, {gpu}")
    fig.savefig(os.path.join(logs, "summary.png"), dpi=100, bbox_inches="tight")
    print(f"wrote {logs}/summary.json and summary.png")
except ImportError:
    scale, left, h = 200.0, 520, 16
    top = max([r["ratio"] for r in plotted] + [r["target"] or 0 for r in plotted] + [1.0])
    width = left + int(scale * top) + 60
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{h * len(plotted) + 40}" font-family="sans-serif" font-size="10">',
           f'<text x="4" y="14">flashscan vs anchors, {gpu} (bar: ratio; black tick: target)</text>']
    for i, r in enumerate(plotted):
        y = 24 + i * h
        color = {True: "green", False: "firebrick", None: "gray"}[r["met"]]
        label = f"{r['area']}: {r['case']}".replace("&", "and").replace("<", "").replace(">", "")
        svg.append(f'<text x="4" y="{y + 11}">{label}</text>')
        svg.append(f'<rect x="{left}" y="{y + 2}" width="{scale * r["ratio"]:.1f}" height="{h - 4}" fill="{color}"/>')
        svg.append(f'<text x="{left + scale * r["ratio"] + 4:.1f}" y="{y + 11}">{r["ratio"]:.2f}</text>')
        if r["target"] is not None:
            x = left + scale * r["target"]
            svg.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y}" y2="{y + h}" stroke="black" stroke-width="2"/>')
    svg.append("</svg>")
    with open(os.path.join(logs, "summary.svg"), "w") as f:
        f.write("\n".join(svg))
    print(f"wrote {logs}/summary.json and summary.svg (matplotlib not installed: no PNG)")
