//! Both call paths, built from the public media API, allocate nothing per packet in
//! steady state, the Opus codec's internals included.
//!
//! caller → room: SRTP unprotect → RTP parse → `RtpReceiver::on_packet` → jitter push and
//! pop → PCMU decode (or concealment) → mixer push → Opus encode.
//! room → caller: 3 × Opus decode (or concealment) → mixer push, mix, `output_for` →
//! PCMU encode → RTP header write → SRTP protect.
//!
//! A counting global allocator (per thread, so tests running in parallel do not disturb
//! each other) measures every step of every frame after a warm-up. The measured run has
//! a reordered pair and a lost packet on the caller leg and a lost packet on one room
//! leg, so concealment is in steady state too.
//!
//! Opus steps are counted apart from the rest, so a failure says which side allocates:
//! our code or the codec (the pure-Rust `opus-rs` by default, libopus with the feature).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use dialin_media::codec::{
    new_decoder, new_encoder, CodecConfig, CodecKind, Decoder, Encoder, SampleRate,
};
use dialin_media::jitter::{JitterBuffer, JitterConfig, PacketInfo, Playout};
use dialin_media::mixer::{Mixer, ParticipantId};
use dialin_media::rtp::{Header, Packet, PayloadType, RtpTimestamp, SeqNo, Ssrc};
use dialin_media::srtp::{MasterKey, SrtpContext, SrtpProfile};
use dialin_media::stream::{RtpReceiver, SourcePolicy};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by `f` on this thread.
fn counted<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let before = ALLOCATIONS.with(Cell::get);
    let r = f();
    (r, ALLOCATIONS.with(Cell::get) - before)
}

const RATE: SampleRate = SampleRate::Hz8000;
const FRAME: Duration = Duration::from_millis(20);
const WARMUP: usize = 100;
const MEASURED: usize = 300;
const ROOM_SPEAKERS: usize = 3;
const CALLER: ParticipantId = ParticipantId(0);

/// A voiced signal with a moving pitch, different per talker, so the codecs take their
/// speech paths and the mixer selects real speakers.
fn speech(talker: usize, index: usize, out: &mut [i16]) {
    let hz = RATE.hz() as f32;
    let len = out.len();
    let tau = 2.0 * std::f32::consts::PI;
    for (i, s) in out.iter_mut().enumerate() {
        let t = (index * len + i) as f32 / hz;
        let f0 = 110.0 + 25.0 * talker as f32 + 30.0 * (tau * 0.4 * t).sin();
        let mut v = 0.0;
        for h in 1..10 {
            v += (tau * f0 * h as f32 * t).sin() / h as f32;
        }
        *s = ((2500.0 + 500.0 * talker as f32) * v) as i16;
    }
}

/// Caller-leg packets in arrival order: frame index and whether it is sent at all. The
/// pair around `reorder` arrives swapped and `lost` never arrives.
fn caller_arrivals(frames: usize, reorder: &[usize], lost: &[usize]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..frames).filter(|i| !lost.contains(i)).collect();
    for &r in reorder {
        if let Some(at) = order.iter().position(|&i| i == r) {
            if at + 1 < order.len() {
                order.swap(at, at + 1);
            }
        }
    }
    order
}

/// Allocation counts of the measured frames, per step.
#[derive(Debug, Default)]
struct Counts {
    /// caller → room without the Opus encoder, summed over all measured frames.
    caller_path: usize,
    /// Opus encode of the caller's frame, per frame.
    opus_encode: Vec<usize>,
    /// room → caller without the Opus decoders, summed over all measured frames.
    room_path: usize,
    /// Opus decode of received room frames, summed.
    opus_decode: usize,
    /// Opus concealment of lost room frames, per lost frame.
    opus_conceal: Vec<usize>,
    /// PCMU concealment frames seen on the caller leg (to prove the path ran).
    pcmu_concealed: usize,
}

