//! Reads a fuzzer's bytes as a script of small decisions: which connection, how
//! many bytes, how far the clock moves. Running out of input ends the script, so
//! every input is a valid script.

/// A cursor over the fuzzer's bytes.
#[derive(Debug)]
pub struct Script<'a> {
    bytes: &'a [u8],
}

impl<'a> Script<'a> {
    /// A script over `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Script { bytes }
    }

    /// The next byte, if any.
    pub fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.bytes.split_first()?;
        self.bytes = rest;
        Some(b)
    }

    /// The next `n` bytes (fewer at the end).
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.bytes.len());
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        head
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        self.take(self.bytes.len())
    }
}
