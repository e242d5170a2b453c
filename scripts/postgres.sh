#!/usr/bin/env bash
# Install (Debian package) and start a throw-away PostgreSQL server on loopback for the tests.
# Prints the SQLAlchemy URL on stdout; idempotent (a running server is reused).
set -euo pipefail
PORT="${TARN_PG_PORT:-55432}"
DATA="${TARN_PG_DATA:-/tmp/tarn-pg-$PORT}"
pgbin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }
if [ -z "$(pgbin)" ]; then
  echo "installing PostgreSQL (Debian package)…" >&2
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >&2
fi
BIN="$(pgbin)"
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
if ! "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT"; then
  rm -rf "$DATA"
  mkdir -p "$DATA"
  if [ "$(id -u)" = 0 ]; then chown postgres "$DATA"; fi
  as_pg "$BIN/initdb" -D "$DATA" -A trust -U tarn >/dev/null
  as_pg "$BIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w -o \
    "-p $PORT -k /tmp -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c max_connections=200" \
    start >&2
  "$BIN/createdb" -h 127.0.0.1 -p "$PORT" -U tarn tarn >&2
fi
echo "postgresql+psycopg://tarn@127.0.0.1:$PORT/tarn"
