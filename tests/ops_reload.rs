//! Trunk reload on SIGHUP without dropping calls (DESIGN.md §Configuration: "Trunks come
//! from the config file (reloaded on SIGHUP without dropping calls)"), on the real binary.

mod ops_support;
mod support;

use std::time::Duration;

use ops_support::{Gateway, GatewayOptions};
use support::caller::{Caller, DialOptions};

fn dial_to(gw: &Gateway, number: &str) -> DialOptions {
    DialOptions {
        to_user: number.to_owned(),
        ..DialOptions::new(gw.sip)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_new_trunks_to_new_calls_while_the_call_in_progress_continues() {
    let first = GatewayOptions {
        trunk_id: "old".to_owned(),
        trunk_numbers: vec!["1000".to_owned()],
        ..GatewayOptions::default()
    };
    let gw = Gateway::start(first.clone()).await;
    let call = Caller::dial(dial_to(&gw, "1000"))
        .await
        .expect("a call on the old trunk");
    assert!(
        call.wait_for_packets(10, Duration::from_secs(5)).await,
        "media flows"
    );

    let second = GatewayOptions {
        trunk_id: "new".to_owned(),
        trunk_numbers: vec!["2000".to_owned()],
        ..first
    };
    gw.rewrite_config(&second);
    gw.signal("HUP");
    assert!(
        gw.wait_log("trunks reloaded", Duration::from_secs(5)).await,
        "the reload is logged"
    );

    let (status, trunks) = gw.get("/v1/trunks").await.expect("GET /v1/trunks");
    assert_eq!(status, 200);
    assert!(
        trunks.contains("\"new\"") && !trunks.contains("\"old\""),
        "the new table is in force: {trunks}"
    );

    let refused = Caller::dial(dial_to(&gw, "1000"))
        .await
        .err()
        .expect("1000 is no longer served");
    assert_eq!(refused.status(), Some(403), "{refused}");
    let new_call = Caller::dial(dial_to(&gw, "2000"))
        .await
        .expect("the new trunk takes 2000");

    // The call placed before the reload is still up and still has media.
    let before = call.packets_received();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        call.packets_received() > before + 10,
        "the old call's media continues after SIGHUP"
    );
    assert!(!call.bye_received(), "the old call was not dropped");
    assert_eq!(gw.active_calls().await, Some(2));
    call.hangup().await.expect("hang up the old call");
    new_call.hangup().await.expect("hang up the new call");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_a_broken_file_keeps_the_trunks_in_force() {
    let gw = Gateway::start(GatewayOptions {
        trunk_numbers: vec!["1000".to_owned()],
        ..GatewayOptions::default()
    })
    .await;
    std::fs::write(
        &gw.config_path,
        "[[trunk]]\nid = \"x\"\nallowed_addresses = [\"not-an-ip\"]\n",
    )
    .unwrap();
    gw.signal("HUP");
    assert!(
        gw.wait_log("reload refused", Duration::from_secs(5)).await,
        "the refusal is logged:\n{}",
        gw.log()
    );
    let call = Caller::dial(dial_to(&gw, "1000"))
        .await
        .expect("the old trunk still takes calls");
    assert!(
        gw.readyz().await.is_some_and(|(s, _)| s == 200),
        "still ready"
    );
    call.hangup().await.expect("hang up");
}

/// SIGHUP applies a new admin token at once and names the sections that changed but need a
/// restart (here `media`), which keep their running values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_a_new_admin_token_and_names_what_needs_a_restart() {
    let gw = Gateway::start(GatewayOptions::default()).await;
    let text = std::fs::read_to_string(&gw.config_path).expect("read the config");
    let text = text
        .replace(
            &format!("token = {:?}", ops_support::ADMIN_TOKEN),
            "token = \"rotated-admin-token\"",
        )
        .replace("rtp_timeout_s = 30", "rtp_timeout_s = 31");
    assert!(text.contains("rotated-admin-token") && text.contains("rtp_timeout_s = 31"));
    std::fs::write(&gw.config_path, text).expect("rewrite the config");
    gw.signal("HUP");
    assert!(gw.wait_log("trunks reloaded", Duration::from_secs(5)).await);
    let client = reqwest::Client::new();
    let with = |token: &'static str| {
        client
            .get(format!("http://{}/v1/trunks", gw.admin))
            .bearer_auth(token)
            .send()
    };
    assert_eq!(with("rotated-admin-token").await.unwrap().status(), 200);
    assert_eq!(with(ops_support::ADMIN_TOKEN).await.unwrap().status(), 401);
    assert!(
        gw.wait_log("need a restart", Duration::from_secs(5)).await,
        "{}",
        gw.log()
    );
    let line = gw
        .log()
        .lines()
        .find(|l| l.contains("need a restart"))
        .unwrap_or_default()
        .to_owned();
    assert!(line.contains("media") && !line.contains("sip,"), "{line}");
}
