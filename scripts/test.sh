#!/usr/bin/env bash
# Runs everything CI runs: ruff, mypy (strict) and the pytest suite, each in its own tox env.
# Needs only python3.11 (with venv) on PATH; tox is installed into .tox-bootstrap/ on first use.
# The store tests also run against PostgreSQL and MariaDB when they listen on their usual
# loopback ports (or set ISOLATE_TEST_DATABASE_URLS yourself). As root on Debian/Ubuntu it
# installs bubblewrap and graphviz (apt-get) when they are missing, for the tests using them.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3.11}
if [ ! -x .tox-bootstrap/bin/tox ]; then
    "$python" -m venv .tox-bootstrap
    .tox-bootstrap/bin/pip install --quiet --disable-pip-version-check "tox>=4.14" "tox-uv>=1.9"
fi
apt_install() {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null
}
# Debian packages some tests need: bubblewrap (the sandbox) and graphviz (`--format svg`).
need_package() {  # command, package
    command -v "$1" >/dev/null && return
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        echo "test.sh: $1 is missing: apt-get install $2"
        # A fresh machine may have no package lists yet: update them once and try again.
        if ! apt_install "$2" && ! { apt-get update -q >/dev/null && apt_install "$2"; }; then
            echo "test.sh: $2 could not be installed: its tests will be skipped"
        fi
    else
        echo "test.sh: $1 is not installed (as root: apt-get install $2): its tests will be skipped"
    fi
}
need_package bwrap bubblewrap
need_package dot graphviz
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if [ -z "${ISOLATE_TEST_DATABASE_URLS+set}" ]; then
    urls=()
    if listening 5432; then
        urls+=("postgresql+psycopg://postgres@127.0.0.1:5432/test")
    else
        echo "test.sh: PostgreSQL is not listening on 127.0.0.1:5432: its tests will be skipped"
    fi
    if listening 3306; then
        urls+=("mysql+pymysql://root@127.0.0.1:3306/test")
    else
        echo "test.sh: MariaDB/MySQL is not listening on 127.0.0.1:3306: its tests will be skipped"
    fi
    ISOLATE_TEST_DATABASE_URLS=$(IFS=,; echo "${urls[*]-}")
    export ISOLATE_TEST_DATABASE_URLS
fi
echo "test.sh: server databases under test: ${ISOLATE_TEST_DATABASE_URLS:-none}"
exec .tox-bootstrap/bin/tox run "$@"
