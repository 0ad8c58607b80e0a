-- The Debezium golden table for Postgres: one column per common type.
-- Run by scripts/debezium-golden.sh (to make the golden files with the real
-- Debezium) and by the test that compares riffle's Kafka output with them.
DROP SCHEMA IF EXISTS dbz CASCADE;
CREATE SCHEMA dbz;
CREATE TYPE dbz.mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE dbz.all_types (
    id integer PRIMARY KEY,
    c_bool boolean,
    c_int2 smallint,
    c_int4 integer,
    c_int8 bigint,
    c_float4 real,
    c_float8 double precision,
    c_numeric numeric(38,10),
    c_numeric_small numeric(5,2),
    c_numeric_any numeric,
    c_char char(4),
    c_varchar varchar(40),
    c_text text,
    c_bytea bytea,
    c_date date,
    c_time time,
    c_time3 time(3),
    c_timetz timetz,
    c_ts timestamp,
    c_ts3 timestamp(3),
    c_tstz timestamptz,
    c_interval interval,
    c_uuid uuid,
    c_json json,
    c_jsonb jsonb,
    c_int_array integer[],
    c_text_array text[],
    c_enum dbz.mood,
    c_inet inet,
    c_interval_frac interval
);
ALTER TABLE dbz.all_types REPLICA IDENTITY FULL;
INSERT INTO dbz.all_types VALUES
 (1, true, 32767, -2147483648, 9223372036854775807, 1.5, -2.25, 12345.6789, 3.14, 3.14, 'ab', 'varchar ü', 'text "quoted"\n', '\x00ff10',
  '2026-03-01', '12:34:56.789012', '12:34:56.789', '12:34:56.5+05:30', '2026-03-01 12:34:56.123456', '2026-03-01 12:34:56.123',
  '2000-01-01 00:00:00+00', '1 year 2 months 3 days 04:05:06.789', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"a": [1, 2.5, null]}',
  '{"b": true, "a": 1}', '{1,NULL,3}', '{"x","y z"}', 'happy', '192.168.0.1/24', '25 days 4.772974 seconds'),
 (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (3, false, -32768, 0, -9223372036854775808, -0.125, 1e300, -0.0000000001, -999.99, -123456789012345678901234.5678, 'abcd', '', '',
  '\x', '1969-12-31', '00:00:00', '23:59:59.999', '00:00:00-08', '1969-12-31 23:59:59.999999', '1900-01-01 00:00:00',
  '1969-07-20 20:17:40.5-04', '-1 days -00:00:01', '00000000-0000-0000-0000-000000000000', '[]', '{}', '{}', '{}', 'sad', '::1', '1 mon -0.000001 seconds');
