//! SIP digest authentication, server side (RFC 3261 §22, RFC 2617, RFC 7616, RFC 8760).
//!
//! Used when a trunk has credentials: an INVITE without (valid) credentials is answered
//! `401`/`407` with the values from [`DigestServer::challenge`]; the retried INVITE's
//! `Authorization`/`Proxy-Authorization` values go through [`DigestServer::verify`].
//! Sans-IO: the caller passes the current wall-clock time (nonces must be checkable by
//! every gateway node sharing the secret, so they carry wall-clock time, not `Instant`).
//!
//! Nonces are self-authenticating: `timestamp || random || HMAC-SHA256(secret, ...)`, so
//! any node with the secret checks them without a table. The only state is the highest
//! nonce-count seen per nonce (RFC 7616 §3.4.2 replay protection), kept in a bounded map.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use md5::Md5;
use rand::RngCore as _;
use sha2::{Sha256, Sha512_256};
use subtle::ConstantTimeEq as _;

type HmacSha256 = Hmac<Sha256>;

/// Nonce layout: 8-byte big-endian Unix seconds, 8 random bytes, 16-byte truncated HMAC.
const NONCE_TIME_LEN: usize = 8;
const NONCE_RANDOM_LEN: usize = 8;
const NONCE_MAC_LEN: usize = 16;
const NONCE_LEN: usize = NONCE_TIME_LEN + NONCE_RANDOM_LEN + NONCE_MAC_LEN;
/// Nonces stamped further ahead than this were not made by a node with a sane clock.
const MAX_CLOCK_SKEW: Duration = Duration::from_secs(30);
/// Bound of the nonce-count table: enough for every call attempt within a nonce lifetime
/// at a few hundred calls per second.
const DEFAULT_NC_TABLE_CAPACITY: usize = 65_536;
/// An Authorization value longer than this is refused before parsing.
const MAX_HEADER_LEN: usize = 4096;
const MAX_PARAMS: usize = 32;

/// Hash algorithms of RFC 7616 §3.3 / RFC 8760 §2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Md5,
    Md5Sess,
    Sha256,
    Sha256Sess,
    Sha512_256,
    Sha512_256Sess,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Md5Sess => "MD5-sess",
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Sha256Sess => "SHA-256-sess",
            Algorithm::Sha512_256 => "SHA-512-256",
            Algorithm::Sha512_256Sess => "SHA-512-256-sess",
        }
    }

    /// Case-insensitive, as RFC 7616 §3.3 names them (`MD5`, `SHA-256-sess`, ...).
    pub fn parse(s: &str) -> Option<Algorithm> {
        [
            Algorithm::Md5,
            Algorithm::Md5Sess,
            Algorithm::Sha256,
            Algorithm::Sha256Sess,
            Algorithm::Sha512_256,
            Algorithm::Sha512_256Sess,
        ]
        .into_iter()
        .find(|a| a.as_str().eq_ignore_ascii_case(s))
    }

    fn is_session(self) -> bool {
        matches!(
            self,
            Algorithm::Md5Sess | Algorithm::Sha256Sess | Algorithm::Sha512_256Sess
        )
    }

    /// The base hash, which is what a stored HA1 is computed with.
    fn base(self) -> Algorithm {
        match self {
            Algorithm::Md5 | Algorithm::Md5Sess => Algorithm::Md5,
            Algorithm::Sha256 | Algorithm::Sha256Sess => Algorithm::Sha256,
            Algorithm::Sha512_256 | Algorithm::Sha512_256Sess => Algorithm::Sha512_256,
        }
    }

    /// Lower-case hex of the hash of `parts` joined by ':'.
    fn hash_hex(self, parts: &[&str]) -> String {
        fn run<D: sha2::Digest>(parts: &[&str]) -> Vec<u8> {
            let mut d = D::new();
            for (i, p) in parts.iter().enumerate() {
                if i > 0 {
                    d.update(b":");
                }
                d.update(p.as_bytes());
            }
            d.finalize().to_vec()
        }
        let bytes = match self.base() {
            Algorithm::Md5 => run::<Md5>(parts),
            Algorithm::Sha512_256 => run::<Sha512_256>(parts),
            _ => run::<Sha256>(parts),
        };
        let mut hex = String::with_capacity(bytes.len() * 2);
        for b in bytes {
            let _ = write!(hex, "{b:02x}");
        }
        hex
    }
}

/// What the credential store holds for a user.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    Password(String),
    /// `H(username:realm:password)` in lower-case hex, for the given base algorithm.
    Ha1 {
        algorithm: Algorithm,
        ha1: String,
    },
}

