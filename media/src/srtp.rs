//! SRTP and SRTCP (RFC 3711) with keys exchanged by SDES (RFC 4568 `a=crypto`).
//!
//! Sits between the socket and [`rtp::Packet::parse`](crate::rtp::Packet::parse) when the
//! trunk negotiated `RTP/SAVP`: `recv → unprotect_rtp → parse → …` and
//! `… → write → protect_rtp → send`. Both work in place on the driver's buffer: protect
//! encrypts the payload and appends the authentication tag (the buffer must have room for
//! it), unprotect checks the tag, rejects replays and decrypts, returning the plain length.
//! Nothing is allocated per packet.
//!
//! Supported: the two crypto suites every SIP trunk offers, `AES_CM_128_HMAC_SHA1_80` and
//! `AES_CM_128_HMAC_SHA1_32` (RFC 4568 §6.2), key derivation rate 0 (RFC 3711 §4.3), no MKI.
//! One [`SrtpContext`] holds one master key, i.e. one direction of a call: with SDES each
//! side encrypts with the key of its own `a=crypto` line.

use std::fmt;

use aes::cipher::generic_array::GenericArray;
use aes::cipher::{BlockEncrypt, KeyInit};
use aes::Aes128;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use subtle::ConstantTimeEq;
use thiserror::Error;

use crate::rtp::{Packet, RtpError, Ssrc};

type HmacSha1 = Hmac<Sha1>;

/// RFC 3711 §8.2 / RFC 4568 §6.2: AES-128 master key length.
pub const MASTER_KEY_LEN: usize = 16;
/// RFC 3711 §8.2: 112-bit master salt.
pub const MASTER_SALT_LEN: usize = 14;
/// RFC 3711 §3.4: SRTCP always carries the 80-bit tag (RFC 4568 §6.2 for both suites).
pub const SRTCP_TAG_LEN: usize = 10;
/// RFC 3711 §3.4: the E bit and 31-bit SRTCP index.
const SRTCP_INDEX_LEN: usize = 4;
/// Octets SRTCP adds to an RTCP packet.
pub const SRTCP_OVERHEAD: usize = SRTCP_INDEX_LEN + SRTCP_TAG_LEN;
/// RFC 3711 §4.2: the session authentication key for HMAC-SHA1 is 160 bits.
const AUTH_KEY_LEN: usize = 20;
/// RFC 3711 §3.3.2: the minimum replay window is 64 packets.
const REPLAY_WINDOW: u64 = 64;
/// RFC 3711 §4.3.2 key derivation labels.
const LABEL_RTP_ENCRYPTION: u8 = 0x00;
const LABEL_RTP_AUTH: u8 = 0x01;
const LABEL_RTP_SALT: u8 = 0x02;
const LABEL_RTCP_ENCRYPTION: u8 = 0x03;
const LABEL_RTCP_AUTH: u8 = 0x04;
const LABEL_RTCP_SALT: u8 = 0x05;
/// AES blocks encrypted per batch of keystream (lets AES-NI pipeline).
const KEYSTREAM_BATCH: usize = 8;
/// RTCP header + sender SSRC, sent in the clear (RFC 3711 §3.4).
const RTCP_CLEAR_LEN: usize = 8;
/// Remote SSRCs whose receive state is kept at once. A call has one; a PBX that switches
/// streams (transfer, music on hold) may alternate between two or three. Keeping several
/// means switching back does not reset a replay window.
const RECV_SSRC_SLOTS: usize = 4;

/// Why a packet could not be protected or unprotected, or a key not parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum SrtpError {
    /// Too short to carry a header and a tag.
    #[error("SRTP packet too short")]
    TooShort,
    /// The RTP header inside is malformed.
    #[error("bad RTP header: {0}")]
    Rtp(#[from] RtpError),
    /// The buffer has no room for the authentication tag (protect).
    #[error("buffer has no room for the SRTP trailer: need {needed} octets, have {have}")]
    BufferTooSmall { needed: usize, have: usize },
    /// The authentication tag does not match: tampered, or the wrong key.
    #[error("SRTP authentication failed")]
    AuthFailed,
    /// The packet index was already received or is too old (RFC 3711 §3.3.2).
    #[error("SRTP replayed or too old packet")]
    Replayed,
    /// The SRTCP index space (2^31 packets) is used up: rekey.
    #[error("SRTCP index exhausted")]
    IndexExhausted,
    /// An `a=crypto` key parameter that is not `inline:` + base64 of 30 octets.
    #[error("invalid SDES key parameter: {0}")]
    BadKeyParams(&'static str),
    /// The key parameter uses an MKI, which this implementation does not send or accept.
    #[error("SDES key with MKI is not supported")]
    MkiUnsupported,
}

/// An SRTP protection profile / SDES crypto suite (RFC 4568 §6.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SrtpProfile {
    /// `AES_CM_128_HMAC_SHA1_80`: 80-bit RTP tag.
    AesCm128HmacSha1_80,
    /// `AES_CM_128_HMAC_SHA1_32`: 32-bit RTP tag (SRTCP keeps 80 bits).
    AesCm128HmacSha1_32,
}

