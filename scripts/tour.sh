#!/usr/bin/env bash
# Installs isolate into .venv and takes it for a spin in a throwaway home: init, lock and
# push the example DAG folder (its env is built), push again (nothing changes), list, show,
# history, the env; then trigger a run, let the scheduler run it, and look at the result.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3.11}
if [ ! -x .venv/bin/isolate ]; then
    "$python" -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check -e .
fi
home=$(mktemp -d "${TMPDIR:-/tmp}/isolate-tour.XXXXXX")
trap 'rm -rf "$home"' EXIT
export ISOLATE_HOME="$home/home"
if [ "$(id -u)" = 0 ]; then
    # A real node maps each DAG to an OS user in /etc/isolate/tenants.toml; this throwaway
    # home has no tenants, so its tasks may run as root.
    echo "tour: running as root with no tenant mapping: the example's tasks run as root"
    export ISOLATE_ALLOW_ROOT_TASKS=true
fi
run() { printf '\n$ %s\n' "$*"; "$@"; }
PATH="$PWD/.venv/bin:$PATH"
run isolate init
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
