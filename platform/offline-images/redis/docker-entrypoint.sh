#!/usr/bin/env bash
# The official redis image's entrypoint: options alone run redis-server, which runs as the redis
# user in /data. That image builds Redis with protected mode off (other containers must reach it
# without a password); Debian's is on, so it is turned off here, before the caller's options.
set -euo pipefail
if [[ ${1:0:1} == - || $1 == *.conf ]]; then set -- redis-server "$@"; fi
if [[ $1 != redis-server ]]; then exec "$@"; fi

shift
config=()
if [[ ${1:-} == *.conf ]]; then config=("$1") && shift; fi
set -- redis-server "${config[@]}" --protected-mode no "$@"
if [[ $(id -u) == 0 ]]; then
    find . \! -user redis -exec chown redis '{}' +
    exec setpriv --reuid redis --regid redis --init-groups "$@"
fi
exec "$@"
