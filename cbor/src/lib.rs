//! A small CBOR (RFC 8949) reader and writer for the formats Secure Pod speaks.
//!
//! # Why not a general-purpose CBOR crate
//!
//! Every format the pod parses comes from someone who may be hostile, and every one of them is signed over its
//! *original bytes*. A general decoder into a value tree allocates before it knows what it is reading, silently
//! keeps the last of two duplicate map keys, and re-encodes what it read. This crate does none of that:
//!
//! * [`Decoder`] is a pull parser over a borrowed slice. Byte and text strings are returned as sub-slices of the
//!   input, so reading them allocates nothing, and a declared length is checked against the bytes that remain
//!   *before* anything is done with it. A length of 2^63 in a four-byte input is an error, not an allocation.
//! * Schema code drives the decoder, so duplicate keys, unexpected types and unknown fields are decided by the
//!   caller, which knows the schema, instead of being papered over.
//! * [`Decoder::skip`] walks an item of unknown shape with a nesting limit, so no input can recurse without bound.
//! * [`Encoder`] writes the deterministic encoding of RFC 8949 §4.2.1 (shortest heads, definite lengths), so that
//!   what the pod signs has exactly one byte representation.
//!
//! Indefinite-length *strings* are refused: no producer the pod talks to emits them and they only add ways to
//! spell the same value. Indefinite-length *maps and arrays* are accepted because real AWS Nitro attestation
//! documents use them.

#![forbid(unsafe_code)]

use thiserror::Error;

/// Maximum nesting depth [`Decoder::skip`] will follow.
pub const MAX_SKIP_DEPTH: usize = 16;

/// A CBOR decoding error. Each carries the byte offset at which decoding stopped.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum Error {
    /// The input ended in the middle of an item.
    #[error("CBOR input ends early at byte {offset}")]
    UnexpectedEnd {
        /// Offset of the item that could not be completed.
        offset: usize,
    },
    /// The bytes are not well-formed CBOR (reserved values, a break outside an indefinite item, ...).
    #[error("malformed CBOR at byte {offset}: {reason}")]
    Malformed {
        /// Offset of the offending head.
        offset: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// A well-formed item of another type than the schema expects.
    #[error("expected {expected} at byte {offset}")]
    UnexpectedType {
        /// Offset of the item.
        offset: usize,
        /// What the schema expected.
        expected: &'static str,
    },
    /// An integer does not fit the range the schema allows.
    #[error("integer out of range at byte {offset}")]
    IntegerRange {
        /// Offset of the item.
        offset: usize,
    },
    /// Items nest deeper than [`MAX_SKIP_DEPTH`].
    #[error("CBOR nests too deeply at byte {offset}")]
    TooDeep {
        /// Offset of the item that went too deep.
        offset: usize,
    },
    /// Bytes follow the last expected item.
    #[error("{count} trailing byte(s) after the CBOR item at byte {offset}")]
    TrailingBytes {
        /// Offset where the trailing bytes start.
        offset: usize,
        /// How many bytes follow.
        count: usize,
    },
}

/// The length of an array or map: a count, or "until break" for indefinite-length items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Len {
    /// A definite number of entries.
    Definite(u64),
    /// Entries until a break byte (0xff).
    Indefinite,
}

/// The kind of the next item, as seen by [`Decoder::peek_kind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Major type 0.
    Unsigned,
    /// Major type 1.
    Negative,
    /// Major type 2.
    Bytes,
    /// Major type 3.
    Text,
    /// Major type 4.
    Array,
    /// Major type 5.
    Map,
    /// Major type 6.
    Tag,
    /// `false` or `true`.
    Bool,
    /// `null`.
    Null,
    /// `undefined`, other simple values and floats.
    OtherSimple,
    /// The break byte ending an indefinite-length item.
    Break,
}

#[derive(Debug, Clone, Copy)]
struct Head {
    major: u8,
    info: u8,
    /// The argument; for indefinite items (info 31) it is 0.
    arg: u64,
    /// Number of bytes the head occupies.
    size: usize,
}

