use super::*;

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use rand::{Rng as _, SeedableRng as _};

/// Linphone 5 desktop: Opus, speex, G.711, three telephone-event clocks, and video.
const LINPHONE: &str = "v=0\r
o=alice 2436 1892 IN IP4 192.168.1.20\r
s=Talk\r
c=IN IP4 192.168.1.20\r
t=0 0\r
a=ice-pwd:31ec21eb38b2ec6d36e8dc7b\r
m=audio 7078 RTP/AVP 96 97 98 0 8 18 101 99 100\r
a=rtpmap:96 opus/48000/2\r
a=fmtp:96 useinbandfec=1\r
a=rtpmap:97 speex/16000\r
a=fmtp:97 vbr=on\r
a=rtpmap:98 speex/8000\r
a=fmtp:98 vbr=on\r
a=fmtp:18 annexb=yes\r
a=rtpmap:101 telephone-event/48000\r
a=rtpmap:99 telephone-event/16000\r
a=rtpmap:100 telephone-event/8000\r
a=rtcp-fb:* trr-int 1000\r
m=video 9078 RTP/AVP 96 97\r
a=rtpmap:96 VP8/90000\r
a=rtpmap:97 H264/90000\r
a=fmtp:97 profile-level-id=42801F\r
";

/// Zoiper 5: Opus first, G.722, G.711, GSM; rtcp-mux; bare LF line ends.
const ZOIPER: &str = "v=0
o=Z 0 1 IN IP4 10.0.0.5
s=Z
c=IN IP4 10.0.0.5
t=0 0
m=audio 8000 RTP/AVP 106 9 98 101 0 8 3
a=rtpmap:106 opus/48000/2
a=fmtp:106 sprop-maxcapturerate=16000; minptime=20; useinbandfec=1
a=rtpmap:98 telephone-event/48000
a=fmtp:98 0-16
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=sendrecv
a=rtcp-mux
";

/// A carrier SBC: G.711 only, ptime 20, maxptime 150.
const CARRIER: &str = "v=0\r
o=- 1234567890 1234567890 IN IP4 203.0.113.5\r
s=-\r
c=IN IP4 203.0.113.5\r
t=0 0\r
m=audio 16384 RTP/AVP 8 0 101\r
a=rtpmap:8 PCMA/8000\r
a=rtpmap:0 PCMU/8000\r
a=rtpmap:101 telephone-event/8000\r
a=fmtp:101 0-15\r
a=ptime:20\r
a=maxptime:150\r
a=sendrecv\r
";

/// A browser offer relayed to SIP: RTP/AVPF, media-level c=, rtcp-mux with a dummy a=rtcp.
const WEBRTC: &str = "v=0\r
o=- 4611731400430051336 2 IN IP4 127.0.0.1\r
s=-\r
t=0 0\r
a=group:BUNDLE 0\r
a=msid-semantic: WMS\r
m=audio 50000 RTP/AVPF 111 63 9 0 8 13 110 126\r
c=IN IP4 198.51.100.7\r
a=rtcp:9 IN IP4 0.0.0.0\r
a=mid:0\r
a=sendrecv\r
a=rtcp-mux\r
a=rtpmap:111 opus/48000/2\r
a=rtcp-fb:111 transport-cc\r
a=fmtp:111 minptime=10;useinbandfec=1\r
a=rtpmap:63 red/48000/2\r
a=fmtp:63 111/111\r
a=rtpmap:9 G722/8000\r
a=rtpmap:0 PCMU/8000\r
a=rtpmap:8 PCMA/8000\r
a=rtpmap:13 CN/8000\r
a=rtpmap:110 telephone-event/48000\r
a=rtpmap:126 telephone-event/8000\r
";

/// Grandstream/Asterisk-style SDES offer; the key examples are RFC 4568 §9.2's.
const SAVP: &str = "v=0\r
o=gs 8000 8000 IN IP4 172.16.0.9\r
s=SIP Call\r
c=IN IP4 172.16.0.9\r
t=0 0\r
m=audio 10000 RTP/SAVP 0 8 101\r
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4\r
a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj|2^20\r
a=rtpmap:101 telephone-event/8000\r
a=ptime:20\r
";

/// IPv6 desk phone with G.722 as a static payload type (no rtpmap).
const IPV6: &str = "v=0\r
o=- 1 1 IN IP6 2001:db8::1\r
s=-\r
c=IN IP6 2001:db8::1\r
t=0 0\r
m=audio 30000 RTP/AVP 9 101\r
a=rtpmap:101 telephone-event/8000\r
";

fn parse(text: &str) -> SessionDescription {
    match SessionDescription::parse(text) {
        Ok(sd) => sd,
        Err(e) => panic!("sample offer must parse: {e}"),
    }
}

fn answer(text: &str) -> Negotiated {
    answer_with(text, &AnswerPolicy::default())
}

fn answer_with(text: &str, policy: &AnswerPolicy) -> Negotiated {
    match negotiate(&parse(text), policy) {
        Ok(n) => n,
        Err(e) => panic!("offer must negotiate: {e}"),
    }
}

fn local() -> LocalMedia {
    LocalMedia {
        addr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)),
        port: 20_000,
        session_id: 42,
        version: 1,
        username: "dialin".into(),
    }
}

fn with_direction(text: &str, dir: &str) -> String {
    text.replace("a=sendrecv", &format!("a={dir}"))
}

// ---- parsing ----

