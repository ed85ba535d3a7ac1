//! The real `dialin serve` binary as a test fixture: the gateway's side of an end-to-end call.
//!
//! [`Gateway::start`] writes a configuration into a scratch directory (SIP over UDP and TCP
//! on a free loopback port, the admin API on another, a small RTP port range of its own, a
//! SQLite file, local rooms, the IVR timeouts of [`GatewayOptions`]), starts the binary with
//! `RUST_LOG` as asked and its stderr captured to a file, and waits for `/readyz`. The test
//! then creates PINs and watches calls through the admin API, reads call records from the
//! store, and stops the gateway with SIGTERM to collect its log. The process is killed on
//! drop, so a failing test never leaves a gateway behind.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::sipp::{free_port, ScratchDir};

/// Bearer token of the admin API in every test configuration.
pub const TOKEN: &str = "gateway-test-token";
/// RTP ports per gateway: two per call (RTP and RTCP), room for a few calls.
const RTP_PORTS: u16 = 24;
/// RTP ranges are drawn from below Linux's ephemeral range (32768+), where the test caller's
/// own sockets live, so the two never collide.
const RTP_FIRST: u16 = 20_000;
const RTP_LAST: u16 = 32_000;

static NEXT_RANGE: AtomicU32 = AtomicU32::new(0);

/// How to configure the gateway under test.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    pub first_digit_timeout_s: u64,
    pub inter_digit_timeout_s: u64,
    pub max_prompt_replays: u32,
    pub max_ivr_time_s: u64,
    pub rtp_timeout_s: u64,
    /// Ports in the RTP range (two per call).
    pub rtp_ports: u16,
    pub max_call_duration_s: u64,
    pub max_calls: u32,
    /// Failed PINs per calling number before a lockout (`[security.lockout]`).
    pub failed_pin_limit: u32,
    /// `RUST_LOG` for the gateway.
    pub rust_log: String,
    /// The `[[trunk]]` tables; `None`: one trunk `default` allowing 127.0.0.0/8, PIN length 10.
    pub trunks: Option<String>,
    /// The `[rooms]` table and what it needs (e.g. `[livekit]`); `None`: local rooms.
    pub rooms: Option<String>,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        GatewayOptions {
            first_digit_timeout_s: 2,
            inter_digit_timeout_s: 2,
            max_prompt_replays: 1,
            max_ivr_time_s: 60,
            rtp_timeout_s: 10,
            rtp_ports: RTP_PORTS,
            max_call_duration_s: 3600,
            max_calls: 100,
            failed_pin_limit: 10,
            rust_log: "info,dialin=debug".to_owned(),
            trunks: None,
            rooms: None,
        }
    }
}

/// The default trunk: loopback callers, 10-digit PINs, three attempts.
pub const DEFAULT_TRUNK: &str = r#"
[[trunk]]
id = "default"
allowed_addresses = ["127.0.0.0/8"]
pin_namespace = "default"
pin_length = 10
max_attempts = 3
max_calls = 10
"#;

/// One running gateway.
pub struct Gateway {
    child: Option<Child>,
    dir: ScratchDir,
    /// Where calls go (UDP and TCP).
    pub sip: SocketAddr,
    pub admin: SocketAddr,
    pub db: PathBuf,
    pub log: PathBuf,
    /// The RTP port range the gateway leases from.
    pub rtp_ports: (u16, u16),
    client: reqwest::Client,
}

