#!/usr/bin/env bash
# Starts a throwaway PostgreSQL 15 on 127.0.0.1 (installing it from Debian if missing) and prints its URL.
# Usage: eval "$(bash .ci/postgres.sh start)"  → exports TEST_DATABASE_URL and PG_DATA_DIR
#        bash .ci/postgres.sh stop "$PG_DATA_DIR"
set -euo pipefail

PG_BIN=/usr/lib/postgresql/15/bin

case "${1:-start}" in
  start)
    if [ ! -x "$PG_BIN/initdb" ]; then
      echo "installing PostgreSQL 15 from Debian packages" >&2
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq >&2
      apt-get install -y -qq postgresql-15 >&2
    fi
    dir=$(mktemp -d /tmp/oidc-pg.XXXXXX)
    chown postgres "$dir" 2>/dev/null || true
    port=${PG_PORT:-$(( 20000 + RANDOM % 20000 ))}
    run() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
    run "$PG_BIN/initdb" -D "$dir/data" -U postgres -A trust >/dev/null
    run "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/log" \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=on -c max_connections=200" -w start >&2
    echo "export TEST_DATABASE_URL=postgres://postgres@127.0.0.1:$port/postgres PG_DATA_DIR=$dir"
    ;;
  stop)
    dir=${2:?data dir}
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w stop >&2
    else "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w stop >&2; fi
    rm -rf "$dir"
    ;;
  *) echo "usage: $0 start | stop DIR" >&2; exit 2 ;;
esac
