#!/usr/bin/env bash
# Install the Debian 12 packages the virtual bench, the build and the report need, or say exactly
# what is missing when we cannot install (not root).  Called by `make run` and `make test`.
set -euo pipefail

pkgs=(pcscd vsmartcard-vpcd libpcsclite-dev swig gcc make iproute2 ethtool procps util-linux
      tshark chromium fonts-noto-cjk ser2net)

py=${PYTHON:-python3}
if ! command -v "$py" >/dev/null; then
  pkgs+=(python3 python3-venv python3-dev)
else
  "$py" -c 'import ensurepip' 2>/dev/null || pkgs+=(python3-venv)
  "$py" -c 'import os,sysconfig,sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
    || pkgs+=(python3-dev)
fi
if [ "${1:-}" = "--report" ]; then
  command -v java >/dev/null || pkgs+=(openjdk-17-jre-headless)
  command -v npm >/dev/null || pkgs+=(nodejs npm)
fi

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "Missing Debian packages: ${missing[*]}" >&2
  echo "Install them as root:  apt-get install -y ${missing[*]}" >&2
  echo "(the virtual bench also needs root itself: network namespaces, pcscd)" >&2
  exit 1
fi
echo "Installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y --no-install-recommends "${missing[@]}" >/tmp/posrig-apt.log 2>&1; then
  apt-get update >>/tmp/posrig-apt.log 2>&1 || true
  apt-get install -y --no-install-recommends "${missing[@]}" >>/tmp/posrig-apt.log 2>&1 || {
    echo "apt-get install ${missing[*]} failed; see /tmp/posrig-apt.log" >&2; tail -20 /tmp/posrig-apt.log >&2; exit 1; }
fi
