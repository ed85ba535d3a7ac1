//! The gateway's configuration: one TOML file (DESIGN.md §Configuration), read at start
//! and re-read on SIGHUP for the trunk table.
//!
//! Every key has a default except secrets, unknown keys are refused, and every error names
//! the key it is about (`trunk[1].allowed_addresses[0]: "10.0.0/8" is not an IP network`),
//! so that a typo fails at start rather than at the first call. Values are parsed into
//! typed form here (addresses, networks, port ranges, enums); the rest of the gateway
//! never sees configuration text.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::call::keypad::KeypadKeys;
use crate::pins::source::SourceKind;
use crate::pins::{Pin, PinNamespace};
use crate::ingress::trunk::{CalledNumber, IpNetwork, TrunkId};

/// Environment variable that overrides `[admin] token`.
pub const ENV_ADMIN_TOKEN: &str = "DIALIN_ADMIN_TOKEN";
/// Environment variable that overrides `[livekit] api_secret`.
pub const ENV_LIVEKIT_API_SECRET: &str = "DIALIN_LIVEKIT_API_SECRET";
/// Overrides `pins.http.secret`.
pub const ENV_PINS_HTTP_SECRET: &str = "DIALIN_PINS_HTTP_SECRET";
/// Environment variable that overrides `security.secret`.
pub const ENV_SECURITY_SECRET: &str = "DIALIN_SECURITY_SECRET";

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Syntax(String),
    /// A key holds a value that is not allowed.
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

impl ConfigError {
    fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }

    /// The key the error is about, when it is about one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub sip: SipConfig,
    pub media: MediaConfig,
    pub ivr: IvrConfig,
    pub store: StoreConfig,
    pub rooms: RoomsConfig,
    pub livekit: LiveKitConfig,
    pub admin: AdminConfig,
    pub security: SecurityConfig,
    pub limits: LimitsConfig,
    pub prompts: PromptsConfig,
    pub log: LogConfig,
    /// Where PINs are looked up.
    pub pins: PinsConfig,
    /// Where trunks come from.
    #[serde(rename = "trunks")]
    pub trunk_source: TrunksConfig,
    /// `[[trunk]]` tables, in file order; the first trunk that matches a call wins.
    #[serde(rename = "trunk")]
    pub trunks: Vec<TrunkConfig>,
}

/// SIP transport to listen on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

/// One `[sip] listen` entry: `udp://0.0.0.0:5060`, `tcp://[::]:5060`, `tls://0.0.0.0:5061`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ListenAddr {
    pub transport: Transport,
    pub addr: SocketAddr,
}

impl FromStr for ListenAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!("{s:?} is not a listen address (udp://IP:PORT, tcp://IP:PORT or tls://IP:PORT)")
        };
        let (scheme, rest) = s.split_once("://").ok_or_else(bad)?;
        let transport = match scheme {
            "udp" => Transport::Udp,
            "tcp" => Transport::Tcp,
            "tls" => Transport::Tls,
            _ => return Err(bad()),
        };
        let addr = rest.parse().map_err(|_| bad())?;
        Ok(ListenAddr { transport, addr })
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.transport {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        };
        write!(f, "{scheme}://{}", self.addr)
    }
}

/// Implements `Deserialize`/`Serialize` through `FromStr`/`Display`, so the parse error
/// message (which quotes the bad value) reaches the user next to its key.
macro_rules! serde_via_str {
    ($t:ty) => {
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
    };
}
serde_via_str!(ListenAddr);
serde_via_str!(PortRange);

/// `[sip]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SipConfig {
    pub listen: Vec<ListenAddr>,
    /// Address advertised in Contact/Via/SDP when the gateway is behind NAT.
    pub public_address: Option<IpAddr>,
    pub tls: TlsConfig,
    pub user_agent: String,
    /// Largest SIP message accepted, in bytes; larger ones are refused (`513`) or dropped.
    pub max_message_size: usize,
    /// Open SIP stream (TCP/TLS) connections at most; lowered at start to what the
    /// open-file limit leaves once calls have their descriptors.
    pub max_connections: u64,
    /// Open stream connections per source address.
    pub max_connections_per_source: u64,
    /// Stream connections from sources matching no trunk, all together (each is closed
    /// after its first answer).
    pub max_untrusted_connections: u64,
    /// A stream connection must complete each message within this long of its first byte
    /// (and its first message within this long of connecting); slower senders are closed.
    pub message_timeout_s: u64,
    /// A stream connection with nothing received for this long is closed.
    pub idle_timeout_s: u64,
}

impl Default for SipConfig {
    fn default() -> Self {
        SipConfig {
            listen: vec![
                ListenAddr {
                    transport: Transport::Udp,
                    addr: SocketAddr::from(([0, 0, 0, 0], 5060)),
                },
                ListenAddr {
                    transport: Transport::Tcp,
                    addr: SocketAddr::from(([0, 0, 0, 0], 5060)),
                },
            ],
            public_address: None,
            tls: TlsConfig::default(),
            user_agent: concat!("dialin/", env!("CARGO_PKG_VERSION")).to_owned(),
            max_connections: 4096,
            max_connections_per_source: 32,
            max_untrusted_connections: 64,
            message_timeout_s: 10,
            idle_timeout_s: 300,
            // RFC 3261 §18.1.1 bounds UDP by the path MTU and TCP by nothing; 64 KiB is
            // far above any real INVITE and keeps a hostile peer's buffer bounded.
            max_message_size: 65_535,
        }
    }
}

/// `[sip.tls]`: certificate and key, PEM, for `tls://` listeners.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// An inclusive UDP port range, `"20000-29999"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    /// Number of ports in the range.
    pub fn len(&self) -> usize {
        usize::from(self.last) - usize::from(self.first) + 1
    }

    /// Always false: a parsed range holds at least two ports.
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl FromStr for PortRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a port range (FIRST-LAST, e.g. \"20000-29999\")");
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let first: u16 = a.trim().parse().map_err(|_| bad())?;
        let last: u16 = b.trim().parse().map_err(|_| bad())?;
        if first == 0 || last <= first {
            return Err(format!(
                "{s:?}: the range must hold at least two ports, above 0"
            ));
        }
        Ok(PortRange { first, last })
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

