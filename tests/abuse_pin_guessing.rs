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

/// The bound per trunk, attacked for real: 12 parallel calls with ever-new calling numbers
/// key wrong PINs as fast as the gateway lets them. With `interval_s = 1` and `burst = 3`, the
/// wrong verdicts over the attack are at most `burst + elapsed / interval + 1`, whatever the
/// parallelism. A number that joined before gets through at once during the attack; a new
/// number with a right PIN waits its turn, hearing "please hold" and music, and then joins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_numbers_in_parallel_get_at_most_one_verdict_per_interval() {
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    use std::sync::Arc;

    const INTERVAL_S: f64 = 1.0;
    const BURST: f64 = 3.0;
    let gw = Arc::new(
        Gateway::start(GatewayOptions {
            max_attempts: 10,
            max_calls: 100,
            trunk_alarm_failed_per_minute: 10_000,
            extra: "[security.pin_guard]\ninterval_s = 1\nburst = 3\ncooldown_s = 600\nmax_wait_s = 60\n"
                .to_owned(),
            ..GatewayOptions::default()
        })
        .await,
    );
    gw.create_pin("board", RIGHT_PIN).await;

    // A regular caller joins before the attack: its number is now trusted on the trunk.
    const REGULAR: &str = "+33644445555";
    let before = Caller::dial(dial(&gw, REGULAR)).await.expect("answered");
    assert!(before.wait_for_packets(5, Duration::from_secs(5)).await);
    key_pin(&gw, &before, RIGHT_PIN, "accepted").await;
    before.hangup().await.expect("hang up");

    let unknown = "dialin_pin_attempts_total{result=\"unknown\"}";
    let wrong_before = metric_or_zero(&gw, unknown).await;
    let stop = Arc::new(AtomicBool::new(false));
    let numbers = Arc::new(AtomicU32::new(0));
    let started = Instant::now();
    let mut attackers = Vec::new();
    for _ in 0..12 {
        let (gw, stop, numbers) = (gw.clone(), stop.clone(), numbers.clone());
        attackers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let n = numbers.fetch_add(1, Ordering::Relaxed);
                let Ok(call) = Caller::dial(dial(&gw, &format!("+3367{n:07}"))).await else {
                    continue;
                };
                call.wait_for_packets(5, Duration::from_secs(5)).await;
                // A few wrong PINs per number, then a fresh number.
                for _ in 0..3 {
                    if stop.load(Ordering::Relaxed) || call.bye_received() {
                        break;
                    }
                    let _ = call.send_dtmf(&format!("{WRONG_PIN}#"), DtmfMode::Rfc4733).await;
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                let _ = call.hangup().await;
            }
        }));
    }

    // The attack is detected: entries start to queue.
    let queued = "dialin_pin_entries_queued_total";
    let end = Instant::now() + Duration::from_secs(30);
    while metric_or_zero(&gw, queued).await < 5.0 {
        assert!(Instant::now() < end, "the attack was never detected; log:\n{}", gw.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The regular caller, during the attack: joins within 3 s of its last key.
    let call = Caller::dial(dial(&gw, REGULAR)).await.expect("answered");
    assert!(call.wait_for_packets(5, Duration::from_secs(5)).await);
    call.send_dtmf(&format!("{RIGHT_PIN}#"), DtmfMode::Rfc4733)
        .await
        .expect("key the PIN");
    let keyed = Instant::now();
    let joined = gw.wait_log_count("joined the room", 2, Duration::from_secs(3)).await;
    assert!(joined, "a trusted number joins within 3 s during the attack ({:?})", keyed.elapsed());
    call.hangup().await.ok();

    // A new number with the right PIN waits its turn, hearing that it is being connected.
    let newcomer = Caller::dial(dial(&gw, "+33655556666")).await.expect("answered");
    assert!(newcomer.wait_for_packets(5, Duration::from_secs(5)).await);
    let queued_before = metric_or_zero(&gw, queued).await;
    newcomer
        .send_dtmf(&format!("{RIGHT_PIN}#"), DtmfMode::Rfc4733)
        .await
        .expect("key the PIN");
    let waiting = Instant::now();
    let end = Instant::now() + Duration::from_secs(10);
    while metric_or_zero(&gw, queued).await < queued_before + 1.0 {
        assert!(Instant::now() < end, "the newcomer was not queued");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        newcomer
            .wait_for_sound(waiting, -40.0, Duration::from_secs(5))
            .await
            .is_some(),
        "the waiting caller hears something, not silence"
    );
    assert!(
        gw.wait_log_count("joined the room", 3, Duration::from_secs(60)).await,
        "the newcomer joins once its turn comes; log:\n{}",
        gw.log()
    );
    newcomer.hangup().await.ok();

    stop.store(true, Ordering::Relaxed);
    for a in attackers {
        let _ = a.await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let wrong = metric_or_zero(&gw, unknown).await - wrong_before;
    let bound = BURST + (elapsed / INTERVAL_S).ceil() + 1.0;
    eprintln!(
        "{} numbers, {wrong} wrong verdicts in {elapsed:.1} s (bound {bound})",
        numbers.load(Ordering::Relaxed)
    );
    assert!(wrong >= 3.0, "the attack was judged at all");
    assert!(wrong <= bound, "{wrong} wrong verdicts in {elapsed:.1} s, over the bound {bound}");
}
