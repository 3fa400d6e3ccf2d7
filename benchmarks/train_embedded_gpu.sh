#!/usr/bin/env bash
# Train embedded default models side by side on one CUDA GPU (one process per model).
#
# Usage: benchmarks/train_embedded_gpu.sh OUTDIR SCALE [LINUX_ROOT STDLIB_ROOT [NAME...]]
#   SCALE multiplies every model's step count (1 = the shipped runs; 0.01 = a quick rate check).
#   LINUX_ROOT / STDLIB_ROOT: corpus sources when /usr/src/linux-source-* or this Python's standard
#   library are not the ones the shipped models were trained on ("" = the default source).
#   NAME...: train only these models. TRAIN_TIMEOUT=seconds stops each run (0: none).
# Each run writes OUTDIR/<name>/ (a checkpoint) and OUTDIR/<name>.log. The `workbench train`
# command that reproduces a run is recorded in its config.json; with the same corpus it gives the
# same text and vocabulary on any machine (python-stdlib here means CPython 3.11.7's).
set -u
# CUDA MPS lets the processes share the GPU concurrently (about 3x the total throughput of time-slicing, measured on an H100).
nvidia-cuda-mps-control -d 2>/dev/null && echo "CUDA MPS started" || echo "CUDA MPS not available"
out=${1:?OUTDIR}; scale=${2:?SCALE}; linux_root=${3:-}; stdlib_root=${4:-}; shift 4 2>/dev/null || shift $#
only=" $* "
mkdir -p "$out"
run() {  # name corpus steps args...
  local name=$1 corpus=$2 n; n=$(python3 -c "print(max(20, int($3 * $scale)))"); shift 3
  if [ "$only" != "  " ] && [[ "$only" != *" $name "* ]]; then return; fi
  local extra=()
  if [ "$corpus" = linux ]; then extra+=(--max-bytes 50000000); [ -n "$linux_root" ] && extra+=(--corpus-root "$linux_root"); fi
  if [ "$corpus" = python-stdlib ] && [ -n "$stdlib_root" ]; then extra+=(--corpus-root "$stdlib_root"); fi
  timeout "${TRAIN_TIMEOUT:-0}" python3 -m workbench.cli train --corpus "$corpus" --steps "$n" --seed 0 --device cuda --threads 2 \
    --weights-dtype float16 --no-progress --out "$out/$name" "${extra[@]}" "$@" > "$out/$name.log" 2>&1 &
}
common=(--batch-size 128 --seq-len 128 --lr 2e-3)
run lstm-linux-2x512     linux         8000 --family lstm    --layers 2 --d-model 512 --hidden 512 --batch-size 256 --seq-len 128 --lr 3e-3
run gru-linux-2x512      linux         7000 --family gru     --layers 2 --d-model 512 --hidden 512 "${common[@]}"
run lstm-stdlib-2x512    python-stdlib 7000 --family lstm    --layers 2 --d-model 512 --hidden 512 "${common[@]}"
run lstm-linux-2x128     linux         8000 --family lstm    --layers 2 --d-model 128 --hidden 128 "${common[@]}"
run minlstm-stdlib-4x128 python-stdlib 3000 --family minlstm --layers 4 --d-model 128 --hidden 192 "${common[@]}"
wait
tail -n 2 "$out"/*.log
