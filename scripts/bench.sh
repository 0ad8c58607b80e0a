#!/usr/bin/env bash
# Benchmarks riffle against the database's own tools on ../shared/bench,
# in the same run, and prints ratios (riffle / reference) and peak RSS.
#
#   scripts/bench.sh [postgres|mariadb|kafka|all]   1,000,000 rows, the 350k-change workloads (default: all)
#     kafka: the Postgres runs plus the 350k changes replicated into a Kafka-protocol broker (tansu),
#            and that topic read back by riffle's Kafka source into CSV files
#     files: the Postgres snapshot to Parquet and CSV, on local disk and on the S3 server (SeaweedFS)
#     snapshot: the chunked Postgres snapshot with 1, 2 and 4 workers vs one and two parallel psql COPY,
#               a resume after kill -9 at 60 % vs a full snapshot, and a snapshot under the CDC workload
#     verify: riffle verify of bench.orders in a Parquet sink (local disk) vs psql COPY of the table
#   ROWS=100000 scripts/bench.sh postgres     a quicker run (Postgres only: the MariaDB seed is fixed at 1M)
#   RIFFLE_BIN=/tmp/riffle-old scripts/bench.sh files   measure another build (A/B against an earlier commit)
#
# Figures: wall time from /usr/bin/time -v, and its "Maximum resident set
# size". Absolute seconds vary from machine to machine; the ratios are what
# to compare (../shared/bench/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BENCH=${BENCH_DIR:-$ROOT/../shared/bench}
ROWS=${ROWS:-1000000}
export RIFFLE_RUN_DIR=${RIFFLE_RUN_DIR:-/tmp/riffle-bench}
export RIFFLE_PG_PORT=${RIFFLE_PG_PORT:-55452}
WORK=${WORK:-/tmp/riffle-bench-work}

[ -f "$BENCH/pg_seed.sql" ] || { echo "bench: workloads not found in $BENCH (set BENCH_DIR)" >&2; exit 1; }
if [ ! -x /usr/bin/time ]; then
    if [ "$(id -u)" = 0 ]; then apt-get install -y -qq time >/dev/null; else sudo apt-get install -y -qq time >/dev/null; fi
fi

WHICH=${1:-all}
export RIFFLE_MARIADB_PORT=${RIFFLE_MARIADB_PORT:-53316}
export RIFFLE_KAFKA_PORT=${RIFFLE_KAFKA_PORT:-59102}
export RIFFLE_S3_PORT=${RIFFLE_S3_PORT:-58433} RIFFLE_S3_MASTER_PORT=${RIFFLE_S3_MASTER_PORT:-58430}
export RIFFLE_S3_VOLUME_PORT=${RIFFLE_S3_VOLUME_PORT:-58440} RIFFLE_S3_FILER_PORT=${RIFFLE_S3_FILER_PORT:-58450}
WITH_KAFKA=0 WITH_FILES=0
case "$WHICH" in
postgres) scripts/servers.sh start postgres ;;
mariadb) scripts/servers.sh start mariadb ;;
kafka) WITH_KAFKA=1; scripts/servers.sh start postgres kafka ;;
files) WITH_FILES=1; scripts/servers.sh start postgres s3 ;;
snapshot | verify) scripts/servers.sh start postgres ;;
all) WITH_KAFKA=1 WITH_FILES=1; scripts/servers.sh start postgres mariadb kafka s3 ;;
*) echo "usage: $0 [postgres|mariadb|kafka|files|snapshot|verify|all]" >&2; exit 2 ;;
esac
KAFKA="kafka://127.0.0.1:$RIFFLE_KAFKA_PORT"
trap 'scripts/servers.sh stop' EXIT
scripts/build-deps.sh
# RIFFLE_BIN=/path/to/riffle measures another build (an A/B against an
# earlier commit) instead of building this checkout.
if [ -n "${RIFFLE_BIN:-}" ]; then
    RIFFLE=$RIFFLE_BIN
else
    cargo build --release --quiet --bin riffle
    RIFFLE=$ROOT/target/release/riffle
fi
BIN=/usr/lib/postgresql/15/bin
export PGPASSWORD=riffle-test-pw
PSQL=(psql -h 127.0.0.1 -p "$RIFFLE_PG_PORT" -U postgres -v ON_ERROR_STOP=1 -q)
URL="postgres://postgres:riffle-test-pw@127.0.0.1:$RIFFLE_PG_PORT/bench"

