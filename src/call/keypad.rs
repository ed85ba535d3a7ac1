//! The keypad menu of a caller in the room: `*6` mute, `*1` count, `*9` hand, `*0` help
//! (the keys are the trunk's `keys`), everything else to the room as DTMF.
//!
//! Sans-IO: the call task feeds each key with [`Keypad::on_key`] and the time, wakes it at
//! [`Keypad::deadline`] with [`Keypad::on_timeout`], and takes [`KeypadAction`]s from
//! [`Keypad::poll`]. No allocation: sequences and the action queue are fixed arrays.
//!
//! Matching: keys are buffered while they are the start of a menu sequence. A complete
//! sequence is its command. A key that makes the buffer the start of no sequence releases the
//! buffer's first key to the room as DTMF and matching goes on from the next one, so `5`,
//! `*5` and `**6` reach the room as typed (the last one as `*` then the mute command). A
//! buffered start left alone for [`KEY_TIMEOUT`] goes to the room as typed. A room app that
//! reads DTMF therefore sees every key that is not a command, in order; `*` alone arrives
//! [`KEY_TIMEOUT`] late. With the keypad off, every key goes to the room at once.

use std::fmt;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// How long a started sequence (`*`) waits for its next key.
pub const KEY_TIMEOUT: Duration = Duration::from_secs(2);

/// Longest key sequence of a command.
pub const MAX_SEQUENCE: usize = 4;

/// What the caller can ask for from the keypad.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Mute or unmute oneself.
    Mute,
    /// Hear how many participants are in the room.
    Count,
    /// Raise or lower one's hand.
    Hand,
    /// Hear the keys.
    Help,
}

impl Command {
    /// Every command, in the order help lists them.
    pub const ALL: [Command; 4] = [Command::Mute, Command::Count, Command::Hand, Command::Help];
}

/// What the call must do after a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeypadAction {
    /// Send this key to the room as a DTMF data packet.
    Dtmf(char),
    Command(Command),
}

/// A key sequence: 1 to [`MAX_SEQUENCE`] of `0-9`, `*`, `#`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct KeySequence {
    keys: [u8; MAX_SEQUENCE],
    len: u8,
}

/// Why a configured key sequence is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeySequenceError {
    #[error("a key sequence has 1 to {MAX_SEQUENCE} keys")]
    Length,
    #[error("a key sequence has only the keys 0-9, * and #")]
    NotAKey,
}

impl KeySequence {
    pub fn parse(s: &str) -> Result<KeySequence, KeySequenceError> {
        if s.is_empty() || s.len() > MAX_SEQUENCE {
            return Err(KeySequenceError::Length);
        }
        let mut keys = [0u8; MAX_SEQUENCE];
        for (slot, b) in keys.iter_mut().zip(s.bytes()) {
            if !(b.is_ascii_digit() || b == b'*' || b == b'#') {
                return Err(KeySequenceError::NotAKey);
            }
            *slot = b;
        }
        Ok(KeySequence {
            keys,
            len: s.len() as u8,
        })
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII keys are ever stored.
        std::str::from_utf8(&self.keys[..usize::from(self.len)]).unwrap_or("")
    }

    fn keys(&self) -> &[u8] {
        &self.keys[..usize::from(self.len)]
    }

    /// Whether `prefix` is the start of this sequence (or all of it).
    fn starts_with(&self, prefix: &[u8]) -> bool {
        self.keys().starts_with(prefix)
    }
}

impl fmt::Debug for KeySequence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl fmt::Display for KeySequence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for KeySequence {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for KeySequence {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        KeySequence::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The trunk's `[trunk.keys]`: the sequence of each command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeypadKeys {
    pub mute: KeySequence,
    pub count: KeySequence,
    pub hand: KeySequence,
    pub help: KeySequence,
}

impl Default for KeypadKeys {
    fn default() -> Self {
        let seq = |s| KeySequence::parse(s).unwrap_or(KeySequence { keys: [b'*'; 4], len: 1 });
        KeypadKeys {
            mute: seq("*6"),
            count: seq("*1"),
            hand: seq("*9"),
            help: seq("*0"),
        }
    }
}

/// Two commands that cannot be told apart.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("keys `{a}` and `{b}` clash: one is the start of the other, so `{b}` could never be keyed")]
pub struct KeyClash {
    pub a: String,
    pub b: String,
}

impl KeypadKeys {
    /// The sequence of `command`.
    pub fn of(&self, command: Command) -> KeySequence {
        match command {
            Command::Mute => self.mute,
            Command::Count => self.count,
            Command::Hand => self.hand,
            Command::Help => self.help,
        }
    }

