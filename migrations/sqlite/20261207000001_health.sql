-- One row written by every node's store probe: a store that cannot take a write (a full
-- disk, a read-only file system) is not ready, even when it still answers reads.
CREATE TABLE store_health (
    id    INTEGER NOT NULL PRIMARY KEY,
    at_ms BIGINT  NOT NULL
);
INSERT INTO store_health (id, at_ms) VALUES (1, 0);

-- The node that set a call up: records it left open when it died are closed when it
-- starts again.
ALTER TABLE call_records ADD COLUMN node TEXT;
