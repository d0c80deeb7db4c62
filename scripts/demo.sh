#!/usr/bin/env bash
# Installs isolate into .venv (once) and runs `isolate demo`: two teams' DAGs that need
# conflicting versions of one library, locked, pushed and run side by side on a throwaway
# node (as two OS users made for the demo when run as root), then a table of what ran where.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3.11}
if [ ! -x .venv/bin/isolate ]; then
    "$python" -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check -e .
fi
exec .venv/bin/isolate demo "$@"