#[test]
fn parses_linphone_offer_session_and_media() {
    let sd = parse(LINPHONE);
    assert_eq!(
        sd.origin.as_ref().map(|o| o.username.as_str()),
        Some("alice")
    );
    assert_eq!(sd.session_name.as_deref(), Some("Talk"));
    assert_eq!(
        sd.connection,
        Some(IpAddr::V4(Ipv4Addr::new(192, 168, 1, 20)))
    );
    assert_eq!(
        sd.attributes.first().map(|a| a.name.as_str()),
        Some("ice-pwd")
    );
    assert_eq!(sd.media.len(), 2);
    let audio = &sd.media[0];
    assert_eq!(audio.kind, MediaKind::Audio);
    assert_eq!(audio.port, 7078);
    assert_eq!(audio.transport, Transport::RtpAvp);
    assert_eq!(audio.formats.len(), 9);
    assert_eq!(audio.rtpmaps.len(), 6);
    let opus = audio.rtpmap(PayloadType::new(96).unwrap_or(PayloadType::new_const(0)));
    assert_eq!(
        opus.map(|m| (m.encoding.as_str(), m.clock_rate, m.channels)),
        Some(("opus", 48_000, Some(2)))
    );
    assert_eq!(
        audio
            .fmtps
            .iter()
            .find(|f| f.format == "18")
            .map(|f| f.parameters.as_str()),
        Some("annexb=yes")
    );
    assert_eq!(
        audio.attributes.first().map(|a| a.value.as_deref()),
        Some(Some("* trr-int 1000"))
    );
    assert_eq!(sd.media[1].kind, MediaKind::Video);
}

#[test]
fn bare_lf_line_ends_are_accepted() {
    let sd = parse(ZOIPER);
    assert_eq!(sd.media.len(), 1);
    assert!(sd.media[0].rtcp_mux);
    assert_eq!(sd.media[0].direction, Some(Direction::SendRecv));
}

#[test]
fn media_level_connection_overrides_session_level() {
    let text = CARRIER.replace("a=ptime:20\r\n", "c=IN IP4 203.0.113.99\r\na=ptime:20\r\n");
    let sd = parse(&text);
    assert_eq!(
        sd.connection_for(&sd.media[0]),
        Some(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 99)))
    );
}

#[test]
fn ipv6_connection_is_parsed() {
    let sd = parse(IPV6);
    assert_eq!(
        sd.connection,
        Some(IpAddr::V6(
            "2001:db8::1".parse().unwrap_or(Ipv6Addr::LOCALHOST)
        ))
    );
}

#[test]
fn crypto_line_decodes_key_lifetime_and_mki() {
    let sd = parse(SAVP);
    let c = &sd.media[0].crypto;
    assert_eq!(c.len(), 2);
    assert_eq!(c[0].tag, 1);
    assert_eq!(c[0].suite, CryptoSuite::AesCm128HmacSha1_80);
    assert_eq!(c[0].key_salt.len(), 30);
    assert_eq!(c[0].lifetime.as_deref(), Some("2^20"));
    assert_eq!(
        c[0].mki,
        Some(Mki {
            value: 1,
            length: 4
        })
    );
    assert_eq!(c[1].suite, CryptoSuite::AesCm128HmacSha1_32);
    assert_eq!(c[1].mki, None);
    assert_eq!(
        encode_key(&c[1].key_salt),
        "NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj"
    );
}

#[test]
fn unknown_crypto_suite_is_kept_with_its_raw_key() {
    let text = SAVP.replace(
        "a=ptime:20",
        "a=crypto:3 AES_256_CM_HMAC_SHA1_80 inline:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==",
    );
    let sd = parse(&text);
    let c = &sd.media[0].crypto[2];
    assert_eq!(
        c.suite,
        CryptoSuite::Other("AES_256_CM_HMAC_SHA1_80".into())
    );
    assert_eq!(c.key_salt.len(), 46);
}

#[test]
fn unknown_lines_and_attributes_are_kept_or_skipped() {
    let text = CARRIER.replace(
        "t=0 0\r\n",
        "i=info\r\nu=http://x\r\ne=a@b\r\nb=AS:64\r\nt=0 0\r\nr=7d 1h 0 25h\r\nz=0 0\r\nk=clear:x\r\nx=vendor\r\n",
    ) + "a=X-nat:0\r\n";
    let sd = parse(&text);
    assert_eq!(
        sd.media[0]
            .attributes
            .iter()
            .map(|a| a.name.as_str())
            .collect::<Vec<_>>(),
        ["X-nat"]
    );
}

#[test]
fn malformed_input_gives_an_error_naming_the_problem() {
    type Expect = fn(&SdpError) -> bool;
    let cases: &[(&str, Expect)] = &[
        ("", |e| *e == SdpError::Empty),
        ("o=- 1 1 IN IP4 1.2.3.4\r\n", |e| {
            matches!(e, SdpError::MissingVersion { line: 1 })
        }),
        ("this is not sdp\r\nv=0\r\n", |e| {
            matches!(e, SdpError::MalformedLine { line: 1 })
        }),
        ("v=1\r\n", |e| matches!(e, SdpError::UnsupportedVersion(_))),
        ("v=0\r\nc=IN IP4 999.1.1.1\r\n", |e| {
            matches!(e, SdpError::UnsupportedConnectionAddress(_))
        }),
        ("v=0\r\nc=IN IP4 pbx.example.com\r\n", |e| {
            matches!(e, SdpError::UnsupportedConnectionAddress(_))
        }),
        ("v=0\r\nc=IN IP4 ::1\r\n", |e| {
            matches!(e, SdpError::BadConnection(_))
        }),
        ("v=0\r\nc=ATM NSAP 47\r\n", |e| {
            matches!(e, SdpError::BadConnection(_))
        }),
        ("v=0\r\nm=audio 70000 RTP/AVP 0\r\n", |e| {
            matches!(e, SdpError::BadMedia(_))
        }),
        ("v=0\r\nm=audio 4000 RTP/AVP\r\n", |e| {
            matches!(e, SdpError::BadMedia(_))
        }),
        ("v=0\r\nm=\r\n", |e| matches!(e, SdpError::BadMedia(_))),
        // The c= of an audio stream we could use decides where our audio goes.
        (
            "v=0\r\nm=audio 4000 RTP/AVP 0\r\nc=IN IP4 pbx.example.com\r\n",
            |e| matches!(e, SdpError::UnsupportedConnectionAddress(_)),
        ),
    ];
    for (text, expected) in cases {
        match SessionDescription::parse(text) {
            Ok(sd) => panic!("{text:?} parsed as {sd:?}"),
            Err(e) => assert!(expected(&e), "{text:?} gave {e:?}"),
        }
    }
}

