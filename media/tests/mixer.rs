//! The conference mixer as a room sees it: who hears whom, levels, speaker selection.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use dialin_media::mixer::{Mixer, MixerError, ParticipantId, DEFAULT_MAX_SPEAKERS};

/// Counts this thread's allocations, to prove the steady state allocates nothing.
struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|a| a.set(a.get() + 1));
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

const NB: usize = 160; // 20 ms at 8 kHz
const WB: usize = 320; // 20 ms at 16 kHz

fn id(n: u32) -> ParticipantId {
    ParticipantId(n)
}

fn constant(value: i16, len: usize) -> Vec<i16> {
    vec![value; len]
}

fn mixer_with(frame_len: usize, ids: &[u32]) -> Mixer {
    let mut mixer = Mixer::new(frame_len);
    for &n in ids {
        mixer.add(id(n)).unwrap();
    }
    mixer
}

fn heard(mixer: &Mixer, n: u32) -> Vec<i16> {
    mixer.output_for(id(n)).unwrap().to_vec()
}

#[test]
fn each_participant_hears_everyone_but_themselves() {
    for len in [NB, WB] {
        let mut mixer = mixer_with(len, &[1, 2, 3]);
        let (a, b, c) = (100i16, 1_000i16, 10_000i16);
        mixer.push(id(1), &constant(a, len)).unwrap();
        mixer.push(id(2), &constant(b, len)).unwrap();
        mixer.push(id(3), &constant(c, len)).unwrap();
        mixer.mix();
        assert_eq!(heard(&mixer, 1), constant(b + c, len), "A hears B and C");
        assert_eq!(heard(&mixer, 2), constant(a + c, len), "B hears A and C");
        assert_eq!(heard(&mixer, 3), constant(a + b, len), "C hears A and B");
    }
}

#[test]
fn speech_waveforms_mix_sample_by_sample() {
    let mut mixer = mixer_with(NB, &[1, 2, 3]);
    let voice = |hz: f64, amp: f64| -> Vec<i16> {
        (0..NB)
            .map(|n| (amp * (std::f64::consts::TAU * hz * n as f64 / 8_000.0).sin()) as i16)
            .collect()
    };
    let b = voice(300.0, 8_000.0);
    let c = voice(1_100.0, 5_000.0);
    mixer.push(id(2), &b).unwrap();
    mixer.push(id(3), &c).unwrap();
    mixer.mix();
    let expected: Vec<i16> = b.iter().zip(&c).map(|(x, y)| x + y).collect();
    assert_eq!(heard(&mixer, 1), expected);
    assert_eq!(heard(&mixer, 2), c);
    assert_eq!(heard(&mixer, 3), b);
}

#[test]
fn sums_saturate_instead_of_wrapping() {
    let mut mixer = mixer_with(NB, &[1, 2, 3, 4]);
    for n in 1..=3 {
        mixer.push(id(n), &constant(20_000, NB)).unwrap();
    }
    mixer.mix();
    // 40 000 and 60 000 would wrap to large negative values in i16 arithmetic.
    assert_eq!(heard(&mixer, 1), constant(i16::MAX, NB));
    assert_eq!(heard(&mixer, 4), constant(i16::MAX, NB));

    for n in 1..=3 {
        mixer.push(id(n), &constant(-20_000, NB)).unwrap();
    }
    mixer.mix();
    assert_eq!(heard(&mixer, 1), constant(i16::MIN, NB));
    assert_eq!(heard(&mixer, 4), constant(i16::MIN, NB));
}

#[test]
fn a_speaker_s_own_voice_is_removed_exactly_even_when_the_total_clips() {
    let mut mixer = mixer_with(NB, &[1, 2, 3]);
    mixer.push(id(1), &constant(30_000, NB)).unwrap();
    mixer.push(id(2), &constant(30_000, NB)).unwrap();
    mixer.push(id(3), &constant(-1_000, NB)).unwrap();
    mixer.mix();
    // The total (59 000) clips, but total − own is computed before clamping.
    assert_eq!(heard(&mixer, 1), constant(29_000, NB));
    assert_eq!(heard(&mixer, 3), constant(i16::MAX, NB));
}

