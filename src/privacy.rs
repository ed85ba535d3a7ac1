//! Masking of phone numbers and PINs before they reach a log line, a metric label,
//! an admin listing or a room participant.
//!
//! DESIGN.md "Privacy and security defaults": logs never carry a full PIN or a full phone
//! number; all but the last 2 digits of a PIN and all but the last 4 digits of a number are
//! masked. A value that is too short to keep any digit back is masked entirely, because
//! showing its "last 4" would show all of it.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The character that replaces a hidden digit.
const MASK: char = '•';

/// Digits of a phone number left visible (DESIGN.md: `••••1234`).
const NUMBER_VISIBLE_DIGITS: usize = 4;

/// Digits of a PIN left visible (DESIGN.md: all but the last 2).
const PIN_VISIBLE_DIGITS: usize = 2;

/// Masks a phone number as `••••1234`: a fixed run of four mask characters (so the length
/// of the number is not revealed) followed by its last four digits. Separators and a
/// leading `+` are ignored; a number with four digits or fewer is masked entirely.
pub fn mask_number(number: &str) -> String {
    let digits: Vec<char> = number.chars().filter(char::is_ascii_digit).collect();
    let mut out = String::with_capacity(4 * MASK.len_utf8() + NUMBER_VISIBLE_DIGITS);
    for _ in 0..4 {
        out.push(MASK);
    }
    if digits.len() > NUMBER_VISIBLE_DIGITS {
        out.extend(&digits[digits.len() - NUMBER_VISIBLE_DIGITS..]);
    }
    out
}

/// Masks a PIN as `••••••••12`: every digit but the last two is replaced. A PIN of two
/// digits or fewer is masked entirely.
pub fn mask_pin(pin: &str) -> String {
    let len = pin.chars().count();
    let visible = if len > PIN_VISIBLE_DIGITS {
        PIN_VISIBLE_DIGITS
    } else {
        0
    };
    pin.chars()
        .enumerate()
        .map(|(i, c)| if i + visible < len { MASK } else { c })
        .collect()
}

/// A caller's phone number (the user part of `From`/`P-Asserted-Identity`, or a `tel:`
/// number), kept in its normalised form.
///
/// `Display` and `Debug` are masked, so the number can be put in a log field without
/// thinking. [`PhoneNumber::expose`] gives the full number, for the one place that may
/// use it: a trunk with `expose_phone_number = true`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PhoneNumber(String);

impl PhoneNumber {
    /// Normalises a number as dialled or presented: `tel:` and URI parameters dropped,
    /// visual separators (`-`, `.`, `(`, `)`, space) removed, the `00` international
    /// prefix rewritten to `+` (ITU-T E.164 / E.123). A value that is not a number (a SIP
    /// user name such as `anonymous`) is kept as it is, minus separators.
    pub fn new(raw: &str) -> Self {
        PhoneNumber(normalize_number(raw))
    }

    /// The full number. Only for a trunk that opts in with `expose_phone_number`.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The masked form, `••••1234`.
    pub fn masked(&self) -> String {
        mask_number(&self.0)
    }

    /// True when the number carries no digit at all (`anonymous`, empty).
    pub fn is_anonymous(&self) -> bool {
        !self.0.chars().any(|c| c.is_ascii_digit())
    }
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl fmt::Debug for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PhoneNumber({})", self.masked())
    }
}

