//! PINs and what they point at: the typed values of step 4 of the call flow, where the
//! digits a caller keyed (ended by `#`) are resolved, within the trunk's PIN namespace,
//! to a room.
//!
//! A [`Pin`] is parsed once at the edge (IVR digit buffer, admin API, CLI) and never
//! printed in full by `Display`/`Debug` (DESIGN.md "Privacy": all but the last 2 digits
//! are masked). Serialisation (`serde`) writes the full digits, because the admin API and
//! the CLI exist to hand PINs out; never serialise one into a log line.

pub mod guard;
pub mod http;
pub mod livekit;
pub mod source;

use std::fmt;

use rand::Rng;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::privacy::mask_pin;

/// Why a value is not a valid PIN, namespace, room or participant name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PinError {
    #[error("a PIN has only the digits 0-9")]
    NotDigits,
    #[error("a PIN has {min} to {max} digits, this one has {len}")]
    BadLength { len: usize, min: usize, max: usize },
    #[error("{what} must not be empty")]
    Empty { what: &'static str },
    #[error("{what} is longer than {max} characters")]
    TooLong { what: &'static str, max: usize },
    #[error("{what} may only contain letters, digits, '-', '_' and '.'")]
    BadCharacters { what: &'static str },
    #[error("{what} must not contain control, bidirectional or zero-width formatting characters")]
    ControlCharacters { what: &'static str },
}

/// What a PIN makes its caller in the room. A room whose participant PIN sets
/// `wait_for_host` opens to its participants once a host is there: a caller who keyed a
/// host PIN, or (LiveKit) a participant matching `livekit.host`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PinRole {
    #[default]
    Participant,
    Host,
}

impl PinRole {
    /// The API, CLI and store spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            PinRole::Participant => "participant",
            PinRole::Host => "host",
        }
    }
}

impl std::str::FromStr for PinRole {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "participant" => Ok(PinRole::Participant),
            "host" => Ok(PinRole::Host),
            other => Err(UnknownRole(other.chars().take(32).collect())),
        }
    }
}

impl fmt::Display for PinRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role that is neither `participant` nor `host`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown PIN role `{0}` (expected `participant` or `host`)")]
pub struct UnknownRole(pub String);

/// A PIN: 4 to 20 ASCII digits. Leading zeros are significant (`0042` ≠ `42`).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Pin(String);

impl Pin {
    /// Shortest PIN accepted anywhere (config `pin_length`, explicit PINs).
    pub const MIN_LEN: usize = 4;
    /// Longest PIN accepted: bounds the IVR digit buffer and the store column.
    pub const MAX_LEN: usize = 20;

    /// Parses keyed or typed digits into a PIN.
    pub fn parse(digits: &str) -> Result<Pin, PinError> {
        if !digits.chars().all(|c| c.is_ascii_digit()) {
            return Err(PinError::NotDigits);
        }
        let len = digits.len();
        if !(Self::MIN_LEN..=Self::MAX_LEN).contains(&len) {
            return Err(PinError::BadLength {
                len,
                min: Self::MIN_LEN,
                max: Self::MAX_LEN,
            });
        }
        Ok(Pin(digits.to_owned()))
    }

    /// Draws a PIN of `len` digits (clamped to `MIN_LEN..=MAX_LEN`) uniformly from the
    /// whole space, zero-padded, with the caller's CSPRNG (`rand::thread_rng` is a CSPRNG).
    pub fn generate<R: Rng + ?Sized>(rng: &mut R, len: usize) -> Pin {
        let len = len.clamp(Self::MIN_LEN, Self::MAX_LEN);
        let digits = (0..len)
            .map(|_| char::from(b'0' + rng.gen_range(0..10u8)))
            .collect();
        Pin(digits)
    }

    /// The full digits. For the store and the admin API only; logs use `Display`.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Number of digits.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: a PIN has at least `MIN_LEN` digits.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&mask_pin(&self.0))
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pin({})", mask_pin(&self.0))
    }
}

