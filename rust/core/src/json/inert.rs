//! Text an agent sent (tool names, arguments, session and agent ids), made inert for the
//! people who later read it in a terminal, a chat or a log viewer.
//!
//! A character is *unsafe* when a reader's display can act on it instead of showing it:
//! control characters (C0, DEL, C1: line breaks that forge rows, ANSI escapes that move the
//! cursor or recolour text), format characters (bidirectional overrides and isolates that
//! reorder what is shown, zero-width characters that hide text, tag characters) and the
//! Unicode line and paragraph separators. [`escape`] writes each as `\u{HEX}` and a
//! backslash as `\\`, so an escape the agent typed itself cannot pass for one of ours; every
//! other character is kept. The decision log writes the same characters as JSON `\uXXXX`
//! escapes ([`push_json_string`]), which serde_json would leave raw.

use std::borrow::Cow;
use std::fmt::Write;

/// Unicode's format characters (general category Cf, Unicode 15.1), and the other default
/// ignorable code points (DerivedCoreProperties' Default_Ignorable_Code_Point: variation
/// selectors, Hangul fillers, the combining grapheme joiner, reserved tag-block characters),
/// which displays draw as nothing: text shown to a person as `ami-1` must not hide more.
const FORMAT: &[(u32, u32)] = &[
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x0600, 0x0605),
    (0x061C, 0x061C),
    (0x06DD, 0x06DD),
    (0x070F, 0x070F),
    (0x0890, 0x0891),
    (0x08E2, 0x08E2),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFFB),
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x1343F),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
    // Line and paragraph separators (Zl, Zp): line breaks to many displays.
    (0x2028, 0x2029),
];

/// Whether a display could act on `c` rather than show it.
#[inline]
pub fn is_unsafe(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_control();
    }
    let n = c as u32;
    // C1 controls, then the format and separator ranges.
    (0x80..=0x9F).contains(&n) || FORMAT.iter().any(|&(lo, hi)| (lo..=hi).contains(&n))
}

