-- dialin store, PostgreSQL engine. Keep the same semantics as migrations/sqlite.
-- Times are milliseconds since the Unix epoch (UTC) in both engines, so that the
-- lockout arithmetic is one SQL text for both.

-- PINs: unique within their namespace; the primary key is the lookup index.
CREATE TABLE pins (
    namespace        TEXT    NOT NULL,
    pin              TEXT    NOT NULL,
    room             TEXT    NOT NULL,
    participant_name TEXT,
    valid_from_ms    BIGINT,
    valid_until_ms   BIGINT,
    created_at_ms    BIGINT  NOT NULL,
    revoked          BOOLEAN NOT NULL DEFAULT FALSE,
    revoked_at_ms    BIGINT,
    PRIMARY KEY (namespace, pin)
);

CREATE INDEX pins_by_room ON pins (room, namespace);

-- One row per call, inserted at setup and completed at the end. Numbers are masked.
CREATE TABLE call_records (
    id                   TEXT    NOT NULL PRIMARY KEY,
    trunk                TEXT    NOT NULL,
    caller_masked        TEXT    NOT NULL,
    room                 TEXT,
    outcome              TEXT,
    setup_at_ms          BIGINT  NOT NULL,
    answered_at_ms       BIGINT,
    ended_at_ms          BIGINT,
    pin_attempts         BIGINT  NOT NULL DEFAULT 0,
    rtp_packets_received BIGINT  NOT NULL DEFAULT 0,
    rtp_packets_lost     BIGINT  NOT NULL DEFAULT 0,
    jitter_ms            DOUBLE PRECISION NOT NULL DEFAULT 0,
    late_frames          BIGINT  NOT NULL DEFAULT 0
);

CREATE INDEX call_records_by_setup ON call_records (setup_at_ms);

-- Failed PIN counters per lockout key (trunk + hash of the calling number).
CREATE TABLE failed_attempts (
    lockout_key     TEXT   NOT NULL PRIMARY KEY,
    window_start_ms BIGINT NOT NULL,
    failures        BIGINT NOT NULL,
    locked_until_ms BIGINT
);
