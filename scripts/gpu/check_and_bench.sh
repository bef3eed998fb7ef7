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
  for t in "gpu_attention gpu_odd_shapes" "gpu_attention gpu_every_head_dim" "gpu_primitives" "gpu_norm layer_norm_far_from_zero" "gpu_scan gpu_large_delta_stays_finite" "gpu_scan gpu_two_halves_equal_one_run"; do
    set -- $t
    timeout 240 "$san" --tool "$tool" --error-exitcode 9 "tests/$1" --include-ignored --test-threads=1 ${2:-} >"$LOGS/sanitizer_${tool}_$1_${2:-all}.log" 2>&1
    echo "sanitizer $tool $t: rc=$? $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|test result' "$LOGS/sanitizer_${tool}_$1_${2:-all}.log" | tr '\n' ' ')"
  done
done | tee "$LOGS/sanitizer_summary.txt"
timeout 120 examples/bench_norm >"$LOGS/bench_norm.json" 2>"$LOGS/bench_norm.txt"; cat "$LOGS/bench_norm.txt"
timeout 120 tests/gpu_scan --include-ignored --nocapture gpu_every_state_tier_and_partial_ctas 2>&1 | grep -E "error|test result" >"$LOGS/scan_errors.txt"
sort -t' ' -k7 -g "$LOGS/scan_errors.txt" | awk '{print $1, $6, $8}' | sort | awk '{k=$1" "$2; if ($3+0 > m[k]+0) m[k]=$3} END {for (k in m) print "max", k, m[k]}' | sort
timeout 420 python3 gpu/bench_scan.py examples/bench_scan --out "$LOGS" 2>&1 | tee "$LOGS/bench_scan.txt"
timeout 300 python3 gpu/bench_attention.py examples/bench_attention --out "$LOGS" 2>&1 | tee "$LOGS/bench_attention.txt"