#[test]
fn with_eight_talkers_only_the_four_loudest_are_audible() {
    assert_eq!(DEFAULT_MAX_SPEAKERS, 4);
    let talkers: Vec<u32> = (1..=8).collect();
    let listener = 100;
    let mut mixer = mixer_with(NB, &talkers);
    mixer.add(id(listener)).unwrap();
    // Distinct powers of two: any subset's sum tells which talkers are in it.
    let level = |n: u32| 100i16 << (n - 1);
    for _ in 0..10 {
        for &n in &talkers {
            mixer.push(id(n), &constant(level(n), NB)).unwrap();
        }
        mixer.mix();
    }
    let loudest: Vec<u32> = vec![5, 6, 7, 8];
    let mut speakers: Vec<u32> = mixer.speakers().map(|p| p.0).collect();
    speakers.sort_unstable();
    assert_eq!(speakers, loudest);
    let expected: i16 = loudest.iter().map(|&n| level(n)).sum();
    assert_eq!(heard(&mixer, listener), constant(expected, NB));
    // A quiet talker hears the same four; a selected one hears the other three.
    assert_eq!(heard(&mixer, 1), constant(expected, NB));
    assert_eq!(heard(&mixer, 8), constant(expected - level(8), NB));
}

#[test]
fn hysteresis_keeps_the_speaker_when_two_near_equal_talkers_alternate() {
    let mut mixer = Mixer::with_max_speakers(NB, 1);
    mixer.add(id(1)).unwrap();
    mixer.add(id(2)).unwrap();
    let mut switches = 0;
    let mut last = None;
    for frame in 0..500 {
        // Each is 1 dB louder than the other on alternate frames, like two people talking
        // over each other at the same level.
        let (a, b) = if frame % 2 == 0 {
            (4_000, 3_565)
        } else {
            (3_565, 4_000)
        };
        mixer.push(id(1), &constant(a, NB)).unwrap();
        mixer.push(id(2), &constant(b, NB)).unwrap();
        mixer.mix();
        let now: Vec<ParticipantId> = mixer.speakers().collect();
        assert_eq!(now.len(), 1);
        if last.is_some_and(|l| l != now[0]) {
            switches += 1;
        }
        last = Some(now[0]);
    }
    assert_eq!(switches, 0);
}

#[test]
fn clearly_louder_challenger_takes_over_after_a_short_hold_not_at_once() {
    let mut mixer = Mixer::with_max_speakers(NB, 1);
    mixer.add(id(1)).unwrap();
    mixer.add(id(2)).unwrap();
    for _ in 0..10 {
        mixer.push(id(1), &constant(1_000, NB)).unwrap();
        mixer.mix();
    }
    assert!(mixer.is_speaker(id(1)));
    let mut took_over_at = None;
    for frame in 0..50 {
        mixer.push(id(1), &constant(1_000, NB)).unwrap();
        mixer.push(id(2), &constant(8_000, NB)).unwrap();
        mixer.mix();
        if mixer.is_speaker(id(2)) {
            took_over_at = Some(frame);
            break;
        }
    }
    let frame = took_over_at.expect("a talker 18 dB louder never took over");
    assert!(
        frame > 0,
        "switched on the first louder frame: no hysteresis"
    );
    assert!(frame < 10, "took {frame} frames (>200 ms) to switch");
    assert!(!mixer.is_speaker(id(1)));
}

#[test]
fn a_new_talker_replaces_a_speaker_who_fell_silent_within_400_ms() {
    let mut mixer = Mixer::with_max_speakers(NB, 1);
    mixer.add(id(1)).unwrap();
    mixer.add(id(2)).unwrap();
    for _ in 0..50 {
        mixer.push(id(1), &constant(8_000, NB)).unwrap();
        mixer.mix();
    }
    assert!(mixer.is_speaker(id(1)));
    // A stops; B starts 12 dB quieter than A was.
    let mut frames_to_switch = None;
    for frame in 1..=50 {
        mixer.push(id(2), &constant(2_000, NB)).unwrap();
        mixer.mix();
        if mixer.is_speaker(id(2)) {
            frames_to_switch = Some(frame);
            break;
        }
    }
    let frames = frames_to_switch.expect("B never became the speaker");
    assert!(frames * 20 <= 400, "B heard only after {} ms", frames * 20);
    assert_eq!(heard(&mixer, 1), constant(2_000, NB));
}