#[test]
fn malformed_attribute_lines_are_skipped_and_reported_with_their_error() {
    type Expect = fn(&SdpError) -> bool;
    let audio = "v=0\r\nc=IN IP4 10.1.1.1\r\nm=audio 4000 RTP/AVP 0\r\n";
    let cases: &[(&str, Expect)] = &[
        ("a=rtpmap:200 PCMU/8000", |e| {
            matches!(e, SdpError::BadRtpmap(_))
        }),
        ("a=rtpmap:0 PCMU", |e| matches!(e, SdpError::BadRtpmap(_))),
        ("a=rtpmap", |e| matches!(e, SdpError::BadRtpmap(_))),
        ("a=fmtp", |e| matches!(e, SdpError::BadFmtp(_))),
        ("a=ptime:abc", |e| matches!(e, SdpError::BadPtime(_))),
        ("a=maxptime:0", |e| matches!(e, SdpError::BadPtime(_))),
        ("a=rtcp:x", |e| matches!(e, SdpError::BadRtcp(_))),
        ("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:@@@", |e| {
            matches!(e, SdpError::BadCrypto(_))
        }),
        ("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:AAAA", |e| {
            matches!(e, SdpError::BadCrypto(_))
        }),
        ("a=crypto:1 AES_CM_128_HMAC_SHA1_80 key:AAAA", |e| {
            matches!(e, SdpError::BadCrypto(_))
        }),
        ("this is not sdp", |e| {
            matches!(e, SdpError::MalformedLine { line: 4 })
        }),
    ];
    for (line, expected) in cases {
        let text = format!("{audio}{line}\r\na=sendonly\r\n");
        let sd = parse(&text);
        assert_eq!(sd.ignored.len(), 1, "{line:?}: {:?}", sd.ignored);
        assert_eq!(sd.ignored[0].line, 4, "{line:?}");
        assert!(
            expected(&sd.ignored[0].error),
            "{line:?} gave {:?}",
            sd.ignored[0]
        );
        // The lines around it still count, and the stream still negotiates.
        assert_eq!(sd.media[0].direction, Some(Direction::SendOnly), "{line:?}");
        let n = answer(&text);
        assert_eq!(n.codec.codec, Codec::Pcmu, "{line:?}");
        assert_eq!(
            n.ptime_ms, 20,
            "{line:?}: the default when a=ptime is unusable"
        );
    }
    // A malformed o= is not needed either.
    let sd = parse(&CARRIER.replace("o=- 1234567890 1234567890 IN IP4 203.0.113.5", "o=- 1"));
    assert!(sd.origin.is_none());
    assert!(matches!(sd.ignored[0].error, SdpError::BadOrigin(_)));
}

#[test]
fn rfc4475_offer_with_a_malformed_rtpmap_in_its_video_section_is_answered() {
    // The body of RFC 4475 esc01, longreq, baddate, escruri...: `a=rtpmap:31 LPC` has no
    // clock rate, inside a video section we reject anyway.
    let text = "v=0\r\no=mhandley 29739 7272939 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\n\
                t=0 0\r\nm=audio 49217 RTP/AVP 0 12\r\nm=video 3227 RTP/AVP 31\r\na=rtpmap:31 LPC\r\n";
    let sd = parse(text);
    assert_eq!(sd.ignored.len(), 1);
    assert_eq!(sd.ignored[0].line, 8);
    let n = answer(text);
    assert_eq!(n.codec.codec, Codec::Pcmu);
    let a = parse(&n.answer_sdp(&local()));
    assert_eq!(a.media.len(), 2);
    assert_eq!(
        (a.media[1].kind.clone(), a.media[1].port),
        (MediaKind::Video, 0)
    );
}

#[test]
fn malformed_lines_of_a_section_we_reject_do_not_fail_the_offer() {
    let sections = [
        // Port 0: the peer disabled it.
        "m=audio 0 RTP/AVP 0\r\nc=IN IP4 pbx.example.com\r\na=rtpmap:0 PCMU\r\n",
        // Video with an unusable address and a broken crypto line.
        "m=video 3227 RTP/SAVP 31\r\nc=IN IP4 999.1.1.1\r\na=crypto:1 X inline:@@\r\n",
        // Not RTP at all.
        "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=ATM NSAP 47\r\n",
        // A malformed m= line of a type we reject stays in place, disabled.
        "m=video 99999 RTP/AVP 31\r\na=rtpmap:31 H261\r\n",
        "m=video 0 RTP/AVP\r\n",
    ];
    for section in sections {
        let text = CARRIER.to_owned() + section;
        let sd = parse(&text);
        assert!(!sd.ignored.is_empty(), "{section:?}");
        assert_eq!(sd.media.len(), 2, "{section:?}");
        let n = answer(&text);
        assert_eq!(n.remote_rtp, SocketAddr::from(([203, 0, 113, 5], 16384)));
        let a = parse(&n.answer_sdp(&local()));
        assert_eq!(
            a.media.len(),
            2,
            "one answer line per offered line: {section:?}"
        );
        assert_eq!(a.media[1].port, 0, "{section:?}");
        assert!(
            a.ignored.is_empty(),
            "our answer is well formed: {section:?}"
        );
    }
}

#[test]
fn what_cannot_be_negotiated_is_still_refused() {
    // The only audio stream has a broken rtpmap for its only codec: nothing in common.
    let text = "v=0\r\nc=IN IP4 10.1.1.1\r\nm=audio 4000 RTP/AVP 96\r\na=rtpmap:96 opus\r\n";
    assert_eq!(
        negotiate(&parse(text), &AnswerPolicy::default()).map(|n| n.codec),
        Err(NegotiationError::NoCommonCodec)
    );
    // Only a rejected video section.
    let text = "v=0\r\nc=IN IP4 10.1.1.1\r\nm=video 4000 RTP/AVP 31\r\na=rtpmap:31 LPC\r\n";
    assert_eq!(
        negotiate(&parse(text), &AnswerPolicy::default()).map(|n| n.codec),
        Err(NegotiationError::NoAudioStream)
    );
}

#[test]
fn more_media_lines_than_the_bound_are_refused() {
    let text =
        "v=0\r\n".to_owned() + &"m=audio 4000 RTP/AVP 0\r\n".repeat(MAX_MEDIA_DESCRIPTIONS + 1);
    assert_eq!(
        SessionDescription::parse(&text),
        Err(SdpError::TooManyMedia)
    );
}

