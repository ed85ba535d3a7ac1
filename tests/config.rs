//! Configuration: the shipped file works as it is, every key has a default except
//! secrets, secrets can come from the environment, and every refusal names its key.

use std::net::IpAddr;

use dialin::config::{Config, ConfigError, RoomsBackend, SrtpPolicy, Transport};
use dialin::ingress::trunk::{TrunkMatch, TrunkTable};

const SHIPPED: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/configs/dialin.toml"));

/// The smallest valid file: the admin token (a secret) and one trunk.
const MINIMAL: &str =
    "[admin]\ntoken = \"t\"\n[[trunk]]\nid = \"a\"\nallowed_addresses = [\"192.0.2.0/24\"]\n";

fn no_env(_: &str) -> Option<String> {
    None
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, no_env)
}

/// Parses `text` and returns the key the error names.
fn error_key(text: &str) -> String {
    match parse(text) {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(e) => {
            let key = e
                .key()
                .unwrap_or_else(|| panic!("error names no key: {e}"))
                .to_owned();
            assert!(
                e.to_string().starts_with(&format!("{key}: ")),
                "message must start with the key: {e}"
            );
            key
        }
    }
}

#[test]
fn shipped_config_is_valid_and_serves_loopback_with_local_rooms() {
    let config = parse(SHIPPED).expect("configs/dialin.toml must validate as shipped");
    let listen: Vec<String> = config.sip.listen.iter().map(ToString::to_string).collect();
    assert_eq!(listen, ["udp://127.0.0.1:5060", "tcp://127.0.0.1:5060"]);
    assert_eq!(config.rooms.backend, RoomsBackend::Local);
    assert_eq!(config.store.url, "sqlite://dialin.db");
    assert_eq!(config.admin.listen.to_string(), "127.0.0.1:8089");
    assert_eq!(config.media.rtp_ports.to_string(), "20000-29999");
    assert_eq!(config.trunks.len(), 1);
    let table = TrunkTable::new(config.trunks.clone());
    for source in ["127.0.0.1", "::1"] {
        assert!(
            matches!(
                table.match_call(source.parse::<IpAddr>().unwrap(), "1000"),
                TrunkMatch::Matched(_)
            ),
            "{source}"
        );
    }
}

#[test]
fn shipped_config_loads_from_its_file() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/configs/dialin.toml");
    assert!(Config::load(std::path::Path::new(path)).is_ok());
}

#[test]
fn every_key_but_secrets_has_a_default() {
    let config = parse(MINIMAL).unwrap();
    assert_eq!(config.sip.listen.len(), 2);
    assert!(config
        .sip
        .listen
        .iter()
        .any(|l| l.transport == Transport::Udp));
    assert_eq!(config.media.rtp_timeout_s, 30);
    assert_eq!(config.ivr.first_digit_timeout_s, 10);
    assert_eq!(config.ivr.inter_digit_timeout_s, 5);
    assert_eq!(config.security.lockout.failed_pin_limit, 10);
    assert_eq!(config.security.lockout.window_s, 900);
    assert_eq!(config.security.lockout.lockout_s, 900);
    let trunk = &config.trunks[0];
    assert_eq!(trunk.pin_namespace.as_str(), "default");
    assert_eq!(trunk.pin_length, 10);
    assert_eq!(trunk.max_attempts, 3);
    assert_eq!(trunk.srtp, SrtpPolicy::Disable);
    assert!(!trunk.expose_phone_number);
}

#[test]
fn admin_token_is_required_and_may_come_from_the_environment() {
    let no_token = "[[trunk]]\nid = \"a\"\nallowed_addresses = [\"192.0.2.0/24\"]\n";
    assert_eq!(error_key(no_token), "admin.token");
    let config = Config::parse(no_token, |k| {
        (k == "DIALIN_ADMIN_TOKEN").then(|| "from-env".to_owned())
    })
    .unwrap();
    assert_eq!(config.admin.token(), "from-env");
    let overridden = Config::parse(MINIMAL, |k| {
        (k == "DIALIN_ADMIN_TOKEN").then(|| "env-wins".to_owned())
    })
    .unwrap();
    assert_eq!(overridden.admin.token(), "env-wins");
}

