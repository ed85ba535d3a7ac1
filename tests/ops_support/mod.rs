//! The real `dialin serve` binary as operations tests see it: a temporary directory with a
//! configuration on free loopback ports, the process, its log, its admin API and signals.
//!
//! Tests of abuse handling and of operations (drain, reload, outages) need the whole
//! process — signal handlers, the endpoint's pre-filter, the store pool — so they run the
//! binary Cargo built for this package rather than pieces of the library.
#![allow(dead_code)]

use std::io::Read;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const ADMIN_TOKEN: &str = "ops-test-token";

/// True when `DIALIN_STRICT_TESTS=1`: a missing tool fails the test instead of skipping it.
pub fn strict() -> bool {
    std::env::var("DIALIN_STRICT_TESTS").is_ok_and(|v| v == "1")
}

/// Skips (returns true after printing why) or, under strict mode, panics.
pub fn skip(reason: &str) -> bool {
    if strict() {
        panic!("{reason} and DIALIN_STRICT_TESTS=1: this test cannot be skipped");
    }
    eprintln!("skipped: {reason}");
    true
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let p = std::env::temp_dir().join(format!(
            "dialin-{tag}-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).expect("create a temp dir");
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A free loopback UDP port (also free for TCP at the time of asking, most likely).
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free UDP port")
}

pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free TCP port")
}

/// An RTP port range of `n` ports that no other gateway of this test process uses.
fn rtp_range(n: u16) -> (u16, u16) {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let slot = NEXT.fetch_add(1, Ordering::Relaxed);
    // Spread processes over 20000..60000 by pid, then slots within a process.
    let base = 20_000 + ((std::process::id() % 64) * 600 + slot * n as u32) % 40_000;
    let base = (base as u16) & !1;
    (base, base + n - 1)
}

/// What the configuration of a test gateway says.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// Store URL; default a SQLite file in the gateway's directory.
    pub store_url: Option<String>,
    /// `allowed_addresses` of the single trunk.
    pub trunk_addresses: Vec<String>,
    pub trunk_id: String,
    /// The trunk's `numbers` (empty: any).
    pub trunk_numbers: Vec<String>,
    pub pin_length: u32,
    pub max_attempts: u32,
    pub drain_timeout_s: u64,
    pub unmatched_burst: u32,
    pub unmatched_per_second: u32,
    pub trunk_alarm_failed_per_minute: u32,
    pub max_calls: u32,
    pub rtp_ports: u16,
    pub rtp_timeout_s: u64,
    /// Extra TOML appended verbatim (more `[[trunk]]` tables...).
    pub extra: String,
    /// The `[rooms]` table and what it needs (`[livekit]`); `None`: local rooms.
    pub rooms: Option<String>,
    /// `RUST_LOG` for the process.
    pub log_filter: String,
    /// Programs that exec the gateway (`["nice", "-n", "19", "taskset", "-c", "0"]`).
    pub command_prefix: Vec<String>,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        GatewayOptions {
            store_url: None,
            trunk_addresses: vec!["127.0.0.1/32".to_owned()],
            trunk_id: "carrier".to_owned(),
            trunk_numbers: Vec::new(),
            pin_length: 6,
            max_attempts: 3,
            drain_timeout_s: 300,
            unmatched_burst: 10,
            unmatched_per_second: 1,
            trunk_alarm_failed_per_minute: 30,
            max_calls: 1000,
            rtp_ports: 200,
            rtp_timeout_s: 30,
            extra: String::new(),
            rooms: None,
            log_filter: "info".to_owned(),
            command_prefix: Vec::new(),
        }
    }
}

/// A running `dialin serve`, killed on drop.
pub struct Gateway {
    child: Option<Child>,
    pub dir: TempDir,
    pub sip: SocketAddr,
    pub admin: SocketAddr,
    pub config_path: PathBuf,
    log_path: PathBuf,
    pub options: GatewayOptions,
}

