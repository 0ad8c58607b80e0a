-- The Debezium golden table for MariaDB: one column per common type.
-- Run by scripts/debezium-golden.sh (to make the golden files with the real
-- Debezium) and by the test that compares riffle's Kafka output with them.
DROP DATABASE IF EXISTS dbz;
CREATE DATABASE dbz;
CREATE TABLE dbz.all_types (
    id int PRIMARY KEY,
    c_bool tinyint(1),
    c_tinyint tinyint,
    c_smallint smallint,
    c_mediumint mediumint,
    c_int int,
    c_int_unsigned int unsigned,
    c_bigint bigint,
    c_bigint_unsigned bigint unsigned,
    c_float float,
    c_double double,
    c_decimal decimal(20,6),
    c_char char(4),
    c_varchar varchar(40),
    c_text text,
    c_binary binary(4),
    c_varbinary varbinary(16),
    c_blob blob,
    c_date date,
    c_time time,
    c_time3 time(3),
    c_datetime datetime,
    c_datetime3 datetime(3),
    c_datetime6 datetime(6),
    c_timestamp timestamp(6) NULL,
    c_year year,
    c_enum enum('sad','ok','happy'),
    c_set set('a','b','c'),
    c_bit1 bit(1),
    c_bit12 bit(12),
    c_json json,
    c_tinyint_unsigned tinyint unsigned,
    c_smallint_unsigned smallint unsigned,
    c_mediumint_unsigned mediumint unsigned
) CHARACTER SET utf8mb4;
INSERT INTO dbz.all_types VALUES
 (1, 1, -128, 32767, 8388607, -2147483648, 4294967295, 9223372036854775807, 18446744073709551615, 1.5, -2.25, 12345.678901,
  'ab', 'varchar ü', 'text "quoted"\n', 'ab', x'00ff10', x'deadbeef', '2026-03-01', '12:34:56', '-838:59:59.000',
  '2026-03-01 12:34:56', '2026-03-01 12:34:56.123', '2026-03-01 12:34:56.123456', '2000-01-01 00:00:00.5', 2026, 'happy', 'a,c',
  b'1', b'101010101010', '{"a": [1, 2.5, null]}', 255, 65535, 16777215),
 (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (3, 0, 127, -32768, -8388608, 0, 0, -9223372036854775808, 0, -0.125, 1e300, -0.000001, 'abcd', '', '', '', x'', x'',
  '1969-12-31', '838:59:59', '00:00:00.001', '1969-12-31 23:59:59', '1900-01-01 00:00:00.000', '1969-12-31 23:59:59.999999',
  '1970-01-01 00:00:01', 1901, 'sad', '', b'0', b'000000000001', '[]', 0, 0, 0);