/// `[media]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    pub rtp_ports: PortRange,
    /// No RTP from the caller for this long ends the call.
    pub rtp_timeout_s: u64,
    /// Longest call; the call is ended when it is reached.
    pub max_call_duration_s: u64,
    /// Opus encoder complexity, 0 (cheapest) to 10.
    pub opus_complexity: u8,
    pub jitter_min_ms: u32,
    pub jitter_max_ms: u32,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            rtp_ports: PortRange {
                first: 20_000,
                last: 29_999,
            },
            rtp_timeout_s: 30,
            max_call_duration_s: 4 * 3600,
            opus_complexity: dialin_media::codec::DEFAULT_OPUS_COMPLEXITY,
            jitter_min_ms: 20,
            jitter_max_ms: 200,
        }
    }
}

impl MediaConfig {
    pub fn rtp_timeout(&self) -> Duration {
        Duration::from_secs(self.rtp_timeout_s)
    }
    pub fn max_call_duration(&self) -> Duration {
        Duration::from_secs(self.max_call_duration_s)
    }
    pub fn jitter_min(&self) -> Duration {
        Duration::from_millis(u64::from(self.jitter_min_ms))
    }
    pub fn jitter_max(&self) -> Duration {
        Duration::from_millis(u64::from(self.jitter_max_ms))
    }
}

/// `[ivr]`: the PIN prompt and digit collection (DESIGN.md call flow step 3).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IvrConfig {
    pub first_digit_timeout_s: u64,
    pub inter_digit_timeout_s: u64,
    /// Times the PIN prompt is replayed for lack of a first digit before goodbye.
    pub max_prompt_replays: u32,
    /// Longest time a caller may spend in the IVR before goodbye.
    pub max_ivr_time_s: u64,
}

impl Default for IvrConfig {
    fn default() -> Self {
        IvrConfig {
            first_digit_timeout_s: 10,
            inter_digit_timeout_s: 5,
            max_prompt_replays: 3,
            max_ivr_time_s: 120,
        }
    }
}

impl IvrConfig {
    pub fn first_digit_timeout(&self) -> Duration {
        Duration::from_secs(self.first_digit_timeout_s)
    }
    pub fn inter_digit_timeout(&self) -> Duration {
        Duration::from_secs(self.inter_digit_timeout_s)
    }
    pub fn max_ivr_time(&self) -> Duration {
        Duration::from_secs(self.max_ivr_time_s)
    }
}

/// `[store]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `sqlite://FILE` (created if missing), `sqlite::memory:`, or `postgres://...`.
    pub url: String,
    /// Connections in the pool.
    pub max_connections: u32,
    /// This node's name in the store (its call records); the records it left open when it
    /// died are closed when it starts again. Default: the host name and the first SIP port.
    pub node: Option<String>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: "sqlite://dialin.db".to_owned(),
            max_connections: 8,
            node: None,
        }
    }
}

impl StoreConfig {
    /// `node`, else `<host name>:<port>` of the first SIP listen address.
    pub fn node_name(&self, sip: &SipConfig) -> String {
        if let Some(n) = self.node.as_ref().filter(|n| !n.trim().is_empty()) {
            return n.trim().to_owned();
        }
        let mut buf = [0u8; 256];
        // SAFETY: gethostname writes at most `buf.len()` bytes into the buffer we own.
        let host = if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0 {
            let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
            String::from_utf8_lossy(&buf[..end]).into_owned()
        } else {
            "localhost".to_owned()
        };
        let port = sip.listen.first().map_or(5060, |l| l.addr.port());
        format!("{host}:{port}")
    }
}

/// Which room backend callers are bridged into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RoomsBackend {
    /// In-process mixer: callers with the same PIN hear each other.
    Local,
    /// A LiveKit server.
    Livekit,
}

/// `[rooms]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoomsConfig {
    pub backend: RoomsBackend,
}

impl Default for RoomsConfig {
    fn default() -> Self {
        RoomsConfig {
            backend: RoomsBackend::Local,
        }
    }
}

/// A secret string: `Debug` never shows it and `Serialize` writes a placeholder.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<secret>")
    }
}

/// `[livekit]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LiveKitConfig {
    /// `ws://` or `wss://` URL of the LiveKit server.
    pub url: String,
    pub api_key: String,
    /// Overridden by `DIALIN_LIVEKIT_API_SECRET`. Required when a LiveKit room is used.
    pub api_secret: Option<Secret>,
    /// Lifetime of the per-call access token.
    pub token_ttl_s: u64,
    /// ICE servers for the WebRTC connection to LiveKit, beyond those LiveKit hands out.
    pub ice_servers: Vec<IceServer>,
    /// Which local candidates are offered: all of them, or only TURN relays (for a gateway
    /// that must not, or cannot, send media to LiveKit directly).
    pub ice_transport_policy: IceTransportPolicy,
    /// Who counts as a room's host for participant PINs with `wait_for_host`, besides
    /// callers who keyed a host PIN: `"any_non_sip"` (any participant that is not a phone
    /// call) or `"attribute:KEY=VALUE"`.
    pub host: HostRule,
    /// Calls of this node in one room share one hidden subscriber participant, which
    /// subscribes to and decodes each track of the room's other participants once and gives
    /// each call a mix of everyone but itself (callers of this node hear each other through
    /// the node). `false`: each call's participant subscribes to every track itself.
    pub share_rooms: bool,
}

