#!/usr/bin/env bash
# The official postgres image's entrypoint, reduced to what this stand-in honours: PGDATA,
# POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB and POSTGRES_INITDB_ARGS on first start; then
# the server runs as the postgres user.
set -euo pipefail
if [[ ${1:0:1} == - ]]; then set -- postgres "$@"; fi
if [[ $1 != postgres ]]; then exec "$@"; fi

if [[ $(id -u) == 0 ]]; then
    install -d -o postgres -g postgres -m 700 "$PGDATA"
    install -d -o postgres -g postgres -m 3777 /var/run/postgresql
    exec setpriv --reuid postgres --regid postgres --init-groups "${BASH_SOURCE[0]}" "$@"
fi

initialize() {
    local user=${POSTGRES_USER:-postgres}
    local database=${POSTGRES_DB:-$user}
    # shellcheck disable=SC2086  # POSTGRES_INITDB_ARGS is a list of words, as in the official image
    initdb -D "$PGDATA" --username="$user" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") \
        ${POSTGRES_INITDB_ARGS:-}
    printf 'host all all all scram-sha-256\n' >>"$PGDATA/pg_hba.conf"
    printf "listen_addresses = '*'\n" >>"$PGDATA/postgresql.conf"
    if [[ $database != postgres ]]; then
        pg_ctl -D "$PGDATA" -w -o "-c listen_addresses=''" start
        psql -v ON_ERROR_STOP=1 -U "$user" -d postgres --set database="$database" \
            <<<'CREATE DATABASE :"database";'
        pg_ctl -D "$PGDATA" -w -m fast stop
    fi
}

if [[ ! -s $PGDATA/PG_VERSION ]]; then
    : "${POSTGRES_PASSWORD:?the official image refuses to initialize without POSTGRES_PASSWORD}"
    initialize
fi
exec "$@"