#[test]
fn random_and_mutated_input_never_panics() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5d9_2026);
    let samples = [LINPHONE, ZOIPER, CARRIER, WEBRTC, SAVP, IPV6];
    let alphabet = b"v=0acmos:/ \r\n0123456789IPN4.-|^;AVSRT\xc3\xa9\x00";
    let mut parsed = 0usize;
    for round in 0..30_000 {
        let bytes: Vec<u8> = if round % 5 == 0 {
            (0..rng.gen_range(0..200))
                .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
                .collect()
        } else {
            let mut b = samples[round % samples.len()].as_bytes().to_vec();
            for _ in 0..rng.gen_range(1..6) {
                if b.is_empty() {
                    break;
                }
                let i = rng.gen_range(0..b.len());
                match rng.gen_range(0..3) {
                    0 => b[i] = alphabet[rng.gen_range(0..alphabet.len())],
                    1 => {
                        b.remove(i);
                    }
                    _ => b.insert(i, alphabet[rng.gen_range(0..alphabet.len())]),
                }
            }
            b
        };
        let Ok(text) = std::str::from_utf8(&bytes) else {
            continue;
        };
        if let Ok(sd) = SessionDescription::parse(text) {
            parsed += 1;
            // Whatever parses must negotiate or fail cleanly, and answers must re-parse.
            if let Ok(n) = negotiate(&sd, &AnswerPolicy::default()) {
                assert!(SessionDescription::parse(&n.answer_sdp(&local())).is_ok());
            }
        }
    }
    assert!(
        parsed > 1000,
        "mutations should mostly leave parsable SDP, got {parsed}"
    );
}

// ---- negotiation of real-world offers ----

#[test]
fn linphone_offer_gets_opus_with_48k_telephone_event_and_video_rejected() {
    let n = answer(LINPHONE);
    assert_eq!(n.codec.codec, Codec::Opus);
    assert_eq!(n.codec.payload_type.get(), 96);
    assert_eq!((n.codec.clock_rate, n.codec.channels), (48_000, 2));
    assert_eq!(n.codec.remote_fmtp.as_deref(), Some("useinbandfec=1"));
    assert_eq!(n.telephone_event.map(PayloadType::get), Some(101));
    assert_eq!(n.remote_rtp, SocketAddr::from(([192, 168, 1, 20], 7078)));
    assert_eq!(n.remote_rtcp, SocketAddr::from(([192, 168, 1, 20], 7079)));
    assert!(!n.rtcp_mux);
    let sdp = n.answer_sdp(&local());
    let a = parse(&sdp);
    assert_eq!(a.media.len(), 2);
    assert_eq!(a.media[1].kind, MediaKind::Video);
    assert_eq!(a.media[1].port, 0);
}

#[test]
fn zoiper_offer_gets_opus_and_rtcp_mux_echoed() {
    let n = answer(ZOIPER);
    assert_eq!(
        (n.codec.codec, n.codec.payload_type.get()),
        (Codec::Opus, 106)
    );
    assert_eq!(n.telephone_event.map(PayloadType::get), Some(98));
    assert!(n.rtcp_mux);
    assert_eq!(n.remote_rtcp, n.remote_rtp);
    assert!(parse(&n.answer_sdp(&local())).media[0].rtcp_mux);
}

#[test]
fn rtcp_mux_is_not_echoed_when_policy_refuses_it() {
    let policy = AnswerPolicy {
        rtcp_mux: false,
        ..AnswerPolicy::default()
    };
    let n = answer_with(ZOIPER, &policy);
    assert!(!n.rtcp_mux);
    assert_eq!(n.remote_rtcp.port(), 8001);
    assert!(!parse(&n.answer_sdp(&local())).media[0].rtcp_mux);
}

#[test]
fn carrier_g711_offer_gets_pcmu_by_our_preference_with_telephone_event() {
    let n = answer(CARRIER);
    assert_eq!(
        (n.codec.codec, n.codec.payload_type.get()),
        (Codec::Pcmu, 0)
    );
    assert_eq!((n.codec.clock_rate, n.codec.channels), (8_000, 1));
    assert_eq!(n.telephone_event.map(PayloadType::get), Some(101));
    assert_eq!(n.ptime_ms, 20);
}

#[test]
fn codec_preference_list_is_configurable() {
    let policy = AnswerPolicy {
        codecs: vec![Codec::Pcma, Codec::Pcmu],
        ..AnswerPolicy::default()
    };
    assert_eq!(answer_with(CARRIER, &policy).codec.codec, Codec::Pcma);
    let policy = AnswerPolicy {
        codecs: vec![Codec::G722, Codec::Pcmu],
        ..AnswerPolicy::default()
    };
    assert_eq!(answer_with(WEBRTC, &policy).codec.codec, Codec::G722);
}

#[test]
fn webrtc_offer_uses_media_level_connection_and_mux_over_dummy_rtcp() {
    let n = answer(WEBRTC);
    assert_eq!(n.transport, Transport::RtpAvpf);
    assert_eq!(
        (n.codec.codec, n.codec.payload_type.get()),
        (Codec::Opus, 111)
    );
    assert_eq!(n.telephone_event.map(PayloadType::get), Some(110));
    assert_eq!(n.remote_rtp, SocketAddr::from(([198, 51, 100, 7], 50000)));
    assert_eq!(n.remote_rtcp, n.remote_rtp);
    assert_eq!(
        parse(&n.answer_sdp(&local())).media[0].transport,
        Transport::RtpAvpf
    );
}

#[test]
fn g722_gets_telephone_event_at_its_8000_rtp_clock() {
    let n = answer(IPV6);
    assert_eq!(
        (n.codec.codec, n.codec.payload_type.get()),
        (Codec::G722, 9)
    );
    assert_eq!(n.codec.clock_rate, 8_000);
    assert_eq!(n.telephone_event.map(PayloadType::get), Some(101));
    let a = parse(&n.answer_sdp(&local()));
    let te = a.media[0].rtpmap(PayloadType::new_const(101));
    assert_eq!(te.map(|m| m.clock_rate), Some(8_000));
    assert_eq!(
        a.media[0]
            .rtpmap(PayloadType::new_const(9))
            .map(|m| m.encoding.as_str()),
        Some("G722")
    );
}

