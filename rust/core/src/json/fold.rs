//! Object keys as a case-insensitive decoder sees them.
//!
//! Go's `encoding/json` matches keys to struct fields under Unicode simple case folding
//! (`"paramſ"`, with U+017F LONG S, is its `params`; U+212A KELVIN SIGN is its `k`). Two keys
//! are the same to such a decoder when they fold alike, so a body whose keys fold alike can
//! be read two ways and is refused.
//!
//! The folding here maps each character to the simple (one-character) lower case of its
//! simple upper case. That identifies every pair Go's folding does (checked against Go's
//! own tables by the test suite) and a few more (the Turkish dotless ı with `i`), which only
//! makes the check stricter.

use std::borrow::Cow;
use std::sync::OnceLock;

/// The character a case-insensitive decoder would take `c` for.
#[inline]
pub fn fold_char(c: char) -> char {
    if c.is_ascii() {
        return c.to_ascii_lowercase();
    }
    let u = c as u32;
    match plane_folds().get(u as usize) {
        // Each character folds to one of its own plane (a test checks it): the table keeps
        // the low 16 bits.
        Some(&f) => char::from_u32((u & !0xFFFF) | u32::from(f)).unwrap_or(c),
        // Planes 2 to 16 have no case: every character folds to itself (a test checks it).
        None => c,
    }
}

/// The folding from Unicode's case tables: two searches of them per character. Done for every
/// character of a key, it made a body of non-ASCII keys 5 to 6 times as slow to read as
/// serde_json reads it; the table below holds its results.
fn fold_computed(c: char) -> char {
    let upper = single(c.to_uppercase(), c);
    single(upper.to_lowercase(), upper)
}

/// The folding of every character of the two planes with case (the Basic Multilingual Plane,
/// and the Supplementary one: Deseret, Osage, Adlam...), made at the first non-ASCII key
/// (milliseconds, 256 KiB): a key's folding is then one load per character, whatever script
/// its letters come from.
fn plane_folds() -> &'static [u16] {
    static FOLDS: OnceLock<Box<[u16]>> = OnceLock::new();
    FOLDS.get_or_init(|| {
        (0..0x2_0000u32)
            .map(|u| match char::from_u32(u) {
                // Surrogates are no characters; no key holds one.
                None => u as u16,
                Some(c) => fold_computed(c) as u32 as u16,
            })
            .collect()
    })
}

/// The only character of a case mapping, or `c` itself when the mapping is several characters
/// (`ß` → `SS`): simple folding never maps one character to many.
fn single(mut mapped: impl Iterator<Item = char>, c: char) -> char {
    match (mapped.next(), mapped.next()) {
        (Some(m), None) => m,
        _ => c,
    }
}

/// `key` as a case-insensitive decoder reads it; borrowed when the key is its own folding
/// (lower-case ASCII, the usual case), so comparing folded keys allocates only for the rest.
pub fn folded(key: &str) -> Cow<'_, str> {
    // One pass over the bytes finds the usual case: nothing to fold.
    if !key.bytes().any(|b| b >= 0x80 || b.is_ascii_uppercase()) {
        return Cow::Borrowed(key);
    }
    if key.is_ascii() {
        return Cow::Owned(key.to_ascii_lowercase());
    }
    if key.chars().all(|c| fold_char(c) == c) {
        Cow::Borrowed(key)
    } else {
        Cow::Owned(key.chars().map(fold_char).collect())
    }
}

/// `a` and `b` are the same key to a case-insensitive decoder.
pub fn fold_eq(a: &str, b: &str) -> bool {
    if a.is_ascii() && b.is_ascii() {
        return a.eq_ignore_ascii_case(b);
    }
    a.chars().map(fold_char).eq(b.chars().map(fold_char))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_the_characters_go_folds() {
        assert!(fold_eq("paramſ", "params"));
        assert!(fold_eq("\u{212a}ind", "kind"));
        assert!(fold_eq("Å", "\u{212b}"));
        assert!(fold_eq("ΣΑΣ", "σας"));
        assert!(fold_eq("ẞ", "ß"));
        assert!(fold_eq("ARGUMENTS", "arguments"));
        assert!(fold_eq("ıd", "id"));
        // Full folding would make these equal; simple folding, and Go, do not.
        assert!(!fold_eq("ß", "ss"));
        assert!(!fold_eq("ﬁ", "fi"));
        assert!(!fold_eq("name", "nam"));
    }

    proptest::proptest! {
        /// The folded form and the comparison agree, and folding is idempotent.
        #[test]
        fn folded_agrees_with_fold_eq(a in "[a-zA-Z\u{17f}\u{212a}\u{3a3}\u{3c2}\u{3c3}]{0,4}", b in "\\PC{0,6}") {
            proptest::prop_assert_eq!(folded(&a) == folded(&b), fold_eq(&a, &b));
            let once = folded(&a).into_owned();
            proptest::prop_assert_eq!(folded(&once), once.as_str());
            proptest::prop_assert_eq!(matches!(folded(&b), Cow::Borrowed(_)), folded(&b) == b.as_str());
        }
    }

    /// Every character's folding is a fixed point: folding again changes nothing, so equal
    /// folds form classes (the check relies on it to compare by hashing).
    #[test]
    fn folding_is_idempotent_on_every_character() {
        for c in (0..=0x10FFFFu32).filter_map(char::from_u32) {
            let f = fold_char(c);
            assert_eq!(fold_char(f), f, "U+{:04X}", c as u32);
        }
    }

    /// The table is Unicode's folding: every character folds as computed from the case
    /// tables, within its own plane, and those past the second plane to themselves.
    #[test]
    fn the_table_is_the_computed_folding() {
        for c in (0..=0x10FFFFu32).filter_map(char::from_u32) {
            let computed = if c.is_ascii() {
                c.to_ascii_lowercase()
            } else {
                fold_computed(c)
            };
            assert_eq!(fold_char(c), computed, "U+{:04X}", c as u32);
            assert_eq!(computed as u32 >> 16, c as u32 >> 16, "U+{:04X}", c as u32);
            if (c as u32) >= 0x2_0000 {
                assert_eq!(computed, c, "U+{:04X}", c as u32);
            }
        }
    }
}