/// `livekit.host`: which LiveKit participants are hosts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum HostRule {
    /// Any participant whose kind is not SIP and whose identity is not a dialin call's.
    #[default]
    AnyNonSip,
    /// A participant whose attribute `key` is `value`.
    Attribute { key: String, value: String },
}

impl HostRule {
    pub fn parse(s: &str) -> Result<HostRule, String> {
        if s == "any_non_sip" {
            return Ok(HostRule::AnyNonSip);
        }
        match s.strip_prefix("attribute:").and_then(|kv| kv.split_once('=')) {
            Some((k, v)) if !k.is_empty() && !v.is_empty() => Ok(HostRule::Attribute {
                key: k.to_owned(),
                value: v.to_owned(),
            }),
            _ => Err(format!(
                "{s:?} is not a host rule (\"any_non_sip\" or \"attribute:KEY=VALUE\")"
            )),
        }
    }
}

impl fmt::Display for HostRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostRule::AnyNonSip => f.write_str("any_non_sip"),
            HostRule::Attribute { key, value } => write!(f, "attribute:{key}={value}"),
        }
    }
}

impl Serialize for HostRule {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HostRule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        HostRule::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// `livekit.ice_transport_policy`, as WebRTC's `RTCIceTransportPolicy`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IceTransportPolicy {
    /// Host, server-reflexive (STUN) and relayed (TURN) candidates.
    #[default]
    All,
    /// Relayed candidates only: all media goes through a TURN server.
    Relay,
}

impl Default for LiveKitConfig {
    fn default() -> Self {
        LiveKitConfig {
            url: "ws://127.0.0.1:7880".to_owned(),
            api_key: "devkey".to_owned(),
            api_secret: None,
            token_ttl_s: 600,
            ice_servers: Vec::new(),
            ice_transport_policy: IceTransportPolicy::All,
            host: HostRule::AnyNonSip,
            share_rooms: true,
        }
    }
}

/// `[[livekit.ice_servers]]`: a STUN or TURN server (RFC 7064/7065 URIs).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IceServer {
    pub url: String,
    pub username: Option<String>,
    pub credential: Option<Secret>,
}

/// `livekit = { ... }` in a `[[trunk]]`: this trunk's calls go to another LiveKit server
/// or project. Unset keys fall back to `[livekit]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LiveKitOverride {
    pub url: Option<String>,
    pub api_key: Option<String>,
    pub api_secret: Option<Secret>,
}

/// `[admin]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// Bearer token for `/v1/*`. Overridden by `DIALIN_ADMIN_TOKEN`.
    pub token: Option<Secret>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8089)),
            token: None,
        }
    }
}

impl AdminConfig {
    /// The token; `load` has checked that it is set and not empty.
    pub fn token(&self) -> &str {
        self.token.as_ref().map(Secret::expose).unwrap_or_default()
    }
}

/// `[security]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    /// Keys the hashes of phone numbers kept in the store (`DIALIN_SECURITY_SECRET`). When
    /// unset, the nodes of one store share a random secret kept in the store itself.
    pub secret: Option<Secret>,
    pub lockout: LockoutConfig,
    pub pin_guard: PinGuardConfig,
    /// Failed PINs per minute on one trunk above which a metric and a log alarm are raised.
    pub trunk_alarm_failed_per_minute: u32,
    pub unmatched_source: RateLimitConfig,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            secret: None,
            lockout: LockoutConfig::default(),
            pin_guard: PinGuardConfig::default(),
            trunk_alarm_failed_per_minute: 30,
            unmatched_source: RateLimitConfig {
                burst: 10,
                per_second: 1,
            },
        }
    }
}

/// `[security.lockout]`: failed PINs per calling number, counted in the store so the
/// limit holds across gateway nodes (DESIGN.md "Privacy and security defaults").
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LockoutConfig {
    pub failed_pin_limit: u32,
    pub window_s: u64,
    pub lockout_s: u64,
}

impl Default for LockoutConfig {
    fn default() -> Self {
        LockoutConfig {
            failed_pin_limit: 10,
            window_s: 900,
            lockout_s: 900,
        }
    }
}

impl LockoutConfig {
    pub fn window(&self) -> Duration {
        Duration::from_secs(self.window_s)
    }
    pub fn lockout(&self) -> Duration {
        Duration::from_secs(self.lockout_s)
    }
}

/// `[security.pin_guard]`: the bound on PIN verdicts per trunk, whatever the calling numbers
/// and the parallelism (see `src/pins/guard.rs` for the figure it gives).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PinGuardConfig {
    /// Sustained PIN entries per trunk: one per interval; under attack, one verdict per
    /// interval.
    pub interval_s: u64,
    /// PIN entries beyond the sustained rate before the trunk is under attack.
    pub burst: u32,
    /// An attack ends this long after its last failed PIN.
    pub cooldown_s: u64,
    /// Longest wait for a verdict during an attack; a caller beyond it is told the service
    /// is busy, without a verdict.
    pub max_wait_s: u64,
    /// How long a number that joined with a valid PIN skips the queue on that trunk.
    pub trusted_for_s: u64,
}

impl Default for PinGuardConfig {
    fn default() -> Self {
        PinGuardConfig {
            interval_s: 40,
            burst: 10,
            cooldown_s: 900,
            max_wait_s: 600,
            trusted_for_s: 30 * 86_400,
        }
    }
}

impl PinGuardConfig {
    /// The store's view of these settings.
    pub fn policy(&self) -> crate::store::GuardPolicy {
        crate::store::GuardPolicy {
            interval: Duration::from_secs(self.interval_s),
            burst: self.burst,
            cooldown: Duration::from_secs(self.cooldown_s),
            max_wait: Duration::from_secs(self.max_wait_s),
        }
    }
}

/// A token bucket: `burst` requests at once, refilled at `per_second`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    pub burst: u32,
    pub per_second: u32,
}

