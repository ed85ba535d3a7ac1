//! Overload admission control on the real binary (DESIGN.md §Call flow step 1: over a limit
//! → `503` + `Retry-After`): the gateway is pinned to one core at the lowest priority, a
//! busy loop takes that core, and the calls' 20 ms media ticks start running late; new
//! INVITEs must then get `503` with `Retry-After` and `dialin_overloaded` reads 1, and once
//! the core is free again the gateway takes calls again by itself.

mod ops_support;
mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ops_support::{skip, Gateway, GatewayOptions};
use support::caller::{Call, Caller, DialOptions};

/// Calls kept up during the test: more than `overload::MIN_TICKS` ticks per second.
const CALLS: usize = 16;

/// A busy loop pinned to core 0, killed on drop (by its own pid).
struct Hog(Child);

impl Hog {
    fn start() -> Hog {
        let child = Command::new("taskset")
            .args(["-c", "0", "sh", "-c", "while :; do :; done"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start a busy loop");
        Hog(child)
    }
}

impl Drop for Hog {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn have(tool: &str) -> bool {
    Command::new(tool).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

async fn wait_metric(gw: &Gateway, series: &str, value: f64, timeout: Duration) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if gw.metric(series).await == Some(value) {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_media_ticks_on_a_starved_core_refuse_new_calls_with_503_until_they_recover() {
    if !have("taskset") || !have("nice") {
        skip("taskset or nice (util-linux, coreutils) not found");
        return;
    }
    let gw = Gateway::start(GatewayOptions {
        log_filter: "info,dialin::serve=trace".to_owned(),
        command_prefix: ["nice", "-n", "10", "taskset", "-c", "0"].map(String::from).to_vec(),
        ..GatewayOptions::default()
    })
    .await;
    let mut calls: Vec<Call> = Vec::new();
    for _ in 0..CALLS {
        calls.push(Caller::dial(DialOptions::new(gw.sip)).await.expect("calls are accepted before the load"));
    }
    assert_eq!(gw.metric("dialin_overloaded").await, Some(0.0));

    let hog = Hog::start();
    assert!(
        wait_metric(&gw, "dialin_overloaded", 1.0, Duration::from_secs(20)).await,
        "the starved gateway reports overload; log:\n{}",
        gw.log()
    );
    let mut opts = DialOptions::new(gw.sip);
    opts.answer_timeout = Duration::from_secs(20);
    let refused = Caller::dial(opts).await.err().expect("a new call is refused while overloaded");
    assert_eq!(refused.status(), Some(503), "{refused}");
    assert!(refused.retry_after().is_some(), "503 carries Retry-After");
    assert!(gw.metric("dialin_overload_refused_total").await.unwrap_or(0.0) >= 1.0);

    drop(hog);
    assert!(
        wait_metric(&gw, "dialin_overloaded", 0.0, Duration::from_secs(20)).await,
        "overload clears once the core is free"
    );
    let again = Caller::dial(DialOptions::new(gw.sip)).await.expect("calls are accepted again");
    assert!(gw.log().contains("overload cleared"), "the recovery is logged");
    again.hangup().await.ok();
    for c in calls {
        c.hangup().await.ok();
    }
}
