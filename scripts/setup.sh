#!/usr/bin/env bash
# Install everything roost and its test suite need on a fresh Debian machine.
# Idempotent: re-running only checks. Needs root (or sudo) for the apt part.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBS=(aria2 opentracker mktorrent transmission-cli openssh-server openssh-client
      iperf3 wrk nftables iproute2 zstd procps util-linux
      sudo)  # sudo: the fleet tests' non-root deploy user
missing=()
for pkg in "${DEBS[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$pkg")
done
if ((${#missing[@]})); then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "setup: installing Debian packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if ! "$PY" -c "import roost, click, rich, aiohttp, asyncssh, libtorrent, pytest" 2>/dev/null \
    || [ pyproject.toml -nt .setup-stamp ]; then
    echo "setup: installing Python packages"
    "$PY" -m pip install -q --disable-pip-version-check -e '.[dev,fast]'
    touch .setup-stamp
fi
