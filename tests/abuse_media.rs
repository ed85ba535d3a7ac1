//! Off-path media injection ("RTP Bleed"), attacked for real on loopback: the trunk is
//! 127.0.0.1, the attacker 127.0.0.2. The attacker sprays well-formed RTP over the gateway's
//! whole RTP port range before and during a call between two callers of one room. The
//! callers must still hear each other, the attacker must receive nothing, and every sprayed
//! datagram that reached a call's port must be dropped and counted.

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::caller::{Call, Caller, Codec, DialOptions, DtmfMode};
use support::gateway::{Gateway, GatewayOptions};
use support::tone;
use tokio::net::UdpSocket;

const PIN: &str = "7305182946";
const SECOND: Duration = Duration::from_secs(1);

/// A trunk of one address: 127.0.0.2 is a stranger.
const TRUNK: &str = r#"
[[trunk]]
id = "carrier"
allowed_addresses = ["127.0.0.1/32"]
pin_namespace = "default"
pin_length = 10
max_calls = 10
"#;

/// Sprays RTP from 127.0.0.2 over `ports`, one packet per port every few milliseconds, and
/// counts what comes back to it.
struct Sprayer {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    received: Arc<AtomicU64>,
}

impl Sprayer {
    async fn start(ports: (u16, u16)) -> Sprayer {
        // Linux routes all of 127.0.0.0/8 to the loopback interface.
        let socket = Arc::new(
            UdpSocket::bind((Ipv4Addr::new(127, 0, 0, 2), 0))
                .await
                .expect("bind a second loopback address, 127.0.0.2"),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let received = Arc::new(AtomicU64::new(0));
        let (s, n, r) = (stop.clone(), sent.clone(), received.clone());
        let tx = socket.clone();
        tokio::spawn(async move {
            let mut seq: u16 = 0;
            // A loud 3 kHz PCMU payload under a fresh SSRC, as an injector would send.
            let mut packet = vec![0x80, 0x00, 0, 0, 0, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef];
            packet.extend((0..160).map(|i| if i % 8 < 4 { 0x80u8 } else { 0x00 }));
            while !s.load(Ordering::Relaxed) {
                for port in ports.0..=ports.1 {
                    packet[2..4].copy_from_slice(&seq.to_be_bytes());
                    let ts = u32::from(seq) * 160;
                    packet[4..8].copy_from_slice(&ts.to_be_bytes());
                    let to = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
                    if tx.send_to(&packet, to).await.is_ok() {
                        n.fetch_add(1, Ordering::Relaxed);
                    }
                }
                seq = seq.wrapping_add(1);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            while let Ok((_, _)) = socket.recv_from(&mut buf).await {
                r.fetch_add(1, Ordering::Relaxed);
            }
        });
        Sprayer {
            stop,
            sent,
            received,
        }
    }
}

impl Drop for Sprayer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

async fn join(gw: &Gateway, from: &str) -> Call {
    let call = Caller::dial(DialOptions {
        from_user: from.to_owned(),
        codecs: vec![Codec::Pcmu],
        ..DialOptions::new(gw.sip)
    })
    .await
    .expect("the gateway answers the trunk's call");
    call.play_silence();
    assert!(call.wait_for_packets(10, 5 * SECOND).await, "the caller hears the prompt");
    let before = gw.calls().await.len();
    call.send_dtmf(&format!("{PIN}#"), DtmfMode::Rfc4733)
        .await
        .expect("digits sent");
    let in_room = gw.wait_for_calls_in("in_room", before, 10 * SECOND).await;
    assert!(in_room.len() >= before, "the call joins: {in_room:?}");
    call
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_off_path_rtp_sprayer_neither_hears_nor_disturbs_a_call() {
    let gw = Gateway::start(GatewayOptions {
        trunks: Some(TRUNK.to_owned()),
        ..GatewayOptions::default()
    })
    .await;
    gw.create_pin("board", Some(PIN)).await;
    let sprayer = Sprayer::start(gw.rtp_ports).await;
    // The spray is under way before the first call exists.
    let t = Instant::now();
    while sprayer.sent.load(Ordering::Relaxed) < 2000 {
        assert!(t.elapsed() < 10 * SECOND, "the sprayer sends");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let a = join(&gw, "+33611110001").await;
    let b = join(&gw, "+33611110002").await;
    a.play_tone(440.0, -12.0);
    b.play_tone(1000.0, -12.0);
    // Wait for each to hear the other's tone, then judge two seconds of it.
    for (who, call, hz) in [("A", &a, 1000.0), ("B", &b, 440.0)] {
        let end = Instant::now() + 15 * SECOND;
        loop {
            let recent = call.recorded(Instant::now() - SECOND);
            if tone::goertzel_level(&recent, call.sample_rate(), hz) > -30.0 {
                break;
            }
            assert!(Instant::now() < end, "{who} never hears the other caller's {hz} Hz");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let from = Instant::now();
    let sent_before = sprayer.sent.load(Ordering::Relaxed);
    while sprayer.sent.load(Ordering::Relaxed) < sent_before + 2000 || from.elapsed() < 2 * SECOND
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (who, call, hz) in [("A", &a, 1000.0), ("B", &b, 440.0)] {
        let heard = call.recorded(from);
        let f = tone::dominant_frequency(&heard, call.sample_rate());
        assert!(
            (f - hz).abs() <= 10.0,
            "{who} hears the other caller ({hz} Hz), not the sprayer: measured {f} Hz"
        );
        let frames = call.recorded_chunks(from);
        let quiet = frames.iter().filter(|(_, c)| tone::rms_dbfs(c) < -30.0).count();
        assert!(
            frames.len() >= 80 && quiet * 20 <= frames.len(),
            "{who} hears without gaps: {quiet} quiet frames of {}",
            frames.len()
        );
    }
    assert_eq!(
        sprayer.received.load(Ordering::Relaxed),
        0,
        "the attacker received media"
    );
    let foreign = gw
        .metric("dialin_rtp_foreign_packets_total")
        .await
        .unwrap_or(0.0);
    assert!(foreign > 0.0, "sprayed packets are counted as foreign");
    drop(sprayer);
    a.hangup().await.unwrap();
    b.hangup().await.unwrap();
}