#[test]
fn empty_admin_token_is_refused() {
    assert_eq!(
        error_key(&MINIMAL.replace("token = \"t\"", "token = \"\"")),
        "admin.token"
    );
    assert!(Config::parse(MINIMAL, |k| (k == "DIALIN_ADMIN_TOKEN").then(String::new)).is_err());
}

#[test]
fn livekit_backend_needs_an_api_secret_which_the_environment_may_supply() {
    let text = format!("[rooms]\nbackend = \"livekit\"\n{MINIMAL}");
    assert_eq!(error_key(&text), "livekit.api_secret");
    let config = Config::parse(&text, |k| {
        (k == "DIALIN_LIVEKIT_API_SECRET").then(|| "s".to_owned())
    })
    .unwrap();
    assert_eq!(
        config
            .livekit
            .api_secret
            .map(|s| s.expose().to_owned())
            .as_deref(),
        Some("s")
    );
}

#[test]
fn secrets_never_appear_in_debug_output() {
    let text = MINIMAL.replace("token = \"t\"", "token = \"hunter2-token\"")
        + "auth = { username = \"u\", password = \"hunter2-password\" }\n";
    let debug = format!("{:?}", parse(&text).unwrap());
    assert!(!debug.contains("hunter2"), "{debug}");
}

#[test]
fn unknown_keys_are_refused_with_the_key_named() {
    assert_eq!(
        error_key(&format!("[sip]\nlisten_on = []\n{MINIMAL}")),
        "sip.listen_on"
    );
    assert_eq!(
        error_key(&format!("{MINIMAL}pin_lenght = 6\n")),
        "trunk[0].pin_lenght"
    );
    assert_eq!(error_key(&format!("[medias]\nx = 1\n{MINIMAL}")), "medias");
}

#[test]
fn malformed_trunk_network_names_its_trunk_and_index() {
    let text = format!("{MINIMAL}[[trunk]]\nid = \"b\"\nallowed_addresses = [\"10.0.0/8\"]\n");
    let err = parse(&text).unwrap_err();
    assert_eq!(err.key(), Some("trunk[1].allowed_addresses[0]"));
    assert!(
        err.to_string()
            .contains("\"10.0.0/8\" is not an IP network"),
        "{err}"
    );
}

#[test]
fn duplicate_trunk_ids_are_refused() {
    let text = format!("{MINIMAL}[[trunk]]\nid = \"a\"\nallowed_addresses = [\"10.0.0.0/8\"]\n");
    assert_eq!(error_key(&text), "trunk[1].id");
}

#[test]
fn pin_length_must_be_between_4_and_20() {
    assert_eq!(
        error_key(&format!("{MINIMAL}pin_length = 3\n")),
        "trunk[0].pin_length"
    );
    assert_eq!(
        error_key(&format!("{MINIMAL}pin_length = 21\n")),
        "trunk[0].pin_length"
    );
    assert!(parse(&format!("{MINIMAL}pin_length = 4\n")).is_ok());
    assert!(parse(&format!("{MINIMAL}pin_length = 20\n")).is_ok());
}

#[test]
fn trunks_sharing_a_namespace_must_agree_on_pin_length() {
    let text = format!(
        "{MINIMAL}[[trunk]]\nid = \"b\"\nallowed_addresses = [\"10.0.0.0/8\"]\npin_length = 6\n"
    );
    assert_eq!(error_key(&text), "trunk[1].pin_length");
    assert!(parse(&format!("{text}pin_namespace = \"other\"\n")).is_ok());
}

#[test]
fn trunk_without_allowed_addresses_is_refused() {
    assert_eq!(
        error_key("[admin]\ntoken = \"t\"\n[[trunk]]\nid = \"a\"\nallowed_addresses = []\n"),
        "trunk[0].allowed_addresses"
    );
    assert_eq!(
        error_key("[admin]\ntoken = \"t\"\n[[trunk]]\nid = \"a\"\n"),
        "trunk[0].allowed_addresses",
        "a trunk of the file needs its networks (a LiveKit trunk brings its own)"
    );
    // With LiveKit's trunks, a [[trunk]] only sets dialin's settings for one of them.
    assert!(parse(
        "[admin]\ntoken = \"t\"\n[livekit]\napi_secret = \"s\"\n[trunks]\nsource = \"livekit\"\n[[trunk]]\nid = \"ST_abc\"\nlanguage = \"fr\"\n"
    )
    .is_ok());
}

