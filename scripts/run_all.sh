#!/usr/bin/env bash
# Runs on the GPU machine, from the bundle folder that scripts/bundle.sh made: every test
# binary with the GPU tests included (--include-ignored), then every benchmark example,
# and prints a summary. Logs go to $LOGS (default: ./logs).
#
#   ./run_all.sh [--no-bench]
cd "$(dirname "$0")"
logs="${LOGS:-logs}"
mkdir -p "$logs"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv 2>/dev/null | tee "$logs/gpu.txt"
summary=()
fail=0
for t in tests/*; do
  name="$(basename "$t")"
  start=$(date +%s)
  timeout "${TEST_TIMEOUT:-600}" "$t" --include-ignored --test-threads="${TEST_THREADS:-4}" >"$logs/test_$name.log" 2>&1
  rc=$?
  secs=$(( $(date +%s) - start ))
  result="$(grep -E '^test result' "$logs/test_$name.log" | tail -1)"
  [ $rc -ne 0 ] && fail=1
  summary+=("$(printf '%-6s %-22s %4ss  %s' "$([ $rc -eq 0 ] && echo PASS || echo FAIL)" "$name" "$secs" "$result")")
done
if [ "${1:-}" != "--no-bench" ]; then
  for b in examples/bench_*; do
    [ -x "$b" ] || continue
    name="$(basename "$b")"
    "$b" >"$logs/$name.json" 2>"$logs/$name.txt"
    rc=$?
    [ $rc -ne 0 ] && fail=1
    summary+=("$(printf '%-6s %-22s (see %s)' "$([ $rc -eq 0 ] && echo OK || echo FAIL)" "$name" "$logs/$name.txt")")
  done
fi
echo "================ summary ================"
printf '%s\n' "${summary[@]}" | tee "$logs/summary.txt"
for t in tests/*; do
  grep -E '^(test .* FAILED|---- )' "$logs/test_$(basename "$t").log" | head -20
done
exit $fail
