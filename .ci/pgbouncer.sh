#!/usr/bin/env bash
# Starts a throwaway PgBouncer on 127.0.0.1 in front of the PostgreSQL that .ci/postgres.sh started (installing it
# from Debian if missing), every database passed through, and prints its URL.
# Usage: eval "$(bash .ci/pgbouncer.sh start "$TEST_DATABASE_URL" transaction)"  → exports TEST_PGBOUNCER_URL, PGBOUNCER_DIR
#        bash .ci/pgbouncer.sh stop "$PGBOUNCER_DIR"
set -euo pipefail

case "${1:-start}" in
  start)
    url=${2:?PostgreSQL URL} mode=${3:-transaction}
    if ! command -v pgbouncer >/dev/null; then
      echo "installing PgBouncer from Debian packages" >&2
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq >&2
      apt-get install -y -qq pgbouncer >&2
    fi
    hostport=${url#*@}; hostport=${hostport%%/*}
    user=${url#postgres://}; user=${user%%@*}
    dir=$(mktemp -d /tmp/oidc-pgbouncer.XXXXXX)
    port=${PGBOUNCER_PORT:-$(( 20000 + RANDOM % 20000 ))}
    cat >"$dir/pgbouncer.ini" <<INI
[databases]
* = host=${hostport%:*} port=${hostport##*:}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = trust
auth_file = $dir/users.txt
pool_mode = $mode
max_client_conn = 1000
default_pool_size = 20
logfile = $dir/log
pidfile = $dir/pid
ignore_startup_parameters = extra_float_digits
INI
    echo "\"$user\" \"\"" >"$dir/users.txt"
    # PgBouncer refuses to run as root.
    if [ "$(id -u)" = 0 ]; then chown -R postgres "$dir"; runuser -u postgres -- pgbouncer -d "$dir/pgbouncer.ini"
    else pgbouncer -d "$dir/pgbouncer.ini"; fi
    for _ in $(seq 50); do [ -s "$dir/pid" ] && break; sleep 0.1; done
    [ -s "$dir/pid" ] || { cat "$dir/log" >&2; exit 1; }
    echo "export TEST_PGBOUNCER_URL=postgres://$user@127.0.0.1:$port/postgres PGBOUNCER_DIR=$dir"
    ;;
  stop)
    dir=${2:?PgBouncer dir}
    [ -s "$dir/pid" ] && kill "$(cat "$dir/pid")" 2>/dev/null || true
    rm -rf "$dir"
    ;;
  *) echo "usage: $0 start POSTGRES_URL [session|transaction] | stop DIR" >&2; exit 2 ;;
esac
