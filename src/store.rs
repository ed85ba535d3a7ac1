//! The store: PINs, call records and failed-PIN counters, in SQLite (embedded default) or
//! PostgreSQL (several gateway nodes sharing one database), through `sqlx`.
//!
//! It serves call flow step 4 (resolve a namespace and PIN to a room), the admin API and
//! CLI (create, list, revoke PINs), step 6 (complete the call record), and the lockout
//! rule of DESIGN.md "Privacy and security defaults". Both engines run the same SQL text
//! (times are integer milliseconds since the Unix epoch in both) over schemas created by
//! their own migrations (`migrations/sqlite`, `migrations/postgres`), so their behaviour
//! is the same and one test suite runs against both.
//!
//! Correctness rests on the database, not on this process: PIN uniqueness within a
//! namespace is the primary key, and the lockout counter is one atomic upsert, so two
//! nodes on one PostgreSQL enforce a single limit.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::call::registry::{CallId, CallOutcome};
use crate::config::{redact_url, LockoutConfig};
use crate::pins::{ParticipantName, Pin, PinNamespace, PinRole, RoomName};
use crate::privacy::{NumberKey, PhoneNumber};
use crate::ingress::trunk::TrunkId;

/// Fresh PINs drawn before giving up on a namespace. With a namespace one percent full,
/// sixteen collisions in a row happen with probability 10^-32; reaching the limit means
/// the namespace is (nearly) full and its `pin_length` must grow.
pub const PIN_GENERATION_ATTEMPTS: u32 = 16;

/// Rows per multi-row INSERT when importing PINs: 7 bound values per row stays under
/// SQLite's default limit of 32766 bound parameters (and PostgreSQL's 65535).
const IMPORT_ROWS_PER_STATEMENT: usize = 1000;

/// SQLite memory map: covers the PIN table of ~10 million PINs (~830 MiB measured).
const SQLITE_MMAP_BYTES: u64 = 1 << 30;

/// SQLite page cache per connection, KiB (the default is 2 MiB).
const SQLITE_CACHE_KIB: u32 = 16 * 1024;

/// How long to wait for a connection (or SQLite's write lock) before failing.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An explicit PIN already exists in its namespace (even if revoked: a handed-out
    /// PIN never comes back pointing at another room).
    #[error("this PIN is already taken in namespace {namespace}")]
    PinTaken { namespace: PinNamespace },
    /// No free PIN was found; the namespace is (nearly) full.
    #[error(
        "no free PIN found after {attempts} attempts: the namespace is full, increase pin_length"
    )]
    PinSpaceExhausted { attempts: u32 },
    /// `valid_until` is not after `valid_from`, or already past.
    #[error("{0}")]
    InvalidWindow(&'static str),
    /// A host PIN asked to wait for a host: its caller is the host.
    #[error("wait_for_host applies to participant PINs: a host PIN's caller is the host")]
    HostCannotWait,
    #[error("unsupported store URL {0:?} (sqlite://FILE, sqlite::memory: or postgres://...)")]
    UnsupportedUrl(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// A row holds a value this version cannot read.
    #[error("unreadable row in {table}: {detail}")]
    Corrupt { table: &'static str, detail: String },
    /// The database file is gone, replaced or made read-only under the running gateway.
    #[error("database file {path}: {reason}")]
    FileProblem { path: String, reason: &'static str },
}

/// A PIN and what it grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PinRecord {
    pub namespace: PinNamespace,
    pub pin: Pin,
    pub room: RoomName,
    pub participant_name: Option<ParticipantName>,
    pub valid_from: Option<DateTime<Utc>>,
    pub valid_until: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub revoked: bool,
    pub role: PinRole,
    /// Callers of this participant PIN hold (music) until a host is in the room.
    pub wait_for_host: bool,
}

/// A PIN to create.
#[derive(Debug, Clone)]
pub struct NewPin {
    pub namespace: PinNamespace,
    pub room: RoomName,
    /// The PIN wanted; `None` draws one of `length` digits.
    pub pin: Option<Pin>,
    /// Digits of a drawn PIN: the namespace's `pin_length`.
    pub length: usize,
    pub valid_from: Option<DateTime<Utc>>,
    pub valid_until: Option<DateTime<Utc>>,
    pub participant_name: Option<ParticipantName>,
    pub role: PinRole,
    /// Only for a participant PIN ([`StoreError::HostCannotWait`] otherwise).
    pub wait_for_host: bool,
}

/// What a keyed PIN resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    Room {
        room: RoomName,
        participant_name: Option<ParticipantName>,
        role: PinRole,
        /// A participant waits (hold music) until a host is in the room.
        wait_for_host: bool,
    },
    Unknown,
    Revoked,
    NotYetValid,
    Expired,
}

/// Which PINs to list.
#[derive(Debug, Clone, Default)]
pub struct PinFilter {
    pub room: Option<RoomName>,
    pub namespace: Option<PinNamespace>,
    pub include_revoked: bool,
}

/// A call record as inserted when a call is set up.
#[derive(Debug, Clone)]
pub struct CallRecordStart {
    pub id: CallId,
    pub trunk: TrunkId,
    /// `••••1234`: records never hold a full number.
    pub caller_masked: String,
    pub setup_at: DateTime<Utc>,
    /// The node that runs the call (see [`Store::close_interrupted_records`]).
    pub node: Option<String>,
}

/// Receive-side RTP quality of a call (RFC 3550 §6.4.1 terms).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct RtpStats {
    pub packets_received: u64,
    pub packets_lost: u64,
    /// Interarrival jitter, milliseconds.
    pub jitter_ms: f64,
    /// Frames that missed their playout time.
    pub late_frames: u64,
}

