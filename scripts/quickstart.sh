#!/usr/bin/env bash
# riffle's main job on an embedded default, from a fresh machine:
# starts a private PostgreSQL with a small shop database, takes a snapshot and
# streams changes to local files (./quickstart-out), then shows what it wrote.
#
#   scripts/quickstart.sh          run, then stop the server it started
#   KEEP=1 scripts/quickstart.sh   leave the server running to play with
set -euo pipefail
cd "$(dirname "$0")/.."

export RIFFLE_RUN_DIR=${RIFFLE_RUN_DIR:-/tmp/riffle-quickstart}
export RIFFLE_PG_PORT=${RIFFLE_PG_PORT:-55442}
OUT=${OUT:-$PWD/quickstart-out}

command -v cargo >/dev/null || { echo "quickstart: cargo is required (https://rustup.rs)" >&2; exit 1; }

scripts/servers.sh start postgres
[ -n "${KEEP:-}" ] || trap 'scripts/servers.sh stop' EXIT
# shellcheck disable=SC1091
source "$RIFFLE_RUN_DIR/postgres.env"

echo "== building riffle"
scripts/build-deps.sh
cargo build --quiet --bin riffle
RIFFLE=$PWD/target/debug/riffle

psql_() { PGPASSWORD=riffle-test-pw psql -h 127.0.0.1 -p "$RIFFLE_PG_PORT" -U postgres -v ON_ERROR_STOP=1 -q "$@"; }
echo "== creating the sample database 'shop'"
psql_ -d postgres -c "DROP DATABASE IF EXISTS shop WITH (FORCE)" -c "CREATE DATABASE shop"
psql_ -d shop <<'SQL'
CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, email text, created_at timestamptz DEFAULT now());
CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id int REFERENCES customers, amount numeric(12,2), status text, items jsonb);
INSERT INTO customers (name, email) SELECT 'customer ' || g, 'c' || g || '@example.com' FROM generate_series(1, 100) g;
INSERT INTO orders (customer_id, amount, status, items)
  SELECT 1 + g % 100, round((g * 7.31)::numeric % 500, 2), 'new', jsonb_build_object('sku', 'S' || g, 'qty', 1 + g % 3)
  FROM generate_series(1, 1000) g;
SQL

SOURCE="postgres://postgres:riffle-test-pw@127.0.0.1:$RIFFLE_PG_PORT/shop"
rm -rf "$OUT"
echo "== riffle replicate: snapshot, then stream until the current position"
"$RIFFLE" replicate --source "$SOURCE" --tables 'public.*' --sink "$OUT" --format jsonl --state "$OUT/.state" --until now

echo "== changing some rows"
psql_ -d shop <<'SQL'
UPDATE orders SET status = 'shipped' WHERE id <= 3;
DELETE FROM orders WHERE id = 10;
INSERT INTO customers (name, email) VALUES ('new customer', 'new@example.com');
SQL
echo "== riffle replicate again: resumes from the saved position and streams the changes"
"$RIFFLE" replicate --source "$SOURCE" --tables 'public.*' --sink "$OUT" --format jsonl --state "$OUT/.state" --until now

echo
echo "== files written under $OUT"
find "$OUT" -name '*.jsonl' | sort | sed "s|$OUT/||"
echo
echo "== the streamed changes"
for f in "$OUT"/public.*/*.x*.jsonl; do cat "$f"; done
echo
"$RIFFLE" status --state "$OUT/.state" --source "$SOURCE"
