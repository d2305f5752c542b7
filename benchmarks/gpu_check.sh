#!/usr/bin/env bash
# The GPU check on one GPU machine, from the repository alone (no network), in at most
# about 8 minutes on one H100. Writes gpu_check.json and gpu_check.log to $OUT, or to the folder
# given with --out (default ./gpu-check-out). What it measures: benchmarks/gpu_check.py's docstring
# and docs/benchmarks.md, "GPU check".
#
# Usage, from the repository root:
#   bash benchmarks/gpu_check.sh [--out DIR] [--parts env,train_modes,...] [--budget-s 470]
#   bash benchmarks/gpu_check.sh --dry-run              # configs and commands only, no GPU needed
#   bash benchmarks/gpu_check.sh --device cpu --quick   # every part in miniature on a CPU
#
# A machine without mrsr's dependencies (Python 3.12 with torch, numpy, scipy, pandas, ... but no
# snakemake, pydicom, nibabel, jsonschema): first, on a machine with network, run
#   bash scripts/offline-wheels.sh
# which puts the missing wheels in .whl/ of the repository; copy .whl/ along. This script installs
# them into /tmp/site (pip --no-index) and calls the package as `python3 -m mrsr.cli`.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

if [[ -d .whl ]] && compgen -G ".whl/*.whl" > /dev/null; then
    site=/tmp/site
    if [[ ! -f $site/.mrsr-wheels ]]; then
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target "$site" .whl/*.whl \
            && touch "$site/.mrsr-wheels" \
            || echo "gpu_check: installing .whl/ failed; continuing with what is installed" >&2
    fi
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" PATH="$site/bin:$PATH"
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"

exec "$PYTHON" benchmarks/gpu_check.py "$@"
