#!/usr/bin/env bash
# One training run on a lent H200 in one device call (at most ~9 minutes), no network, no pip:
#     bash benchmarks/gpu_train_run.sh [CORPUS.h5] [OUT_DIR]
# CORPUS defaults to .devcarry/pool_v2.h5 (copy the prepared pool there, name .devcarry in
# `carry`), OUT_DIR to $OUT. The package is staged on PYTHONPATH (the box has torch, h5py,
# click, tqdm, numpy; no pymatgen, which training does not need). Writes at most 8 files:
# OUT/model/ (config.json + bf16 safetensors shards <= 15 MiB + index), OUT/training.json,
# OUT/throughput.jsonl, OUT/run.log.
# CPU dry run (tiny model, a few steps): DEVICE=cpu CONFIG=examples/train_tiny.toml \
#     EXTRA="--set max_steps=6 --set log_every=2 --workers 2" bash benchmarks/gpu_train_run.sh corpus.h5 out/
set -euo pipefail
DATA=$(realpath "${1:-.devcarry/pool_v2.h5}")
RES=${2:-${OUT:?give an output folder or set OUT}}
CONFIG=${CONFIG:-examples/train_gpu_h200.toml}
DEVICE=${DEVICE:-cuda}
PY=${PYTHON:-python3}
mkdir -p "$RES"
RES=$(realpath "$RES")
PYTHONPATH=$(bash benchmarks/stage_package.sh)
export PYTHONPATH PYTHONUNBUFFERED=1
"$PY" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA')" | tee "$RES/run.log"
# shellcheck disable=SC2086
"$PY" benchmarks/gpu_train.py --config "$CONFIG" --data "$DATA" --out "$RES" --device "$DEVICE" ${EXTRA:-} 2>&1 | tee -a "$RES/run.log"
find "$RES" -type f | sort | while read -r f; do echo "$(stat -c %s "$f") $f"; done | tee -a "$RES/run.log"
n=$(find "$RES" -type f | wc -l)
[ "$n" -le 8 ] || echo "WARNING: $n files under $RES; the device returns at most 8" | tee -a "$RES/run.log"