#[test]
fn config_without_trunks_is_refused() {
    assert_eq!(error_key("[admin]\ntoken = \"t\"\n"), "trunk");
}

#[test]
fn bad_values_name_their_keys() {
    let cases = [
        ("[sip]\nlisten = [\"127.0.0.1:5060\"]\n", "sip.listen[0]"),
        ("[sip]\nlisten = []\n", "sip.listen"),
        (
            "[sip]\nlisten = [\"tls://127.0.0.1:5061\"]\n",
            "sip.tls.cert",
        ),
        (
            "[sip]\npublic_address = \"not-an-ip\"\n",
            "sip.public_address",
        ),
        ("[sip]\nmax_message_size = 100\n", "sip.max_message_size"),
        ("[media]\nrtp_ports = \"30000-20000\"\n", "media.rtp_ports"),
        ("[media]\nrtp_ports = 5\n", "media.rtp_ports"),
        ("[media]\nrtp_timeout_s = 0\n", "media.rtp_timeout_s"),
        ("[media]\nopus_complexity = 11\n", "media.opus_complexity"),
        (
            "[media]\njitter_min_ms = 300\njitter_max_ms = 200\n",
            "media.jitter_min_ms",
        ),
        (
            "[ivr]\ninter_digit_timeout_s = 0\n",
            "ivr.inter_digit_timeout_s",
        ),
        ("[store]\nurl = \"mysql://x\"\n", "store.url"),
        ("[rooms]\nbackend = \"janus\"\n", "rooms.backend"),
        ("[livekit]\nurl = \"localhost:7880\"\n", "livekit.url"),
        ("[admin]\nlisten = \"localhost\"\n", "admin.listen"),
        (
            "[security.lockout]\nfailed_pin_limit = 0\n",
            "security.lockout.failed_pin_limit",
        ),
        (
            "[security.unmatched_source]\nburst = 0\nper_second = 1\n",
            "security.unmatched_source.burst",
        ),
        ("[limits]\nmax_calls = 0\n", "limits.max_calls"),
    ];
    for (section, key) in cases {
        // The section comes first, so [admin] and [[trunk]] from MINIMAL follow it; for
        // the [admin] case, drop MINIMAL's own [admin] table and keep its token.
        let text = if section.starts_with("[admin]") {
            format!(
                "{}token = \"t\"\n{}",
                section,
                MINIMAL.replace("[admin]\ntoken = \"t\"\n", "")
            )
        } else {
            format!("{section}{MINIMAL}")
        };
        assert_eq!(error_key(&text), key, "for:\n{text}");
    }
}

#[test]
fn bad_trunk_values_name_their_keys() {
    let cases = [
        ("language = \"de\"\n", "trunk[0].language"),
        ("srtp = \"maybe\"\n", "trunk[0].srtp"),
        ("max_attempts = 0\n", "trunk[0].max_attempts"),
        ("max_calls = 0\n", "trunk[0].max_calls"),
        (
            "numbers = [\"+33 1 23 45 67 89\", \"call-me\"]\n",
            "trunk[0].numbers[1]",
        ),
        ("pin_namespace = \"sales team\"\n", "trunk[0].pin_namespace"),
        ("auth = { username = \"u\" }\n", "trunk[0].auth"),
        (
            "auth = { username = \"\", password = \"p\" }\n",
            "trunk[0].auth.username",
        ),
        ("livekit = { url = \"nope\" }\n", "trunk[0].livekit.url"),
        (
            "livekit = { api_key = \"k\" }\n",
            "trunk[0].livekit.api_secret",
        ),
    ];
    for (line, key) in cases {
        assert_eq!(error_key(&format!("{MINIMAL}{line}")), key, "for {line}");
    }
    assert_eq!(
        error_key(&MINIMAL.replace("id = \"a\"", "id = \"a b\"")),
        "trunk[0].id"
    );
}

