#!/usr/bin/env bash
# `make test`: start what the suite needs when it is missing, then lint (ruff), type-check (mypy) and run pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}

have() { command -v "$1" >/dev/null 2>&1; }

# Redis on 127.0.0.1:6379 (integration tests use the real one).
if ! (have redis-cli && redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1); then
  if ! have redis-server; then
    (apt-get update -qq && apt-get install -y -qq redis-server) >/dev/null 2>&1 || echo "WARN: could not install redis-server"
  fi
  if have redis-server; then
    mkdir -p /tmp/feqa-redis
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no --dir /tmp/feqa-redis \
      --logfile /tmp/feqa-redis/redis.log || true
    sleep 1
  fi
fi

# PostgreSQL on 127.0.0.1:5432 (database `test`, trust auth).
if have pg_isready && ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  if have pg_ctlcluster && [ -d /etc/postgresql ]; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
    sleep 2
  fi
fi
if have pg_isready && pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  export DATABASE_URL_TEST="${DATABASE_URL_TEST:-postgresql+psycopg://postgres@127.0.0.1:5432/test}"
else
  echo "NOTE: no PostgreSQL reachable on 127.0.0.1:5432; PostgreSQL job-store tests will report why they cannot run"
fi

# Headless Chromium for the web-form tests.
if [ ! -x /usr/bin/chromium ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
    || echo "WARN: could not install chromium"
fi

echo "== ruff"
"$VENV/bin/ruff" check model worker service training tests bench || exit 1

echo "== mypy"
# packages and strictness in pyproject.toml [tool.mypy]; a type error fails the run, after pytest has run
"$VENV/bin/python" -m mypy
mypy_rc=$?

echo "== pytest"
mkdir -p test-artifacts
"$VENV/bin/python" -m pytest -ra -p no:cacheprovider "$@"
rc=$?
if [ "$rc" -eq 5 ]; then echo "pytest collected no tests"; exit 1; fi
if [ "$mypy_rc" -ne 0 ]; then echo "mypy found type errors (see above)"; [ "$rc" -ne 0 ] || rc=1; fi
exit $rc
