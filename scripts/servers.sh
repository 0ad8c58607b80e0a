#!/usr/bin/env bash
# Starts and stops riffle's private test servers.
#
#   scripts/servers.sh start [postgres ...]   install what is missing, start (idempotent)
#   scripts/servers.sh stop                   stop only what this script started (by pid)
#   scripts/servers.sh env                    print the variables tests read
#   scripts/servers.sh running                exit 0 when all servers are up
#
# Servers listen on loopback, on non-default ports, with their data under
# $RIFFLE_RUN_DIR (default /tmp/riffle-servers). Each server is one
# start_<name>/stop_<name> pair writing <name>.pid and lines of <name>.env, so
# MariaDB, the Kafka-protocol broker, S3 and Azure servers slot in the same way.
set -euo pipefail

RUN_DIR=${RIFFLE_RUN_DIR:-/tmp/riffle-servers}
PG_PORT=${RIFFLE_PG_PORT:-55432}
PG_NOCDC_PORT=${RIFFLE_PG_NOCDC_PORT:-55433}
PG_RESTART_PORT=${RIFFLE_PG_RESTART_PORT:-55434}
PG_PASSWORD=${RIFFLE_PG_PASSWORD:-riffle-test-pw}
PG_VERSION=15

log() { echo "servers: $*" >&2; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

apt_install() {
    log "installing $* (apt-get)"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

alive() { [ -f "$1" ] && kill -0 "$(head -n1 "$1")" 2>/dev/null; }

# ---------------------------------------------------------------- postgres
pg_bin() { echo "/usr/lib/postgresql/$PG_VERSION/bin"; }

# pg_instance NAME PORT WAL_LEVEL ENV_PREFIX
pg_instance() {
    local name=$1 port=$2 wal_level=$3 prefix=$4
    local bin data pidfile
    bin=$(pg_bin)
    if [ ! -x "$bin/postgres" ]; then
        apt_install "postgresql-$PG_VERSION" "postgresql-client-$PG_VERSION"
    fi
    data=$RUN_DIR/$name
    pidfile=$RUN_DIR/$name.pid
    if alive "$pidfile"; then
        log "$name already running (pid $(head -n1 "$pidfile")) on 127.0.0.1:$port"
        return
    fi
    # Run as the postgres user when we are root: initdb refuses root.
    local run=()
    if [ "$(id -u)" = 0 ]; then
        id postgres >/dev/null 2>&1 || useradd --system --home-dir "$RUN_DIR" postgres
        run=(runuser -u postgres --)
    fi
    # The server writes its socket and log into the run directory.
    if [ "$(id -u)" = 0 ]; then chown postgres "$RUN_DIR"; fi
    if [ ! -f "$data/PG_VERSION" ]; then
        rm -rf "$data"
        mkdir -p "$data"
        printf '%s\n' "$PG_PASSWORD" >"$RUN_DIR/pgpass"
        if [ "$(id -u)" = 0 ]; then chown -R postgres "$data" "$RUN_DIR/pgpass"; fi
        chmod 755 "$RUN_DIR"
        "${run[@]}" "$bin/initdb" -D "$data" -U postgres --pwfile="$RUN_DIR/pgpass" \
            --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >"$RUN_DIR/$name-initdb.log" 2>&1 \
            || { cat "$RUN_DIR/$name-initdb.log" >&2; exit 1; }
    fi
    "${run[@]}" "$bin/pg_ctl" -D "$data" -l "$RUN_DIR/$name.log" -w -t 60 start -o \
        "-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$RUN_DIR \
         -c wal_level=$wal_level -c max_replication_slots=40 -c max_wal_senders=40 -c fsync=off \
         -c password_encryption=scram-sha-256" >/dev/null \
        || { tail -n 30 "$RUN_DIR/$name.log" >&2; exit 1; }
    head -n1 "$data/postmaster.pid" >"$pidfile"
    cat >"$RUN_DIR/$name.env" <<ENV
export ${prefix}_URL=postgres://postgres:$PG_PASSWORD@127.0.0.1:$port/postgres
export ${prefix}_PORT=$port
ENV
    log "$name (PostgreSQL $PG_VERSION, wal_level=$wal_level) on 127.0.0.1:$port (pid $(cat "$pidfile")), data in $data"
}

stop_pg_instance() {
    local name=$1 pidfile=$RUN_DIR/$1.pid
    # A test may have restarted the server: its data directory (ours) knows the live pid.
    [ -f "$RUN_DIR/$name/postmaster.pid" ] && head -n1 "$RUN_DIR/$name/postmaster.pid" >"$pidfile"
    if alive "$pidfile"; then
        local run=()
        [ "$(id -u)" = 0 ] && run=(runuser -u postgres --)
        "${run[@]}" "$(pg_bin)/pg_ctl" -D "$RUN_DIR/$name" -m fast -w stop >/dev/null 2>&1 || kill "$(cat "$pidfile")" 2>/dev/null || true
        log "$name stopped"
    fi
    rm -f "$pidfile"
}

# The server riffle replicates from.
start_postgres() {
    pg_instance postgres "$PG_PORT" logical RIFFLE_TEST_PG
    echo "export RIFFLE_TEST_PG_BIN=$(pg_bin)" >>"$RUN_DIR/postgres.env"
}
stop_postgres() { stop_pg_instance postgres; }

# A server the tests may restart (source restarted mid-stream).
start_postgres_restart() {
    pg_instance postgres_restart "$PG_RESTART_PORT" logical RIFFLE_TEST_PG_RESTART
    local run=""
    [ "$(id -u)" = 0 ] && run="runuser -u postgres -- "
    echo "export RIFFLE_TEST_PG_RESTART_CMD='${run}$(pg_bin)/pg_ctl -D $RUN_DIR/postgres_restart -l $RUN_DIR/postgres_restart.log -m fast -w -t 60 restart'" >>"$RUN_DIR/postgres_restart.env"
}
stop_postgres_restart() { stop_pg_instance postgres_restart; }

# A deliberately misconfigured server (wal_level=replica) for error tests.
start_postgres_nocdc() { pg_instance postgres_nocdc "$PG_NOCDC_PORT" replica RIFFLE_TEST_PG_NOCDC; }
stop_postgres_nocdc() { stop_pg_instance postgres_nocdc; }

# ---------------------------------------------------------------- mariadb
MARIADB_PORT=${RIFFLE_MARIADB_PORT:-53306}
MARIADB_NOCDC_PORT=${RIFFLE_MARIADB_NOCDC_PORT:-53307}
MARIADB_PASSWORD=${RIFFLE_MARIADB_PASSWORD:-riffle-test-pw}

# my_instance NAME PORT ENV_PREFIX MARIADBD_FLAGS...
my_instance() {
    local name=$1 port=$2 prefix=$3
    shift 3
    if ! command -v mariadbd >/dev/null && [ ! -x /usr/sbin/mariadbd ]; then
        apt_install mariadb-server mariadb-client
    fi
    # Everything the server writes lives in its own data directory (owned by mysql when we are root).
    local data=$RUN_DIR/$name pidfile=$RUN_DIR/$name.pid sock=$RUN_DIR/$name/mariadbd.sock
    if alive "$pidfile"; then
        log "$name already running (pid $(head -n1 "$pidfile")) on 127.0.0.1:$port"
        return
    fi
    local user=()
    [ "$(id -u)" = 0 ] && user=(--user=mysql)
    if [ ! -d "$data/mysql" ]; then
        mkdir -p "$data"
        [ "$(id -u)" = 0 ] && chown mysql "$data"
        mariadb-install-db "${user[@]}" --datadir="$data" --auth-root-authentication-method=normal \
            --skip-test-db >"$RUN_DIR/$name-install.log" 2>&1 || { cat "$RUN_DIR/$name-install.log" >&2; exit 1; }
    fi
    [ "$(id -u)" = 0 ] && chown -R mysql "$data"
    /usr/sbin/mariadbd --no-defaults "${user[@]}" --datadir="$data" --port="$port" --bind-address=127.0.0.1 \
        --socket="$sock" --pid-file="$data/mariadbd.pid" --log-error="$data/error.log" "$@" </dev/null >/dev/null 2>&1 &
    echo $! >"$pidfile"
    local i
    for i in $(seq 1 120); do
        mariadb --no-defaults -S "$sock" -uroot -e "SELECT 1" >/dev/null 2>&1 && break
        sleep 0.5
    done
    mariadb --no-defaults -S "$sock" -uroot -e "SELECT 1" >/dev/null 2>&1 || { tail -n 30 "$data/error.log" >&2; exit 1; }
    # Remove the anonymous users (they shadow user@localhost over TCP); an
    # admin for the tests, and riffle's user with only what riffle documents.
    mariadb --no-defaults -S "$sock" -uroot <<SQL
DELETE FROM mysql.global_priv WHERE User = '';
FLUSH PRIVILEGES;
CREATE USER IF NOT EXISTS 'admin'@'127.0.0.1' IDENTIFIED BY '$MARIADB_PASSWORD';
GRANT ALL PRIVILEGES ON *.* TO 'admin'@'127.0.0.1' WITH GRANT OPTION;
CREATE USER IF NOT EXISTS 'riffle'@'127.0.0.1' IDENTIFIED BY '$MARIADB_PASSWORD';
GRANT SELECT, RELOAD, REPLICATION SLAVE, BINLOG MONITOR ON *.* TO 'riffle'@'127.0.0.1';
SQL
    cat >"$RUN_DIR/$name.env" <<ENV
export ${prefix}_URL=mariadb://admin:$MARIADB_PASSWORD@127.0.0.1:$port/mysql
export ${prefix}_RIFFLE_URL=mariadb://riffle:$MARIADB_PASSWORD@127.0.0.1:$port/mysql
export ${prefix}_SOCKET=$sock
ENV
    log "$name (MariaDB $(mariadbd --version | awk '{print $3}')) on 127.0.0.1:$port (pid $(cat "$pidfile")), data in $data"
}

stop_my_instance() {
    local name=$1 pidfile=$RUN_DIR/$1.pid
    if alive "$pidfile"; then
        local pid
        pid=$(cat "$pidfile")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        log "$name stopped"
    fi
    rm -f "$pidfile"
}

# The server riffle replicates from: row-based binlog with full images and metadata, GTIDs.
start_mariadb() {
    my_instance mariadb "$MARIADB_PORT" RIFFLE_TEST_MARIADB --server-id=1 --log-bin=mariadb-bin \
        --binlog-format=ROW --binlog-row-image=FULL --binlog-row-metadata=FULL --gtid-strict-mode=1 \
        --innodb-flush-log-at-trx-commit=2 --sync-binlog=0 --max-connections=200 --character-set-server=utf8mb4
}
stop_mariadb() { stop_my_instance mariadb; }

# Deliberately misconfigured: no binary log, statement format, minimal images.
start_mariadb_nocdc() {
    my_instance mariadb_nocdc "$MARIADB_NOCDC_PORT" RIFFLE_TEST_MARIADB_NOCDC --server-id=2 --skip-log-bin \
        --binlog-format=STATEMENT --binlog-row-image=MINIMAL
}
stop_mariadb_nocdc() { stop_my_instance mariadb_nocdc; }

# ---------------------------------------------------------------- main
ALL=(postgres postgres_nocdc postgres_restart mariadb mariadb_nocdc)

cmd=${1:-}
shift || true
case "$cmd" in
start)
    mkdir -p "$RUN_DIR"
    servers=("$@")
    [ ${#servers[@]} -eq 0 ] && servers=("${ALL[@]}")
    for s in "${servers[@]}"; do "start_$s"; done
    cat "$RUN_DIR"/*.env >"$RUN_DIR/env"
    ;;
stop)
    for s in "${ALL[@]}"; do "stop_$s"; done
    [ -d "$RUN_DIR" ] && rm -rf "$RUN_DIR"
    ;;
env)
    cat "$RUN_DIR/env"
    ;;
running)
    # Exit 0 when every server is up (started earlier by this script).
    for s in "${ALL[@]}"; do
        [ -f "$RUN_DIR/$s/postmaster.pid" ] && head -n1 "$RUN_DIR/$s/postmaster.pid" >"$RUN_DIR/$s.pid"
        alive "$RUN_DIR/$s.pid" || exit 1
    done
    ;;
*)
    echo "usage: $0 start [${ALL[*]}] | stop | env | running" >&2
    exit 2
    ;;
esac
