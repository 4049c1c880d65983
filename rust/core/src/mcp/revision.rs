//! An MCP protocol revision as the protocol names them: a date, `YYYY-MM-DD` (`2025-06-18`,
//! `2026-07-28`). Read where a request declares it (its params' `_meta`, an `initialize`'s
//! `protocolVersion`, the `MCP-Protocol-Version` header); any other text is no revision, so
//! what is kept of it is ten bytes of digits and dashes, inert wherever it is shown.

use std::fmt;

/// A protocol revision, `YYYY-MM-DD`; revisions compare as their dates do.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Revision([u8; 10]);

impl Revision {
    /// `text` as a revision, if it is one: four digits, a dash, two digits, a dash, two
    /// digits.
    pub fn parse(text: &str) -> Option<Revision> {
        let bytes: [u8; 10] = text.as_bytes().try_into().ok()?;
        let digit = |i: usize| bytes[i].is_ascii_digit();
        let well_formed = (0..10).all(|i| match i {
            4 | 7 => bytes[i] == b'-',
            _ => digit(i),
        });
        well_formed.then_some(Revision(bytes))
    }

    pub fn as_str(&self) -> &str {
        // Digits and dashes only, checked by `parse`.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Debug for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Revision({})", self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn revisions_are_dates_and_compare_as_dates() {
        let old = Revision::parse("2025-06-18").unwrap();
        let new = Revision::parse("2026-07-28").unwrap();
        assert!(old < new);
        assert_eq!(new.as_str(), "2026-07-28");
        for not in [
            "",
            "2026-07-2",
            "2026-07-280",
            "2026_07_28",
            "2026-0728-1",
            "２026-07-28",
        ] {
            assert_eq!(Revision::parse(not), None, "{not:?}");
        }
    }

    proptest! {
        /// Whatever text is offered, a revision read from it is that text, ten bytes of
        /// digits and dashes.
        #[test]
        fn a_revision_is_the_text_it_was_read_from(text in "\\PC{0,12}|[0-9-]{10}") {
            if let Some(revision) = Revision::parse(&text) {
                prop_assert_eq!(revision.as_str(), text.as_str());
                prop_assert!(text.bytes().all(|b| b.is_ascii_digit() || b == b'-'));
            }
        }
    }
}
