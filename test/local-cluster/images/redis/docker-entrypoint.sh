#!/bin/bash
# Like the official image: arguments starting with '-' go to redis-server; without a config file
# it listens on all interfaces with protected mode off; runs as the redis user when started as root.
set -euo pipefail
if [ $# -eq 0 ] || [ "${1:0:1}" = '-' ]; then set -- redis-server "$@"; fi
if [ "$1" = redis-server ]; then
    shift
    if [ $# -gt 0 ] && [ -f "$1" ]; then
        set -- redis-server "$@"
    else
        set -- redis-server --bind 0.0.0.0 --protected-mode no --port 6379 --dir /data "$@"
    fi
    if [ "$(id -u)" = 0 ]; then
        chown redis:redis /data 2>/dev/null || true
        exec setpriv --reuid=redis --regid=redis --init-groups "$@"
    fi
fi
exec "$@"
