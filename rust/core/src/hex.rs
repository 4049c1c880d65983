//! Bytes written as lower-case hexadecimal, two digits a byte: digests, keyed digests, tokens
//! and request ids. A table lookup a byte, where `format!("{b:02x}")` for each byte cost a
//! formatter's call and a string a byte (a list request's 16-byte id 9,000 instructions, a
//! logged call's keyed digest of its arguments twice that).

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Append `bytes` to `out`.
pub fn push(out: &mut String, bytes: &[u8]) {
    out.reserve(2 * bytes.len());
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
}

/// `bytes` in a string of their own.
pub fn lower(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(2 * bytes.len());
    push(&mut out, bytes);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Every byte as the formatter writes it, in order, after whatever came before.
        #[test]
        fn bytes_read_as_the_formatter_writes_them(
            before in ".{0,4}",
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..48),
        ) {
            let formatted: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            proptest::prop_assert_eq!(lower(&bytes), formatted.clone());
            let mut out = before.clone();
            push(&mut out, &bytes);
            proptest::prop_assert_eq!(out, before + &formatted);
        }
    }

    #[test]
    fn every_byte_value() {
        let all: Vec<u8> = (0..=255).collect();
        let text = lower(&all);
        assert!(text.starts_with("000102") && text.ends_with("fdfeff") && text.len() == 512);
    }
}
