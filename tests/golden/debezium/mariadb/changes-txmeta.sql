-- Streamed after the snapshot, with provide.transaction.metadata=true.
-- Transaction 1 (one BEGIN ... COMMIT): 5 changes across the three tables.
BEGIN;
INSERT INTO dbz.a VALUES (3, 'a3');
UPDATE dbz.b SET v = 'b1 updated' WHERE id = 1;
INSERT INTO dbz.c VALUES (4, 'c4'), (5, 'c5');
DELETE FROM dbz.a WHERE id = 1;
COMMIT;
-- Transaction 2: a single update (one statement, its own transaction).
UPDATE dbz.c SET v = 'c2 updated' WHERE id = 2;
