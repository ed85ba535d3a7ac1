use super::*;

use rand::{Rng as _, SeedableRng as _};

const REALM: &str = "dialin.example";
const SECRET: &[u8] = b"nonce secret shared by the nodes";
const TTL: Duration = Duration::from_secs(300);
const URI: &str = "sip:+15551230000@gw.example";

fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn server() -> DigestServer {
    DigestServer::new(REALM, SECRET, TTL)
}

fn alice(user: &str) -> Option<Credential> {
    (user == "alice").then(|| Credential::Password("s3cret pass".to_owned()))
}

/// Pulls a parameter out of a challenge value with the server's own parser.
fn challenge_param(challenge: &str, name: &str) -> String {
    let p = parse_authorization(challenge)
        .ok()
        .and_then(|p| p.get(name).map(str::to_owned));
    p.unwrap_or_default()
}

/// What a well-behaved client sends back for `challenge`.
fn client_authorization(
    challenge: &str,
    user: &str,
    password: &str,
    method: &str,
    nc: u32,
) -> String {
    let realm = challenge_param(challenge, "realm");
    let nonce = challenge_param(challenge, "nonce");
    let opaque = challenge_param(challenge, "opaque");
    let algorithm =
        Algorithm::parse(&challenge_param(challenge, "algorithm")).unwrap_or(Algorithm::Md5);
    let nc = format!("{nc:08x}");
    let cnonce = "0a4f113b";
    let ha1 = algorithm.hash_hex(&[user, &realm, password]);
    let response = expected_response(algorithm, &ha1, &nonce, Some((&nc, cnonce)), method, URI);
    format!(
        "Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{URI}\", \
         response=\"{response}\", algorithm={}, cnonce=\"{cnonce}\", opaque=\"{opaque}\", qop=auth, nc={nc}",
        algorithm.as_str()
    )
}

#[test]
fn rfc2617_md5_example_response_matches() {
    // RFC 2617 §3.5.
    let ha1 = Algorithm::Md5.hash_hex(&["Mufasa", "testrealm@host.com", "Circle Of Life"]);
    let r = expected_response(
        Algorithm::Md5,
        &ha1,
        "dcd98b7102dd2f0e8b11d0f600bfb0c093",
        Some(("00000001", "0a4f113b")),
        "GET",
        "/dir/index.html",
    );
    assert_eq!(r, "6629fae49393a05397450978507c4ef1");
}

#[test]
fn rfc7616_sha256_and_md5_example_responses_match() {
    // RFC 7616 §3.9.1.
    let nonce = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
    let cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
    let parts = ["Mufasa", "http-auth@example.org", "Circle of Life"];
    let sha = expected_response(
        Algorithm::Sha256,
        &Algorithm::Sha256.hash_hex(&parts),
        nonce,
        Some(("00000001", cnonce)),
        "GET",
        "/dir/index.html",
    );
    assert_eq!(
        sha,
        "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
    );
    let md5 = expected_response(
        Algorithm::Md5,
        &Algorithm::Md5.hash_hex(&parts),
        nonce,
        Some(("00000001", cnonce)),
        "GET",
        "/dir/index.html",
    );
    assert_eq!(md5, "8ca523f5e9506fed4657c9700eebdbec");
}

#[test]
fn challenge_offers_sha256_then_md5_with_qop_auth_opaque_and_one_nonce() {
    let c = server().challenge(t0(), false, &[Algorithm::Sha256, Algorithm::Md5]);
    assert_eq!(c.len(), 2);
    assert_eq!(challenge_param(&c[0], "algorithm"), "SHA-256");
    assert_eq!(challenge_param(&c[1], "algorithm"), "MD5");
    for v in &c {
        assert!(v.starts_with("Digest "));
        assert_eq!(challenge_param(v, "realm"), REALM);
        assert_eq!(challenge_param(v, "qop"), "auth");
        assert!(!challenge_param(v, "opaque").is_empty());
        assert!(!v.contains("stale"));
    }
    assert_eq!(
        challenge_param(&c[0], "nonce"),
        challenge_param(&c[1], "nonce")
    );
}

