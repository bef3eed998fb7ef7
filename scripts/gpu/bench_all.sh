#!/usr/bin/env bash
# Every benchmark of the project and its anchors in one run on the GPU machine, then one
# table of ratios against the anchors and the issues' targets (gpu/summary.py; also
# summary.json and a plot). Run from the bundle folder that scripts/bundle.sh made:
#
#   gpu/bench_all.sh [--quick]          # logs, JSON and plots under $LOGS (default: logs)
#
# Parts, in order (ONLY=part runs one; the summary reads whatever the folder holds):
#   norm       LayerNorm / RMSNorm vs the device-to-device copy
#   conv       causal conv1d fwd / bwd and the decode steps vs the copy
#   attention  forward vs torch SDPA flash / cuDNN / efficient / naive (bench_attention.py)
#   attention_bwd  backward, fast and deterministic, vs torch's backward kernels
#   scan       selective scan forward vs PyTorch references and the HBM / ex2 floors
#   scan_bwd   its backward, atomic and deterministic
#   decode     Flash-Decoding vs torch SDPA (default dispatch and flash backend)
#   examples   gpt_block and mamba_block: self-checks, prefill and generation tokens/s
#   summary    the table
# --quick: fewer sizes (the acceptance sizes stay): 5.5 minutes on an H100; the full
# sweeps take several times longer.
cd "$(dirname "$0")/.."
export LOGS="${LOGS:-logs}"
mkdir -p "$LOGS"
quick=""
[ "${1:-}" = "--quick" ] && quick="--quick"
part() { [ -z "${ONLY:-}" ] || [ "${ONLY:-}" = "$1" ]; }
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv 2>/dev/null | tee "$LOGS/gpu.txt"

if part norm; then
  timeout 120 examples/bench_norm >"$LOGS/bench_norm.json" 2>"$LOGS/bench_norm.txt"; cat "$LOGS/bench_norm.txt"
fi
if part conv; then
  timeout 300 examples/bench_conv >"$LOGS/bench_conv.json" 2>"$LOGS/bench_conv.txt"; cat "$LOGS/bench_conv.txt"
fi
if part attention; then
  timeout 600 python3 gpu/bench_attention.py examples/bench_attention $quick --out "$LOGS" 2>&1 | tee "$LOGS/bench_attention.txt"
fi
if part attention_bwd; then
  timeout 900 python3 gpu/bench_attention.py examples/bench_attention --bwd $quick --out "$LOGS" 2>&1 \
    | tee "$LOGS/bench_attention_bwd.txt"
fi
if part scan; then
  timeout 900 python3 gpu/bench_scan.py examples/bench_scan --fwd-only $quick --out "$LOGS" 2>&1 | tee "$LOGS/bench_scan.txt"
fi
if part scan_bwd; then
  timeout 900 python3 gpu/bench_scan.py examples/bench_scan --bwd-only $quick --out "$LOGS" 2>&1 | tee "$LOGS/bench_scan_bwd.txt"
fi
if part decode; then
  timeout 600 python3 gpu/bench_decode.py examples/bench_decode $quick --out "$LOGS" 2>&1 | tee "$LOGS/bench_decode.txt"
fi
if part examples; then
  # Self-checks (steps vs prefill, GPU vs CPU), then a timed prefill + generation.
  timeout 300 examples/gpt_block --batch 8 --prompt-len 512 --generate 128 2>&1 | tee "$LOGS/gpt_block_bf16.txt"
  timeout 300 examples/mamba_block --batch 8 --prompt-len 512 --generate 128 2>&1 | tee "$LOGS/mamba_block_bf16.txt"
fi
if part summary; then
  python3 gpu/summary.py "$LOGS" 2>&1 | tee "$LOGS/summary.txt"
fi
