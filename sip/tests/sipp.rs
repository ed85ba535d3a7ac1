//! Interop with SIPp as the calling UAC against the example UAS (in-process),
//! on loopback only. Skipped with a printed reason when `sipp` is missing,
//! unless `DIALIN_STRICT_TESTS=1`, which turns a missing tool into a failure.

#[path = "../examples/uas.rs"]
mod uas;

use dialin_sip::transport::Transport;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

fn strict() -> bool {
    std::env::var("DIALIN_STRICT_TESTS").is_ok_and(|v| v == "1")
}

/// True when sipp can run; otherwise prints why (or panics in strict mode).
fn sipp_available(test: &str) -> bool {
    let ok = Command::new("sipp").arg("-v").output().is_ok();
    if !ok {
        assert!(
            !strict(),
            "{test}: sipp is not installed and DIALIN_STRICT_TESTS=1"
        );
        eprintln!("{test}: skipped, sipp is not installed (Debian package sip-tester)");
    }
    ok
}

/// A loopback port free for both UDP and TCP right now.
fn free_port() -> u16 {
    for _ in 0..50 {
        let Ok(u) = std::net::UdpSocket::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(a) = u.local_addr() else { continue };
        if std::net::TcpListener::bind(a).is_ok() {
            return a.port();
        }
    }
    panic!("no free loopback port");
}

/// A scratch directory holding a copy of the scenario (SIPp writes its
/// error traces next to it).
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dialin-sipp-{}-{name}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    dir
}

struct SippRun {
    code: Option<i32>,
    output: String,
    dir: PathBuf,
}

impl SippRun {
    fn successful_calls(&self) -> Option<u64> {
        // Last "Successful call" line of the final statistics screen.
        self.output
            .lines()
            .rev()
            .find(|l| l.contains("Successful call"))
            .and_then(|l| {
                l.split('|')
                    .rev()
                    .find_map(|c| c.trim().parse::<u64>().ok())
            })
    }

    fn errors(&self) -> String {
        let mut out = String::new();
        if let Ok(rd) = std::fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().contains("errors") {
                    out.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
                }
            }
        }
        out
    }
}

/// Runs sipp in the foreground against `target` with the given scenario
/// (`-sn NAME` built-in or a file from tests/sipp) and extra arguments.
async fn sipp(name: &str, scenario: &str, target: std::net::SocketAddr, extra: &[&str]) -> SippRun {
    let dir = scratch(name);
    let mut args: Vec<String> = Vec::new();
    if scenario.ends_with(".xml") {
        let src = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sipp")).join(scenario);
        let dst = dir.join(scenario);
        std::fs::copy(&src, &dst).expect("copy scenario");
        args.extend(["-sf".into(), dst.to_string_lossy().into_owned()]);
    } else {
        args.extend(["-sn".into(), scenario.into()]);
    }
    let port = free_port().to_string();
    args.extend(
        [
            target.to_string().as_str(),
            "-i",
            "127.0.0.1",
            "-p",
            port.as_str(),
            "-s",
            "service",
            "-timeout",
            "30",
            "-timeout_error",
            "-trace_err",
            "-nostdin",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    args.extend(extra.iter().map(|s| s.to_string()));
    let d = dir.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("sipp").args(&args).current_dir(&d).output()
    })
    .await
    .expect("join")
    .expect("run sipp");
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    SippRun {
        code: out.status.code(),
        output,
        dir,
    }
}

async fn start_uas(opts: uas::Options) -> uas::Uas {
    let opts = uas::Options {
        listen: Some("127.0.0.1:0".parse().expect("addr")),
        ..opts
    };
    uas::start(opts).await.expect("start uas")
}

fn check(run: &SippRun, calls: u64) {
    assert_eq!(
        run.code,
        Some(0),
        "sipp failed\n{}\n{}",
        run.output,
        run.errors()
    );
    assert_eq!(
        run.successful_calls(),
        Some(calls),
        "sipp output:\n{}",
        run.output
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_call_over_udp_is_answered_acked_and_hung_up() {
    if !sipp_available("basic udp") {
        return;
    }
    let uas = start_uas(uas::Options::default()).await;
    let target = uas.addr(Transport::Udp).expect("udp");
    let run = sipp("udp", "uac", target, &["-m", "10", "-r", "20", "-d", "100"]).await;
    check(&run, 10);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let s = uas.stats();
    assert_eq!((s.answered, s.byes), (10, 10));
    uas.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_call_over_tcp_is_answered_acked_and_hung_up() {
    if !sipp_available("basic tcp") {
        return;
    }
    let uas = start_uas(uas::Options::default()).await;
    let target = uas.addr(Transport::Tcp).expect("tcp");
    let run = sipp(
        "tcp",
        "uac",
        target,
        &["-t", "t1", "-m", "10", "-r", "20", "-d", "100"],
    )
    .await;
    check(&run, 10);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let s = uas.stats();
    assert_eq!((s.answered, s.byes), (10, 10));
    uas.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_while_ringing_gets_200_then_487() {
    if !sipp_available("cancel") {
        return;
    }
    let uas = start_uas(uas::Options {
        ring: Some(Duration::from_secs(3)),
        ..Default::default()
    })
    .await;
    let target = uas.addr(Transport::Udp).expect("udp");
    let run = sipp("cancel", "cancel.xml", target, &["-m", "5", "-r", "10"]).await;
    check(&run, 5);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(uas.stats().cancelled, 5);
    uas.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_survive_ten_percent_packet_loss() {
    if !sipp_available("loss") {
        return;
    }
    let uas = start_uas(uas::Options::default()).await;
    let target = uas.addr(Transport::Udp).expect("udp");
    let run = sipp(
        "loss",
        "uac",
        target,
        &[
            "-m", "40", "-r", "20", "-l", "40", "-d", "100", "-lost", "10",
        ],
    )
    .await;
    check(&run, 40);
    uas.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_challenge_then_authenticated_invite_is_answered() {
    if !sipp_available("auth") {
        return;
    }
    let uas = start_uas(uas::Options {
        auth: Some(("alice".into(), "secret".into())),
        ..Default::default()
    })
    .await;
    let target = uas.addr(Transport::Udp).expect("udp");
    let run = sipp("auth", "auth.xml", target, &["-m", "5", "-r", "10"]).await;
    check(&run, 5);
    // SIPp is done once it has the 200 to its last BYE; the UAS counts that BYE just after
    // sending the 200, so give it a moment.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    let mut s = uas.stats();
    while s.byes < 5 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        s = uas.stats();
    }
    assert_eq!((s.challenged, s.answered, s.byes), (5, 5, 5));
    uas.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reinvite_hold_is_answered_recvonly_and_resume_sendrecv() {
    if !sipp_available("reinvite") {
        return;
    }
    let uas = start_uas(uas::Options::default()).await;
    let target = uas.addr(Transport::Udp).expect("udp");
    let run = sipp("reinvite", "reinvite.xml", target, &["-m", "3", "-r", "10"]).await;
    check(&run, 3);
    assert_eq!(uas.stats().reinvites, 6);
    uas.stop();
}
