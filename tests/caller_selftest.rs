//! Self-tests of the test caller (tests/support): it must be a correct phone before
//! the gateway's tests can trust it. It calls SIPp's built-in UAS (a reference SIP
//! implementation) over UDP and TCP, and calls its own [`Answerer`] to check audio, DTMF,
//! rejections and digest authentication end to end over loopback.

mod support;

use std::time::{Duration, Instant};

use dialin_media::dtmf::event::EventReceiver;
use dialin_media::rtp::Packet;
use dialin_media::{new_decoder, CodecConfig, CodecKind, SampleRate};
use dialin_sip::digest::VerifyOutcome;
use dialin_sip::sdp::Direction;
use support::caller::digest_client::{self, Challenge};
use support::caller::{
    AnswerAuth, AnswerOptions, AnswerSource, Answerer, Call, Caller, CallerError, Codec,
    DialOptions, DtmfMode, SipTransport,
};
use support::sipp::{self, SippProcess, SippTransport};
use support::tone;

const SECOND: Duration = Duration::from_secs(1);

async fn answerer(opts: AnswerOptions) -> Answerer {
    Answerer::start(opts)
        .await
        .expect("answerer starts on loopback")
}

fn dial_to(a: &Answerer, transport: SipTransport) -> DialOptions {
    let mut o = DialOptions::new(a.addr(transport));
    o.transport = transport;
    o
}

/// Records `span` of audio at `call` after letting `settle` pass (codec start-up, the
/// first packets in flight).
async fn record(call: &Call, settle: Duration, span: Duration) -> Vec<i16> {
    tokio::time::sleep(settle).await;
    let from = Instant::now();
    tokio::time::sleep(span).await;
    call.recorded_between(from, Instant::now())
}

// ---------------------------------------------------------------------------
// tone.rs

#[test]
fn goertzel_level_reads_a_sine_at_its_level_and_ignores_other_frequencies() {
    let s = tone::sine(8000, 440.0, -20.0, 8000);
    let at = tone::goertzel_level(&s, 8000, 440.0);
    assert!((at + 20.0).abs() < 0.5, "440 Hz at -20 dBFS read as {at}");
    let off = tone::goertzel_level(&s, 8000, 1000.0);
    assert!(off < -80.0, "1000 Hz leaked at {off} dBFS");
}

#[test]
fn dominant_frequency_finds_a_tone_between_grid_points() {
    for hz in [440.0, 1234.5, 3100.0] {
        let s = tone::sine(8000, hz, -10.0, 8000);
        let f = tone::dominant_frequency(&s, 8000);
        assert!((f64::from(f) - hz).abs() <= 0.5, "{hz} Hz found at {f}");
    }
    let wide = tone::sine(16000, 5000.0, -10.0, 16000);
    assert!((tone::dominant_frequency(&wide, 16000) - 5000.0).abs() <= 0.5);
}

#[test]
fn rms_dbfs_reads_a_full_scale_sine_as_zero_and_silence_as_the_floor() {
    let full = tone::sine(8000, 1000.0, 0.0, 8000);
    assert!(tone::rms_dbfs(&full).abs() < 0.1);
    let quiet = tone::sine(8000, 1000.0, -30.0, 8000);
    assert!((tone::rms_dbfs(&quiet) + 30.0).abs() < 0.1);
    assert_eq!(tone::rms_dbfs(&[0; 800]), tone::SILENCE_DBFS);
    assert_eq!(tone::rms_dbfs(&[]), tone::SILENCE_DBFS);
}

/// A vowel-like train: a 120-180 Hz glottal pulse with harmonics, shaped by 4 Hz
/// syllables separated by pauses.
fn synthetic_speech(rate: u32, seconds: f64) -> Vec<i16> {
    let n = (f64::from(rate) * seconds) as usize;
    let mut phase = 0.0f64;
    (0..n)
        .map(|i| {
            let t = i as f64 / f64::from(rate);
            let f0 = 150.0 + 30.0 * (2.0 * std::f64::consts::PI * 0.7 * t).sin();
            phase += 2.0 * std::f64::consts::PI * f0 / f64::from(rate);
            let voiced: f64 = (1..=12)
                .map(|k| (f64::from(k) * phase).sin() / f64::from(k))
                .sum();
            let syllable = (2.0 * std::f64::consts::PI * 4.0 * t)
                .sin()
                .max(0.0)
                .powi(2);
            (voiced * syllable * 6000.0) as i16
        })
        .collect()
}