#[test]
fn stale_challenge_says_stale_true() {
    let c = server().challenge(t0(), true, &[Algorithm::Md5]);
    assert_eq!(challenge_param(&c[0], "stale"), "true");
}

#[test]
fn each_challenge_has_a_fresh_nonce() {
    let s = server();
    let a = challenge_param(&s.challenge(t0(), false, &[Algorithm::Md5])[0], "nonce");
    let b = challenge_param(&s.challenge(t0(), false, &[Algorithm::Md5])[0], "nonce");
    assert_ne!(a, b);
}

#[test]
fn right_password_is_accepted_with_sha256_and_md5() {
    let mut s = server();
    for alg in [
        Algorithm::Sha256,
        Algorithm::Md5,
        Algorithm::Sha512_256,
        Algorithm::Md5Sess,
        Algorithm::Sha256Sess,
    ] {
        let c = s.challenge(t0(), false, &[alg]);
        let auth = client_authorization(&c[0], "alice", "s3cret pass", "INVITE", 1);
        let out = s.verify(
            t0() + Duration::from_secs(2),
            "INVITE",
            URI,
            Some(auth.as_str()),
            alice,
        );
        assert_eq!(
            out,
            VerifyOutcome::Ok {
                username: "alice".into()
            },
            "{alg:?}"
        );
    }
}

#[test]
fn wrong_password_is_invalid() {
    let mut s = server();
    let c = s.challenge(t0(), false, &[Algorithm::Sha256]);
    let auth = client_authorization(&c[0], "alice", "guess", "INVITE", 1);
    let out = s.verify(t0(), "INVITE", URI, [auth.as_str()], alice);
    assert_eq!(out, VerifyOutcome::Invalid(InvalidReason::WrongResponse));
}

#[test]
fn unknown_user_is_invalid() {
    let mut s = server();
    let c = s.challenge(t0(), false, &[Algorithm::Md5]);
    let auth = client_authorization(&c[0], "mallory", "s3cret pass", "INVITE", 1);
    let out = s.verify(t0(), "INVITE", URI, [auth.as_str()], alice);
    assert_eq!(out, VerifyOutcome::Invalid(InvalidReason::UnknownUser));
}

#[test]
fn response_for_another_method_is_invalid() {
    let mut s = server();
    let c = s.challenge(t0(), false, &[Algorithm::Md5]);
    let auth = client_authorization(&c[0], "alice", "s3cret pass", "REGISTER", 1);
    let out = s.verify(t0(), "INVITE", URI, [auth.as_str()], alice);
    assert_eq!(out, VerifyOutcome::Invalid(InvalidReason::WrongResponse));
}

#[test]
fn expired_nonce_with_right_password_is_stale() {
    let mut s = server();
    let c = s.challenge(t0(), false, &[Algorithm::Sha256]);
    let auth = client_authorization(&c[0], "alice", "s3cret pass", "INVITE", 1);
    let later = t0() + TTL + Duration::from_secs(1);
    assert_eq!(
        s.verify(later, "INVITE", URI, [auth.as_str()], alice),
        VerifyOutcome::Stale
    );
}

#[test]
fn expired_nonce_with_wrong_password_is_invalid_not_stale() {
    let mut s = server();
    let c = s.challenge(t0(), false, &[Algorithm::Sha256]);
    let auth = client_authorization(&c[0], "alice", "nope", "INVITE", 1);
    let later = t0() + TTL + Duration::from_secs(1);
    assert_eq!(
        s.verify(later, "INVITE", URI, [auth.as_str()], alice),
        VerifyOutcome::Invalid(InvalidReason::WrongResponse)
    );
}

#[test]
fn replayed_nonce_count_is_refused_and_a_higher_one_accepted() {
    let mut s = server();
    let c = s.challenge(t0(), false, &[Algorithm::Md5]);
    let first = client_authorization(&c[0], "alice", "s3cret pass", "INVITE", 1);
    let ok = VerifyOutcome::Ok {
        username: "alice".into(),
    };
    assert_eq!(s.verify(t0(), "INVITE", URI, [first.as_str()], alice), ok);
    assert_eq!(
        s.verify(t0(), "INVITE", URI, [first.as_str()], alice),
        VerifyOutcome::Invalid(InvalidReason::ReplayedNonceCount)
    );
    let second = client_authorization(&c[0], "alice", "s3cret pass", "INVITE", 2);
    assert_eq!(s.verify(t0(), "INVITE", URI, [second.as_str()], alice), ok);
    assert_eq!(
        s.verify(t0(), "INVITE", URI, [first.as_str()], alice),
        VerifyOutcome::Invalid(InvalidReason::ReplayedNonceCount)
    );
}

