//! A resource URI as a policy matches it: in one spelling only.
//!
//! A rule names a resource by its URI (or a glob over URIs), and the server reads the URI
//! its own way: it may resolve `..`, decode `%2e`, fold a host's case or drop a default
//! port. `file:///tmp/../etc/shadow`, `file:///%65tc/shadow`, `FILE:///etc/shadow` and
//! `file://localhost/etc/shadow` all name `/etc/shadow` to some server, while a rule on
//! `file:///etc/*` would see another text. So a URI that has another spelling which an
//! RFC 3986 reader takes as the same resource is refused, never matched as written:
//!
//! - control characters, spaces and backslashes (read as `/` by some);
//! - a scheme with upper case letters (schemes are case-insensitive);
//! - percent escapes that are not `%` and two upper case hex digits, or that stand for a
//!   character that needs none (`%41` is `A`), or for `/`, `\`, `.` or `%` itself;
//! - dot segments (`/./`, `/../`) and empty segments (`//`) in the path;
//! - for `http`, `https` and `file`: upper case in the host, the scheme's default port
//!   written out, and `file://localhost/` (the same as `file:///`).
//!
//! A URI template (`file:///logs/{name}`, in `completion/complete` and template lists) is
//! read the same way; its braces are left as they are.

/// Why a URI is refused, or `Ok` when it has one spelling.
pub fn check(uri: &str) -> Result<(), String> {
    let refuse = |why: &str| Err(format!("the resource URI {why}"));
    if uri.is_empty() {
        return refuse("is empty");
    }
    if let Some(c) = uri.chars().find(|c| c.is_control() || c.is_whitespace()) {
        return refuse(&format!("holds the character {c:?}"));
    }
    if uri.contains('\\') {
        return refuse("holds a backslash, which some servers read as \"/\"");
    }
    let Some((scheme, rest)) = uri.split_once(':') else {
        return refuse("has no scheme");
    };
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    if !scheme_ok {
        return refuse("has no scheme");
    }
    if scheme.bytes().any(|b| b.is_ascii_uppercase()) {
        return refuse("has upper case letters in its scheme, which readers fold");
    }
    escapes(uri)?;
    // The path: after the authority when there is one; the query and fragment are not.
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let path = match rest.strip_prefix("//") {
        Some(after) => {
            let (authority, path) = after.split_at(after.find('/').unwrap_or(after.len()));
            authority_ok(scheme, authority)?;
            path
        }
        None => rest,
    };
    let segments: Vec<&str> = path.split('/').collect();
    for (i, segment) in segments.iter().enumerate() {
        if *segment == "." || *segment == ".." {
            return refuse("has a \".\" or \"..\" segment, which servers resolve");
        }
        // An empty segment is "//": only the path's leading "/" (i == 0) and a trailing
        // one (the last) make one legitimately.
        if segment.is_empty() && i != 0 && i + 1 != segments.len() {
            return refuse("has an empty path segment (\"//\"), which servers may merge");
        }
    }
    Ok(())
}

/// Every `%` starts an escape of two upper case hex digits standing for a character that
/// must be escaped, and none that servers treat as a separator or a dot.
fn escapes(uri: &str) -> Result<(), String> {
    let bytes = uri.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            i += 1;
            continue;
        }
        let hex = bytes.get(i + 1..i + 3).unwrap_or_default();
        let upper_hex = |b: &u8| b.is_ascii_digit() || (b'A'..=b'F').contains(b);
        if hex.len() != 2 || !hex.iter().all(upper_hex) {
            return Err(format!(
                "the resource URI has a \"%\" that is not followed by two upper case hex \
                 digits (at byte {i})"
            ));
        }
        let text = std::str::from_utf8(hex).expect("ASCII");
        let byte = u8::from_str_radix(text, 16).expect("hex digits");
        let unreserved = byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~');
        if unreserved || matches!(byte, b'/' | b'\\' | b'%') {
            return Err(format!(
                "the resource URI escapes {:?} (at byte {i}), which is the same URI unescaped \
                 to some readers",
                char::from(byte)
            ));
        }
        i += 3;
    }
    Ok(())
}