/// A pull decoder over a borrowed byte slice.
#[derive(Debug, Clone)]
pub struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Decoder<'a> {
    /// A decoder positioned at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Current byte offset in the input.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes not yet consumed.
    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// Succeeds only when every input byte has been consumed.
    pub fn finish(&self) -> Result<(), Error> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(Error::TrailingBytes {
                offset: self.pos,
                count,
            }),
        }
    }

    fn head_at(&self, at: usize) -> Result<Head, Error> {
        let end = Error::UnexpectedEnd { offset: at };
        let first = *self.buf.get(at).ok_or(end.clone())?;
        let major = first >> 5;
        let info = first & 0x1f;
        let (arg, size) = match info {
            0..=23 => (u64::from(info), 1),
            24..=27 => {
                let n = 1usize << (info - 24);
                let start = at.checked_add(1).ok_or(end.clone())?;
                let stop = start.checked_add(n).ok_or(end.clone())?;
                let bytes = self.buf.get(start..stop).ok_or(end)?;
                let arg = bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
                // Shortest form only (RFC 8949 §4.2.1): one encoding per value, so that a signature made over one
                // encoding is the only one any decoder here (Rust, the browser's, Python's) accepts. Floats (major
                // 7) keep their widths.
                let shortest_min = [24u64, 0x100, 0x1_0000, 0x1_0000_0000];
                if major != 7
                    && shortest_min
                        .get(usize::from(info - 24))
                        .is_some_and(|m| arg < *m)
                {
                    return Err(Error::Malformed {
                        offset: at,
                        reason: "integer or length not in its shortest form",
                    });
                }
                (arg, 1 + n)
            }
            28..=30 => {
                return Err(Error::Malformed {
                    offset: at,
                    reason: "reserved additional information value",
                });
            }
            _ => {
                // info == 31: indefinite length or break.
                match major {
                    2 | 3 => {
                        return Err(Error::Malformed {
                            offset: at,
                            reason: "indefinite-length strings are not accepted",
                        });
                    }
                    4 | 5 | 7 => (0, 1),
                    _ => {
                        return Err(Error::Malformed {
                            offset: at,
                            reason: "indefinite length on a type that cannot have one",
                        });
                    }
                }
            }
        };
        if major == 7 && info == 24 && arg < 32 {
            return Err(Error::Malformed {
                offset: at,
                reason: "two-byte simple value below 32",
            });
        }
        Ok(Head {
            major,
            info,
            arg,
            size,
        })
    }

    fn take_head(&mut self) -> Result<Head, Error> {
        let head = self.head_at(self.pos)?;
        self.pos = self.pos.saturating_add(head.size);
        Ok(head)
    }

    /// The kind of the next item, without consuming it.
    pub fn peek_kind(&self) -> Result<Kind, Error> {
        let h = self.head_at(self.pos)?;
        Ok(match (h.major, h.info) {
            (0, _) => Kind::Unsigned,
            (1, _) => Kind::Negative,
            (2, _) => Kind::Bytes,
            (3, _) => Kind::Text,
            (4, _) => Kind::Array,
            (5, _) => Kind::Map,
            (6, _) => Kind::Tag,
            (7, 20) | (7, 21) => Kind::Bool,
            (7, 22) => Kind::Null,
            (7, 31) => Kind::Break,
            _ => Kind::OtherSimple,
        })
    }

    fn expect(&mut self, major: u8, expected: &'static str) -> Result<Head, Error> {
        let at = self.pos;
        let head = self.head_at(at)?;
        if head.major != major || (major == 7 && head.info == 31) {
            return Err(Error::UnexpectedType {
                offset: at,
                expected,
            });
        }
        self.pos = at.saturating_add(head.size);
        Ok(head)
    }

    /// Reads an unsigned integer (major type 0).
    pub fn u64(&mut self) -> Result<u64, Error> {
        Ok(self.expect(0, "an unsigned integer")?.arg)
    }

    /// Reads a signed integer (major type 0 or 1) that fits an `i64`.
    pub fn i64(&mut self) -> Result<i64, Error> {
        let at = self.pos;
        let head = self.head_at(at)?;
        let value = match head.major {
            0 => i64::try_from(head.arg).map_err(|_| Error::IntegerRange { offset: at })?,
            1 => {
                let n = i64::try_from(head.arg).map_err(|_| Error::IntegerRange { offset: at })?;
                // -1 - n cannot overflow for n in 0..=i64::MAX.
                -1 - n
            }
            _ => {
                return Err(Error::UnexpectedType {
                    offset: at,
                    expected: "an integer",
                });
            }
        };
        self.pos = at.saturating_add(head.size);
        Ok(value)
    }

    fn string(&mut self, major: u8, expected: &'static str) -> Result<&'a [u8], Error> {
        let at = self.pos;
        let head = self.expect(major, expected)?;
        let len = usize::try_from(head.arg).map_err(|_| Error::UnexpectedEnd { offset: at })?;
        let end = self
            .pos
            .checked_add(len)
            .ok_or(Error::UnexpectedEnd { offset: at })?;
        let bytes = self
            .buf
            .get(self.pos..end)
            .ok_or(Error::UnexpectedEnd { offset: at })?;
        self.pos = end;
        Ok(bytes)
    }

    /// Reads a byte string, borrowed from the input.
    pub fn bytes(&mut self) -> Result<&'a [u8], Error> {
        self.string(2, "a byte string")
    }

    /// Reads a UTF-8 text string, borrowed from the input.
    pub fn text(&mut self) -> Result<&'a str, Error> {
        let at = self.pos;
        let raw = self.string(3, "a text string")?;
        std::str::from_utf8(raw).map_err(|_| Error::Malformed {
            offset: at,
            reason: "text string is not valid UTF-8",
        })
    }

    /// Reads an array head.
    pub fn array(&mut self) -> Result<Len, Error> {
        let head = self.expect(4, "an array")?;
        Ok(if head.info == 31 {
            Len::Indefinite
        } else {
            Len::Definite(head.arg)
        })
    }

    /// Reads a map head.
    pub fn map(&mut self) -> Result<Len, Error> {
        let head = self.expect(5, "a map")?;
        Ok(if head.info == 31 {
            Len::Indefinite
        } else {
            Len::Definite(head.arg)
        })
    }

    /// Reads a tag number (the tagged item follows).
    pub fn tag(&mut self) -> Result<u64, Error> {
        Ok(self.expect(6, "a tag")?.arg)
    }

    /// Reads `true` or `false`.
    pub fn bool(&mut self) -> Result<bool, Error> {
        let at = self.pos;
        match self.head_at(at)? {
            Head {
                major: 7, info: 20, ..
            } => {
                self.pos = at.saturating_add(1);
                Ok(false)
            }
            Head {
                major: 7, info: 21, ..
            } => {
                self.pos = at.saturating_add(1);
                Ok(true)
            }
            _ => Err(Error::UnexpectedType {
                offset: at,
                expected: "a boolean",
            }),
        }
    }

    /// Consumes a `null` if one is next and says whether it did.
    pub fn null(&mut self) -> Result<bool, Error> {
        if self.peek_kind()? == Kind::Null {
            self.pos = self.pos.saturating_add(1);
            Ok(true)
        } else {
            Ok(false)
        }
    }

    /// Consumes a break byte if one is next and says whether it did.
    pub fn at_break(&mut self) -> Result<bool, Error> {
        if self.peek_kind()? == Kind::Break {
            self.pos = self.pos.saturating_add(1);
            Ok(true)
        } else {
            Ok(false)
        }
    }

    /// Calls `entry` once per element of a container of length `len` (as returned by [`Decoder::array`] or
    /// [`Decoder::map`]); for a map, `entry` must read a key and a value. At most `max` entries are accepted, so a
    /// declared count of 2^64 fails at once instead of looping.
    pub fn for_each<F>(&mut self, len: Len, max: u64, mut entry: F) -> Result<u64, Error>
    where
        F: FnMut(&mut Self, u64) -> Result<(), Error>,
    {
        let start = self.pos;
        match len {
            Len::Definite(n) => {
                if n > max {
                    return Err(Error::Malformed {
                        offset: start,
                        reason: "container has more entries than allowed",
                    });
                }
                for i in 0..n {
                    entry(self, i)?;
                }
                Ok(n)
            }
            Len::Indefinite => {
                let mut i = 0u64;
                while !self.at_break()? {
                    if i >= max {
                        return Err(Error::Malformed {
                            offset: self.pos,
                            reason: "container has more entries than allowed",
                        });
                    }
                    entry(self, i)?;
                    i = i.saturating_add(1);
                }
                Ok(i)
            }
        }
    }

    /// Skips one complete item of any type, following at most [`MAX_SKIP_DEPTH`] levels of nesting.
    pub fn skip(&mut self) -> Result<(), Error> {
        self.skip_depth(0)
    }

    fn skip_depth(&mut self, depth: usize) -> Result<(), Error> {
        let at = self.pos;
        if depth > MAX_SKIP_DEPTH {
            return Err(Error::TooDeep { offset: at });
        }
        let head = self.head_at(at)?;
        match head.major {
            0 | 1 => {
                self.take_head()?;
            }
            2 | 3 => {
                self.string(head.major, "a string")?;
            }
            4 | 5 => {
                self.take_head()?;
                let per_entry = if head.major == 5 { 2 } else { 1 };
                let len = if head.info == 31 {
                    Len::Indefinite
                } else {
                    Len::Definite(head.arg)
                };
                // Each entry needs at least one byte per item, which bounds the loop by the input size.
                let max = u64::try_from(self.remaining()).unwrap_or(u64::MAX);
                self.for_each(len, max, |d, _| {
                    for _ in 0..per_entry {
                        d.skip_depth(depth.saturating_add(1))?;
                    }
                    Ok(())
                })?;
            }
            6 => {
                self.take_head()?;
                self.skip_depth(depth.saturating_add(1))?;
            }
            _ => {
                if head.info == 31 {
                    return Err(Error::Malformed {
                        offset: at,
                        reason: "break outside an indefinite-length item",
                    });
                }
                self.take_head()?;
            }
        }
        Ok(())
    }
}

