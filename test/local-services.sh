#!/usr/bin/env bash
# Private PostgreSQL and Redis on loopback for Remedy's service tests.
#   test/local-services.sh up     install (Debian packages) when missing, start both; idempotent
#   test/local-services.sh env    print the export lines for REMEDY_TEST_DATABASE_URL / REMEDY_TEST_REDIS_URL
#   test/local-services.sh down   stop both and remove the state directory
# State lives in ${REMEDY_LOCAL_SERVICES_DIR:-/tmp/remedy-local-services}; the system's default
# PostgreSQL cluster and Redis are never touched.
set -euo pipefail

DIR="${REMEDY_LOCAL_SERVICES_DIR:-/tmp/remedy-local-services}"
PG_PORT="${REMEDY_LOCAL_PG_PORT:-55432}"
REDIS_PORT="${REMEDY_LOCAL_REDIS_PORT:-56379}"
PG_USER=remedy
PG_DB=remedy

log() { echo "local-services: $*" >&2; }

as_owner() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_bin() {
    local d
    for d in /usr/lib/postgresql/*/bin; do
        if [ -x "$d/initdb" ]; then echo "$d"; return 0; fi
    done
    return 1
}

apt_install() {
    local SUDO=""
    [ "$(id -u)" = 0 ] || SUDO=sudo
    log "installing $*"
    if ! DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "$@" >/dev/null; then
        $SUDO apt-get update >/dev/null
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "$@" >/dev/null
    fi
}

install_missing() {
    local pkgs=()
    pg_bin >/dev/null || pkgs+=(postgresql)
    command -v redis-server >/dev/null || pkgs+=(redis-server)
    command -v redis-cli >/dev/null || pkgs+=(redis-tools)
    if [ "${#pkgs[@]}" -gt 0 ]; then apt_install "${pkgs[@]}"; fi
}

pg_up() {
    local bin; bin="$(pg_bin)"
    mkdir -p "$DIR"
    if [ ! -f "$DIR/pg-password" ]; then
        (umask 077; head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$DIR/pg-password")
    fi
    if [ ! -f "$DIR/pg/PG_VERSION" ]; then
        mkdir -p "$DIR/pg" "$DIR/pg-sock"
        if [ "$(id -u)" = 0 ]; then
            chown postgres "$DIR/pg" "$DIR/pg-sock"
            install -o postgres -m 600 "$DIR/pg-password" "$DIR/pg-pwfile"
        else
            install -m 600 "$DIR/pg-password" "$DIR/pg-pwfile"
        fi
        chmod 755 "$DIR"
        log "initdb into $DIR/pg"
        as_owner "$bin/initdb" -D "$DIR/pg" -U "$PG_USER" --pwfile="$DIR/pg-pwfile" \
            --auth-local=scram-sha-256 --auth-host=scram-sha-256 -E UTF8 --no-instructions >"$DIR/initdb.log" 2>&1 \
            || { cat "$DIR/initdb.log" >&2; exit 1; }
        rm -f "$DIR/pg-pwfile"
    fi
    if as_owner "$bin/pg_ctl" -D "$DIR/pg" status >/dev/null 2>&1; then
        log "PostgreSQL already running on 127.0.0.1:$PG_PORT"
    else
        log "starting PostgreSQL on 127.0.0.1:$PG_PORT"
        as_owner "$bin/pg_ctl" -D "$DIR/pg" -w -t 60 -l "$DIR/pg/server.log" \
            -o "-h 127.0.0.1 -p $PG_PORT -k $DIR/pg-sock -c fsync=off -c max_connections=200" start >/dev/null
    fi
    if ! PGPASSWORD="$(cat "$DIR/pg-password")" psql -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -d postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'" | grep -q 1; then
        PGPASSWORD="$(cat "$DIR/pg-password")" psql -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -d postgres -qc \
            "CREATE DATABASE $PG_DB" >/dev/null
    fi
}

redis_up() {
    mkdir -p "$DIR/redis"
    if redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1; then
        log "Redis already running on 127.0.0.1:$REDIS_PORT"
        return
    fi
    log "starting Redis on 127.0.0.1:$REDIS_PORT"
    redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no \
        --daemonize yes --pidfile "$DIR/redis.pid" --logfile "$DIR/redis.log" --dir "$DIR/redis"
    for _ in $(seq 50); do
        redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1 && return
        sleep 0.1
    done
    log "Redis did not answer; see $DIR/redis.log"; exit 1
}

print_env() {
    [ -f "$DIR/pg-password" ] || { log "not running: run '$0 up' first"; exit 1; }
    echo "export REMEDY_TEST_DATABASE_URL=postgres://$PG_USER:$(cat "$DIR/pg-password")@127.0.0.1:$PG_PORT/$PG_DB"
    echo "export REMEDY_TEST_REDIS_URL=redis://127.0.0.1:$REDIS_PORT"
}

down() {
    local bin
    if bin="$(pg_bin)" && [ -f "$DIR/pg/PG_VERSION" ]; then
        as_owner "$bin/pg_ctl" -D "$DIR/pg" -m fast stop >/dev/null 2>&1 || true
    fi
    if [ -f "$DIR/redis.pid" ]; then
        redis-cli -h 127.0.0.1 -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || kill "$(cat "$DIR/redis.pid")" 2>/dev/null || true
    fi
    rm -rf "$DIR"
    log "stopped and removed $DIR"
}

case "${1:-}" in
    up) install_missing; pg_up; redis_up ;;
    env) print_env ;;
    down) down ;;
    *) echo "usage: $0 up|env|down" >&2; exit 2 ;;
esac