impl Gateway {
    /// Starts `dialin serve` and waits until `/readyz` answers 200.
    pub async fn start(opts: GatewayOptions) -> Gateway {
        let dir = ScratchDir::new("gateway").expect("scratch dir");
        let sip_port = free_port();
        let admin_port = free_tcp_port();
        let (rtp_first, rtp_last) = free_rtp_range(opts.rtp_ports);
        let db = dir.path().join("dialin.db");
        let log = dir.path().join("dialin.log");
        let trunks = opts
            .trunks
            .clone()
            .unwrap_or_else(|| DEFAULT_TRUNK.to_owned());
        let config = format!(
            r#"
[sip]
listen = ["udp://127.0.0.1:{sip_port}", "tcp://127.0.0.1:{sip_port}"]

[media]
rtp_ports = "{rtp_first}-{rtp_last}"
rtp_timeout_s = {rtp_timeout}
max_call_duration_s = {max_duration}

[ivr]
first_digit_timeout_s = {first}
inter_digit_timeout_s = {inter}
max_prompt_replays = {replays}
max_ivr_time_s = {ivr_time}

[store]
url = "sqlite://{db}"

{rooms}

[admin]
listen = "127.0.0.1:{admin_port}"
token = "{TOKEN}"

[security.lockout]
failed_pin_limit = {failed_pin_limit}
window_s = 900
lockout_s = 900

[limits]
max_calls = {max_calls}
drain_timeout_s = 1

{trunks}
"#,
            rtp_timeout = opts.rtp_timeout_s,
            max_duration = opts.max_call_duration_s,
            failed_pin_limit = opts.failed_pin_limit,
            first = opts.first_digit_timeout_s,
            inter = opts.inter_digit_timeout_s,
            replays = opts.max_prompt_replays,
            ivr_time = opts.max_ivr_time_s,
            db = db.display(),
            max_calls = opts.max_calls,
            rooms = opts
                .rooms
                .as_deref()
                .unwrap_or("[rooms]\nbackend = \"local\""),
        );
        let config_path = dir
            .write("dialin.toml", config.as_bytes())
            .expect("write config");
        let child = Command::new(env!("CARGO_BIN_EXE_dialin"))
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .env("RUST_LOG", &opts.rust_log)
            .env_remove("DIALIN_ADMIN_TOKEN")
            .env_remove("DIALIN_CONFIG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.path().join("stdout.log")).expect("stdout log"))
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start the dialin binary");
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("http client");
        let mut gw = Gateway {
            child: Some(child),
            dir,
            sip: SocketAddr::from((Ipv4Addr::LOCALHOST, sip_port)),
            admin: SocketAddr::from((Ipv4Addr::LOCALHOST, admin_port)),
            db,
            log,
            rtp_ports: (rtp_first, rtp_last),
            client,
        };
        gw.wait_ready(Duration::from_secs(20)).await;
        gw
    }

    async fn wait_ready(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let url = format!("http://{}/readyz", self.admin);
        loop {
            if let Ok(r) = self.client.get(&url).send().await {
                if r.status().as_u16() == 200 {
                    return;
                }
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("dialin exited with {status} before ready:\n{}", self.logs());
                }
            }
            if Instant::now() > deadline {
                panic!("dialin not ready after {limit:?}:\n{}", self.logs());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The process id of the running gateway (for CPU and memory readings).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The scratch directory (config, database, logs).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// The gateway's log so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .client
            .request(method, format!("http://{}{path}", self.admin))
            .bearer_auth(TOKEN);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("admin API request");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    /// Creates a PIN for `room` with `POST /v1/pins` (`pin`: an explicit one); returns it.
    pub async fn create_pin(&self, room: &str, pin: Option<&str>) -> String {
        let mut body = json!({ "room": room });
        if let Some(p) = pin {
            body["pin"] = json!(p);
        }
        let (status, v) = self
            .request(reqwest::Method::POST, "/v1/pins", Some(body))
            .await;
        assert_eq!(status, 201, "POST /v1/pins answered {status}: {v}");
        v["pin"].as_str().expect("pin in the answer").to_owned()
    }

    /// Creates a PIN for `room` whose callers appear in the room as `participant_name`.
    pub async fn create_named_pin(&self, room: &str, pin: &str, participant_name: &str) -> String {
        let body = json!({ "room": room, "pin": pin, "participant_name": participant_name });
        let (status, v) = self
            .request(reqwest::Method::POST, "/v1/pins", Some(body))
            .await;
        assert_eq!(status, 201, "POST /v1/pins answered {status}: {v}");
        v["pin"].as_str().expect("pin in the answer").to_owned()
    }

    /// `POST /v1/pins` with `body` as is (role, wait_for_host...); returns the PIN.
    pub async fn create_pin_with(&self, body: Value) -> String {
        let (status, v) = self
            .request(reqwest::Method::POST, "/v1/pins", Some(body))
            .await;
        assert_eq!(status, 201, "POST /v1/pins answered {status}: {v}");
        v["pin"].as_str().expect("pin in the answer").to_owned()
    }

    /// `GET /v1/calls`: the calls in progress.
    pub async fn calls(&self) -> Vec<Value> {
        let (status, v) = self.request(reqwest::Method::GET, "/v1/calls", None).await;
        assert_eq!(status, 200, "GET /v1/calls answered {status}: {v}");
        v["calls"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until some call in progress satisfies `pred`; returns it.
    pub async fn wait_for_call(
        &self,
        limit: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(c) = self.calls().await.into_iter().find(|c| pred(c)) {
                return Some(c);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until `n` calls are in the state `state`; returns them.
    pub async fn wait_for_calls_in(&self, state: &str, n: usize, limit: Duration) -> Vec<Value> {
        let deadline = Instant::now() + limit;
        loop {
            let calls: Vec<Value> = self
                .calls()
                .await
                .into_iter()
                .filter(|c| c["state"] == state)
                .collect();
            if calls.len() >= n || Instant::now() > deadline {
                return calls;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until no call is in progress; returns whether that happened.
    pub async fn wait_no_calls(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if self.calls().await.is_empty() {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The value of one series of `GET /metrics`, e.g. `dialin_calls_total{outcome="pin_failed"}`.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let text = self
            .client
            .get(format!("http://{}/metrics", self.admin))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
    }

    /// `DELETE /v1/calls/{id}`; returns the status.
    pub async fn hang_up(&self, id: &str) -> u16 {
        self.request(reqwest::Method::DELETE, &format!("/v1/calls/{id}"), None)
            .await
            .0
    }

    /// The call's record in the store, once completed (waits up to `limit` for an outcome).
    pub async fn completed_record(
        &self,
        id: &str,
        limit: Duration,
    ) -> Option<dialin::store::CallRecord> {
        let url = format!("sqlite://{}", self.db.display());
        let store = dialin::store::Store::open(&url, 1)
            .await
            .expect("open the gateway's store");
        let id = dialin::call::registry::CallId::new(id);
        let deadline = Instant::now() + limit;
        let rec = loop {
            let rec = store
                .get_call_record(&id)
                .await
                .expect("read the call record");
            if rec.as_ref().is_some_and(|r| r.outcome.is_some()) || Instant::now() > deadline {
                break rec;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        store.close().await;
        rec
    }

    /// Stops the gateway with SIGTERM (killing it if it lingers) and returns its log.
    pub async fn stop(&mut self) -> String {
        if let Some(mut child) = self.child.take() {
            let pid = child.id().to_string();
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(20)).await
                    }
                    Ok(None) => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
        self.logs()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Shown by the test harness only when the test fails (or with --nocapture).
        {
            let log = self.logs();
            let start = log.len().saturating_sub(20_000);
            let start = (start..log.len())
                .find(|&i| log.is_char_boundary(i))
                .unwrap_or(log.len());
            eprintln!("--- dialin log (tail) ---\n{}", &log[start..]);
        }
    }
}

/// The call records' `outcome` as its stable label.
pub fn outcome_label(rec: &dialin::store::CallRecord) -> Option<&'static str> {
    rec.outcome.map(|o| o.as_str())
}

fn free_tcp_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free TCP port")
}

/// `count` ports (at most [`RTP_PORTS`]) free right now, in a slot distinct from the other
/// gateways this process started and (through the process id) likely from other test binaries'.
fn free_rtp_range(count: u16) -> (u16, u16) {
    // Ranges are drawn in slots of RTP_PORTS ports, or as many as a larger range needs.
    let count = count.clamp(2, RTP_LAST - RTP_FIRST);
    let width = count.max(RTP_PORTS).next_multiple_of(2);
    let slots = u32::from((RTP_LAST - RTP_FIRST) / width);
    let base = std::process::id().wrapping_mul(7919);
    for _ in 0..slots {
        let n = NEXT_RANGE.fetch_add(1, Ordering::Relaxed);
        let slot = (base.wrapping_add(n)) % slots;
        let first = RTP_FIRST + (slot as u16) * width;
        let last = first + count - 1;
        if (first..=last).all(|p| UdpSocket::bind((Ipv4Addr::LOCALHOST, p)).is_ok()) {
            return (first, last);
        }
    }
    panic!("no free RTP port range");
}
