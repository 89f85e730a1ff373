#!/usr/bin/env bash
# Installs the Python reference stack from PyPI into $PY_REF_VENV (idempotent).
# avtomatika 1.0b30 pins orjson~=3.12.0 and avtomatika-worker 1.0b20 pins orjson~=3.11.9, so pip
# cannot resolve them together: the worker goes in with --no-deps plus its one missing dependency.
set -euo pipefail
VENV="${PY_REF_VENV:?set PY_REF_VENV}"
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q "avtomatika[redis,history]==1.0b30" "rxon==1.0b17"
"$VENV/bin/pip" install -q --no-deps "avtomatika-worker==1.0b20"
"$VENV/bin/pip" install -q "aiofiles~=25.1.0"
"$VENV/bin/python" -c 'import avtomatika, avtomatika_worker, rxon; print("python reference installed:", avtomatika.__version__, avtomatika_worker.__version__, rxon.__version__)'
