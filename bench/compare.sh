#!/usr/bin/env bash
# Engine vs PyTorch peer on one config and device: runs `ppo bench --fixed-response-length --json`
# and bench/peers/torch_ppo_step.py (--fixed-response-length, eager, the peer's default dtype:
# fp32 on cpu, bf16 on cuda) with the same config, --set overrides, steps and one warm-up step, then
# prints one table (bench/compare_table.py): per-phase seconds, response tokens/s, peak memory,
# peer/engine ratios.
#
#   bench/compare.sh CONFIG [--device cpu|cuda] [--steps N] [--threads N] [--busy N] [--json OUT] [--set k=v ...]
#
# --threads N: OMP_NUM_THREADS / OPENBLAS_NUM_THREADS / MKL_NUM_THREADS = N for both sides (CPU runs;
# torch sizes its pool from OMP_NUM_THREADS). On a machine shared with other work, spinning OpenMP
# threads of a side that asks for every core can lose most of its time to waiting: compare both
# with the same N, and say which N.
# --busy N: N CPU-bound processes (a shell busy loop each) run beside both sides for the whole
# comparison, the same competition for the cores during the engine's run and the peer's; stopped
# when the script ends.
#
# PPO (the engine binary) defaults to build/ppo; PYTHON to python3 (needs torch + transformers).
# The two runs' logs and JSON reports stay in $WORK (default: a temporary directory, printed).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
PPO="${PPO:-$here/../build/ppo}"
PYTHON="${PYTHON:-python3}"

[[ $# -ge 1 ]] || { echo "usage: $0 CONFIG [--device cpu|cuda] [--steps N] [--threads N] [--busy N] [--json OUT] [--set k=v ...]" >&2; exit 2; }
config="$1"; shift
device=cpu steps=3 json="" sets=() threads="" busy=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --device) device="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    --json) json="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --busy) busy="$2"; shift 2 ;;
    --set) sets+=(--set "$2"); shift 2 ;;
    *) echo "$0: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
[[ -x "$PPO" ]] || { echo "$0: engine binary '$PPO' not found (build the 'ppo' target or set PPO=)" >&2; exit 2; }
if [[ -n "$threads" ]]; then export OMP_NUM_THREADS="$threads" OPENBLAS_NUM_THREADS="$threads" MKL_NUM_THREADS="$threads"; fi
WORK="${WORK:-$(mktemp -d)}"
mkdir -p "$WORK"
[[ "$busy" =~ ^[0-9]+$ ]] || { echo "$0: --busy takes a number of processes, got '$busy'" >&2; exit 2; }
busy_pids=()
stop_busy() { for pid in "${busy_pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap stop_busy EXIT
for ((i = 0; i < busy; i++)); do
  ( while :; do :; done ) &
  busy_pids+=($!)
done

echo "== engine: $PPO bench ($device)  [log $WORK/engine.log]"
"$PPO" bench --config "$config" --device "$device" --steps "$steps" --warmup 1 --fixed-response-length \
  --json "$WORK/engine.json" "${sets[@]}" > "$WORK/engine.log" 2>&1 || { tail -20 "$WORK/engine.log"; exit 1; }
echo "== peer: torch_ppo_step.py ($device, eager)  [log $WORK/peer.log]"
"$PYTHON" "$here/peers/torch_ppo_step.py" --config "$config" --device "$device" --steps "$steps" --warmup 1 \
  --fixed-response-length --json "$WORK/peer.json" "${sets[@]}" > "$WORK/peer.log" 2>&1 || { tail -20 "$WORK/peer.log"; exit 1; }
echo
echo "# threads: ${threads:-default} (OMP_NUM_THREADS=${OMP_NUM_THREADS:-unset}); $(nproc --all) cores; $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); busy processes beside: $busy; load average now: $(cut -d' ' -f1-3 /proc/loadavg)"
"$PYTHON" "$here/compare_table.py" "$WORK/engine.json" "$WORK/peer.json" ${json:+--json "$json"}
