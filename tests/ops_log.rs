//! What operators plug in: `[log] format = "json"` (every line `serve` writes is one JSON
//! object with the stable fields `ts`, `level`, `target` and `msg`, and an event's own fields
//! by name; a call's lines carry `call`; numbers in them are masked), and the Grafana
//! dashboard, whose every query uses a metric `/metrics` exports.

mod ops_support;
mod support;

use std::time::Duration;

use ops_support::{Gateway, GatewayOptions};
use support::caller::{Caller, DialOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line_with_stable_fields() {
    let gw = Gateway::start(GatewayOptions {
        extra: "[log]\nformat = \"json\"\n".to_owned(),
        ..GatewayOptions::default()
    })
    .await;
    let call = Caller::dial(DialOptions {
        from_user: "+33687654321".to_owned(),
        ..DialOptions::new(gw.sip)
    })
    .await
    .expect("answered");
    assert!(gw.wait_log("call answered", Duration::from_secs(5)).await);
    call.hangup().await.unwrap();
    assert!(gw.wait_log("call ended", Duration::from_secs(5)).await);

    let log = gw.log();
    let mut answered = None;
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        for key in ["ts", "level", "target", "msg"] {
            assert!(v.get(key).is_some_and(|f| f.is_string()), "no {key}: {line}");
        }
        assert!(
            chrono::DateTime::parse_from_rfc3339(v["ts"].as_str().unwrap()).is_ok(),
            "{line}"
        );
        if v["msg"] == "call answered" {
            answered = Some(v);
        }
    }
    let answered = answered.expect("the call's answer is logged");
    assert!(answered["call"].as_str().is_some_and(|c| c.starts_with("CA_")), "{answered}");
    assert_eq!(answered["level"], "info");
    assert!(answered["caller"].as_str().is_some_and(|c| c.ends_with("4321") && !c.contains("687654321")), "{answered}");
    assert!(!log.contains("33687654321"), "the full number is never logged");
}

/// Every metric the Grafana dashboard (`configs/grafana/dialin.json`) queries is exported by
/// `/metrics` of a running gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_of_the_grafana_dashboard_is_exported() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/configs/grafana/dialin.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("the dashboard")).expect("JSON");
    let mut used = std::collections::BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            let mut rest = expr;
            while let Some(i) = rest.find("dialin_") {
                let name: String = rest[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[i + name.len()..];
                used.insert(name);
            }
        }
    }
    assert!(used.len() >= 15, "the dashboard queries the gateway's metrics: {used:?}");
    let gw = Gateway::start(GatewayOptions::default()).await;
    let (status, text) = gw.get("/metrics").await.expect("GET /metrics");
    assert_eq!(status, 200);
    let exported: std::collections::BTreeSet<String> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect();
    let missing: Vec<&String> = used.iter().filter(|m| !exported.contains(*m)).collect();
    assert!(missing.is_empty(), "queried but not exported: {missing:?}");
}
