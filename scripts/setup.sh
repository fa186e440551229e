#!/usr/bin/env bash
# Install everything roost and its test suite need on a fresh Debian machine.
# Idempotent: re-running only checks. Needs root (or sudo) for the apt part.
set -euo pipefail
cd "$(dirname "$0")/.."

mapfile -t DEBS < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' -e 's/[[:space:]]//g' scripts/debian-packages.txt)
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
# Python packages come from requirements.lock (exact versions, hashes checked),
# then roost itself without resolving anything again. Refresh the lock with
# scripts/lock.sh after changing pyproject.toml's ranges.
# -qq: errors only (this machine's pip config names index folders that may be absent)
PIP=("$PY" -m pip install -qq --disable-pip-version-check --root-user-action=ignore)
if ! "$PY" -c "import roost, click, rich, aiohttp, asyncssh, libtorrent, pytest" 2>/dev/null \
    || [ requirements.lock -nt .setup-stamp ] || [ pyproject.toml -nt .setup-stamp ]; then
    echo "setup: installing Python packages from requirements.lock"
    "${PIP[@]}" --require-hashes -r requirements.lock
    "${PIP[@]}" --no-deps -e .
    touch .setup-stamp
fi
