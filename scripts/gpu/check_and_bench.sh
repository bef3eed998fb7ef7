#!/usr/bin/env bash
# On the GPU machine, from the bundle folder: every test (GPU ones included), the
# compute-sanitizer memcheck and racecheck passes on small and ragged cases, the demo,
# the example models (gpt_block, mamba_block: self-checks, then small runs), then the
# benchmarks (norm; attention and the selective scan against torch, each in one run;
# conv1d and the decode steps against the copy bandwidth). Logs under $LOGS.
#
#   [QUICK=1] [ONLY=tests|bench_PART] gpu/check_and_bench.sh
#   runs one part (PART: a part of gpu/bench_all.sh, e.g. bench_attention, bench_summary)
cd "$(dirname "$0")/.."
export LOGS="${LOGS:-logs}"
mkdir -p "$LOGS"
part() { [ -z "${ONLY:-}" ] || [ "${ONLY:-}" = "$1" ]; }

if part tests; then
  TEST_TIMEOUT="${TEST_TIMEOUT:-300}" ./run_all.sh --no-bench
  san="$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)"
  for tool in memcheck racecheck; do
    for t in "gpu_attention gpu_odd_shapes" "gpu_attention gpu_every_head_dim" "gpu_primitives" \
      "gpu_norm layer_norm_far_from_zero" "gpu_scan gpu_large_delta_stays_finite" \
      "gpu_scan gpu_two_halves_equal_one_run" "gpu_scan gpu_every_kernel_variant" \
      "gpu_scan gpu_backward_small_and_ragged" \
      "gpu_conv gpu_conv_two_halves_equal_one_run" "gpu_conv gpu_conv_options_one_at_a_time" \
      "gpu_decode gpu_decode_small_ragged" "gpu_ops gpu_ops_edge_shapes" \
      "gpu_flash_decode gpu_empty_sequences_and_masked_rows" \
      "gpu_flash_decode gpu_paged_equals_contiguous_and_matches_the_cpu_path" \
      "gpu_attention_bwd gpu_rows_and_keys_without_partners" "gpu_attention_bwd gpu_backward_odd_shapes" \
      "gpu_attention_bwd gpu_exchange_tile_small_and_ragged"; do
      set -- $t
      timeout 240 "$san" --tool "$tool" --error-exitcode 9 "tests/$1" --include-ignored --test-threads=1 ${2:-} \
        >"$LOGS/sanitizer_${tool}_$1_${2:-all}.log" 2>&1
      echo "sanitizer $tool $t: rc=$? $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|test result' "$LOGS/sanitizer_${tool}_$1_${2:-all}.log" | tr '\n' ' ')"
    done
  done | tee "$LOGS/sanitizer_summary.txt"
  # The scan's measured errors against the f64 reference (worst per dtype and result).
  timeout 120 tests/gpu_scan --include-ignored --nocapture gpu_every_state_tier_and_partial_ctas 2>&1 \
    | grep -E " error " | awk '{k=$1" "$6; if ($8+0 > m[k]+0) m[k]=$8} END {for (k in m) print "scan max", k, m[k]}' \
    | sort | tee "$LOGS/scan_errors.txt"
  timeout 60 examples/demo 2>&1 | tee "$LOGS/demo.txt"
  # The example models: self-checks (steps vs prefill, GPU vs CPU), then a small run each.
  for dt in bf16 f16; do
    timeout 120 examples/gpt_block --dtype $dt --batch 4 --prompt-len 256 --generate 32 2>&1 | tee "$LOGS/gpt_block_$dt.txt"
    timeout 120 examples/gpt_block --dtype $dt --rotary --size small --no-check 2>&1 | tee "$LOGS/gpt_block_rotary_$dt.txt"
  done
  for dt in bf16 f16 f32; do
    timeout 120 examples/mamba_block --dtype $dt --batch 4 --prompt-len 256 --generate 32 2>&1 | tee "$LOGS/mamba_block_$dt.txt"
  done
fi
# The benchmarks: gpu/bench_all.sh's parts (ONLY=bench_X runs its part X).
if [ -z "${ONLY:-}" ]; then
  gpu/bench_all.sh ${QUICK:+--quick}
elif [ "${ONLY#bench_}" != "$ONLY" ]; then
  ONLY="${ONLY#bench_}" gpu/bench_all.sh ${QUICK:+--quick}
fi
