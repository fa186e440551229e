#!/usr/bin/env bash
# Refresh requirements.lock from pyproject.toml's ranges (run after changing them).
#
# The lock pins every Python package the suite runs with, hashes included,
# so that setup.sh installs exactly what the suite passed with. It is made with
# pip-tools' pip-compile (kept in a throwaway venv, so it is not a dependency
# of roost) and installed by plain pip, which every machine has.
# The first line records a digest of pyproject.toml's dependency lists;
# tests/test_lock.py fails when pyproject.toml changes and the lock does not.
# Also writes docs/debian-packages.md: the versions of setup.sh's Debian
# packages on the machine that made the lock.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
venv=$(mktemp -d)
trap 'rm -rf "$venv"' EXIT
"$PY" -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check 'pip-tools==7.7.0'
"$venv/bin/pip-compile" -q --generate-hashes --allow-unsafe --strip-extras \
    --no-emit-index-url --no-emit-find-links \
    --constraint scripts/lock-constraints.txt \
    --extra dev --extra fast -o requirements.lock.new pyproject.toml
digest=$("$PY" -m scripts.lockcheck digest pyproject.toml)
{ echo "# pyproject-dependencies-sha256: $digest"; cat requirements.lock.new; } > requirements.lock
rm -f requirements.lock.new
"$PY" -m scripts.lockcheck debs scripts/debian-packages.txt > docs/debian-packages.md
echo "lock: wrote requirements.lock and docs/debian-packages.md"