#[test]
fn failed_attempt_does_not_burn_the_nonce_count() {
    let mut s = server();
    let c = s.challenge(t0(), false, &[Algorithm::Md5]);
    let forged = client_authorization(&c[0], "alice", "wrong", "INVITE", 0xffff_fff0);
    assert!(matches!(
        s.verify(t0(), "INVITE", URI, [forged.as_str()], alice),
        VerifyOutcome::Invalid(_)
    ));
    let real = client_authorization(&c[0], "alice", "s3cret pass", "INVITE", 1);
    assert_eq!(
        s.verify(t0(), "INVITE", URI, [real.as_str()], alice),
        VerifyOutcome::Ok {
            username: "alice".into()
        }
    );
}

#[test]
fn nonce_count_table_stays_within_its_capacity() {
    let mut s = server().with_nonce_count_capacity(2);
    for _ in 0..5 {
        let c = s.challenge(t0(), false, &[Algorithm::Md5]);
        let auth = client_authorization(&c[0], "alice", "s3cret pass", "INVITE", 1);
        assert!(matches!(
            s.verify(t0(), "INVITE", URI, [auth.as_str()], alice),
            VerifyOutcome::Ok { .. }
        ));
        assert!(s.nonce_counts.counts.len() <= 2);
        assert!(s.nonce_counts.order.len() <= 2);
    }
}

#[test]
fn nonce_from_a_server_with_another_secret_is_forged() {
    let other = DigestServer::new(REALM, b"another secret", TTL);
    let c = other.challenge(t0(), false, &[Algorithm::Md5]);
    let auth = client_authorization(&c[0], "alice", "s3cret pass", "INVITE", 1);
    let out = server().verify(t0(), "INVITE", URI, [auth.as_str()], alice);
    // The opaque is derived from the secret too; either check refuses it.
    assert!(matches!(
        out,
        VerifyOutcome::Invalid(InvalidReason::ForgedNonce | InvalidReason::OpaqueMismatch)
    ));
}

#[test]
fn nonce_issued_by_another_node_sharing_the_secret_is_accepted() {
    let node_a = server();
    let mut node_b = server();
    let c = node_a.challenge(t0(), false, &[Algorithm::Sha256]);
    let auth = client_authorization(&c[0], "alice", "s3cret pass", "INVITE", 1);
    assert!(matches!(
        node_b.verify(t0(), "INVITE", URI, [auth.as_str()], alice),
        VerifyOutcome::Ok { .. }
    ));
}

#[test]
fn tampered_nonce_is_forged() {
    let mut s = server();
    let c = s.challenge(t0(), false, &[Algorithm::Md5]);
    let nonce = challenge_param(&c[0], "nonce");
    let mut chars: Vec<char> = nonce.chars().collect();
    chars[3] = if chars[3] == 'A' { 'B' } else { 'A' };
    let tampered: String = chars.into_iter().collect();
    let auth = client_authorization(
        &c[0].replace(&nonce, &tampered),
        "alice",
        "s3cret pass",
        "INVITE",
        1,
    );
    assert_eq!(
        s.verify(t0(), "INVITE", URI, [auth.as_str()], alice),
        VerifyOutcome::Invalid(InvalidReason::ForgedNonce)
    );
}

#[test]
fn digest_uri_other_than_the_request_uri_is_refused() {
    let mut s = server();
    let c = s.challenge(t0(), false, &[Algorithm::Md5]);
    let auth = client_authorization(&c[0], "alice", "s3cret pass", "INVITE", 1);
    assert_eq!(
        s.verify(
            t0(),
            "INVITE",
            "sip:other@gw.example",
            [auth.as_str()],
            alice
        ),
        VerifyOutcome::Invalid(InvalidReason::UriMismatch)
    );
}

