#!/usr/bin/env bash
# Checks the system packages `make` needs and prints the exact command that installs what is missing.
set -uo pipefail
missing=()
command -v cc >/dev/null || missing+=(gcc)
command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup) first"; exit 1; }
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
ldconfig -p 2>/dev/null | grep -q 'libvulkan.so.1' || missing+=(libvulkan1)
if ! ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1 && ! ls /usr/share/vulkan/icd.d/*.json >/dev/null 2>&1; then
  missing+=(mesa-vulkan-drivers)
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "Missing system packages: ${missing[*]}"
  echo "Install them with (Debian 12; Mesa's Vulkan from bookworm-backports, see .ci/run for the apt source):"
  echo "  sudo apt-get install -y -t bookworm-backports ${missing[*]}"
  exit 1
fi