/// How a call ended, written when it ends.
#[derive(Debug, Clone)]
pub struct CallRecordEnd {
    pub outcome: CallOutcome,
    pub room: Option<RoomName>,
    pub answered_at: Option<DateTime<Utc>>,
    pub ended_at: DateTime<Utc>,
    pub pin_attempts: u32,
    pub rtp: RtpStats,
}

/// A stored call record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallRecord {
    pub id: CallId,
    pub trunk: String,
    pub caller_masked: String,
    pub room: Option<String>,
    /// `None` while the call is in progress (or if the node died during it).
    pub outcome: Option<CallOutcome>,
    pub setup_at: DateTime<Utc>,
    pub answered_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub pin_attempts: u32,
    pub rtp: RtpStats,
}

/// The key failed PINs are counted under: the trunk and a keyed hash of the calling number
/// ([`NumberKey`]). The hash keeps numbers out of the database; the trunk keeps one
/// carrier's callers apart from another's. Never an IP address of a trunk (DESIGN.md).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LockoutKey(String);

impl LockoutKey {
    /// The counter of `caller` on `trunk`. Callers without a number (withheld, `anonymous`,
    /// any user part without a digit) share one bucket per trunk, so that a guesser cannot
    /// get a fresh counter by changing a made-up name.
    pub fn for_caller(key: &NumberKey, trunk: &TrunkId, caller: &PhoneNumber) -> LockoutKey {
        LockoutKey(format!("{trunk}:{}", key.hash("lockout", trunk.as_str(), caller)))
    }

    /// A key from text (tests, admin tooling).
    pub fn from_raw(key: impl Into<String>) -> LockoutKey {
        LockoutKey(key.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The PIN guard's settings in the store's units (see [`crate::pins::guard`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardPolicy {
    /// One PIN entry per interval is the sustained rate; under attack, the verdict spacing.
    pub interval: std::time::Duration,
    /// Entries beyond the sustained rate before an attack is declared.
    pub burst: u32,
    /// An attack ends this long after its last failed PIN.
    pub cooldown: std::time::Duration,
    /// Longest wait in the verdict queue; beyond it an entry is not judged.
    pub max_wait: std::time::Duration,
}

/// When a PIN entry gets its verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardTurn {
    /// At once: no attack, or a caller who skips the queue.
    Now,
    /// At this time, after the entries queued before it.
    At(DateTime<Utc>),
    /// The queue is full: the entry is not judged.
    Busy,
}

/// The counter of a lockout key after a failed PIN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutState {
    /// Failed PINs in the current window.
    pub failures: u32,
    /// Set once the limit is reached.
    pub locked_until: Option<DateTime<Utc>>,
}

impl LockoutState {
    pub fn is_locked(&self, now: DateTime<Utc>) -> bool {
        self.locked_until.is_some_and(|t| t > now)
    }
}

#[derive(Debug, Clone)]
enum Engine {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// The store, cheap to clone (a connection pool).
#[derive(Debug, Clone)]
pub struct Store {
    engine: Engine,
    /// For a SQLite file: its path and identity when it was opened.
    file: Option<DbFile>,
}

/// The SQLite file a store opened, to notice it being deleted, replaced or made read-only
/// while connections still hold the old one open.
#[derive(Debug, Clone)]
struct DbFile {
    path: std::path::PathBuf,
    #[cfg(unix)]
    identity: (u64, u64),
}

impl DbFile {
    fn open(path: std::path::PathBuf) -> Option<DbFile> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let m = std::fs::metadata(&path).ok()?;
            Some(DbFile {
                identity: (m.dev(), m.ino()),
                path,
            })
        }
        #[cfg(not(unix))]
        {
            Some(DbFile { path })
        }
    }

    fn check(&self) -> Result<(), StoreError> {
        let problem = |reason| StoreError::FileProblem {
            path: self.path.display().to_string(),
            reason,
        };
        let m = std::fs::metadata(&self.path).map_err(|_| problem("deleted"))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            if (m.dev(), m.ino()) != self.identity {
                return Err(problem("replaced by another file"));
            }
        }
        if m.permissions().readonly() {
            return Err(problem("read-only"));
        }
        Ok(())
    }
}

/// Where a `sqlite:` URL keeps its file, if it names one.
fn sqlite_path(url: &str) -> Option<std::path::PathBuf> {
    if url.contains(":memory:") || url.contains("mode=memory") {
        return None;
    }
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    (!path.is_empty()).then(|| std::path::PathBuf::from(path))
}

/// Runs the same body against whichever pool the store holds; each arm is type-checked
/// against its own driver.
macro_rules! on_pool {
    ($self:expr, $pool:ident => $body:expr) => {
        match &$self.engine {
            Engine::Sqlite($pool) => $body,
            Engine::Postgres($pool) => $body,
        }
    };
}

type PinRow = (
    String,
    String,
    String,
    Option<String>,
    Option<i64>,
    Option<i64>,
    i64,
    bool,
    String,
    bool,
);

const PIN_COLUMNS: &str = "namespace, pin, room, participant_name, valid_from_ms, valid_until_ms, \
                           created_at_ms, revoked, role, wait_for_host";

type CallRow = (
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    i64,
    Option<i64>,
    Option<i64>,
    i64,
    i64,
    i64,
    f64,
    i64,
);

const CALL_COLUMNS: &str =
    "id, trunk, caller_masked, room, outcome, setup_at_ms, answered_at_ms, ended_at_ms, \
     pin_attempts, rtp_packets_received, rtp_packets_lost, jitter_ms, late_frames";

fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn from_millis(table: &'static str, ms: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_millis(ms).ok_or_else(|| StoreError::Corrupt {
        table,
        detail: format!("time {ms} out of range"),
    })
}

