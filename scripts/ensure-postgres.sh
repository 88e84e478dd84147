#!/usr/bin/env bash
# Installs PostgreSQL's server from the distribution's packages when it is missing:
# the shared-queue tests start throw-away clusters of their own (initdb, pg_ctl on a
# free port of 127.0.0.1) and need its programs, not a running service.
set -euo pipefail

have_server() {
  [ -n "${DMFLOW_PG_BIN:-}" ] && [ -x "$DMFLOW_PG_BIN/initdb" ] && return 0
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null && return 0
  command -v initdb >/dev/null && command -v pg_ctl >/dev/null
}

if have_server; then
  exit 0
fi

echo "PostgreSQL's server is not installed; installing it from the distribution's packages" >&2
if [ "$(id -u)" -ne 0 ]; then
  sudo=sudo
else
  sudo=
fi
if command -v apt-get >/dev/null; then
  $sudo apt-get update -qq
  # The package's own cluster is not needed: the tests make their own.
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >/dev/null
elif command -v dnf >/dev/null; then
  $sudo dnf install -y postgresql-server
elif command -v brew >/dev/null; then
  brew install postgresql
else
  echo "no known package manager: install PostgreSQL's server (initdb, pg_ctl) by hand" >&2
  exit 1
fi
have_server || { echo "PostgreSQL installed, but initdb is still not found" >&2; exit 1; }
