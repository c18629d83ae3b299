#!/usr/bin/env bash
# The whole GPU benchmark set of issue 13 in one go, for a session that gets a GPU (about 8 min on one GPU):
#   bash bench/gpu_suite.sh            # results in $OUT if set, else bench/gpu_out/
#   QUICK=1 DEVICE=cpu bash bench/gpu_suite.sh   # a smoke test of this script anywhere (seconds, records nothing)
# 1. the CUDA tests (sync-free training step under set_sync_debug_mode("error"), device pseudo-labels);
# 2. bench/prn_speed.py forward: folded vs the authors' per-patch loop, fp32 and bf16 + channels_last;
# 3. bench/train_speed.py: training-step images/s, P0/P64, batch 1/8, fp32/bf16/channels_last/compile, loop anchor;
# 4. bench/pseudo_labels_gpu.py: 4,015 maps of 512² at p = 64.
# Every step has its own time limit, so one hang cannot eat the rest; the sections recorded in
# bench/RESULTS.md, the logs and JSON lines are copied to the output folder at the end.
set -u
cd "$(dirname "$0")/.."
out="${OUT:-bench/gpu_out}"
mkdir -p "$out"
export OUT="$out"
status=0
device="${DEVICE:-cuda}"
if [ "${QUICK:-0}" = 1 ]; then
  prn_quick=(--size 64 --no_record) train_quick=(--quick) pl_quick=(--quick)
else
  prn_quick=() train_quick=(--record --budget_s 240) pl_quick=(--record)
fi
step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to $out/NAME.log, remember failures
  local name=$1 limit=$2
  shift 2
  echo "== $name (limit ${limit}s): $*" | tee -a "$out/suite.log"
  local t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@" > "$out/$name.log" 2>&1
  local rc=$?
  echo "   rc=$rc, $((SECONDS - t0)) s" | tee -a "$out/suite.log"
  tail -n 25 "$out/$name.log"
  [ $rc -eq 0 ] || status=1
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available() and torch.cuda.get_device_name(0))"
  nproc; cat /proc/loadavg; } > "$out/machine.txt" 2>&1
cat "$out/machine.txt"

step tests 90 python -m pytest -q -p no:cacheprovider -rs tests/test_sync_free.py tests/test_pseudo_labels_torch.py
step prn_speed_fp32 60 python bench/prn_speed.py --device "$device" --forward_only --budget_s 2 --repeats 20 \
  "${prn_quick[@]}"
step prn_speed_bf16_cl 60 python bench/prn_speed.py --device "$device" --forward_only --bf16 --channels_last \
  --budget_s 2 --repeats 20 "${prn_quick[@]}"
step train_speed 300 python bench/train_speed.py --device "$device" "${train_quick[@]}"
step pseudo_labels_gpu 60 python bench/pseudo_labels_gpu.py --device "$device" "${pl_quick[@]}"

cp bench/RESULTS.md "$out/RESULTS.md"
git diff -- bench/RESULTS.md > "$out/RESULTS.diff" 2>/dev/null || true
echo "suite done, status $status; results in $out" | tee -a "$out/suite.log"
exit $status