#[test]
fn turn_server_without_credentials_is_refused() {
    let turn = |extra: &str| {
        format!("{MINIMAL}[[livekit.ice_servers]]\nurl = \"turn:turn.example.com:3478\"\n{extra}")
    };
    assert_eq!(error_key(&turn("")), "livekit.ice_servers[0].username");
    assert_eq!(
        error_key(&turn("username = \"u\"\n")),
        "livekit.ice_servers[0].credential"
    );
    assert!(parse(&turn("username = \"u\"\ncredential = \"c\"\n")).is_ok());
    let stun = format!("{MINIMAL}[[livekit.ice_servers]]\nurl = \"stun:stun.example.com:3478\"\n");
    assert!(parse(&stun).is_ok());
    let bogus = format!("{MINIMAL}[[livekit.ice_servers]]\nurl = \"http://x\"\n");
    assert_eq!(error_key(&bogus), "livekit.ice_servers[0].url");
    let no_port = format!("{MINIMAL}[[livekit.ice_servers]]\nurl = \"stun:stun.example.com:0\"\n");
    assert_eq!(error_key(&no_port), "livekit.ice_servers[0].url");
    let creds = "username = \"u\"\ncredential = \"c\"\n";
    let turn_url =
        |url: &str| format!("{MINIMAL}[[livekit.ice_servers]]\nurl = \"{url}\"\n{creds}");
    assert!(parse(&turn_url("turn:turn.example.com?transport=udp")).is_ok());
    assert!(parse(&turn_url("turn:turn.example.com?transport=tcp")).is_ok());
    assert_eq!(
        error_key(&turn_url("turn:turn.example.com?transport=carrier-pigeon")),
        "livekit.ice_servers[0].url"
    );
    assert_eq!(
        error_key(&turn_url("turn:turn.example.com:0")),
        "livekit.ice_servers[0].url"
    );
}

#[test]
fn ice_transport_policy_is_all_or_relay() {
    let with = |v: &str| format!("{MINIMAL}[livekit]\nice_transport_policy = \"{v}\"\n");
    assert!(parse(&with("all")).is_ok());
    assert!(parse(&with("relay")).is_ok());
    assert_eq!(error_key(&with("direct")), "livekit.ice_transport_policy");
}

#[test]
fn missing_file_is_reported_with_its_path() {
    let err = Config::load(std::path::Path::new("/nonexistent/dialin.toml")).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }));
    assert!(err.to_string().contains("/nonexistent/dialin.toml"));
}

/// Every numeric key refuses a value that would overflow arithmetic on it (2^63 - 1 seconds
/// made each call panic, and SIGTERM panic instead of draining), naming the key.
#[test]
fn every_numeric_key_is_bounded_and_a_huge_value_names_its_key() {
    const HUGE: &str = "9223372036854775807";
    let cases: &[(&str, &str, &str)] = &[
        ("sip", "max_message_size", "sip.max_message_size"),
        ("sip", "max_connections", "sip.max_connections"),
        ("sip", "max_connections_per_source", "sip.max_connections_per_source"),
        ("sip", "max_untrusted_connections", "sip.max_untrusted_connections"),
        ("sip", "message_timeout_s", "sip.message_timeout_s"),
        ("sip", "idle_timeout_s", "sip.idle_timeout_s"),
        ("media", "rtp_timeout_s", "media.rtp_timeout_s"),
        ("media", "max_call_duration_s", "media.max_call_duration_s"),
        ("media", "jitter_min_ms", "media.jitter_min_ms"),
        ("media", "jitter_max_ms", "media.jitter_max_ms"),
        ("media", "opus_complexity", "media.opus_complexity"),
        ("ivr", "first_digit_timeout_s", "ivr.first_digit_timeout_s"),
        ("ivr", "inter_digit_timeout_s", "ivr.inter_digit_timeout_s"),
        ("ivr", "max_prompt_replays", "ivr.max_prompt_replays"),
        ("ivr", "max_ivr_time_s", "ivr.max_ivr_time_s"),
        ("store", "max_connections", "store.max_connections"),
        ("livekit", "token_ttl_s", "livekit.token_ttl_s"),
        ("security", "trunk_alarm_failed_per_minute", "security.trunk_alarm_failed_per_minute"),
        ("security.lockout", "failed_pin_limit", "security.lockout.failed_pin_limit"),
        ("security.lockout", "window_s", "security.lockout.window_s"),
        ("security.lockout", "lockout_s", "security.lockout.lockout_s"),
        ("security.pin_guard", "interval_s", "security.pin_guard.interval_s"),
        ("security.pin_guard", "burst", "security.pin_guard.burst"),
        ("security.pin_guard", "cooldown_s", "security.pin_guard.cooldown_s"),
        ("security.pin_guard", "max_wait_s", "security.pin_guard.max_wait_s"),
        ("security.pin_guard", "trusted_for_s", "security.pin_guard.trusted_for_s"),
        ("security.unmatched_source", "burst", "security.unmatched_source.burst"),
        ("security.unmatched_source", "per_second", "security.unmatched_source.per_second"),
        ("limits", "max_calls", "limits.max_calls"),
        ("limits", "drain_timeout_s", "limits.drain_timeout_s"),
    ];
    for (table, key, full) in cases {
        // unmatched_source needs both of its keys.
        let extra = if *table == "security.unmatched_source" {
            let other = if *key == "burst" { "per_second" } else { "burst" };
            format!("{other} = 1\n")
        } else {
            String::new()
        };
        let text = format!("{MINIMAL}[{table}]\n{key} = {HUGE}\n{extra}");
        assert_eq!(&error_key(&text), full, "{text}");
    }
    for (key, full) in [
        ("pin_length", "trunk[0].pin_length"),
        ("max_attempts", "trunk[0].max_attempts"),
        ("max_calls", "trunk[0].max_calls"),
    ] {
        let text = format!(
            "[admin]\ntoken = \"t\"\n[[trunk]]\nid = \"a\"\nallowed_addresses = [\"192.0.2.0/24\"]\n{key} = {HUGE}\n"
        );
        assert_eq!(error_key(&text), full, "{text}");
    }
}

