#!/usr/bin/env bash
# GPU validation in one command, sized for one device call (<= 10 minutes) on a machine with a GPU:
#   1. configure and build for sm_90 (PPO_CUDA_ARCHS overrides) in build-gpu/
#   2. every test (ctest), CUDA cases included
#   3. the CUDA test binaries (label gpu) under compute-sanitizer memcheck and racecheck, with
#      PPO_SMALL=1 (tests may shrink their shapes) and PPO_SYNC_LAUNCHES=1
#   4. `ppo bench` when the binary has that command (extra variants: PPO_BENCH_ARGS, ';'-separated),
#      and every program built under bench/kernels (kernel_bench: its table joins the summary, its
#      JSON goes to $OUT/kernel_bench.json), after bench/peers/sdpa_bench.py (its JSON to
#      $OUT/sdpa_bench.json) when python3 has torch with CUDA
# Logs go to build-gpu/gpu_check/; the summary is written to summary.txt there and printed last.
# With OUT set, $OUT receives only summary.txt, the benchmark JSON files and gpu_check_logs.tar.gz
# (the device tool brings back at most 8 files). Exit status: nonzero when any step failed.
# The whole run keeps within GPU_CHECK_BUDGET_S seconds (default 570): each step's limit is cut to
# what is left, and steps that find no time left are reported as failed.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

BUILD="${GPU_CHECK_BUILD_DIR:-build-gpu}"
LOGS="$BUILD/gpu_check"
mkdir -p "$LOGS"
SUMMARY="$LOGS/summary.txt"
: >"$SUMMARY"
FAILED=0
JOBS="$(nproc)"
SANITIZER="$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)"

BUDGET="${GPU_CHECK_BUDGET_S:-570}"

# step NAME TIMEOUT_S COMMAND...: runs the command with its output in NAME.log, records the outcome.
step() {
  local name="$1" limit="$2"
  shift 2
  local start=$SECONDS left=$((BUDGET - SECONDS - 15))
  if [ $left -lt 10 ]; then
    printf '%-48s %-24s\n' "$name" "FAIL (no time left)" | tee -a "$SUMMARY"
    FAILED=1
    return 1
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  timeout --kill-after=10 "$limit" "$@" >"$LOGS/$name.log" 2>&1
  local rc=$?
  local verdict=PASS
  if [ $rc -ne 0 ]; then
    verdict="FAIL (rc $rc$([ $rc -eq 124 ] && echo ', timed out'))"
    FAILED=1
  fi
  printf '%-48s %-24s %4ds\n' "$name" "$verdict" $((SECONDS - start)) | tee -a "$SUMMARY"
  return $rc
}

note() { echo "$*" | tee -a "$SUMMARY"; }

note "gpu_check $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
note "device: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo 'nvidia-smi unavailable')"
note "nvcc: $(/usr/local/cuda/bin/nvcc --version 2>/dev/null | tail -1)"

# ---- 1. build -------------------------------------------------------------------------------------
step configure 120 cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DPPO_CUDA_ARCHS="${PPO_CUDA_ARCHS:-90}" &&
  step build 300 cmake --build "$BUILD" -j"$JOBS"
if [ $FAILED -ne 0 ]; then
  note "build failed: see $LOGS/configure.log and $LOGS/build.log"
  cat "$SUMMARY"
  exit 1
fi
if ! grep -q "^CMAKE_CUDA_COMPILER:.*nvcc" "$BUILD/CMakeCache.txt" 2>/dev/null; then
  note "FAIL: CMake found no nvcc; this build has no CUDA backend"
  FAILED=1
fi

# ---- 2. all tests ---------------------------------------------------------------------------------
step ctest 240 ctest --test-dir "$BUILD" --output-on-failure -j4

# ---- 3. compute-sanitizer over the CUDA test binaries ------------------------------------------------
CUDA_TESTS=()
while IFS= read -r file; do
  bin="$BUILD/tests/$(basename "$file" .cpp)"
  [ -x "$bin" ] && CUDA_TESTS+=("$bin")
