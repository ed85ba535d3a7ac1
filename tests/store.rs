//! One store test suite, run against both engines: SQLite (a temporary file) and
//! PostgreSQL (the server named by `DIALIN_TEST_POSTGRES_URL`; each test creates and drops
//! its own database, so tests run in parallel). Without that variable the PostgreSQL half
//! is skipped with a printed reason, unless `DIALIN_STRICT_TESTS=1`, where it fails.

use std::sync::atomic::{AtomicU32, Ordering};

use chrono::{DateTime, Duration, TimeZone, Utc};
use dialin::call::registry::{CallId, CallOutcome};
use dialin::config::LockoutConfig;
use dialin::pins::{ParticipantName, Pin, PinNamespace, PinRole, RoomName};
use dialin::privacy::PhoneNumber;
use dialin::store::{
    CallRecordEnd, CallRecordStart, GuardPolicy, GuardTurn, LockoutKey, NewPin, PinFilter,
    Resolution, RtpStats, Store, StoreError, PIN_GENERATION_ATTEMPTS,
};
use dialin::ingress::trunk::TrunkId;

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn unique_name(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        nanos,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A database for one test, dropped by `cleanup`.
struct TestDb {
    url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    File(std::path::PathBuf),
    Database { admin_url: String, name: String },
}

impl TestDb {
    fn sqlite() -> TestDb {
        let path = std::env::temp_dir().join(format!("{}.db", unique_name("dialin_store")));
        TestDb {
            url: format!("sqlite://{}", path.display()),
            cleanup: Cleanup::File(path),
        }
    }

    /// A fresh PostgreSQL database, or None (test skipped) when no server is configured.
    async fn postgres() -> Option<TestDb> {
        let Ok(admin_url) = std::env::var("DIALIN_TEST_POSTGRES_URL") else {
            if std::env::var("DIALIN_STRICT_TESTS").is_ok_and(|v| v == "1") {
                panic!("DIALIN_TEST_POSTGRES_URL is not set and DIALIN_STRICT_TESTS=1: PostgreSQL tests cannot be skipped");
            }
            eprintln!("skipped: set DIALIN_TEST_POSTGRES_URL=postgres://user@host:port/db to run the PostgreSQL store tests");
            return None;
        };
        let name = unique_name("dialin_t");
        let admin = sqlx::PgPool::connect(&admin_url)
            .await
            .expect("connect to DIALIN_TEST_POSTGRES_URL");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .expect("create test database");
        admin.close().await;
        let (base, query) = match admin_url.split_once('?') {
            Some((b, q)) => (b, format!("?{q}")),
            None => (admin_url.as_str(), String::new()),
        };
        let server = match base.rsplit_once('/') {
            Some((server, _db)) if server.ends_with('/') || !server.contains("://") => base,
            Some((server, _db)) => server,
            None => base,
        };
        let url = format!("{}/{name}{query}", server.trim_end_matches('/'));
        Some(TestDb {
            url,
            cleanup: Cleanup::Database { admin_url, name },
        })
    }

    async fn open(&self) -> Store {
        Store::open(&self.url, 4).await.expect("open store")
    }

    /// The engine's migrations older than `migration` (a file name), to build the schema a
    /// gateway of that time left behind.
    async fn migrator_before(&self, migration: &str) -> sqlx::migrate::Migrator {
        let engine = if self.url.starts_with("sqlite:") {
            "sqlite"
        } else {
            "postgres"
        };
        let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("migrations")
            .join(engine);
        let older = std::env::temp_dir().join(unique_name("dialin_migrations"));
        std::fs::create_dir_all(&older).unwrap();
        for entry in std::fs::read_dir(&source).unwrap() {
            let name = entry.unwrap().file_name();
            if name.to_str().is_some_and(|n| n < migration) {
                std::fs::copy(source.join(&name), older.join(&name)).unwrap();
            }
        }
        let migrator = sqlx::migrate::Migrator::new(older.as_path()).await.unwrap();
        let _ = std::fs::remove_dir_all(&older);
        migrator
    }

    async fn cleanup(self) {
        match self.cleanup {
            Cleanup::File(path) => {
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
                }
            }
            Cleanup::Database { admin_url, name } => {
                if let Ok(admin) = sqlx::PgPool::connect(&admin_url).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&admin)
                        .await;
                    admin.close().await;
                }
            }
        }
    }
}

