//! Prompts as the IVR uses them: the shipped catalog, operator overrides, the player, the
//! hold music a lone caller hears, and the clip lists in-room controls speak.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use dialin_media::prompt::{
    count_speech, key_speech, number_speech, wav, Clip, ClipList, Language, NumberWord,
    PromptCatalog, PromptError, PromptId, PromptPlayer, SampleRate,
};
use dialin_media::tone::{self, ComfortNoise, ComfortTone, HoldMusic, NoiseColor};

/// Counts this thread's allocations, to prove frame generation allocates nothing.
struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

unsafe impl std::alloc::GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        ALLOCATIONS.with(|a| a.set(a.get() + 1));
        std::alloc::System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        std::alloc::System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

fn allocations() -> usize {
    ALLOCATIONS.with(std::cell::Cell::get)
}

fn rms(x: &[i16]) -> f64 {
    if x.is_empty() {
        return 0.0;
    }
    (x.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / x.len() as f64).sqrt()
}

/// The embedded catalog of `lang`, loaded once for the whole test binary (loading resamples
/// every prompt, which is slow in unoptimised builds).
fn shipped(lang: Language) -> &'static PromptCatalog {
    static EN: OnceLock<PromptCatalog> = OnceLock::new();
    static FR: OnceLock<PromptCatalog> = OnceLock::new();
    let cell = match lang {
        Language::En => &EN,
        Language::Fr => &FR,
    };
    cell.get_or_init(|| PromptCatalog::load(lang, None).unwrap())
}

/// A fresh, empty directory for one test.
fn scratch_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dialin-prompt-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn play_out(player: &mut PromptPlayer, max_frames: usize) -> Vec<i16> {
    let mut out = Vec::new();
    let mut frame = vec![0i16; player.rate().frame_len()];
    for _ in 0..max_frames {
        if !player.next_frame(&mut frame) {
            break;
        }
        out.extend_from_slice(&frame);
    }
    out
}

#[test]
fn every_prompt_of_every_language_is_speech_of_plausible_length() {
    for lang in Language::ALL {
        let catalog = shipped(lang);
        assert_eq!(catalog.language(), lang);
        for id in PromptId::ALL {
            let prompt = catalog.get(id);
            assert_eq!(prompt.id(), id);
            assert!(!prompt.is_overridden());
            let seconds = prompt.duration().as_secs_f64();
            assert!((0.5..=10.0).contains(&seconds), "{lang}/{id}: {seconds} s");
            let samples = prompt.samples(SampleRate::Hz16000);
            // Speech: a good share of 20 ms frames carry voice, and the whole is not quiet.
            let voiced = samples.chunks(320).filter(|f| rms(f) > 300.0).count();
            let frames = samples.len().div_ceil(320);
            assert!(
                voiced * 3 >= frames,
                "{lang}/{id}: only {voiced} of {frames} frames voiced"
            );
            assert!(rms(samples) > 1_000.0, "{lang}/{id}: rms {}", rms(samples));
            assert!(
                !samples.iter().all(|&s| s == samples[0]),
                "{lang}/{id}: constant"
            );
        }
    }
}

#[test]
fn the_two_languages_ship_different_recordings() {
    let en = shipped(Language::En);
    let fr = shipped(Language::Fr);
    for id in PromptId::ALL {
        assert_ne!(
            en.get(id).samples(SampleRate::Hz16000),
            fr.get(id).samples(SampleRate::Hz16000),
            "{id}"
        );
    }
}

#[test]
fn narrowband_versions_are_half_as_long_and_keep_the_level() {
    let catalog = shipped(Language::En);
    for id in PromptId::ALL {
        let wide = catalog.get(id).samples(SampleRate::Hz16000);
        let narrow = catalog.get(id).samples(SampleRate::Hz8000);
        assert!(
            narrow.len().abs_diff(wide.len() / 2) <= 1,
            "{id}: {} vs {}",
            narrow.len(),
            wide.len()
        );
        // Speech energy sits below 4 kHz, so dropping the upper band keeps most of it.
        let ratio = rms(narrow) / rms(wide);
        assert!((0.7..=1.05).contains(&ratio), "{id}: level ratio {ratio}");
    }
}

