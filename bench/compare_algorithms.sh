#!/usr/bin/env bash
# The algorithm comparison of bench/RESULTS.md: `ppo train --set algorithm=A --set seed=S` on the
# demo task (its default settings otherwise) for each algorithm and seed, one run at a time (one
# CPU thread each, the demo's own choice), then the table (bench/compare_algorithms.py: held-out
# gold and proxy gain, KL to the SFT policy, step time, arena bytes) and one SVG overlaying the
# algorithms' gold-reward curves, each the mean over the seeds (`ppo plot`).
#
#   bench/compare_algorithms.sh [OUT_DIR]        (default runs/compare)
#
# PPO (the binary) defaults to build/ppo; ALGORITHMS to "ppo grpo rloo reinforce_pp dpo"; SEEDS to
# "1 2 3 4"; extra `ppo train` arguments go in EXTRA (e.g. EXTRA="--set total_steps=30").
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
PPO="${PPO:-$here/../build/ppo}"
ALGORITHMS="${ALGORITHMS:-ppo grpo rloo reinforce_pp dpo}"
SEEDS="${SEEDS:-1 2 3 4}"
out="${1:-runs/compare}"
mkdir -p "$out"

for a in $ALGORITHMS; do
  for s in $SEEDS; do
    dir="$out/$a-seed$s"
    rm -rf "$dir"
    echo "== $a, seed $s -> $dir" >&2
    # shellcheck disable=SC2086
    "$PPO" train --device cpu --set "algorithm=$a" --set "seed=$s" --set "output_dir=$dir" ${EXTRA:-} \
      > "$dir.log" 2>&1 || { tail -5 "$dir.log" >&2; exit 1; }
    grep -E "^gold reward|^reward-model score" "$dir.log" >&2
  done
done

python3 "$here/compare_algorithms.py" "$out" $ALGORITHMS
curves=()
for a in $ALGORITHMS; do
  files=()
  for s in $SEEDS; do files+=("$out/$a-seed$s/metrics.jsonl"); done
  curves+=(--curve "$a=$(IFS=,; echo "${files[*]}")")
done
"$PPO" plot --metric objective/gold_scores "${curves[@]}" --out "$out/gold_reward.svg" \
  --title "demo task: gold reward of each step's samples, mean over seeds $SEEDS"
