#!/usr/bin/env bash
# Sampling throughput on a lent GPU box (run from the repo root, results into $1):
#     bash benchmarks/device_sample.sh RESULTS_DIR
# The box has torch but no pymatgen/spglib/SMACT: their cp312 wheels travel in .whl/
# (git-ignored), fetched here with `pip download --no-deps --only-binary=:all: --python-version 3.12
# --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl` of
# pymatgen pymatgen-core spglib smact monty ruamel.yaml orjson ase dill uncertainties palettable
# bibtexparser pathos multiprocess ppft pox (13 MB), and installed into /tmp/site; the package is
# staged on PYTHONPATH like check_train_cuda.sh. Run with carry [".whl"].
set -uo pipefail
RES=$(realpath "${1:-results}")
mkdir -p "$RES"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
STAGE=$(mktemp -d)
mkdir -p "$STAGE/crystalgen"
cp -r crystalgen/. "$STAGE/crystalgen/"
for d in backbone heads validators data; do cp -r "$d" "$STAGE/crystalgen/$d"; done
export PYTHONPATH=$STAGE:/tmp/site PYTHONUNBUFFERED=1
REPO=$(pwd)
cd /tmp  # python3 -c puts the cwd first on sys.path: keep the repo's unstaged crystalgen/ off it
nvidia-smi -L
python3 -c "import torch, crystalgen.api, crystalgen.validators; print('torch', torch.__version__, torch.cuda.get_device_name(0))" || exit 1
B="python3 $REPO/benchmarks/bench_sample.py"
F="--n 8192 --formulas ${FORMULAS:-NaCl SrTiO3 Li2MnO3 LiFePO4}"
$B --device cuda --workers 8 $F --batch-size 512 --json "$RES/gpu_workers8.json" 2>&1 | grep -v -E "Warning|DLASCL|np.dot"
$B --device cpu --workers 16 $F --batch-size 256 --json "$RES/cpu16_workers16.json" 2>&1 | grep -v -E "Warning|DLASCL|np.dot"
[ -n "${SKIP_W0:-}" ] || $B --device cuda --workers 0 --n 2048 --batch-size 1024 --json "$RES/gpu_workers0.json" 2>&1 | grep -v -E "Warning|DLASCL|np.dot"
