#!/usr/bin/env bash
# A rank that fails ends every rank with a non-zero exit code within a bounded time, never a hang
# (DESIGN.md "Distributed", engine/communicator.h). One case per call:
#   killed  one rank of `mpirun -np 2 ppo train` is killed (SIGKILL) while both train: mpirun ends
#           the other and exits non-zero
#   error   one rank's config is wrong (an MPMD launch gives it alone a bad --set): it reports the
#           error and ends the job (MPI_Abort) while rank 0 waits for it in a collective
#   hang    one rank never enters a collective (test_communicator's skipped case): the other's
#           watchdog (PPO_COMM_TIMEOUT_S=2) ends it with exit code 124, and mpirun the job
# Each must end within BOUND seconds of the failure.
#   rank_failure.sh <killed|error|hang> <mpirun> <ppo> <test_communicator> <work dir>
set -u
case_name=$1 mpirun=$2 ppo=$3 test_communicator=$4 work=$5
BOUND=30
mpirun="$mpirun --allow-run-as-root --oversubscribe"
export OMP_NUM_THREADS=1
rm -rf "$work" && mkdir -p "$work"
log=$work/$case_name.log
# a demo run of many PPO steps (it would take minutes): the failure comes long before its end
train_args=(train --device cpu --set total_steps=100000 --set rollout_batch_size=16 --set micro_batch_size=8
  --set demo.sft_examples=4096 --set demo.rm_pairs=128 --set demo.rm_eval_pairs=32 --set demo.eval_prompts=32
  --set sft.epochs=50 --set rm.epochs=1)

fail() {
  echo "FAIL ($case_name): $*"
  echo "---- output of the job ----"
  cat "$log"
  exit 1
}

# Waits up to BOUND seconds for process $1 to end; its exit code in $rc, the seconds in $waited.
wait_bounded() {
  local pid=$1 start=$SECONDS
  while kill -0 "$pid" 2>/dev/null; do
    if (( SECONDS - start > BOUND )); then
      kill -9 "$pid" 2>/dev/null
      fail "the job still runs $BOUND s after the failure (a hang)"
    fi
    sleep 0.2
  done
  wait "$pid"
  rc=$?
  waited=$(( SECONDS - start ))
}

# The rank processes mpirun ($1) started, as "pid rank" lines.
ranks_of() {
  local pid
  for pid in $(pgrep -P "$1"); do
    local rank
    rank=$(tr '\0' '\n' < /proc/"$pid"/environ 2>/dev/null | sed -n 's/^OMPI_COMM_WORLD_RANK=//p')
    [[ -n $rank ]] && echo "$pid $rank"
  done
}

case $case_name in
  killed)
    $mpirun -np 2 "$ppo" "${train_args[@]}" --set output_dir="$work/run" > "$log" 2>&1 &
    job=$!
    # both ranks training: SFT steps (each one a collective) are being logged
    for _ in $(seq 1 600); do
      [[ -s $work/run/sft_metrics.jsonl ]] && (( $(ranks_of "$job" | wc -l) == 2 )) && break
      kill -0 "$job" 2>/dev/null || fail "the job ended before a rank was killed"
      sleep 0.1
    done
    [[ -s $work/run/sft_metrics.jsonl ]] || fail "no SFT step logged within 60 s"
    victim=$(ranks_of "$job" | awk '$2 == 1 {print $1}')
    survivor=$(ranks_of "$job" | awk '$2 == 0 {print $1}')
    [[ -n $victim && -n $survivor ]] || fail "ranks 0 and 1 not found among mpirun's children"
    kill -9 "$victim"
    wait_bounded "$job"
    (( rc != 0 )) || fail "mpirun exited 0 after rank 1 was killed"
    # rank 0 has ended too (gone, or a zombie nobody reaped: state Z), at most 5 s after mpirun
    for _ in $(seq 1 50); do
      state=$(awk '{print $3}' /proc/"$survivor"/stat 2>/dev/null)
      [[ -z $state || $state == Z ]] && break
      sleep 0.1
    done
    [[ -z $state || $state == Z ]] || fail "rank 0 (pid $survivor, state $state) still runs 5 s after mpirun ended"
    ;;
  error)
    $mpirun -np 1 "$ppo" "${train_args[@]}" --set output_dir="$work/run" : \
      -np 1 "$ppo" "${train_args[@]}" --set output_dir="$work/run" --set totl_steps=2 > "$log" 2>&1 &
    wait_bounded $!
    (( rc != 0 )) || fail "mpirun exited 0 though rank 1 failed"
    grep -q "error (rank 1 of 2): .*did you mean 'total_steps'" "$log" || fail "rank 1's error is not reported"
    ;;
  hang)
    PPO_COMM_TIMEOUT_S=2 $mpirun -np 2 "$test_communicator" --no-skip --test-case="*never enters*" > "$log" 2>&1 &
    wait_bounded $!
    (( rc != 0 )) || fail "mpirun exited 0 though a rank hung"
    grep -q "waited more than 2 s for the other ranks" "$log" || fail "the watchdog's message is missing"
    ;;
  *)
    echo "usage: rank_failure.sh <killed|error|hang> <mpirun> <ppo> <test_communicator> <work dir>"
    exit 2
    ;;
esac
echo "PASS ($case_name): mpirun exited with code $rc, $waited s after the failure"
