#!/usr/bin/env bash
# Build the model folders: models/smollm2-135m-instruct/ and models/tiny/ (see models/prepare.py), and
# copy the VADER sentiment lexicons to models/vader/ (see models/vader.py).
# Usage: bash models/prepare.sh [PYTHON]   (PYTHON: the venv's python, default .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-.venv/bin/python}
"$PY" models/vader.py
exec "$PY" models/prepare.py "${@:2}"