#[test]
fn a_speaker_pausing_between_words_keeps_the_seat() {
    let mut mixer = Mixer::with_max_speakers(NB, 1);
    mixer.add(id(1)).unwrap();
    mixer.add(id(2)).unwrap();
    for frame in 0..200 {
        // A talks in 200 ms bursts with 100 ms gaps; B murmurs 10 dB below A's speech.
        if frame % 15 < 10 {
            mixer.push(id(1), &constant(6_000, NB)).unwrap();
        }
        mixer.push(id(2), &constant(1_900, NB)).unwrap();
        mixer.mix();
        assert!(mixer.is_speaker(id(1)), "A lost the seat at frame {frame}");
    }
}

#[test]
fn missing_frames_are_treated_as_silence() {
    let mut mixer = mixer_with(NB, &[1, 2, 3]);
    for n in 1..=3 {
        mixer.push(id(n), &constant(1_000 * n as i16, NB)).unwrap();
    }
    mixer.mix();
    // Only B sends this frame: A and C hear B alone, B hears nothing.
    mixer.push(id(2), &constant(2_500, NB)).unwrap();
    mixer.mix();
    assert_eq!(heard(&mixer, 1), constant(2_500, NB));
    assert_eq!(heard(&mixer, 3), constant(2_500, NB));
    assert_eq!(heard(&mixer, 2), constant(0, NB));
    // Nobody sends: last frame's audio is not replayed.
    mixer.mix();
    for n in 1..=3 {
        assert_eq!(heard(&mixer, n), constant(0, NB));
    }
}

#[test]
fn a_removed_participant_is_no_longer_heard_and_frees_their_slot() {
    let mut mixer = Mixer::with_max_speakers(NB, 2);
    for n in 1..=4 {
        mixer.add(id(n)).unwrap();
    }
    let push_all = |mixer: &mut Mixer| {
        for n in 1..=4u32 {
            if mixer.contains(id(n)) {
                mixer.push(id(n), &constant(1_000 * n as i16, NB)).unwrap();
            }
        }
    };
    push_all(&mut mixer);
    mixer.mix();
    assert!(mixer.is_speaker(id(4)) && mixer.is_speaker(id(3)));
    mixer.remove(id(4)).unwrap();
    push_all(&mut mixer);
    mixer.mix();
    assert!(mixer.output_for(id(4)).is_none());
    assert!(
        mixer.is_speaker(id(2)),
        "the freed slot went to the next loudest"
    );
    assert_eq!(heard(&mixer, 1), constant(2_000 + 3_000, NB));
}

#[test]
fn misuse_is_reported_as_typed_errors() {
    let mut mixer = mixer_with(NB, &[1]);
    assert_eq!(mixer.add(id(1)), Err(MixerError::AlreadyPresent(id(1))));
    assert_eq!(
        mixer.push(id(9), &constant(0, NB)),
        Err(MixerError::UnknownParticipant(id(9)))
    );
    assert_eq!(
        mixer.push(id(1), &constant(0, WB)),
        Err(MixerError::FrameLength {
            expected: NB,
            got: WB
        })
    );
    assert_eq!(
        mixer.remove(id(9)),
        Err(MixerError::UnknownParticipant(id(9)))
    );
    assert!(mixer.output_for(id(9)).is_none());
}

#[test]
fn mixing_in_steady_state_does_not_allocate() {
    let mut mixer = Mixer::new(WB);
    let before_adding = ALLOCATIONS.with(Cell::get);
    for n in 0..32 {
        mixer.add(id(n)).unwrap();
    }
    assert!(
        ALLOCATIONS.with(Cell::get) > before_adding,
        "the allocation counter counts"
    );
    let frames: Vec<Vec<i16>> = (0..32).map(|n| constant(100 + 50 * n as i16, WB)).collect();
    let before = ALLOCATIONS.with(Cell::get);
    for round in 0..200u32 {
        for (n, frame) in frames.iter().enumerate() {
            // Every third participant drops a frame now and then.
            if n % 3 != 0 || round % 7 != 0 {
                mixer.push(id(n as u32), frame).unwrap();
            }
        }
        mixer.mix();
        for n in 0..32 {
            assert!(mixer.output_for(id(n)).is_some());
        }
    }
    assert_eq!(ALLOCATIONS.with(Cell::get) - before, 0);
}