rm -rf "$WORK"
mkdir -p "$WORK"

# measure NAME CMD...: runs CMD under /usr/bin/time -v; sets SECS and RSS_MB.
measure() {
    local name=$1
    shift
    /usr/bin/time -v -o "$WORK/$name.time" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" || {
        echo "bench: $name failed:" >&2
        tail -n 20 "$WORK/$name.err" >&2
        exit 1
    }
    SECS=$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; print s}' "$WORK/$name.time")
    RSS_MB=$(awk -F': ' '/Maximum resident set size/ {printf "%.0f", $2/1024}' "$WORK/$name.time")
    CPU_S=$(awk -F': ' '/(User|System) time \(seconds\)/ {s += $2} END {printf "%.2f", s}' "$WORK/$name.time")
}
# The CPU seconds (user + system) process PID has used so far.
cpu_of() { awk -v t="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / t}' "/proc/$1/stat"; }
# measure_with_server PID NAME CMD...: measure, and also the CPU seconds
# the server PID spent meanwhile (SERVER_CPU_S).
measure_with_server() {
    local pid=$1 before
    shift
    before=$(cpu_of "$pid")
    measure "$@"
    SERVER_CPU_S=$(awk -v a="$before" -v b="$(cpu_of "$pid")" 'BEGIN { printf "%.2f", b - a }')
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

RESULTS=()
report() { RESULTS+=("$(printf '%-46s %8.2f s %6s MB' "$1" "$2" "$3")"); }

seed_postgres() {
    "${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS bench WITH (FORCE)" -c "CREATE DATABASE bench"
    echo "== seeding bench.orders with $ROWS rows"
    "${PSQL[@]}" -d bench -v rows="$ROWS" -f "$BENCH/pg_seed.sql" >/dev/null
    "${PSQL[@]}" -d bench -c "CHECKPOINT" -c "VACUUM ANALYZE bench.orders"
}

# The committed rows of bench.orders in a pipeline's saved snapshot plan.
committed_rows() {
    python3 -c 'import json,sys
try:
    s = json.load(open(sys.argv[1]))
    print(sum(t["rows"] for t in (s.get("chunks") or {}).get("tables", [])))
except Exception:
    print(0)' "$1"
}

# psql COPY of bench.orders, the reference: sets COPY_S.
copy_reference() {
    measure psql_copy "${PSQL[@]}" -d bench -o "$WORK/copy.csv" -c "COPY bench.orders TO STDOUT (FORMAT csv)"
    COPY_S=$SECS
    report "psql COPY … TO STDOUT (reference)" "$SECS" "$RSS_MB"
}

bench_snapshot() {
    seed_postgres
    echo "== chunked snapshot: riffle sync with 1, 2, 4 workers vs psql COPY"
    copy_reference
    local half=$((ROWS / 2))
    measure psql_copy2 bash -c "${PSQL[*]} -d bench -o $WORK/copy-a.csv -c 'COPY (SELECT * FROM bench.orders WHERE id <= $half) TO STDOUT (FORMAT csv)' &
        ${PSQL[*]} -d bench -o $WORK/copy-b.csv -c 'COPY (SELECT * FROM bench.orders WHERE id > $half) TO STDOUT (FORMAT csv)'; wait"
    COPY2_S=$SECS
    report "two psql COPY of halves, in parallel" "$SECS" "$RSS_MB"
    for w in 1 2 4; do
        measure "riffle_sync_w$w" "$RIFFLE" sync --source "$URL" --tables bench.orders --sink "$WORK/sync-w$w" --format csv --no-metadata \
            --snapshot-workers "$w"
        eval "W${w}_S=$SECS W${w}_RSS=$RSS_MB"
        report "riffle sync → CSV, $w worker(s)" "$SECS" "$RSS_MB"
    done
    echo "== a table without a key (a copy of bench.orders): block ranges (ctid) with 2 workers vs psql COPY"
    "${PSQL[@]}" -d bench -q -c "CREATE TABLE bench.orders_nokey AS SELECT * FROM bench.orders" -c "VACUUM ANALYZE bench.orders_nokey"
    measure psql_copy_nokey "${PSQL[@]}" -d bench -o "$WORK/copy-nokey.csv" -c "COPY bench.orders_nokey TO STDOUT (FORMAT csv)"
    NOKEY_COPY_S=$SECS
    report "psql COPY of the keyless copy (reference)" "$SECS" "$RSS_MB"
    measure riffle_sync_nokey "$RIFFLE" sync --source "$URL" --tables bench.orders_nokey --sink "$WORK/sync-nokey" --format csv --no-metadata \
        --snapshot-workers 2
    NOKEY_S=$SECS NOKEY_RSS=$RSS_MB
    report "riffle sync → CSV of the keyless copy, 2 workers" "$SECS" "$RSS_MB"
    "${PSQL[@]}" -d bench -q -c "DROP TABLE bench.orders_nokey"
    echo "== resume after kill -9 at 60 %"
    measure riffle_full "$RIFFLE" replicate --source "$URL" --tables bench.orders --sink "$WORK/full" --format csv --state "$WORK/full-state" \
        --name bench_full --until now --commit-interval 200ms -q
    FULL_S=$SECS
    report "riffle replicate, full snapshot (2 workers)" "$SECS" "$RSS_MB"
    "$RIFFLE" replicate --source "$URL" --tables bench.orders --sink "$WORK/resume" --format csv --state "$WORK/resume-state" \
        --name bench_resume --until now --commit-interval 200ms -q &
    local pid=$! target=$((ROWS * 6 / 10))
    # Frozen while its state is read, killed frozen: what was read is what the kill leaves.
    while :; do
        kill -STOP "$pid" 2>/dev/null || { echo "bench: the snapshot ended before 60 %" >&2; exit 1; }
        [ "$(committed_rows "$WORK/resume-state/bench_resume.json")" -ge "$target" ] && break
        kill -CONT "$pid"
        sleep 0.02
    done
    kill -9 "$pid"
    wait "$pid" 2>/dev/null || true
    KILLED_AT=$(committed_rows "$WORK/resume-state/bench_resume.json")
    measure riffle_resume "$RIFFLE" replicate --source "$URL" --tables bench.orders --sink "$WORK/resume" --format csv \
        --state "$WORK/resume-state" --name bench_resume --until now --commit-interval 200ms -q
    RESUME_S=$SECS
    report "riffle replicate, resumed ($((KILLED_AT * 100 / ROWS)) % committed)" "$SECS" "$RSS_MB"
    echo "== snapshot while the CDC workload runs"
    "${PSQL[@]}" -d bench -f "$BENCH/pg_cdc_workload.sql" >/dev/null &
    local writer=$!
    measure riffle_busy "$RIFFLE" replicate --source "$URL" --tables bench.orders --sink "$WORK/busy" --format csv --state "$WORK/busy-state" \
        --name bench_busy --until now --commit-interval 200ms -q
    BUSY_S=$SECS
    report "riffle replicate, snapshot under the workload" "$SECS" "$RSS_MB"
    wait "$writer"
    echo "== online: the table read again in rounds while streaming (riffle snapshot), quiet and under the workload"
    # Caught up first: the measured run reads the table, not the workload's changes.
    # Twice, around a CHECKPOINT (which logs the running transactions): only
    # then does the slot's restart_lsn pass the workload, and the measured
    # run's stream does not start by decoding the workload's WAL again
    # (about 0.8 s here; Postgres's own cost of resuming after a burst,
    # whatever riffle reads next).
    for _ in 1 2; do
        "$RIFFLE" replicate --source "$URL" --tables bench.orders --sink "$WORK/full" --format csv --state "$WORK/full-state" \
            --name bench_full --until now -q
        "${PSQL[@]}" -d bench -c "CHECKPOINT"
    done
    # The exported path again on the table as it is now (the workload above
    # added rows and dead tuples): what the online runs compare with.
    measure riffle_full_now "$RIFFLE" replicate --source "$URL" --tables bench.orders --sink "$WORK/full-now" --format csv \
        --state "$WORK/full-now-state" --name bench_full_now --until now --commit-interval 200ms -q
    FULL_NOW_S=$SECS
    report "riffle replicate, full snapshot of that table" "$SECS" "$RSS_MB"
    "$RIFFLE" snapshot --name bench_full --state "$WORK/full-state" --tables bench.orders >/dev/null
    measure riffle_rounds "$RIFFLE" replicate --source "$URL" --tables bench.orders --sink "$WORK/full" --format csv --state "$WORK/full-state" \
        --name bench_full --until now --commit-interval 200ms --snapshot-round 500ms -q
    ROUNDS_S=$SECS
    report "riffle snapshot again, rounds of 500ms" "$SECS" "$RSS_MB"
    "$RIFFLE" snapshot --name bench_full --state "$WORK/full-state" --tables bench.orders >/dev/null
    "${PSQL[@]}" -d bench -f "$BENCH/pg_cdc_workload.sql" >/dev/null &
    writer=$!
    measure riffle_rounds_busy "$RIFFLE" replicate --source "$URL" --tables bench.orders --sink "$WORK/full" --format csv \
        --state "$WORK/full-state" --name bench_full --until now --commit-interval 200ms --snapshot-round 500ms -q
    ROUNDS_BUSY_S=$SECS
    report "  the same under the CDC workload" "$SECS" "$RSS_MB"
    wait "$writer"
    for slot in bench_full bench_full_now bench_resume bench_busy; do
        "${PSQL[@]}" -d bench -c "SELECT pg_drop_replication_slot('$slot')" >/dev/null
    done
}

bench_postgres() {
    seed_postgres

    echo "== snapshot: psql COPY vs riffle sync to CSV"
    copy_reference
    measure riffle_sync_plain "$RIFFLE" sync --source "$URL" --tables bench.orders --sink "$WORK/sync-plain" --format csv --no-metadata
    SYNC_S=$SECS SYNC_RSS=$RSS_MB
    report "riffle sync → CSV (--no-metadata)" "$SECS" "$RSS_MB"
    measure riffle_sync_meta "$RIFFLE" sync --source "$URL" --tables bench.orders --sink "$WORK/sync-meta" --format csv
    SYNCM_S=$SECS
    report "riffle sync → CSV (with __ metadata)" "$SECS" "$RSS_MB"
    measure riffle_sync_jsonl "$RIFFLE" sync --source "$URL" --tables bench.orders --sink "$WORK/sync-jsonl" --format jsonl
    SYNCJ_S=$SECS
    report "riffle sync → JSON lines" "$SECS" "$RSS_MB"
    if [ "$WITH_FILES" = 1 ]; then
        bench_files
    fi
    [ "$WHICH" = files ] && return

    echo "== stream: pg_recvlogical vs riffle replicate of the CDC workload"
    "${PSQL[@]}" -d bench -c "CREATE PUBLICATION bench_ref FOR TABLE bench.orders"
    "$BIN/pg_recvlogical" -h 127.0.0.1 -p "$RIFFLE_PG_PORT" -U postgres -d bench --create-slot -S bench_ref -P pgoutput
    # riffle takes its snapshot first (not measured), so both slots start before the workload.
    "$RIFFLE" replicate --source "$URL" --tables bench.orders --sink "$WORK/cdc" --format csv --state "$WORK/state" --name bench_riffle --until now -q
    if [ "$WITH_KAFKA" = 1 ]; then
        # The snapshot goes to the broker too (not measured); the slot starts before the workload.
        "$RIFFLE" replicate --source "$URL" --tables bench.orders --sink "$KAFKA" --state "$WORK/kstate" --name bench_kafka --until now -q
    fi
    echo "== running the 350k-change workload"
    "${PSQL[@]}" -d bench -f "$BENCH/pg_cdc_workload.sql" >/dev/null
    END_LSN=$("${PSQL[@]}" -d bench -tAc "SELECT pg_current_wal_lsn()")
    measure pg_recvlogical "$BIN/pg_recvlogical" -h 127.0.0.1 -p "$RIFFLE_PG_PORT" -U postgres -d bench --start -S bench_ref \
        -o proto_version=1 -o publication_names=bench_ref --endpos "$END_LSN" -f "$WORK/recvlogical.out" --no-loop
    RECV_S=$SECS
    report "pg_recvlogical (reference)" "$SECS" "$RSS_MB"
    measure riffle_stream "$RIFFLE" replicate --source "$URL" --tables bench.orders --sink "$WORK/cdc" --format csv --state "$WORK/state" \
        --name bench_riffle --until "$END_LSN" --commit-interval 5s
    STREAM_S=$SECS STREAM_RSS=$RSS_MB
    report "riffle replicate → CSV files" "$SECS" "$RSS_MB"
    CHANGES=$(cat "$WORK"/cdc/bench.orders/*.x*.csv | grep -c -E ',(c|u|d),' || true)
    if [ "$WITH_KAFKA" = 1 ]; then
        measure riffle_kafka "$RIFFLE" replicate --source "$URL" --tables bench.orders --sink "$KAFKA" --state "$WORK/kstate" \
            --name bench_kafka --until "$END_LSN" --commit-interval 5s
        KAFKA_S=$SECS KAFKA_RSS=$RSS_MB
        report "riffle replicate → Kafka (JSON, tansu)" "$SECS" "$RSS_MB"
        # The topic (the snapshot's rows and the 350k changes) read back into CSV files.
        measure riffle_from_kafka "$RIFFLE" replicate --source "$KAFKA?topics=bench_kafka.bench.orders" --sink "$WORK/from-kafka" \
            --format csv --state "$WORK/fkstate" --name bench_from_kafka --until now --commit-interval 5s
        FROM_KAFKA_S=$SECS FROM_KAFKA_RSS=$RSS_MB
        FROM_KAFKA_EVENTS=$(cat "$WORK"/from-kafka/bench.orders/*.csv | grep -c -E ',(r|c|u|d),' || true)
        report "riffle replicate Kafka → CSV files" "$SECS" "$RSS_MB"
    fi
    "${PSQL[@]}" -d bench -c "SELECT pg_drop_replication_slot('bench_ref')" >/dev/null
}

# Snapshot to Parquet and CSV, local disk and S3 (SeaweedFS on loopback).
bench_files() {
    # shellcheck disable=SC1091
    source "$RIFFLE_RUN_DIR/s3.env"
    export AWS_ACCESS_KEY_ID=$RIFFLE_TEST_S3_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$RIFFLE_TEST_S3_SECRET_KEY
    export AWS_REGION=$RIFFLE_TEST_S3_REGION AWS_ENDPOINT_URL=$RIFFLE_TEST_S3_ENDPOINT
    local s3="s3://$RIFFLE_TEST_S3_BUCKET/bench-$$"
    echo "== snapshot to Parquet and CSV, local disk and S3"
    measure riffle_parquet_plain "$RIFFLE" sync --source "$URL" --tables bench.orders --sink "$WORK/pq-plain" --format parquet --no-metadata
    PQ_S=$SECS PQ_RSS=$RSS_MB
    report "riffle sync → Parquet, local (--no-metadata)" "$SECS" "$RSS_MB"
    measure riffle_parquet_meta "$RIFFLE" sync --source "$URL" --tables bench.orders --sink "$WORK/pq-meta" --format parquet
    PQM_S=$SECS
    report "riffle sync → Parquet, local (metadata)" "$SECS" "$RSS_MB"
    measure riffle_parquet_s3 "$RIFFLE" sync --source "$URL" --tables bench.orders --sink "$s3/pq" --format parquet --no-metadata
    PQS3_S=$SECS PQS3_RSS=$RSS_MB
    report "riffle sync → Parquet, S3 (--no-metadata)" "$SECS" "$RSS_MB"
    measure riffle_csv_s3 "$RIFFLE" sync --source "$URL" --tables bench.orders --sink "$s3/csv" --format csv --no-metadata
    CSVS3_S=$SECS CSVS3_RSS=$RSS_MB
    report "riffle sync → CSV, S3 (--no-metadata)" "$SECS" "$RSS_MB"
    PQ_BYTES=$(du -sb "$WORK/pq-plain" | cut -f1)
    CSV_BYTES=$(du -sb "$WORK/sync-plain" | cut -f1)
}

bench_mariadb() {
    local sock=$RIFFLE_RUN_DIR/mariadb/mariadbd.sock
    local MY=(mariadb --no-defaults -S "$sock" -uroot)
    local MYURL="mariadb://admin:riffle-test-pw@127.0.0.1:$RIFFLE_MARIADB_PORT/bench"
    echo "== seeding bench.orders (MariaDB, 1,000,000 rows)"
    "${MY[@]}" <"$BENCH/my_seed.sql"
    echo "== snapshot: mariadb --quick --batch vs riffle sync to CSV"
    # The server's CPU too: on a small machine the server and the client
    # share the cores, and the server's work is most of a snapshot's.
    local server
    server=$(cat "$RIFFLE_RUN_DIR/mariadb.pid")
    measure_with_server "$server" mariadb_select "${MY[@]}" --quick --batch -e "SELECT * FROM bench.orders"
    MY_SELECT_S=$SECS MY_SELECT_CPU="client $CPU_S s, server $SERVER_CPU_S s"
    report "mariadb --quick --batch SELECT (reference)" "$SECS" "$RSS_MB"
    measure_with_server "$server" riffle_my_sync "$RIFFLE" sync --source "$MYURL" --tables bench.orders --sink "$WORK/my-sync" --format csv --no-metadata
    MY_SYNC_S=$SECS MY_SYNC_RSS=$RSS_MB MY_SYNC_CPU="client $CPU_S s, server $SERVER_CPU_S s"
    report "riffle sync MariaDB → CSV (--no-metadata)" "$SECS" "$RSS_MB"
    echo "== stream: mariadb-binlog vs riffle replicate of the CDC workload"
    "$RIFFLE" replicate --source "$MYURL" --tables bench.orders --sink "$WORK/my-cdc" --format csv --state "$WORK/my-state" --name bench_my --until now -q
    read -r FILE POS < <("${MY[@]}" -N -e "SHOW MASTER STATUS" | awk '{print $1, $2}')
    # The workload file creates the procedure and calls it once.
    "${MY[@]}" <"$BENCH/my_cdc_workload.sql"
    measure mariadb_binlog mariadb-binlog --no-defaults --skip-ssl --read-from-remote-server -h 127.0.0.1 -P "$RIFFLE_MARIADB_PORT" -uadmin -priffle-test-pw \
        --start-position="$POS" --to-last-log -v --base64-output=decode-rows "$FILE"
    MY_BINLOG_S=$SECS
    report "mariadb-binlog -v decode-rows (reference)" "$SECS" "$RSS_MB"
    measure riffle_my_stream "$RIFFLE" replicate --source "$MYURL" --tables bench.orders --sink "$WORK/my-cdc" --format csv --state "$WORK/my-state" \
        --name bench_my --until now --commit-interval 5s
    MY_STREAM_S=$SECS MY_STREAM_RSS=$RSS_MB
    report "riffle replicate MariaDB → CSV files" "$SECS" "$RSS_MB"
    MY_CHANGES=$(cat "$WORK"/my-cdc/bench.orders/*.x*.csv | grep -c -E ',(c|u|d),' || true)
}

bench_verify() {
    seed_postgres
    echo "== riffle verify of a Parquet copy vs psql COPY"
    copy_reference
    local args=(--source "$URL" --tables bench.orders --sink "$WORK/verify" --format parquet --state "$WORK/verify-state" --name bench_verify)
    "$RIFFLE" replicate "${args[@]}" --until now -q
    measure riffle_verify "$RIFFLE" verify "${args[@]}" -q
    VERIFY_S=$SECS VERIFY_RSS=$RSS_MB
    report "riffle verify, Parquet sink" "$SECS" "$RSS_MB"
    grep -q "the copy matches the source" "$WORK/riffle_verify.out" || { echo "bench: verify did not match" >&2; exit 1; }
}

case "$WHICH" in
postgres | kafka | files) bench_postgres ;;
snapshot) bench_snapshot ;;
verify) bench_verify ;;
mariadb) bench_mariadb ;;
all) bench_postgres; bench_mariadb ;;
esac

echo
echo "riffle benchmarks, $(nproc) cores, $(date -u +%Y-%m-%d)"
printf '%s\n' "${RESULTS[@]}"
echo
if [ -n "${VERIFY_S:-}" ]; then
    echo "riffle verify (Parquet) / psql COPY:            $(ratio "$VERIFY_S" "$COPY_S")  (target ≤ 2), peak RSS ${VERIFY_RSS} MB (target < 200 MB)"
elif [ -n "${W1_S:-}" ]; then
    echo "two parallel psql COPY / one:                  $(ratio "$COPY2_S" "$COPY_S")  (the parallel limit of this machine)"
    for w in 1 2 4; do
        eval "echo \"riffle sync, $w worker(s) / one psql COPY:         \$(ratio \$W${w}_S $COPY_S), peak RSS \${W${w}_RSS} MB\""
    done
    echo "  (target: 2 workers ≤ 1.0× one COPY; memory < 150 MB with 4 workers)"
    echo "keyless table by block ranges, 2 workers / COPY: $(ratio "$NOKEY_S" "$NOKEY_COPY_S"), peak RSS ${NOKEY_RSS} MB"
    echo "resumed after kill -9 at 60 % / full snapshot:  $(ratio "$RESUME_S" "$FULL_S")  (target ≤ 0.6)"
    echo "snapshot under the CDC workload / without:     $(ratio "$FULL_S" "$BUSY_S") throughput ratio"
    echo "online (rounds of 500ms), quiet / exported:     $(ratio "$FULL_NOW_S" "$ROUNDS_S") throughput ratio (target ≥ 0.7; both on the table after the workload)"
    echo "online (rounds of 500ms), under the workload:   $(ratio "$FULL_NOW_S" "$ROUNDS_BUSY_S") throughput ratio (also streams the 350k changes)"
elif [ -n "${COPY_S:-}" ]; then
    echo "snapshot ratio (riffle sync CSV --no-metadata / psql COPY): $(ratio "$SYNC_S" "$COPY_S")  (target ≤ 1.5), peak RSS ${SYNC_RSS} MB"
    echo "snapshot ratio (with metadata columns / psql COPY):        $(ratio "$SYNCM_S" "$COPY_S")"
    echo "snapshot ratio (JSON lines / psql COPY):                   $(ratio "$SYNCJ_S" "$COPY_S")"
    if [ -n "${STREAM_S:-}" ]; then
        echo "stream ratio (riffle replicate / pg_recvlogical):          $(ratio "$STREAM_S" "$RECV_S")  (target ≤ 1.5), peak RSS ${STREAM_RSS} MB, $CHANGES changes"
    fi
fi
if [ -n "${PQ_S:-}" ]; then
    rows_per_s() { awk -v n="$ROWS" -v s="$1" 'BEGIN { printf "%.0f", n / s }'; }
    echo "Parquet local ratio (riffle sync --no-metadata / psql COPY): $(ratio "$PQ_S" "$COPY_S")  (target ≤ 2), peak RSS ${PQ_RSS} MB, \
$(rows_per_s "$PQ_S") rows/s, $((PQ_BYTES / 1048576)) MiB (CSV: $((CSV_BYTES / 1048576)) MiB)"
    echo "Parquet with metadata / psql COPY:                        $(ratio "$PQM_S" "$COPY_S")"
    echo "Parquet on S3 / psql COPY:                                $(ratio "$PQS3_S" "$COPY_S"), peak RSS ${PQS3_RSS} MB, $(rows_per_s "$PQS3_S") rows/s"
    echo "CSV on S3 / psql COPY:                                    $(ratio "$CSVS3_S" "$COPY_S"), peak RSS ${CSVS3_RSS} MB, $(rows_per_s "$CSVS3_S") rows/s"
fi
if [ -n "${KAFKA_S:-}" ]; then
    echo "Kafka ratio (riffle replicate → broker / pg_recvlogical):  $(ratio "$KAFKA_S" "$RECV_S")  (target ≤ 2), peak RSS ${KAFKA_RSS} MB, \
$(awk -v n="$CHANGES" -v s="$KAFKA_S" 'BEGIN { printf "%.0f", n / s }') events/s"
fi
if [ -n "${FROM_KAFKA_S:-}" ]; then
    per_s() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.0f", n / s }'; }
    echo "Kafka source → CSV: $(per_s "$FROM_KAFKA_EVENTS" "$FROM_KAFKA_S") events/s ($FROM_KAFKA_EVENTS events), peak RSS ${FROM_KAFKA_RSS} MB; \
Postgres → CSV stream: $(per_s "$CHANGES" "$STREAM_S") events/s; ratio $(awk -v a="$FROM_KAFKA_EVENTS" -v b="$FROM_KAFKA_S" -v c="$CHANGES" -v d="$STREAM_S" 'BEGIN { printf "%.2f", (a / b) / (c / d) }') (target ≥ 1)"
fi
if [ -n "${MY_SELECT_S:-}" ]; then
    echo "MariaDB snapshot ratio (riffle sync CSV / mariadb --quick): $(ratio "$MY_SYNC_S" "$MY_SELECT_S")  (target ≤ 1.0), peak RSS ${MY_SYNC_RSS} MB"
    echo "  CPU: mariadb --quick: $MY_SELECT_CPU; riffle sync: $MY_SYNC_CPU ($(nproc) cores shared by both)"
    echo "MariaDB stream ratio (riffle replicate / mariadb-binlog):   $(ratio "$MY_STREAM_S" "$MY_BINLOG_S")  (target ≤ 2), peak RSS ${MY_STREAM_RSS} MB, $MY_CHANGES changes"
fi