impl SrtpProfile {
    /// The suite named in an `a=crypto` line, if supported.
    pub fn from_sdes_name(name: &str) -> Option<Self> {
        match name {
            "AES_CM_128_HMAC_SHA1_80" => Some(SrtpProfile::AesCm128HmacSha1_80),
            "AES_CM_128_HMAC_SHA1_32" => Some(SrtpProfile::AesCm128HmacSha1_32),
            _ => None,
        }
    }

    /// The name used in `a=crypto`.
    pub fn sdes_name(self) -> &'static str {
        match self {
            SrtpProfile::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            SrtpProfile::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
        }
    }

    /// Octets of authentication tag appended to each SRTP packet.
    pub fn rtp_tag_len(self) -> usize {
        match self {
            SrtpProfile::AesCm128HmacSha1_80 => 10,
            SrtpProfile::AesCm128HmacSha1_32 => 4,
        }
    }
}

/// An SRTP master key and salt. `Debug` does not print the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey {
    key: [u8; MASTER_KEY_LEN],
    salt: [u8; MASTER_SALT_LEN],
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// A master key from its parts.
    pub fn new(key: [u8; MASTER_KEY_LEN], salt: [u8; MASTER_SALT_LEN]) -> Self {
        MasterKey { key, salt }
    }

    /// A fresh random key for our own `a=crypto` line.
    pub fn random() -> Self {
        use rand::RngCore;
        let mut key = [0u8; MASTER_KEY_LEN];
        let mut salt = [0u8; MASTER_SALT_LEN];
        let mut rng = rand::rngs::OsRng;
        rng.fill_bytes(&mut key);
        rng.fill_bytes(&mut salt);
        MasterKey { key, salt }
    }

    /// Parse the key parameter of an `a=crypto` line (RFC 4568 §6.1):
    /// `inline:<base64 key||salt>[|lifetime][|MKI:length]`. A lifetime is accepted and
    /// ignored (calls are far shorter than 2^31 packets); an MKI is refused.
    pub fn from_sdes_inline(param: &str) -> Result<Self, SrtpError> {
        let rest = param
            .strip_prefix("inline:")
            .ok_or(SrtpError::BadKeyParams("missing inline: prefix"))?;
        let mut parts = rest.split('|');
        let b64 = parts.next().unwrap_or("");
        for extra in parts {
            if extra.contains(':') {
                return Err(SrtpError::MkiUnsupported);
            }
        }
        let mut raw = [0u8; MASTER_KEY_LEN + MASTER_SALT_LEN];
        let n =
            base64_decode(b64.as_bytes(), &mut raw).ok_or(SrtpError::BadKeyParams("bad base64"))?;
        if n != raw.len() {
            return Err(SrtpError::BadKeyParams("key||salt is not 30 octets"));
        }
        let mut key = [0u8; MASTER_KEY_LEN];
        let mut salt = [0u8; MASTER_SALT_LEN];
        key.copy_from_slice(&raw[..MASTER_KEY_LEN]);
        salt.copy_from_slice(&raw[MASTER_KEY_LEN..]);
        Ok(MasterKey { key, salt })
    }

    /// The key parameter for our `a=crypto` line: `inline:<base64>`.
    pub fn to_sdes_inline(&self) -> String {
        let mut raw = [0u8; MASTER_KEY_LEN + MASTER_SALT_LEN];
        raw[..MASTER_KEY_LEN].copy_from_slice(&self.key);
        raw[MASTER_KEY_LEN..].copy_from_slice(&self.salt);
        format!("inline:{}", base64_encode(&raw))
    }
}

/// Session keys for RTP or RTCP (RFC 3711 §4.3).
#[derive(Clone)]
struct SessionKeys {
    cipher: Aes128,
    salt: [u8; MASTER_SALT_LEN],
    mac: HmacSha1,
}

/// RFC 3711 §4.3.1/§4.3.3: AES-CM PRF over the master key, key_id = label || r with r = 0
/// (key derivation rate 0), XORed into the master salt; fills `out`.
fn derive(master: &Aes128, master_salt: &[u8; MASTER_SALT_LEN], label: u8, out: &mut [u8]) {
    let mut x = [0u8; 16];
    x[..MASTER_SALT_LEN].copy_from_slice(master_salt);
    // key_id is 56 bits (label, 48-bit r = 0) aligned to the salt's low end: label sits
    // at octet 14 - 7 = 7.
    x[7] ^= label;
    for (i, chunk) in out.chunks_mut(16).enumerate() {
        let mut block = GenericArray::from(x);
        block[14..16].copy_from_slice(&(i as u16).to_be_bytes());
        master.encrypt_block(&mut block);
        chunk.copy_from_slice(&block[..chunk.len()]);
    }
}