#[test]
fn ipv6_offer_gives_ipv6_remote_addresses() {
    let n = answer(IPV6);
    let ip: IpAddr = "2001:db8::1"
        .parse()
        .unwrap_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
    assert_eq!(n.remote_rtp, SocketAddr::new(ip, 30000));
    assert_eq!(n.remote_rtcp, SocketAddr::new(ip, 30001));
}

#[test]
fn telephone_event_at_another_clock_is_used_when_it_is_the_only_one() {
    // baresip: Opus offered with only an 8 kHz telephone-event, and no 8 kHz codec to fall
    // back to. DTMF is how PINs arrive, so the event payload is kept at its offered rate.
    let text = "v=0\r\no=- 1 1 IN IP4 10.1.1.1\r\ns=-\r\nc=IN IP4 10.1.1.1\r\nt=0 0\r\n\
                m=audio 4000 RTP/AVP 96 101\r\na=rtpmap:96 opus/48000/2\r\na=rtpmap:101 telephone-event/8000\r\n\
                a=fmtp:101 0-15\r\n";
    let n = answer(text);
    assert_eq!(n.codec.codec, Codec::Opus);
    assert_eq!(n.telephone_event.map(PayloadType::get), Some(101));
    assert_eq!(n.telephone_event_rate, Some(8_000));
    let a = parse(&n.answer_sdp(&local()));
    let m = &a.media[0];
    assert_eq!(m.formats, ["96", "101"]);
    assert_eq!(
        m.rtpmap(PayloadType::new_const(101))
            .map(|r| (r.encoding.as_str(), r.clock_rate)),
        Some(("telephone-event", 8_000)),
        "the answer lists the event payload at its offered rate"
    );
}

#[test]
fn telephone_event_at_the_codec_clock_is_preferred_over_another_rate() {
    let n = answer(LINPHONE);
    assert_eq!(
        (
            n.telephone_event.map(PayloadType::get),
            n.telephone_event_rate
        ),
        (Some(101), Some(48_000))
    );
    let n = answer(CARRIER);
    assert_eq!(n.telephone_event_rate, Some(8_000));
    // Offered first at the other rate, the matching one still wins.
    let text = "v=0\r\nc=IN IP4 10.1.1.1\r\nm=audio 4000 RTP/AVP 96 101 110\r\n\
                a=rtpmap:96 opus/48000/2\r\na=rtpmap:101 telephone-event/8000\r\n\
                a=rtpmap:110 telephone-event/48000\r\n";
    let n = answer(text);
    assert_eq!(
        (
            n.telephone_event.map(PayloadType::get),
            n.telephone_event_rate
        ),
        (Some(110), Some(48_000))
    );
}

#[test]
fn codec_with_dtmf_is_preferred_over_a_better_codec_without() {
    let text = "v=0\r\no=- 1 1 IN IP4 10.1.1.1\r\ns=-\r\nc=IN IP4 10.1.1.1\r\nt=0 0\r\n\
                m=audio 4000 RTP/AVP 96 0 101\r\na=rtpmap:96 opus/48000/2\r\na=rtpmap:101 telephone-event/8000\r\n";
    let n = answer(text);
    assert_eq!(
        (n.codec.codec, n.telephone_event.map(PayloadType::get)),
        (Codec::Pcmu, Some(101))
    );
    let strict = AnswerPolicy {
        prefer_codec_with_telephone_event: false,
        ..AnswerPolicy::default()
    };
    // Without the preference the best codec is kept, with the events at their own rate.
    let n = answer_with(text, &strict);
    assert_eq!(
        (
            n.codec.codec,
            n.telephone_event.map(PayloadType::get),
            n.telephone_event_rate
        ),
        (Codec::Opus, Some(101), Some(8_000))
    );
}

#[test]
fn telephone_event_is_left_out_when_policy_disables_it() {
    let policy = AnswerPolicy {
        telephone_event: false,
        ..AnswerPolicy::default()
    };
    let n = answer_with(CARRIER, &policy);
    assert_eq!((n.telephone_event, n.telephone_event_rate), (None, None));
    assert!(!n.answer_sdp(&local()).contains("telephone-event"));
}

#[test]
fn offer_without_common_codec_is_not_acceptable() {
    let text = CARRIER
        .replace("RTP/AVP 8 0 101", "RTP/AVP 18 101")
        .replace("a=rtpmap:8 PCMA/8000\r\n", "");
    let text = text.replace("a=rtpmap:0 PCMU/8000\r\n", "a=rtpmap:18 G729/8000\r\n");
    assert_eq!(
        negotiate(&parse(&text), &AnswerPolicy::default()),
        Err(NegotiationError::NoCommonCodec)
    );
}

#[test]
fn dynamic_payload_type_without_rtpmap_is_not_guessed() {
    let text = CARRIER
        .replace("RTP/AVP 8 0 101", "RTP/AVP 96")
        .replace("a=rtpmap:8 PCMA/8000\r\n", "");
    let text = text.replace("a=rtpmap:0 PCMU/8000\r\n", "");
    assert_eq!(
        negotiate(&parse(&text), &AnswerPolicy::default()),
        Err(NegotiationError::NoCommonCodec)
    );
}

#[test]
fn offer_without_audio_is_refused() {
    let text = "v=0\r\no=- 1 1 IN IP4 10.1.1.1\r\ns=-\r\nc=IN IP4 10.1.1.1\r\nt=0 0\r\nm=video 4000 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\n";
    assert_eq!(
        negotiate(&parse(text), &AnswerPolicy::default()),
        Err(NegotiationError::NoAudioStream)
    );
    let disabled = CARRIER.replace("m=audio 16384", "m=audio 0");
    assert_eq!(
        negotiate(&parse(&disabled), &AnswerPolicy::default()),
        Err(NegotiationError::NoAudioStream)
    );
}

#[test]
fn audio_without_connection_address_is_refused() {
    let text = CARRIER.replace("c=IN IP4 203.0.113.5\r\n", "");
    assert_eq!(
        negotiate(&parse(&text), &AnswerPolicy::default()),
        Err(NegotiationError::MissingConnectionAddress)
    );
}

