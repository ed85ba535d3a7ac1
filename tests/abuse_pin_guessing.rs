//! PIN guessing (DESIGN.md §Privacy and security defaults): failed PINs are counted per
//! calling number in the store, so the lockout holds across gateway nodes sharing one
//! PostgreSQL, even against a right PIN; the trunk's own address is never locked; a trunk
//! over its failed-PIN ceiling per minute raises a metric and an `alarm` log line.

mod ops_support;
mod support;

use std::time::{Duration, Instant};

use ops_support::{Gateway, GatewayOptions, PgServer};
use support::caller::{Call, Caller, DialOptions, DtmfMode};

const GUESSER: &str = "+33611112222";
const RIGHT_PIN: &str = "424242";
const WRONG_PIN: &str = "000000";

fn dial(gw: &Gateway, from: &str) -> DialOptions {
    DialOptions {
        from_user: from.to_owned(),
        ..DialOptions::new(gw.sip)
    }
}

async fn metric_or_zero(gw: &Gateway, series: &str) -> f64 {
    gw.metric(series).await.unwrap_or(0.0)
}

/// Keys `pin` + `#` and waits until `gw` has counted one more PIN result `result`.
async fn key_pin(gw: &Gateway, call: &Call, pin: &str, result: &str) {
    let series = format!("dialin_pin_attempts_total{{result=\"{result}\"}}");
    let before = metric_or_zero(gw, &series).await;
    call.send_dtmf(&format!("{pin}#"), DtmfMode::Rfc4733)
        .await
        .expect("key the PIN");
    let end = Instant::now() + Duration::from_secs(15);
    while metric_or_zero(gw, &series).await < before + 1.0 {
        assert!(
            Instant::now() < end,
            "the PIN was not counted as {result}; log:\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A caller on `gw` keys `n` wrong PINs in one call.
async fn guess(gw: &Gateway, n: usize) -> Call {
    let call = Caller::dial(dial(gw, GUESSER))
        .await
        .expect("the guesser's call is answered");
    assert!(call.wait_for_packets(5, Duration::from_secs(5)).await);
    for _ in 0..n {
        key_pin(gw, &call, WRONG_PIN, "unknown").await;
    }
    call
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_failed_pins_spread_over_two_nodes_lock_the_number_out_even_with_the_right_pin() {
    let Some(pg) = PgServer::start() else { return };
    let options = GatewayOptions {
        store_url: Some(pg.url()),
        max_attempts: 5,
        trunk_alarm_failed_per_minute: 100,
        ..GatewayOptions::default()
    };
    let a = Gateway::start(options.clone()).await;
    let b = Gateway::start(options).await;
    a.create_pin("board", RIGHT_PIN).await;

    // 5 failures on node A, 5 on node B: the shipped default limit is 10 within 15 minutes.
    let first = guess(&a, 5).await;
    assert!(
        first.wait_for_bye(Duration::from_secs(20)).await,
        "max_attempts ends the first call"
    );
    let second = guess(&b, 5).await;
    assert!(
        second.wait_for_bye(Duration::from_secs(20)).await,
        "max_attempts ends the second call"
    );

    // Back on node A with the right PIN: locked out, told so, hung up, never in the room.
    let third = Caller::dial(dial(&a, GUESSER))
        .await
        .expect("a locked-out caller is still answered and told");
    assert!(third.wait_for_packets(5, Duration::from_secs(5)).await);
    key_pin(&a, &third, RIGHT_PIN, "locked_out").await;
    assert!(
        third.wait_for_bye(Duration::from_secs(20)).await,
        "the locked-out caller is hung up"
    );
    assert_eq!(
        metric_or_zero(&a, "dialin_pin_attempts_total{result=\"accepted\"}").await,
        0.0
    );
    assert!(!a.log().contains("joined the room"));

    // Another caller on the same trunk (same source address) is not locked out.
    let other = Caller::dial(dial(&b, "+33699998888"))
        .await
        .expect("another caller");
    assert!(other.wait_for_packets(5, Duration::from_secs(5)).await);
    key_pin(&b, &other, RIGHT_PIN, "accepted").await;
    assert!(
        b.wait_log("joined the room", Duration::from_secs(10)).await,
        "the other caller joins"
    );
    other.hangup().await.expect("hang up");

    // No log line carries the full calling number or the PIN.
    for log in [a.log(), b.log()] {
        assert!(
            !log.contains(GUESSER) && !log.contains("611112222"),
            "full number in the log"
        );
        assert!(!log.contains(RIGHT_PIN), "full PIN in the log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_pins_over_the_trunk_ceiling_raise_the_metric_and_an_alarm_log_line() {
    let gw = Gateway::start(GatewayOptions {
        max_attempts: 5,
        trunk_alarm_failed_per_minute: 3,
        ..GatewayOptions::default()
    })
    .await;
    assert_eq!(
        metric_or_zero(&gw, "dialin_trunk_pin_failure_alarms_total").await,
        0.0
    );
    let call = guess(&gw, 4).await;
    assert!(
        gw.wait_log("alarm", Duration::from_secs(5)).await,
        "an alarm line is logged"
    );
    let line = gw
        .log()
        .lines()
        .find(|l| l.contains("alarm"))
        .map(str::to_owned)
        .unwrap_or_default();
    assert!(
        line.contains("carrier"),
        "the alarm names the trunk: {line}"
    );
    assert_eq!(
        metric_or_zero(&gw, "dialin_trunk_pin_failure_alarms_total").await,
        1.0
    );
    call.hangup().await.ok();
}
