#!/usr/bin/env bash
# On the GPU machine, from the bundle folder: every test (GPU ones included), the
# compute-sanitizer memcheck and racecheck passes on small and ragged cases, then the
# benchmarks (norm; attention against torch in one run). Logs under $LOGS.
cd "$(dirname "$0")/.."
export LOGS="${LOGS:-logs}"
mkdir -p "$LOGS"
TEST_TIMEOUT="${TEST_TIMEOUT:-300}" ./run_all.sh --no-bench
san="$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)"
for tool in memcheck racecheck; do
  for t in "gpu_attention gpu_odd_shapes" "gpu_attention gpu_every_head_dim" "gpu_primitives" "gpu_norm layer_norm_far_from_zero"; do
    set -- $t
    timeout 240 "$san" --tool "$tool" --error-exitcode 9 "tests/$1" --include-ignored --test-threads=1 ${2:-} >"$LOGS/sanitizer_${tool}_$1_${2:-all}.log" 2>&1
    echo "sanitizer $tool $t: rc=$? $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|test result' "$LOGS/sanitizer_${tool}_$1_${2:-all}.log" | tr '\n' ' ')"
  done
done | tee "$LOGS/sanitizer_summary.txt"
timeout 120 examples/bench_norm >"$LOGS/bench_norm.json" 2>"$LOGS/bench_norm.txt"; cat "$LOGS/bench_norm.txt"
timeout 300 python3 gpu/bench_attention.py examples/bench_attention --out "$LOGS" 2>&1 | tee "$LOGS/bench_attention.txt"
