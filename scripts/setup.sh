#!/usr/bin/env bash
# Create .venv in the repository and install mrsr into it (editable), with the pins of
# constraints.txt. `bash scripts/setup.sh test` also installs what the tests need.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  "$PYTHON" -m venv .venv
fi
extras=""
[[ "${1:-}" == "test" ]] && extras="[test]"
.venv/bin/python -m pip install --quiet --upgrade "pip>=24"
.venv/bin/python -m pip install --quiet -c constraints.txt -e ".${extras}"
if [[ "${1:-}" == "test" ]]; then
  bash scripts/install-test-system-packages.sh
fi
# DVC needs a git repository (a fresh clone has one; an unpacked archive may not).
[[ -d .git ]] || git init --quiet
