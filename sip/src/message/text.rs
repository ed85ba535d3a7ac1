//! `Text`: an immutable UTF-8 string that shares the received datagram's buffer.
//!
//! Every header value, URI part and parameter the parser hands out is a `Text`
//! slice of the original `Bytes`, so parsing copies no header octets (folded
//! header lines are the one exception: they are unfolded into a fresh buffer).

use bytes::Bytes;
use std::fmt;

/// A cheaply clonable UTF-8 string backed by [`Bytes`].
///
/// Invariant: the bytes are valid UTF-8 (checked on construction).
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Text(Bytes);

impl Text {
    /// A `Text` over a static string (no allocation).
    pub const fn from_static(s: &'static str) -> Text {
        Text(Bytes::from_static(s.as_bytes()))
    }

    /// Wraps `bytes` if they are UTF-8.
    pub fn from_utf8(bytes: Bytes) -> Option<Text> {
        if std::str::from_utf8(&bytes).is_ok() {
            Some(Text(bytes))
        } else {
            None
        }
    }

    /// The string.
    pub fn as_str(&self) -> &str {
        // The invariant makes this infallible; the fallback only avoids a panic path.
        std::str::from_utf8(&self.0).unwrap_or("")
    }

    /// The underlying bytes.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// Consumes into the underlying bytes.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// A `Text` for `sub`, which should be a sub-slice of `self.as_str()`: then it
    /// shares the buffer; otherwise (defensive) it is copied.
    pub fn slice_ref(&self, sub: &str) -> Text {
        let base = self.0.as_ptr() as usize;
        let start = sub.as_ptr() as usize;
        if sub.is_empty() {
            return Text::default();
        }
        if start >= base && start + sub.len() <= base + self.0.len() {
            let off = start - base;
            Text(self.0.slice(off..off + sub.len()))
        } else {
            Text::from(sub.to_owned())
        }
    }
}

impl std::ops::Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Text {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl From<String> for Text {
    fn from(s: String) -> Text {
        Text(Bytes::from(s))
    }
}

impl From<&'static str> for Text {
    fn from(s: &'static str) -> Text {
        Text::from_static(s)
    }
}

impl PartialEq<str> for Text {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_ref_shares_the_buffer() {
        let t = Text::from(String::from("hello world"));
        let w = t.slice_ref(&t.as_str()[6..]);
        assert_eq!(w, "world");
        assert_eq!(w.as_bytes().as_ptr(), t.as_bytes()[6..].as_ptr());
    }

    #[test]
    fn slice_ref_of_foreign_str_copies() {
        let t = Text::from_static("abc");
        assert_eq!(t.slice_ref("xyz"), "xyz");
    }

    #[test]
    fn from_utf8_rejects_invalid() {
        assert!(Text::from_utf8(Bytes::from_static(&[0xff, 0xfe])).is_none());
    }
}
