//! Store outage (DESIGN.md: "every failure must be spoken to them ... never silence";
//! §Admin API `/readyz`: "store reachable"): with PostgreSQL stopped under a running
//! gateway, a caller who keys a PIN hears "service unavailable" and is hung up, `/readyz`
//! says the store is unreachable; once PostgreSQL is back the gateway recovers by itself.

mod ops_support;
mod support;

use std::time::{Duration, Instant};

use ops_support::{Gateway, GatewayOptions, PgServer};
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
