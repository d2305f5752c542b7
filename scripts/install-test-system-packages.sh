#!/usr/bin/env bash
# System packages the tests drive for real: Debian's chromium (report browser test) and
# slurm-wlm + munge (one-node SLURM cluster test). Installed only when missing; needs root
# (CI runs as root). Without root the affected tests skip and say why.
set -euo pipefail
packages=(chromium slurm-wlm munge)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0
if [[ $(id -u) -ne 0 ]]; then
  echo "install-test-system-packages: not root; missing ${missing[*]} (the tests that need them will skip)" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# Daemons must not start at install time: the tests start and stop their own.
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
trap 'rm -f /usr/sbin/policy-rc.d' EXIT
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