    /// No sequence may be the start of another (or equal to it).
    pub fn check(&self) -> Result<(), KeyClash> {
        for (i, a) in Command::ALL.iter().enumerate() {
            for b in Command::ALL.iter().skip(i + 1) {
                let (sa, sb) = (self.of(*a), self.of(*b));
                let (short, long) = if sa.len <= sb.len { (sa, sb) } else { (sb, sa) };
                if long.starts_with(short.keys()) {
                    return Err(KeyClash {
                        a: short.to_string(),
                        b: long.to_string(),
                    });
                }
            }
        }
        Ok(())
    }
}

/// Actions waiting for [`Keypad::poll`]: a buffer released at once is at most
/// [`MAX_SEQUENCE`] keys plus one command.
const QUEUE: usize = MAX_SEQUENCE + 2;

/// One caller's keypad in the room.
#[derive(Debug, Clone)]
pub struct Keypad {
    keys: KeypadKeys,
    enabled: bool,
    buf: [u8; MAX_SEQUENCE],
    len: usize,
    deadline: Option<Instant>,
    queue: [Option<KeypadAction>; QUEUE],
    queued: usize,
}

impl Keypad {
    /// `enabled = false` (the trunk's `keypad = false`) sends every key to the room.
    pub fn new(keys: KeypadKeys, enabled: bool) -> Keypad {
        Keypad {
            keys,
            enabled,
            buf: [0; MAX_SEQUENCE],
            len: 0,
            deadline: None,
            queue: [None; QUEUE],
            queued: 0,
        }
    }

    pub fn keys(&self) -> &KeypadKeys {
        &self.keys
    }

    /// A key the caller pressed.
    pub fn on_key(&mut self, key: char, now: Instant) {
        let Ok(byte) = u8::try_from(key) else {
            return;
        };
        if !self.enabled {
            self.push(KeypadAction::Dtmf(key));
            return;
        }
        if self.len == MAX_SEQUENCE {
            self.release_first();
        }
        self.buf[self.len] = byte;
        self.len += 1;
        self.settle();
        self.deadline = (self.len > 0).then(|| now + KEY_TIMEOUT);
    }

    /// When [`Keypad::on_timeout`] is due, if a sequence is started.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// A started sequence was left alone: its keys go to the room as typed.
    pub fn on_timeout(&mut self, now: Instant) {
        if self.deadline.is_some_and(|d| now >= d) {
            while self.len > 0 {
                self.release_first();
            }
            self.deadline = None;
        }
    }

    /// The next thing to do, in key order.
    pub fn poll(&mut self) -> Option<KeypadAction> {
        if self.queued == 0 {
            return None;
        }
        let a = self.queue[0];
        self.queue.copy_within(1.., 0);
        self.queue[QUEUE - 1] = None;
        self.queued -= 1;
        a
    }

    /// Resolves the buffer: a complete command fires; keys that start nothing go out.
    fn settle(&mut self) {
        loop {
            if self.len == 0 {
                return;
            }
            let buffered = &self.buf[..self.len];
            if let Some(c) = Command::ALL
                .into_iter()
                .find(|c| self.keys.of(*c).keys() == buffered)
            {
                self.len = 0;
                self.push(KeypadAction::Command(c));
                return;
            }
            if Command::ALL
                .into_iter()
                .any(|c| self.keys.of(c).starts_with(buffered))
            {
                return;
            }
            self.release_first();
        }
    }

    fn release_first(&mut self) {
        if self.len == 0 {
            return;
        }
        let key = char::from(self.buf[0]);
        self.buf.copy_within(1..self.len, 0);
        self.len -= 1;
        self.push(KeypadAction::Dtmf(key));
    }