/// `[limits]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Concurrent calls on this node, all trunks together.
    pub max_calls: u32,
    /// On SIGTERM, how long calls in progress may go on before they are ended with a prompt.
    pub drain_timeout_s: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_calls: 1000,
            drain_timeout_s: 300,
        }
    }
}

impl LimitsConfig {
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs(self.drain_timeout_s)
    }
}

/// `[log]`: what `serve` writes on stderr.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` (for people) or `json` (one object per line, for collectors).
    pub format: LogFormat,
    /// A level (`info`, `debug`...) or `tracing` filter directives
    /// (`info,dialin::room=debug`). `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".to_owned(),
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// `[prompts]`
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PromptsConfig {
    /// Directory of recorded prompts that replace the built-in ones.
    pub dir: Option<PathBuf>,
}

/// Prompt language of a trunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    En,
    Fr,
}

/// SRTP policy of a trunk (RFC 3711, keys by SDES RFC 4568).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SrtpPolicy {
    /// RTP/AVP only; an offer with only RTP/SAVP is refused with 488.
    Disable,
    /// SRTP when offered, plain RTP otherwise.
    Allow,
    /// Plain RTP offers are refused with 488.
    Require,
}

/// Digest credentials a trunk must present (RFC 3261 §22).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TrunkAuth {
    pub username: String,
    pub password: Secret,
    /// The challenges offered, in order (RFC 8760 §2.4: a client takes the first it
    /// supports). Some phones give up when the first is SHA-256 (baresip 1.0): list `MD5`
    /// first, or alone.
    #[serde(default = "default_digest_algorithms")]
    pub algorithms: Vec<DigestAlgorithm>,
}

/// A digest algorithm a trunk is challenged with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum DigestAlgorithm {
    #[serde(rename = "SHA-256")]
    Sha256,
    #[serde(rename = "MD5")]
    Md5,
}

fn default_digest_algorithms() -> Vec<DigestAlgorithm> {
    vec![DigestAlgorithm::Sha256, DigestAlgorithm::Md5]
}

/// `[[trunk]]`: a carrier or PBX allowed to send calls.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TrunkConfig {
    pub id: TrunkId,
    /// Called numbers accepted; empty accepts any.
    #[serde(default)]
    pub numbers: Vec<CalledNumber>,
    /// Source networks calls may come from; bare addresses are host networks. Required
    /// with `trunks.source = "config"`; a LiveKit trunk brings its own.
    #[serde(default)]
    pub allowed_addresses: Vec<IpNetwork>,
    /// Further networks the carrier sends media from, when it is neither the address in
    /// the SDP nor the signalling peer (media from anywhere else is dropped).
    #[serde(default)]
    pub media_sources: Vec<IpNetwork>,
    #[serde(default)]
    pub auth: Option<TrunkAuth>,
    #[serde(default)]
    pub pin_namespace: PinNamespace,
    #[serde(default = "default_pin_length")]
    pub pin_length: usize,
    /// Wrong PINs allowed per call before goodbye.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    #[serde(default = "default_language")]
    pub language: Language,
    /// Concurrent calls on this trunk.
    #[serde(default = "default_trunk_max_calls")]
    pub max_calls: u32,
    #[serde(default = "default_srtp")]
    pub srtp: SrtpPolicy,
    /// Put the caller's full number in the room participant (else `••••1234`).
    #[serde(default)]
    pub expose_phone_number: bool,
    #[serde(default)]
    pub livekit: Option<LiveKitOverride>,
    /// The in-room keypad menu (`*6` mute, `*1` count, `*9` hand, `*0` help); `false` sends
    /// every key to the room as DTMF.
    #[serde(default = "default_true")]
    pub keypad: bool,
    /// The keypad's key sequences.
    #[serde(default)]
    pub keys: KeypadKeys,
    /// Cues a phone caller hears when others join or leave.
    #[serde(default)]
    pub announce: Announce,
    /// Participant attributes every call of the trunk gets.
    #[serde(default)]
    pub attributes: std::collections::BTreeMap<String, String>,
    /// INVITE headers copied into participant attributes: header name → attribute.
    #[serde(default)]
    pub headers_to_attributes: std::collections::BTreeMap<String, String>,
    /// Calling numbers allowed (E.164-normalised); empty allows any.
    #[serde(default)]
    pub allowed_callers: Vec<CalledNumber>,
}

/// `[pins]`: the PIN sources, tried in order (the first that knows the PIN wins).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PinsConfig {
    pub sources: Vec<SourceKind>,
    pub livekit: PinsLiveKitConfig,
    /// Required when `sources` lists `http`.
    pub http: Option<PinsHttpConfig>,
}

impl Default for PinsConfig {
    fn default() -> Self {
        PinsConfig {
            sources: vec![SourceKind::Store],
            livekit: PinsLiveKitConfig::default(),
            http: None,
        }
    }
}

/// `[pins.livekit]`: LiveKit's SIP dispatch rules, read through `[livekit]`'s server and key.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PinsLiveKitConfig {
    /// The rules are cached and read again this often (seconds); a PIN no rule has makes
    /// them read again at once, at most once per `miss_refresh_s`.
    pub refresh_s: u64,
    pub miss_refresh_s: u64,
}

impl Default for PinsLiveKitConfig {
    fn default() -> Self {
        PinsLiveKitConfig {
            refresh_s: 30,
            miss_refresh_s: 2,
        }
    }
}

/// `[pins.http]`: the meeting app's resolver.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PinsHttpConfig {
    /// `https://` (or `http://` on a trusted network).
    pub url: String,
    /// Signs each request (HMAC-SHA256); overridden by `DIALIN_PINS_HTTP_SECRET`. Required
    /// for the `dialin` format.
    #[serde(default)]
    pub secret: Option<Secret>,
    #[serde(default = "default_http_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default)]
    pub format: HttpPinFormat,
}

fn default_http_timeout_ms() -> u64 {
    2000
}