impl SessionKeys {
    fn derive(master: &MasterKey, enc: u8, auth: u8, salt_label: u8) -> Self {
        let m = Aes128::new(&GenericArray::from(master.key));
        let mut k = [0u8; 16];
        let mut a = [0u8; AUTH_KEY_LEN];
        let mut s = [0u8; MASTER_SALT_LEN];
        derive(&m, &master.salt, enc, &mut k);
        derive(&m, &master.salt, auth, &mut a);
        derive(&m, &master.salt, salt_label, &mut s);
        SessionKeys {
            cipher: Aes128::new(&GenericArray::from(k)),
            salt: s,
            // HMAC accepts keys of any length; 20 octets never fails.
            mac: <HmacSha1 as Mac>::new_from_slice(&a).unwrap_or_else(|_| unreachable!()),
        }
    }

    /// RFC 3711 §4.1.1: XOR the AES-CM keystream for (ssrc, index) into `data`.
    fn apply_keystream(&self, ssrc: u32, index: u64, data: &mut [u8]) {
        let mut iv = [0u8; 16];
        iv[..MASTER_SALT_LEN].copy_from_slice(&self.salt);
        for (b, s) in iv[4..8].iter_mut().zip(ssrc.to_be_bytes()) {
            *b ^= s;
        }
        for (b, s) in iv[8..14].iter_mut().zip(&index.to_be_bytes()[2..]) {
            *b ^= s;
        }
        let mut counter: u16 = 0;
        let mut blocks = [GenericArray::from([0u8; 16]); KEYSTREAM_BATCH];
        for batch in data.chunks_mut(16 * KEYSTREAM_BATCH) {
            let n = batch.len().div_ceil(16);
            for b in blocks.iter_mut().take(n) {
                b.copy_from_slice(&iv);
                b[14..16].copy_from_slice(&counter.to_be_bytes());
                counter = counter.wrapping_add(1);
            }
            self.cipher.encrypt_blocks(&mut blocks[..n]);
            for (chunk, ks) in batch.chunks_mut(16).zip(&blocks) {
                for (d, k) in chunk.iter_mut().zip(ks.iter()) {
                    *d ^= k;
                }
            }
        }
    }

    /// HMAC-SHA1 over `parts`, full 20 octets.
    fn tag(&self, data: &[u8], trailer: &[u8]) -> [u8; 20] {
        let mut mac = self.mac.clone();
        mac.update(data);
        mac.update(trailer);
        mac.finalize().into_bytes().into()
    }
}

/// RFC 3711 §3.3.2 replay list: a sliding window of 64 indices below the highest.
#[derive(Debug, Clone, Copy, Default)]
struct ReplayWindow {
    highest: Option<u64>,
    bits: u64,
}

impl ReplayWindow {
    fn check(&self, index: u64) -> Result<(), SrtpError> {
        let Some(h) = self.highest else { return Ok(()) };
        if index > h {
            return Ok(());
        }
        let back = h - index;
        if back >= REPLAY_WINDOW || self.bits & (1 << back) != 0 {
            return Err(SrtpError::Replayed);
        }
        Ok(())
    }

    fn accept(&mut self, index: u64) {
        match self.highest {
            Some(h) if index <= h => self.bits |= 1 << (h - index),
            Some(h) => {
                let shift = index - h;
                self.bits = if shift >= REPLAY_WINDOW {
                    0
                } else {
                    self.bits << shift
                };
                self.bits |= 1;
                self.highest = Some(index);
            }
            None => {
                self.bits = 1;
                self.highest = Some(index);
            }
        }
    }
}

/// Per-SSRC SRTP index state (RFC 3711 §3.3.1): rollover counter and highest sequence.
#[derive(Debug, Clone, Copy)]
struct RtpIndexState {
    ssrc: u32,
    roc: u32,
    s_l: u16,
    replay: ReplayWindow,
}

impl RtpIndexState {
    fn new(ssrc: u32, seq: u16) -> Self {
        RtpIndexState {
            ssrc,
            roc: 0,
            s_l: seq,
            replay: ReplayWindow::default(),
        }
    }

    /// RFC 3711 §3.3.1 / Appendix A: the ROC `v` this sequence number most likely belongs to.
    fn estimate(&self, seq: u16) -> u32 {
        if self.s_l < 32768 {
            if i32::from(seq) - i32::from(self.s_l) > 32768 {
                self.roc.wrapping_sub(1)
            } else {
                self.roc
            }
        } else if i32::from(self.s_l) - 32768 > i32::from(seq) {
            self.roc.wrapping_add(1)
        } else {
            self.roc
        }
    }

    fn index(roc: u32, seq: u16) -> u64 {
        (u64::from(roc) << 16) | u64::from(seq)
    }

    /// Update ROC and s_l after a packet with index (v, seq) was authenticated/sent.
    fn advance(&mut self, v: u32, seq: u16) {
        if v == self.roc.wrapping_add(1) || (v == self.roc && seq > self.s_l) {
            self.roc = v;
            self.s_l = seq;
        }
        self.replay.accept(Self::index(v, seq));
    }
}

/// Receive state per remote SSRC, least recently used evicted first.
#[derive(Debug, Clone, Copy)]
struct SsrcSlots<T: Copy> {
    slots: [Option<(u32, u64, T)>; RECV_SSRC_SLOTS],
    clock: u64,
}

