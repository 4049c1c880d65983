//! An approval-gated call's text as approvers are shown it: only tool names MCP allows, and
//! every other field an agent chose cut to a bounded preview (the full text stays in the
//! call's key and digest, never in the approvals store, a webhook or the API).

/// Bytes of a call's canonical arguments shown to approvers, by default.
pub const DEFAULT_PREVIEW_BYTES: usize = 2048;

/// Bytes of a server, session or agent id shown to approvers.
pub const ID_PREVIEW_BYTES: usize = 256;

/// Longest tool name MCP allows.
pub const MAX_TOOL_NAME: usize = 128;

/// Whether `name` is a tool name as the MCP specification (revision 2025-11-25, "Tool
/// names") asks for: "Tool names SHOULD be between 1 and 128 characters in length
/// (inclusive)" and "The following SHOULD be the only allowed characters: uppercase and
/// lowercase ASCII letters (A-Z, a-z), digits (0-9), underscore (_), dash (-), and dot (.)".
/// A call naming any other tool never opens an approval: a person would read its name.
pub fn is_mcp_tool_name(name: &str) -> bool {
    (1..=MAX_TOOL_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

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

    #[test]
    fn tool_names_are_those_mcp_allows() {
        for ok in [
            "getUser",
            "DATA_EXPORT_v2",
            "admin.tools.list",
            "a",
            &"x".repeat(128),
        ] {
            assert!(is_mcp_tool_name(ok), "{ok}");
        }
        for bad in [
            "",
            &"x".repeat(129),
            "list\n\u{1b}[2Kok",
            "a b",
            "a,b",
            "user/update",
            "naïve",
            "<!channel>",
            "a`b",
        ] {
            assert!(!is_mcp_tool_name(bad), "{bad:?}");
        }
    }

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
