-- PIN guessing defence per trunk (see src/pins/guard.rs): a GCRA on PIN entries that detects
-- an attack, and the queue of verdicts while one is under way. Times in ms since the epoch.
CREATE TABLE pin_guard (
    trunk           TEXT   NOT NULL PRIMARY KEY,
    -- Theoretical arrival time of the failure GCRA: each PIN entry adds one interval,
    -- a right PIN gives it back; more than `burst` intervals ahead of now is an attack.
    fail_tat_ms     BIGINT NOT NULL,
    -- While under attack, the time of the next free verdict slot.
    verdict_tat_ms  BIGINT NOT NULL,
    attack_until_ms BIGINT NOT NULL,
    -- The turn handed out by the last reservation (0 at once, -1 queue full).
    last_turn_ms    BIGINT NOT NULL
);

-- Callers whose number joined a room with a valid PIN on a trunk lately: they skip the
-- queue during an attack. Keyed by a keyed hash (HMAC) of trunk and number.
CREATE TABLE trusted_callers (
    trust_key TEXT   NOT NULL PRIMARY KEY,
    until_ms  BIGINT NOT NULL
);

-- Secrets shared by the nodes of one store (the key of number hashes, unless configured).
CREATE TABLE secrets (
    name  TEXT NOT NULL PRIMARY KEY,
    value TEXT NOT NULL
);

-- Lockout keys were an unsalted SHA-256 of the number, which can be reversed: they are
-- keyed with a secret from now on, and the old rows go.
DELETE FROM failed_attempts;
