//! Per-packet costs on the SIP-side media path: RTP parse and write of a 20 ms PCMU packet
//! (160 octets of payload), and SRTP protect + unprotect of the same packet.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use dialin_media::rtp::{Header, Packet, PayloadType, RtpTimestamp, SeqNo, Ssrc};
use dialin_media::srtp::{MasterKey, SrtpContext, SrtpProfile};

fn pcmu_header(seq: u16) -> Header<'static> {
    Header::new(
        PayloadType::PCMU,
        SeqNo(seq),
        RtpTimestamp(u32::from(seq) * 160),
        Ssrc(0x1234_5678),
    )
}

fn bench(c: &mut Criterion) {
    let payload = [0xd5u8; 160];
    let mut pkt = [0u8; 172];
    let n = pcmu_header(1).write(&payload, &mut pkt).unwrap();

    c.bench_function("rtp_parse_pcmu_160", |b| {
        b.iter(|| {
            let p = Packet::parse(black_box(&pkt[..n])).unwrap();
            black_box((p.seq(), p.timestamp(), p.ssrc(), p.payload().len()))
        })
    });

    let mut out = [0u8; 1500];
    let mut seq = 0u16;
    c.bench_function("rtp_write_pcmu_160", |b| {
        b.iter(|| {
            seq = seq.wrapping_add(1);
            black_box(
                pcmu_header(seq)
                    .write(black_box(&payload), &mut out)
                    .unwrap(),
            )
        })
    });

    for profile in [
        SrtpProfile::AesCm128HmacSha1_80,
        SrtpProfile::AesCm128HmacSha1_32,
    ] {
        let key = MasterKey::random();
        let mut tx = SrtpContext::new(profile, &key);
        let mut rx = SrtpContext::new(profile, &key);
        let mut buf = [0u8; 1500];
        let mut seq = 0u16;
        c.bench_function(
            &format!("srtp_protect_unprotect_pcmu_160_{}", profile.sdes_name()),
            |b| {
                b.iter(|| {
                    seq = seq.wrapping_add(1);
                    let n = pcmu_header(seq).write(&payload, &mut buf).unwrap();
                    let m = tx.protect_rtp(&mut buf, n).unwrap();
                    black_box(rx.unprotect_rtp(&mut buf[..m]).unwrap())
                })
            },
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
