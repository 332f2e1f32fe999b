//! The byte-level codec every P1 Consent message is built from.
//!
//! Integers are big-endian. Variable-length fields carry a length prefix (`u16` for
//! small fields, `u32` for bodies). Every message starts with the same three bytes:
//! message type, format version, suite id (see docs/PROTOCOL.md, "Common header").
//!
//! [`Reader`] never panics on hostile input: every read is bounds-checked and returns
//! a typed [`WireError`]. A decoder must call [`Reader::finish`] so trailing bytes are
//! an error rather than silently ignored.

use thiserror::Error;

/// Current version of every message format defined in this crate.
pub const VERSION: u8 = 1;

/// Errors from decoding bytes that came from outside.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WireError {
    #[error("message truncated: needed {needed} more bytes at offset {offset}")]
    Truncated { offset: usize, needed: usize },
    #[error("{count} unexpected trailing bytes after the message")]
    TrailingBytes { count: usize },
    #[error("message too large: {size} bytes, limit {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("wrong message type: expected {expected:#04x}, found {found:#04x}")]
    WrongType { expected: u8, found: u8 },
    #[error("unsupported format version {0} (this build speaks version {VERSION})")]
    UnsupportedVersion(u8),
    #[error("unsupported suite id {0:#04x}")]
    UnsupportedSuite(u8),
    #[error("invalid value for {field}: {reason}")]
    Invalid {
        field: &'static str,
        reason: &'static str,
    },
    #[error("field {0} is not valid UTF-8")]
    NotUtf8(&'static str),
}

/// Builds a message. Infallible: sizes are checked by the message types that use it.
#[derive(Debug, Default, Clone)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a message with the common header.
    pub fn with_header(msg_type: u8, suite: u8) -> Self {
        let mut w = Self::new();
        w.u8(msg_type).u8(VERSION).u8(suite);
        w
    }

    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.u8(u8::from(v))
    }
    /// Fixed-size bytes, no length prefix (the reader knows the size).
    pub fn raw(&mut self, v: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(v);
        self
    }
    /// `u16` length prefix + bytes. Panics in debug if over 65535 (a programming error:
    /// callers validate sizes before encoding).
    pub fn bytes16(&mut self, v: &[u8]) -> &mut Self {
        debug_assert!(v.len() <= u16::MAX as usize);
        self.u16(v.len().min(u16::MAX as usize) as u16);
        self.raw(&v[..v.len().min(u16::MAX as usize)])
    }
    /// `u32` length prefix + bytes.
    pub fn bytes32(&mut self, v: &[u8]) -> &mut Self {
        debug_assert!(v.len() <= u32::MAX as usize);
        self.u32(v.len() as u32);
        self.raw(v)
    }
    /// UTF-8 string with a `u16` byte-length prefix.
    pub fn str16(&mut self, v: &str) -> &mut Self {
        self.bytes16(v.as_bytes())
    }
    pub fn len(&self) -> usize {
        self.buf.len()
    }
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
    pub fn as_slice(&self) -> &[u8] {
        &self.buf
    }
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
}

