//! The admin API against its OpenAPI 3.1 description (`configs/openapi.json`), which the
//! gateway serves at `/v1/openapi.json`: schemathesis (PyPI) fuzzes every operation of a
//! running gateway and checks that nothing answers 5xx, that every response matches its
//! schema, status and content type, that invalid input is refused and that the bearer token
//! is required where the description says so. It is run without its `positive_data_acceptance`
//! check: a schema-valid request may still be refused for rules a schema cannot say (a
//! namespace no trunk uses, a validity window already past). Without `schemathesis` on `PATH`
//! the test skips, unless `DIALIN_STRICT_TESTS=1`.

mod support;

use std::process::Command;

use support::gateway::{Gateway, GatewayOptions, TOKEN};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_description_is_the_repository_s_and_is_openapi_3_1() {
    let gw = Gateway::start(GatewayOptions::default()).await;
    let served = reqwest::get(format!("http://{}/v1/openapi.json", gw.admin))
        .await
        .expect("GET /v1/openapi.json");
    assert_eq!(served.status(), 200, "served without a token");
    let served: serde_json::Value = served.json().await.expect("JSON");
    let repo: serde_json::Value = serde_json::from_str(dialin::admin::OPENAPI).unwrap();
    assert_eq!(served, repo);
    assert_eq!(repo["openapi"], "3.1.0");
    for path in ["/v1/pins", "/v1/pins/{namespace}/{pin}", "/v1/calls", "/v1/calls/{id}", "/v1/trunks", "/healthz", "/readyz", "/metrics"] {
        assert!(repo["paths"][path].is_object(), "{path} is described");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_schema_violation() {
    let found = Command::new("schemathesis").arg("--version").output();
    if !found.as_ref().is_ok_and(|o| o.status.success()) {
        support::sipp::skip_or_fail("schemathesis is not installed (pip install schemathesis)");
        return;
    }
    let gw = Gateway::start(GatewayOptions::default()).await;
    gw.create_pin("fuzzed", None).await;
    let base = format!("http://{}", gw.admin);
    let dir = gw.dir().to_owned();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("schemathesis")
            .current_dir(&dir)
            .args(["run", &format!("{base}/v1/openapi.json"), "--url", &base])
            .args(["-H", &format!("Authorization: Bearer {TOKEN}")])
            .args(["--checks", "all", "--exclude-checks", "positive_data_acceptance"])
            .args(["--max-examples", "50", "--seed", "20261207", "--no-color"])
            .args(["--generation-database", "none"])
            .output()
            .expect("run schemathesis")
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    assert!(out.status.success(), "schemathesis failed:\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("passed"), "{text}");
}
