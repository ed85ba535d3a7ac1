//! Two gateways on one PostgreSQL behind Kamailio's dispatcher (Debian `kamailio`), as a
//! carrier-facing deployment runs them: Kamailio probes both with OPTIONS, spreads INVITEs
//! round-robin, record-routes, and fails over on `503`. Calls are spread over both nodes; a
//! PIN created through node A's API admits a caller routed to node B; callers of one PIN on
//! the two nodes meet in the same LiveKit room (the in-tree test server); SIGTERM on node A
//! (draining: its OPTIONS answer 503) sends every new call to B with no failed call.
//! Without `kamailio` on the machine the test skips, unless `DIALIN_STRICT_TESTS=1`.

mod ops_support;
mod support;

use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dialin_lkserver::TestServer;
use ops_support::{free_udp_port, Gateway, GatewayOptions, PgServer, TempDir};
use support::caller::{Call, Caller, DialOptions, DtmfMode};

const KEY: &str = "devkey";
const SECRET: &str = "kamailio-test-secret-of-32-bytes!!";
const PIN: &str = "975310";

struct Kamailio {
    child: Child,
    _dir: TempDir,
    addr: std::net::SocketAddr,
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        // Kamailio forks its workers: the whole process group goes, not only the main one.
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill(2) on our own child's process group; no memory is involved.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn kamailio_binary() -> Option<&'static str> {
    ["/usr/sbin/kamailio", "/usr/local/sbin/kamailio"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
}

fn module_dir() -> Option<String> {
    let out = Command::new("sh")
        .args(["-c", "ls -d /usr/lib/*/kamailio/modules /usr/lib/kamailio/modules 2>/dev/null | head -n 1"])
        .output()
        .ok()?;
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (!dir.is_empty()).then_some(dir)
}

/// Kamailio on a free loopback port, dispatching to `nodes` (set 1, round-robin).
fn start_kamailio(bin: &str, nodes: &[std::net::SocketAddr]) -> Kamailio {
    let dir = TempDir::new("kamailio");
    let port = free_udp_port();
    let list: String = nodes
        .iter()
        .map(|a| format!("1 sip:{a} 0 0\n"))
        .collect();
    std::fs::write(dir.path().join("dispatcher.list"), list).unwrap();
    let cfg = format!(
        r#"#!KAMAILIO
debug=2
log_stderror=yes
children=2
listen=udp:127.0.0.1:{port}
mpath="{mpath}/"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "pv.so"
loadmodule "xlog.so"
loadmodule "dispatcher.so"
modparam("dispatcher", "list_file", "{list}")
modparam("dispatcher", "ds_ping_interval", 1)
modparam("dispatcher", "ds_probing_mode", 1)
modparam("dispatcher", "ds_probing_threshold", 1)
modparam("dispatcher", "ds_inactive_threshold", 1)
modparam("dispatcher", "ds_ping_from", "sip:kamailio@127.0.0.1")
modparam("dispatcher", "flags", 2)
modparam("tm", "fr_timer", 5000)

request_route {{
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
    if (has_totag()) {{
        if (loose_route()) {{ t_relay(); exit; }}
        if (is_method("ACK")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
        sl_send_reply("404", "Not here"); exit;
    }}
    if (is_method("CANCEL")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
    t_check_trans();
    if (is_method("INVITE")) {{
        record_route();
        if (!ds_select_dst("1", "4")) {{ sl_send_reply("503", "No gateway"); exit; }}
        xlog("L_INFO", "dispatch $ci to $du\n");
        t_on_failure("NEXT_NODE");
        t_relay();
        exit;
    }}
    sl_send_reply("405", "Method Not Allowed");
}}

failure_route[NEXT_NODE] {{
    if (t_is_canceled()) {{ exit; }}
    if (t_check_status("503") || (t_branch_timeout() && !t_branch_replied())) {{
        ds_mark_dst("ip");
        if (ds_next_dst()) {{
            xlog("L_INFO", "fail over $ci to $du\n");
            t_on_failure("NEXT_NODE");
            t_relay();
        }}
    }}
}}
"#,
        mpath = module_dir().expect("kamailio modules"),
        list = dir.path().join("dispatcher.list").display(),
    );
    let cfg_path = dir.path().join("kamailio.cfg");
    std::fs::write(&cfg_path, cfg).unwrap();
    let log = std::fs::File::create(dir.path().join("kamailio.log")).unwrap();
    let child = Command::new(bin)
        .arg("-f")
        .arg(&cfg_path)
        .args(["-DD", "-E", "-m", "64", "-M", "8"])
        .arg("-Y")
        .arg(dir.path())
        .arg("-P")
        .arg(dir.path().join("kamailio.pid"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .process_group(0)
        .spawn()
        .expect("start kamailio");
    Kamailio {
        child,
        _dir: dir,
        addr: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
    }
}

/// Calls on `gw` so far, all outcomes.
async fn calls_seen(gw: &Gateway) -> f64 {
    let (_, text) = gw.get("/metrics").await.unwrap_or_default();
    let ended: f64 = text
        .lines()
        .filter(|l| l.starts_with("dialin_calls_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    ended + gw.active_calls().await.unwrap_or(0) as f64
}

/// A call through Kamailio that keys the PIN and waits until one of `nodes` has it in a room.
async fn join_via(kamailio: &Kamailio, from: &str, nodes: [&Gateway; 2]) -> Call {
    let call = Caller::dial(DialOptions {
        from_user: from.to_owned(),
        ..DialOptions::new(kamailio.addr)
    })
    .await
    .expect("the call through Kamailio is answered");
    call.play_silence();
    assert!(call.wait_for_packets(5, Duration::from_secs(5)).await, "the prompt plays");
    call.send_dtmf(&format!("{PIN}#"), DtmfMode::Rfc4733)
        .await
        .expect("keys sent");
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        for gw in nodes {
            if let Some((200, body)) = gw.get("/v1/calls").await {
                if body.contains("in_room") && body.contains(&from[from.len() - 4..]) {
                    return call;
                }
            }
        }
        assert!(Instant::now() < end, "the caller {from} never joined");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_behind_kamailio_share_pins_and_rooms_and_drain_without_failed_calls() {
    let Some(bin) = kamailio_binary() else {
        support::sipp::skip_or_fail("kamailio is not installed (apt-get install kamailio)");
        return;
    };
    let Some(pg) = PgServer::start() else { return };
    let lk = TestServer::start(KEY, SECRET).await.expect("LiveKit test server");
    let rooms = format!(
        "[rooms]\nbackend = \"livekit\"\n\n[livekit]\nurl = \"{}\"\napi_key = \"{KEY}\"\napi_secret = \"{SECRET}\"",
        lk.url()
    );
    let options = GatewayOptions {
        store_url: Some(pg.url()),
        trunk_addresses: vec!["127.0.0.1/32".to_owned()],
        rooms: Some(rooms),
        drain_timeout_s: 120,
        ..GatewayOptions::default()
    };
    let mut a = Gateway::start(options.clone()).await;
    let b = Gateway::start(options).await;
    let kamailio = start_kamailio(bin, &[a.sip, b.sip]);

    // A PIN made through node A's API.
    a.create_pin("board", PIN).await;

    // Two callers of that PIN: round-robin puts one on each node; both are in one LiveKit room.
    let first = join_via(&kamailio, "+33600000001", [&a, &b]).await;
    let second = join_via(&kamailio, "+33600000002", [&a, &b]).await;
    assert_eq!(a.active_calls().await, Some(1), "node A has one call");
    assert_eq!(b.active_calls().await, Some(1), "node B has one call: A's PIN admitted it");
    // Each node also has its hidden listener of the room: the two callers are on different
    // nodes, so each hears the other through LiveKit.
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let participants = lk.participants("board").await.unwrap();
        let sip = participants
            .iter()
            .filter(|p| p.identity.starts_with("sip_") && !p.hidden)
            .count();
        let listeners = participants.iter().filter(|p| p.hidden).count();
        if sip == 2 && listeners == 2 {
            break;
        }
        assert!(
            Instant::now() < end,
            "the two callers meet in one LiveKit room ({sip} there, {listeners} listeners)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Node A drains: its OPTIONS say 503, and every new call goes to B, none fails.
    let a_before = calls_seen(&a).await;
    let b_before = calls_seen(&b).await;
    a.signal("TERM");
    assert!(a.wait_readyz(503, Duration::from_secs(10)).await, "node A is draining");
    let mut new_calls = Vec::new();
    for n in 0..4 {
        let call = Caller::dial(DialOptions {
            from_user: format!("+3361000000{n}"),
            ..DialOptions::new(kamailio.addr)
        })
        .await
        .unwrap_or_else(|e| panic!("call {n} during the drain failed: {e}"));
        new_calls.push(call);
    }
    assert_eq!(calls_seen(&a).await, a_before, "no new call reached the draining node");
    assert_eq!(calls_seen(&b).await, b_before + 4.0, "node B took every new call");
    // The calls in progress on A go on while it drains.
    assert!(!first.bye_received() && !second.bye_received());
    for c in new_calls.iter().chain([&first, &second]) {
        c.hangup().await.ok();
    }
    let _ = a.wait_exit(Duration::from_secs(20)).await;
}