fn run_call() -> Counts {
    let config = CodecConfig::default();
    let frame = RATE.frame_samples();
    let total = WARMUP + MEASURED;
    let t0 = Instant::now();
    let caller_addr = SocketAddr::from(([127, 0, 0, 1], 40_000));
    let key = MasterKey::new([0x11; 16], [0x22; 14]);
    let profile = SrtpProfile::AesCm128HmacSha1_80;

    // The caller's phone: PCMU over SRTP, prepared before the run.
    let mut phone_enc = new_encoder(CodecKind::Pcmu, RATE, &config).expect("pcmu encoder");
    let mut phone_srtp = SrtpContext::new(profile, &key);
    let mut pcm = vec![0i16; frame];
    let mut caller_wire: Vec<Vec<u8>> = Vec::with_capacity(total);
    for i in 0..total {
        speech(0, i, &mut pcm);
        let mut payload = [0u8; 160];
        let n = phone_enc.encode(&pcm, &mut payload).expect("pcmu encode");
        let seq = i as u16;
        let header = Header::new(
            PayloadType::PCMU,
            SeqNo(seq),
            RtpTimestamp(u32::from(seq) * 160),
            Ssrc(0xca11),
        );
        let mut buf = vec![0u8; 200];
        let len = header.write(&payload[..n], &mut buf).expect("rtp write");
        let len = phone_srtp.protect_rtp(&mut buf, len).expect("srtp protect");
        buf.truncate(len);
        caller_wire.push(buf);
    }
    let arrivals = caller_arrivals(
        total,
        &[WARMUP / 3, WARMUP + MEASURED / 3],
        &[WARMUP / 2, WARMUP + MEASURED / 2],
    );

    // The room: three talkers' Opus packets, prepared before the run.
    let mut room_packets: Vec<Vec<Vec<u8>>> = Vec::new();
    for talker in 1..=ROOM_SPEAKERS {
        let mut enc = new_encoder(CodecKind::Opus, RATE, &config).expect("opus encoder");
        let mut packets = Vec::with_capacity(total);
        for i in 0..total {
            speech(talker, i, &mut pcm);
            let mut out = vec![0u8; 1275];
            let n = enc.encode(&pcm, &mut out).expect("opus encode");
            out.truncate(n);
            packets.push(out);
        }
        room_packets.push(packets);
    }
    let room_lost =
        |talker: usize, i: usize| talker == 2 && (i == WARMUP / 2 || i == WARMUP + MEASURED / 2);

    // The gateway's state for this call, built at setup.
    let mut srtp_in = SrtpContext::new(profile, &key);
    let mut srtp_out = SrtpContext::new(profile, &key);
    let mut receiver = RtpReceiver::new(caller_addr, SourcePolicy::sdp_only(), 8000);
    let mut jitter = JitterBuffer::new(JitterConfig::default());
    let mut pcmu_dec = new_decoder(CodecKind::Pcmu, RATE, &config).expect("pcmu decoder");
    let mut opus_enc = new_encoder(CodecKind::Opus, RATE, &config).expect("opus encoder");
    let mut room_decs: Vec<Box<dyn Decoder>> = (0..ROOM_SPEAKERS)
        .map(|_| new_decoder(CodecKind::Opus, RATE, &config).expect("opus decoder"))
        .collect();
    let mut pcmu_enc: Box<dyn Encoder> =
        new_encoder(CodecKind::Pcmu, RATE, &config).expect("pcmu encoder");
    let mut mixer = Mixer::new(frame);
    for p in 0..=ROOM_SPEAKERS {
        mixer.add(ParticipantId(p as u32)).expect("add participant");
    }
    let mut datagram = [0u8; 1500];
    let mut caller_pcm = vec![0i16; frame * 6];
    let mut room_pcm = vec![0i16; frame * 6];
    let mut opus_out = [0u8; 1275];
    let mut pcmu_out = [0u8; 160];
    let mut egress = [0u8; 1500];

    let mut counts = Counts::default();
    let mut next_arrival = arrivals.iter().copied().peekable();
    for tick in 0..total {
        let now = t0 + FRAME * tick as u32;
        let measuring = tick >= WARMUP;

        // caller → room: every packet that arrived during this tick, then one playout.
        let mut caller_allocs = 0;
        while let Some(i) = next_arrival.next_if(|&i| i <= tick) {
            let wire = caller_wire.get(i).expect("prepared packet");
            let ((), n) = counted(|| {
                let buf = datagram.get_mut(..wire.len()).expect("datagram fits");
                buf.copy_from_slice(wire);
                let len = srtp_in
                    .unprotect_rtp(buf)
                    .expect("caller packet authenticates");
                let rtp = buf.get(..len).expect("rtp length");
                let packet = Packet::parse(rtp).expect("caller packet parses");
                if receiver.on_packet(caller_addr, &packet, now).is_ok() {
                    let info = PacketInfo {
                        ssrc: packet.ssrc().0,
                        seq: packet.seq().0,
                        timestamp: packet.timestamp().0,
                        marker: packet.marker(),
                    };
                    jitter.push(info, packet.payload(), now);
                }
            });
            caller_allocs += n;
        }
        let (decoded, n) = counted(|| {
            let samples = match jitter.pop(now) {
                Playout::Frame(f) => Some(
                    pcmu_dec
                        .decode(f.payload, &mut caller_pcm)
                        .expect("pcmu decode"),
                ),
                Playout::Missing => Some(
                    pcmu_dec
                        .conceal(&mut caller_pcm)
                        .map(|n| {
                            counts.pcmu_concealed += usize::from(measuring);
                            n
                        })
                        .expect("pcmu conceal"),
                ),
                Playout::Empty => None,
            };
            if let Some(samples) = samples {
                mixer
                    .push(CALLER, caller_pcm.get(..samples).expect("one frame"))
                    .expect("push caller");
            }
            samples
        });
        caller_allocs += n;
        let (_, opus_encode) = counted(|| {
            decoded.map(|samples| {
                opus_enc
                    .encode(caller_pcm.get(..samples).expect("one frame"), &mut opus_out)
                    .expect("opus encode")
            })
        });

        // room → caller.
        let mut opus_decode = 0;
        let mut room_allocs = 0;
        for (talker, dec) in room_decs.iter_mut().enumerate() {
            let lost = room_lost(talker + 1, tick);
            let (samples, n) = counted(|| {
                if lost {
                    dec.conceal(&mut room_pcm).expect("opus conceal")
                } else {
                    let packet = room_packets
                        .get(talker)
                        .and_then(|p| p.get(tick))
                        .expect("room packet");
                    dec.decode(packet, &mut room_pcm).expect("opus decode")
                }
            });
            if lost {
                if measuring {
                    counts.opus_conceal.push(n);
                }
            } else {
                opus_decode += n;
            }
            let ((), n) = counted(|| {
                let id = ParticipantId(talker as u32 + 1);
                mixer
                    .push(id, room_pcm.get(..samples).expect("one frame"))
                    .expect("push room talker");
            });
            room_allocs += n;
        }
        let (_, n) = counted(|| {
            mixer.mix();
            let heard = mixer.output_for(CALLER).expect("caller is in the mixer");
            let n = pcmu_enc.encode(heard, &mut pcmu_out).expect("pcmu encode");
            let seq = tick as u16;
            let header = Header::new(
                PayloadType::PCMU,
                SeqNo(seq),
                RtpTimestamp(u32::from(seq) * 160),
                Ssrc(0x6a7e),
            );
            let len = header
                .write(pcmu_out.get(..n).expect("payload"), &mut egress)
                .expect("rtp write");
            srtp_out
                .protect_rtp(&mut egress, len)
                .expect("srtp protect")
        });
        room_allocs += n;

        if measuring {
            counts.caller_path += caller_allocs;
            if decoded.is_some() {
                counts.opus_encode.push(opus_encode);
            }
            counts.room_path += room_allocs;
            counts.opus_decode += opus_decode;
        }
    }
    assert!(receiver.stats().received() > 0);
    counts
}

#[test]
fn caller_to_room_path_allocates_nothing_per_packet() {
    let c = run_call();
    assert!(
        c.pcmu_concealed > 0,
        "the lost caller packet was concealed in the measured run"
    );
    assert_eq!(c.caller_path, 0, "caller → room allocates: {c:?}");
}

#[test]
fn room_to_caller_path_allocates_nothing_per_frame() {
    let c = run_call();
    assert_eq!(c.room_path, 0, "room → caller allocates: {c:?}");
    assert_eq!(c.opus_decode, 0, "Opus decode allocates: {c:?}");
}

#[test]
fn opus_encode_and_concealment_allocate_nothing() {
    let c = run_call();
    assert_eq!(
        c.opus_encode.len(),
        MEASURED,
        "one encode per measured frame"
    );
    assert!(
        c.opus_encode.iter().all(|&n| n == 0),
        "Opus encode allocates: {:?}",
        c.opus_encode
    );
    assert_eq!(
        c.opus_conceal.len(),
        1,
        "one lost room frame in the measured run"
    );
    assert!(
        c.opus_conceal.iter().all(|&n| n == 0),
        "Opus concealment allocates: {:?}",
        c.opus_conceal
    );
}
