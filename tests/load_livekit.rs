//! Load run of bridged LiveKit calls (ignored by default: it prints figures for the README's
//! Performance section rather than checking a result).
//!
//! ```sh
//! cargo build --release -p dialin-lkserver
//! DIALIN_LOAD_CALLS=40 DIALIN_LOAD_ROOM=20 DIALIN_LOAD_SECS=30 \
//!   cargo test --release --test load_livekit -- --ignored --nocapture
//! ```
//!
//! The LiveKit test server runs as its own process (`dialin-lkserver`, built next to this test),
//! the release gateway as another, and the callers in this process: `DIALIN_LOAD_CALLS` G.711
//! (PCMU) calls, `DIALIN_LOAD_ROOM` per room (2 by default; the calls are rounded down to whole
//! rooms), each keying its room's PIN by RFC 4733 and then playing a tone without pause (in a
//! room of two, 440 Hz on one side and 1000 Hz on the other; in larger rooms one of eight
//! tones by the caller's place in the room). `DIALIN_LOAD_SHARE=0` turns `livekit.share_rooms`
//! off (every call subscribes to every track itself), to compare; `DIALIN_LOAD_WEB=1` puts a
//! web user in every room before the calls come (a test-server participant publishing a
//! 250 Hz tone and subscribing to everyone). Once every call is in its room and the media has
//! settled, a window of `DIALIN_LOAD_SECS` measures:
//!
//! - the gateway's CPU time over the window as a share of one core, in all and per call;
//! - its resident memory, and the growth over the idle gateway per call;
//! - packets to the callers: RTP packets the callers received, against 50 per second each;
//! - audio to the callers: 20 ms packets that carried the tone of another participant of the
//!   room (in rooms of two: the other caller's);
//! - packets to the room: Opus packets the test server received from the gateway's
//!   participants, against 50 per second each (the server prints its counters every second);
//! - the gateway's own account of what it lost: `dialin_room_frames_dropped_total`,
//!   `dialin_room_frames_missing_total` (over the window) and `dialin_overloaded`.
//!
//! The callers share the machine with the gateway and the server: on a small machine the
//! figures at high N say as much about the machine as about the gateway, so the run prints the
//! CPU time of the server process too.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::caller::{Call, Caller, Codec, DialOptions, DtmfMode};
use support::gateway::{Gateway, GatewayOptions};
use support::tone::goertzel_level;

const KEY: &str = "loadkey";
const SECRET: &str = "load-secret-for-the-livekit-load-run";
/// Tones of the two callers of a room of two (dBFS level of each).
const TONES: [f64; 2] = [440.0, 1000.0];
/// Tones of the callers of a larger room, by place in the room (150 Hz apart: a 20 ms
/// Goertzel tells them apart).
const ROOM_TONES: [f64; 8] = [350.0, 500.0, 650.0, 800.0, 950.0, 1100.0, 1250.0, 1400.0];
/// The web user's tone (`dialin-lkserver --web-rooms`).
const WEB_TONE: f64 = 250.0;
const TONE_DBFS: f64 = -20.0;
/// A packet carries the other caller when its tone is within 12 dB of what was played.
const HEARD_DBFS: f64 = TONE_DBFS - 12.0;
/// Calls set up at once.
const SETUP_BATCH: usize = 10;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The latest counters line of the test server, and when it was read.
#[derive(Debug, Clone, Copy, Default)]
struct ServerCounters {
    t_ms: u64,
    packets_in: u64,
    packets_out: u64,
    participants: u64,
}

fn parse_counters(line: &str) -> Option<ServerCounters> {
    let mut c = ServerCounters::default();
    let mut seen = 0;
    for field in line.split_whitespace() {
        let (k, v) = field.split_once('=')?;
        let v: u64 = v.parse().ok()?;
        match k {
            "t_ms" => c.t_ms = v,
            "packets_in" => c.packets_in = v,
            "packets_out" => c.packets_out = v,
            "participants" => c.participants = v,
            _ => continue,
        }
        seen += 1;
    }
    (seen == 4).then_some(c)
}

/// `dialin-lkserver` as a child process, killed on drop.
struct LkServer {
    child: Child,
    url: String,
    latest: Arc<Mutex<ServerCounters>>,
}

