//! Byte-level reading and writing of the primitive field types used in frames:
//! big-endian integers, `str8` / `str16` strings and the "rest of the frame" body.
//!
//! Kept apart from [`crate::frame`] so that the frame catalogue reads as a list of
//! layouts, not as pointer arithmetic.

use crate::error::DecodeError;

/// Appends fields to an output buffer.
pub(crate) struct Writer<'a> {
    out: &'a mut Vec<u8>,
}

impl<'a> Writer<'a> {
    pub(crate) fn new(out: &'a mut Vec<u8>) -> Self {
        Writer { out }
    }

    pub(crate) fn u8(&mut self, v: u8) {
        self.out.push(v);
    }

    pub(crate) fn u16(&mut self, v: u16) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }

    pub(crate) fn u32(&mut self, v: u32) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }

    pub(crate) fn u64(&mut self, v: u64) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }

    /// A string with a one-byte length; cut at a character boundary to fit 255 bytes.
    pub(crate) fn str8(&mut self, s: &str) {
        let s = truncate_utf8(s, u8::MAX as usize);
        self.u8(s.len() as u8);
        self.out.extend_from_slice(s.as_bytes());
    }

    /// A string with a two-byte length; cut at a character boundary to fit 65,535 bytes.
    pub(crate) fn str16(&mut self, s: &str) {
        let s = truncate_utf8(s, u16::MAX as usize);
        self.u16(s.len() as u16);
        self.out.extend_from_slice(s.as_bytes());
    }

    /// Raw bytes that run to the end of the frame.
    pub(crate) fn rest(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    /// The buffer itself, for a body that writes its own bytes.
    pub(crate) fn out(&mut self) -> &mut Vec<u8> {
        self.out
    }
}

/// The longest prefix of `s` that fits in `max` bytes without splitting a character.
pub fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}

/// Reads fields from one frame body, failing with a [`DecodeError::Malformed`] that
/// names the frame when the body is too short.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    frame: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8], frame: &'static str) -> Self {
        Reader { bytes, frame }
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.bytes.len() < n {
            return Err(DecodeError::Malformed {
                frame: self.frame,
                problem: "body ends before its last field",
            });
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        let [byte] = self.array::<1>()?;
        Ok(byte)
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn utf8(bytes: &[u8], field: &'static str) -> Result<String, DecodeError> {
        core::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| DecodeError::InvalidUtf8 { field })
    }

    pub(crate) fn str8(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let len = self.u8()? as usize;
        Self::utf8(self.take(len)?, field)
    }

    pub(crate) fn str16(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let len = self.u16()? as usize;
        Self::utf8(self.take(len)?, field)
    }

    /// Everything left in the body.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        core::mem::take(&mut self.bytes)
    }

    /// Fails unless the whole body was consumed: trailing bytes mean the two sides
    /// disagree about the layout, which must not pass silently.
    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Malformed {
                frame: self.frame,
                problem: "unexpected bytes after the last field",
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_never_splits_a_character() {
        let s = "aé"; // 'é' is two bytes
        assert_eq!(truncate_utf8(s, 2), "a");
        assert_eq!(truncate_utf8(s, 3), "aé");
    }

    #[test]
    fn short_body_is_malformed_not_a_panic() {
        let mut r = Reader::new(&[0, 1], "Ping");
        assert!(matches!(
            r.u64(),
            Err(DecodeError::Malformed { frame: "Ping", .. })
        ));
    }
}