#[test]
fn no_credentials_or_another_realm_is_missing() {
    let mut s = server();
    assert_eq!(
        s.verify(t0(), "INVITE", URI, None, alice),
        VerifyOutcome::Missing
    );
    let other = DigestServer::new("carrier.example", SECRET, TTL);
    let c = other.challenge(t0(), false, &[Algorithm::Md5]);
    let auth = client_authorization(&c[0], "alice", "s3cret pass", "INVITE", 1);
    assert_eq!(
        s.verify(t0(), "INVITE", URI, [auth.as_str()], alice),
        VerifyOutcome::Missing
    );
}

#[test]
fn other_schemes_are_treated_as_missing_credentials() {
    let mut s = server();
    let out = s.verify(
        t0(),
        "INVITE",
        URI,
        ["Basic YWxhZGRpbjpvcGVuc2VzYW1l", "Digesting x=y"],
        alice,
    );
    assert_eq!(out, VerifyOutcome::Missing);
}

#[test]
fn nonce_count_must_be_eight_hex_digits() {
    let mut s = server();
    let c = s.challenge(t0(), false, &[Algorithm::Md5]);
    let auth = client_authorization(&c[0], "alice", "s3cret pass", "INVITE", 1)
        .replace("nc=00000001", "nc=+0000001");
    assert_eq!(
        s.verify(t0(), "INVITE", URI, [auth.as_str()], alice),
        VerifyOutcome::Invalid(InvalidReason::Malformed("nc is not 8 hex digits"))
    );
}

#[test]
fn the_value_for_our_realm_is_picked_among_several() {
    let mut s = server();
    let other = DigestServer::new("carrier.example", SECRET, TTL);
    let theirs = client_authorization(
        &other.challenge(t0(), false, &[Algorithm::Md5])[0],
        "x",
        "y",
        "INVITE",
        1,
    );
    let ours = client_authorization(
        &s.challenge(t0(), false, &[Algorithm::Md5])[0],
        "alice",
        "s3cret pass",
        "INVITE",
        1,
    );
    let out = s.verify(t0(), "INVITE", URI, [theirs.as_str(), ours.as_str()], alice);
    assert_eq!(
        out,
        VerifyOutcome::Ok {
            username: "alice".into()
        }
    );
}

#[test]
fn legacy_credentials_without_qop_are_accepted_unless_disabled() {
    let c = server().challenge(t0(), false, &[Algorithm::Md5]);
    let nonce = challenge_param(&c[0], "nonce");
    let ha1 = Algorithm::Md5.hash_hex(&["alice", REALM, "s3cret pass"]);
    let response = expected_response(Algorithm::Md5, &ha1, &nonce, None, "INVITE", URI);
    let auth = format!(
        "Digest username=\"alice\",realm=\"{REALM}\",nonce=\"{nonce}\",uri=\"{URI}\",response=\"{response}\""
    );
    let mut s = server();
    assert_eq!(
        s.verify(t0(), "INVITE", URI, [auth.as_str()], alice),
        VerifyOutcome::Ok {
            username: "alice".into()
        }
    );
    let mut strict = server().with_legacy_without_qop(false);
    assert_eq!(
        strict.verify(t0(), "INVITE", URI, [auth.as_str()], alice),
        VerifyOutcome::Invalid(InvalidReason::QopRequired)
    );
}

#[test]
fn stored_ha1_verifies_like_the_password() {
    let mut s = server();
    let c = s.challenge(t0(), false, &[Algorithm::Sha256]);
    let auth = client_authorization(&c[0], "alice", "s3cret pass", "INVITE", 1);
    let ha1 = Algorithm::Sha256.hash_hex(&["alice", REALM, "s3cret pass"]);
    let out = s.verify(t0(), "INVITE", URI, [auth.as_str()], |_| {
        Some(Credential::Ha1 {
            algorithm: Algorithm::Sha256,
            ha1: ha1.clone(),
        })
    });
    assert_eq!(
        out,
        VerifyOutcome::Ok {
            username: "alice".into()
        }
    );
    // An MD5 HA1 cannot answer a SHA-256 response.
    let c = s.challenge(t0(), false, &[Algorithm::Sha256]);
    let auth = client_authorization(&c[0], "alice", "s3cret pass", "INVITE", 1);
    let out = s.verify(t0(), "INVITE", URI, [auth.as_str()], |_| {
        Some(Credential::Ha1 {
            algorithm: Algorithm::Md5,
            ha1: "00".into(),
        })
    });
    assert_eq!(
        out,
        VerifyOutcome::Invalid(InvalidReason::UnsupportedAlgorithm)
    );
}

