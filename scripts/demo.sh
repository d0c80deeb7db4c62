#!/usr/bin/env bash
# Installs isolate into .venv (once) and runs `isolate demo`: two teams' DAGs that need
# conflicting versions of one library, locked, pushed and run side by side on a throwaway
# node (as two OS users made for the demo when run as root), then a table of what ran where.
#
# .venv is built on a Python 3.11 every user of the machine may run, when there is one
# (scripts/venv.sh); PYTHON=... chooses the interpreter instead. It says which one it used.
set -euo pipefail

say() { printf 'demo.sh: %s\n' "$*" >&2; }

# shellcheck source=scripts/venv.sh
source "$(dirname "${BASH_SOURCE[0]}")/venv.sh"

main() {
    cd "$(dirname "$0")/.."
    ensure_venv
    exec .venv/bin/isolate demo "$@"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    main "$@"
fi