#[test]
fn second_audio_stream_is_taken_when_the_first_is_not_acceptable() {
    // An SRTP line and a plain fallback line, as some phones send; SRTP disabled here.
    let text =
        SAVP.to_owned() + "m=audio 10002 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n";
    let policy = AnswerPolicy {
        srtp: SrtpPolicy::Disable,
        ..AnswerPolicy::default()
    };
    let n = answer_with(&text, &policy);
    assert_eq!(n.remote_rtp.port(), 10002);
    assert!(n.srtp.is_none());
    let a = parse(&n.answer_sdp(&local()));
    assert_eq!((a.media[0].port, a.media[1].port), (0, local().port));
}

#[test]
fn ptime_follows_the_offer_within_maxptime_else_defaults_to_20() {
    assert_eq!(answer(LINPHONE).ptime_ms, 20);
    let n = answer(&CARRIER.replace("a=ptime:20", "a=ptime:30"));
    assert_eq!(n.ptime_ms, 30);
    assert_eq!(n.local_ptime_ms, 20);
    let capped = CARRIER
        .replace("a=ptime:20", "a=ptime:60")
        .replace("a=maxptime:150", "a=maxptime:40");
    assert_eq!(answer(&capped).ptime_ms, 40);
    assert_eq!(
        answer(&CARRIER.replace("a=ptime:20", "a=ptime:25")).ptime_ms,
        20
    );
    let policy = AnswerPolicy {
        ptime_ms: 30,
        ..AnswerPolicy::default()
    };
    let n = answer_with(LINPHONE, &policy);
    assert_eq!(n.ptime_ms, 30);
    assert_eq!(parse(&n.answer_sdp(&local())).media[0].ptime, Some(30));
}

// ---- direction and hold ----

#[test]
fn direction_is_answered_per_rfc3264() {
    for (offered, ours) in [
        ("sendrecv", Direction::SendRecv),
        ("sendonly", Direction::RecvOnly),
        ("recvonly", Direction::SendOnly),
        ("inactive", Direction::Inactive),
    ] {
        let n = answer(&with_direction(CARRIER, offered));
        assert_eq!(n.local_direction, ours, "offer {offered}");
        assert_eq!(
            parse(&n.answer_sdp(&local())).media[0].direction,
            Some(ours)
        );
    }
}

#[test]
fn session_level_direction_applies_to_media_without_its_own() {
    let text = CARRIER
        .replace("a=sendrecv\r\n", "")
        .replace("t=0 0\r\n", "t=0 0\r\na=sendonly\r\n");
    let n = answer(&text);
    assert_eq!(
        (n.remote_direction, n.local_direction),
        (Direction::SendOnly, Direction::RecvOnly)
    );
    assert_eq!(n.hold, HoldState::HeldByRemote);
}

#[test]
fn sendonly_and_inactive_offers_are_hold_recvonly_is_not() {
    assert_eq!(
        answer(&with_direction(CARRIER, "sendonly")).hold,
        HoldState::HeldByRemote
    );
    assert_eq!(
        answer(&with_direction(CARRIER, "inactive")).hold,
        HoldState::HeldByRemote
    );
    assert_eq!(
        answer(&with_direction(CARRIER, "recvonly")).hold,
        HoldState::Active
    );
    assert_eq!(answer(CARRIER).hold, HoldState::Active);
}

#[test]
fn old_style_hold_with_zero_address_stops_our_sending() {
    let n = answer(&CARRIER.replace("c=IN IP4 203.0.113.5", "c=IN IP4 0.0.0.0"));
    assert_eq!(n.hold, HoldState::HeldByRemote);
    assert_eq!(n.remote_direction, Direction::SendOnly);
    assert!(!n.local_direction.sends());
}

#[test]
fn reoffer_detects_hold_and_resume() {
    let first = answer(CARRIER);
    let policy = AnswerPolicy::default();
    let held = first.renegotiate(&parse(&with_direction(CARRIER, "sendonly")), &policy);
    let held = held.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(held.hold_transition_from(&first), HoldTransition::Held);
    let zero = first.renegotiate(&parse(&CARRIER.replace("203.0.113.5", "0.0.0.0")), &policy);
    assert_eq!(
        zero.map(|z| z.hold_transition_from(&first)),
        Ok(HoldTransition::Held)
    );
    let resumed = held
        .renegotiate(&parse(CARRIER), &policy)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resumed.hold_transition_from(&held), HoldTransition::Resumed);
    assert_eq!(
        resumed
            .renegotiate(&parse(CARRIER), &policy)
            .map(|r| r.hold_transition_from(&resumed)),
        Ok(HoldTransition::Unchanged)
    );
}

#[test]
fn reoffer_keeps_the_codec_in_use_when_still_offered() {
    let policy = AnswerPolicy {
        prefer_codec_with_telephone_event: false,
        ..AnswerPolicy::default()
    };
    let first = answer_with(
        &CARRIER.replace("RTP/AVP 8 0 101", "RTP/AVP 8 101"),
        &policy,
    );
    assert_eq!(first.codec.codec, Codec::Pcma);
    let again = first.renegotiate(&parse(CARRIER), &AnswerPolicy::default());
    assert_eq!(again.map(|n| n.codec.codec), Ok(Codec::Pcma));
}

// ---- SRTP ----

#[test]
fn savp_offer_is_answered_with_our_key_in_the_chosen_suite_and_tag() {
    let n = answer(SAVP);
    let srtp = n.srtp.clone().unwrap_or_else(|| panic!("SRTP expected"));
    // Tag 1 asks for an MKI, which we don't run, so tag 2 is chosen.
    assert_eq!(
        (srtp.tag, &srtp.suite),
        (2, &CryptoSuite::AesCm128HmacSha1_32)
    );
    let offered = &parse(SAVP).media[0].crypto[1].key_salt;
    assert_eq!(&srtp.remote_key_salt[..], &offered[..]);
    assert_ne!(srtp.local_key_salt, srtp.remote_key_salt);
    assert_ne!(srtp.local_key_salt, [0u8; 30]);
    let a = parse(&n.answer_sdp(&local()));
    assert_eq!(a.media[0].transport, Transport::RtpSavp);
    let c = &a.media[0].crypto;
    assert_eq!(c.len(), 1);
    assert_eq!(
        (c[0].tag, &c[0].suite),
        (2, &CryptoSuite::AesCm128HmacSha1_32)
    );
    assert_eq!(&c[0].key_salt[..], &srtp.local_key_salt[..]);
}

