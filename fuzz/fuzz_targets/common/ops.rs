//! The session targets read their input as a little program: one opcode byte, then its operands.

/// The rest of the input.
pub struct Ops<'a>(pub &'a [u8]);

impl<'a> Ops<'a> {
    /// The next byte, `None` at the end.
    pub fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    /// A length byte, then that many bytes (fewer at the end).
    pub fn chunk(&mut self) -> &'a [u8] {
        let len = usize::from(self.byte().unwrap_or(0)).min(self.0.len());
        let (c, rest) = self.0.split_at(len);
        self.0 = rest;
        c
    }
}