/// `check-config` reads the TLS files: a missing or non-PEM certificate, or a key file with
/// no private key, names its key.
#[test]
fn tls_files_are_checked_and_name_their_key() {
    let dir = std::env::temp_dir().join(format!("dialin-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = dir.join("sip.crt");
    let key = dir.join("sip.key");
    let text = |cert: &std::path::Path, key: &std::path::Path| {
        format!(
            "{MINIMAL}[sip]\nlisten = [\"tls://127.0.0.1:5061\"]\n[sip.tls]\ncert = {:?}\nkey = {:?}\n",
            cert.display().to_string(),
            key.display().to_string()
        )
    };
    // Missing files.
    assert_eq!(error_key(&text(&cert, &key)), "sip.tls.cert");
    // Not PEM.
    std::fs::write(&cert, "hello").unwrap();
    assert_eq!(error_key(&text(&cert, &key)), "sip.tls.cert");
    // A PEM certificate, but the key file holds no private key.
    std::fs::write(
        &cert,
        "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUQ0VSVA==\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    std::fs::write(&key, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").unwrap();
    assert_eq!(error_key(&text(&cert, &key)), "sip.tls.key");
    // Both present.
    std::fs::write(&key, "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n").unwrap();
    assert!(parse(&text(&cert, &key)).is_ok());
    let _ = std::fs::remove_dir_all(&dir);
}

/// The Debian package's configuration is the reference one with the store under
/// /var/lib/dialin and its own heading: nothing else may drift.
#[test]
fn the_packaged_config_is_the_reference_with_its_store_under_var_lib() {
    let packaged = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/configs/deb/dialin.toml"));
    let body = |text: &str| -> Vec<String> {
        text.lines()
            .skip_while(|l| l.starts_with("# dialin configuration") || l.starts_with("# (configs") || l.starts_with("# /etc/dialin"))
            .map(|l| l.replace("sqlite:///var/lib/dialin/dialin.db", "sqlite://dialin.db"))
            .collect()
    };
    assert_eq!(body(packaged), body(SHIPPED).into_iter().collect::<Vec<_>>());
    let config = parse(packaged).expect("the packaged config validates");
    assert_eq!(config.store.url, "sqlite:///var/lib/dialin/dialin.db");
}

/// Local rooms are mixed inside one node: with a store shared by several nodes, check-config
/// says so.
#[test]
fn local_rooms_with_a_shared_store_are_warned_about() {
    let shared = parse(&format!("{MINIMAL}[store]\nurl = \"postgres://u@db/dialin\"\n")).unwrap();
    assert!(
        shared.warnings().iter().any(|w| w.contains("local rooms are mixed inside one node")),
        "{:?}",
        shared.warnings()
    );
    let single = parse(MINIMAL).unwrap();
    assert!(!single.warnings().iter().any(|w| w.contains("local rooms")));
}

#[test]
fn keypad_keys_and_cues_are_per_trunk_and_clashing_keys_are_refused() {
    let config = parse(&format!(
        "{MINIMAL}keypad = false\nannounce = \"none\"\nkeys = {{ mute = \"##\", count = \"*2\" }}\n"
    ))
    .expect("valid");
    let trunk = &config.trunks[0];
    assert!(!trunk.keypad);
    assert_eq!(trunk.announce, dialin::config::Announce::None);
    assert_eq!(trunk.keys.mute.as_str(), "##");
    assert_eq!(trunk.keys.count.as_str(), "*2");
    assert_eq!(trunk.keys.hand.as_str(), "*9", "unset keys keep their default");
    let defaults = parse(MINIMAL).expect("valid");
    assert!(defaults.trunks[0].keypad, "the keypad is on by default");
    assert_eq!(defaults.trunks[0].announce, dialin::config::Announce::Tones);
    assert_eq!(
        error_key(&format!("{MINIMAL}keys = {{ mute = \"*1\", count = \"*12\" }}\n")),
        "trunk[0].keys"
    );
    assert_eq!(
        error_key(&format!("{MINIMAL}keys = {{ mute = \"*x\" }}\n")),
        "trunk[0].keys.mute"
    );
    assert_eq!(
        error_key(&format!("{MINIMAL}announce = \"beeps\"\n")),
        "trunk[0].announce"
    );
}

#[test]
fn the_livekit_host_rule_is_checked() {
    let ok = parse(&format!("[livekit]\nhost = \"attribute:role=teacher\"\n{MINIMAL}")).expect("valid");
    assert_eq!(ok.livekit.host.to_string(), "attribute:role=teacher");
    assert_eq!(
        error_key(&format!("[livekit]\nhost = \"everyone\"\n{MINIMAL}")),
        "livekit.host"
    );
}

#[test]
fn pin_sources_are_checked() {
    let ok = parse(&format!(
        "[pins]\nsources = [\"store\", \"http\"]\n[pins.http]\nurl = \"https://meet.example/resolve\"\nsecret = \"0123456789abcdef\"\n{MINIMAL}"
    ))
    .expect("valid");
    assert_eq!(ok.pins.sources.len(), 2);
    assert_eq!(
        error_key(&format!("[pins]\nsources = [\"http\"]\n{MINIMAL}")),
        "pins.http",
        "http needs its table"
    );
    assert_eq!(
        error_key(&format!("[pins]\nsources = [\"http\"]\n[pins.http]\nurl = \"https://meet.example/r\"\nsecret = \"short\"\n{MINIMAL}")),
        "pins.http.secret",
        "a signing secret of 16 characters at least"
    );
    assert_eq!(
        error_key(&format!("[pins]\nsources = [\"http\"]\n[pins.http]\nurl = \"ftp://x/y\"\nformat = \"jitsi-mapper\"\n{MINIMAL}")),
        "pins.http.url"
    );
    assert_eq!(error_key(&format!("[pins]\nsources = []\n{MINIMAL}")), "pins.sources");
    assert_eq!(
        error_key(&format!("[pins]\nsources = [\"store\", \"store\"]\n{MINIMAL}")),
        "pins.sources[1]"
    );
    assert_eq!(
        error_key(&format!("[pins]\nsources = [\"livekit\"]\n{MINIMAL}")),
        "livekit.api_secret",
        "LiveKit's rules need LiveKit's key"
    );
    let env = |name: &str| (name == "DIALIN_PINS_HTTP_SECRET").then(|| "from-the-environment-0123".to_owned());
    let from_env = Config::parse(
        &format!("[pins]\nsources = [\"http\"]\n[pins.http]\nurl = \"https://meet.example/r\"\n{MINIMAL}"),
        env,
    )
    .expect("the secret from the environment");
    assert_eq!(
        from_env.pins.http.and_then(|h| h.secret).map(|s| s.expose().to_owned()),
        Some("from-the-environment-0123".to_owned())
    );
}
