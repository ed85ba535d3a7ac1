//! DTMF digits as the IVR sees them, whatever way they reached the gateway.
//!
//! A caller's key press can arrive three ways (DESIGN.md, call flow step 3): as RFC 4733
//! `telephone-event` RTP packets ([`event`]), as tones in the audio itself, found by a
//! Goertzel detector held to ITU-T Q.24 ([`inband`]), or as SIP INFO (parsed by the
//! gateway). Each path turns one press into one [`Digit`]; [`dedup`] then makes sure a
//! press reported by two paths counts once before the digit reaches the PIN collector.

pub mod dedup;
pub mod event;
pub mod inband;

use thiserror::Error;

/// One DTMF key: `0`-`9`, `*`, `#` and the rarely used `A`-`D` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Digit {
    D0,
    D1,
    D2,
    D3,
    D4,
    D5,
    D6,
    D7,
    D8,
    D9,
    Star,
    Pound,
    A,
    B,
    C,
    D,
}

/// A character or event code that is not a DTMF digit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum DigitError {
    #[error("{0:?} is not a DTMF digit (expected 0-9, *, #, A-D)")]
    NotADigitChar(char),
    /// RFC 4733 §3.2 assigns codes 0-15 to DTMF; 16 (flash) and above are other events.
    #[error("telephone-event code {0} is not a DTMF digit (RFC 4733 §3.2: 0-15)")]
    NotADigitEvent(u8),
}

impl Digit {
    /// All sixteen digits, in RFC 4733 event-code order.
    pub const ALL: [Digit; 16] = [
        Digit::D0,
        Digit::D1,
        Digit::D2,
        Digit::D3,
        Digit::D4,
        Digit::D5,
        Digit::D6,
        Digit::D7,
        Digit::D8,
        Digit::D9,
        Digit::Star,
        Digit::Pound,
        Digit::A,
        Digit::B,
        Digit::C,
        Digit::D,
    ];

    /// Parses a key as written in SIP INFO bodies and dial strings (`a`-`d` accepted too).
    pub fn from_char(c: char) -> Result<Digit, DigitError> {
        Ok(match c {
            '0' => Digit::D0,
            '1' => Digit::D1,
            '2' => Digit::D2,
            '3' => Digit::D3,
            '4' => Digit::D4,
            '5' => Digit::D5,
            '6' => Digit::D6,
            '7' => Digit::D7,
            '8' => Digit::D8,
            '9' => Digit::D9,
            '*' => Digit::Star,
            '#' => Digit::Pound,
            'A' | 'a' => Digit::A,
            'B' | 'b' => Digit::B,
            'C' | 'c' => Digit::C,
            'D' | 'd' => Digit::D,
            other => return Err(DigitError::NotADigitChar(other)),
        })
    }

    /// Maps an RFC 4733 §3.2 event code (0-9, 10 = `*`, 11 = `#`, 12-15 = A-D).
    pub fn from_event_code(code: u8) -> Result<Digit, DigitError> {
        Digit::ALL
            .get(usize::from(code))
            .copied()
            .ok_or(DigitError::NotADigitEvent(code))
    }

    /// The RFC 4733 §3.2 event code of this digit.
    pub fn event_code(self) -> u8 {
        self as u8
    }

    /// The key's character: `0`-`9`, `*`, `#`, `A`-`D`.
    pub fn to_char(self) -> char {
        match self {
            Digit::D0 => '0',
            Digit::D1 => '1',
            Digit::D2 => '2',
            Digit::D3 => '3',
            Digit::D4 => '4',
            Digit::D5 => '5',
            Digit::D6 => '6',
            Digit::D7 => '7',
            Digit::D8 => '8',
            Digit::D9 => '9',
            Digit::Star => '*',
            Digit::Pound => '#',
            Digit::A => 'A',
            Digit::B => 'B',
            Digit::C => 'C',
            Digit::D => 'D',
        }
    }

    /// Index of the low-group (row) tone in the keypad matrix of ITU-T Q.23.
    pub(crate) fn row(self) -> usize {
        match self {
            Digit::D1 | Digit::D2 | Digit::D3 | Digit::A => 0,
            Digit::D4 | Digit::D5 | Digit::D6 | Digit::B => 1,
            Digit::D7 | Digit::D8 | Digit::D9 | Digit::C => 2,
            Digit::Star | Digit::D0 | Digit::Pound | Digit::D => 3,
        }
    }

    /// Index of the high-group (column) tone in the keypad matrix of ITU-T Q.23.
    pub(crate) fn column(self) -> usize {
        match self {
            Digit::D1 | Digit::D4 | Digit::D7 | Digit::Star => 0,
            Digit::D2 | Digit::D5 | Digit::D8 | Digit::D0 => 1,
            Digit::D3 | Digit::D6 | Digit::D9 | Digit::Pound => 2,
            Digit::A | Digit::B | Digit::C | Digit::D => 3,
        }
    }

    /// The digit at (row, column) of the Q.23 keypad matrix.
    pub(crate) fn from_matrix(row: usize, column: usize) -> Option<Digit> {
        const KEYPAD: [[Digit; 4]; 4] = [
            [Digit::D1, Digit::D2, Digit::D3, Digit::A],
            [Digit::D4, Digit::D5, Digit::D6, Digit::B],
            [Digit::D7, Digit::D8, Digit::D9, Digit::C],
            [Digit::Star, Digit::D0, Digit::Pound, Digit::D],
        ];
        KEYPAD.get(row)?.get(column).copied()
    }

    /// Low-group and high-group frequencies in hertz (ITU-T Q.23 Table 1).
    pub fn frequencies(self) -> (f32, f32) {
        (ROW_HZ[self.row()], COLUMN_HZ[self.column()])
    }
}

impl TryFrom<char> for Digit {
    type Error = DigitError;
    fn try_from(c: char) -> Result<Self, Self::Error> {
        Digit::from_char(c)
    }
}

impl std::fmt::Display for Digit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.to_char())
    }
}

/// Low-group frequencies, ITU-T Q.23 Table 1.
pub(crate) const ROW_HZ: [f32; 4] = [697.0, 770.0, 852.0, 941.0];
/// High-group frequencies, ITU-T Q.23 Table 1.
pub(crate) const COLUMN_HZ: [f32; 4] = [1209.0, 1336.0, 1477.0, 1633.0];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_digit_round_trips_through_char_and_event_code() {
        for d in Digit::ALL {
            assert_eq!(Digit::from_char(d.to_char()), Ok(d));
            assert_eq!(Digit::from_event_code(d.event_code()), Ok(d));
            assert_eq!(Digit::from_matrix(d.row(), d.column()), Some(d));
        }
    }

    #[test]
    fn non_digits_are_rejected_with_a_typed_error() {
        assert_eq!(Digit::from_char('x'), Err(DigitError::NotADigitChar('x')));
        assert_eq!(
            Digit::from_event_code(16),
            Err(DigitError::NotADigitEvent(16))
        );
        assert_eq!(Digit::from_char('a'), Ok(Digit::A));
        assert_eq!(Digit::from_event_code(11), Ok(Digit::Pound));
    }
}
