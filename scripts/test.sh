#!/usr/bin/env bash
# The whole test suite: lint, types, then pytest (interop and lab tests included).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
"$PY" -m ruff check roost tests bench scripts
"$PY" -m mypy
exec "$PY" -m pytest "$@"