fn ns(s: &str) -> PinNamespace {
    PinNamespace::parse(s).unwrap()
}

fn room(s: &str) -> RoomName {
    RoomName::parse(s).unwrap()
}

fn pin(s: &str) -> Pin {
    Pin::parse(s).unwrap()
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 15, 9, 0, 0).unwrap()
}

fn new_pin(namespace: &str, room_name: &str, explicit: Option<&str>, length: usize) -> NewPin {
    NewPin {
        namespace: ns(namespace),
        room: room(room_name),
        pin: explicit.map(pin),
        length,
        valid_from: None,
        valid_until: None,
        participant_name: None,
        role: PinRole::Participant,
        wait_for_host: false,
    }
}

/// Every case takes an opened database and is run once per engine.
mod cases {
    use super::*;

    pub async fn generated_pins_have_the_namespace_length_in_digits_with_leading_zeros_kept(
        db: &TestDb,
    ) {
        let store = db.open().await;
        for _ in 0..20 {
            let rec = store
                .create_pin(new_pin("ten", "r", None, 10), t0())
                .await
                .unwrap();
            assert_eq!(rec.pin.len(), 10);
            assert!(rec.pin.expose().chars().all(|c| c.is_ascii_digit()));
        }
        // A tenth of 4-digit PINs start with 0; the stored PIN must keep it.
        let mut zero_led = None;
        for _ in 0..500 {
            let rec = store
                .create_pin(new_pin("four", "r", None, 4), t0())
                .await
                .unwrap();
            assert_eq!(rec.pin.len(), 4);
            if rec.pin.expose().starts_with('0') {
                zero_led = Some(rec.pin);
                break;
            }
        }
        let zero_led = zero_led.expect("no zero-led PIN in 500 draws");
        let stored = store
            .get_pin(&ns("four"), &zero_led)
            .await
            .unwrap()
            .expect("stored");
        assert_eq!(stored.pin.expose(), zero_led.expose());
    }

    pub async fn a_nearly_full_namespace_still_hands_out_its_last_free_pins(db: &TestDb) {
        let store = db.open().await;
        // 9,998 of the 10,000 four-digit PINs are taken: random draws all collide, but the
        // two free ones are found, and only then is the namespace full.
        let all: Vec<Pin> = (0..10_000)
            .filter(|n| *n != 4321 && *n != 17)
            .map(|n| pin(&format!("{n:04}")))
            .collect();
        store.import_pins(&ns("tiny"), &room("r"), &all, t0()).await.unwrap();
        let mut got: Vec<String> = Vec::new();
        for _ in 0..2 {
            let rec = store.create_pin(new_pin("tiny", "r", None, 4), t0()).await.unwrap();
            got.push(rec.pin.expose().to_owned());
        }
        got.sort();
        assert_eq!(got, ["0017", "4321"]);
        assert!(matches!(
            store.create_pin(new_pin("tiny", "r", None, 4), t0()).await,
            Err(StoreError::PinSpaceExhausted { .. })
        ));
    }

    pub async fn full_namespace_reports_pin_space_exhausted(db: &TestDb) {
        let store = db.open().await;
        let all: Vec<Pin> = (0..10_000).map(|n| pin(&format!("{n:04}"))).collect();
        assert_eq!(
            store
                .import_pins(&ns("tiny"), &room("r"), &all, t0())
                .await
                .unwrap(),
            10_000
        );
        match store.create_pin(new_pin("tiny", "r", None, 4), t0()).await {
            Err(StoreError::PinSpaceExhausted { attempts }) => {
                assert_eq!(attempts, PIN_GENERATION_ATTEMPTS)
            }
            other => panic!("expected PinSpaceExhausted, got {other:?}"),
        }
        // Another namespace is unaffected.
        assert!(store
            .create_pin(new_pin("other", "r", None, 4), t0())
            .await
            .is_ok());
    }

