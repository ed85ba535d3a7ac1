//! The `dialin-lkserver` binary serves the same protocol from its own process.
mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{token, ClientOptions, TestClient};

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_prints_its_url_and_accepts_a_client() {
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_dialin-lkserver"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--api-key",
                common::API_KEY,
                "--api-secret",
                common::API_SECRET,
            ])
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn dialin-lkserver"),
    );
    let stdout = child.0.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    })
    .await
    .unwrap()
    .unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("ws://"))
        .expect("url on first line")
        .to_owned();
    let client = TestClient::connect(ClientOptions {
        url,
        token: token("r", "gw"),
        publish_tone: Some(440.0),
        ping: true,
        auto_resume: false,
    })
    .await;
    assert!(
        client
            .wait(Duration::from_secs(10), |s| s.publisher_connected
                && s.subscriber_connected)
            .await
    );
    assert!(
        client
            .wait(Duration::from_secs(10), |s| s.track_published.is_some())
            .await
    );
}
