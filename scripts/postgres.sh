#!/usr/bin/env bash
# Installs (Debian's postgresql package, if absent) and runs a throwaway PostgreSQL server on loopback
# for tests and the demo. Data lives under .state/pg (ignored by git).
#
#   scripts/postgres.sh start   # prints the admin DSN on stdout, e.g. postgresql://postgres@127.0.0.1:54329/postgres
#   scripts/postgres.sh stop
#   scripts/postgres.sh dsn
set -euo pipefail
cd "$(dirname "$0")/.."
PORT="${SQLTUNE_PG_PORT:-54329}"
STATE="$PWD/.state/pg"
DATA="$STATE/data"
DSN="postgresql://postgres@127.0.0.1:${PORT}/postgres"

find_bin() {
  local d
  for d in /usr/lib/postgresql/*/bin; do
    [[ -x "$d/pg_ctl" ]] && { echo "$d"; return 0; }
  done
  return 1
}

install_pg() {
  if ! find_bin >/dev/null; then
    echo "installing PostgreSQL from Debian's packages..." >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq postgresql >&2
  fi
}

as_pg() {
  # initdb and postgres refuse to run as root.
  if [[ "$(id -u)" == "0" ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start() {
  install_pg
  local bin; bin=$(find_bin)
  mkdir -p "$STATE"
  if [[ "$(id -u)" == "0" ]]; then chown postgres "$STATE"; fi
  if [[ ! -f "$DATA/PG_VERSION" ]]; then
    as_pg "$bin/initdb" -D "$DATA" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
  fi
  if ! as_pg "$bin/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
    as_pg "$bin/pg_ctl" -D "$DATA" -l "$STATE/server.log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $PORT -c unix_socket_directories=$STATE -c fsync=off -c max_connections=200" \
      start >/dev/null
  fi
  for _ in $(seq 1 60); do
    "$bin/pg_isready" -h 127.0.0.1 -p "$PORT" -q && { echo "$DSN"; return 0; }
    sleep 0.5
  done
  echo "PostgreSQL did not become ready on 127.0.0.1:$PORT; see $STATE/server.log" >&2
  return 1
}

stop() {
  local bin; bin=$(find_bin) || return 0
  [[ -f "$DATA/PG_VERSION" ]] || return 0
  as_pg "$bin/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null 2>&1 || true
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  dsn) echo "$DSN" ;;
  *) echo "usage: $0 start|stop|dsn" >&2; exit 2 ;;
esac
