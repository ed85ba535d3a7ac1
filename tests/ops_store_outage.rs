//! Store outage (DESIGN.md: "every failure must be spoken to them ... never silence";
//! §Admin API `/readyz`: "store reachable"): with PostgreSQL stopped under a running
//! gateway, a caller who keys a PIN hears "service unavailable" and is hung up, `/readyz`
//! says the store is unreachable; once PostgreSQL is back the gateway recovers by itself.

mod ops_support;
mod support;

use std::time::{Duration, Instant};

use ops_support::{options_probe, Gateway, GatewayOptions, PgServer};
use support::caller::{Caller, DialOptions, DtmfMode};

/// Polls `/v1/calls` until some call is in `state`.
async fn wait_call_state(gw: &Gateway, state: &str, timeout: Duration) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if let Some((200, body)) = gw.get("/v1/calls").await {
            if body.contains(&format!("\"{state}\"")) {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_outage_tells_callers_service_unavailable_and_readyz_recovers_when_it_returns() {
    let Some(pg) = PgServer::start() else { return };
    let gw = Gateway::start(GatewayOptions {
        store_url: Some(pg.url()),
        ..GatewayOptions::default()
    })
    .await;
    gw.create_pin("standup", "123456").await;

    pg.stop_server();
    assert!(
        gw.wait_readyz(503, Duration::from_secs(10)).await,
        "/readyz turns 503 with the store down"
    );
    let (_, why) = gw.readyz().await.expect("/readyz answers");
    assert!(why.contains("store"), "/readyz names the store: {why}");
    assert_eq!(
        options_probe(&gw).await,
        Some(503),
        "a SIP load balancer's probe sees the node out while the store is down"
    );

    let call = Caller::dial(DialOptions::new(gw.sip))
        .await
        .expect("the call is answered: the caller must hear why");
    assert!(call.wait_for_packets(10, Duration::from_secs(5)).await);
    call.send_dtmf("123456#", DtmfMode::Rfc4733)
        .await
        .expect("key the PIN");
    let keyed = Instant::now();
    assert!(
        call.wait_for_sound(keyed, -40.0, Duration::from_secs(15))
            .await
            .is_some(),
        "a prompt plays after the PIN"
    );
    assert!(
        call.wait_for_bye(Duration::from_secs(30)).await,
        "the caller is hung up"
    );
    assert!(
        !gw.log().contains("joined the room"),
        "nobody joined a room while the store was down"
    );
    assert_eq!(
        gw.metric("dialin_calls_total{outcome=\"error\"}").await,
        Some(1.0)
    );

    pg.start_server();
    assert!(
        gw.wait_readyz(200, Duration::from_secs(30)).await,
        "/readyz recovers on its own"
    );
    let end = Instant::now() + Duration::from_secs(10);
    while options_probe(&gw).await != Some(200) {
        assert!(Instant::now() < end, "OPTIONS answers 200 again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let call = Caller::dial(DialOptions::new(gw.sip))
        .await
        .expect("a call after recovery");
    assert!(call.wait_for_packets(10, Duration::from_secs(5)).await);
    call.send_dtmf("123456#", DtmfMode::Rfc4733)
        .await
        .expect("key the PIN");
    assert!(
        wait_call_state(&gw, "in_room", Duration::from_secs(20)).await,
        "the caller joins the room"
    );
    call.hangup().await.expect("hang up");
}

/// Waits until OPTIONS from the trunk gets `status`.
async fn wait_options(gw: &Gateway, status: u16, timeout: Duration) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if options_probe(gw).await == Some(status) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// A SQLite file deleted or made read-only under the running gateway (its connections still
/// hold the old file open, so reads keep working): not ready, and OPTIONS says 503; put back,
/// ready again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_or_read_only_sqlite_file_makes_the_node_not_ready() {
    use std::os::unix::fs::PermissionsExt;
    let gw = Gateway::start(GatewayOptions::default()).await;
    let db = gw.dir.path().join("dialin.db");
    assert!(gw.wait_readyz(200, Duration::from_secs(5)).await);
    assert_eq!(options_probe(&gw).await, Some(200));

    // Read-only.
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o444)).unwrap();
    assert!(gw.wait_readyz(503, Duration::from_secs(10)).await, "read-only file: not ready");
    let (_, why) = gw.readyz().await.unwrap();
    assert!(why.contains("read-only"), "{why}");
    assert!(wait_options(&gw, 503, Duration::from_secs(10)).await);
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(gw.wait_readyz(200, Duration::from_secs(10)).await, "writable again: ready");
    assert!(wait_options(&gw, 200, Duration::from_secs(10)).await);

    // Deleted (moved away): the open connections keep working on the old inode.
    let aside = gw.dir.path().join("moved.db");
    std::fs::rename(&db, &aside).unwrap();
    assert!(gw.wait_readyz(503, Duration::from_secs(10)).await, "deleted file: not ready");
    let (_, why) = gw.readyz().await.unwrap();
    assert!(why.contains("deleted"), "{why}");
    assert!(wait_options(&gw, 503, Duration::from_secs(10)).await);
    assert!(gw.wait_log("store unusable", Duration::from_secs(5)).await);
    std::fs::rename(&aside, &db).unwrap();
    assert!(gw.wait_readyz(200, Duration::from_secs(10)).await, "back in place: ready");
}

/// Starting on a store file that does not exist creates it, loudly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_empty_database_is_announced_in_the_log() {
    let gw = Gateway::start(GatewayOptions::default()).await;
    assert!(gw.log().contains("NEW EMPTY DATABASE"), "{}", gw.log());
}

/// Sets the file-size limit of process `pid` (`None`: unlimited).
fn set_file_size_limit(pid: u32, bytes: Option<u64>) {
    let lim = libc::rlimit {
        rlim_cur: bytes.unwrap_or(libc::RLIM_INFINITY),
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: prlimit reads the struct we pass and writes nothing (null old limit).
    let rc = unsafe {
        libc::prlimit(pid as libc::pid_t, libc::RLIMIT_FSIZE, &lim, std::ptr::null_mut())
    };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
}

/// A full store (here: every write past the first byte of a file fails, as on a full disk,
/// its log file included) makes the node not ready, and OPTIONS says 503; the process does not
/// die of it, and no handler panics for a log line it cannot write; with room again, it is
/// ready again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_sqlite_store_makes_the_node_not_ready_without_killing_it() {
    let gw = Gateway::start(GatewayOptions::default()).await;
    assert!(gw.wait_readyz(200, Duration::from_secs(5)).await);
    let pid = gw.pid();
    set_file_size_limit(pid, Some(1));
    assert!(gw.wait_readyz(503, Duration::from_secs(10)).await, "a full store: not ready");
    assert!(wait_options(&gw, 503, Duration::from_secs(10)).await);
    set_file_size_limit(pid, None);
    // Answering at all shows it survived (SIGXFSZ would have killed it).
    assert!(gw.wait_readyz(200, Duration::from_secs(10)).await, "room again: ready");
    assert!(wait_options(&gw, 200, Duration::from_secs(10)).await);
}
