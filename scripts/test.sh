#!/usr/bin/env bash
# Runs everything CI runs: ruff, mypy (strict) and the pytest suite, each in its own tox env.
# Needs only python3.11 (with venv) on PATH; tox is installed into .tox-bootstrap/ on first use.
# The store tests also run against PostgreSQL and MariaDB when they listen on their usual
# loopback ports (or set ISOLATE_TEST_DATABASE_URLS yourself).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3.11}
if [ ! -x .tox-bootstrap/bin/tox ]; then
    "$python" -m venv .tox-bootstrap
    .tox-bootstrap/bin/pip install --quiet --disable-pip-version-check "tox>=4.14" "tox-uv>=1.9"
fi
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