/// `text` with every unsafe character written `\u{HEX}` and each backslash `\\`; borrowed
/// when there is nothing to escape.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| c == '\\' || is_unsafe(c)) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c == '\\' {
            out.push_str("\\\\");
        } else if is_unsafe(c) {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Compact JSON text (no whitespace between tokens, as toolgate writes it) with each unsafe
/// character written as the JSON escape `\uXXXX` (a surrogate pair past U+FFFF): the same
/// JSON value, inert. In such text an unsafe character can only stand inside a string, where
/// the escape means the character itself; every other character, backslashes included, is
/// kept.
pub fn escape_in_json(json: &str) -> Cow<'_, str> {
    if !json.chars().any(is_unsafe) {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 12);
    let mut units = [0u16; 2];
    for c in json.chars() {
        if is_unsafe(c) {
            for unit in c.encode_utf16(&mut units) {
                let _ = write!(out, "\\u{unit:04x}");
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// `text` as a JSON string, appended to `out`: quotes and backslashes escaped as JSON
/// requires, and every unsafe character as a `\uXXXX` escape (a surrogate pair above the
/// Basic Multilingual Plane), so the JSON text itself holds none. Reads back as `text`.
pub fn push_json_string(out: &mut Vec<u8>, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let unit = |out: &mut Vec<u8>, u: u16| {
        out.extend_from_slice(b"\\u");
        for shift in [12, 8, 4, 0] {
            out.push(HEX[usize::from((u >> shift) & 15)]);
        }
    };
    let bytes = text.as_bytes();
    out.push(b'"');
    // Safe bytes are copied a run at a time; only an escape breaks a run.
    let (mut run, mut i) = (0, 0);
    while i < bytes.len() {
        let b = bytes[i];
        let (len, escape) = if b.is_ascii() {
            (1, b < 0x20 || b == 0x7f || b == b'"' || b == b'\\')
        } else {
            let c = text[i..].chars().next().unwrap_or_default();
            (c.len_utf8(), is_unsafe(c))
        };
        if escape {
            out.extend_from_slice(&bytes[run..i]);
            match b {
                b'"' => out.extend_from_slice(b"\\\""),
                b'\\' => out.extend_from_slice(b"\\\\"),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                b'\t' => out.extend_from_slice(b"\\t"),
                _ => {
                    let mut units = [0u16; 2];
                    let c = text[i..].chars().next().unwrap_or_default();
                    for u in c.encode_utf16(&mut units) {
                        unit(out, *u);
                    }
                }
            }
            run = i + len;
        }
        i += len;
    }
    out.extend_from_slice(&bytes[run..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn escapes_what_moves_or_hides_text() {
        assert_eq!(escape("create-ami"), "create-ami");
        assert!(matches!(escape("naïve ✓ 日本"), Cow::Borrowed(_)));
        assert_eq!(escape("a\nb"), "a\\u{a}b");
        assert_eq!(escape("\x1b[2K\rok"), "\\u{1b}[2K\\u{d}ok");
        assert_eq!(escape("x\u{9b}31m"), "x\\u{9b}31m");
        assert_eq!(escape("abc\u{202e}fed"), "abc\\u{202e}fed");
        assert_eq!(
            escape("a\u{200b}b\u{2028}c\u{e0041}"),
            "a\\u{200b}b\\u{2028}c\\u{e0041}"
        );
        // An escape typed by the agent stays visibly its own.
        assert_eq!(escape("\\u{a}"), "\\\\u{a}");
    }

    #[test]
    fn json_strings_escape_what_serde_json_leaves_raw() {
        let json = |text: &str| {
            let mut out = Vec::new();
            push_json_string(&mut out, text);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(json("plain ✓ 日本"), "\"plain ✓ 日本\"");
        assert_eq!(
            json("a\"b\\c\nd\te\x1b[31m\x7f"),
            r#""a\"b\\c\nd\te\u001b[31m\u007f""#
        );
        assert_eq!(json("x\u{85}y\u{9b}"), r#""x\u0085y\u009b""#);
        assert_eq!(json("abc\u{202e}fed\u{2028}"), r#""abc\u202efed\u2028""#);
        assert_eq!(json("tag\u{e0041}"), r#""tag\udb40\udc41""#);
    }

    proptest! {
        /// Whatever the text, its JSON string holds no unsafe character and reads back as
        /// the text.
        #[test]
        fn json_strings_are_inert_and_read_back(text in any::<String>()) {
            let mut out = Vec::new();
            push_json_string(&mut out, &text);
            let json = std::str::from_utf8(&out).unwrap();
            prop_assert!(!json.chars().any(is_unsafe), "{json}");
            prop_assert_eq!(serde_json::from_str::<String>(json).unwrap(), text);
        }

        /// Whatever the text, the escaped form holds no unsafe character, keeps every safe
        /// one in order, and reads back to the text.
        #[test]
        fn escaped_text_is_inert_and_reversible(text in any::<String>()) {
            let out = escape(&text);
            prop_assert!(!out.chars().any(is_unsafe));
            prop_assert_eq!(unescape(&out), text);
        }
    }

    proptest! {
        /// JSON made inert reads back as the same value and holds no unsafe character.
        #[test]
        fn json_made_inert_is_the_same_value(text in any::<String>(), key in any::<String>()) {
            let json = serde_json::json!({ key: [text] }).to_string();
            let out = escape_in_json(&json);
            prop_assert!(!out.chars().any(is_unsafe));
            let back: serde_json::Value = serde_json::from_str(&out).unwrap();
            prop_assert_eq!(back, serde_json::from_str::<serde_json::Value>(&json).unwrap());
        }
    }

    fn unescape(text: &str) -> String {
        let mut out = String::new();
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('\\') => out.push('\\'),
                Some('u') => {
                    let hex: String = chars.by_ref().skip(1).take_while(|&c| c != '}').collect();
                    out.push(char::from_u32(u32::from_str_radix(&hex, 16).unwrap()).unwrap());
                }
                other => panic!("bad escape {other:?}"),
            }
        }
        out
    }
}