#[test]
fn speech_like_accepts_syllabic_voice_and_rejects_tones_noise_and_silence() {
    assert!(tone::is_speech_like(&synthetic_speech(8000, 2.0), 8000));
    assert!(!tone::is_speech_like(
        &tone::sine(8000, 440.0, -10.0, 16000),
        8000
    ));
    assert!(!tone::is_speech_like(&[0; 16000], 8000));
    // A beeping tone moves in level like speech but is one frequency.
    let mut beeps = tone::sine(8000, 425.0, -10.0, 16000);
    for (i, s) in beeps.iter_mut().enumerate() {
        if (i / 2000) % 2 == 1 {
            *s = 0;
        }
    }
    assert!(!tone::is_speech_like(&beeps, 8000));
    // Steady white noise has no syllables.
    let mut x = 0x1234_5678u32;
    let noise: Vec<i16> = (0..16000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 20) as i16 - 2048
        })
        .collect();
    assert!(!tone::is_speech_like(&noise, 8000));
}

// ---------------------------------------------------------------------------
// Digest client

#[test]
fn md5_and_sha256_match_published_test_vectors() {
    let hex = digest_client::to_hex;
    assert_eq!(
        hex(&digest_client::md5(b"")),
        "d41d8cd98f00b204e9800998ecf8427e"
    );
    assert_eq!(
        hex(&digest_client::md5(b"abc")),
        "900150983cd24fb0d6963f7d28e17f72"
    );
    assert_eq!(
        hex(&digest_client::md5(b"message digest")),
        "f96b697d7cb7938d525a2f31aaf161d0"
    );
    assert_eq!(
        hex(&digest_client::sha256(b"")),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(
        hex(&digest_client::sha256(b"abc")),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(
        hex(&digest_client::sha256(
            b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
        )),
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
    );
}

#[test]
fn digest_responses_match_the_rfc_7616_examples() {
    // RFC 7616 §3.9.1.
    let base = "realm=\"http-auth@example.org\", qop=\"auth, auth-int\", \
                nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\", \
                opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\"";
    let cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
    let sha =
        Challenge::parse(&format!("Digest {base}, algorithm=SHA-256")).expect("challenge parses");
    let v = digest_client::response(
        &sha,
        "Mufasa",
        "Circle of Life",
        "GET",
        "/dir/index.html",
        cnonce,
        1,
    );
    assert!(
        v.contains("response=\"753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1\""),
        "{v}"
    );
    let md5 = Challenge::parse(&format!("Digest {base}, algorithm=MD5")).expect("challenge parses");
    let v = digest_client::response(
        &md5,
        "Mufasa",
        "Circle of Life",
        "GET",
        "/dir/index.html",
        cnonce,
        1,
    );
    assert!(
        v.contains("response=\"8ca523f5e9506fed4657c9700eebdbec\""),
        "{v}"
    );
    assert!(v.contains("nc=00000001") && v.contains("qop=auth"), "{v}");
}

// ---------------------------------------------------------------------------
// pcap files for SIPp

#[test]
fn g711_tone_pcap_holds_20ms_packets_of_the_tone() {
    let dir = sipp::ScratchDir::new("pcap").expect("scratch dir");
    let path = dir.path().join("tone.pcap");
    sipp::write_tone_pcap(&path, sipp::G711::Pcmu, 440.0, -12.0, SECOND).expect("pcap written");
    let packets = sipp::read_pcap_rtp(&path).expect("pcap reads back");
    assert_eq!(packets.len(), 50);
    let mut dec =
        new_decoder(CodecKind::Pcmu, SampleRate::Hz8000, &CodecConfig::default()).expect("decoder");
    let mut pcm = Vec::new();
    for (i, (at, raw)) in packets.iter().enumerate() {
        assert_eq!(*at, Duration::from_millis(20 * i as u64));
        let p = Packet::parse(raw).expect("valid RTP");
        assert_eq!(p.payload_type().get(), 0);
        assert_eq!(p.timestamp().0, 160 * i as u32);
        let mut out = [0i16; 160];
        let n = dec.decode(p.payload(), &mut out).expect("decodes");
        pcm.extend_from_slice(&out[..n]);
    }
    assert!((tone::dominant_frequency(&pcm, 8000) - 440.0).abs() <= 1.0);
    assert!((tone::goertzel_level(&pcm, 8000, 440.0) + 12.0).abs() < 1.0);
}

#[test]
fn rfc4733_pcap_carries_exactly_the_digits() {
    let dir = sipp::ScratchDir::new("pcap").expect("scratch dir");
    let path = dir.path().join("dtmf.pcap");
    sipp::write_rfc4733_pcap(&path, "159#", 101, Duration::from_millis(200)).expect("pcap written");
    let mut rx = EventReceiver::new(8000);
    let t0 = Instant::now();
    let mut digits = String::new();
    for (at, raw) in sipp::read_pcap_rtp(&path).expect("pcap reads back") {
        let p = Packet::parse(&raw).expect("valid RTP");
        if p.payload_type().get() == 101 {
            if let Ok(Some(d)) =
                rx.receive(p.timestamp().0, p.marker(), p.seq().0, p.payload(), t0 + at)
            {
                digits.push(d.digit.to_char());
            }
        }
    }
    assert_eq!(digits, "159#");
}

// ---------------------------------------------------------------------------
// Against SIPp's built-in UAS

async fn call_sipp_uas(transport: SipTransport) {
    let Some(bin) = sipp::sipp_or_skip() else {
        return;
    };
    let st = match transport {
        SipTransport::Udp => SippTransport::Udp,
        SipTransport::Tcp => SippTransport::Tcp,
    };
    let uas = SippProcess::uas(&bin, st, 1, Duration::from_secs(30))
        .await
        .expect("sipp uas starts");
    let mut opts = DialOptions::new(uas.sip_addr);
    opts.transport = transport;
    let call = Caller::dial(opts).await.expect("sipp answers");
    assert!(
        call.provisional().contains(&180),
        "180 Ringing seen: {:?}",
        call.provisional()
    );
    assert_eq!(call.codec(), Some(Codec::Pcmu), "SIPp's uas answers PCMU");
    call.play_tone(1000.0, -10.0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        call.packets_sent() >= 10,
        "RTP flows: {} packets",
        call.packets_sent()
    );
    call.hangup().await.expect("BYE answered 200");
    let outcome = uas.wait(Duration::from_secs(20)).await;
    assert!(outcome.success(), "{outcome:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_completes_a_call_with_sipp_uas_over_udp() {
    call_sipp_uas(SipTransport::Udp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_completes_a_call_with_sipp_uas_over_tcp() {
    call_sipp_uas(SipTransport::Tcp).await;
}

// ---------------------------------------------------------------------------
// Against the in-test Answerer

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_440_hz_tone_survives_the_pcmu_round_trip_both_ways() {
    let mut a = answerer(AnswerOptions {
        source: AnswerSource::Tone {
            hz: 440.0,
            dbfs: -12.0,
        },
        ..Default::default()
    })
    .await;
    let mut opts = dial_to(&a, SipTransport::Udp);
    opts.codecs = vec![Codec::Pcmu];
    let call = Caller::dial(opts).await.expect("answered");
    let answered = a
        .next_call(5 * SECOND)
        .await
        .expect("answerer has the call");
    assert_eq!(call.codec(), Some(Codec::Pcmu));
    assert_eq!(answered.call_id(), call.call_id());
    let t0 = Instant::now();
    assert!(
        call.wait_for_sound(t0, -30.0, 2 * SECOND).await.is_some(),
        "the answerer's tone arrives"
    );
    assert!(call
        .recorded_chunks(t0)
        .iter()
        .all(|(at, pcm)| *at >= t0 && pcm.len() == 160));
    call.play_tone(440.0, -12.0);

    let heard_by_caller = record(&call, Duration::from_millis(200), SECOND).await;
    let heard_by_answerer = answered.recorded(Instant::now() - Duration::from_millis(800));
    for (who, pcm) in [
        ("caller", &heard_by_caller),
        ("answerer", &heard_by_answerer),
    ] {
        assert!(pcm.len() >= 4000, "{who} recorded {} samples", pcm.len());
        let f = tone::dominant_frequency(pcm, 8000);
        assert!((f - 440.0).abs() <= 5.0, "{who} heard {f} Hz");
        let level = tone::goertzel_level(pcm, 8000, 440.0);
        assert!(
            (level + 12.0).abs() < 1.5,
            "{who} heard 440 Hz at {level} dBFS"
        );
    }
    call.hangup().await.expect("hung up");
    assert!(answered.wait_for_bye(2 * SECOND).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_answerer_returns_the_callers_tone() {
    let mut a = answerer(AnswerOptions {
        source: AnswerSource::Echo,
        ..Default::default()
    })
    .await;
    let call = Caller::dial(dial_to(&a, SipTransport::Udp))
        .await
        .expect("answered");
    let _answered = a
        .next_call(5 * SECOND)
        .await
        .expect("answerer has the call");
    call.play_tone(700.0, -10.0);
    let back = record(&call, Duration::from_millis(300), SECOND).await;
    assert!((tone::dominant_frequency(&back, 8000) - 700.0).abs() <= 5.0);
    call.hangup().await.expect("hung up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc4733_digits_arrive_as_exactly_those_digits() {
    let mut a = answerer(AnswerOptions::default()).await;
    let call = Caller::dial(dial_to(&a, SipTransport::Udp))
        .await
        .expect("answered");
    let answered = a
        .next_call(5 * SECOND)
        .await
        .expect("answerer has the call");
    assert_eq!(call.telephone_event_pt(), Some(101));
    call.send_dtmf("1234567890*#ABCD", DtmfMode::Rfc4733)
        .await
        .expect("digits sent");
    let got = answered.wait_for_digits(16, 2 * SECOND).await;
    assert_eq!(got, "1234567890*#ABCD");
    // And the other way.
    answered
        .send_dtmf("#9", DtmfMode::Rfc4733)
        .await
        .expect("digits sent");
    assert_eq!(call.wait_for_digits(2, 2 * SECOND).await, "#9");
    call.hangup().await.expect("hung up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc4733_digits_are_100ms_presses_200ms_apart() {
    let mut a = answerer(AnswerOptions::default()).await;
    let call = Caller::dial(dial_to(&a, SipTransport::Udp))
        .await
        .expect("answered");
    let answered = a
        .next_call(5 * SECOND)
        .await
        .expect("answerer has the call");
    call.send_dtmf("123", DtmfMode::Rfc4733)
        .await
        .expect("digits sent");
    answered.wait_for_digits(3, 2 * SECOND).await;
    let times = answered.received_digit_times();
    assert_eq!(times.len(), 3);
    for w in times.windows(2) {
        let gap = w[1].0 - w[0].0;
        // 100 ms press + two end repeats (40 ms) + 100 ms gap, on 20 ms ticks: about
        // 240 ms; the upper bound leaves room for a loaded machine.
        assert!(
            gap >= Duration::from_millis(200) && gap <= Duration::from_millis(450),
            "{gap:?}"
        );
    }
    call.hangup().await.expect("hung up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_digits_arrive_as_dtmf_relay_signals() {
    let mut a = answerer(AnswerOptions::default()).await;
    let call = Caller::dial(dial_to(&a, SipTransport::Tcp))
        .await
        .expect("answered");
    let answered = a
        .next_call(5 * SECOND)
        .await
        .expect("answerer has the call");
    call.send_dtmf("42#", DtmfMode::Info)
        .await
        .expect("INFOs answered 200");
    assert_eq!(answered.wait_for_info_digits(3, 2 * SECOND).await, "42#");
    let info = answered
        .requests_received()
        .into_iter()
        .find(|r| r.method.as_str() == "INFO")
        .expect("an INFO");
    assert_eq!(
        info.headers
            .content_type()
            .ok()
            .flatten()
            .map(|m| format!("{}/{}", m.mtype, m.subtype)),
        Some("application/dtmf-relay".to_owned())
    );
    assert!(String::from_utf8_lossy(&info.body).starts_with("Signal=4\r\nDuration="));
    call.hangup().await.expect("hung up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inband_digits_are_q23_tone_pairs_in_the_audio() {
    let mut a = answerer(AnswerOptions::default()).await;
    let call = Caller::dial(dial_to(&a, SipTransport::Udp))
        .await
        .expect("answered");
    let answered = a
        .next_call(5 * SECOND)
        .await
        .expect("answerer has the call");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let from = Instant::now();
    call.send_dtmf("5", DtmfMode::Inband)
        .await
        .expect("tone sent");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let pcm = answered.recorded(from);
    // Digit 5: 770 Hz + 1336 Hz (ITU-T Q.23).
    let lo = tone::goertzel_level(&pcm, 8000, 770.0);
    let hi = tone::goertzel_level(&pcm, 8000, 1336.0);
    let other = tone::goertzel_level(&pcm, 8000, 941.0);
    assert!(
        lo > other + 20.0 && hi > other + 20.0,
        "770: {lo}, 1336: {hi}, 941: {other}"
    );
    call.hangup().await.expect("hung up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_403_rejection_surfaces_as_rejected_with_its_headers() {
    let a = answerer(AnswerOptions {
        reject: Some((403, vec![])),
        ..Default::default()
    })
    .await;
    let err = Caller::dial(dial_to(&a, SipTransport::Udp))
        .await
        .expect_err("rejected");
    assert!(
        matches!(err, CallerError::Rejected { status: 403, .. }),
        "{err:?}"
    );

    let busy = answerer(AnswerOptions {
        reject: Some((503, vec![("Retry-After".into(), "30".into())])),
        ..Default::default()
    })
    .await;
    let err = Caller::dial(dial_to(&busy, SipTransport::Tcp))
        .await
        .expect_err("rejected");
    assert_eq!(err.status(), Some(503));
    assert_eq!(err.retry_after(), Some(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_common_codec_is_rejected_with_488() {
    let a = answerer(AnswerOptions {
        codecs: vec![Codec::G722],
        ..Default::default()
    })
    .await;
    let mut opts = dial_to(&a, SipTransport::Udp);
    opts.codecs = vec![Codec::Pcma];
    let err = Caller::dial(opts).await.expect_err("rejected");
    assert_eq!(err.status(), Some(488));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_challenge_is_answered_and_verified() {
    let auth = AnswerAuth {
        realm: "dialin.test".into(),
        username: "trunk".into(),
        password: "s3cret".into(),
    };
    let mut a = answerer(AnswerOptions {
        auth: Some(auth),
        ..Default::default()
    })
    .await;
    let mut opts = dial_to(&a, SipTransport::Udp);
    opts.credentials = Some(("trunk".into(), "s3cret".into()));
    let call = Caller::dial(opts)
        .await
        .expect("answered after the challenge");
    let _answered = a
        .next_call(5 * SECOND)
        .await
        .expect("answerer has the call");
    let outcomes = a.auth_outcomes();
    assert_eq!(outcomes.len(), 2, "{outcomes:?}");
    assert_eq!(outcomes[0], VerifyOutcome::Missing);
    assert_eq!(
        outcomes[1],
        VerifyOutcome::Ok {
            username: "trunk".into()
        }
    );
    let invites = a.invites_received();
    let auth_header = invites[1]
        .headers
        .authorization()
        .map(|t| t.as_str().to_owned())
        .unwrap_or_default();
    assert!(auth_header.contains("algorithm=SHA-256"), "{auth_header}");
    call.hangup().await.expect("hung up");

    let mut wrong = dial_to(&a, SipTransport::Udp);
    wrong.credentials = Some(("trunk".into(), "guess".into()));
    let err = Caller::dial(wrong).await.expect_err("wrong password");
    assert_eq!(err.status(), Some(401));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_offer_gets_the_offer_in_the_200_and_answers_in_the_ack() {
    let mut a = answerer(AnswerOptions {
        source: AnswerSource::Tone {
            hz: 1000.0,
            dbfs: -10.0,
        },
        ..Default::default()
    })
    .await;
    let mut opts = dial_to(&a, SipTransport::Udp);
    opts.no_sdp_in_invite = true;
    let call = Caller::dial(opts).await.expect("answered");
    let answered = a
        .next_call(5 * SECOND)
        .await
        .expect("answerer has the call");
    assert!(call.invite().is_some_and(|i| i.body.is_empty()));
    assert_eq!(call.codec(), Some(Codec::Pcmu));
    assert_eq!(answered.codec(), Some(Codec::Pcmu));
    let pcm = record(
        &call,
        Duration::from_millis(200),
        Duration::from_millis(500),
    )
    .await;
    assert!((tone::dominant_frequency(&pcm, 8000) - 1000.0).abs() <= 5.0);
    call.play_tone(500.0, -10.0);
    let back = record(
        &answered,
        Duration::from_millis(200),
        Duration::from_millis(500),
    )
    .await;
    assert!((tone::dominant_frequency(&back, 8000) - 500.0).abs() <= 5.0);
    call.hangup().await.expect("hung up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srtp_call_carries_the_tone_encrypted() {
    let mut a = answerer(AnswerOptions {
        source: AnswerSource::Tone {
            hz: 440.0,
            dbfs: -10.0,
        },
        ..Default::default()
    })
    .await;
    let mut opts = dial_to(&a, SipTransport::Udp);
    opts.srtp = true;
    let call = Caller::dial(opts).await.expect("answered");
    let _answered = a
        .next_call(5 * SECOND)
        .await
        .expect("answerer has the call");
    assert!(call
        .remote_sdp()
        .is_some_and(|s| s.contains("RTP/SAVP") && s.contains("a=crypto:")));
    let pcm = record(
        &call,
        Duration::from_millis(200),
        Duration::from_millis(500),
    )
    .await;
    assert!((tone::dominant_frequency(&pcm, 8000) - 440.0).abs() <= 5.0);
    call.hangup().await.expect("hung up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opus_and_g722_calls_record_at_the_codec_rate() {
    for (codec, rate) in [(Codec::G722, 16_000), (Codec::Opus, 48_000)] {
        let mut a = answerer(AnswerOptions {
            codecs: vec![codec],
            source: AnswerSource::Tone {
                hz: 600.0,
                dbfs: -10.0,
            },
            ..Default::default()
        })
        .await;
        let call = Caller::dial(dial_to(&a, SipTransport::Udp))
            .await
            .expect("answered");
        let _answered = a
            .next_call(5 * SECOND)
            .await
            .expect("answerer has the call");
        assert_eq!(call.codec(), Some(codec));
        assert_eq!(call.sample_rate(), rate);
        let pcm = record(
            &call,
            Duration::from_millis(300),
            Duration::from_millis(500),
        )
        .await;
        let f = tone::dominant_frequency(&pcm, rate);
        assert!((f - 600.0).abs() <= 5.0, "{codec:?}: {f} Hz");
        call.hangup().await.expect("hung up");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_before_answer_ends_the_invite_with_487() {
    let a = answerer(AnswerOptions {
        ring_for: Duration::from_secs(30),
        ..Default::default()
    })
    .await;
    let dialing = Caller::start(dial_to(&a, SipTransport::Udp))
        .await
        .expect("INVITE sent");
    assert!(
        dialing.wait_provisional(180, 2 * SECOND).await,
        "ringing: {:?}",
        dialing.provisional()
    );
    assert_eq!(dialing.cancel().await.expect("cancelled"), 487);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bye_from_the_far_end_is_answered_and_recorded() {
    let mut a = answerer(AnswerOptions::default()).await;
    let call = Caller::dial(dial_to(&a, SipTransport::Tcp))
        .await
        .expect("answered");
    let answered = a
        .next_call(5 * SECOND)
        .await
        .expect("answerer has the call");
    assert!(!call.bye_received());
    answered.hangup().await.expect("BYE answered 200");
    assert!(call.wait_for_bye(2 * SECOND).await);
    assert!(call.is_terminated());
    assert!(call.hangup().await.is_err(), "nothing left to hang up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answered_call_reports_sdp_direction_and_packet_counts() {
    let mut a = answerer(AnswerOptions::default()).await;
    let call = Caller::dial(dial_to(&a, SipTransport::Udp))
        .await
        .expect("answered");
    let answered = a
        .next_call(5 * SECOND)
        .await
        .expect("answerer has the call");
    assert_eq!(call.local_direction(), Some(Direction::SendRecv));
    assert!(call
        .local_sdp()
        .is_some_and(|s| s.contains("telephone-event/8000")));
    assert!(call.wait_for_packets(10, 2 * SECOND).await);
    assert!(answered.wait_for_packets(10, 2 * SECOND).await);
    assert!(call.packets_sent() >= 10);
    call.hangup().await.expect("hung up");
}

// ---------------------------------------------------------------------------
// SIPp playing the pcap files to the Answerer

/// Has SIPp call `a`, play the pcap `write` creates, and hang up; returns the answered
/// call and SIPp's outcome.
async fn sipp_plays_pcap(
    bin: &std::path::Path,
    a: &mut Answerer,
    pause: Duration,
    write: impl FnOnce(&std::path::Path) -> std::io::Result<()>,
) -> (Call, sipp::SippOutcome) {
    let dir = sipp::ScratchDir::new("sipp-pcap").expect("scratch dir");
    let pcap = dir.path().join("audio.pcap");
    write(&pcap).expect("pcap written");
    let p = SippProcess::uac_playing_pcap(bin, a.addr(SipTransport::Udp), &pcap, pause, dir)
        .expect("sipp starts");
    let call = a.next_call(10 * SECOND).await;
    let outcome = p.wait(Duration::from_secs(30)).await;
    match call {
        Some(call) => (call, outcome),
        None => panic!("sipp's call was not answered: {outcome:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_plays_the_g711_tone_pcap_and_the_answerer_hears_440_hz() {
    let Some(bin) = sipp::sipp_or_skip() else {
        return;
    };
    let mut a = answerer(AnswerOptions::default()).await;
    let (call, outcome) = sipp_plays_pcap(&bin, &mut a, Duration::from_millis(1500), |p| {
        sipp::write_tone_pcap(p, sipp::G711::Pcmu, 440.0, -12.0, SECOND)
    })
    .await;
    assert!(outcome.success(), "{outcome:?}");
    assert!(call.bye_received());
    let pcm = call.recorded_all();
    assert!(pcm.len() >= 7000, "recorded {} samples", pcm.len());
    assert!((tone::dominant_frequency(&pcm, 8000) - 440.0).abs() <= 5.0);
    assert!((tone::goertzel_level(&pcm, 8000, 440.0) + 12.0).abs() < 1.5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_plays_the_rfc4733_pcap_and_the_answerer_gets_the_digits() {
    let Some(bin) = sipp::sipp_or_skip() else {
        return;
    };
    let mut a = answerer(AnswerOptions::default()).await;
    let (call, outcome) = sipp_plays_pcap(&bin, &mut a, Duration::from_millis(1800), |p| {
        sipp::write_rfc4733_pcap(p, "2468#", 101, Duration::from_millis(200))
    })
    .await;
    assert!(outcome.success(), "{outcome:?}");
    assert_eq!(call.received_digits(), "2468#");
}

// ---------------------------------------------------------------------------
// Dialog details

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reinvite_to_hold_is_answered_with_the_mirrored_direction_and_resume_restores_media() {
    let mut a = answerer(AnswerOptions {
        source: AnswerSource::Tone {
            hz: 440.0,
            dbfs: -10.0,
        },
        ..Default::default()
    })
    .await;
    let call = Caller::dial(dial_to(&a, SipTransport::Udp))
        .await
        .expect("answered");
    let answered = a
        .next_call(5 * SECOND)
        .await
        .expect("answerer has the call");
    assert_eq!(
        answered
            .reinvite(Direction::SendOnly)
            .await
            .expect("re-INVITE answered"),
        200
    );
    assert_eq!(call.reinvites_received(), 1);
    assert_eq!(call.local_direction(), Some(Direction::RecvOnly));
    assert_eq!(answered.local_direction(), Some(Direction::SendOnly));
    tokio::time::sleep(Duration::from_millis(60)).await;
    let (sent, heard) = (call.packets_sent(), call.packets_received());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        call.packets_sent() <= sent + 1,
        "a held caller stops sending"
    );
    assert!(
        call.packets_received() >= heard + 10,
        "the holding side keeps sending"
    );

    assert_eq!(
        answered
            .reinvite(Direction::SendRecv)
            .await
            .expect("re-INVITE answered"),
        200
    );
    assert_eq!(call.local_direction(), Some(Direction::SendRecv));
    let sent = call.packets_sent();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        call.packets_sent() >= sent + 10,
        "resumed caller sends again"
    );
    call.hangup().await.expect("hung up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invite_carries_the_headers_a_trunk_sends() {
    let mut a = answerer(AnswerOptions::default()).await;
    let mut opts = dial_to(&a, SipTransport::Udp);
    opts.extra_headers = vec![("X-Test".into(), "yes".into())];
    let call = Caller::dial(opts).await.expect("answered");
    let _answered = a
        .next_call(5 * SECOND)
        .await
        .expect("answerer has the call");
    let invite = a.invites_received().pop().expect("an INVITE");
    let h = &invite.headers;
    assert!(h
        .top_via()
        .expect("Via")
        .branch()
        .is_some_and(|b| b.starts_with("z9hG4bK")));
    assert!(h.from().expect("From").tag().is_some());
    assert!(h.to().expect("To").tag().is_none());
    assert_eq!(
        h.from()
            .expect("From")
            .uri
            .user()
            .map(|u| u.as_str().to_owned()),
        Some("+33612345678".into())
    );
    assert_eq!(
        invite.uri.user().map(|u| u.as_str().to_owned()),
        Some("1000".into())
    );
    assert_eq!(h.max_forwards().expect("Max-Forwards"), Some(70));
    assert_eq!(h.cseq().expect("CSeq").method.as_str(), "INVITE");
    assert!(!h.contacts().expect("Contact").is_empty());
    assert_eq!(h.call_id().expect("Call-ID").as_str(), call.call_id());
    assert!(h
        .content_type()
        .ok()
        .flatten()
        .is_some_and(|m| m.is("application", "sdp")));
    assert_eq!(
        h.get(&dialin_sip::HeaderName::from_str_name("X-Test"))
            .map(|t| t.as_str().to_owned()),
        Some("yes".into())
    );
    let sdp = String::from_utf8_lossy(&invite.body).into_owned();
    assert!(
        sdp.contains("m=audio ") && sdp.contains(" RTP/AVP 0 8 9 111 110 101"),
        "{sdp}"
    );
    assert!(
        sdp.contains("a=rtpmap:101 telephone-event/8000")
            && sdp.contains("a=rtpmap:110 telephone-event/48000")
    );
    call.hangup().await.expect("hung up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invite_is_retransmitted_over_udp_until_a_response_arrives() {
    use dialin_sip::{Limits, Message, Response, StatusCode};
    let peer = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let mut opts = DialOptions::new(peer.local_addr().expect("addr"));
    opts.codecs = vec![Codec::Pcmu];
    let dialing = tokio::spawn(Caller::dial(opts));
    let mut buf = vec![0u8; 65_536];
    let mut arrivals = Vec::new();
    let mut last = None;
    while arrivals.len() < 3 {
        let (n, from) = tokio::time::timeout(3 * SECOND, peer.recv_from(&mut buf))
            .await
            .expect("INVITE")
            .expect("recv");
        let msg = Message::parse(bytes::Bytes::copy_from_slice(&buf[..n]), &Limits::default())
            .expect("parses");
        arrivals.push(Instant::now());
        last = Some((msg, from));
    }
    // RFC 3261 Timer A: 0, T1 (500 ms), 3*T1 (1.5 s).
    let gaps: Vec<u128> = arrivals
        .windows(2)
        .map(|w| (w[1] - w[0]).as_millis())
        .collect();
    // Loose upper bounds for a loaded machine; the doubling is the point.
    assert!(
        (450..=800).contains(&gaps[0]) && (950..=1500).contains(&gaps[1]),
        "{gaps:?}"
    );
    assert!(gaps[1] > gaps[0] * 3 / 2, "{gaps:?}");
    let (msg, from) = last.expect("an INVITE");
    let req = msg.as_request().expect("a request");
    let busy = Response::to_request(req, StatusCode::BUSY_HERE, None).with_to_tag("busy");
    peer.send_to(&busy.to_bytes(), from)
        .await
        .expect("send 486");
    let err = dialing.await.expect("task").expect_err("busy");
    assert_eq!(err.status(), Some(486));
    // The 486 is ACKed within the INVITE transaction (same branch).
    let (n, _) = tokio::time::timeout(SECOND, peer.recv_from(&mut buf))
        .await
        .expect("ACK")
        .expect("recv");
    let ack = Message::parse(bytes::Bytes::copy_from_slice(&buf[..n]), &Limits::default())
        .expect("parses");
    let ack = ack.as_request().expect("a request");
    assert_eq!(ack.method.as_str(), "ACK");
    assert_eq!(
        ack.headers.top_via().expect("Via").branch(),
        req.headers.top_via().expect("Via").branch()
    );
    assert_eq!(ack.headers.to().expect("To").tag(), Some("busy"));
}
