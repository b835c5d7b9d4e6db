#!/usr/bin/env bash
# Installs what compass needs to build and test (Debian 12). Idempotent and quiet when all is
# already there. Usage: scripts/deps.sh [extra packages...]
set -euo pipefail
pkgs=(build-essential g++ cmake pkg-config curl python3 valgrind
      libcurl4-openssl-dev libjson-c-dev libconfig-dev liblua5.4-dev libcriterion-dev
      libmicrohttpd-dev libsqlite3-dev "$@")
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "deps: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
