//! Overload admission control on the real binary (DESIGN.md §Call flow step 1: over a limit
//! → `503` + `Retry-After`): the gateway is pinned to one core, and once its calls are up it
//! drops to the lowest priority (`renice 19`) while busy loops at normal priority take
//! almost all of that core; the calls' 20 ms media ticks start running late; new
//! INVITEs must then get `503` with `Retry-After` and `dialin_overloaded` reads 1, and once
//! the load is gone the gateway takes calls again by itself.

mod ops_support;
mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ops_support::{skip, Gateway, GatewayOptions};
use support::caller::{Call, Caller, DialOptions};

/// Calls kept up during the test: more than `overload::MIN_TICKS` ticks per second.
const CALLS: usize = 16;

/// Busy loops sharing the gateway's core. At `nice 19` (scheduler weight 15 against 1024 for
/// each loop) the gateway gets well under 1 % of the core, less than its calls need on any
/// machine; at equal priority a fast machine served the calls within a fifth of a core and
/// never fell behind, so the priority, not the number of loops, makes the starvation.
const HOGS: usize = 4;

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
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
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
    if !have("taskset") || !have("renice") {
        skip("taskset or renice (util-linux) not found");
        return;
    }
    let gw = Gateway::start(GatewayOptions {
        log_filter: "info,dialin::serve=trace".to_owned(),
        command_prefix: ["taskset", "-c", "0"].map(String::from).to_vec(),
        ..GatewayOptions::default()
    })
    .await;
    // On a busy machine the pinned gateway may already run late while calls start: a 503
    // then is the feature at work, so retry until the calls are up.
    let mut calls: Vec<Call> = Vec::new();
    let end = Instant::now() + Duration::from_secs(60);
    while calls.len() < CALLS {
        match Caller::dial(DialOptions::new(gw.sip)).await {
            Ok(c) => calls.push(c),
            Err(e) if e.status() == Some(503) && Instant::now() < end => {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("call {} not placed: {e}", calls.len() + 1),
        }
    }

    // Every thread of the gateway to the lowest priority (a process's nice value is per
    // thread on Linux), then the busy loops.
    let threads: Vec<String> = std::fs::read_dir(format!("/proc/{}/task", gw.pid()))
        .expect("the gateway's threads")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    let reniced = Command::new("renice")
        .args(["-n", "19", "-p"])
        .args(&threads)
        .stdout(Stdio::null())
        .status()
        .expect("run renice");
    assert!(reniced.success(), "renice the gateway's threads");
    let hogs: Vec<Hog> = (0..HOGS).map(|_| Hog::start()).collect();
    // Starved this hard, the gateway may take longer than an HTTP client waits to render
    // `/metrics`, so its verdict is read from its log while the loops run; SIP, which
    // retransmits, still gets through.
    assert!(
        gw.wait_log(
            "overloaded: media ticks running late",
            Duration::from_secs(30)
        )
        .await,
        "the starved gateway reports overload; log:\n{}",
        gw.log()
    );
    let mut opts = DialOptions::new(gw.sip);
    opts.answer_timeout = Duration::from_secs(30);
    let refused = Caller::dial(opts)
        .await
        .err()
        .expect("a new call is refused while overloaded");
    assert_eq!(refused.status(), Some(503), "{refused}");
    assert!(refused.retry_after().is_some(), "503 carries Retry-After");

    // The busy loops stop. The calls are still up and their last second of ticks was late,
    // so the gauge still reads 1 when the gateway first answers over HTTP.
    drop(hogs);
    assert_eq!(
        gw.metric("dialin_overloaded").await,
        Some(1.0),
        "the overload gauge is set"
    );
    assert!(
        gw.metric("dialin_overload_refused_total")
            .await
            .unwrap_or(0.0)
            >= 1.0
    );
    for c in calls {
        c.hangup().await.ok();
    }
    assert!(
        wait_metric(&gw, "dialin_overloaded", 0.0, Duration::from_secs(20)).await,
        "overload clears once the load is gone"
    );
    let again = Caller::dial(DialOptions::new(gw.sip))
        .await
        .expect("calls are accepted again");
    assert!(
        gw.log().contains("overload cleared"),
        "the recovery is logged"
    );
    again.hangup().await.ok();
}
