#!/usr/bin/env bash
# GPU validation in one command, sized for one device call (<= 10 minutes) on a machine with a GPU:
#   1. configure and build for sm_90 (PPO_CUDA_ARCHS overrides) in build-gpu/
#   2. every test (ctest), CUDA cases included (one-rank NCCL in test_communicator), and a one-rank
#      `ppo bench` on NCCL (PPO_COMM=nccl)
#   3. the CUDA test cases (doctest filter *cuda*) of tests/ops under compute-sanitizer memcheck
#      (PPO_SYNC_LAUNCHES=1)
#   4. `ppo bench` on bench/configs/tiny.json, then engine vs PyTorch peer (bench/compare.sh, tables
#      into the summary, JSON to $OUT/compare_<preset>.json) on the gpt2-124m and
#      qwen2.5-0.5b-shape presets when python3 has torch + transformers with CUDA (else the engine
#      alone); extra `ppo bench` variants: PPO_BENCH_ARGS, ';'-separated;
#      and every program built under bench/kernels (kernel_bench: its table joins the summary, its
#      JSON goes to $OUT/kernel_bench.json), after bench/peers/sdpa_bench.py (its JSON to
#      $OUT/sdpa_bench.json) when python3 has torch with CUDA
#   5. the other CUDA test binaries under memcheck, and tests/ops under racecheck
# Logs go to build-gpu/gpu_check/; the summary is written to summary.txt there and printed last.
# With OUT set, $OUT receives only summary.txt, the benchmark JSON files and gpu_check_logs.tar.gz
# (the device tool brings back at most 8 files), on every exit, a failed build included. Exit
# status: nonzero when any step failed.
# Host libraries: the device image has nvcc and CMake but may lack the Debian -dev packages of the
# build. When the folder $GPU_CHECK_DEPS (default .deps) holds .deb files they are unpacked under
# build-gpu/deps and put on the pkg-config, CMake and loader paths. tools/fetch_device_deps.sh
# downloads them on a Debian 12 machine (about 14 MB); name .deps in the device call's carry.
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

# On every exit: the summary and the logs into $OUT (when set).
finish() {
  if [ -n "${OUT:-}" ]; then
    cp "$SUMMARY" "$OUT/summary.txt"
    tar -czf "$OUT/gpu_check_logs.tar.gz" -C "$(dirname "$LOGS")" "$(basename "$LOGS")"
  fi
}
trap finish EXIT

