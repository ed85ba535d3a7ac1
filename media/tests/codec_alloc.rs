//! Steady-state encode and decode allocate nothing: a counting global allocator
//! watches one 20 ms frame at a time after a warm-up.

use dialin_media::codec::{new_decoder, new_encoder, CodecConfig, CodecKind, SampleRate};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// Counts allocations made by the current thread, so tests running in parallel on
/// other threads do not disturb the count.
struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
    static BYTES: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        BYTES.with(|c| c.set(c.get() + layout.size()));
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        BYTES.with(|c| c.set(c.get() + new_size));
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn counted<R>(f: impl FnOnce() -> R) -> (R, usize, usize) {
    let a0 = ALLOCATIONS.with(Cell::get);
    let b0 = BYTES.with(Cell::get);
    let r = f();
    (
        r,
        ALLOCATIONS.with(Cell::get) - a0,
        BYTES.with(Cell::get) - b0,
    )
}

/// A voiced signal with a moving pitch so the encoders take their speech paths.
fn speech_frame(rate: SampleRate, index: usize, out: &mut [i16]) {
    let hz = rate.hz() as f32;
    let len = out.len();
    for (i, s) in out.iter_mut().enumerate() {
        let t = (index * len + i) as f32 / hz;
        let f0 = 130.0 + 40.0 * (2.0 * std::f32::consts::PI * 0.5 * t).sin();
        let mut v = 0.0;
        for h in 1..12 {
            v += (2.0 * std::f32::consts::PI * f0 * h as f32 * t).sin() / h as f32;
        }
        *s = (4000.0 * v) as i16;
    }
}

/// Allocations (count, bytes) counted after the warm-up.
#[derive(Debug, Default)]
struct Counts {
    /// Per encoded frame, averaged over the measured frames.
    encode: (usize, usize),
    /// Total over all decoded (received) frames of the measured run.
    decode_total: (usize, usize),
    /// For the one concealed frame of the measured run.
    conceal: (usize, usize),
}

/// Runs `warmup` frames then `measured` frames of encode and decode, one of them
/// lost and concealed (and one concealed during warm-up, so first-use buffer growth
/// is not counted).
fn steady_state(kind: CodecKind, rate: SampleRate) -> Counts {
    let config = CodecConfig::default();
    let mut enc = new_encoder(kind, rate, &config).expect("encoder");
    let mut dec = new_decoder(kind, rate, &config).expect("decoder");
    let frame = rate.frame_samples();
    let mut pcm = vec![0i16; frame];
    let mut out = vec![0i16; frame * 6];
    let mut payload = vec![0u8; 1500];
    let warmup = 50;
    let measured = 100;
    let lost = |i: usize| i == warmup / 2 || i == warmup + measured / 2;
    let mut counts = Counts::default();
    let mut enc_total = (0, 0);
    for i in 0..warmup + measured {
        speech_frame(rate, i, &mut pcm);
        let (n, a, b) = counted(|| enc.encode(&pcm, &mut payload).expect("encode"));
        let ((), da, db) = counted(|| {
            if lost(i) {
                dec.conceal(&mut out).expect("conceal");
            } else {
                dec.decode(&payload[..n], &mut out).expect("decode");
            }
        });
        if i < warmup {
            continue;
        }
        enc_total = (enc_total.0 + a, enc_total.1 + b);
        if lost(i) {
            counts.conceal = (da, db);
        } else {
            counts.decode_total = (counts.decode_total.0 + da, counts.decode_total.1 + db);
        }
    }
    counts.encode = (enc_total.0 / measured, enc_total.1 / measured);
    counts
}

fn assert_no_allocation(kind: CodecKind, rate: SampleRate) {
    let c = steady_state(kind, rate);
    println!("{kind} @{} Hz: {c:?}", rate.hz());
    assert_eq!(c.encode, (0, 0), "{kind}: encode allocates per frame");
    assert_eq!(c.decode_total, (0, 0), "{kind}: decode allocates");
    assert_eq!(c.conceal, (0, 0), "{kind}: concealment allocates");
}

#[test]
fn pcmu_encode_and_decode_allocate_nothing_per_frame() {
    assert_no_allocation(CodecKind::Pcmu, SampleRate::Hz8000);
}

#[test]
fn pcma_encode_and_decode_allocate_nothing_per_frame() {
    assert_no_allocation(CodecKind::Pcma, SampleRate::Hz8000);
}

#[test]
fn g722_encode_and_decode_allocate_nothing_per_frame() {
    assert_no_allocation(CodecKind::G722, SampleRate::Hz16000);
}

#[test]
fn opus_encode_and_decode_allocate_nothing_per_frame() {
    assert_no_allocation(CodecKind::Opus, SampleRate::Hz8000);
    assert_no_allocation(CodecKind::Opus, SampleRate::Hz16000);
}