impl Gateway {
    /// The configuration file text for these options and ports.
    pub fn config_text(
        o: &GatewayOptions,
        dir: &Path,
        sip: u16,
        admin: u16,
        rtp: (u16, u16),
    ) -> String {
        let store = o
            .store_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", dir.join("dialin.db").display()));
        let addrs: Vec<String> = o.trunk_addresses.iter().map(|a| format!("{a:?}")).collect();
        let numbers: Vec<String> = o.trunk_numbers.iter().map(|a| format!("{a:?}")).collect();
        let rooms = o
            .rooms
            .clone()
            .unwrap_or_else(|| "[rooms]\nbackend = \"local\"".to_owned());
        format!(
            "[sip]\nlisten = [\"udp://127.0.0.1:{sip}\"]\n\n\
             [media]\nrtp_ports = \"{}-{}\"\nrtp_timeout_s = {}\n\n\
             [store]\nurl = {store:?}\nmax_connections = 4\n\n\
             {rooms}\n\n\
             [admin]\nlisten = \"127.0.0.1:{admin}\"\ntoken = {ADMIN_TOKEN:?}\n\n\
             [limits]\nmax_calls = {}\ndrain_timeout_s = {}\n\n\
             [security]\ntrunk_alarm_failed_per_minute = {}\n\n\
             [security.unmatched_source]\nburst = {}\nper_second = {}\n\n\
             [[trunk]]\nid = {:?}\nallowed_addresses = [{}]\nnumbers = [{}]\npin_length = {}\nmax_attempts = {}\n\n{}\n",
            rtp.0,
            rtp.1,
            o.rtp_timeout_s,
            o.max_calls,
            o.drain_timeout_s,
            o.trunk_alarm_failed_per_minute,
            o.unmatched_burst,
            o.unmatched_per_second,
            o.trunk_id,
            addrs.join(", "),
            numbers.join(", "),
            o.pin_length,
            o.max_attempts,
            o.extra,
        )
    }

    /// Starts the binary and waits until `/readyz` answers 200 (panics after 30 s with
    /// the log).
    pub async fn start(options: GatewayOptions) -> Gateway {
        let gw = Gateway::spawn(options);
        if !gw.wait_ready(Duration::from_secs(30)).await {
            panic!("the gateway did not become ready; log:\n{}", gw.log());
        }
        gw
    }

    /// Starts the binary without waiting.
    pub fn spawn(options: GatewayOptions) -> Gateway {
        let dir = TempDir::new("ops");
        let sip = free_udp_port();
        let admin = free_tcp_port();
        let rtp = rtp_range(options.rtp_ports);
        let config_path = dir.path().join("dialin.toml");
        std::fs::write(
            &config_path,
            Gateway::config_text(&options, dir.path(), sip, admin, rtp),
        )
        .expect("write the config");
        let log_path = dir.path().join("dialin.log");
        let log = std::fs::File::create(&log_path).expect("create the log");
        let mut cmd = match options.command_prefix.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(env!("CARGO_BIN_EXE_dialin"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_dialin")),
        };
        let child = cmd
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .env("RUST_LOG", &options.log_filter)
            .env_remove("DIALIN_ADMIN_TOKEN")
            .env_remove("DIALIN_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start dialin serve");
        Gateway {
            child: Some(child),
            dir,
            sip: SocketAddr::from(([127, 0, 0, 1], sip)),
            admin: SocketAddr::from(([127, 0, 0, 1], admin)),
            config_path,
            log_path,
            options,
        }
    }

    /// Rewrites the config file (e.g. before a SIGHUP), keeping ports.
    pub fn rewrite_config(&self, options: &GatewayOptions) {
        let text = std::fs::read_to_string(&self.config_path).expect("read config");
        let rtp = text
            .lines()
            .find_map(|l| l.strip_prefix("rtp_ports = \""))
            .and_then(|r| r.trim_end_matches('"').split_once('-'))
            .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
            .expect("rtp_ports in the config");
        std::fs::write(
            &self.config_path,
            Gateway::config_text(
                options,
                self.dir.path(),
                self.sip.port(),
                self.admin.port(),
                rtp,
            ),
        )
        .expect("rewrite config");
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Sends a signal by name (`TERM`, `HUP`) with kill(1).
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{name} {}", self.pid());
    }

    /// Waits for the process to exit; its status, or None after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    return Some(status);
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    /// Everything the process logged so far.
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log_path) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Waits until the log contains `needle`.
    pub async fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        loop {
            if self.log().contains(needle) {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until `needle` appears at least `n` times in the log.
    pub async fn wait_log_count(&self, needle: &str, n: usize, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        loop {
            if self.log().matches(needle).count() >= n {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("HTTP client")
    }

    /// GET on the admin API (with the token); status and body, or None when unreachable.
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        let r = Gateway::client()
            .get(self.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .ok()?;
        let status = r.status().as_u16();
        Some((status, r.text().await.unwrap_or_default()))
    }

    /// `/readyz`'s status and body.
    pub async fn readyz(&self) -> Option<(u16, String)> {
        self.get("/readyz").await
    }

    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        self.wait_readyz(200, timeout).await
    }

    /// Waits until `/readyz` answers `status`.
    pub async fn wait_readyz(&self, status: u16, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        loop {
            if self.readyz().await.is_some_and(|(s, _)| s == status) {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A metric's value from `/metrics` (the full series name with labels).
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let (_, text) = self.get("/metrics").await?;
        text.lines().find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
    }

    /// Active calls from `GET /v1/calls`.
    pub async fn active_calls(&self) -> Option<usize> {
        let (status, body) = self.get("/v1/calls").await?;
        if status != 200 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v.as_array()
            .or_else(|| v.get("calls").and_then(|c| c.as_array()))
            .map(|a| a.len())
    }

    /// Creates a PIN for `room` in the default namespace through the admin API.
    pub async fn create_pin(&self, room: &str, pin: &str) {
        let r = Gateway::client()
            .post(self.url("/v1/pins"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&serde_json::json!({ "room": room, "pin": pin }))
            .send()
            .await
            .expect("POST /v1/pins");
        let status = r.status().as_u16();
        assert_eq!(
            status,
            201,
            "create PIN: {}",
            r.text().await.unwrap_or_default()
        );
    }

    /// Kills the process now (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- dialin log ---\n{}", self.log());
        }
    }
}

/// A throwaway PostgreSQL server on loopback that the test can stop and start again, for
/// store outages and several gateway nodes on one database.
pub struct PgServer {
    bin: PathBuf,
    dir: TempDir,
    pub port: u16,
    /// Run the server tools as the `postgres` user (they refuse to run as root).
    as_postgres: bool,
}

impl PgServer {
    /// The PostgreSQL tools: `$DIALIN_TEST_PG_BIN`, else the newest
    /// `/usr/lib/postgresql/*/bin`, else `initdb` on the PATH.
    fn find_bin() -> Option<PathBuf> {
        if let Ok(b) = std::env::var("DIALIN_TEST_PG_BIN") {
            return Some(PathBuf::from(b));
        }
        let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let v = e.file_name().to_str()?.parse::<u32>().ok()?;
                let bin = e.path().join("bin");
                bin.join("initdb").exists().then_some((v, bin))
            })
            .collect();
        versions.sort();
        versions.pop().map(|(_, b)| b)
    }

    /// Initialises and starts a server, or returns None (after printing why) when
    /// PostgreSQL is not installed; panics instead under `DIALIN_STRICT_TESTS=1`.
    pub fn start() -> Option<PgServer> {
        let Some(bin) = PgServer::find_bin() else {
            skip("PostgreSQL (initdb) not found: set DIALIN_TEST_PG_BIN or install postgresql");
            return None;
        };
        // The server tools refuse to run as root: run them as `postgres` then.
        let root = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false);
        let dir = TempDir::new("pg");
        if root {
            let ok = Command::new("chown")
                .arg("-R")
                .arg("postgres")
                .arg(dir.path())
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "chown the PostgreSQL directory to the postgres user");
        }
        let pg = PgServer {
            bin,
            dir,
            port: free_tcp_port(),
            as_postgres: root,
        };
        let data = pg.dir.path().join("data");
        let out = pg.tool(
            "initdb",
            &["-D", path_str(&data), "-A", "trust", "-U", "postgres"],
        );
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        pg.start_server();
        Some(pg)
    }