impl LkServer {
    /// With `web_rooms`, a web user in each of the rooms `load-0` .. `load-{web_rooms - 1}`.
    fn start(web_rooms: Option<usize>) -> LkServer {
        let exe = std::env::current_exe().expect("test executable");
        let bin = exe
            .parent()
            .and_then(|deps| deps.parent())
            .map(|dir| dir.join("dialin-lkserver"))
            .expect("target directory");
        assert!(
            bin.exists(),
            "{} not built: cargo build --release -p dialin-lkserver",
            bin.display()
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut child = Command::new(&bin)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args([
                "--api-key",
                KEY,
                "--api-secret",
                SECRET,
                "--report-ms",
                "1000",
            ])
            .args(
                web_rooms
                    .map(|r| vec!["--web-rooms".to_owned(), format!("load-:{r}")])
                    .unwrap_or_default(),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start dialin-lkserver");
        let stdout = child.stdout.take().expect("server stdout");
        let latest = Arc::new(Mutex::new(ServerCounters::default()));
        let (url_tx, url_rx) = std::sync::mpsc::channel();
        let shared = latest.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line
                    .strip_prefix("dialin-lkserver listening on ")
                    .and_then(|rest| rest.split_whitespace().next())
                {
                    let _ = url_tx.send(url.to_owned());
                } else if let Some(c) = parse_counters(&line) {
                    *shared.lock().unwrap() = c;
                }
            }
        });
        let url = url_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the test server prints its URL");
        LkServer { child, url, latest }
    }

    fn counters(&self) -> ServerCounters {
        *self.latest.lock().unwrap()
    }

    /// Waits for a counters line newer than `after`.
    async fn next_counters(&self, after: ServerCounters) -> ServerCounters {
        loop {
            let c = self.counters();
            if c.t_ms > after.t_ms {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for LkServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU time (user + system) of a process, in clock ticks, and its resident set in KiB.
fn proc_usage(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (ticks, rss)
}

/// Clock ticks per second of `/proc/*/stat` (USER_HZ, 100 on Linux).
const CLK_TCK: f64 = 100.0;

/// Places one call, keys `pin#` and starts its tone; retries a `503` (admission control
/// refusing while the gateway catches up) for up to a minute.
async fn place(gw: &Gateway, i: usize, pin: &str, tone: f64) -> Call {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let opts = DialOptions {
            codecs: vec![Codec::Pcmu],
            from_user: format!("+3361{i:07}"),
            ..DialOptions::new(gw.sip)
        };
        match Caller::dial(opts).await {
            Ok(call) => {
                call.play_silence();
                // The welcome prompt starts with the answer; keys cut it short (barge-in).
                tokio::time::sleep(Duration::from_millis(300)).await;
                call.send_dtmf(&format!("{pin}#"), DtmfMode::Rfc4733)
                    .await
                    .expect("digits sent");
                call.play_tone(tone, TONE_DBFS);
                return call;
            }
            Err(e) if e.status() == Some(503) && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("call {i} not placed: {e}"),
        }
    }
}

/// The tone caller `i` plays in rooms of `m`.
fn tone_of(i: usize, m: usize) -> f64 {
    if m == 2 {
        TONES[i % 2]
    } else {
        ROOM_TONES[(i % m) % ROOM_TONES.len()]
    }
}

/// Packets received by each call since `since`, and how many carried the tone of another
/// participant of its room (rooms of `m` callers; with a web user when `web`).
fn audio_heard(calls: &[Call], since: Instant, m: usize, web: bool) -> (u64, u64) {
    let mut packets = 0u64;
    let mut with_tone = 0u64;
    for (i, call) in calls.iter().enumerate() {
        let own = tone_of(i, m);
        let mut others: Vec<f64> = (0..m)
            .map(|j| tone_of(j, m))
            .filter(|&f| f != own)
            .collect();
        others.dedup();
        if web {
            others.push(WEB_TONE);
        }
        for (_, chunk) in call.recorded_chunks(since) {
            packets += 1;
            if others
                .iter()
                .any(|&f| goertzel_level(&chunk, call.sample_rate(), f) >= HEARD_DBFS)
            {
                with_tone += 1;
            }
        }
    }
    (packets, with_tone)
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "load run; prints figures"]
async fn bridged_livekit_calls() {
    let m = usize::try_from(env_or("DIALIN_LOAD_ROOM", 2)).unwrap_or(2).max(2);
    let n = usize::try_from(env_or("DIALIN_LOAD_CALLS", 50)).unwrap_or(50) / m * m;
    let secs = env_or("DIALIN_LOAD_SECS", 30);
    let share = env_or("DIALIN_LOAD_SHARE", 1) != 0;
    let web = env_or("DIALIN_LOAD_WEB", 0) != 0;
    assert!(n >= m, "DIALIN_LOAD_CALLS must be at least DIALIN_LOAD_ROOM");
    let room_count = n / m;
    let server = LkServer::start(web.then_some(room_count));
    let rooms = format!(
        "[rooms]\nbackend = \"livekit\"\n\n[livekit]\nurl = \"{}\"\napi_key = \"{KEY}\"\napi_secret = \"{SECRET}\"\nshare_rooms = {share}\n",
        server.url
    );
    let trunks = format!(
        "[[trunk]]\nid = \"load\"\nallowed_addresses = [\"127.0.0.0/8\"]\npin_length = 6\nmax_calls = {}\n",
        n + 10
    );
    let calls_limit = u32::try_from(n + 10).unwrap_or(u32::MAX);
    let gw = Gateway::start(GatewayOptions {
        rooms: Some(rooms),
        trunks: Some(trunks),
        max_calls: calls_limit,
        rtp_ports: u16::try_from(2 * n + 40).unwrap_or(u16::MAX),
        rtp_timeout_s: 30,
        first_digit_timeout_s: 10,
        inter_digit_timeout_s: 5,
        max_prompt_replays: 3,
        rust_log: "warn".to_owned(),
        ..GatewayOptions::default()
    })
    .await;
    let pid = gw.pid().expect("gateway running");
    let server_pid = server.child.id();
    let mut pins = Vec::new();
    for r in 0..room_count {
        pins.push(gw.create_pin(&format!("load-{r}"), None).await);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, rss_idle) = proc_usage(pid);

    let setup = Instant::now();
    let mut calls: Vec<Call> = Vec::with_capacity(n);
    for batch in (0..n).collect::<Vec<_>>().chunks(SETUP_BATCH) {
        let placed =
            futures_util::future::join_all(
                batch
                    .iter()
                    .map(|&i| place(&gw, i, &pins[i / m], tone_of(i, m))),
            )
            .await;
        calls.extend(placed);
    }
    let in_room = gw
        .wait_for_calls_in("in_room", n, Duration::from_secs(60))
        .await;
    assert_eq!(in_room.len(), n, "every call reaches its room");
    let setup_s = setup.elapsed().as_secs_f64();
    // Let the peer connections, jitter buffers and mixers settle.
    tokio::time::sleep(Duration::from_secs(5)).await;

    let dropped0 = gw
        .metric("dialin_room_frames_dropped_total")
        .await
        .unwrap_or(0.0);
    let missing0 = gw
        .metric("dialin_room_frames_missing_total")
        .await
        .unwrap_or(0.0);
    let lk0 = server.next_counters(server.counters()).await;
    let t0 = Instant::now();
    let (cpu0, _) = proc_usage(pid);
    let (scpu0, _) = proc_usage(server_pid);
    let rx0: u64 = calls.iter().map(Call::packets_received).sum();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let lk1 = server.next_counters(lk0).await;
    let (cpu1, rss) = proc_usage(pid);
    let (scpu1, srss) = proc_usage(server_pid);
    let rx1: u64 = calls.iter().map(Call::packets_received).sum();
    let elapsed = t0.elapsed().as_secs_f64();
    let (heard_packets, heard_tone) = audio_heard(&calls, t0, m, web);
    let dropped1 = gw
        .metric("dialin_room_frames_dropped_total")
        .await
        .unwrap_or(0.0);
    let missing1 = gw
        .metric("dialin_room_frames_missing_total")
        .await
        .unwrap_or(0.0);
    let overloaded = gw.metric("dialin_overloaded").await.unwrap_or(-1.0);
    let still_in_room = gw
        .wait_for_calls_in("in_room", n, Duration::from_secs(1))
        .await
        .len();

    let nf = n as f64;
    let expected = 50.0 * nf * elapsed;
    let cpu = (cpu1 - cpu0) as f64 / CLK_TCK / elapsed;
    let server_cpu = (scpu1 - scpu0) as f64 / CLK_TCK / elapsed;
    let lk_secs = (lk1.t_ms - lk0.t_ms) as f64 / 1000.0;
    let room_share = (lk1.packets_in - lk0.packets_in) as f64 / (50.0 * nf * lk_secs);
    let fwd_share = (lk1.packets_out - lk0.packets_out) as f64 / (50.0 * nf * lk_secs);
    println!(
        "machine: {} cores, {}",
        std::thread::available_parallelism().map_or(0, |p| p.get()),
        std::fs::read_to_string("/proc/cpuinfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
            .unwrap_or_default()
    );
    println!(
        "N={n} calls in {room_count} rooms of M={m}{}, share_rooms={share}, set up in {setup_s:.1} s, measured over {elapsed:.1} s",
        if web { " callers and a web user" } else { "" }
    );
    println!(
        "gateway CPU {:.1} % of one core = {:.3} % per call; RSS {:.1} MiB (idle {:.1} MiB) = {:.3} MiB per call",
        cpu * 100.0,
        cpu * 100.0 / nf,
        rss as f64 / 1024.0,
        rss_idle as f64 / 1024.0,
        (rss.saturating_sub(rss_idle)) as f64 / 1024.0 / nf
    );
    println!(
        "to the callers: {:.2} % of the expected packets, {:.2} % of them carried another participant's tone",
        (rx1 - rx0) as f64 * 100.0 / expected,
        if heard_packets == 0 {
            0.0
        } else {
            heard_tone as f64 * 100.0 / heard_packets as f64
        }
    );
    println!(
        "to the room: {:.2} % of the expected packets reached the server from the gateway; the server forwarded {:.2} %",
        room_share * 100.0,
        fwd_share * 100.0
    );
    println!(
        "gateway: room frames dropped {} and missing {} in the window ({:.3} % of the frames mixed), overloaded={overloaded}, calls still in their rooms {still_in_room}/{n}",
        dropped1 - dropped0,
        missing1 - missing0,
        (dropped1 - dropped0 + missing1 - missing0) * 100.0 / expected
    );
    println!(
        "test server: CPU {:.1} % of one core, RSS {:.1} MiB, {} participants",
        server_cpu * 100.0,
        srss as f64 / 1024.0,
        lk1.participants
    );
    assert_eq!(still_in_room, n, "no call dropped during the window");

    for call in &calls {
        call.hangup().await.ok();
    }
    assert!(
        gw.wait_no_calls(Duration::from_secs(30)).await,
        "every call ends after the hang-ups"
    );
}