impl Serialize for Pin {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Pin {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Pin::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Checks a name made of `[A-Za-z0-9_.-]`, 1 to `max` characters.
fn check_identifier(what: &'static str, s: &str, max: usize) -> Result<(), PinError> {
    if s.is_empty() {
        return Err(PinError::Empty { what });
    }
    if s.chars().count() > max {
        return Err(PinError::TooLong { what, max });
    }
    if !s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(PinError::BadCharacters { what });
    }
    Ok(())
}

/// Checks free text: 1 to `max` characters, no control characters.
fn check_text(what: &'static str, s: &str, max: usize) -> Result<(), PinError> {
    if s.trim().is_empty() {
        return Err(PinError::Empty { what });
    }
    if s.chars().count() > max {
        return Err(PinError::TooLong { what, max });
    }
    if s.chars().any(|c| c.is_control() || is_invisible_format(c)) {
        return Err(PinError::ControlCharacters { what });
    }
    Ok(())
}

/// Unicode format characters that reorder or hide text (bidirectional embeddings,
/// overrides and isolates, zero-width characters, the byte-order mark): a room or
/// participant name holding one can display as something else than it is.
fn is_invisible_format(c: char) -> bool {
    matches!(
        c,
        '\u{061C}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}'
            | '\u{FEFF}'
    )
}

macro_rules! string_newtype {
    ($(#[$doc:meta])* $name:ident, $check:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Parses and checks the value.
            pub fn parse(s: &str) -> Result<Self, PinError> {
                ($check)(s)?;
                Ok($name(s.to_owned()))
            }

            /// The value as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", self.0)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                $name::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_newtype!(
    /// The namespace a PIN is unique in; each trunk resolves PINs in its `pin_namespace`.
    /// 1 to 64 characters of `[A-Za-z0-9_.-]`.
    PinNamespace,
    |s: &str| check_identifier("a PIN namespace", s, 64)
);

string_newtype!(
    /// A room name, as the room backend (LiveKit) knows it: 1 to 256 characters, no
    /// control characters.
    RoomName,
    |s: &str| check_text("a room name", s, 256)
);

string_newtype!(
    /// The display name a caller joining with a PIN gets in the room: 1 to 128
    /// characters, no control characters.
    ParticipantName,
    |s: &str| check_text("a participant name", s, 128)
);

impl Default for PinNamespace {
    fn default() -> Self {
        PinNamespace("default".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_accepts_digits_with_leading_zeros() {
        assert_eq!(
            Pin::parse("0042").map(|p| p.expose().to_owned()),
            Ok("0042".to_owned())
        );
    }

    #[test]
    fn pin_refuses_non_digits_and_bad_lengths() {
        assert_eq!(Pin::parse("12a4"), Err(PinError::NotDigits));
        assert_eq!(Pin::parse("+1234"), Err(PinError::NotDigits));
        assert!(matches!(
            Pin::parse("123"),
            Err(PinError::BadLength { len: 3, .. })
        ));
        assert!(matches!(
            Pin::parse(&"1".repeat(21)),
            Err(PinError::BadLength { len: 21, .. })
        ));
    }

    #[test]
    fn pin_display_and_debug_mask_all_but_last_two_digits() {
        let pin = Pin::parse("9876543210").unwrap();
        assert_eq!(pin.to_string(), "••••••••10");
        assert_eq!(format!("{pin:?}"), "Pin(••••••••10)");
    }

    #[test]
    fn pin_serializes_in_full_for_the_admin_api() {
        let pin = Pin::parse("0123").unwrap();
        assert_eq!(serde_json::to_string(&pin).unwrap(), "\"0123\"");
    }

    #[test]
    fn generated_pin_has_the_requested_number_of_digits() {
        let mut rng = rand::thread_rng();
        for len in [4, 10, 20] {
            let pin = Pin::generate(&mut rng, len);
            assert_eq!(pin.len(), len);
            assert!(pin.expose().chars().all(|c| c.is_ascii_digit()));
        }
    }

    #[test]
    fn namespace_refuses_spaces_and_room_refuses_control_characters() {
        assert!(PinNamespace::parse("sales team").is_err());
        assert!(PinNamespace::parse("sales-team_2").is_ok());
        assert!(RoomName::parse("room\n1").is_err());
        // Bidirectional overrides and isolates, zero-width characters.
        for bad in ["evil\u{202E}gnp.exe", "a\u{2066}b", "a\u{200B}b", "\u{FEFF}room", "a\u{061C}b"] {
            assert!(RoomName::parse(bad).is_err(), "{bad:?}");
            assert!(ParticipantName::parse(bad).is_err(), "{bad:?}");
        }
        assert!(RoomName::parse("réunion-équipe 日本").is_ok());
        assert!(RoomName::parse("Weekly sync").is_ok());
        assert!(RoomName::parse("").is_err());
    }
}
