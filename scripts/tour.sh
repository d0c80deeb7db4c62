#!/usr/bin/env bash
# Installs isolate into .venv and takes it for a spin in a throwaway home: init, lock and
# push the example DAG folder (its env is built), push again (nothing changes), list, show,
# history, the env; then trigger a run, let the scheduler run it, and look at the result.
set -euo pipefail
say() { printf 'tour.sh: %s\n' "$*" >&2; }
# shellcheck source=scripts/venv.sh
source "$(dirname "$0")/venv.sh"
cd "$(dirname "$0")/.."
ensure_venv  # on a python3.11 every user may run (scripts/venv.sh); PYTHON=... chooses
home=$(mktemp -d "${TMPDIR:-/tmp}/isolate-tour.XXXXXX")
trap 'rm -rf "$home"' EXIT
export ISOLATE_HOME="$home/home"
run() { printf '\n$ %s\n' "$*"; "$@"; }
PATH="$PWD/.venv/bin:$PATH"
# A throwaway home of one user: its tasks run as whoever runs the scheduler (root too).
# A shared node maps each DAG to an OS user instead (docs/admin-guide.md).
run isolate init --single-user
run isolate lock examples/etl --offline
run isolate push examples/etl -m "first version"
run isolate push examples/etl
run isolate dags list
run isolate dags show example.etl
run isolate dags history example.etl
run isolate env list
run isolate trigger example.etl --conf '{"params": {"region": "us"}}'
run isolate scheduler --until-idle
run isolate runs list example.etl
run_id=$(isolate runs list example.etl --json | .venv/bin/python -c 'import json, sys; print(json.load(sys.stdin)[0]["run_id"])')
run isolate runs show "$run_id"
run isolate tasks logs "$run_id" report
run isolate gc --dry-run