fn opt_from_millis(
    table: &'static str,
    ms: Option<i64>,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    ms.map(|ms| from_millis(table, ms)).transpose()
}

fn corrupt<E: std::fmt::Display>(table: &'static str) -> impl Fn(E) -> StoreError {
    move |e| StoreError::Corrupt {
        table,
        detail: e.to_string(),
    }
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn pin_record(row: PinRow) -> Result<PinRecord, StoreError> {
    let (
        namespace,
        pin,
        room,
        participant_name,
        valid_from,
        valid_until,
        created_at,
        revoked,
        role,
        wait_for_host,
    ) = row;
    Ok(PinRecord {
        namespace: PinNamespace::parse(&namespace).map_err(corrupt("pins"))?,
        pin: Pin::parse(&pin).map_err(corrupt("pins"))?,
        room: RoomName::parse(&room).map_err(corrupt("pins"))?,
        participant_name: participant_name
            .as_deref()
            .map(ParticipantName::parse)
            .transpose()
            .map_err(corrupt("pins"))?,
        valid_from: opt_from_millis("pins", valid_from)?,
        valid_until: opt_from_millis("pins", valid_until)?,
        created_at: from_millis("pins", created_at)?,
        revoked,
        role: role.parse::<PinRole>().map_err(corrupt("pins"))?,
        wait_for_host,
    })
}

fn call_record(row: CallRow) -> Result<CallRecord, StoreError> {
    let (
        id,
        trunk,
        caller_masked,
        room,
        outcome,
        setup,
        answered,
        ended,
        attempts,
        received,
        lost,
        jitter,
        late,
    ) = row;
    let outcome = match outcome {
        None => None,
        Some(o) => Some(CallOutcome::parse(&o).ok_or_else(|| StoreError::Corrupt {
            table: "call_records",
            detail: format!("unknown outcome {o:?}"),
        })?),
    };
    Ok(CallRecord {
        id: CallId::new(id),
        trunk,
        caller_masked,
        room,
        outcome,
        setup_at: from_millis("call_records", setup)?,
        answered_at: opt_from_millis("call_records", answered)?,
        ended_at: opt_from_millis("call_records", ended)?,
        pin_attempts: u32::try_from(attempts).unwrap_or(0),
        rtp: RtpStats {
            packets_received: to_u64(received),
            packets_lost: to_u64(lost),
            jitter_ms: jitter,
            late_frames: to_u64(late),
        },
    })
}

impl Store {
    /// Opens the store at `url` and brings its schema up to date.
    ///
    /// `sqlite://FILE` creates the file if missing; `sqlite::memory:` is a private
    /// in-memory database (one connection, gone when the store is dropped);
    /// `postgres://` and `postgresql://` connect to PostgreSQL.
    pub async fn open(url: &str, max_connections: u32) -> Result<Store, StoreError> {
        let max_connections = max_connections.max(1);
        if url.starts_with("sqlite:") {
            let memory = url.contains(":memory:") || url.contains("mode=memory");
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .foreign_keys(true)
                .busy_timeout(ACQUIRE_TIMEOUT);
            // WAL lets lookups proceed during writes; NORMAL is durable across process
            // crashes in WAL mode (only an OS crash may lose the last commits).
            let options = if memory {
                options
            } else {
                options
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    // Lookups read through a shared memory map instead of a read() per
                    // B-tree page; pages stay shared by all connections in the OS cache.
                    .pragma("mmap_size", SQLITE_MMAP_BYTES.to_string())
            };
            let options = options.pragma("cache_size", format!("-{SQLITE_CACHE_KIB}"));
            let pool_options = SqlitePoolOptions::new().acquire_timeout(ACQUIRE_TIMEOUT);
            // An in-memory database lives as long as its one connection.
            let pool_options = if memory {
                pool_options
                    .max_connections(1)
                    .min_connections(1)
                    .idle_timeout(None)
                    .max_lifetime(None)
            } else {
                pool_options.max_connections(max_connections)
            };
            let path = sqlite_path(url);
            let created = path.as_ref().is_some_and(|p| !p.exists());
            let pool = pool_options.connect_with(options).await?;
            sqlx::migrate!("migrations/sqlite").run(&pool).await?;
            if let Some(p) = path.as_ref().filter(|_| created) {
                tracing::warn!(
                    path = %p.display(),
                    "store: no database file here, so a NEW EMPTY DATABASE was created: no PINs, no \
                     call records. If PINs were expected, check store.url and the working directory"
                );
            }
            Ok(Store {
                engine: Engine::Sqlite(pool),
                file: path.and_then(DbFile::open),
            })
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = PgPoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect(url)
                .await?;
            sqlx::migrate!("migrations/postgres").run(&pool).await?;
            Ok(Store {
                engine: Engine::Postgres(pool),
                file: None,
            })
        } else {
            Err(StoreError::UnsupportedUrl(redact_url(url)))
        }
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn engine(&self) -> &'static str {
        match self.engine {
            Engine::Sqlite(_) => "sqlite",
            Engine::Postgres(_) => "postgres",
        }
    }

    /// Checks the database answers (for `/readyz`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        on_pool!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(drop))?;
        Ok(())
    }

    /// Whether the store can take a write now: its file (SQLite) is still the one opened and
    /// writable, and a one-row update commits. A store that only answers reads is not
    /// ready: PIN guessing counts, call records and lockouts need writes.
    pub async fn health_check(&self, now: DateTime<Utc>) -> Result<(), StoreError> {
        if let Some(f) = &self.file {
            f.check()?;
        }
        let sql = "UPDATE store_health SET at_ms = $1 WHERE id = 1";
        on_pool!(self, pool => { sqlx::query(sql).bind(millis(now)).execute(pool).await?; });
        Ok(())
    }

    /// Closes the pool, waiting for connections in use.
    pub async fn close(&self) {
        on_pool!(self, pool => pool.close().await)
    }

    /// Creates a PIN: the one asked for (`PinTaken` if it exists), or a fresh one drawn
    /// from the OS-seeded CSPRNG, retried on collision up to
    /// [`PIN_GENERATION_ATTEMPTS`] times (`PinSpaceExhausted` after that).
    pub async fn create_pin(
        &self,
        new: NewPin,
        now: DateTime<Utc>,
    ) -> Result<PinRecord, StoreError> {
        if let (Some(from), Some(until)) = (new.valid_from, new.valid_until) {
            if until <= from {
                return Err(StoreError::InvalidWindow(
                    "valid_until must be later than valid_from",
                ));
            }
        }
        if new.valid_until.is_some_and(|until| until <= now) {
            return Err(StoreError::InvalidWindow("valid_until is already past"));
        }
        if new.role == PinRole::Host && new.wait_for_host {
            return Err(StoreError::HostCannotWait);
        }
        let created_at = from_millis("pins", millis(now))?;
        let record = |pin: Pin| PinRecord {
            namespace: new.namespace.clone(),
            pin,
            room: new.room.clone(),
            participant_name: new.participant_name.clone(),
            valid_from: new
                .valid_from
                .and_then(|t| DateTime::from_timestamp_millis(millis(t))),
            valid_until: new
                .valid_until
                .and_then(|t| DateTime::from_timestamp_millis(millis(t))),
            created_at,
            revoked: false,
            role: new.role,
            wait_for_host: new.wait_for_host,
        };
        if let Some(pin) = &new.pin {
            let rec = record(pin.clone());
            if self.insert_pin(&rec).await? {
                return Ok(rec);
            }
            return Err(StoreError::PinTaken {
                namespace: new.namespace,
            });
        }
        for _ in 0..PIN_GENERATION_ATTEMPTS {
            let pin = Pin::generate(&mut rand::thread_rng(), new.length);
            let rec = record(pin);
            if self.insert_pin(&rec).await? {
                return Ok(rec);
            }
        }
        // Random draws keep colliding: the namespace is nearly full. Look for a free PIN
        // in order from a random point, so that "full" is said only when it is.
        for _ in 0..PIN_GENERATION_ATTEMPTS {
            match self.find_free_pin(&new.namespace, new.length).await? {
                Some(pin) => {
                    let rec = record(pin);
                    if self.insert_pin(&rec).await? {
                        return Ok(rec);
                    }
                }
                None => break,
            }
        }
        tracing::warn!(namespace = %new.namespace, length = new.length, "PIN namespace is full");
        Err(StoreError::PinSpaceExhausted {
            attempts: PIN_GENERATION_ATTEMPTS,
        })
    }

    /// A PIN of `length` digits not in `namespace`, searched in order from a random point
    /// (wrapping around), or `None` when every one is taken.
    async fn find_free_pin(
        &self,
        namespace: &PinNamespace,
        length: usize,
    ) -> Result<Option<Pin>, StoreError> {
        let Some(capacity) = u32::try_from(length).ok().and_then(|l| 10u64.checked_pow(l)) else {
            return Ok(None);
        };
        let count_sql = "SELECT COUNT(*) FROM pins WHERE namespace = $1 AND LENGTH(pin) = $2";
        let (taken,): (i64,) = on_pool!(self, pool => sqlx::query_as(count_sql)
            .bind(namespace.as_str())
            .bind(i64::try_from(length).unwrap_or(i64::MAX))
            .fetch_one(pool)
            .await?);
        if u64::try_from(taken).unwrap_or(u64::MAX) >= capacity {
            return Ok(None);
        }
        let start = rand::random::<u64>() % capacity;
        let page_sql = "SELECT pin FROM pins WHERE namespace = $1 AND LENGTH(pin) = $2 \
                        AND pin >= $3 AND pin < $4 ORDER BY pin LIMIT 1000";
        let text = |n: u64| format!("{n:0length$}");
        // All PINs compared have `length` digits, so text order is numeric order; the end
        // of the space is a string past every one of them.
        let bound = |n: u64| if n >= capacity { "9".repeat(length + 1) } else { text(n) };
        // [start, capacity) first, then [0, start).
        for (from, to) in [(start, capacity), (0, start)] {
            let mut expected = from;
            while expected < to {
                let rows: Vec<(String,)> = on_pool!(self, pool => sqlx::query_as(page_sql)
                    .bind(namespace.as_str())
                    .bind(i64::try_from(length).unwrap_or(i64::MAX))
                    .bind(text(expected))
                    .bind(bound(to))
                    .fetch_all(pool)
                    .await?);
                let last_page = rows.len() < 1000;
                for (p,) in rows {
                    let n: u64 = p.parse().unwrap_or(u64::MAX);
                    if n > expected {
                        return Ok(Pin::parse(&text(expected)).ok());
                    }
                    expected = n.saturating_add(1);
                }
                if last_page {
                    if expected < to {
                        return Ok(Pin::parse(&text(expected)).ok());
                    }
                    break;
                }
            }
        }
        Ok(None)
    }

    /// Inserts a PIN unless its (namespace, pin) exists; false when it does.
    async fn insert_pin(&self, r: &PinRecord) -> Result<bool, StoreError> {
        let sql = "INSERT INTO pins (namespace, pin, room, participant_name, valid_from_ms, valid_until_ms, created_at_ms, revoked, \
                   role, wait_for_host) \
                   VALUES ($1, $2, $3, $4, $5, $6, $7, FALSE, $8, $9) ON CONFLICT (namespace, pin) DO NOTHING";
        let done = on_pool!(self, pool => sqlx::query(sql)
            .bind(r.namespace.as_str())
            .bind(r.pin.expose())
            .bind(r.room.as_str())
            .bind(r.participant_name.as_ref().map(ParticipantName::as_str))
            .bind(r.valid_from.map(millis))
            .bind(r.valid_until.map(millis))
            .bind(millis(r.created_at))
            .bind(r.role.as_str())
            .bind(r.wait_for_host)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(done == 1)
    }

    /// Imports many PINs for one room in a single transaction, with multi-row inserts, as
    /// participant PINs that do not wait for a host (the columns' defaults); PINs already
    /// present are skipped. Returns how many were inserted.
    pub async fn import_pins(
        &self,
        namespace: &PinNamespace,
        room: &RoomName,
        pins: &[Pin],
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let mut inserted = 0;
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for chunk in pins.chunks(IMPORT_ROWS_PER_STATEMENT) {
                let mut sql = String::from(
                    "INSERT INTO pins (namespace, pin, room, participant_name, valid_from_ms, valid_until_ms, created_at_ms, revoked) VALUES ",
                );
                for i in 0..chunk.len() {
                    let b = i * 4;
                    if i > 0 {
                        sql.push(',');
                    }
                    sql.push_str(&format!("(${}, ${}, ${}, NULL, NULL, NULL, ${}, FALSE)", b + 1, b + 2, b + 3, b + 4));
                }
                sql.push_str(" ON CONFLICT (namespace, pin) DO NOTHING");
                let mut q = sqlx::query(&sql);
                for pin in chunk {
                    q = q.bind(namespace.as_str()).bind(pin.expose()).bind(room.as_str()).bind(millis(now));
                }
                inserted += q.execute(&mut *tx).await?.rows_affected();
            }
            tx.commit().await?;
        });
        Ok(inserted)
    }

    /// The PIN's record, revoked or not.
    pub async fn get_pin(
        &self,
        namespace: &PinNamespace,
        pin: &Pin,
    ) -> Result<Option<PinRecord>, StoreError> {
        let sql = format!("SELECT {PIN_COLUMNS} FROM pins WHERE namespace = $1 AND pin = $2");
        let row: Option<PinRow> = on_pool!(self, pool => sqlx::query_as(&sql)
            .bind(namespace.as_str())
            .bind(pin.expose())
            .fetch_optional(pool)
            .await?);
        row.map(pin_record).transpose()
    }

    /// Resolves a keyed PIN at `now` (call flow step 4). A PIN is valid from
    /// `valid_from` (inclusive) until `valid_until` (exclusive).
    pub async fn resolve(
        &self,
        namespace: &PinNamespace,
        pin: &Pin,
        now: DateTime<Utc>,
    ) -> Result<Resolution, StoreError> {
        let Some(record) = self.get_pin(namespace, pin).await? else {
            return Ok(Resolution::Unknown);
        };
        Ok(if record.revoked {
            Resolution::Revoked
        } else if record.valid_from.is_some_and(|from| now < from) {
            Resolution::NotYetValid
        } else if record.valid_until.is_some_and(|until| now >= until) {
            Resolution::Expired
        } else {
            Resolution::Room {
                room: record.room,
                participant_name: record.participant_name,
                role: record.role,
                wait_for_host: record.wait_for_host,
            }
        })
    }

    /// PINs matching the filter, ordered by namespace then PIN.
    pub async fn list_pins(&self, filter: &PinFilter) -> Result<Vec<PinRecord>, StoreError> {
        let sql = format!(
            "SELECT {PIN_COLUMNS} FROM pins WHERE ($1 IS NULL OR room = $1) AND ($2 IS NULL OR namespace = $2) \
             AND ($3 OR revoked = FALSE) ORDER BY namespace, pin"
        );
        let rows: Vec<PinRow> = on_pool!(self, pool => sqlx::query_as(&sql)
            .bind(filter.room.as_ref().map(RoomName::as_str))
            .bind(filter.namespace.as_ref().map(PinNamespace::as_str))
            .bind(filter.include_revoked)
            .fetch_all(pool)
            .await?);
        rows.into_iter().map(pin_record).collect()
    }

    /// One page of [`Store::list_pins`]: at most `limit` PINs in (namespace, pin) order,
    /// after `after` when given. The memory a listing takes is one page, whatever the count.
    pub async fn list_pins_page(
        &self,
        filter: &PinFilter,
        after: Option<(&str, &str)>,
        limit: u32,
    ) -> Result<Vec<PinRecord>, StoreError> {
        let sql = format!(
            "SELECT {PIN_COLUMNS} FROM pins WHERE ($1 IS NULL OR room = $1) AND ($2 IS NULL OR namespace = $2) \
             AND ($3 OR revoked = FALSE) AND ($4 IS NULL OR namespace > $4 OR (namespace = $4 AND pin > $5)) \
             ORDER BY namespace, pin LIMIT $6"
        );
        let rows: Vec<PinRow> = on_pool!(self, pool => sqlx::query_as(&sql)
            .bind(filter.room.as_ref().map(RoomName::as_str))
            .bind(filter.namespace.as_ref().map(PinNamespace::as_str))
            .bind(filter.include_revoked)
            .bind(after.map(|a| a.0))
            .bind(after.map(|a| a.1).unwrap_or_default())
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?);
        rows.into_iter().map(pin_record).collect()
    }

    /// Revokes a PIN; false when there is no such PIN or it was already revoked. The row
    /// stays, so the PIN is never handed out again for another room.
    pub async fn revoke(
        &self,
        namespace: &PinNamespace,
        pin: &Pin,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let sql = "UPDATE pins SET revoked = TRUE, revoked_at_ms = $3 WHERE namespace = $1 AND pin = $2 AND revoked = FALSE";
        let n = on_pool!(self, pool => sqlx::query(sql)
            .bind(namespace.as_str())
            .bind(pin.expose())
            .bind(millis(now))
            .execute(pool)
            .await?
            .rows_affected());
        Ok(n > 0)
    }

    /// Records a call at setup.
    pub async fn insert_call_record(&self, start: &CallRecordStart) -> Result<(), StoreError> {
        let sql = "INSERT INTO call_records (id, trunk, caller_masked, setup_at_ms, node) VALUES ($1, $2, $3, $4, $5)";
        on_pool!(self, pool => sqlx::query(sql)
            .bind(start.id.as_str())
            .bind(start.trunk.as_str())
            .bind(&start.caller_masked)
            .bind(millis(start.setup_at))
            .bind(start.node.as_deref())
            .execute(pool)
            .await
            .map(drop))?;
        Ok(())
    }

    /// Closes the records that `node` left open when it last stopped without ending its
    /// calls (a crash, a kill): outcome `interrupted`, ended at `now`. Run once at start,
    /// before the node takes calls; other nodes' records are left alone. Returns how many.
    pub async fn close_interrupted_records(
        &self,
        node: &str,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let sql = "UPDATE call_records SET outcome = $3, ended_at_ms = $2 \
                   WHERE outcome IS NULL AND node = $1";
        let n = on_pool!(self, pool => sqlx::query(sql)
            .bind(node)
            .bind(millis(now))
            .bind(CallOutcome::Interrupted.as_str())
            .execute(pool)
            .await?
            .rows_affected());
        Ok(n)
    }

    /// Completes a call record when the call ends; false when no such record exists.
    pub async fn complete_call_record(
        &self,
        id: &CallId,
        end: &CallRecordEnd,
    ) -> Result<bool, StoreError> {
        let sql = "UPDATE call_records SET outcome = $2, room = $3, answered_at_ms = $4, ended_at_ms = $5, pin_attempts = $6, \
                   rtp_packets_received = $7, rtp_packets_lost = $8, jitter_ms = $9, late_frames = $10 WHERE id = $1";
        let n = on_pool!(self, pool => sqlx::query(sql)
            .bind(id.as_str())
            .bind(end.outcome.as_str())
            .bind(end.room.as_ref().map(RoomName::as_str))
            .bind(end.answered_at.map(millis))
            .bind(millis(end.ended_at))
            .bind(i64::from(end.pin_attempts))
            .bind(to_i64(end.rtp.packets_received))
            .bind(to_i64(end.rtp.packets_lost))
            .bind(end.rtp.jitter_ms)
            .bind(to_i64(end.rtp.late_frames))
            .execute(pool)
            .await?
            .rows_affected());
        Ok(n > 0)
    }

    pub async fn get_call_record(&self, id: &CallId) -> Result<Option<CallRecord>, StoreError> {
        let sql = format!("SELECT {CALL_COLUMNS} FROM call_records WHERE id = $1");
        let row: Option<CallRow> = on_pool!(self, pool => sqlx::query_as(&sql).bind(id.as_str()).fetch_optional(pool).await?);
        row.map(call_record).transpose()
    }

    /// Counts a failed PIN under `key` and locks the key once `failed_pin_limit`
    /// failures fall within `window_s`. One atomic upsert: concurrent failures from
    /// several nodes are all counted. A window older than `window_s`, or a lockout that
    /// has run out, starts a fresh count. A right PIN does not clear the count: a caller
    /// holding one valid PIN could otherwise reset it between guesses at others.
    pub async fn record_failed_attempt(
        &self,
        key: &LockoutKey,
        now: DateTime<Utc>,
        policy: &LockoutConfig,
    ) -> Result<LockoutState, StoreError> {
        const FRESH: &str = "(failed_attempts.window_start_ms <= $2 - $3 \
             OR (failed_attempts.locked_until_ms IS NOT NULL AND failed_attempts.locked_until_ms <= $2))";
        let sql = format!(
            "INSERT INTO failed_attempts (lockout_key, window_start_ms, failures, locked_until_ms) \
             VALUES ($1, $2, 1, CASE WHEN $5 <= 1 THEN $2 + $4 ELSE NULL END) \
             ON CONFLICT (lockout_key) DO UPDATE SET \
               window_start_ms = CASE WHEN {FRESH} THEN $2 ELSE failed_attempts.window_start_ms END, \
               failures = CASE WHEN {FRESH} THEN 1 ELSE failed_attempts.failures + 1 END, \
               locked_until_ms = CASE \
                 WHEN (CASE WHEN {FRESH} THEN 1 ELSE failed_attempts.failures + 1 END) >= $5 THEN $2 + $4 \
                 WHEN {FRESH} THEN NULL \
                 ELSE failed_attempts.locked_until_ms END \
             RETURNING failures, locked_until_ms"
        );
        let window_ms = to_i64(policy.window_s.saturating_mul(1000));
        let lockout_ms = to_i64(policy.lockout_s.saturating_mul(1000));
        let (failures, locked_until): (i64, Option<i64>) = on_pool!(self, pool => sqlx::query_as(&sql)
            .bind(key.as_str())
            .bind(millis(now))
            .bind(window_ms)
            .bind(lockout_ms)
            .bind(i64::from(policy.failed_pin_limit))
            .fetch_one(pool)
            .await?);
        Ok(LockoutState {
            failures: u32::try_from(failures).unwrap_or(u32::MAX),
            locked_until: opt_from_millis("failed_attempts", locked_until)?,
        })
    }

    /// When `key` is locked out at `now`, the end of the lockout.
    pub async fn locked_until(
        &self,
        key: &LockoutKey,
        now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let sql = "SELECT locked_until_ms FROM failed_attempts WHERE lockout_key = $1 AND locked_until_ms > $2";
        let row: Option<(Option<i64>,)> = on_pool!(self, pool => sqlx::query_as(sql).bind(key.as_str()).bind(millis(now)).fetch_optional(pool).await?);
        opt_from_millis("failed_attempts", row.and_then(|(t,)| t))
    }

    /// `GREATEST` in PostgreSQL, the two-argument `MAX` in SQLite.
    fn greatest(&self) -> &'static str {
        match self.engine {
            Engine::Sqlite(_) => "MAX",
            Engine::Postgres(_) => "GREATEST",
        }
    }

    /// One PIN entry on `trunk` asks for its verdict (see [`crate::pins::guard`]). The entry is
    /// first counted as a failure (one interval onto the trunk's failure GCRA), so that a
    /// guess whose failure cannot be recorded is never judged; a right PIN gives it back with
    /// [`Store::guard_settle`]. Crossing `burst` intervals ahead of now starts an attack.
    /// During an attack, an entry with `queue` takes the next verdict slot (one per
    /// interval), unless the queue is more than `max_wait` long ([`GuardTurn::Busy`]: not
    /// judged, and given back). One atomic statement: nodes sharing the store share the
    /// bound.
    pub async fn guard_reserve(
        &self,
        trunk: &TrunkId,
        now: DateTime<Utc>,
        policy: &GuardPolicy,
        queue: bool,
    ) -> Result<GuardTurn, StoreError> {
        let g = self.greatest();
        let insert = "INSERT INTO pin_guard (trunk, fail_tat_ms, verdict_tat_ms, attack_until_ms, last_turn_ms) \
                      VALUES ($1, 0, 0, 0, 0) ON CONFLICT (trunk) DO NOTHING";
        // $2 now, $3 interval, $4 burst tolerance, $5 cooldown, $6 queue, $7 max wait.
        let attacked = format!("(attack_until_ms > $2 OR {g}(fail_tat_ms, $2) + $3 - $2 > $4)");
        let sql = format!(
            "UPDATE pin_guard SET \
               fail_tat_ms = {g}(fail_tat_ms, $2) + $3, \
               attack_until_ms = CASE WHEN attack_until_ms <= $2 AND {g}(fail_tat_ms, $2) + $3 - $2 > $4 \
                 THEN $2 + $5 ELSE attack_until_ms END, \
               verdict_tat_ms = CASE WHEN $6 AND {attacked} AND {g}(verdict_tat_ms, $2) - $2 <= $7 \
                 THEN {g}(verdict_tat_ms, $2) + $3 ELSE verdict_tat_ms END, \
               last_turn_ms = CASE WHEN NOT ($6 AND {attacked}) THEN 0 \
                 WHEN {g}(verdict_tat_ms, $2) - $2 <= $7 THEN {g}(verdict_tat_ms, $2) \
                 ELSE -1 END \
             WHERE trunk = $1 RETURNING last_turn_ms"
        );
        let now_ms = millis(now);
        let interval = to_i64(policy.interval.as_millis().try_into().unwrap_or(u64::MAX));
        let tolerance = interval.saturating_mul(i64::from(policy.burst));
        let cooldown = to_i64(policy.cooldown.as_millis().try_into().unwrap_or(u64::MAX));
        let max_wait = to_i64(policy.max_wait.as_millis().try_into().unwrap_or(u64::MAX));
        let (turn,): (i64,) = on_pool!(self, pool => {
            sqlx::query(insert).bind(trunk.as_str()).execute(pool).await?;
            sqlx::query_as(&sql)
                .bind(trunk.as_str())
                .bind(now_ms)
                .bind(interval)
                .bind(tolerance)
                .bind(cooldown)
                .bind(queue)
                .bind(max_wait)
                .fetch_one(pool)
                .await?
        });
        Ok(match turn {
            t if t < 0 => GuardTurn::Busy,
            t if t <= now_ms => GuardTurn::Now,
            t => GuardTurn::At(from_millis("pin_guard", t)?),
        })
    }

    /// The verdict of an entry from [`Store::guard_reserve`]: a failure keeps an attack
    /// under way for another `cooldown`; anything else (a right PIN, an entry not judged)
    /// gives back the failure it was counted as.
    pub async fn guard_settle(
        &self,
        trunk: &TrunkId,
        now: DateTime<Utc>,
        policy: &GuardPolicy,
        failed: bool,
    ) -> Result<(), StoreError> {
        let g = self.greatest();
        let interval = to_i64(policy.interval.as_millis().try_into().unwrap_or(u64::MAX));
        let cooldown = to_i64(policy.cooldown.as_millis().try_into().unwrap_or(u64::MAX));
        if failed {
            let sql = format!(
                "UPDATE pin_guard SET attack_until_ms = CASE WHEN attack_until_ms > $2 \
                 THEN {g}(attack_until_ms, $2 + $3) ELSE attack_until_ms END WHERE trunk = $1"
            );
            on_pool!(self, pool => { sqlx::query(&sql).bind(trunk.as_str()).bind(millis(now)).bind(cooldown).execute(pool).await?; });
        } else {
            let sql = "UPDATE pin_guard SET fail_tat_ms = fail_tat_ms - $2 WHERE trunk = $1";
            on_pool!(self, pool => { sqlx::query(sql).bind(trunk.as_str()).bind(interval).execute(pool).await?; });
        }
        Ok(())
    }

    /// Whether `trunk` is under a PIN-guessing attack at `now`.
    pub async fn guard_under_attack(
        &self,
        trunk: &TrunkId,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let sql = "SELECT attack_until_ms FROM pin_guard WHERE trunk = $1";
        let row: Option<(i64,)> = on_pool!(self, pool => sqlx::query_as(sql).bind(trunk.as_str()).fetch_optional(pool).await?);
        Ok(row.is_some_and(|(t,)| t > millis(now)))
    }

    /// Marks a caller (by its keyed hash) as having joined with a valid PIN, until `until`.
    pub async fn trust_caller(&self, key: &str, until: DateTime<Utc>) -> Result<(), StoreError> {
        let sql = "INSERT INTO trusted_callers (trust_key, until_ms) VALUES ($1, $2) \
                   ON CONFLICT (trust_key) DO UPDATE SET until_ms = excluded.until_ms";
        on_pool!(self, pool => { sqlx::query(sql).bind(key).bind(millis(until)).execute(pool).await?; });
        Ok(())
    }

    /// Whether the caller is trusted at `now`.
    pub async fn is_trusted(&self, key: &str, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let sql = "SELECT until_ms FROM trusted_callers WHERE trust_key = $1 AND until_ms > $2";
        let row: Option<(i64,)> = on_pool!(self, pool => sqlx::query_as(sql).bind(key).bind(millis(now)).fetch_optional(pool).await?);
        Ok(row.is_some())
    }

    /// Withdraws a caller's trust (it keyed a wrong PIN).
    pub async fn untrust_caller(&self, key: &str) -> Result<(), StoreError> {
        let sql = "DELETE FROM trusted_callers WHERE trust_key = $1";
        on_pool!(self, pool => { sqlx::query(sql).bind(key).execute(pool).await?; });
        Ok(())
    }

    /// The secret named `name`, shared by every node of this store: created with `fresh`
    /// by the first node that asks, read by the others.
    pub async fn shared_secret(&self, name: &str, fresh: &str) -> Result<String, StoreError> {
        let insert = "INSERT INTO secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING";
        let select = "SELECT value FROM secrets WHERE name = $1";
        let (value,): (String,) = on_pool!(self, pool => {
            sqlx::query(insert).bind(name).bind(fresh).execute(pool).await?;
            sqlx::query_as(select).bind(name).fetch_one(pool).await?
        });
        Ok(value)
    }

    /// Deletes counters whose window and lockout are both over; returns how many.
    pub async fn purge_failed_attempts(
        &self,
        now: DateTime<Utc>,
        policy: &LockoutConfig,
    ) -> Result<u64, StoreError> {
        let stale = "DELETE FROM trusted_callers WHERE until_ms <= $1";
        on_pool!(self, pool => { sqlx::query(stale).bind(millis(now)).execute(pool).await?; });
        let sql = "DELETE FROM failed_attempts WHERE window_start_ms <= $1 - $2 \
                   AND (locked_until_ms IS NULL OR locked_until_ms <= $1)";
        let n = on_pool!(self, pool => sqlx::query(sql)
            .bind(millis(now))
            .bind(to_i64(policy.window_s.saturating_mul(1000)))
            .execute(pool)
            .await?
            .rows_affected());
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callers_without_a_number_share_one_lockout_bucket_per_trunk() {
        let a = TrunkId::parse("a").unwrap();
        let b = TrunkId::parse("b").unwrap();
        let secret = NumberKey::from_secret("test");
        let key = |t: &TrunkId, n: &str| LockoutKey::for_caller(&secret, t, &PhoneNumber::new(n));
        assert_eq!(key(&a, "anonymous"), key(&a, "Anonymous"));
        assert_eq!(key(&a, "anonymous"), key(&a, ""));
        assert_eq!(key(&a, "anonymous"), key(&a, "restricted"));
        assert_ne!(key(&a, "anonymous"), key(&b, "anonymous"));
        assert_ne!(key(&a, "+33612345678"), key(&a, "+33612345679"));
        assert_ne!(key(&a, "+33612345678"), key(&a, "anonymous"));
        assert!(!key(&a, "+33612345678").as_str().contains("612345678"));
    }

    fn row_with_role(role: &str) -> PinRow {
        let (namespace, pin, room) = ("default".into(), "1234".into(), "r".into());
        (
            namespace,
            pin,
            room,
            None,
            None,
            None,
            0,
            false,
            role.into(),
            false,
        )
    }

    #[test]
    fn a_pin_row_with_an_unknown_role_is_a_corrupt_row_not_a_panic() {
        assert!(matches!(
            pin_record(row_with_role("owner")),
            Err(StoreError::Corrupt { table: "pins", detail }) if detail.contains("owner")
        ));
        let host = pin_record(row_with_role("host")).unwrap();
        assert_eq!((host.role, host.wait_for_host), (PinRole::Host, false));
    }
}