#[test]
fn catalogs_share_sample_buffers_instead_of_copying() {
    let catalog = shipped(Language::En);
    let clone = catalog.clone();
    let a = catalog.get(PromptId::Joining).samples(SampleRate::Hz8000);
    let b = clone.get(PromptId::Joining).samples(SampleRate::Hz8000);
    assert!(Arc::ptr_eq(a, b));
}

#[test]
fn override_directory_replaces_only_the_prompts_it_contains() {
    let dir = scratch_dir("override");
    // One second of a 440 Hz tone at 8 kHz stands in for an operator's recording.
    let tone: Vec<i16> = (0..8_000)
        .map(|n| (8_000.0 * (std::f64::consts::TAU * 440.0 * n as f64 / 8_000.0).sin()) as i16)
        .collect();
    std::fs::write(dir.join("joining.wav"), wav::encode(8_000, &tone)).unwrap();

    let embedded = shipped(Language::Fr);
    let catalog = PromptCatalog::load(Language::Fr, Some(&dir)).unwrap();
    let joining = catalog.get(PromptId::Joining);
    assert!(joining.is_overridden());
    assert_eq!(&joining.samples(SampleRate::Hz8000)[..], &tone[..]);
    assert_eq!(joining.samples(SampleRate::Hz16000).len(), 16_000);
    for id in PromptId::ALL
        .into_iter()
        .filter(|&id| id != PromptId::Joining)
    {
        assert!(!catalog.get(id).is_overridden(), "{id}");
        assert_eq!(
            catalog.get(id).samples(SampleRate::Hz16000),
            embedded.get(id).samples(SampleRate::Hz16000),
            "{id} fell back to the embedded prompt"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_bad_wav_in_the_override_directory_is_an_error_naming_the_file() {
    let dir = scratch_dir("bad");
    std::fs::write(
        dir.join("invalid_pin.wav"),
        b"RIFF\x10\0\0\0WAVEnot really audio",
    )
    .unwrap();
    let err = PromptCatalog::load(Language::En, Some(&dir)).unwrap_err();
    match &err {
        PromptError::Wav { path, .. } => assert!(path.ends_with("invalid_pin.wav"), "{path:?}"),
        other => panic!("expected a WAV error, got {other:?}"),
    }
    assert!(err.to_string().contains("invalid_pin.wav"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_missing_override_directory_is_an_error() {
    let dir = std::env::temp_dir().join(format!("dialin-prompt-{}-absent", std::process::id()));
    let err = PromptCatalog::load(Language::En, Some(&dir)).unwrap_err();
    assert!(matches!(err, PromptError::Directory { .. }), "{err:?}");
}

#[test]
fn queued_prompts_play_in_order_then_silence() {
    let catalog = shipped(Language::En);
    let rate = SampleRate::Hz8000;
    let mut player = PromptPlayer::new(rate);
    player.play(catalog.get(PromptId::InvalidPin));
    player.play(catalog.get(PromptId::WelcomeEnterPin));
    assert!(player.is_playing());
    let played = play_out(&mut player, 1_000);
    let first = catalog.get(PromptId::InvalidPin).samples(rate);
    let second = catalog.get(PromptId::WelcomeEnterPin).samples(rate);
    let expected: Vec<i16> = first.iter().chain(second.iter()).copied().collect();
    assert_eq!(&played[..expected.len()], &expected[..]);
    assert!(
        played[expected.len()..].iter().all(|&s| s == 0),
        "tail of last frame is silence"
    );
    assert!(!player.is_playing());
    let mut frame = [1i16; 160];
    assert!(!player.next_frame(&mut frame));
    assert!(frame.iter().all(|&s| s == 0));
}

#[test]
fn barge_in_stops_output_on_the_next_frame_and_clears_the_queue() {
    let catalog = shipped(Language::En);
    let mut player = PromptPlayer::new(SampleRate::Hz16000);
    player.play(catalog.get(PromptId::WelcomeEnterPin));
    player.play(catalog.get(PromptId::InvalidPin));
    let mut frame = [0i16; 320];
    for _ in 0..25 {
        assert!(player.next_frame(&mut frame));
    }
    assert!(rms(&frame) > 0.0);
    player.interrupt();
    assert!(!player.is_playing());
    assert!(!player.next_frame(&mut frame));
    assert!(frame.iter().all(|&s| s == 0));
    // A prompt queued after barge-in starts from its beginning.
    player.play(catalog.get(PromptId::Joining));
    assert!(player.next_frame(&mut frame));
    let joining = catalog.get(PromptId::Joining).samples(SampleRate::Hz16000);
    assert_eq!(&frame[..], &joining[..320]);
}

#[test]
fn hold_music_is_quiet_but_never_silent() {
    for rate in [SampleRate::Hz8000, SampleRate::Hz16000] {
        let music = HoldMusic::render_loop(rate);
        assert_eq!(music.len(), 8 * rate.hz() as usize);
        let peak = music.iter().map(|s| s.unsigned_abs()).max().unwrap();
        // At most −18 dBFS peak: background, under a speaking voice.
        assert!(peak <= 4_096, "peak {peak}");
        // Audible in every half second of the loop.
        for (n, chunk) in music.chunks(rate.hz() as usize / 2).enumerate() {
            assert!(
                rms(chunk) > 100.0,
                "{rate:?} half-second {n}: rms {}",
                rms(chunk)
            );
        }
    }
}

#[test]
fn hold_music_loops_in_the_player_until_interrupted() {
    let rate = SampleRate::Hz8000;
    let music = HoldMusic::render_loop(rate);
    let mut player = PromptPlayer::new(rate);
    player.play_looped(Arc::clone(&music));
    let played = play_out(&mut player, 2 * music.len() / 160 + 10);
    assert!(player.is_playing());
    assert_eq!(&played[..music.len()], &music[..]);
    assert_eq!(&played[music.len()..2 * music.len()], &music[..]);
    player.interrupt();
    assert!(!player.is_playing());
}

#[test]
fn unknown_language_code_is_refused_with_the_choices() {
    let err = "de".parse::<Language>().unwrap_err();
    assert!(err.to_string().contains("en, fr"), "{err}");
}

#[test]
fn playing_prompts_and_generating_tones_does_not_allocate_per_frame() {
    let catalog = shipped(Language::En);
    let rate = SampleRate::Hz16000;
    let music = HoldMusic::render_loop(rate);
    let mut player = PromptPlayer::new(rate);
    let mut hold = HoldMusic::new(rate);
    let mut tone = ComfortTone::new(rate);
    let mut noise = ComfortNoise::new(NoiseColor::Pink, -60.0);
    let mut frame = [0i16; 320];
    let before = allocations();
    player.play(catalog.get(PromptId::InvalidPin));
    player.play(catalog.get(PromptId::WelcomeEnterPin));
    for _ in 0..100 {
        player.next_frame(&mut frame);
        hold.next_frame(&mut frame);
        tone.next_frame(&mut frame);
        noise.next_frame(&mut frame);
    }
    player.interrupt();
    player.play_looped(Arc::clone(&music));
    for _ in 0..100 {
        player.next_frame(&mut frame);
    }
    assert_eq!(allocations() - before, 0);
}

/// The help listing as the call speaks it: each option's phrase, then its keys.
fn help_listing() -> ClipList {
    let mut list = ClipList::new();
    for (phrase, keys) in [
        (PromptId::HelpMute, "*6"),
        (PromptId::HelpCount, "*1"),
        (PromptId::HelpHand, "*9"),
        (PromptId::HelpHelp, "*0"),
    ] {
        assert!(list.push(Clip::Prompt(phrase)));
        assert!(list.append(&key_speech(keys)));
    }
    list
}

#[test]
fn every_piece_of_every_count_resolves_in_both_languages_at_both_rates() {
    for lang in Language::ALL {
        let catalog = shipped(lang);
        for rate in [SampleRate::Hz8000, SampleRate::Hz16000] {
            for n in 0..=120 {
                let list = count_speech(lang, n);
                assert!(!list.is_empty(), "{lang} {n}");
                for clip in &list {
                    let samples = catalog.clip(clip, rate);
                    assert!(
                        samples.is_some_and(|s| !s.is_empty()),
                        "{lang} {n} {rate:?}: {clip:?}"
                    );
                }
            }
            for clip in key_speech("0123456789*#")
                .iter()
                .chain(help_listing().iter())
                .chain([Clip::JoinTone, Clip::LeaveTone])
            {
                assert!(
                    catalog.clip(clip, rate).is_some(),
                    "{lang} {rate:?}: {clip:?}"
                );
            }
        }
    }
}

#[test]
fn number_words_are_short_speech() {
    for lang in Language::ALL {
        let catalog = shipped(lang);
        for word in NumberWord::ALL.into_iter().filter(|w| w.is_used_in(lang)) {
            let samples = catalog
                .clip(Clip::Word(word), SampleRate::Hz16000)
                .unwrap_or_else(|| panic!("{lang}/{word} missing"));
            let seconds = samples.len() as f64 / 16_000.0;
            assert!(
                (0.15..=1.2).contains(&seconds),
                "{lang}/{word}: {seconds} s"
            );
            assert!(
                rms(samples) > 1_000.0,
                "{lang}/{word}: rms {}",
                rms(samples)
            );
        }
    }
    let en = shipped(Language::En);
    let fr = shipped(Language::Fr);
    let seven = Clip::Word(NumberWord::Seven);
    assert_ne!(
        en.clip(seven, SampleRate::Hz16000),
        fr.clip(seven, SampleRate::Hz16000)
    );
}

#[test]
fn clips_resolve_to_the_recordings_they_name() {
    let catalog = shipped(Language::Fr);
    let rate = SampleRate::Hz8000;
    let star = catalog.clip(Clip::Key('*'), rate).unwrap();
    assert!(Arc::ptr_eq(
        star,
        catalog.get(PromptId::KeyStar).samples(rate)
    ));
    let hash = catalog.clip(Clip::Key('#'), rate).unwrap();
    assert!(Arc::ptr_eq(
        hash,
        catalog.get(PromptId::KeyHash).samples(rate)
    ));
    let six = catalog.clip(Clip::Key('6'), rate).unwrap();
    let word = catalog.clip(Clip::Word(NumberWord::Six), rate).unwrap();
    assert!(Arc::ptr_eq(six, word));
    let muted = catalog.clip(Clip::Prompt(PromptId::Muted), rate).unwrap();
    assert!(Arc::ptr_eq(
        muted,
        catalog.get(PromptId::Muted).samples(rate)
    ));
    // French says soixante-dix and quatre-vingt-dix: it has no word of its own for either.
    assert!(catalog
        .clip(Clip::Word(NumberWord::Seventy), rate)
        .is_none());
    assert!(catalog.clip(Clip::Word(NumberWord::Ninety), rate).is_none());
    assert!(shipped(Language::En)
        .clip(Clip::Word(NumberWord::And), rate)
        .is_none());
    assert!(catalog.clip(Clip::Key('x'), rate).is_none());
    assert!(catalog.clip(Clip::Key('٣'), rate).is_none());
    // The cues are the tone module's, rendered once at load.
    let join = catalog.clip(Clip::JoinTone, rate).unwrap();
    assert_eq!(join, &tone::join_cue(rate));
    let leave = catalog.clip(Clip::LeaveTone, rate).unwrap();
    assert_eq!(leave, &tone::leave_cue(rate));
    assert!(Arc::ptr_eq(
        join,
        catalog.clone().clip(Clip::JoinTone, rate).unwrap()
    ));
}

#[test]
fn clip_lists_play_back_to_back() {
    for lang in Language::ALL {
        let catalog = shipped(lang);
        for rate in [SampleRate::Hz8000, SampleRate::Hz16000] {
            for list in [
                count_speech(lang, 71),
                count_speech(lang, 1),
                help_listing(),
            ] {
                let mut player = PromptPlayer::new(rate);
                player.play_clips(catalog, &list);
                let expected: Vec<i16> = list
                    .iter()
                    .flat_map(|clip| catalog.clip(clip, rate).unwrap().iter().copied())
                    .collect();
                let played = play_out(&mut player, 10_000);
                assert!(!player.is_playing());
                let frames = expected.len().div_ceil(rate.frame_len());
                assert_eq!(played.len(), frames * rate.frame_len(), "{lang} {rate:?}");
                assert_eq!(&played[..expected.len()], &expected[..], "{lang} {rate:?}");
                assert!(played[expected.len()..].iter().all(|&s| s == 0));
            }
        }
    }
}

#[test]
fn a_french_count_of_seventy_one_says_soixante_et_onze() {
    let catalog = shipped(Language::Fr);
    let rate = SampleRate::Hz16000;
    let mut player = PromptPlayer::new(rate);
    player.play_clips(catalog, &count_speech(Language::Fr, 71));
    let played = play_out(&mut player, 10_000);
    let pieces = [
        catalog.get(PromptId::ThereAre).samples(rate),
        catalog.clip(Clip::Word(NumberWord::Sixty), rate).unwrap(),
        catalog.clip(Clip::Word(NumberWord::And), rate).unwrap(),
        catalog.clip(Clip::Word(NumberWord::Eleven), rate).unwrap(),
        catalog.get(PromptId::Participants).samples(rate),
    ];
    let expected: Vec<i16> = pieces.iter().flat_map(|p| p.iter().copied()).collect();
    assert_eq!(&played[..expected.len()], &expected[..]);
}

#[test]
fn building_and_playing_clip_lists_does_not_allocate() {
    let catalog = shipped(Language::Fr);
    let mut player = PromptPlayer::new(SampleRate::Hz8000);
    let mut frame = [0i16; 160];
    let before = allocations();
    for n in [1, 21, 71, 99, 250] {
        let mut list = count_speech(Language::Fr, n);
        list.push(Clip::JoinTone);
        player.play_clips(catalog, &list);
        while player.next_frame(&mut frame) {}
    }
    // The longest listing the call speaks, queued whole before any of it plays.
    let help = help_listing();
    player.play_clips(catalog, &help);
    player.play_clips(catalog, &count_speech(Language::Fr, 77));
    player.play_clips(catalog, &key_speech("*#"));
    for _ in 0..50 {
        player.next_frame(&mut frame);
    }
    player.interrupt();
    assert_eq!(allocations() - before, 0);
}

#[test]
fn number_words_can_be_overridden_like_prompts() {
    let dir = scratch_dir("number-words");
    let tone: Vec<i16> = (0..4_000)
        .map(|n| (8_000.0 * (std::f64::consts::TAU * 440.0 * n as f64 / 8_000.0).sin()) as i16)
        .collect();
    let other: Vec<i16> = tone.iter().map(|s| s / 2).collect();
    std::fs::write(dir.join("number_17.wav"), wav::encode(8_000, &tone)).unwrap();
    std::fs::write(dir.join("number_and.wav"), wav::encode(8_000, &other)).unwrap();

    let embedded = shipped(Language::Fr);
    let catalog = PromptCatalog::load(Language::Fr, Some(&dir)).unwrap();
    let rate = SampleRate::Hz8000;
    let seventeen = catalog
        .clip(Clip::Word(NumberWord::Seventeen), rate)
        .unwrap();
    assert_eq!(&seventeen[..], &tone[..]);
    let and = catalog.clip(Clip::Word(NumberWord::And), rate).unwrap();
    assert_eq!(&and[..], &other[..]);
    // Every other word, and every prompt, stays the shipped one.
    for word in NumberWord::ALL
        .into_iter()
        .filter(|w| !matches!(w, NumberWord::Seventeen | NumberWord::And))
    {
        assert_eq!(
            catalog.clip(Clip::Word(word), rate),
            embedded.clip(Clip::Word(word), rate),
            "{word}"
        );
    }
    assert!(PromptId::ALL
        .iter()
        .all(|&id| !catalog.get(id).is_overridden()));

    // A broken number word is an error naming its file, as for a prompt.
    std::fs::write(
        dir.join("number_3.wav"),
        b"RIFF\x10\0\0\0WAVEnot really audio",
    )
    .unwrap();
    let err = PromptCatalog::load(Language::Fr, Some(&dir)).unwrap_err();
    assert!(err.to_string().contains("number_3.wav"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_number_word_a_language_does_not_use_is_ignored_in_its_override_directory() {
    let dir = scratch_dir("unused-word");
    // French composes seventy (soixante-dix): a number_70.wav there is never played.
    std::fs::write(
        dir.join("number_70.wav"),
        wav::encode(8_000, &[1_000i16; 800]),
    )
    .unwrap();
    let catalog = PromptCatalog::load(Language::Fr, Some(&dir)).unwrap();
    assert!(catalog
        .clip(Clip::Word(NumberWord::Seventy), SampleRate::Hz8000)
        .is_none());
    assert_eq!(number_speech(Language::Fr, 70).len(), 2);
    std::fs::remove_dir_all(&dir).unwrap();
}
