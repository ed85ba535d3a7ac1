//! Connection exhaustion, attacked for real on loopback: the trunk is 127.0.0.1, the attacker
//! 127.0.0.2. The attacker keeps 2,000 TCP connections to the SIP port going, half idle and
//! half trickling a request one byte every half second, re-opening each as soon as it is
//! closed. Meanwhile a caller over TCP and one over UDP from the trunk key their PINs and
//! join, and `/healthz` answers. When the attack stops, the attacker holds no connection.

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::caller::{Caller, Codec, DialOptions, DtmfMode, SipTransport};
use support::gateway::{Gateway, GatewayOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

const PIN: &str = "5820193746";
const SECOND: Duration = Duration::from_secs(1);
const ATTACK_CONNECTIONS: usize = 2000;

const TRUNK: &str = r#"
[[trunk]]
id = "carrier"
allowed_addresses = ["127.0.0.1/32"]
pin_namespace = "default"
pin_length = 10
max_calls = 10
"#;

/// One attacker connection slot: connect from 127.0.0.2, hold the connection (idle, or
/// trickling), and start again one second after the gateway closes it.
async fn hold_connections(
    target: SocketAddr,
    trickle: bool,
    stop: Arc<AtomicBool>,
    opened: Arc<AtomicU64>,
) {
    let request = b"OPTIONS sip:gw@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.2;branch=z9hG4bK1\r\n";
    while !stop.load(Ordering::Relaxed) {
        let Ok(socket) = TcpSocket::new_v4() else {
            tokio::time::sleep(SECOND).await;
            continue;
        };
        if socket.bind((Ipv4Addr::new(127, 0, 0, 2), 0).into()).is_err() {
            tokio::time::sleep(SECOND).await;
            continue;
        }
        if let Ok(mut stream) = socket.connect(target).await {
            opened.fetch_add(1, Ordering::Relaxed);
            let mut buf = [0u8; 512];
            let mut i = 0;
            // Held until the gateway closes it, even once the attack stops re-connecting.
            loop {
                if trickle {
                    let byte = request[i % request.len()..][..1].to_vec();
                    i += 1;
                    if stream.write_all(&byte).await.is_err() {
                        break;
                    }
                }
                // Closed by the gateway (read returns 0 or an error) ends this connection.
                match tokio::time::timeout(Duration::from_millis(500), stream.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => break,
                    _ => {}
                }
            }
        }
        tokio::time::sleep(SECOND).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_idle_and_trickling_connections_do_not_keep_callers_out() {
    // The attacker's 2,000 sockets need more than the usual 1,024 descriptors.
    let limit = dialin::ops::fd::raise_open_file_limit().unwrap_or(0);
    let needed = 2 * ATTACK_CONNECTIONS as u64 + 512;
    assert!(
        limit >= needed,
        "this test needs an open-file limit of {needed} (ulimit -Hn is {limit}; .ci/run raises it)"
    );
    let gw = Gateway::start(GatewayOptions {
        trunks: Some(TRUNK.to_owned()),
        ..GatewayOptions::default()
    })
    .await;
    gw.create_pin("board", Some(PIN)).await;

    let stop = Arc::new(AtomicBool::new(false));
    let opened = Arc::new(AtomicU64::new(0));
    let mut slots = Vec::new();
    for i in 0..ATTACK_CONNECTIONS {
        slots.push(tokio::spawn(hold_connections(
            gw.sip,
            i % 2 == 1,
            stop.clone(),
            opened.clone(),
        )));
    }
    // The attack is in full swing: every slot has connected at least once.
    let t = Instant::now();
    while opened.load(Ordering::Relaxed) < ATTACK_CONNECTIONS as u64 {
        assert!(t.elapsed() < 60 * SECOND, "the attacker could not connect");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The admin API answers.
    let health = reqwest::get(format!("http://{}/healthz", gw.admin))
        .await
        .expect("GET /healthz during the attack");
    assert_eq!(health.status(), 200);

    // A caller over TCP and one over UDP, from the trunk, join the room.
    for (transport, from) in [(SipTransport::Tcp, "+33622220001"), (SipTransport::Udp, "+33622220002")] {
        let call = Caller::dial(DialOptions {
            transport,
            from_user: from.to_owned(),
            codecs: vec![Codec::Pcmu],
            ..DialOptions::new(gw.sip)
        })
        .await
        .unwrap_or_else(|e| panic!("the {transport:?} caller is answered during the attack: {e}"));
        call.play_silence();
        assert!(call.wait_for_packets(10, 5 * SECOND).await);
        let before = gw.wait_for_calls_in("in_room", 0, SECOND).await.len();
        call.send_dtmf(&format!("{PIN}#"), DtmfMode::Rfc4733)
            .await
            .expect("digits sent");
        let in_room = gw.wait_for_calls_in("in_room", before + 1, 10 * SECOND).await;
        assert_eq!(in_room.len(), before + 1, "the {transport:?} caller joins during the attack");
    }

    let mut refused = 0.0;
    for reason in ["per_source", "untrusted", "limit"] {
        refused += gw
            .metric(&format!("dialin_sip_connections_refused_total{{reason=\"{reason}\"}}"))
            .await
            .unwrap_or(0.0);
    }
    assert!(
        refused >= 1000.0,
        "connections over the caps are refused at once ({refused})"
    );

    // The attack stops opening connections but holds on to those it has: within the message
    // deadline (10 s) the gateway has closed every one of them.
    stop.store(true, Ordering::Relaxed);
    let t = Instant::now();
    loop {
        let open = gw.metric("dialin_sip_connections_open").await.unwrap_or(f64::MAX);
        if open <= 1.0 {
            break; // at most the TCP caller's own connection
        }
        assert!(t.elapsed() < 30 * SECOND, "{open} connections still open after the attack");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for s in slots {
        s.abort();
    }
    let logs = gw.logs();
    let refusal_lines = logs.lines().filter(|l| l.contains("refused") && l.contains("connections")).count();
    assert!(
        refusal_lines < 100,
        "refused connections are summarised, not logged one by one ({refusal_lines} lines)"
    );
}