impl<T: Copy> SsrcSlots<T> {
    const fn new() -> Self {
        SsrcSlots {
            slots: [None; RECV_SSRC_SLOTS],
            clock: 0,
        }
    }

    fn get(&self, ssrc: u32) -> Option<T> {
        self.slots
            .iter()
            .flatten()
            .find(|(s, _, _)| *s == ssrc)
            .map(|&(_, _, t)| t)
    }

    fn put(&mut self, ssrc: u32, value: T) {
        self.clock += 1;
        let entry = Some((ssrc, self.clock, value));
        let i = self
            .slots
            .iter()
            .position(|e| matches!(e, Some((s, _, _)) if *s == ssrc))
            .or_else(|| self.slots.iter().position(Option::is_none))
            .unwrap_or_else(|| {
                let used = |e: &Option<(u32, u64, T)>| e.map_or(0, |(_, used, _)| used);
                (0..RECV_SSRC_SLOTS)
                    .min_by_key(|&i| used(&self.slots[i]))
                    .unwrap_or(0)
            });
        if let Some(slot) = self.slots.get_mut(i) {
            *slot = entry;
        }
    }
}

/// One direction's SRTP/SRTCP crypto state for one master key.
#[derive(Clone)]
pub struct SrtpContext {
    profile: SrtpProfile,
    rtp: SessionKeys,
    rtcp: SessionKeys,
    send: Option<RtpIndexState>,
    recv: SsrcSlots<RtpIndexState>,
    srtcp_send_index: u32,
    srtcp_replay: SsrcSlots<ReplayWindow>,
}

impl fmt::Debug for SrtpContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SrtpContext")
            .field("profile", &self.profile)
            .field("send_roc", &self.send.map(|s| s.roc))
            .field("srtcp_send_index", &self.srtcp_send_index)
            .finish_non_exhaustive()
    }
}

impl SrtpContext {
    /// Derive the session keys (RFC 3711 §4.3, KDR 0) for `master` under `profile`.
    pub fn new(profile: SrtpProfile, master: &MasterKey) -> Self {
        SrtpContext {
            profile,
            rtp: SessionKeys::derive(master, LABEL_RTP_ENCRYPTION, LABEL_RTP_AUTH, LABEL_RTP_SALT),
            rtcp: SessionKeys::derive(
                master,
                LABEL_RTCP_ENCRYPTION,
                LABEL_RTCP_AUTH,
                LABEL_RTCP_SALT,
            ),
            send: None,
            recv: SsrcSlots::new(),
            srtcp_send_index: 0,
            srtcp_replay: SsrcSlots::new(),
        }
    }

    /// The profile in use.
    pub fn profile(&self) -> SrtpProfile {
        self.profile
    }