impl std::fmt::Debug for Credential {
    // Secrets stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Password(_) => f.write_str("Password(..)"),
            Credential::Ha1 { algorithm, .. } => write!(f, "Ha1({})", algorithm.as_str()),
        }
    }
}

/// Why credentials were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidReason {
    #[error("malformed credentials: {0}")]
    Malformed(&'static str),
    #[error("missing parameter {0}")]
    MissingParameter(&'static str),
    #[error("unsupported algorithm")]
    UnsupportedAlgorithm,
    #[error("unsupported qop")]
    UnsupportedQop,
    #[error("userhash and encoded usernames are not supported")]
    UnsupportedUsername,
    #[error("the digest uri does not match the request URI")]
    UriMismatch,
    #[error("the nonce was not issued by us")]
    ForgedNonce,
    #[error("the opaque value does not match")]
    OpaqueMismatch,
    #[error("unknown user")]
    UnknownUser,
    #[error("the response does not match")]
    WrongResponse,
    #[error("nonce-count not greater than the last one seen for this nonce")]
    ReplayedNonceCount,
    #[error("credentials without qop are refused")]
    QopRequired,
}

/// The verdict on a request's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyOutcome {
    Ok {
        username: String,
    },
    /// Right password, expired nonce: re-challenge with `stale=true` (RFC 7616 §3.3).
    Stale,
    Invalid(InvalidReason),
    /// No Digest credentials for our realm: challenge.
    Missing,
}

/// Issues challenges and verifies credentials for one realm.
pub struct DigestServer {
    realm: String,
    /// HMAC keyed with the secret, cloned per use.
    keyed: HmacSha256,
    nonce_ttl: Duration,
    opaque: String,
    allow_without_qop: bool,
    nonce_counts: NonceCounts,
}

impl std::fmt::Debug for DigestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DigestServer")
            .field("realm", &self.realm)
            .field("nonce_ttl", &self.nonce_ttl)
            .finish_non_exhaustive()
    }
}

