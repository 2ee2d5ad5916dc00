//! How token strings spell raw bytes: GPT-2's byte-to-printable-character table and
//! SentencePiece's `▁` / `<0xNN>` conventions.

/// GPT-2's table: byte `b` is written as `byte_to_unicode()[b]`. Printable Latin-1 bytes stand
/// for themselves; the other 68 bytes are shifted to U+0100.. so that no token contains
/// whitespace or control characters.
pub(crate) fn byte_to_unicode() -> [char; 256] {
    let printable = |b: u32| {
        (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b)
    };
    let mut table = ['\0'; 256];
    let mut shifted = 0u32;
    for b in 0..256u32 {
        let c = if printable(b) {
            b
        } else {
            shifted += 1;
            255 + shifted
        };
        // Every value is below U+0200, so the conversion cannot fail.
        table[b as usize] = char::from_u32(c).unwrap_or('\u{fffd}');
    }
    table
}

/// Every character of [`byte_to_unicode`] is below this code point.
const TABLE_CHARS: usize = 0x200;

/// Inverse of [`byte_to_unicode`], indexed by code point (an array, not a hash map: it is
/// consulted for every character of every token when a vocabulary loads).
pub(crate) struct UnicodeToByte([Option<u8>; TABLE_CHARS]);

impl UnicodeToByte {
    /// The byte `c` stands for, if `c` is in the table.
    pub(crate) fn get(&self, c: char) -> Option<u8> {
        self.0.get(c as usize).copied().flatten()
    }
}

/// Inverse of [`byte_to_unicode`].
pub(crate) fn unicode_to_byte() -> UnicodeToByte {
    let mut t = [None; TABLE_CHARS];
    for (b, &c) in byte_to_unicode().iter().enumerate() {
        if let Some(slot) = t.get_mut(c as usize) {
            *slot = Some(b as u8);
        }
    }
    UnicodeToByte(t)
}

/// Appends the bytes a byte-level token string stands for; characters outside the table (a
/// mislabelled token) contribute their own UTF-8.
pub(crate) fn byte_level_bytes(token: &str, table: &UnicodeToByte, out: &mut Vec<u8>) {
    for c in token.chars() {
        match table.get(c) {
            Some(b) => out.push(b),
            None => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
}

/// Parses a SentencePiece byte token `<0xNN>`.
pub(crate) fn parse_byte_token(token: &str) -> Option<u8> {
    let hex = token.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// Appends the bytes a SentencePiece token string stands for (`▁` is a space).
pub(crate) fn sentencepiece_bytes(token: &str, out: &mut Vec<u8>) {
    if let Some(b) = parse_byte_token(token) {
        out.push(b);
        return;
    }
    for c in token.chars() {
        if c == '\u{2581}' {
            out.push(b' ');
        } else {
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_is_a_bijection_with_gpt2_anchor_points() {
        let t = byte_to_unicode();
        // Anchor points of GPT-2's table: space is 'Ġ' (U+0120), newline 'Ċ' (U+010A), 'a' is 'a'.
        assert_eq!(t[b' ' as usize], 'Ġ');
        assert_eq!(t[b'\n' as usize], 'Ċ');
        assert_eq!(t[b'a' as usize], 'a');
        assert_eq!(t[0xad], 'Ń');
        let inverse = unicode_to_byte();
        for (b, &c) in t.iter().enumerate() {
            assert_eq!(inverse.get(c), Some(b as u8), "{c:?}");
        }
        assert_eq!(inverse.0.iter().flatten().count(), 256);
        assert_eq!(inverse.get('€'), None);
    }

    #[test]
    fn sentencepiece_bytes_handles_byte_tokens_and_spaces() {
        let mut out = Vec::new();
        sentencepiece_bytes("<0xE2>", &mut out);
        sentencepiece_bytes("▁hi", &mut out);
        assert_eq!(out, b"\xe2 hi");
        assert_eq!(parse_byte_token("<0x1>"), None);
        assert_eq!(parse_byte_token("<0xZZ>"), None);
    }
}