/// Reads a message from untrusted bytes.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Checks the overall size, then the common header; returns the suite id.
    pub fn with_header(buf: &'a [u8], msg_type: u8, limit: usize) -> Result<(Self, u8), WireError> {
        if buf.len() > limit {
            return Err(WireError::TooLarge {
                size: buf.len(),
                limit,
            });
        }
        let mut r = Self::new(buf);
        let found = r.u8()?;
        if found != msg_type {
            return Err(WireError::WrongType {
                expected: msg_type,
                found,
            });
        }
        let version = r.u8()?;
        if version != VERSION {
            return Err(WireError::UnsupportedVersion(version));
        }
        let suite = r.u8()?;
        Ok((r, suite))
    }

    pub fn position(&self) -> usize {
        self.pos
    }
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    /// The bytes read so far (e.g. a header that is the AEAD associated data).
    pub fn consumed(&self) -> &'a [u8] {
        &self.buf[..self.pos]
    }

    pub fn raw(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.remaining() < n {
            return Err(WireError::Truncated {
                offset: self.pos,
                needed: n - self.remaining(),
            });
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.raw(N)?);
        Ok(out)
    }
    pub fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.array::<1>()?[0])
    }
    pub fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    pub fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    pub fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    pub fn bool(&mut self, field: &'static str) -> Result<bool, WireError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(WireError::Invalid {
                field,
                reason: "boolean must be 0 or 1",
            }),
        }
    }
    /// `u16`-prefixed bytes, at most `max` long.
    pub fn bytes16(&mut self, field: &'static str, max: usize) -> Result<&'a [u8], WireError> {
        let n = self.u16()? as usize;
        if n > max {
            return Err(WireError::Invalid {
                field,
                reason: "length over limit",
            });
        }
        self.raw(n)
    }
    /// `u32`-prefixed bytes, at most `max` long.
    pub fn bytes32(&mut self, field: &'static str, max: usize) -> Result<&'a [u8], WireError> {
        let n = self.u32()? as usize;
        if n > max {
            return Err(WireError::Invalid {
                field,
                reason: "length over limit",
            });
        }
        self.raw(n)
    }
    /// `u16`-prefixed UTF-8, at most `max` bytes.
    pub fn str16(&mut self, field: &'static str, max: usize) -> Result<&'a str, WireError> {
        std::str::from_utf8(self.bytes16(field, max)?).map_err(|_| WireError::NotUtf8(field))
    }
    /// Fails if anything is left over.
    pub fn finish(self) -> Result<(), WireError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(WireError::TrailingBytes { count }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_all_field_kinds() {
        let mut w = Writer::with_header(0x42, 0x01);
        w.u16(0xBEEF)
            .u32(7)
            .u64(u64::MAX)
            .bool(true)
            .bytes16(b"abc")
            .str16("été")
            .bytes32(&[9; 5])
            .raw(&[1, 2]);
        let bytes = w.into_bytes();
        assert_eq!(&bytes[..3], &[0x42, VERSION, 0x01]);
        let (mut r, suite) = Reader::with_header(&bytes, 0x42, 1024).unwrap();
        assert_eq!(suite, 1);
        assert_eq!(r.u16().unwrap(), 0xBEEF);
        assert_eq!(r.u32().unwrap(), 7);
        assert_eq!(r.u64().unwrap(), u64::MAX);
        assert!(r.bool("b").unwrap());
        assert_eq!(r.bytes16("x", 3).unwrap(), b"abc");
        assert_eq!(r.str16("s", 10).unwrap(), "été");
        assert_eq!(r.bytes32("y", 5).unwrap(), &[9; 5]);
        assert_eq!(r.array::<2>().unwrap(), [1, 2]);
        r.finish().unwrap();
    }

    #[test]
    fn hostile_input_gives_typed_errors() {
        assert_eq!(
            Reader::with_header(&[0x41, 1, 1], 0x42, 16).unwrap_err(),
            WireError::WrongType {
                expected: 0x42,
                found: 0x41
            }
        );
        assert_eq!(
            Reader::with_header(&[0x42, 9, 1], 0x42, 16).unwrap_err(),
            WireError::UnsupportedVersion(9)
        );
        assert_eq!(
            Reader::with_header(&[0; 17], 0x42, 16).unwrap_err(),
            WireError::TooLarge {
                size: 17,
                limit: 16
            }
        );
        let mut r = Reader::new(&[0, 5, b'a']);
        assert_eq!(
            r.bytes16("f", 100).unwrap_err(),
            WireError::Truncated {
                offset: 2,
                needed: 4
            }
        );
        let mut r = Reader::new(&[0, 5, b'a']);
        assert!(matches!(
            r.bytes16("f", 4).unwrap_err(),
            WireError::Invalid { field: "f", .. }
        ));
        let mut r = Reader::new(&[0, 1, 0xFF]);
        assert_eq!(r.str16("s", 4).unwrap_err(), WireError::NotUtf8("s"));
        let mut r = Reader::new(&[2]);
        assert!(r.bool("b").is_err());
        let r = Reader::new(&[1]);
        assert_eq!(
            r.finish().unwrap_err(),
            WireError::TrailingBytes { count: 1 }
        );
    }
}