    pub async fn explicit_pin_already_taken_is_refused_but_free_in_another_namespace(db: &TestDb) {
        let store = db.open().await;
        let first = store
            .create_pin(new_pin("a", "r1", Some("1234567890"), 10), t0())
            .await
            .unwrap();
        assert_eq!(first.pin.expose(), "1234567890");
        match store
            .create_pin(new_pin("a", "r2", Some("1234567890"), 10), t0())
            .await
        {
            Err(StoreError::PinTaken { namespace }) => assert_eq!(namespace, ns("a")),
            other => panic!("expected PinTaken, got {other:?}"),
        }
        // The first room keeps it.
        assert!(
            matches!(store.resolve(&ns("a"), &pin("1234567890"), t0()).await.unwrap(),
            Resolution::Room { room: r, .. } if r == room("r1"))
        );
        assert!(store
            .create_pin(new_pin("b", "r2", Some("1234567890"), 10), t0())
            .await
            .is_ok());
    }

    pub async fn pin_resolves_only_within_its_validity_window(db: &TestDb) {
        let store = db.open().await;
        let mut req = new_pin("w", "standup", Some("5550001111"), 10);
        req.valid_from = Some(t0() + Duration::hours(1));
        req.valid_until = Some(t0() + Duration::hours(2));
        req.participant_name = Some(ParticipantName::parse("Front desk").unwrap());
        store.create_pin(req, t0()).await.unwrap();
        let at = |d: Duration| t0() + d;
        let p = pin("5550001111");
        assert_eq!(
            store
                .resolve(&ns("w"), &p, at(Duration::minutes(59)))
                .await
                .unwrap(),
            Resolution::NotYetValid
        );
        assert_eq!(
            store
                .resolve(&ns("w"), &p, at(Duration::hours(1)))
                .await
                .unwrap(),
            Resolution::Room {
                room: room("standup"),
                participant_name: Some(ParticipantName::parse("Front desk").unwrap()),
                role: PinRole::Participant,
                wait_for_host: false,
            }
        );
        assert_eq!(
            store
                .resolve(&ns("w"), &p, at(Duration::hours(2)))
                .await
                .unwrap(),
            Resolution::Expired
        );
        assert_eq!(
            store
                .resolve(&ns("w"), &pin("5550001112"), t0())
                .await
                .unwrap(),
            Resolution::Unknown
        );
    }

    pub async fn validity_window_must_end_after_it_starts_and_not_in_the_past(db: &TestDb) {
        let store = db.open().await;
        let mut req = new_pin("w", "r", None, 10);
        req.valid_from = Some(t0() + Duration::hours(2));
        req.valid_until = Some(t0() + Duration::hours(1));
        assert!(matches!(
            store.create_pin(req, t0()).await,
            Err(StoreError::InvalidWindow(_))
        ));
        let mut req = new_pin("w", "r", None, 10);
        req.valid_until = Some(t0() - Duration::seconds(1));
        assert!(matches!(
            store.create_pin(req, t0()).await,
            Err(StoreError::InvalidWindow(_))
        ));
    }