/// `pins.http.format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HttpPinFormat {
    /// dialin's signed JSON POST.
    #[default]
    Dialin,
    /// Jitsi's conference mapper: `GET url?id=PIN` → `{"id", "conference": "room@domain"}`.
    JitsiMapper,
}

/// `[trunks]`: where the trunks come from.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrunksConfig {
    pub source: TrunkSource,
    /// How often LiveKit's inbound trunks are read again (seconds).
    pub refresh_s: u64,
}

impl Default for TrunksConfig {
    fn default() -> Self {
        TrunksConfig {
            source: TrunkSource::Config,
            refresh_s: 30,
        }
    }
}

/// `trunks.source`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TrunkSource {
    /// The `[[trunk]]` tables.
    #[default]
    Config,
    /// LiveKit's SIP inbound trunks; a `[[trunk]]` with the same id sets dialin's own
    /// settings for it (language, limits, PIN length...).
    Livekit,
}

/// `trunk.announce`: what a caller in the room hears when someone joins or leaves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Announce {
    None,
    /// A short rising tone for a join, falling for a leave; never sent into the room.
    #[default]
    Tones,
}

fn default_true() -> bool {
    true
}

fn default_pin_length() -> usize {
    10
}
fn default_max_attempts() -> u32 {
    3
}
fn default_language() -> Language {
    Language::En
}
fn default_trunk_max_calls() -> u32 {
    100
}
fn default_srtp() -> SrtpPolicy {
    SrtpPolicy::Disable
}