/// The comparison form of a telephone number (see [`PhoneNumber::new`]).
///
/// `+33 1 23 45 67 89`, `0033123456789`, `tel:+33-1-23-45-67-89;phone-context=x` all give
/// `+33123456789`. A national number (`01 23 45 67 89`) stays national: without a country
/// context it cannot be made international, so it only equals itself.
pub(crate) fn normalize_number(raw: &str) -> String {
    let trimmed = raw.trim();
    let without_scheme = trimmed
        .strip_prefix("tel:")
        .or_else(|| trimmed.strip_prefix("TEL:"))
        .unwrap_or(trimmed);
    // RFC 3966 §3: parameters follow the number after ';'.
    let number = without_scheme.split(';').next().unwrap_or_default();
    let compact: String = number
        .chars()
        .filter(|c| !matches!(c, '-' | '.' | '(' | ')' | ' ' | '\t'))
        .collect();
    let all_digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    if let Some(rest) = compact.strip_prefix('+') {
        if all_digits(rest) {
            return compact;
        }
    } else if let Some(rest) = compact.strip_prefix("00") {
        if all_digits(rest) {
            return format!("+{rest}");
        }
    }
    compact
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_shows_only_its_last_four_digits() {
        assert_eq!(mask_number("+33123456789"), "••••6789");
        assert_eq!(mask_number("+1 (415) 555-0100"), "••••0100");
    }

    #[test]
    fn short_number_is_masked_entirely() {
        assert_eq!(mask_number("1234"), "••••");
        assert_eq!(mask_number("anonymous"), "••••");
    }

    #[test]
    fn pin_shows_only_its_last_two_digits() {
        assert_eq!(mask_pin("0123456789"), "••••••••89");
        assert_eq!(mask_pin("12"), "••");
    }

    #[test]
    fn phone_number_display_and_debug_are_masked() {
        let n = PhoneNumber::new("+33 6 12 34 56 78");
        assert_eq!(n.to_string(), "••••5678");
        assert!(!format!("{n:?}").contains("612345"));
        assert_eq!(n.expose(), "+33612345678");
    }

    #[test]
    fn international_prefix_and_tel_uri_normalise_to_e164() {
        assert_eq!(normalize_number("0033 1 23 45 67 89"), "+33123456789");
        assert_eq!(
            normalize_number("tel:+33-1-23-45-67-89;phone-context=example.com"),
            "+33123456789"
        );
        assert_eq!(normalize_number("+33 (1) 23.45.67.89"), "+33123456789");
        assert_eq!(normalize_number("01 23 45 67 89"), "0123456789");
    }

    #[test]
    fn anonymous_caller_has_no_digits() {
        assert!(PhoneNumber::new("anonymous").is_anonymous());
        assert!(!PhoneNumber::new("+15550100").is_anonymous());
    }
}

/// The secret that keys every hash of a phone number kept in the store (lockout counters,
/// trusted callers). An unsalted hash of a number is no protection: the space of numbers is
/// small enough to enumerate in a second. With HMAC-SHA256 under a 256-bit secret that is not
/// in the same place as the hashes, a stolen table reveals nothing.
#[derive(Clone)]
pub struct NumberKey([u8; 32]);

impl fmt::Debug for NumberKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NumberKey(••••)")
    }
}

impl NumberKey {
    /// A key from secret text (any length; it is hashed to 256 bits).
    pub fn from_secret(secret: &str) -> NumberKey {
        use sha2::Digest;
        NumberKey(Sha256::digest(secret.as_bytes()).into())
    }

    /// A fresh random secret, as text, for [`NumberKey::from_secret`].
    pub fn generate_secret() -> String {
        let bytes: [u8; 32] = rand::random();
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// 128 bits of HMAC-SHA256 of `purpose`, `scope` and the number, as hex. Callers without
    /// a number (withheld, `anonymous`) all get the same value per scope.
    pub fn hash(&self, purpose: &str, scope: &str, caller: &PhoneNumber) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
        mac.update(purpose.as_bytes());
        mac.update(&[0]);
        mac.update(scope.as_bytes());
        mac.update(&[0]);
        if caller.is_anonymous() {
            mac.update(b"anonymous");
        } else {
            mac.update(caller.expose().as_bytes());
        }
        let out = mac.finalize().into_bytes();
        out.iter().take(16).map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
mod number_key_tests {
    use super::*;

    #[test]
    fn hashes_depend_on_the_secret_purpose_scope_and_number() {
        let k = NumberKey::from_secret("one");
        let n = PhoneNumber::new("+33612345678");
        let h = k.hash("lockout", "carrier", &n);
        assert_eq!(h.len(), 32);
        assert_eq!(h, k.hash("lockout", "carrier", &PhoneNumber::new("+33612345678")));
        assert_ne!(h, NumberKey::from_secret("two").hash("lockout", "carrier", &n));
        assert_ne!(h, k.hash("trust", "carrier", &n));
        assert_ne!(h, k.hash("lockout", "other", &n));
        assert_ne!(h, k.hash("lockout", "carrier", &PhoneNumber::new("+33612345679")));
        // Not the unsalted SHA-256 of the number (reversible by enumeration).
        use sha2::Digest;
        let plain: String = Sha256::digest(b"+33612345678")
            .iter()
            .take(16)
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_ne!(h, plain);
        assert!(!format!("{k:?}").contains("one"));
    }
}