    pub async fn revoked_pin_no_longer_resolves_and_is_not_reissued(db: &TestDb) {
        let store = db.open().await;
        store
            .create_pin(new_pin("v", "r", Some("0000123456"), 10), t0())
            .await
            .unwrap();
        let p = pin("0000123456");
        assert!(store.revoke(&ns("v"), &p, t0()).await.unwrap());
        assert_eq!(
            store.resolve(&ns("v"), &p, t0()).await.unwrap(),
            Resolution::Revoked
        );
        assert!(
            !store.revoke(&ns("v"), &p, t0()).await.unwrap(),
            "second revoke finds nothing to revoke"
        );
        assert!(!store
            .revoke(&ns("v"), &pin("9999999999"), t0())
            .await
            .unwrap());
        assert!(matches!(
            store
                .create_pin(new_pin("v", "other", Some("0000123456"), 10), t0())
                .await,
            Err(StoreError::PinTaken { .. })
        ));
        assert!(store
            .list_pins(&PinFilter::default())
            .await
            .unwrap()
            .is_empty());
        let all = store
            .list_pins(&PinFilter {
                include_revoked: true,
                ..PinFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(all.len(), 1);
        assert!(all[0].revoked);
    }

    pub async fn list_filters_by_room_and_namespace(db: &TestDb) {
        let store = db.open().await;
        for (n, r, p) in [
            ("a", "x", "1111"),
            ("a", "y", "2222"),
            ("b", "x", "3333"),
            ("b", "y", "4444"),
        ] {
            store
                .create_pin(new_pin(n, r, Some(p), 4), t0())
                .await
                .unwrap();
        }
        let pins = |f: PinFilter| {
            let store = store.clone();
            async move {
                store
                    .list_pins(&f)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|r| r.pin.expose().to_owned())
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(
            pins(PinFilter::default()).await,
            ["1111", "2222", "3333", "4444"]
        );
        assert_eq!(
            pins(PinFilter {
                room: Some(room("x")),
                ..Default::default()
            })
            .await,
            ["1111", "3333"]
        );
        assert_eq!(
            pins(PinFilter {
                namespace: Some(ns("b")),
                ..Default::default()
            })
            .await,
            ["3333", "4444"]
        );
        assert_eq!(
            pins(PinFilter {
                room: Some(room("y")),
                namespace: Some(ns("a")),
                ..Default::default()
            })
            .await,
            ["2222"]
        );
        assert!(pins(PinFilter {
            room: Some(room("z")),
            ..Default::default()
        })
        .await
        .is_empty());
    }

    pub async fn import_skips_pins_already_present(db: &TestDb) {
        let store = db.open().await;
        store
            .create_pin(new_pin("i", "r", Some("1000"), 4), t0())
            .await
            .unwrap();
        let batch: Vec<Pin> = ["1000", "1001", "1002"].iter().map(|p| pin(p)).collect();
        assert_eq!(
            store
                .import_pins(&ns("i"), &room("r"), &batch, t0())
                .await
                .unwrap(),
            2
        );
    }

    pub async fn lockout_limit_is_shared_by_two_nodes_on_one_database(db: &TestDb) {
        let node_a = db.open().await;
        let node_b = db.open().await;
        let policy = LockoutConfig {
            failed_pin_limit: 10,
            window_s: 900,
            lockout_s: 900,
        };
        let key = LockoutKey::for_caller(
            &dialin::privacy::NumberKey::from_secret("shared by the nodes"),
            &TrunkId::parse("carrier").unwrap(),
            &PhoneNumber::new("+33612345678"),
        );
        for i in 0..9 {
            let node = if i % 2 == 0 { &node_a } else { &node_b };
            let state = node
                .record_failed_attempt(&key, t0() + Duration::seconds(i), &policy)
                .await
                .unwrap();
            assert_eq!(state.failures, u32::try_from(i + 1).unwrap());
            assert!(!state.is_locked(t0() + Duration::seconds(i)));
        }
        let now = t0() + Duration::seconds(10);
        let state = node_b
            .record_failed_attempt(&key, now, &policy)
            .await
            .unwrap();
        assert_eq!(state.failures, 10);
        assert!(state.is_locked(now));
        let until = now + Duration::seconds(900);
        assert_eq!(
            node_a.locked_until(&key, now).await.unwrap(),
            Some(until),
            "node A sees node B's lockout"
        );
        assert_eq!(
            node_a.locked_until(&key, until).await.unwrap(),
            None,
            "lockout ends after lockout_s"
        );
        // After the lockout, counting starts afresh.
        let after = node_a
            .record_failed_attempt(&key, until + Duration::seconds(1), &policy)
            .await
            .unwrap();
        assert_eq!(after.failures, 1);
        assert!(!after.is_locked(until + Duration::seconds(1)));
    }

    pub async fn concurrent_failures_from_two_nodes_are_all_counted(db: &TestDb) {
        let node_a = db.open().await;
        let node_b = db.open().await;
        let policy = LockoutConfig {
            failed_pin_limit: 1000,
            window_s: 900,
            lockout_s: 900,
        };
        let key = LockoutKey::from_raw("trunk:concurrent");
        let mut tasks = Vec::new();
        for i in 0..40 {
            let node = if i % 2 == 0 {
                node_a.clone()
            } else {
                node_b.clone()
            };
            let key = key.clone();
            let policy = policy.clone();
            tasks.push(tokio::spawn(async move {
                node.record_failed_attempt(&key, t0(), &policy)
                    .await
                    .unwrap()
                    .failures
            }));
        }
        let mut seen = Vec::new();
        for t in tasks {
            seen.push(t.await.unwrap());
        }
        seen.sort_unstable();
        assert_eq!(
            seen,
            (1..=40).collect::<Vec<u32>>(),
            "each failure got its own count"
        );
    }

    pub async fn failures_older_than_the_window_are_forgotten(db: &TestDb) {
        let store = db.open().await;
        let policy = LockoutConfig {
            failed_pin_limit: 3,
            window_s: 60,
            lockout_s: 300,
        };
        let key = LockoutKey::from_raw("t:window");
        store
            .record_failed_attempt(&key, t0(), &policy)
            .await
            .unwrap();
        store
            .record_failed_attempt(&key, t0() + Duration::seconds(30), &policy)
            .await
            .unwrap();
        let state = store
            .record_failed_attempt(&key, t0() + Duration::seconds(61), &policy)
            .await
            .unwrap();
        assert_eq!(state.failures, 1);
        assert_eq!(state.locked_until, None);
        assert_eq!(
            store
                .purge_failed_attempts(t0() + Duration::seconds(200), &policy)
                .await
                .unwrap(),
            1
        );
    }

    pub async fn call_record_round_trips(db: &TestDb) {
        let store = db.open().await;
        let id = CallId::new("a84b4c76e66710@pc33.example.com");
        store
            .insert_call_record(&CallRecordStart {
                id: id.clone(),
                trunk: TrunkId::parse("carrier").unwrap(),
                caller_masked: PhoneNumber::new("+33612345678").masked(),
                setup_at: t0(),
                node: None,
            })
            .await
            .unwrap();
        let open = store.get_call_record(&id).await.unwrap().expect("inserted");
        assert_eq!(open.outcome, None);
        assert_eq!(open.caller_masked, "••••5678");
        let end = CallRecordEnd {
            outcome: CallOutcome::CallerHangup,
            room: Some(room("standup")),
            answered_at: Some(t0() + Duration::milliseconds(120)),
            ended_at: t0() + Duration::minutes(30),
            pin_attempts: 2,
            rtp: RtpStats {
                packets_received: 90_000,
                packets_lost: 12,
                jitter_ms: 3.5,
                late_frames: 4,
            },
        };
        assert!(store.complete_call_record(&id, &end).await.unwrap());
        let done = store
            .get_call_record(&id)
            .await
            .unwrap()
            .expect("still there");
        assert_eq!(done.outcome, Some(CallOutcome::CallerHangup));
        assert_eq!(done.room.as_deref(), Some("standup"));
        assert_eq!(done.setup_at, t0());
        assert_eq!(done.answered_at, end.answered_at);
        assert_eq!(done.ended_at, Some(end.ended_at));
        assert_eq!(done.pin_attempts, 2);
        assert_eq!(done.rtp, end.rtp);
        assert!(!store
            .complete_call_record(&CallId::new("unknown"), &end)
            .await
            .unwrap());
    }

    fn guard_policy() -> GuardPolicy {
        GuardPolicy {
            interval: std::time::Duration::from_secs(40),
            burst: 10,
            cooldown: std::time::Duration::from_secs(900),
            max_wait: std::time::Duration::from_secs(600),
        }
    }

    /// 50 parallel guessers with ever-new numbers, on two nodes, against the defaults, in
    /// simulated time on the real store: each keys a wrong PIN as soon as it may (its next
    /// guess 1 s after a verdict), retrying every 2 minutes when the queue is full.
    pub async fn pin_guard_bounds_verdicts_of_a_parallel_rotating_number_attack(db: &TestDb) {
        let nodes = [db.open().await, db.open().await];
        let policy = guard_policy();
        let trunk = TrunkId::parse("carrier").unwrap();
        let hours = 3;
        let end = t0() + Duration::hours(hours);
        // (next action time, caller index)
        let mut next: Vec<DateTime<Utc>> = (0..50).map(|i| t0() + Duration::milliseconds(i * 7)).collect();
        let mut judged: Vec<DateTime<Utc>> = Vec::new();
        let mut busy = 0u32;
        loop {
            let (i, &t) = next.iter().enumerate().min_by_key(|(_, t)| **t).unwrap();
            if t >= end {
                break;
            }
            let node = &nodes[i % 2];
            match node.guard_reserve(&trunk, t, &policy, true).await.unwrap() {
                GuardTurn::Now => {
                    node.guard_settle(&trunk, t, &policy, true).await.unwrap();
                    judged.push(t);
                    next[i] = t + Duration::seconds(1);
                }
                GuardTurn::At(at) => {
                    assert!(at > t && at <= t + Duration::seconds(600), "a turn within max_wait");
                    node.guard_settle(&trunk, at, &policy, true).await.unwrap();
                    judged.push(at);
                    next[i] = at + Duration::seconds(1);
                }
                GuardTurn::Busy => {
                    busy += 1;
                    // Not judged: the entry's count is given back.
                    node.guard_settle(&trunk, t, &policy, false).await.unwrap();
                    next[i] = t + Duration::seconds(120);
                }
            }
        }
        judged.sort();
        let within = judged.iter().filter(|t| **t < end).count() as i64;
        // The stated bound: one verdict per interval sustained, plus the burst.
        let bound = i64::from(policy.burst) + hours * 3600 / 40 + 1;
        eprintln!("pin guard: {within} verdicts in {hours} h of attack (bound {bound}), {busy} entries refused as busy");
        assert!(within <= bound, "{within} verdicts > bound {bound}");
        // And no window of one hour holds more than 90 + burst.
        for (k, t) in judged.iter().enumerate() {
            let in_hour = judged[k..].iter().take_while(|u| **u < *t + Duration::hours(1)).count();
            assert!(in_hour <= 90 + 10 + 1, "{in_hour} verdicts in the hour from {t}");
        }
        // The attack is detected and stays detected.
        assert!(nodes[0].guard_under_attack(&trunk, end).await.unwrap());
        assert!(busy > 0, "the queue filled up");
        // It ends a cooldown after the last failure.
        let last = *judged.last().unwrap();
        assert!(!nodes[1]
            .guard_under_attack(&trunk, last + Duration::seconds(901))
            .await
            .unwrap());
    }

    /// Regular traffic, wrong PINs included (below the sustained rate of one per interval),
    /// never waits.
    pub async fn pin_guard_lets_regular_traffic_through_without_waiting(db: &TestDb) {
        let store = db.open().await;
        let policy = guard_policy();
        let trunk = TrunkId::parse("busy-trunk").unwrap();
        // 500 first-time callers in 10 minutes (a meeting start, 50 a minute), 1 in 50
        // mistyping once: a failed PIN a minute.
        for k in 0..500i64 {
            let t = t0() + Duration::milliseconds(k * 1200);
            assert_eq!(store.guard_reserve(&trunk, t, &policy, true).await.unwrap(), GuardTurn::Now, "entry {k}");
            let failed = k % 50 == 0;
            store.guard_settle(&trunk, t, &policy, failed).await.unwrap();
            if failed {
                let t = t + Duration::seconds(10);
                assert_eq!(store.guard_reserve(&trunk, t, &policy, true).await.unwrap(), GuardTurn::Now);
                store.guard_settle(&trunk, t, &policy, false).await.unwrap();
            }
        }
        assert!(!store.guard_under_attack(&trunk, t0() + Duration::seconds(600)).await.unwrap());
    }

    /// During an attack a trusted caller gets its verdict at once, and only queued entries
    /// wait; trust is per trunk and number and can be withdrawn.
    pub async fn pin_guard_trusted_callers_skip_the_queue(db: &TestDb) {
        let store = db.open().await;
        let policy = guard_policy();
        let trunk = TrunkId::parse("carrier").unwrap();
        for k in 0..12 {
            let t = t0() + Duration::milliseconds(k);
            let _ = store.guard_reserve(&trunk, t, &policy, true).await.unwrap();
            store.guard_settle(&trunk, t, &policy, true).await.unwrap();
        }
        let t = t0() + Duration::seconds(1);
        assert!(store.guard_under_attack(&trunk, t).await.unwrap());
        assert!(matches!(store.guard_reserve(&trunk, t, &policy, true).await.unwrap(), GuardTurn::At(_)));
        assert_eq!(store.guard_reserve(&trunk, t, &policy, false).await.unwrap(), GuardTurn::Now);
        store.trust_caller("carrier:abc", t + Duration::days(30)).await.unwrap();
        assert!(store.is_trusted("carrier:abc", t).await.unwrap());
        assert!(!store.is_trusted("carrier:abd", t).await.unwrap());
        assert!(!store.is_trusted("carrier:abc", t + Duration::days(31)).await.unwrap());
        store.untrust_caller("carrier:abc").await.unwrap();
        assert!(!store.is_trusted("carrier:abc", t).await.unwrap());
    }

    /// Records a crashed node left open are closed when it starts again; other nodes'
    /// records, and finished ones, are left alone.
    pub async fn records_left_open_by_a_crashed_node_are_closed_at_its_next_start(db: &TestDb) {
        let store = db.open().await;
        let open = |id: &str, node: &str| CallRecordStart {
            id: CallId::new(id),
            trunk: TrunkId::parse("carrier").unwrap(),
            caller_masked: "••••0000".to_owned(),
            setup_at: t0(),
            node: Some(node.to_owned()),
        };
        for (id, node) in [("a1", "node-a"), ("a2", "node-a"), ("b1", "node-b")] {
            store.insert_call_record(&open(id, node)).await.unwrap();
        }
        let later = t0() + Duration::minutes(5);
        assert_eq!(store.close_interrupted_records("node-a", later).await.unwrap(), 2);
        let a1 = store.get_call_record(&CallId::new("a1")).await.unwrap().unwrap();
        assert_eq!(a1.outcome, Some(CallOutcome::Interrupted));
        assert_eq!(a1.ended_at, Some(later));
        let b1 = store.get_call_record(&CallId::new("b1")).await.unwrap().unwrap();
        assert_eq!(b1.outcome, None, "another node's call in progress is left alone");
        assert_eq!(store.close_interrupted_records("node-a", later).await.unwrap(), 0);
    }

    pub async fn shared_secret_is_created_once_for_all_nodes(db: &TestDb) {
        let a = db.open().await;
        let b = db.open().await;
        let first = a.shared_secret("number_key", "one").await.unwrap();
        let second = b.shared_secret("number_key", "two").await.unwrap();
        assert_eq!((first.as_str(), second.as_str()), ("one", "one"));
    }

    pub async fn role_and_wait_for_host_round_trip_through_create_get_list_and_resolve(
        db: &TestDb,
    ) {
        let store = db.open().await;
        let mut host = new_pin("roles", "board", Some("1111"), 4);
        host.role = PinRole::Host;
        let mut waiting = new_pin("roles", "board", Some("2222"), 4);
        waiting.wait_for_host = true;
        let plain = new_pin("roles", "board", Some("3333"), 4);
        let created = [
            store.create_pin(host, t0()).await.unwrap(),
            store.create_pin(waiting, t0()).await.unwrap(),
            store.create_pin(plain, t0()).await.unwrap(),
        ];
        let expected = [
            (PinRole::Host, false),
            (PinRole::Participant, true),
            (PinRole::Participant, false),
        ];
        let flags = |r: &dialin::store::PinRecord| (r.role, r.wait_for_host);
        assert_eq!(created.iter().map(flags).collect::<Vec<_>>(), expected);
        for (record, (role, wait_for_host)) in created.iter().zip(expected) {
            let stored = store
                .get_pin(&ns("roles"), &record.pin)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(&stored, record);
            assert_eq!(
                store
                    .resolve(&ns("roles"), &record.pin, t0())
                    .await
                    .unwrap(),
                Resolution::Room {
                    room: room("board"),
                    participant_name: None,
                    role,
                    wait_for_host,
                }
            );
        }
        let listed = store.list_pins(&PinFilter::default()).await.unwrap();
        assert_eq!(listed.iter().map(flags).collect::<Vec<_>>(), expected);
        let page = store
            .list_pins_page(&PinFilter::default(), Some(("roles", "1111")), 10)
            .await
            .unwrap();
        assert_eq!(page.iter().map(flags).collect::<Vec<_>>(), expected[1..]);
    }

    pub async fn a_host_pin_cannot_wait_for_a_host(db: &TestDb) {
        let store = db.open().await;
        let mut req = new_pin("roles", "board", Some("4444"), 4);
        req.role = PinRole::Host;
        req.wait_for_host = true;
        assert!(matches!(
            store.create_pin(req, t0()).await,
            Err(StoreError::HostCannotWait)
        ));
        assert!(store
            .get_pin(&ns("roles"), &pin("4444"))
            .await
            .unwrap()
            .is_none());
    }

    /// A row written before PINs had a role, by a gateway whose schema had no `role` and no
    /// `wait_for_host`, is a participant PIN that does not wait once the schema is migrated.
    pub async fn a_pin_row_from_before_roles_reads_as_a_participant_that_does_not_wait(
        db: &TestDb,
    ) {
        let sql = "INSERT INTO pins (namespace, pin, room, participant_name, valid_from_ms, \
                   valid_until_ms, created_at_ms, revoked) \
                   VALUES ('old', '5555', 'legacy', NULL, NULL, NULL, $1, FALSE)";
        let created_at = t0().timestamp_millis();
        let before = db.migrator_before("20261208000000_pin_role.sql").await;
        if db.url.starts_with("sqlite:") {
            let pool = sqlx::SqlitePool::connect(&format!("{}?mode=rwc", db.url))
                .await
                .unwrap();
            before.run(&pool).await.unwrap();
            assert!(
                sqlx::query("SELECT role FROM pins")
                    .execute(&pool)
                    .await
                    .is_err(),
                "no role yet"
            );
            sqlx::query(sql)
                .bind(created_at)
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
        } else {
            let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
            before.run(&pool).await.unwrap();
            assert!(
                sqlx::query("SELECT role FROM pins")
                    .execute(&pool)
                    .await
                    .is_err(),
                "no role yet"
            );
            sqlx::query(sql)
                .bind(created_at)
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
        }
        let store = db.open().await;
        let stored = store
            .get_pin(&ns("old"), &pin("5555"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (stored.role, stored.wait_for_host),
            (PinRole::Participant, false)
        );
        assert_eq!(
            store.resolve(&ns("old"), &pin("5555"), t0()).await.unwrap(),
            Resolution::Room {
                room: room("legacy"),
                participant_name: None,
                role: PinRole::Participant,
                wait_for_host: false,
            }
        );
    }

    pub async fn store_answers_ping_and_reopens_with_migrations_already_applied(db: &TestDb) {
        let store = db.open().await;
        store.ping().await.unwrap();
        store
            .create_pin(new_pin("p", "r", Some("4242"), 4), t0())
            .await
            .unwrap();
        store.close().await;
        let again = db.open().await;
        assert!(again
            .get_pin(&ns("p"), &pin("4242"))
            .await
            .unwrap()
            .is_some());
    }
}

macro_rules! store_suite {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $case() {
                    let db = super::TestDb::sqlite();
                    super::cases::$case(&db).await;
                    db.cleanup().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $case() {
                    let Some(db) = super::TestDb::postgres().await else { return };
                    super::cases::$case(&db).await;
                    db.cleanup().await;
                }
            )*
        }
    };
}

store_suite!(
    generated_pins_have_the_namespace_length_in_digits_with_leading_zeros_kept,
    full_namespace_reports_pin_space_exhausted,
    a_nearly_full_namespace_still_hands_out_its_last_free_pins,
    explicit_pin_already_taken_is_refused_but_free_in_another_namespace,
    pin_resolves_only_within_its_validity_window,
    validity_window_must_end_after_it_starts_and_not_in_the_past,
    revoked_pin_no_longer_resolves_and_is_not_reissued,
    list_filters_by_room_and_namespace,
    import_skips_pins_already_present,
    lockout_limit_is_shared_by_two_nodes_on_one_database,
    concurrent_failures_from_two_nodes_are_all_counted,
    failures_older_than_the_window_are_forgotten,
    pin_guard_bounds_verdicts_of_a_parallel_rotating_number_attack,
    pin_guard_lets_regular_traffic_through_without_waiting,
    pin_guard_trusted_callers_skip_the_queue,
    shared_secret_is_created_once_for_all_nodes,
    records_left_open_by_a_crashed_node_are_closed_at_its_next_start,
    call_record_round_trips,
    store_answers_ping_and_reopens_with_migrations_already_applied,
    role_and_wait_for_host_round_trip_through_create_get_list_and_resolve,
    a_host_pin_cannot_wait_for_a_host,
    a_pin_row_from_before_roles_reads_as_a_participant_that_does_not_wait,
);

#[tokio::test]
async fn in_memory_sqlite_store_works_without_a_file() {
    let store = Store::open("sqlite::memory:", 4).await.unwrap();
    store
        .create_pin(new_pin("m", "r", Some("1234"), 4), t0())
        .await
        .unwrap();
    assert!(matches!(
        store.resolve(&ns("m"), &pin("1234"), t0()).await.unwrap(),
        Resolution::Room { .. }
    ));
}

#[tokio::test]
async fn unsupported_store_url_is_refused_with_its_password_hidden() {
    let err = Store::open("mysql://u:secret@db/x", 1).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, StoreError::UnsupportedUrl(_)));
    assert!(!text.contains("secret"), "{text}");
}