/// The authority of a URI whose scheme folds its host: lower case, no default port, and
/// `file`'s host is empty (not `localhost`).
fn authority_ok(scheme: &str, authority: &str) -> Result<(), String> {
    let default_port = match scheme {
        "http" => "80",
        "https" => "443",
        "file" => "",
        _ => return Ok(()),
    };
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    if host_port.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(
            "the resource URI has upper case letters in its host, which readers fold".into(),
        );
    }
    if scheme == "file" && !authority.is_empty() {
        return Err(
            "the resource URI names a host in a file URI (\"file:///PATH\" is the one spelling)"
                .into(),
        );
    }
    // The port, after the last ':' outside an IPv6 literal's brackets.
    let port = host_port
        .rsplit_once(':')
        .filter(|(host, _)| !host.starts_with('[') || host.ends_with(']'))
        .map(|(_, port)| port);
    match port {
        Some("") => Err("the resource URI has an empty port, the same as none".into()),
        Some(p) if p == default_port || (p.starts_with('0') && p.len() > 1) => Err(format!(
            "the resource URI writes the port {p:?}, the same URI as another spelling"
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn one_spelling_passes() {
        for uri in [
            "file:///etc/hosts",
            "file:///logs/",
            "https://api.example.com/v1/items?id=3#x",
            "https://api.example.com:8443/a",
            "test://static/resource/1",
            "note://Notes/A",
            "file:///logs/{name}",
            "ui://widget/%20spaced",
            "urn:isbn:0451450523",
            "https://[::1]:8080/x",
        ] {
            assert_eq!(check(uri), Ok(()), "{uri}");
        }
    }

    #[test]
    fn other_spellings_are_refused() {
        for (uri, why) in [
            ("", "empty"),
            ("file:///tmp/../etc/shadow", "segment"),
            ("file:///etc/./shadow", "segment"),
            ("file:///etc//shadow", "empty path segment"),
            ("file:///%65tc/shadow", "escapes"),
            ("file:///etc%2Fshadow", "escapes"),
            ("file:///etc%2fshadow", "upper case hex"),
            ("file:///etc/%2E%2E/x", "escapes"),
            ("file:///etc/%25", "escapes"),
            ("file:///etc/%4", "hex"),
            ("FILE:///etc/shadow", "scheme"),
            ("File:///etc/shadow", "scheme"),
            ("file://localhost/etc/shadow", "host in a file URI"),
            ("file://LOCALHOST/etc/shadow", "upper case"),
            ("https://API.example.com/x", "upper case"),
            ("https://api.example.com:443/x", "port"),
            ("http://api.example.com:80/x", "port"),
            ("http://api.example.com:080/x", "port"),
            ("http://api.example.com:/x", "empty port"),
            ("file:///etc\\shadow", "backslash"),
            ("file:///etc/sha dow", "character"),
            ("file:///etc/shadow\n", "character"),
            ("/etc/shadow", "scheme"),
            ("1x:/y", "scheme"),
        ] {
            let refused = check(uri).expect_err(uri);
            assert!(refused.contains(why), "{uri}: {refused}");
        }
    }

    proptest! {
        /// Whatever the text: refused or passed, never a panic; and a passed URI has no dot
        /// segment however its path is split.
        #[test]
        fn any_text_is_read(uri in "\\PC{0,40}") {
            if check(&uri).is_ok() {
                let path = uri.split(['?', '#']).next().unwrap();
                prop_assert!(!path.split('/').any(|s| s == "." || s == ".."));
                prop_assert!(!path.contains('\\'));
            }
        }

        /// A path with a dot or empty segment put anywhere in it is refused.
        #[test]
        fn dot_and_empty_segments_anywhere(
            parts in proptest::collection::vec("[a-z0-9]{1,6}", 1..6),
            at in 0usize..6,
            odd in prop_oneof![Just("."), Just(".."), Just("")],
        ) {
            let mut parts = parts;
            let at = at.min(parts.len() - 1);
            parts.insert(at, odd.to_string());
            let uri = format!("file:///{}", parts.join("/"));
            prop_assert!(check(&uri).is_err(), "{}", uri);
        }

        /// Escaping any character that needs no escape is refused.
        #[test]
        fn escaped_unreserved_characters(c in "[A-Za-z0-9._~-]", prefix in "[a-z]{1,8}") {
            let byte = c.as_bytes()[0];
            let uri = format!("file:///{prefix}/%{byte:02X}");
            prop_assert!(check(&uri).is_err(), "{}", uri);
        }
    }
}
