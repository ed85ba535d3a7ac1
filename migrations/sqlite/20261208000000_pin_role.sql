-- What a PIN makes its caller in the room (src/pins/mod.rs, PinRole), and whether a
-- participant PIN's callers hold (music) until a host is in the room. Rows from before
-- keep working: they read as participant PINs that do not wait.
ALTER TABLE pins ADD COLUMN role TEXT NOT NULL DEFAULT 'participant'
    CHECK (role IN ('participant', 'host'));
ALTER TABLE pins ADD COLUMN wait_for_host BOOLEAN NOT NULL DEFAULT FALSE;
