#!/usr/bin/env bash
# Build the model folders: models/smollm2-135m-instruct/ and models/tiny/ (see models/prepare.py).
# Usage: bash models/prepare.sh [PYTHON]   (PYTHON: the venv's python, default .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-.venv/bin/python}
exec "$PY" models/prepare.py "${@:2}"
