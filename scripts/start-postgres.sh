#!/usr/bin/env bash
# Start a throwaway PostgreSQL server for the distributed-tuning tests and print its URL.
#
#   export NNDL_TEST_PG_URL=$(bash scripts/start-postgres.sh)
#
# The cluster lives in $NNDL_PG_DIR (default /tmp/nndl-pg-54329), listens on 127.0.0.1:54329 only,
# trusts every local connection (test use only!) and has a database nndl_test. Running the script
# again while the server is up only prints the URL. As root the server runs as the `postgres` OS
# user (initdb refuses root); otherwise as the current user. Stop it with:
#   pg_ctl -D /tmp/nndl-pg-54329/data stop     (as the same user)
set -euo pipefail

PORT="${NNDL_PG_PORT:-54329}"
HOST=127.0.0.1
DB=nndl_test
DIR="${NNDL_PG_DIR:-/tmp/nndl-pg-$PORT}"
URL="postgresql://postgres@$HOST:$PORT/$DB"

BIN="${PG_BIN:-}"
if [ -z "$BIN" ]; then
  BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
fi
if [ -z "$BIN" ] || [ ! -x "$BIN/initdb" ] || [ ! -x "$BIN/pg_ctl" ]; then
  echo "start-postgres: PostgreSQL server binaries not found (looked in /usr/lib/postgresql/*/bin;" \
       "set PG_BIN to override). Install them with: apt-get install postgresql" >&2
  exit 1
fi

# Run server commands as `postgres` when we are root; a tiny wrapper keeps the rest readable.
if [ "$(id -u)" = 0 ]; then
  if ! id postgres >/dev/null 2>&1; then
    echo "start-postgres: running as root but there is no 'postgres' OS user to run the server as" >&2
    exit 1
  fi
  as_pg() { runuser -u postgres -- "$@"; }
else
  as_pg() { "$@"; }
fi

db_exists() {
  as_pg "$BIN/psql" -h "$HOST" -p "$PORT" -U postgres -d postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname = '$DB'" 2>/dev/null | grep -q 1
}

if ! "$BIN/pg_isready" -q -h "$HOST" -p "$PORT"; then
  mkdir -p "$DIR"
  [ "$(id -u)" = 0 ] && chown postgres: "$DIR"
  if [ ! -f "$DIR/data/PG_VERSION" ]; then
    # Trust auth and fsync off: a disposable test server, never one that holds real data.
    as_pg "$BIN/initdb" -D "$DIR/data" -U postgres --auth=trust --no-sync -E UTF8 >"$DIR/initdb.log" 2>&1 || {
      echo "start-postgres: initdb failed; see $DIR/initdb.log" >&2; exit 1; }
  fi
  # The socket goes into our own folder so /var/run/postgresql permissions never matter.
  as_pg "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -t 60 \
    -o "-c listen_addresses=$HOST -p $PORT -k $DIR -c fsync=off -c max_connections=200" start >/dev/null || {
      echo "start-postgres: the server did not start; see $DIR/server.log" >&2; exit 1; }
fi

if ! db_exists; then
  as_pg "$BIN/createdb" -h "$HOST" -p "$PORT" -U postgres "$DB" || {
    echo "start-postgres: could not create database $DB" >&2; exit 1; }
fi
echo "$URL"
