-- Streamed after the snapshot: an insert, an update (full before image), a delete.
INSERT INTO dbz.all_types (id, c_bool, c_int, c_decimal, c_text, c_date, c_datetime6, c_timestamp, c_blob)
 VALUES (4, 1, 42, 0.5, 'inserted', '2024-02-29', '2024-02-29 23:59:59.5', '2024-02-29 23:59:59.5', x'cafe');
UPDATE dbz.all_types SET c_int = 7, c_text = 'updated', c_decimal = 1.000001, c_date = '1970-01-01' WHERE id = 1;
DELETE FROM dbz.all_types WHERE id = 3;