    /// Encrypt the RTP packet in `buf[..len]` in place and append its tag; returns the SRTP
    /// length (`len` + tag). `buf` must be at least that long.
    pub fn protect_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let tag_len = self.profile.rtp_tag_len();
        let out_len = len + tag_len;
        if buf.len() < out_len {
            return Err(SrtpError::BufferTooSmall {
                needed: out_len,
                have: buf.len(),
            });
        }
        let (header_len, seq, ssrc) = {
            let p = Packet::parse(buf.get(..len).ok_or(SrtpError::TooShort)?)?;
            (p.header_len(), p.seq().0, p.ssrc().0)
        };
        let state = match self.send {
            Some(s) if s.ssrc == ssrc => s,
            _ => RtpIndexState::new(ssrc, seq),
        };
        let v = state.estimate(seq);
        let index = RtpIndexState::index(v, seq);
        self.rtp
            .apply_keystream(ssrc, index, &mut buf[header_len..len]);
        let tag = self.rtp.tag(&buf[..len], &v.to_be_bytes());
        buf[len..out_len].copy_from_slice(&tag[..tag_len]);
        let mut state = state;
        state.advance(v, seq);
        self.send = Some(state);
        Ok(out_len)
    }

    /// Authenticate, replay-check and decrypt the SRTP packet that fills `buf`, in place;
    /// returns the RTP length (the tag is left after it). On error nothing is changed.
    pub fn unprotect_rtp(&mut self, buf: &mut [u8]) -> Result<usize, SrtpError> {
        let tag_len = self.profile.rtp_tag_len();
        let len = buf.len().checked_sub(tag_len).ok_or(SrtpError::TooShort)?;
        // Not `Packet::parse`: the padding count is still encrypted here.
        let header_len = crate::rtp::header_len(&buf[..len])?;
        // `header_len` checked that the 12-octet fixed header is there.
        let seq = u16::from_be_bytes([buf[2], buf[3]]);
        let ssrc = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);
        // A new SSRC starts a fresh state, committed only if the packet authenticates.
        let mut state = self
            .recv
            .get(ssrc)
            .unwrap_or_else(|| RtpIndexState::new(ssrc, seq));
        let v = state.estimate(seq);
        let index = RtpIndexState::index(v, seq);
        state.replay.check(index)?;
        let tag = self.rtp.tag(&buf[..len], &v.to_be_bytes());
        if !bool::from(tag[..tag_len].ct_eq(&buf[len..])) {
            return Err(SrtpError::AuthFailed);
        }
        self.rtp
            .apply_keystream(ssrc, index, &mut buf[header_len..len]);
        state.advance(v, seq);
        self.recv.put(ssrc, state);
        Ok(len)
    }

    /// Encrypt the compound RTCP packet in `buf[..len]` in place and append E-bit, SRTCP
    /// index and the 80-bit tag (RFC 3711 §3.4); returns `len + SRTCP_OVERHEAD`.
    pub fn protect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let out_len = len + SRTCP_OVERHEAD;
        if buf.len() < out_len {
            return Err(SrtpError::BufferTooSmall {
                needed: out_len,
                have: buf.len(),
            });
        }
        if len < RTCP_CLEAR_LEN {
            return Err(SrtpError::TooShort);
        }
        let index = self.srtcp_send_index;
        if index >= 1 << 31 {
            return Err(SrtpError::IndexExhausted);
        }
        let ssrc = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
        self.rtcp
            .apply_keystream(ssrc, u64::from(index), &mut buf[RTCP_CLEAR_LEN..len]);
        buf[len..len + SRTCP_INDEX_LEN].copy_from_slice(&((1 << 31) | index).to_be_bytes());
        let tag = self.rtcp.tag(&buf[..len + SRTCP_INDEX_LEN], &[]);
        buf[len + SRTCP_INDEX_LEN..out_len].copy_from_slice(&tag[..SRTCP_TAG_LEN]);
        self.srtcp_send_index = index + 1;
        Ok(out_len)
    }

    /// Authenticate, replay-check and (if the E bit is set) decrypt the SRTCP packet that
    /// fills `buf`, in place; returns the RTCP length.
    pub fn unprotect_rtcp(&mut self, buf: &mut [u8]) -> Result<usize, SrtpError> {
        let auth_len = buf
            .len()
            .checked_sub(SRTCP_TAG_LEN)
            .ok_or(SrtpError::TooShort)?;
        let len = auth_len
            .checked_sub(SRTCP_INDEX_LEN)
            .ok_or(SrtpError::TooShort)?;
        if len < RTCP_CLEAR_LEN {
            return Err(SrtpError::TooShort);
        }
        let e_index = u32::from_be_bytes([buf[len], buf[len + 1], buf[len + 2], buf[len + 3]]);
        let encrypted = e_index & (1 << 31) != 0;
        let index = u64::from(e_index & 0x7fff_ffff);
        let ssrc = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
        let mut replay = self.srtcp_replay.get(ssrc).unwrap_or_default();
        replay.check(index)?;
        let tag = self.rtcp.tag(&buf[..auth_len], &[]);
        if !bool::from(tag[..SRTCP_TAG_LEN].ct_eq(&buf[auth_len..])) {
            return Err(SrtpError::AuthFailed);
        }
        if encrypted {
            self.rtcp
                .apply_keystream(ssrc, index, &mut buf[RTCP_CLEAR_LEN..len]);
        }
        replay.accept(index);
        self.srtcp_replay.put(ssrc, replay);
        Ok(len)
    }

    /// The rollover counter used for the last packet received from `ssrc`, if any.
    pub fn recv_roc(&self, ssrc: Ssrc) -> Option<u32> {
        self.recv.get(ssrc.0).map(|s| s.roc)
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// RFC 4648 §4 base64 with padding (RFC 4568 §6.1 key-salt encoding).
fn base64_encode(data: &[u8]) -> String {
    let mut s = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                s.push(char::from(B64[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// Decode base64 into `out`; `None` on a bad character, bad padding or overflow of `out`.
/// Unpadded input is accepted (some peers drop the `=`).
fn base64_decode(input: &[u8], out: &mut [u8]) -> Option<usize> {
    let trimmed = input
        .strip_suffix(b"==")
        .or_else(|| input.strip_suffix(b"="))
        .unwrap_or(input);
    if trimmed.len() % 4 == 1 {
        return None;
    }
    let mut n = 0;
    for chunk in trimmed.chunks(4) {
        let mut acc: u32 = 0;
        for &c in chunk {
            let v = match c {
                b'A'..=b'Z' => c - b'A',
                b'a'..=b'z' => c - b'a' + 26,
                b'0'..=b'9' => c - b'0' + 52,
                b'+' => 62,
                b'/' => 63,
                _ => return None,
            };
            acc = (acc << 6) | u32::from(v);
        }
        acc <<= 6 * (4 - chunk.len() as u32);
        let bytes = acc.to_be_bytes();
        let produced = chunk.len() * 6 / 8;
        out.get_mut(n..n + produced)?
            .copy_from_slice(&bytes[1..1 + produced]);
        n += produced;
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtp::{Header, PayloadType, RtpTimestamp, SeqNo};

    #[test]
    fn padded_rtp_packet_round_trips_through_protect_and_unprotect() {
        // The padding count is the last payload octet, so it is encrypted: unprotect
        // must not check it before decrypting (found by the `srtp_unprotect` fuzz target).
        let key = MasterKey::new([7; MASTER_KEY_LEN], [9; MASTER_SALT_LEN]);
        let mut tx = SrtpContext::new(SrtpProfile::AesCm128HmacSha1_80, &key);
        let mut rx = SrtpContext::new(SrtpProfile::AesCm128HmacSha1_80, &key);
        let mut buf = [0u8; 64];
        let body = [0xd5, 0xd5, 0xd5, 0xd5, 0, 0, 0, 4];
        let header = Header::new(PayloadType::PCMU, SeqNo(1), RtpTimestamp(160), Ssrc(42));
        let len = header.write(&body, &mut buf).unwrap();
        buf[0] |= 0x20;
        let plain = buf[..len].to_vec();
        assert_eq!(Packet::parse(&plain).unwrap().payload(), &body[..4]);
        let n = tx.protect_rtp(&mut buf, len).unwrap();
        let m = rx.unprotect_rtp(&mut buf[..n]).unwrap();
        assert_eq!(&buf[..m], &plain[..]);
    }

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn rfc_b3_master() -> MasterKey {
        MasterKey::new(
            hex("E1F97A0D3E018BE0D64FA32C06DE4139").try_into().unwrap(),
            hex("0EC675AD498AFEEBB6960B3AABE6").try_into().unwrap(),
        )
    }

    /// RFC 3711 Appendix B.3.
    #[test]
    fn key_derivation_matches_rfc3711_appendix_b3() {
        let m = rfc_b3_master();
        let master = Aes128::new(&GenericArray::from(m.key));
        let mut k = [0u8; 16];
        let mut s = [0u8; 14];
        let mut a = [0u8; 20];
        derive(&master, &m.salt, LABEL_RTP_ENCRYPTION, &mut k);
        derive(&master, &m.salt, LABEL_RTP_SALT, &mut s);
        derive(&master, &m.salt, LABEL_RTP_AUTH, &mut a);
        assert_eq!(k.to_vec(), hex("C61E7A93744F39EE10734AFE3FF7A087"));
        assert_eq!(s.to_vec(), hex("30CBBC08863D8C85D49DB34A9AE1"));
        assert_eq!(a.to_vec(), hex("CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4"));
    }

    /// RFC 3711 Appendix B.2: AES-CM keystream for SSRC 0, index 0.
    #[test]
    fn keystream_matches_rfc3711_appendix_b2() {
        let keys = SessionKeys {
            cipher: Aes128::new(&GenericArray::from(
                <[u8; 16]>::try_from(hex("2B7E151628AED2A6ABF7158809CF4F3C")).unwrap(),
            )),
            salt: hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD").try_into().unwrap(),
            mac: <HmacSha1 as Mac>::new_from_slice(&[0; 20]).unwrap(),
        };
        let mut ks = vec![0u8; 16 * 0x10000];
        keys.apply_keystream(0, 0, &mut ks);
        let block = |i: usize| ks[16 * i..16 * i + 16].to_vec();
        assert_eq!(block(0), hex("E03EAD0935C95E80E166B16DD92B4EB4"));
        assert_eq!(block(1), hex("D23513162B02D0F72A43A2FE4A5F97AB"));
        assert_eq!(block(2), hex("41E95B3BB0A2E8DD477901E4FCA894C0"));
        assert_eq!(block(0xfeff), hex("EC8CDF7398607CB0F2D21675EA9EA1E4"));
        assert_eq!(block(0xff00), hex("362B7C3C6773516318A077D7FC5073AE"));
        assert_eq!(block(0xff01), hex("6A2CC3787889374FBEB4C81B17BA6C44"));
    }

    fn rtp(buf: &mut [u8], seq: u16, payload: &[u8]) -> usize {
        Header::new(
            PayloadType::PCMU,
            SeqNo(seq),
            RtpTimestamp(u32::from(seq) * 160),
            Ssrc(0xcafe_f00d),
        )
        .write(payload, buf)
        .unwrap()
    }

    fn pair(profile: SrtpProfile) -> (SrtpContext, SrtpContext) {
        let m = MasterKey::random();
        (SrtpContext::new(profile, &m), SrtpContext::new(profile, &m))
    }

    #[test]
    fn protect_then_unprotect_round_trips_both_profiles() {
        for profile in [
            SrtpProfile::AesCm128HmacSha1_80,
            SrtpProfile::AesCm128HmacSha1_32,
        ] {
            let (mut tx, mut rx) = pair(profile);
            let payload: Vec<u8> = (0..160).map(|i| i as u8).collect();
            let mut buf = [0u8; 200];
            let n = rtp(&mut buf, 1000, &payload);
            let plain = buf[..n].to_vec();
            let m = tx.protect_rtp(&mut buf, n).unwrap();
            assert_eq!(m, n + profile.rtp_tag_len());
            assert_eq!(buf[..12], plain[..12], "header stays in the clear");
            assert_ne!(buf[12..n], plain[12..], "payload is encrypted");
            let k = rx.unprotect_rtp(&mut buf[..m]).unwrap();
            assert_eq!(&buf[..k], &plain[..]);
        }
    }

    #[test]
    fn tampered_packet_is_rejected() {
        let (mut tx, mut rx) = pair(SrtpProfile::AesCm128HmacSha1_80);
        let mut buf = [0u8; 200];
        let n = rtp(&mut buf, 7, &[1; 160]);
        let m = tx.protect_rtp(&mut buf, n).unwrap();
        for at in [1, 20, m - 1] {
            let mut bad = buf;
            bad[at] ^= 0x01;
            assert_eq!(rx.unprotect_rtp(&mut bad[..m]), Err(SrtpError::AuthFailed));
        }
        // The untouched packet still passes: the failures changed no state.
        assert!(rx.unprotect_rtp(&mut buf[..m]).is_ok());
    }

    #[test]
    fn wrong_key_is_rejected() {
        let mut tx = SrtpContext::new(SrtpProfile::AesCm128HmacSha1_32, &MasterKey::random());
        let mut rx = SrtpContext::new(SrtpProfile::AesCm128HmacSha1_32, &MasterKey::random());
        let mut buf = [0u8; 200];
        let n = rtp(&mut buf, 7, &[1; 160]);
        let m = tx.protect_rtp(&mut buf, n).unwrap();
        assert_eq!(rx.unprotect_rtp(&mut buf[..m]), Err(SrtpError::AuthFailed));
    }

    #[test]
    fn replayed_and_too_old_packets_are_rejected() {
        let (mut tx, mut rx) = pair(SrtpProfile::AesCm128HmacSha1_80);
        let mut sent = Vec::new();
        for seq in 0..100u16 {
            let mut buf = [0u8; 200];
            let n = rtp(&mut buf, seq, &[seq as u8; 20]);
            let m = tx.protect_rtp(&mut buf, n).unwrap();
            sent.push(buf[..m].to_vec());
        }
        // Deliver 0..99 except 50, then 50 late (inside the window): accepted once.
        for (i, p) in sent.iter().enumerate() {
            if i != 50 {
                rx.unprotect_rtp(&mut p.clone()).unwrap();
            }
        }
        assert!(rx.unprotect_rtp(&mut sent[50].clone()).is_ok());
        assert_eq!(
            rx.unprotect_rtp(&mut sent[50].clone()),
            Err(SrtpError::Replayed)
        );
        assert_eq!(
            rx.unprotect_rtp(&mut sent[99].clone()),
            Err(SrtpError::Replayed)
        );
        // 99 - 64 = 35 is outside the 64-packet window.
        assert_eq!(
            rx.unprotect_rtp(&mut sent[35].clone()),
            Err(SrtpError::Replayed)
        );
    }

    #[test]
    fn roc_rolls_over_at_sequence_wrap() {
        let (mut tx, mut rx) = pair(SrtpProfile::AesCm128HmacSha1_80);
        let mut seq = 65530u16;
        let mut late = None;
        for i in 0..20 {
            let mut buf = [0u8; 64];
            let n = rtp(&mut buf, seq, &[i; 8]);
            let plain = buf[..n].to_vec();
            let m = tx.protect_rtp(&mut buf, n).unwrap();
            if seq == 65535 {
                late = Some((buf[..m].to_vec(), plain)); // delivered after the wrap
            } else {
                let k = rx.unprotect_rtp(&mut buf[..m]).unwrap();
                assert_eq!(buf[..k], plain[..]);
            }
            seq = seq.wrapping_add(1);
        }
        assert_eq!(rx.recv_roc(Ssrc(0xcafe_f00d)), Some(1));
        let (mut pkt, plain) = late.unwrap();
        let k = rx.unprotect_rtp(&mut pkt).unwrap();
        assert_eq!(
            pkt[..k],
            plain[..],
            "late packet from before the wrap uses ROC 0"
        );
        assert_eq!(rx.recv_roc(Ssrc(0xcafe_f00d)), Some(1));
    }

    #[test]
    fn switching_ssrc_back_and_forth_keeps_each_replay_window() {
        let m = MasterKey::random();
        let mut tx_a = SrtpContext::new(SrtpProfile::AesCm128HmacSha1_80, &m);
        let mut tx_b = SrtpContext::new(SrtpProfile::AesCm128HmacSha1_80, &m);
        let mut rx = SrtpContext::new(SrtpProfile::AesCm128HmacSha1_80, &m);
        let packet = |tx: &mut SrtpContext, ssrc: u32, seq: u16| {
            let mut buf = [0u8; 64];
            let n = Header::new(PayloadType::PCMU, SeqNo(seq), RtpTimestamp(0), Ssrc(ssrc))
                .write(&[1; 8], &mut buf)
                .unwrap();
            let m = tx.protect_rtp(&mut buf, n).unwrap();
            buf[..m].to_vec()
        };
        let a1 = packet(&mut tx_a, 1, 100);
        let b1 = packet(&mut tx_b, 2, 5000);
        let a2 = packet(&mut tx_a, 1, 101);
        rx.unprotect_rtp(&mut a1.clone()).unwrap();
        rx.unprotect_rtp(&mut b1.clone()).unwrap();
        rx.unprotect_rtp(&mut a2.clone()).unwrap();
        assert_eq!(rx.unprotect_rtp(&mut a1.clone()), Err(SrtpError::Replayed));
        assert_eq!(rx.unprotect_rtp(&mut b1.clone()), Err(SrtpError::Replayed));
    }

    #[test]
    fn receive_state_evicts_the_least_recently_used_ssrc() {
        let mut slots = SsrcSlots::<u8>::new();
        for ssrc in 1..=4 {
            slots.put(ssrc, ssrc as u8);
        }
        slots.put(1, 10); // 1 used again: 2 is now the oldest
        slots.put(5, 5);
        assert_eq!(slots.get(2), None);
        assert_eq!(
            [slots.get(1), slots.get(3), slots.get(4), slots.get(5)],
            [Some(10), Some(3), Some(4), Some(5)]
        );
    }

    #[test]
    fn protect_needs_room_for_the_tag() {
        let (mut tx, _) = pair(SrtpProfile::AesCm128HmacSha1_80);
        let mut buf = [0u8; 180];
        let n = rtp(&mut buf, 1, &[0; 160]);
        assert_eq!(
            tx.protect_rtp(&mut buf[..n + 3], n),
            Err(SrtpError::BufferTooSmall {
                needed: n + 10,
                have: n + 3
            })
        );
    }

    #[test]
    fn srtcp_round_trips_with_index_and_e_bit() {
        let (mut tx, mut rx) = pair(SrtpProfile::AesCm128HmacSha1_32);
        let mut buf = [0u8; 128];
        let n = crate::rtcp::write_receiver_report(&mut buf, Ssrc(77), &[]).unwrap();
        let n = n + crate::rtcp::write_sdes_cname(&mut buf[n..], Ssrc(77), b"cname").unwrap();
        let plain = buf[..n].to_vec();
        for expected_index in 0..3u32 {
            let mut b = buf;
            let m = tx.protect_rtcp(&mut b, n).unwrap();
            assert_eq!(m, n + 14);
            assert_eq!(b[n..n + 4], ((1u32 << 31) | expected_index).to_be_bytes());
            assert_eq!(b[..8], plain[..8]);
            assert_ne!(b[8..n], plain[8..]);
            let mut replay = b;
            let k = rx.unprotect_rtcp(&mut b[..m]).unwrap();
            assert_eq!(b[..k], plain[..]);
            assert_eq!(
                rx.unprotect_rtcp(&mut replay[..m]),
                Err(SrtpError::Replayed)
            );
        }
        let mut b = buf;
        let m = tx.protect_rtcp(&mut b, n).unwrap();
        b[9] ^= 0x80;
        assert_eq!(rx.unprotect_rtcp(&mut b[..m]), Err(SrtpError::AuthFailed));
    }

    #[test]
    fn short_or_garbage_input_is_an_error_not_a_panic() {
        let (_, mut rx) = pair(SrtpProfile::AesCm128HmacSha1_80);
        for len in 0..40 {
            let mut b = vec![0x80u8; len];
            assert!(rx.unprotect_rtp(&mut b).is_err());
            let mut b = vec![0x80u8; len];
            assert!(rx.unprotect_rtcp(&mut b).is_err());
        }
    }

    #[test]
    fn sdes_inline_key_round_trips() {
        let m = MasterKey::random();
        let s = m.to_sdes_inline();
        assert_eq!(s.len(), "inline:".len() + 40);
        assert_eq!(MasterKey::from_sdes_inline(&s), Ok(m.clone()));
        assert_eq!(MasterKey::from_sdes_inline(&format!("{s}|2^20")), Ok(m));
    }

    #[test]
    fn sdes_inline_key_from_rfc4568_example_decodes() {
        // RFC 4568 §9.1 example key.
        let m =
            MasterKey::from_sdes_inline("inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4");
        assert_eq!(m, Err(SrtpError::MkiUnsupported));
        let m = MasterKey::from_sdes_inline("inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20")
            .unwrap();
        assert_eq!(&m.key, b"YS___semctl () {");
    }

    #[test]
    fn bad_sdes_key_params_are_rejected() {
        assert!(matches!(
            MasterKey::from_sdes_inline("WVNfX19z"),
            Err(SrtpError::BadKeyParams(_))
        ));
        assert!(matches!(
            MasterKey::from_sdes_inline("inline:WVNf"),
            Err(SrtpError::BadKeyParams(_))
        ));
        assert!(matches!(
            MasterKey::from_sdes_inline("inline:!!!!"),
            Err(SrtpError::BadKeyParams(_))
        ));
    }

    #[test]
    fn profiles_map_to_sdes_names() {
        for p in [
            SrtpProfile::AesCm128HmacSha1_80,
            SrtpProfile::AesCm128HmacSha1_32,
        ] {
            assert_eq!(SrtpProfile::from_sdes_name(p.sdes_name()), Some(p));
        }
        assert_eq!(SrtpProfile::from_sdes_name("F8_128_HMAC_SHA1_80"), None);
    }
}