impl Config {
    /// Reads, parses and checks a configuration file, with secrets overridden from the
    /// process environment (`DIALIN_ADMIN_TOKEN`, `DIALIN_LIVEKIT_API_SECRET`).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, |name| std::env::var(name).ok())
    }

    /// Parses and checks configuration text; `env` looks up environment overrides
    /// (tests pass a closure instead of touching the process environment).
    pub fn parse(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let de = toml::Deserializer::new(text);
        let mut config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            let message = inner.message().to_owned();
            let line = inner.span().map(|span| {
                let line = text
                    .get(..span.start)
                    .map_or(0, |s| s.matches('\n').count())
                    + 1;
                format!(" (line {line})")
            });
            if key.is_empty() || key == "." {
                ConfigError::Syntax(format!(
                    "{}{}",
                    message.trim_end(),
                    line.unwrap_or_default()
                ))
            } else {
                ConfigError::Invalid {
                    key,
                    message: format!("{}{}", message.trim_end(), line.unwrap_or_default()),
                }
            }
        })?;
        if let Some(token) = env(ENV_ADMIN_TOKEN) {
            config.admin.token = Some(Secret(token));
        }
        if let Some(secret) = env(ENV_LIVEKIT_API_SECRET) {
            config.livekit.api_secret = Some(Secret(secret));
        }
        if let Some(secret) = env(ENV_SECURITY_SECRET) {
            config.security.secret = Some(Secret(secret));
        }
        if let (Some(secret), Some(http)) = (env(ENV_PINS_HTTP_SECRET), config.pins.http.as_mut()) {
            http.secret = Some(Secret(secret));
        }
        config.validate()?;
        Ok(config)
    }

    /// The trunk-wide PIN length of a namespace, if a trunk uses it.
    pub fn pin_length_of(&self, namespace: &PinNamespace) -> Option<usize> {
        self.trunks
            .iter()
            .find(|t| &t.pin_namespace == namespace)
            .map(|t| t.pin_length)
    }

    /// Checks what types alone cannot: ranges, cross-key rules, required secrets.
    fn validate(&self) -> Result<(), ConfigError> {
        let sip = &self.sip;
        if sip.listen.is_empty() {
            return Err(ConfigError::invalid(
                "sip.listen",
                "at least one listen address is needed",
            ));
        }
        for (i, l) in sip.listen.iter().enumerate() {
            if sip.listen[..i].contains(l) {
                return Err(ConfigError::invalid(
                    format!("sip.listen[{i}]"),
                    format!("\"{l}\" is listed twice"),
                ));
            }
        }
        if sip.listen.iter().any(|l| l.transport == Transport::Tls) {
            if sip.tls.cert.is_none() {
                return Err(ConfigError::invalid(
                    "sip.tls.cert",
                    "a tls:// listener needs a certificate file",
                ));
            }
            if sip.tls.key.is_none() {
                return Err(ConfigError::invalid(
                    "sip.tls.key",
                    "a tls:// listener needs a private key file",
                ));
            }
            if let (Some(cert), Some(key)) = (&sip.tls.cert, &sip.tls.key) {
                check_tls_files(cert, key)?;
            }
        }
        if sip.user_agent.trim().is_empty() || sip.user_agent.chars().any(char::is_control) {
            return Err(ConfigError::invalid(
                "sip.user_agent",
                "must be a non-empty single line",
            ));
        }
        // RFC 3261 §18.1.1: an implementation must handle messages up to the path MTU;
        // below 1500 bytes ordinary INVITEs with SDP would be refused.
        if !(1500..=1_048_576).contains(&sip.max_message_size) {
            return Err(ConfigError::invalid(
                "sip.max_message_size",
                "must be between 1500 and 1048576 bytes",
            ));
        }

        let media = &self.media;
        if media.rtp_ports.len() < 4 {
            return Err(ConfigError::invalid(
                "media.rtp_ports",
                "must hold at least 4 ports (2 per call: RTP and RTCP)",
            ));
        }
        within("media.rtp_timeout_s", media.rtp_timeout_s, 1, 3_600)?;
        within("media.max_call_duration_s", media.max_call_duration_s, 1, 7 * 86_400)?;
        if media.opus_complexity > 10 {
            return Err(ConfigError::invalid(
                "media.opus_complexity",
                "must be between 0 and 10",
            ));
        }
        if media.jitter_max_ms == 0 || media.jitter_max_ms > 2000 {
            return Err(ConfigError::invalid(
                "media.jitter_max_ms",
                "must be between 1 and 2000",
            ));
        }
        if media.jitter_min_ms > media.jitter_max_ms {
            return Err(ConfigError::invalid(
                "media.jitter_min_ms",
                "must not exceed media.jitter_max_ms",
            ));
        }

        let ivr = &self.ivr;
        within("ivr.first_digit_timeout_s", ivr.first_digit_timeout_s, 1, 600)?;
        within("ivr.inter_digit_timeout_s", ivr.inter_digit_timeout_s, 1, 600)?;
        within("ivr.max_prompt_replays", u64::from(ivr.max_prompt_replays), 0, 100)?;
        within("ivr.max_ivr_time_s", ivr.max_ivr_time_s, 1, 3_600)?;

        let url = &self.store.url;
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return Err(ConfigError::invalid(
                "store.url",
                format!(
                    "{:?} is not a store URL (sqlite://FILE, sqlite::memory: or postgres://...)",
                    redact_url(url)
                ),
            ));
        }
        if self.store.max_connections == 0 {
            return Err(ConfigError::invalid(
                "store.max_connections",
                "must be at least 1",
            ));
        }

        let pins = &self.pins;
        if pins.sources.is_empty() {
            return Err(ConfigError::invalid("pins.sources", "must list at least one of \"store\", \"livekit\", \"http\""));
        }
        for (i, k) in pins.sources.iter().enumerate() {
            if pins.sources[..i].contains(k) {
                return Err(ConfigError::invalid(format!("pins.sources[{i}]"), format!("\"{k}\" is listed twice")));
            }
        }
        within("pins.livekit.refresh_s", pins.livekit.refresh_s, 1, 86_400)?;
        within("pins.livekit.miss_refresh_s", pins.livekit.miss_refresh_s, 0, 3_600)?;
        within("trunks.refresh_s", self.trunk_source.refresh_s, 1, 86_400)?;
        match (&pins.http, pins.sources.contains(&SourceKind::Http)) {
            (None, true) => {
                return Err(ConfigError::invalid("pins.http", "is required when pins.sources lists \"http\""))
            }
            (Some(http), _) => {
                let scheme = http.url.split_once("://").map(|(s, _)| s);
                if !matches!(scheme, Some("http" | "https")) || http.url.len() < 10 {
                    return Err(ConfigError::invalid(
                        "pins.http.url",
                        format!("{:?} is not an http:// or https:// URL", redact_url(&http.url)),
                    ));
                }
                within("pins.http.timeout_ms", http.timeout_ms, 50, 60_000)?;
                if http.format == HttpPinFormat::Dialin
                    && !matches!(&http.secret, Some(s) if s.0.len() >= 16)
                {
                    return Err(ConfigError::invalid(
                        "pins.http.secret",
                        format!("needs at least 16 characters to sign requests (or set {ENV_PINS_HTTP_SECRET})"),
                    ));
                }
            }
            (None, false) => {}
        }
        let livekit_used = self.rooms.backend == RoomsBackend::Livekit
            || pins.sources.contains(&SourceKind::Livekit)
            || self.trunk_source.source == TrunkSource::Livekit;
        let lk = &self.livekit;
        check_ws_url("livekit.url", &lk.url)?;
        if livekit_used {
            if lk.api_key.trim().is_empty() {
                return Err(ConfigError::invalid(
                    "livekit.api_key",
                    "must not be empty when rooms.backend = \"livekit\"",
                ));
            }
            match &lk.api_secret {
                None => {
                    return Err(ConfigError::invalid(
                        "livekit.api_secret",
                        format!("is required when LiveKit is used (rooms, pins or trunks) (or set {ENV_LIVEKIT_API_SECRET})"),
                    ))
                }
                Some(s) if s.0.is_empty() => return Err(ConfigError::invalid("livekit.api_secret", "must not be empty")),
                Some(_) => {}
            }
        }
        within("livekit.token_ttl_s", lk.token_ttl_s, 1, 86_400)?;
        for (i, ice) in lk.ice_servers.iter().enumerate() {
            let key = format!("livekit.ice_servers[{i}]");
            let scheme = ice.url.split_once(':').map(|(s, _)| s).unwrap_or_default();
            match scheme {
                "stun" => {
                    if crate::room::livekit::stun::parse_url(&ice.url)
                        == crate::room::livekit::stun::IceUrl::Invalid
                    {
                        return Err(ConfigError::invalid(
                            format!("{key}.url"),
                            format!("{:?} is not a STUN URI (stun:host[:port])", ice.url),
                        ));
                    }
                }
                "stuns" => {}
                "turn" | "turns" => {
                    if crate::room::livekit::stun::parse_url(&ice.url)
                        == crate::room::livekit::stun::IceUrl::Invalid
                    {
                        return Err(ConfigError::invalid(
                            format!("{key}.url"),
                            format!(
                                "{:?} is not a TURN URI (turn:host[:port][?transport=udp|tcp])",
                                ice.url
                            ),
                        ));
                    }
                    if !matches!(ice.username.as_deref(), Some(u) if !u.is_empty()) {
                        return Err(ConfigError::invalid(
                            format!("{key}.username"),
                            format!("TURN server {:?} needs a username", ice.url),
                        ));
                    }
                    if !matches!(&ice.credential, Some(c) if !c.0.is_empty()) {
                        return Err(ConfigError::invalid(
                            format!("{key}.credential"),
                            format!("TURN server {:?} needs a credential", ice.url),
                        ));
                    }
                }
                _ => {
                    return Err(ConfigError::invalid(
                        format!("{key}.url"),
                        format!(
                            "{:?} is not a STUN or TURN URI (stun:, stuns:, turn:, turns:)",
                            ice.url
                        ),
                    ))
                }
            }
        }

        match &self.admin.token {
            None => {
                return Err(ConfigError::invalid(
                    "admin.token",
                    format!("is required (or set {ENV_ADMIN_TOKEN})"),
                ))
            }
            Some(t) if t.0.trim().is_empty() => {
                return Err(ConfigError::invalid("admin.token", "must not be empty"))
            }
            Some(_) => {}
        }

        let sec = &self.security;
        within(
            "security.lockout.failed_pin_limit",
            u64::from(sec.lockout.failed_pin_limit),
            1,
            10_000,
        )?;
        within("security.lockout.window_s", sec.lockout.window_s, 1, 30 * 86_400)?;
        within("security.lockout.lockout_s", sec.lockout.lockout_s, 1, 30 * 86_400)?;
        within(
            "security.trunk_alarm_failed_per_minute",
            u64::from(sec.trunk_alarm_failed_per_minute),
            1,
            1_000_000,
        )?;
        within(
            "security.unmatched_source.burst",
            u64::from(sec.unmatched_source.burst),
            1,
            1_000_000,
        )?;
        within(
            "security.unmatched_source.per_second",
            u64::from(sec.unmatched_source.per_second),
            1,
            1_000_000,
        )?;
        within("sip.max_connections", sip.max_connections, 1, 1_000_000)?;
        within("sip.max_connections_per_source", sip.max_connections_per_source, 1, 1_000_000)?;
        within("sip.max_untrusted_connections", sip.max_untrusted_connections, 0, 1_000_000)?;
        within("sip.message_timeout_s", sip.message_timeout_s, 1, 3600)?;
        within("sip.idle_timeout_s", sip.idle_timeout_s, 1, 86_400)?;
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(ConfigError::invalid(
                "log.level",
                format!("{:?} is not a level or filter ({e})", self.log.level),
            ));
        }
        let guard = &sec.pin_guard;
        within("security.pin_guard.interval_s", guard.interval_s, 1, 86_400)?;
        within("security.pin_guard.burst", u64::from(guard.burst), 1, 10_000)?;
        within("security.pin_guard.cooldown_s", guard.cooldown_s, 1, 30 * 86_400)?;
        within("security.pin_guard.max_wait_s", guard.max_wait_s, 0, 86_400)?;
        within("security.pin_guard.trusted_for_s", guard.trusted_for_s, 0, 366 * 86_400)?;
        if sec.secret.as_ref().is_some_and(|s| s.expose().len() < 16) {
            return Err(ConfigError::invalid(
                "security.secret",
                "must be at least 16 characters (or leave it unset: the store keeps a random one)",
            ));
        }
        within("limits.max_calls", u64::from(self.limits.max_calls), 1, 100_000)?;
        within("limits.drain_timeout_s", self.limits.drain_timeout_s, 0, 86_400)?;
        within("store.max_connections", u64::from(self.store.max_connections), 1, 1_000)?;

        if self.trunks.is_empty() && self.trunk_source.source == TrunkSource::Config {
            return Err(ConfigError::invalid(
                "trunk",
                "at least one [[trunk]] is needed, or no call can be accepted (or trunks.source = \"livekit\")",
            ));
        }
        let mut namespace_lengths: HashMap<&PinNamespace, (usize, usize)> = HashMap::new();
        for (i, t) in self.trunks.iter().enumerate() {
            let key = |k: &str| format!("trunk[{i}].{k}");
            if let Err(clash) = t.keys.check() {
                return Err(ConfigError::invalid(key("keys"), clash.to_string()));
            }
            if let Some(j) = self.trunks[..i].iter().position(|o| o.id == t.id) {
                return Err(ConfigError::invalid(
                    key("id"),
                    format!("{:?} is already the id of trunk[{j}]", t.id.as_str()),
                ));
            }
            if t.allowed_addresses.is_empty() && self.trunk_source.source == TrunkSource::Config {
                return Err(ConfigError::invalid(
                    key("allowed_addresses"),
                    "must list at least one network (0.0.0.0/0 and ::/0 accept any source; use them with auth)",
                ));
            }
            if !(Pin::MIN_LEN..=Pin::MAX_LEN).contains(&t.pin_length) {
                return Err(ConfigError::invalid(
                    key("pin_length"),
                    format!(
                        "{} is out of range ({}..={})",
                        t.pin_length,
                        Pin::MIN_LEN,
                        Pin::MAX_LEN
                    ),
                ));
            }
            if !(1..=10).contains(&t.max_attempts) {
                return Err(ConfigError::invalid(
                    key("max_attempts"),
                    format!("{} is out of range (1..=10)", t.max_attempts),
                ));
            }
            within(&key("max_calls"), u64::from(t.max_calls), 1, 100_000)?;
            if let Some(auth) = &t.auth {
                if auth.algorithms.is_empty() {
                    return Err(ConfigError::invalid(
                        key("auth.algorithms"),
                        "lists no algorithm (use [\"SHA-256\", \"MD5\"], [\"MD5\", \"SHA-256\"] or [\"MD5\"])",
                    ));
                }
                if auth.algorithms.iter().enumerate().any(|(j, a)| auth.algorithms[..j].contains(a)) {
                    return Err(ConfigError::invalid(key("auth.algorithms"), "lists an algorithm twice"));
                }
            }
            if let Some(auth) = &t.auth {
                if auth.username.is_empty() {
                    return Err(ConfigError::invalid(
                        key("auth.username"),
                        "must not be empty",
                    ));
                }
                if auth.password.0.is_empty() {
                    return Err(ConfigError::invalid(
                        key("auth.password"),
                        "must not be empty",
                    ));
                }
            }
            if let Some(lko) = &t.livekit {
                if let Some(url) = &lko.url {
                    check_ws_url(&key("livekit.url"), url)?;
                }
                if lko.api_key.is_some() && lko.api_secret.is_none() {
                    return Err(ConfigError::invalid(
                        key("livekit.api_secret"),
                        "is required with trunk-level livekit.api_key",
                    ));
                }
            }
            match namespace_lengths.get(&t.pin_namespace) {
                Some(&(j, len)) if len != t.pin_length => {
                    return Err(ConfigError::invalid(
                        key("pin_length"),
                        format!(
                            "{} differs from trunk[{j}].pin_length = {len}, and both trunks use pin_namespace {:?}",
                            t.pin_length,
                            t.pin_namespace.as_str()
                        ),
                    ))
                }
                Some(_) => {}
                None => {
                    namespace_lengths.insert(&t.pin_namespace, (i, t.pin_length));
                }
            }
        }
        Ok(())
    }

    /// What is valid but probably not meant: printed by `check-config`, logged at start.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let addrs: Vec<SocketAddr> = self.sip.listen.iter().map(|l| l.addr).collect();
        let media = crate::ingress::gateway::MediaBind::from_listen(&addrs);
        let shared_store =
            self.store.url.starts_with("postgres://") || self.store.url.starts_with("postgresql://");
        if shared_store && self.rooms.backend == RoomsBackend::Local {
            out.push(
                "rooms.backend = \"local\" with a PostgreSQL store: local rooms are mixed inside \
                 one node, so callers of one PIN routed to two nodes do not hear each other; use \
                 rooms.backend = \"livekit\" to spread rooms over several nodes"
                    .to_owned(),
            );
        }
        for (missing, family) in [(media.v4.is_none(), "IPv4"), (media.v6.is_none(), "IPv6")] {
            if missing {
                out.push(format!(
                    "sip.listen: no {family} address (nor a dual-stack [::]); calls whose media \
                     is {family} are refused with 488"
                ));
            }
        }
        out
    }

    /// A short human summary for `dialin check-config`.
    pub fn summary(&self) -> String {
        let listen: Vec<String> = self.sip.listen.iter().map(ToString::to_string).collect();
        let mut out = format!(
            "sip: {}\nmedia: rtp ports {}\nstore: {}\nrooms: {}\nadmin: http://{}\n",
            listen.join(", "),
            self.media.rtp_ports,
            redact_url(&self.store.url),
            match self.rooms.backend {
                RoomsBackend::Local => "local".to_owned(),
                RoomsBackend::Livekit => format!("livekit at {}", self.livekit.url),
            },
            self.admin.listen,
        );
        for t in &self.trunks {
            let nets: Vec<String> = t
                .allowed_addresses
                .iter()
                .map(ToString::to_string)
                .collect();
            let numbers = if t.numbers.is_empty() {
                "any number".to_owned()
            } else {
                t.numbers
                    .iter()
                    .map(|n| n.as_str().to_owned())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            out.push_str(&format!(
                "trunk {}: from {}; {}; PIN namespace {:?}, {} digits{}\n",
                t.id,
                nets.join(", "),
                numbers,
                t.pin_namespace.as_str(),
                t.pin_length,
                if t.auth.is_some() {
                    "; digest auth"
                } else {
                    ""
                },
            ));
        }
        out
    }
}