/// A writer of deterministically encoded CBOR (shortest heads, definite lengths only).
#[derive(Debug, Default, Clone)]
pub struct Encoder {
    buf: Vec<u8>,
}

impl Encoder {
    /// An empty encoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// The bytes written so far.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    /// The bytes written so far, borrowed.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    fn head(&mut self, major: u8, arg: u64) -> &mut Self {
        let m = major << 5;
        if arg < 24 {
            // Fits in the low five bits.
            self.buf.push(m | arg as u8);
        } else if let Ok(v) = u8::try_from(arg) {
            self.buf.extend_from_slice(&[m | 24, v]);
        } else if let Ok(v) = u16::try_from(arg) {
            self.buf.push(m | 25);
            self.buf.extend_from_slice(&v.to_be_bytes());
        } else if let Ok(v) = u32::try_from(arg) {
            self.buf.push(m | 26);
            self.buf.extend_from_slice(&v.to_be_bytes());
        } else {
            self.buf.push(m | 27);
            self.buf.extend_from_slice(&arg.to_be_bytes());
        }
        self
    }

    /// Writes an unsigned integer.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.head(0, v)
    }

    /// Writes a signed integer.
    pub fn i64(&mut self, v: i64) -> &mut Self {
        if v >= 0 {
            self.head(0, v.unsigned_abs())
        } else {
            // -1 - v is non-negative for negative v; computed without overflow via bitwise not.
            self.head(1, (!v) as u64)
        }
    }

    /// Writes a byte string.
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.head(2, v.len() as u64);
        self.buf.extend_from_slice(v);
        self
    }

    /// Writes a text string.
    pub fn text(&mut self, v: &str) -> &mut Self {
        self.head(3, v.len() as u64);
        self.buf.extend_from_slice(v.as_bytes());
        self
    }

    /// Writes an array head for `len` items.
    pub fn array(&mut self, len: u64) -> &mut Self {
        self.head(4, len)
    }

    /// Writes a map head for `len` key/value pairs.
    pub fn map(&mut self, len: u64) -> &mut Self {
        self.head(5, len)
    }

    /// Writes a tag number; the tagged item must follow.
    pub fn tag(&mut self, tag: u64) -> &mut Self {
        self.head(6, tag)
    }

    /// Writes a boolean.
    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.buf.push(if v { 0xf5 } else { 0xf4 });
        self
    }

    /// Writes `null`.
    pub fn null(&mut self) -> &mut Self {
        self.buf.push(0xf6);
        self
    }

    /// Appends bytes that are already a complete CBOR item.
    pub fn raw(&mut self, item: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(item);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_shortest_heads_are_refused() {
        // 23 in one extra byte, 255 in two, 65535 in four, a length of 1 in eight: all have a shorter form.
        for bytes in [
            &[0x18u8, 0x17][..],
            &[0x19, 0x00, 0xff],
            &[0x1a, 0x00, 0x00, 0xff, 0xff],
            &[0x5b, 0, 0, 0, 0, 0, 0, 0, 1, 0xaa],
            &[0x98, 0x01, 0x00],
        ] {
            let mut d = Decoder::new(bytes);
            let r = match bytes[0] >> 5 {
                0 => d.u64().map(|_| ()),
                2 => d.bytes().map(|_| ()),
                _ => d.array().map(|_| ()),
            };
            assert!(r.is_err(), "{bytes:02x?} was accepted");
        }
        // The shortest forms of the same values are accepted.
        let mut d = Decoder::new(&[0x17]);
        assert_eq!(d.u64().unwrap(), 23);
        let mut d = Decoder::new(&[0x18, 0xff]);
        assert_eq!(d.u64().unwrap(), 255);
    }

    #[test]
    fn round_trips_integers_at_every_head_size() {
        for v in [
            0u64,
            23,
            24,
            255,
            256,
            65_535,
            65_536,
            u32::MAX as u64,
            u32::MAX as u64 + 1,
            u64::MAX,
        ] {
            let mut e = Encoder::new();
            e.u64(v);
            let bytes = e.into_bytes();
            let mut d = Decoder::new(&bytes);
            assert_eq!(d.u64().unwrap(), v);
            d.finish().unwrap();
        }
        for v in [-1i64, -24, -25, -256, -257, i64::MIN, i64::MAX] {
            let mut e = Encoder::new();
            e.i64(v);
            let bytes = e.into_bytes();
            assert_eq!(Decoder::new(&bytes).i64().unwrap(), v);
        }
    }

    #[test]
    fn rfc8949_appendix_a_examples() {
        // A few encodings from RFC 8949 Appendix A.
        let mut e = Encoder::new();
        e.i64(-1000);
        assert_eq!(e.as_bytes(), &[0x39, 0x03, 0xe7]);
        let mut e = Encoder::new();
        e.u64(1_000_000);
        assert_eq!(e.as_bytes(), &[0x1a, 0x00, 0x0f, 0x42, 0x40]);
        let mut e = Encoder::new();
        e.text("IETF");
        assert_eq!(e.as_bytes(), &[0x64, 0x49, 0x45, 0x54, 0x46]);
    }

    #[test]
    fn huge_declared_length_fails_without_allocating() {
        // A byte string claiming 2^63 bytes in a nine-byte input.
        let input = [0x5b, 0x80, 0, 0, 0, 0, 0, 0, 0];
        assert!(matches!(
            Decoder::new(&input).bytes(),
            Err(Error::UnexpectedEnd { offset: 0 })
        ));
        // An array claiming 2^64-1 entries: for_each refuses before looping.
        let input = [0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        let mut d = Decoder::new(&input);
        let len = d.array().unwrap();
        assert!(d.for_each(len, 16, |d, _| d.skip()).is_err());
        assert!(Decoder::new(&input).skip().is_err());
    }

    #[test]
    fn indefinite_maps_are_read_and_strings_refused() {
        // {_ "a": 1}
        let input = [0xbf, 0x61, b'a', 0x01, 0xff];
        let mut d = Decoder::new(&input);
        let len = d.map().unwrap();
        assert_eq!(len, Len::Indefinite);
        let n = d
            .for_each(len, 4, |d, _| {
                assert_eq!(d.text()?, "a");
                assert_eq!(d.u64()?, 1);
                Ok(())
            })
            .unwrap();
        assert_eq!(n, 1);
        d.finish().unwrap();
        // (_ h'01')
        let input = [0x5f, 0x41, 0x01, 0xff];
        assert!(matches!(
            Decoder::new(&input).bytes(),
            Err(Error::Malformed { .. })
        ));
    }

    #[test]
    fn trailing_bytes_and_reserved_values_are_errors() {
        let mut d = Decoder::new(&[0x01, 0x02]);
        d.u64().unwrap();
        assert_eq!(
            d.finish(),
            Err(Error::TrailingBytes {
                offset: 1,
                count: 1
            })
        );
        assert!(matches!(
            Decoder::new(&[0x1c]).u64(),
            Err(Error::Malformed { .. })
        ));
        assert!(matches!(
            Decoder::new(&[0xff]).skip(),
            Err(Error::Malformed { .. })
        ));
        assert!(matches!(
            Decoder::new(&[0xf8, 0x10]).skip(),
            Err(Error::Malformed { .. })
        ));
    }

    #[test]
    fn deep_nesting_is_refused() {
        let input = vec![0x81; 1000];
        assert!(matches!(
            Decoder::new(&input).skip(),
            Err(Error::TooDeep { .. })
        ));
    }

    #[test]
    fn invalid_utf8_text_is_refused() {
        assert!(matches!(
            Decoder::new(&[0x62, 0xc3, 0x28]).text(),
            Err(Error::Malformed { .. })
        ));
    }

    proptest::proptest! {
        #[test]
        fn skip_never_panics_and_stays_in_bounds(input in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let mut d = Decoder::new(&input);
            let _ = d.skip();
            proptest::prop_assert!(d.position() <= input.len());
        }
    }
}
