-- The Debezium golden tables for transaction metadata (MariaDB): three small
-- tables, captured as dbz.a, dbz.b, dbz.c.
-- Run by scripts/debezium-golden.sh --txmeta (to make messages-txmeta.jsonl
-- with the real Debezium) and by the test that compares riffle's Kafka output
-- with it.
DROP DATABASE IF EXISTS dbz;
CREATE DATABASE dbz;
CREATE TABLE dbz.a (id int PRIMARY KEY, v text) CHARACTER SET utf8mb4;
CREATE TABLE dbz.b (id int PRIMARY KEY, v text) CHARACTER SET utf8mb4;
CREATE TABLE dbz.c (id int PRIMARY KEY, v text) CHARACTER SET utf8mb4;
INSERT INTO dbz.a VALUES (1, 'a1'), (2, 'a2');
INSERT INTO dbz.b VALUES (1, 'b1');
INSERT INTO dbz.c VALUES (1, 'c1'), (2, 'c2'), (3, 'c3');
