#!/usr/bin/env bash
# Stage the package for PYTHONPATH on a box without pip (run from the repo root); prints the folder:
#     export PYTHONPATH=$(bash benchmarks/stage_package.sh)
# The code folders map onto crystalgen.* (pyproject's package-dir), so they are copied under it.
set -euo pipefail
STAGE=$(mktemp -d)
mkdir -p "$STAGE/crystalgen"
cp -r crystalgen/. "$STAGE/crystalgen/"
for d in backbone heads validators data; do cp -r "$d" "$STAGE/crystalgen/$d"; done
echo "$STAGE"