# Unpacks carried .deb files (see the header) and points the build and the loader at them.
use_carried_debs() {
  local dir="${GPU_CHECK_DEPS:-.deps}" root="$PWD/$BUILD/deps" lib deb
  compgen -G "$dir/*.deb" >/dev/null || return 0
  mkdir -p "$root" || return 1
  for deb in "$dir"/*.deb; do dpkg -x "$deb" "$root" || return 1; done
  # pkg-config files name absolute /usr paths: point them into the unpacked tree
  find "$root" -name '*.pc' -exec sed -i -e "s#=/usr/#=$root/usr/#g" -e "s#=/usr\$#=$root/usr#" {} +
  lib="$root/usr/lib/x86_64-linux-gnu"
  export PKG_CONFIG_PATH="$lib/pkgconfig:$lib/openblas-pthread/pkgconfig:$root/usr/share/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
  export CMAKE_PREFIX_PATH="$root/usr${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
  # after the system's: carried libraries only fill in what the image lacks
  export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$lib:$lib/openblas-pthread"
  command -v pkg-config >/dev/null || [ ! -x "$root/usr/bin/pkgconf" ] || export PKG_CONFIG="$root/usr/bin/pkgconf"
  note "host libraries: unpacked $(ls "$dir"/*.deb | wc -l) carried .deb files from $dir"
}

note "gpu_check $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
note "device: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo 'nvidia-smi unavailable')"
note "nvcc: $(/usr/local/cuda/bin/nvcc --version 2>/dev/null | tail -1)"

# ---- 1. build -------------------------------------------------------------------------------------
use_carried_debs || note "host libraries: unpacking the carried .deb files failed"
step configure 120 cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DPPO_CUDA_ARCHS="${PPO_CUDA_ARCHS:-90}" &&
  step build 300 cmake --build "$BUILD" -j"$JOBS"
if [ $FAILED -ne 0 ]; then
  note "build failed: see $LOGS/configure.log and $LOGS/build.log"
  grep -m5 -E "Could NOT find|No package '|not found|error" "$LOGS/configure.log" "$LOGS/build.log" 2>/dev/null |
    tee -a "$SUMMARY"
  exit 1
fi
if ! grep -q "^CMAKE_CUDA_COMPILER:.*nvcc" "$BUILD/CMakeCache.txt" 2>/dev/null; then
  note "FAIL: CMake found no nvcc; this build has no CUDA backend"
  FAILED=1
fi

# ---- 2. all tests ---------------------------------------------------------------------------------
step ctest 240 ctest --test-dir "$BUILD" --output-on-failure -j4
# A one-rank PPO run on real NCCL (PPO_COMM=nccl: gradients reduce-scattered, weights all-gathered
# through NCCL; NCCL refuses two ranks on one GPU, so the multi-rank NCCL path runs on the emulated
# device in CI, and on a machine with several GPUs under mpirun)
step nccl-one-rank 120 env PPO_COMM=nccl "$BUILD/ppo" bench --config bench/configs/tiny.json --device cuda --steps 2 \
  --warmup 1

# ---- 3. compute-sanitizer over the CUDA test binaries ------------------------------------------------
# Binaries with CUDA test cases, the op tests (one kernel family each) first. Every CUDA test case
# has "cuda" in its name: the doctest filter skips the CPU-only cases (finite differences in f64).
CUDA_TESTS=()
while IFS= read -r file; do
  bin="$BUILD/tests/$(basename "$file" .cpp)"
  [ -x "$bin" ] && CUDA_TESTS+=("$bin")
done < <(grep -rlE "CUDA_CASE|cuda_backend_or_skip" tests --include='test_*.cpp' | sort | grep '^tests/ops/'
         grep -rlE "CUDA_CASE|cuda_backend_or_skip" tests --include='test_*.cpp' | sort | grep -v '^tests/ops/')
sanitize() {  # sanitize TOOL BINARY
  step "sanitize-$1-$(basename "$2")" 180 env PPO_SYNC_LAUNCHES=1 \
    "$SANITIZER" --tool "$1" --error-exitcode 1 "$2" --test-case='*cuda*'
}
is_op_test() { [ -f "tests/ops/$(basename "$1").cpp" ]; }
HAVE_SANITIZER=1
if [ ! -x "$SANITIZER" ]; then
  note "compute-sanitizer not found: sanitizer steps skipped"
  FAILED=1
  HAVE_SANITIZER=0
else  # memcheck of the op tests now; the rest after the benchmarks, so that they get their numbers
  for bin in "${CUDA_TESTS[@]}"; do is_op_test "$bin" && sanitize memcheck "$bin"; done
fi
[ ${#CUDA_TESTS[@]} -eq 0 ] && note "no CUDA test binaries found under $BUILD/tests"

# ---- 4. benchmarks --------------------------------------------------------------------------------
PPO="$BUILD/ppo"
JSON_DIR="${OUT:-$LOGS}"
HAVE_TORCH_CUDA=0 HAVE_PEER=0  # torch with CUDA (the SDPA peer); and transformers (the PPO peer)
python3 -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" >/dev/null 2>&1 && HAVE_TORCH_CUDA=1
[ $HAVE_TORCH_CUDA -eq 1 ] && python3 -c "import transformers" >/dev/null 2>&1 && HAVE_PEER=1
if [ -x "$PPO" ] && "$PPO" --help 2>&1 | grep -qw bench; then
  "$PPO" bench --help >"$LOGS/bench-help.log" 2>&1
  step bench-tiny 90 "$PPO" bench --config bench/configs/tiny.json --device cuda --json "$JSON_DIR/bench_tiny.json"
  # engine vs the PyTorch peer (bench/compare.sh: same config, fixed response length, one table)
  for preset in gpt2-124m qwen2.5-0.5b-shape; do
    if [ $HAVE_PEER -eq 1 ]; then
      step "compare-$preset" 240 env PPO="$PPO" WORK="$LOGS/compare-$preset" bash bench/compare.sh \
        "bench/configs/$preset.json" --device cuda --steps 3 --json "$JSON_DIR/compare_$preset.json" &&
        sed -n '/^# threads/,$p' "$LOGS/compare-$preset.log" >>"$SUMMARY"
    else
      step "bench-$preset" 180 "$PPO" bench --config "bench/configs/$preset.json" --device cuda --fixed-response-length \
        --json "$JSON_DIR/bench_$preset.json"
    fi
  done
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
SDPA_ARGS=()
if [ ${#KERNEL_BENCHES[@]} -gt 0 ]; then
  if [ $HAVE_TORCH_CUDA -eq 1 ]; then
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

# ---- 5. the rest of the sanitizer runs ---------------------------------------------------------------
if [ $HAVE_SANITIZER -eq 1 ]; then
  for bin in "${CUDA_TESTS[@]}"; do is_op_test "$bin" || sanitize memcheck "$bin"; done
  # racecheck sees shared memory only; the model and PPO tests run the same kernels as tests/ops
  for bin in "${CUDA_TESTS[@]}"; do is_op_test "$bin" && sanitize racecheck "$bin"; done
  if grep -l "SKIP CUDA" "$LOGS"/sanitize-*.log >/dev/null 2>&1; then
    note "FAIL: CUDA cases skipped under the sanitizer (no GPU answered?)"
    FAILED=1
  fi
fi

# ---- summary --------------------------------------------------------------------------------------
note "overall: $([ $FAILED -eq 0 ] && echo PASS || echo FAIL) (logs in $LOGS)"
echo
echo "===== summary ====="
cat "$SUMMARY"
exit $FAILED
