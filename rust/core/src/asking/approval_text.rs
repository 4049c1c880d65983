//! An approval-gated call's text as approvers are shown it: only tool names MCP allows, and
//! every other field an agent chose cut to a bounded preview (the full text stays in the
//! call's key and digest, never in the approvals store, a webhook or the API).

/// Bytes of a call's canonical arguments shown to approvers, by default.
pub const DEFAULT_PREVIEW_BYTES: usize = 2048;

/// Bytes of a server, session or agent id shown to approvers.
pub const ID_PREVIEW_BYTES: usize = 256;

/// `text` cut to at most `max_bytes` at a character boundary, and whether it was cut.
pub fn preview(text: &str, max_bytes: usize) -> (&str, bool) {
    if text.len() <= max_bytes {
        return (text, false);
    }
    let end = (0..=max_bytes)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    (&text[..end], true)
}

/// An id an agent chose (server, session, agent), as approvers are shown it: cut to
/// [`ID_PREVIEW_BYTES`], a cut one ending in "…".
pub fn shown_id(text: &str) -> String {
    match preview(text, ID_PREVIEW_BYTES) {
        (whole, false) => whole.to_owned(),
        (cut, true) => format!("{cut}…"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// A preview is a prefix of the text, at most `max` bytes, cut only when the text
        /// is longer, and the longest such prefix that ends at a character boundary.
        #[test]
        fn previews_are_bounded_prefixes(text in any::<String>(), max in 0usize..64) {
            let (shown, cut) = preview(&text, max);
            prop_assert!(text.starts_with(shown));
            prop_assert!(shown.len() <= max || shown == text);
            prop_assert_eq!(cut, text.len() > max);
            if cut {
                let next = text[shown.len()..].chars().next().unwrap();
                prop_assert!(shown.len() + next.len_utf8() > max);
            }
        }
    }
}
