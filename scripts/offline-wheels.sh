#!/usr/bin/env bash
# Wheels for an offline GPU machine: Python 3.12 with torch, numpy, scipy, pandas, scikit-image,
# matplotlib, jinja2, pyyaml, safetensors, requests and tqdm already installed, no package index.
# Downloads what such a machine lacks for mrsr (snakemake, pydicom, nibabel, jsonschema and their
# dependencies) as wheels into .whl/ of the repository (git-ignored), to copy along with the
# repository. benchmarks/gpu_check.sh installs them from there.
#
# Usage (from any folder; the wheels go to the repository's .whl/):
#   bash scripts/offline-wheels.sh                  # snakemake + data stack, ~32 MB
#   bash scripts/offline-wheels.sh --no-snakemake   # mrsr commands only, ~6 MB
# Then, on the GPU machine, from the repository root:
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
#     && export PYTHONPATH=/tmp/site:$PWD/src PATH=/tmp/site/bin:$PATH
# and call the package as `python3 -m mrsr.cli ...` (or put a small `mrsr` shim on PATH),
# Snakemake as `python3 -m snakemake ...`.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.whl
rm -rf "$dest" && mkdir -p "$dest"
want=(pydicom nibabel jsonschema)
[[ "${1:-}" == "--no-snakemake" ]] || want+=(snakemake==9.27.1)
plat=(--only-binary=:all: --python-version 3.12 --implementation cp
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
tmp=$(mktemp -d)
# connection_pool (a snakemake dependency) is published as a source archive only: build its wheel here.
python3 -m pip download -q --no-deps --no-binary=:all: -d "$tmp" connection_pool==0.0.3
python3 -m pip wheel -q --no-deps -w "$dest" "$tmp"/connection_pool-*
python3 -m pip download -q "${plat[@]}" --find-links "$dest" -d "$dest" "${want[@]}"
# Already on that machine (its versions must win: they match its torch and numpy builds).
cd "$dest" && rm -f numpy-* requests-* urllib3-* certifi-* idna-* charset_normalizer-* jinja2-* \
  markupsafe-* pyyaml-* psutil-* packaging-* attrs-* typing_extensions-* tabulate-* wrapt-*
echo "$(ls | wc -l) wheels, $(du -sh . | cut -f1) in $dest"