/// The TLS certificate chain and key must be readable PEM: a certificate at least, and a
/// private key (PKCS#8, PKCS#1 or SEC1).
fn check_tls_files(cert: &Path, key: &Path) -> Result<(), ConfigError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert).map_err(|e| {
        ConfigError::invalid("sip.tls.cert", format!("{}: {e}", cert.display()))
    })?;
    let mut n = 0;
    for c in certs {
        c.map_err(|e| ConfigError::invalid("sip.tls.cert", format!("{}: {e}", cert.display())))?;
        n += 1;
    }
    if n == 0 {
        return Err(ConfigError::invalid(
            "sip.tls.cert",
            format!("{}: no PEM certificate in the file", cert.display()),
        ));
    }
    PrivateKeyDer::from_pem_file(key).map_err(|e| {
        ConfigError::invalid(
            "sip.tls.key",
            format!("{}: no usable PEM private key ({e})", key.display()),
        )
    })?;
    Ok(())
}

/// `value` must lie in `min..=max` (no key may be set so large that arithmetic on it
/// overflows).
fn within(key: &str, value: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(ConfigError::invalid(
            key,
            format!("must be between {min} and {max} (is {value})"),
        ));
    }
    Ok(())
}

fn check_ws_url(key: &str, url: &str) -> Result<(), ConfigError> {
    let ok = ["ws://", "wss://", "http://", "https://"]
        .iter()
        .any(|p| url.strip_prefix(p).is_some_and(|rest| !rest.is_empty()));
    if !ok {
        return Err(ConfigError::invalid(
            key,
            format!("{url:?} is not a ws://, wss://, http:// or https:// URL"),
        ));
    }
    Ok(())
}

/// Hides the password of a `scheme://user:password@host` URL.
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        if let Some((userinfo, host)) = rest.split_once('@') {
            if let Some((user, _)) = userinfo.split_once(':') {
                return format!("{scheme}://{user}:****@{host}");
            }
        }
    }
    url.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_address_needs_a_transport_scheme() {
        assert!("udp://127.0.0.1:5060".parse::<ListenAddr>().is_ok());
        assert!("tls://[::1]:5061".parse::<ListenAddr>().is_ok());
        assert!("127.0.0.1:5060".parse::<ListenAddr>().is_err());
        assert!("sctp://127.0.0.1:5060".parse::<ListenAddr>().is_err());
    }

    #[test]
    fn port_range_needs_two_ordered_ports() {
        assert_eq!(
            "20000-29999".parse::<PortRange>().map(|r| r.len()),
            Ok(10_000)
        );
        assert!("29999-20000".parse::<PortRange>().is_err());
        assert!("20000".parse::<PortRange>().is_err());
    }

    #[test]
    fn url_password_is_redacted() {
        assert_eq!(redact_url("postgres://u:pw@db/x"), "postgres://u:****@db/x");
        assert_eq!(redact_url("sqlite://dialin.db"), "sqlite://dialin.db");
    }
}