#[test]
fn each_answer_draws_a_fresh_srtp_key() {
    let a = answer(SAVP).srtp.map(|s| s.local_key_salt);
    let b = answer(SAVP).srtp.map(|s| s.local_key_salt);
    assert!(a.is_some());
    assert_ne!(a, b);
}

#[test]
fn savp_offer_is_refused_when_srtp_is_disabled() {
    let policy = AnswerPolicy {
        srtp: SrtpPolicy::Disable,
        ..AnswerPolicy::default()
    };
    assert_eq!(
        negotiate(&parse(SAVP), &policy),
        Err(NegotiationError::SrtpNotAllowed)
    );
}

#[test]
fn plain_offer_is_refused_when_srtp_is_required() {
    let policy = AnswerPolicy {
        srtp: SrtpPolicy::Require,
        ..AnswerPolicy::default()
    };
    assert_eq!(
        negotiate(&parse(CARRIER), &policy),
        Err(NegotiationError::SrtpRequired)
    );
    assert!(answer_with(SAVP, &policy).srtp.is_some());
}

#[test]
fn savp_offer_without_usable_crypto_is_refused() {
    let no_crypto: String = SAVP
        .lines()
        .filter(|l| !l.starts_with("a=crypto"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        negotiate(&parse(&no_crypto), &AnswerPolicy::default()),
        Err(NegotiationError::NoAcceptableCrypto)
    );
    let only_mki: String = SAVP
        .lines()
        .filter(|l| !l.starts_with("a=crypto:2"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        negotiate(&parse(&only_mki), &AnswerPolicy::default()),
        Err(NegotiationError::NoAcceptableCrypto)
    );
}

#[test]
fn best_effort_crypto_on_plain_rtp_is_used_when_allowed_and_ignored_when_disabled() {
    let text = SAVP.replace("RTP/SAVP", "RTP/AVP");
    let n = answer(&text);
    assert!(n.srtp.is_some());
    assert_eq!(n.transport, Transport::RtpAvp);
    assert_eq!(parse(&n.answer_sdp(&local())).media[0].crypto.len(), 1);
    let policy = AnswerPolicy {
        srtp: SrtpPolicy::Disable,
        ..AnswerPolicy::default()
    };
    let n = answer_with(&text, &policy);
    assert!(n.srtp.is_none());
    assert!(parse(&n.answer_sdp(&local())).media[0].crypto.is_empty());
}

#[test]
fn reoffer_with_same_crypto_keeps_our_key() {
    let first = answer(SAVP);
    let again = first.renegotiate(&parse(SAVP), &AnswerPolicy::default());
    let key = |n: &Negotiated| n.srtp.as_ref().map(|s| s.local_key_salt);
    assert_eq!(again.as_ref().map(key), Ok(key(&first)));
}

#[test]
fn srtp_keys_do_not_appear_in_debug_output() {
    let n = answer(SAVP);
    let key = n
        .srtp
        .as_ref()
        .map(|s| s.local_key_salt[0])
        .unwrap_or_default();
    let debug = format!("{:?}", n.srtp);
    assert!(debug.contains("AesCm128HmacSha1_32"));
    assert!(!debug.contains("key_salt"), "{debug} {key}");
}

// ---- answer text ----

#[test]
fn answer_text_round_trips_through_the_parser() {
    let n = answer(LINPHONE);
    let text = n.answer_sdp(&local());
    assert!(text.ends_with("\r\n"));
    assert!(text.starts_with(
        "v=0\r\no=dialin 42 1 IN IP4 192.0.2.10\r\ns=dialin\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
    ));
    let a = parse(&text);
    assert_eq!(a.connection, Some(local().addr));
    let m = &a.media[0];
    assert_eq!(
        (m.kind.clone(), m.port, m.transport.clone()),
        (MediaKind::Audio, 20_000, Transport::RtpAvp)
    );
    assert_eq!(m.formats, ["96", "101"]);
    let opus = PayloadType::new_const(96);
    assert_eq!(
        m.rtpmap(opus)
            .map(|r| (r.encoding.as_str(), r.clock_rate, r.channels)),
        Some(("opus", 48_000, Some(2)))
    );
    assert_eq!(m.fmtp(opus), Some("minptime=10;useinbandfec=1"));
    let te = PayloadType::new_const(101);
    assert_eq!(
        m.rtpmap(te).map(|r| (r.encoding.as_str(), r.clock_rate)),
        Some(("telephone-event", 48_000))
    );
    assert_eq!(m.fmtp(te), Some("0-16"));
    assert_eq!(m.ptime, Some(20));
    assert_eq!(m.direction, Some(Direction::SendRecv));
    // The answer, read back as an offer, negotiates to the same codec.
    let back =
        negotiate(&a, &AnswerPolicy::default()).map(|b| (b.codec.codec, b.codec.payload_type));
    assert_eq!(back, Ok((Codec::Opus, opus)));
}

#[test]
fn answer_from_ipv6_local_address_uses_ip6() {
    let mut l = local();
    l.addr = IpAddr::V6("2001:db8::10".parse().unwrap_or(Ipv6Addr::LOCALHOST));
    let text = answer(IPV6).answer_sdp(&l);
    assert!(text.contains("c=IN IP6 2001:db8::10\r\n"));
    assert_eq!(parse(&text).connection, Some(l.addr));
}

#[test]
fn answer_username_with_spaces_stays_one_field() {
    let mut l = local();
    l.username = "a b".into();
    let a = parse(&answer(CARRIER).answer_sdp(&l));
    assert_eq!(
        a.origin.map(|o| (o.username, o.session_id)),
        Some(("ab".into(), "42".into()))
    );
}

// ---- we offer (INVITE without SDP), the answer comes in the ACK ----

#[test]
fn our_offer_lists_preferred_codecs_with_dtmf_at_both_clocks() {
    let offer = build_offer(&OfferPolicy::default(), &local());
    let sd = parse(&offer.sdp);
    let m = &sd.media[0];
    assert_eq!(m.transport, Transport::RtpAvp);
    assert_eq!(m.formats, ["111", "9", "0", "8", "110", "101"]);
    assert_eq!(
        m.fmtp(PayloadType::new_const(111)),
        Some("minptime=10;useinbandfec=1")
    );
    assert_eq!(
        m.rtpmap(PayloadType::new_const(110)).map(|r| r.clock_rate),
        Some(48_000)
    );
    assert_eq!(
        m.rtpmap(PayloadType::new_const(101)).map(|r| r.clock_rate),
        Some(8_000)
    );
    assert!(m.rtcp_mux);
    assert!(m.crypto.is_empty());
}

#[test]
fn offer_answer_between_two_gateways_agrees_on_codec_and_swaps_keys() {
    let policy = OfferPolicy {
        srtp: SrtpPolicy::Require,
        ..OfferPolicy::default()
    };
    let offer = build_offer(&policy, &local());
    let offer_sd = parse(&offer.sdp);
    assert_eq!(offer_sd.media[0].transport, Transport::RtpSavp);
    assert_eq!(offer_sd.media[0].crypto.len(), 2);

    let peer_policy = AnswerPolicy {
        codecs: vec![Codec::Pcma],
        ..AnswerPolicy::default()
    };
    let peer = negotiate(&offer_sd, &peer_policy).unwrap_or_else(|e| panic!("{e}"));
    let mut peer_local = local();
    peer_local.addr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 20));
    peer_local.port = 30_000;
    let answer_sd = parse(&peer.answer_sdp(&peer_local));

    let ours = accept_answer(&offer, &answer_sd).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (ours.codec.codec, ours.codec.payload_type.get()),
        (Codec::Pcma, 8)
    );
    assert_eq!(ours.telephone_event.map(PayloadType::get), Some(101));
    assert_eq!(ours.remote_rtp, SocketAddr::from(([192, 0, 2, 20], 30_000)));
    assert!(ours.rtcp_mux);
    let (o, p) = (
        ours.srtp.unwrap_or_else(|| panic!("srtp")),
        peer.srtp.unwrap_or_else(|| panic!("srtp")),
    );
    assert_eq!((o.tag, &o.suite), (p.tag, &p.suite));
    assert_eq!(o.local_key_salt, p.remote_key_salt);
    assert_eq!(o.remote_key_salt, p.local_key_salt);
}

