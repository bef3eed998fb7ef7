//! GPT-2's byte-to-unicode table: byte-level BPE vocabularies spell every byte as one
//! printable character, so that tokens are plain strings with no spaces or control
//! characters. Printable Latin-1 bytes (`!`..=`~`, `¡`..=`¬`, `®`..=`ÿ`) stand for
//! themselves; the other 68 bytes, in increasing order, take U+0100, U+0101, ...
//! (so the space 0x20 is `Ġ` U+0120 and the newline 0x0A is `Ċ` U+010A).

/// The character of each byte, built at compile time.
const BYTE_TO_CHAR: [char; 256] = {
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    let mut b = 0usize;
    while b < 256 {
        let code = if is_printable(b as u8) {
            b as u32
        } else {
            next += 1;
            next - 1
        };
        table[b] = match char::from_u32(code) {
            Some(c) => c,
            None => panic!("byte table codes are below U+0144"), // evaluated at compile time
        };
        b += 1;
    }
    table
};

const fn is_printable(b: u8) -> bool {
    matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF)
}

/// The character that spells byte `b` in a byte-level vocabulary.
pub(crate) fn byte_to_char(b: u8) -> char {
    BYTE_TO_CHAR[b as usize]
}

/// The byte that `c` spells, if it is one of the table's 256 characters.
pub(crate) fn char_to_byte(c: char) -> Option<u8> {
    let code = c as u32;
    match code {
        0..=0xFF => u8::try_from(code).ok().filter(|&b| is_printable(b)),
        // The non-printable bytes in order: 0x00..=0x20, 0x7F..=0xA0, 0xAD.
        0x100..=0x120 => u8::try_from(code - 0x100).ok(),
        0x121..=0x142 => u8::try_from(code - 0x121 + 0x7F).ok(),
        0x143 => Some(0xAD),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_a_bijection_with_known_points() {
        for b in 0..=255u8 {
            assert_eq!(char_to_byte(byte_to_char(b)), Some(b), "byte {b}");
        }
        assert_eq!(byte_to_char(b' '), 'Ġ');
        assert_eq!(byte_to_char(b'\n'), 'Ċ');
        assert_eq!(byte_to_char(0), '\u{100}');
        assert_eq!(byte_to_char(0x7F), '\u{121}');
        assert_eq!(byte_to_char(0xAD), '\u{143}');
        assert_eq!(byte_to_char(b'a'), 'a');
        assert_eq!(char_to_byte(' '), None);
        assert_eq!(char_to_byte('\u{144}'), None);
    }
}
