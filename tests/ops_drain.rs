//! Graceful shutdown (DESIGN.md §Call flow step 1 "Draining for shutdown → 503", §Admin
//! API `/readyz`), on the real `dialin serve` binary: SIGTERM stops new calls and readiness
//! at once, lets calls in progress go on, and ends what is left after
//! `limits.drain_timeout_s` with a goodbye prompt and BYE.

mod ops_support;
mod support;

use std::time::{Duration, Instant};

use ops_support::{options_probe, Gateway, GatewayOptions};
use support::caller::{Caller, DialOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_refuses_new_calls_and_readiness_keeps_the_call_then_ends_it_at_the_drain_timeout()
{
    let mut gw = Gateway::start(GatewayOptions {
        drain_timeout_s: 4,
        ..GatewayOptions::default()
    })
    .await;
    assert_eq!(
        options_probe(&gw).await,
        Some(200),
        "a ready node answers OPTIONS 200"
    );
    let call = Caller::dial(DialOptions::new(gw.sip))
        .await
        .expect("a call before the drain");
    assert!(
        call.wait_for_packets(10, Duration::from_secs(5)).await,
        "the call has media"
    );

    gw.signal("TERM");
    let term_at = Instant::now();
    assert!(
        gw.wait_readyz(503, Duration::from_secs(3)).await,
        "/readyz turns 503 while draining"
    );
    let (_, why) = gw
        .readyz()
        .await
        .expect("/readyz still answers while draining");
    assert!(why.contains("draining"), "/readyz says why: {why}");

    assert_eq!(
        options_probe(&gw).await,
        Some(503),
        "a load balancer's OPTIONS probe sees 503"
    );
    let refused = Caller::dial(DialOptions::new(gw.sip))
        .await
        .err()
        .expect("a new call is refused");
    assert_eq!(refused.status(), Some(503), "{refused}");
    assert!(refused.retry_after().is_some(), "503 carries Retry-After");

    // The existing call still has media while it drains.
    let before = call.packets_received();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        call.packets_received() > before + 10,
        "media still flows during the drain"
    );
    assert!(!call.bye_received());

    // drain_timeout_s = 4: the gateway plays goodbye, then BYE.
    assert!(
        call.wait_for_bye(Duration::from_secs(20)).await,
        "the call is ended after the drain timeout"
    );
    let ended_after = term_at.elapsed();
    assert!(
        ended_after >= Duration::from_secs(4),
        "not before the drain timeout: {ended_after:?}"
    );
    let status = gw
        .wait_exit(Duration::from_secs(15))
        .await
        .expect("the gateway exits once drained");
    assert!(status.success(), "clean exit: {status:?}");
    assert!(
        gw.log().contains("drain timeout"),
        "the log says why calls were ended"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_ends_as_soon_as_the_last_call_hangs_up() {
    let mut gw = Gateway::start(GatewayOptions {
        drain_timeout_s: 300,
        ..GatewayOptions::default()
    })
    .await;
    let call = Caller::dial(DialOptions::new(gw.sip))
        .await
        .expect("a call before the drain");
    assert!(call.wait_for_packets(5, Duration::from_secs(5)).await);
    gw.signal("TERM");
    assert!(gw.wait_readyz(503, Duration::from_secs(3)).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        gw.wait_exit(Duration::from_millis(10)).await.is_none(),
        "still running while a call is up"
    );
    call.hangup().await.expect("BYE");
    let status = gw
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("exits once the last call ended");
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_gateway_exits_at_once_on_sigterm() {
    let mut gw = Gateway::start(GatewayOptions::default()).await;
    let t = Instant::now();
    gw.signal("TERM");
    let status = gw.wait_exit(Duration::from_secs(10)).await.expect("exit");
    assert!(status.success());
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "no calls: no wait ({:?})",
        t.elapsed()
    );
}
