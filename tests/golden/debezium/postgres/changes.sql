-- Streamed after the snapshot: an insert, an update (full before image), a delete.
INSERT INTO dbz.all_types (id, c_bool, c_int4, c_numeric, c_numeric_any, c_text, c_date, c_ts, c_tstz, c_interval, c_bytea)
 VALUES (4, true, 42, 0.5, 100, 'inserted', '2024-02-29', '2024-02-29 23:59:59.5', '2024-02-29 23:59:59.5+00', '3 hours', '\xdeadbeef');
UPDATE dbz.all_types SET c_int4 = 7, c_text = 'updated', c_numeric = 1.0000000001, c_date = '1970-01-01',
 c_tstz = '2026-11-30 08:00:00.000001+01' WHERE id = 1;
DELETE FROM dbz.all_types WHERE id = 3;