#[test]
fn quoted_strings_with_escapes_and_odd_spacing_parse() {
    let p = parse_authorization(
        "digest  username = \"a\\\"b\\\\c\" ,realm=\"r, with comma\",nc=00000001 , qop=\"auth\"",
    )
    .ok();
    let p = p.as_ref();
    assert_eq!(p.and_then(|p| p.get("username")), Some("a\"b\\c"));
    assert_eq!(p.and_then(|p| p.get("realm")), Some("r, with comma"));
    assert_eq!(p.and_then(|p| p.get("NC")), Some("00000001"));
    assert_eq!(p.and_then(|p| p.get("qop")), Some("auth"));
}

#[test]
fn malformed_credentials_are_invalid_and_never_panic() {
    let cases = [
        "Digest",
        "Digest ",
        "Basic YWxhZGRpbjpvcGVuc2VzYW1l",
        "Digest username",
        "Digest username=",
        "Digest username=\"unterminated",
        "Digest username=\"a\\",
        "Digest =x",
        "Digest a=b c=d",
        "Digest realm=\"dialin.example\", realm=\"dialin.example\"",
        "Digest realm=\"dialin.example\"",
        "Digest realm=\"dialin.example\", username=\"alice\", nonce=\"\", uri=\"x\", response=\"\"",
        "Digest realm=\"dialin.example\", username=\"alice\", nonce=\"%%%\", uri=\"sip:+15551230000@gw.example\", response=\"00\", qop=auth, nc=zz, cnonce=x",
        "Digest realm=\"dialin.example\", username=\"alice\", nonce=\"x\", uri=\"sip:+15551230000@gw.example\", response=\"00\", algorithm=SHA-1",
        "Digest realm=\"dialin.example\", username=\"alice\", nonce=\"x\", uri=\"sip:+15551230000@gw.example\", response=\"00\", qop=auth-int",
        "Digest realm=\"dialin.example\", username*=UTF-8''%C3%A4, nonce=\"x\", uri=\"u\", response=\"00\"",
        "Digest réalm=\"ü\"",
        "\u{0}\u{0}",
        "",
    ];
    let mut s = server();
    for case in cases {
        let out = s.verify(t0(), "INVITE", URI, [case], alice);
        assert!(
            matches!(out, VerifyOutcome::Invalid(_) | VerifyOutcome::Missing),
            "{case:?} gave {out:?}"
        );
    }
}

#[test]
fn random_credentials_never_panic() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed_d161);
    let mut s = server();
    let c = s.challenge(t0(), false, &[Algorithm::Md5]);
    let valid = client_authorization(&c[0], "alice", "s3cret pass", "INVITE", 1);
    let alphabet = b"Digest =,\"\\ abcnrqop-_/:01\x00\xc3\xa9";
    let mut accepted = 0;
    for _ in 0..20_000 {
        let mut bytes = valid.clone().into_bytes();
        for _ in 0..rng.gen_range(1..8) {
            let i = rng.gen_range(0..bytes.len());
            match rng.gen_range(0..3) {
                0 => bytes[i] = alphabet[rng.gen_range(0..alphabet.len())],
                1 => {
                    bytes.remove(i);
                }
                _ => bytes.insert(i, alphabet[rng.gen_range(0..alphabet.len())]),
            }
            if bytes.is_empty() {
                break;
            }
        }
        let text = String::from_utf8_lossy(&bytes);
        if let VerifyOutcome::Ok { .. } = s.verify(t0(), "INVITE", URI, [text.as_ref()], alice) {
            accepted += 1;
        }
    }
    // The one valid nc can be consumed at most once; a mutated response never verifies
    // except by a harmless mutation (e.g. spacing), which must still respect the nc.
    assert!(accepted <= 1, "accepted {accepted} mutated credentials");
}