#[test]
fn answer_picks_the_answerers_first_codec_and_its_payload_type() {
    let offer = build_offer(&OfferPolicy::default(), &local());
    let answer = "v=0\r\no=- 5 5 IN IP4 10.9.9.9\r\ns=-\r\nc=IN IP4 10.9.9.9\r\nt=0 0\r\n\
                  m=audio 6000 RTP/AVP 8 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=ptime:30\r\na=sendonly\r\n";
    let n = accept_answer(&offer, &parse(answer)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(n.codec.codec, Codec::Pcma);
    assert_eq!(n.ptime_ms, 30);
    assert!(!n.rtcp_mux);
    assert_eq!(n.remote_rtcp.port(), 6001);
    assert_eq!(
        (n.remote_direction, n.local_direction, n.hold),
        (
            Direction::SendOnly,
            Direction::RecvOnly,
            HoldState::HeldByRemote
        )
    );
    assert!(n.srtp.is_none());
}

#[test]
fn answer_with_telephone_event_at_another_clock_keeps_dtmf_at_that_rate() {
    let offer = build_offer(&OfferPolicy::default(), &local());
    let answer = "v=0\r\nc=IN IP4 10.9.9.9\r\nm=audio 6000 RTP/AVP 111 100\r\n\
                  a=rtpmap:111 opus/48000/2\r\na=rtpmap:100 telephone-event/8000\r\n";
    let n = accept_answer(&offer, &parse(answer)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(n.codec.codec, Codec::Opus);
    assert_eq!(
        (
            n.telephone_event.map(PayloadType::get),
            n.telephone_event_rate
        ),
        (Some(100), Some(8_000))
    );
}

#[test]
fn answer_rejecting_our_stream_or_codecs_is_an_error() {
    let offer = build_offer(&OfferPolicy::default(), &local());
    let base = "v=0\r\no=- 5 5 IN IP4 10.9.9.9\r\ns=-\r\nc=IN IP4 10.9.9.9\r\nt=0 0\r\n";
    let rejected = format!("{base}m=audio 0 RTP/AVP 0\r\n");
    assert_eq!(
        accept_answer(&offer, &parse(&rejected)),
        Err(NegotiationError::StreamRejected)
    );
    let foreign = format!("{base}m=audio 6000 RTP/AVP 18\r\n");
    assert_eq!(
        accept_answer(&offer, &parse(&foreign)),
        Err(NegotiationError::NoCommonCodec)
    );
}

#[test]
fn plain_answer_to_our_required_srtp_offer_is_refused() {
    let offer = build_offer(
        &OfferPolicy {
            srtp: SrtpPolicy::Require,
            ..OfferPolicy::default()
        },
        &local(),
    );
    let answer = "v=0\r\no=- 5 5 IN IP4 10.9.9.9\r\ns=-\r\nc=IN IP4 10.9.9.9\r\nt=0 0\r\nm=audio 6000 RTP/SAVP 0\r\n";
    assert_eq!(
        accept_answer(&offer, &parse(answer)),
        Err(NegotiationError::SrtpRequired)
    );
}

#[test]
fn non_rtp_media_lines_are_rejected_with_port_zero_in_order() {
    let text = WEBRTC.to_owned()
        + "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=sctp-port:5000\r\n";
    let a = parse(&answer(&text).answer_sdp(&local()));
    assert_eq!(a.media.len(), 2);
    assert_eq!(
        (a.media[0].kind.clone(), a.media[0].port),
        (MediaKind::Audio, local().port)
    );
    let m = &a.media[1];
    assert_eq!(
        (m.kind.as_str(), m.port, m.transport.as_str()),
        ("application", 0, "UDP/DTLS/SCTP")
    );
    assert_eq!(m.formats, ["webrtc-datachannel"]);
}