impl DigestServer {
    /// `secret` keys the nonce HMAC; nodes that must accept each other's nonces share it.
    pub fn new(realm: impl Into<String>, secret: &[u8], nonce_ttl: Duration) -> DigestServer {
        let realm = realm.into();
        #[allow(clippy::expect_used)]
        let keyed =
            <HmacSha256 as Mac>::new_from_slice(secret).expect("HMAC accepts keys of any length");
        let mut mac = keyed.clone();
        mac.update(b"opaque:");
        mac.update(realm.as_bytes());
        let tag = mac.finalize().into_bytes();
        let opaque = tag.iter().take(16).fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        });
        DigestServer {
            realm,
            keyed,
            nonce_ttl,
            opaque,
            allow_without_qop: true,
            nonce_counts: NonceCounts::new(DEFAULT_NC_TABLE_CAPACITY),
        }
    }

    /// Whether RFC 2069-style credentials (no qop, no nonce-count) are accepted. They are by
    /// default: older SIP phones and PBXs still send them.
    pub fn with_legacy_without_qop(mut self, allow: bool) -> DigestServer {
        self.allow_without_qop = allow;
        self
    }

    /// Bounds the nonce-count table (oldest nonce evicted first).
    pub fn with_nonce_count_capacity(mut self, capacity: usize) -> DigestServer {
        self.nonce_counts = NonceCounts::new(capacity.max(1));
        self
    }

    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// `WWW-Authenticate` / `Proxy-Authenticate` values, one per algorithm, in the order
    /// given (RFC 7616 §3.7: the preferred algorithm first, e.g. SHA-256 then MD5 for
    /// clients that only know MD5). All share one fresh nonce.
    pub fn challenge(&self, now: SystemTime, stale: bool, algorithms: &[Algorithm]) -> Vec<String> {
        let nonce = self.make_nonce(now);
        algorithms
            .iter()
            .map(|a| {
                let mut v = format!(
                    "Digest realm=\"{}\", nonce=\"{nonce}\", opaque=\"{}\", algorithm={}, qop=\"auth\"",
                    escape(&self.realm),
                    self.opaque,
                    a.as_str()
                );
                if stale {
                    v.push_str(", stale=true");
                }
                v
            })
            .collect()
    }

    fn make_nonce(&self, now: SystemTime) -> String {
        let secs = unix_seconds(now);
        let mut raw = [0u8; NONCE_LEN];
        let (time, rest) = raw.split_at_mut(NONCE_TIME_LEN);
        time.copy_from_slice(&secs.to_be_bytes());
        let (random, mac_out) = rest.split_at_mut(NONCE_RANDOM_LEN);
        rand::rngs::OsRng.fill_bytes(random);
        let tag = self.nonce_mac(&secs.to_be_bytes(), random);
        mac_out.copy_from_slice(tag.get(..NONCE_MAC_LEN).unwrap_or(&[0u8; NONCE_MAC_LEN]));
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    }

    fn nonce_mac(&self, time: &[u8], random: &[u8]) -> Vec<u8> {
        let mut mac = self.keyed.clone();
        mac.update(b"nonce:");
        mac.update(self.realm.as_bytes());
        mac.update(b":");
        mac.update(time);
        mac.update(random);
        mac.finalize().into_bytes().to_vec()
    }

    /// Checks a nonce we issued: `Ok(issued_at_secs)` or why not.
    fn check_nonce(&self, nonce: &str) -> Result<(u64, [u8; NONCE_LEN]), InvalidReason> {
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(nonce)
            .map_err(|_| InvalidReason::ForgedNonce)?;
        let raw: [u8; NONCE_LEN] = raw
            .as_slice()
            .try_into()
            .map_err(|_| InvalidReason::ForgedNonce)?;
        let (time, rest) = raw.split_at(NONCE_TIME_LEN);
        let (random, mac) = rest.split_at(NONCE_RANDOM_LEN);
        let expected = self.nonce_mac(time, random);
        let expected = expected.get(..NONCE_MAC_LEN).unwrap_or(&[]);
        if !bool::from(expected.ct_eq(mac)) {
            return Err(InvalidReason::ForgedNonce);
        }
        let time: [u8; NONCE_TIME_LEN] = time.try_into().map_err(|_| InvalidReason::ForgedNonce)?;
        Ok((u64::from_be_bytes(time), raw))
    }

    /// Verifies the credentials of a request. `authorization` holds the request's
    /// `Authorization` (or `Proxy-Authorization`) header values; the first Digest value
    /// for our realm is checked, none gives [`VerifyOutcome::Missing`]. `lookup` maps a
    /// username to its credential. The nonce-count is recorded only after the response
    /// checked out, so a forger cannot burn a legitimate client's counts.
    pub fn verify<'a, F>(
        &mut self,
        now: SystemTime,
        method: &str,
        request_uri: &str,
        authorization: impl IntoIterator<Item = &'a str>,
        lookup: F,
    ) -> VerifyOutcome
    where
        F: FnOnce(&str) -> Option<Credential>,
    {
        let mut first_error = None;
        let mut params = None;
        for value in authorization {
            // Other schemes (Basic, Bearer) are not credentials for us: challenge instead.
            if !has_digest_scheme(value) {
                continue;
            }
            match parse_authorization(value) {
                Ok(p) if p.get("realm") == Some(self.realm.as_str()) => {
                    params = Some(p);
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        let Some(params) = params else {
            return match first_error {
                Some(e) => VerifyOutcome::Invalid(e),
                None => VerifyOutcome::Missing,
            };
        };
        match self.check(now, method, request_uri, &params, lookup) {
            Ok(outcome) => outcome,
            Err(reason) => VerifyOutcome::Invalid(reason),
        }
    }

    fn check<F>(
        &mut self,
        now: SystemTime,
        method: &str,
        request_uri: &str,
        p: &Params<'_>,
        lookup: F,
    ) -> Result<VerifyOutcome, InvalidReason>
    where
        F: FnOnce(&str) -> Option<Credential>,
    {
        if p.get("username*").is_some()
            || p.get("userhash")
                .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        {
            return Err(InvalidReason::UnsupportedUsername);
        }
        let username = p
            .get("username")
            .ok_or(InvalidReason::MissingParameter("username"))?;
        let nonce = p
            .get("nonce")
            .ok_or(InvalidReason::MissingParameter("nonce"))?;
        let uri = p.get("uri").ok_or(InvalidReason::MissingParameter("uri"))?;
        let response = p
            .get("response")
            .ok_or(InvalidReason::MissingParameter("response"))?;
        let algorithm = match p.get("algorithm") {
            None => Algorithm::Md5,
            Some(a) => Algorithm::parse(a).ok_or(InvalidReason::UnsupportedAlgorithm)?,
        };
        // RFC 2617 §3.2.2.5: the digest-uri must name the resource of the request.
        if uri != request_uri && !uri.eq_ignore_ascii_case(request_uri) {
            return Err(InvalidReason::UriMismatch);
        }
        if let Some(opaque) = p.get("opaque") {
            if !bool::from(opaque.as_bytes().ct_eq(self.opaque.as_bytes())) {
                return Err(InvalidReason::OpaqueMismatch);
            }
        }
        let (issued, nonce_raw) = self.check_nonce(nonce)?;
        let now_secs = unix_seconds(now);
        if issued > now_secs.saturating_add(MAX_CLOCK_SKEW.as_secs()) {
            return Err(InvalidReason::ForgedNonce);
        }
        let expired = now_secs.saturating_sub(issued) > self.nonce_ttl.as_secs();

        let qop = match p.get("qop") {
            None => None,
            Some(q) if q.eq_ignore_ascii_case("auth") => Some(q),
            Some(_) => return Err(InvalidReason::UnsupportedQop),
        };
        let (nc_value, cnonce) = match qop {
            Some(_) => {
                let nc = p.get("nc").ok_or(InvalidReason::MissingParameter("nc"))?;
                let cnonce = p
                    .get("cnonce")
                    .ok_or(InvalidReason::MissingParameter("cnonce"))?;
                // RFC 7616 §3.4: nc is exactly 8 hex digits.
                if nc.len() != 8 || !nc.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(InvalidReason::Malformed("nc is not 8 hex digits"));
                }
                let n = u32::from_str_radix(nc, 16)
                    .map_err(|_| InvalidReason::Malformed("nc is not 8 hex digits"))?;
                if n == 0 {
                    return Err(InvalidReason::Malformed("nc is zero"));
                }
                (Some((nc, n)), Some(cnonce))
            }
            None if self.allow_without_qop && !algorithm.is_session() => (None, None),
            None => return Err(InvalidReason::QopRequired),
        };

        let credential = lookup(username).ok_or(InvalidReason::UnknownUser)?;
        let ha1_base = match credential {
            Credential::Password(pw) => algorithm.hash_hex(&[username, &self.realm, &pw]),
            Credential::Ha1 { algorithm: a, ha1 } if a == algorithm.base() => {
                ha1.to_ascii_lowercase()
            }
            Credential::Ha1 { .. } => return Err(InvalidReason::UnsupportedAlgorithm),
        };
        let qop_fields = match (nc_value, cnonce) {
            (Some((nc, _)), Some(cnonce)) => Some((nc, cnonce)),
            _ => None,
        };
        let expected = expected_response(algorithm, &ha1_base, nonce, qop_fields, method, uri);
        let given = response.to_ascii_lowercase();
        if !bool::from(expected.as_bytes().ct_eq(given.as_bytes())) {
            return Err(InvalidReason::WrongResponse);
        }
        if expired {
            return Ok(VerifyOutcome::Stale);
        }
        if let Some((_, n)) = nc_value {
            if !self
                .nonce_counts
                .advance(nonce_raw, n, issued, now_secs, self.nonce_ttl.as_secs())
            {
                return Err(InvalidReason::ReplayedNonceCount);
            }
        }
        Ok(VerifyOutcome::Ok {
            username: username.to_owned(),
        })
    }
}

/// The request-digest of RFC 7616 §3.4.1 (RFC 2617 §3.2.2.1 for MD5), with `qop=auth`
/// when `qop_fields` = `(nc, cnonce)` is given, else the RFC 2069 form.
pub(crate) fn expected_response(
    algorithm: Algorithm,
    ha1_base: &str,
    nonce: &str,
    qop_fields: Option<(&str, &str)>,
    method: &str,
    uri: &str,
) -> String {
    let ha1 = if algorithm.is_session() {
        let cnonce = qop_fields.map_or("", |(_, c)| c);
        algorithm.hash_hex(&[ha1_base, nonce, cnonce])
    } else {
        ha1_base.to_owned()
    };
    let ha2 = algorithm.hash_hex(&[method, uri]);
    match qop_fields {
        Some((nc, cnonce)) => algorithm.hash_hex(&[&ha1, nonce, nc, cnonce, "auth", &ha2]),
        None => algorithm.hash_hex(&[&ha1, nonce, &ha2]),
    }
}

fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Escapes `"` and `\` for a quoted-string (RFC 3261 §25.1).
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Highest nonce-count per nonce, oldest-first eviction.
struct NonceCounts {
    capacity: usize,
    counts: HashMap<[u8; NONCE_LEN], u32>,
    order: VecDeque<([u8; NONCE_LEN], u64)>,
}

impl NonceCounts {
    fn new(capacity: usize) -> NonceCounts {
        NonceCounts {
            capacity,
            counts: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Records `nc` for `nonce` if it is greater than the last one; false for a replay.
    fn advance(
        &mut self,
        nonce: [u8; NONCE_LEN],
        nc: u32,
        issued: u64,
        now: u64,
        ttl: u64,
    ) -> bool {
        if let Some(last) = self.counts.get_mut(&nonce) {
            if nc <= *last {
                return false;
            }
            *last = nc;
            return true;
        }
        // Entries of expired nonces are useless: such nonces get `Stale` before this.
        while let Some(&(old, issued_at)) = self.order.front() {
            if now.saturating_sub(issued_at) > ttl || self.counts.len() >= self.capacity {
                self.order.pop_front();
                self.counts.remove(&old);
            } else {
                break;
            }
        }
        self.counts.insert(nonce, nc);
        self.order.push_back((nonce, issued));
        true
    }
}

/// The parameters of one Digest credentials value, unquoted.
struct Params<'a> {
    items: Vec<(&'a str, std::borrow::Cow<'a, str>)>,
}

impl Params<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        self.items
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_ref())
    }
}

fn has_digest_scheme(value: &str) -> bool {
    let v = value.trim_start();
    v.get(..6).is_some_and(|s| s.eq_ignore_ascii_case("Digest"))
        && v.get(6..).is_some_and(|rest| {
            rest.is_empty() || rest.starts_with(|c: char| c.is_ascii_whitespace())
        })
}

/// Parses `Digest name=value, name="quoted \"value\"", ...` (RFC 3261 §25.1 credentials).
fn parse_authorization(value: &str) -> Result<Params<'_>, InvalidReason> {
    if value.len() > MAX_HEADER_LEN {
        return Err(InvalidReason::Malformed("credentials too long"));
    }
    let v = value.trim_start();
    let scheme_end = v.find(|c: char| c.is_ascii_whitespace()).unwrap_or(v.len());
    let (scheme, mut rest) = v.split_at(scheme_end);
    if !scheme.eq_ignore_ascii_case("Digest") {
        return Err(InvalidReason::Malformed("scheme is not Digest"));
    }
    let mut items: Vec<(&str, std::borrow::Cow<'_, str>)> = Vec::new();
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_ascii_whitespace() || c == ',');
        if rest.is_empty() {
            break;
        }
        if items.len() >= MAX_PARAMS {
            return Err(InvalidReason::Malformed("too many parameters"));
        }
        let eq = rest
            .find('=')
            .ok_or(InvalidReason::Malformed("parameter without '='"))?;
        let (name, after) = rest.split_at(eq);
        let name = name.trim();
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            return Err(InvalidReason::Malformed("bad parameter name"));
        }
        let after = after.get(1..).unwrap_or("").trim_start();
        let (val, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            parse_quoted(quoted)?
        } else {
            let end = after
                .find(|c: char| c == ',' || c.is_ascii_whitespace())
                .unwrap_or(after.len());
            let (tok, rem) = after.split_at(end);
            if tok.is_empty() {
                return Err(InvalidReason::Malformed("empty parameter value"));
            }
            (std::borrow::Cow::Borrowed(tok), rem)
        };
        let remaining = remaining.trim_start();
        if !remaining.is_empty() && !remaining.starts_with(',') {
            return Err(InvalidReason::Malformed("missing ',' between parameters"));
        }
        if items.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
            return Err(InvalidReason::Malformed("duplicate parameter"));
        }
        items.push((name, val));
        rest = remaining;
    }
    Ok(Params { items })
}

/// Reads a quoted-string body after its opening quote; returns the value and the rest.
fn parse_quoted(s: &str) -> Result<(std::borrow::Cow<'_, str>, &str), InvalidReason> {
    let mut out: Option<String> = None;
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => {
                let rest = s.get(i + 1..).unwrap_or("");
                let val = match out {
                    Some(o) => std::borrow::Cow::Owned(o),
                    None => std::borrow::Cow::Borrowed(s.get(..i).unwrap_or("")),
                };
                return Ok((val, rest));
            }
            '\\' => {
                let o = out.get_or_insert_with(|| s.get(..i).unwrap_or("").to_owned());
                let (_, escaped) = chars
                    .next()
                    .ok_or(InvalidReason::Malformed("unterminated quoted string"))?;
                o.push(escaped);
            }
            c => {
                if let Some(o) = out.as_mut() {
                    o.push(c);
                }
            }
        }
    }
    Err(InvalidReason::Malformed("unterminated quoted string"))
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

#[cfg(test)]
mod tests;