    fn push(&mut self, action: KeypadAction) {
        if self.queued < QUEUE {
            self.queue[self.queued] = Some(action);
            self.queued += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keypad() -> Keypad {
        Keypad::new(KeypadKeys::default(), true)
    }

    fn feed(k: &mut Keypad, keys: &str, now: Instant) -> Vec<KeypadAction> {
        for c in keys.chars() {
            k.on_key(c, now);
        }
        std::iter::from_fn(|| k.poll()).collect()
    }

    fn dtmf(s: &str) -> Vec<KeypadAction> {
        s.chars().map(KeypadAction::Dtmf).collect()
    }

    #[test]
    fn default_sequences_are_commands() {
        let now = Instant::now();
        let mut k = keypad();
        for (keys, c) in [
            ("*6", Command::Mute),
            ("*1", Command::Count),
            ("*9", Command::Hand),
            ("*0", Command::Help),
        ] {
            assert_eq!(feed(&mut k, keys, now), vec![KeypadAction::Command(c)]);
            assert_eq!(k.deadline(), None);
        }
    }

    #[test]
    fn keys_outside_the_menu_go_to_the_room_at_once_and_in_order() {
        let now = Instant::now();
        let mut k = keypad();
        assert_eq!(feed(&mut k, "5", now), dtmf("5"));
        assert_eq!(feed(&mut k, "#", now), dtmf("#"));
        assert_eq!(feed(&mut k, "*5", now), dtmf("*5"));
        let mut got = feed(&mut k, "**6", now);
        assert_eq!(got.remove(0), KeypadAction::Dtmf('*'));
        assert_eq!(got, vec![KeypadAction::Command(Command::Mute)]);
        assert_eq!(feed(&mut k, "1*62", now), {
            let mut v = dtmf("1");
            v.push(KeypadAction::Command(Command::Mute));
            v.extend(dtmf("2"));
            v
        });
    }

    #[test]
    fn a_lone_star_reaches_the_room_after_the_timeout() {
        let t0 = Instant::now();
        let mut k = keypad();
        assert!(feed(&mut k, "*", t0).is_empty());
        let due = k.deadline().expect("waiting for the next key");
        assert_eq!(due, t0 + KEY_TIMEOUT);
        k.on_timeout(due - Duration::from_millis(1));
        assert_eq!(k.poll(), None, "not before its time");
        k.on_timeout(due);
        assert_eq!(k.poll(), Some(KeypadAction::Dtmf('*')));
        assert_eq!(k.deadline(), None);
        // The next key after the timeout starts afresh.
        assert_eq!(
            feed(&mut k, "*6", due + Duration::from_secs(1)),
            vec![KeypadAction::Command(Command::Mute)]
        );
    }

    #[test]
    fn the_timeout_restarts_with_each_key_of_a_sequence() {
        let t0 = Instant::now();
        let keys = KeypadKeys {
            mute: KeySequence::parse("*66").expect("keys"),
            ..KeypadKeys::default()
        };
        let mut k = Keypad::new(keys, true);
        k.on_key('*', t0);
        k.on_key('6', t0 + Duration::from_millis(1500));
        k.on_timeout(t0 + KEY_TIMEOUT);
        assert_eq!(k.poll(), None, "the second key moved the deadline");
        k.on_key('6', t0 + Duration::from_millis(3000));
        assert_eq!(k.poll(), Some(KeypadAction::Command(Command::Mute)));
    }

    #[test]
    fn with_the_keypad_off_every_key_is_dtmf() {
        let now = Instant::now();
        let mut k = Keypad::new(KeypadKeys::default(), false);
        assert_eq!(feed(&mut k, "*6*1#", now), dtmf("*6*1#"));
        assert_eq!(k.deadline(), None);
    }

    #[test]
    fn configured_keys_replace_the_defaults() {
        let now = Instant::now();
        let keys = KeypadKeys {
            mute: KeySequence::parse("##").expect("keys"),
            ..KeypadKeys::default()
        };
        let mut k = Keypad::new(keys, true);
        assert_eq!(feed(&mut k, "*6", now), dtmf("*6"));
        assert_eq!(
            feed(&mut k, "##", now),
            vec![KeypadAction::Command(Command::Mute)]
        );
    }

    #[test]
    fn clashing_or_malformed_sequences_are_refused() {
        let clash = KeypadKeys {
            mute: KeySequence::parse("*1").expect("keys"),
            count: KeySequence::parse("*12").expect("keys"),
            ..KeypadKeys::default()
        };
        assert!(clash.check().is_err());
        let same = KeypadKeys {
            hand: KeySequence::parse("*0").expect("keys"),
            ..KeypadKeys::default()
        };
        assert!(same.check().is_err());
        assert!(KeypadKeys::default().check().is_ok());
        assert_eq!(KeySequence::parse(""), Err(KeySequenceError::Length));
        assert_eq!(KeySequence::parse("*12345"), Err(KeySequenceError::Length));
        assert_eq!(KeySequence::parse("*a"), Err(KeySequenceError::NotAKey));
        assert_eq!(KeySequence::parse("*é"), Err(KeySequenceError::NotAKey));
    }

    #[test]
    fn a_flood_of_keys_never_overflows_and_keeps_order() {
        let now = Instant::now();
        let mut k = keypad();
        let mut out = Vec::new();
        for _ in 0..1000 {
            for c in "*5*".chars() {
                k.on_key(c, now);
                out.extend(std::iter::from_fn(|| k.poll()));
            }
        }
        k.on_timeout(now + KEY_TIMEOUT);
        out.extend(std::iter::from_fn(|| k.poll()));
        assert_eq!(out, dtmf(&"*5*".repeat(1000)));
    }
}