done < <(grep -rlE "CUDA_CASE|cuda_backend_or_skip" tests --include='test_*.cpp' | sort)
if [ ! -x "$SANITIZER" ]; then
  note "compute-sanitizer not found: sanitizer steps skipped"
  FAILED=1
else
  for bin in "${CUDA_TESTS[@]}"; do
    name="$(basename "$bin")"
    for tool in memcheck racecheck; do
      step "sanitize-$tool-$name" 180 env PPO_SMALL=1 PPO_SYNC_LAUNCHES=1 \
        "$SANITIZER" --tool "$tool" --error-exitcode 1 "$bin"
    done
  done
  if grep -l "SKIP CUDA" "$LOGS"/sanitize-*.log >/dev/null 2>&1; then
    note "FAIL: CUDA cases skipped under the sanitizer (no GPU answered?)"
    FAILED=1
  fi
fi
[ ${#CUDA_TESTS[@]} -eq 0 ] && note "no CUDA test binaries found under $BUILD/tests"

# ---- 4. benchmarks --------------------------------------------------------------------------------
PPO="$BUILD/ppo"
if [ -x "$PPO" ] && "$PPO" --help 2>&1 | grep -qw bench; then
  "$PPO" bench --help >"$LOGS/bench-help.log" 2>&1
  step bench-default 180 "$PPO" bench
  IFS=';' read -r -a VARIANTS <<<"${PPO_BENCH_ARGS:-}"
  i=0
  for args in "${VARIANTS[@]}"; do
    [ -z "${args// /}" ] && continue
    i=$((i + 1))
    # shellcheck disable=SC2086  # the variant's words are separate arguments
    step "bench-variant-$i" 180 "$PPO" bench $args
    note "  bench-variant-$i = ppo bench $args"
  done
else
  note "ppo bench: not in this build (skipped)"
fi

KERNEL_BENCHES=()
if [ -d "$BUILD/bench" ]; then
  while IFS= read -r prog; do KERNEL_BENCHES+=("$prog"); done < <(find "$BUILD/bench" -path '*kernels*' -type f -executable | sort)
fi
if [ ${#KERNEL_BENCHES[@]} -eq 0 ]; then
  note "bench/kernels: no programs built (skipped)"
fi
# The PyTorch SDPA peer of the attention rows runs first, when python3 has torch with CUDA; each
# kernel benchmark then writes its JSON beside it and its table goes into the summary.
JSON_DIR="${OUT:-$LOGS}"
SDPA_ARGS=()
if [ ${#KERNEL_BENCHES[@]} -gt 0 ]; then
  if python3 -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" >/dev/null 2>&1; then
    step sdpa-peer 90 python3 bench/peers/sdpa_bench.py --json "$JSON_DIR/sdpa_bench.json" &&
      SDPA_ARGS=(--sdpa-json "$JSON_DIR/sdpa_bench.json")
  else
    note "sdpa peer: python3 has no torch with CUDA (attention rows get no SDPA ratio)"
  fi
fi
for prog in "${KERNEL_BENCHES[@]}"; do
  name="$(basename "$prog")"
  step "kernel-bench-$name" 120 "$prog" --json "$JSON_DIR/$name.json" ${SDPA_ARGS[@]+"${SDPA_ARGS[@]}"}
  sed -n '/^===== kernel_bench/,$p' "$LOGS/kernel-bench-$name.log" >>"$SUMMARY"
done

# ---- summary --------------------------------------------------------------------------------------
note "overall: $([ $FAILED -eq 0 ] && echo PASS || echo FAIL) (logs in $LOGS)"
if [ -n "${OUT:-}" ]; then
  cp "$SUMMARY" "$OUT/summary.txt"
  tar -czf "$OUT/gpu_check_logs.tar.gz" -C "$(dirname "$LOGS")" "$(basename "$LOGS")"
fi
echo
echo "===== summary ====="
cat "$SUMMARY"
exit $FAILED