    fn tool(&self, name: &str, args: &[&str]) -> std::process::Output {
        let exe = self.bin.join(name);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.arg("-u").arg("postgres").arg("--").arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        cmd.args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", exe.display()))
    }

    /// Starts (or restarts) the server on the same port and data directory.
    pub fn start_server(&self) {
        let data = self.dir.path().join("data");
        let log = self.dir.path().join("pg.log");
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=100 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let out = self.tool(
            "pg_ctl",
            &[
                "-D",
                path_str(&data),
                "-o",
                &opts,
                "-l",
                path_str(&log),
                "-w",
                "start",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Stops the server at once (clients see their connections cut).
    pub fn stop_server(&self) {
        let data = self.dir.path().join("data");
        let out = self.tool(
            "pg_ctl",
            &["-D", path_str(&data), "-m", "immediate", "-w", "stop"],
        );
        assert!(
            out.status.success(),
            "pg_ctl stop failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = self.tool(
            "pg_ctl",
            &["-D", path_str(&data), "-m", "immediate", "stop"],
        );
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}

/// Status of the answer to an OPTIONS probe from the trunk's address.
pub async fn options_probe(gw: &Gateway) -> Option<u16> {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.ok()?;
    sock.connect(gw.sip).await.ok()?;
    let from = sock.local_addr().ok()?;
    let gw_addr = gw.sip;
    let probe = format!(
        "OPTIONS sip:{gw_addr} SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bKprobe;rport\r\n\
         From: <sip:lb@{from}>;tag=p1\r\nTo: <sip:{gw_addr}>\r\nCall-ID: probe@{from}\r\n\
         CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    sock.send(probe.as_bytes()).await.ok()?;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(3), sock.recv(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(buf.get(..n)?).into_owned();
    text.strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok()
}
