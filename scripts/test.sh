#!/usr/bin/env bash
# Runs everything CI runs: ruff, mypy (strict) and the pytest suite, each in its own tox env.
# Needs only python3.11 (with venv) on PATH; tox is installed into .tox-bootstrap/ on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3.11}
if [ ! -x .tox-bootstrap/bin/tox ]; then
    "$python" -m venv .tox-bootstrap
    .tox-bootstrap/bin/pip install --quiet --disable-pip-version-check "tox>=4.14" "tox-uv>=1.9"
fi
exec .tox-bootstrap/bin/tox run "$@"
