#!/usr/bin/env bash
# CUDA check of `crystalgen train` on a GPU box WITHOUT pymatgen (run from the repo root):
#     bash benchmarks/check_train_cuda.sh CORPUS.h5 RESULTS_DIR
# 1. throughput (bench_train.py) of the tiny and the GPU (small) configs, bf16 autocast;
# 2. a 300-step end-to-end run of `python -m crystalgen.training` (validation, best model,
#    the sample check skipped without pymatgen, checkpoint), then a resume to 320 steps;
# 3. the best model reloads from safetensors, the checkpoint with weights_only=True.
# The package is staged on PYTHONPATH (no pip install needed; the box has torch, h5py, click, tqdm).
set -euo pipefail
REPO=$(pwd)
DATA=$(realpath "$1")
RES=$2
mkdir -p "$RES"
RES=$(realpath "$RES")
PYTHONPATH=$(bash benchmarks/stage_package.sh)
export PYTHONPATH
python3 -c "import importlib.util, torch; print('torch', torch.__version__, torch.cuda.get_device_name(0), 'pymatgen present:', importlib.util.find_spec('pymatgen') is not None)"
if [ -z "${SKIP_BENCH:-}" ]; then
    python3 benchmarks/bench_train.py --data "$DATA" --config examples/train_tiny.toml --device cuda --steps 40 | tee "$RES/bench_tiny.json"
    python3 benchmarks/bench_train.py --data "$DATA" --config examples/train_gpu.toml --device cuda --steps 40 | tee "$RES/bench_small.json"
fi
RUN=$(mktemp -d)/run
cd "$(dirname "$RUN")"  # python -m puts the cwd first on sys.path: keep the repo's crystalgen/ off it
python3 -m crystalgen.training --config "$REPO/examples/train_gpu.toml" --data "$DATA" --out "$RUN" --quiet \
    --set max_steps=300 --set eval_every=100 --set sample_every=300 --set sample_count=8 2>&1 | tail -n 8
python3 -m crystalgen.training --config "$REPO/examples/train_gpu.toml" --data "$DATA" --out "$RUN" --quiet --resume \
    --set max_steps=320 --set eval_every=100 2>&1 | tail -n 3
cp "$RUN/train_log.jsonl" "$RES/train_log.jsonl"
python3 - "$RUN" <<'PY'
import sys, torch
from pathlib import Path
from crystalgen.model import CrystalModel
run = Path(sys.argv[1])
model = CrystalModel.from_pretrained(run / "best", "cuda")
ckpt = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)
print("best model reloaded on", model.device, "| checkpoint step", ckpt["state"]["step"])
PY
