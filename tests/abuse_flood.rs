//! Floods and scanners (DESIGN.md §Privacy and security defaults: "Sources matching no
//! trunk are refused before any work is done"), against the real `dialin serve` binary.
//!
//! A scanner on a loopback address that no trunk allows sends a burst of INVITEs; it must
//! get at most `[security.unmatched_source] burst` stateless `403`s and then silence, never
//! a `100 Trying`, and the gateway must hold no call for it.

mod ops_support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use ops_support::{Gateway, GatewayOptions};
use tokio::net::UdpSocket;

fn invite(gw: SocketAddr, from: SocketAddr, i: usize) -> String {
    let sdp = "v=0\r\no=scan 1 1 IN IP4 127.0.0.9\r\ns=-\r\nc=IN IP4 127.0.0.9\r\nt=0 0\r\n\
               m=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
    format!(
        "INVITE sip:100@{gw} SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bKscan{i};rport\r\n\
         From: <sip:scanner@{from}>;tag=s{i}\r\nTo: <sip:100@{gw}>\r\nCall-ID: scan-{i}@{from}\r\n\
         CSeq: 1 INVITE\r\nContact: <sip:scanner@{from}>\r\nMax-Forwards: 70\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
}

fn options(gw: SocketAddr, from: SocketAddr) -> String {
    format!(
        "OPTIONS sip:{gw} SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bKopt1;rport\r\n\
         From: <sip:probe@{from}>;tag=o1\r\nTo: <sip:{gw}>\r\nCall-ID: opt-1@{from}\r\n\
         CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

/// Status codes of every response received until `quiet` passes without one.
async fn collect_statuses(sock: &UdpSocket, quiet: Duration) -> Vec<u16> {
    let mut buf = vec![0u8; 65_536];
    let mut out = Vec::new();
    while let Ok(Ok(n)) = tokio::time::timeout(quiet, sock.recv(&mut buf)).await {
        let text = String::from_utf8_lossy(buf.get(..n).unwrap_or_default());
        if let Some(code) = text
            .strip_prefix("SIP/2.0 ")
            .and_then(|r| r.get(..3))
            .and_then(|c| c.parse().ok())
        {
            out.push(code);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invite_burst_from_unmatched_source_gets_at_most_burst_403s_then_silence() {
    const BURST: u32 = 5;
    const SENT: usize = 200;
    let gw = Gateway::start(GatewayOptions {
        trunk_addresses: vec!["127.0.0.1/32".to_owned()],
        unmatched_burst: BURST,
        unmatched_per_second: 1,
        ..GatewayOptions::default()
    })
    .await;

    // 127.0.0.9 is loopback but outside the trunk's 127.0.0.1/32.
    let scanner = UdpSocket::bind("127.0.0.9:0")
        .await
        .expect("bind 127.0.0.9");
    scanner.connect(gw.sip).await.unwrap();
    let from = scanner.local_addr().unwrap();
    let started = std::time::Instant::now();
    for i in 0..SENT {
        scanner
            .send(invite(gw.sip, from, i).as_bytes())
            .await
            .unwrap();
        if i % 20 == 19 {
            // Paced so that the kernel's socket buffer, not the gateway, is not what drops.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let statuses = collect_statuses(&scanner, Duration::from_secs(2)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let mut by_code: HashMap<u16, usize> = HashMap::new();
    for s in &statuses {
        *by_code.entry(*s).or_default() += 1;
    }
    eprintln!("{SENT} INVITEs from an unmatched source in {elapsed:.2} s: responses {by_code:?}");

    assert!(
        !statuses.contains(&100),
        "no 100 Trying for an unmatched source: {by_code:?}"
    );
    assert!(statuses.iter().all(|s| *s == 403), "only 403s: {by_code:?}");
    // The bucket refills at 1/s while the test runs: allow those extra tokens.
    let allowed = BURST as usize + elapsed.ceil() as usize + 2;
    assert!(
        !statuses.is_empty(),
        "the first INVITEs are refused with 403"
    );
    assert!(
        statuses.len() <= allowed,
        "{} answers, at most {allowed} expected",
        statuses.len()
    );

    let dropped = gw
        .metric("dialin_unmatched_source_dropped_total")
        .await
        .expect("the drop counter");
    // Every INVITE the gateway read was either answered 403 or dropped and counted (a
    // datagram lost in the kernel's buffer under load never reaches either).
    eprintln!("dropped and counted: {dropped}");
    assert!(
        dropped as usize + statuses.len() >= SENT * 9 / 10,
        "dropped {dropped}, sent {SENT}, answered {}",
        statuses.len()
    );
    assert_eq!(
        gw.active_calls().await,
        Some(0),
        "no call state for the scanner"
    );
    // Every INVITE read is counted as received, refused or dropped alike (none of them
    // reached the SIP front: no call state above).
    let counted = gw
        .metric("dialin_sip_requests_total{method=\"INVITE\"}")
        .await
        .unwrap_or(0.0);
    assert!(
        counted >= dropped + statuses.len() as f64,
        "{counted} INVITEs counted, {dropped} dropped and {} answered",
        statuses.len()
    );

    // The trunk's own address is untouched by the scanner's bucket.
    let trunk = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    trunk.connect(gw.sip).await.unwrap();
    let trunk_addr = trunk.local_addr().unwrap();
    trunk
        .send(options(gw.sip, trunk_addr).as_bytes())
        .await
        .unwrap();
    assert_eq!(
        collect_statuses(&trunk, Duration::from_secs(2)).await,
        vec![200],
        "the trunk still gets answers"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmatched_source_is_answered_again_after_its_bucket_refills() {
    let gw = Gateway::start(GatewayOptions {
        unmatched_burst: 2,
        unmatched_per_second: 1,
        ..GatewayOptions::default()
    })
    .await;
    let scanner = UdpSocket::bind("127.0.0.10:0")
        .await
        .expect("bind 127.0.0.10");
    scanner.connect(gw.sip).await.unwrap();
    let from = scanner.local_addr().unwrap();
    for i in 0..10 {
        scanner
            .send(invite(gw.sip, from, i).as_bytes())
            .await
            .unwrap();
    }
    let first = collect_statuses(&scanner, Duration::from_millis(500)).await;
    assert!(
        !first.is_empty() && first.len() <= 3,
        "burst of 2 (+1 refilled): {first:?}"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    scanner
        .send(invite(gw.sip, from, 100).as_bytes())
        .await
        .unwrap();
    assert_eq!(
        collect_statuses(&scanner, Duration::from_millis(500)).await,
        vec![403]
    );
}
