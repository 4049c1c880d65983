//! A resource URI as a policy matches it: in one spelling only.
//!
//! A rule names a resource by its URI (or a glob over URIs), and the server reads the URI
//! its own way: it may resolve `..`, decode `%2e`, fold a host's case, drop a default port,
//! a fragment or a trailing `/`, or write a raw `é` as `%C3%A9` (WHATWG URL readers: Node's,
//! pydantic's) where another decodes `%C3%A9` to `é` (Go's). `file:///tmp/../etc/shadow`,
//! `file:///%65tc/shadow`, `FILE:///etc/shadow`, `file:/etc/shadow`, `file:///etc/shadow/`
//! and `file://localhost/etc/shadow` all name `/etc/shadow` to some server, while a rule on
//! `file:///etc/*` or `file:///etc/shadow` would see another text. So a URI that has another
//! spelling which a mainstream reader takes as the same resource is refused, never matched
//! as written:
//!
//! - control characters, spaces, backslashes (read as `/` by some), any character outside
//!   ASCII and the ASCII characters a URI must escape (`"<>^|` and the backtick; braces
//!   too, but in a URI template): each has an escaped spelling, which is the one taken;
//! - a scheme with upper case letters (schemes are case-insensitive);
//! - percent escapes that are not `%` and two upper case hex digits, or that stand for a
//!   character that needs none (`%41` is `A`), or for `/`, `\`, `.` or `%` itself;
//! - dot segments (`/./`, `/../`) and empty segments (`//`) in the path;
//! - a fragment (`#...`: no server is sent it) and an empty query (`?` alone);
//! - for the schemes WHATWG URL readers normalize (`http`, `https`, `ws`, `wss`, `ftp`,
//!   `file`): no `//` authority (`file:/etc/shadow`), user info, upper case or a trailing
//!   dot in the host, an IPv4 address in any form but four decimal numbers, an IPv6 address
//!   in any form but its shortest, the scheme's default port, an empty or zero-led port, an
//!   empty path (`https://host` is `https://host/`); and for `file`, a host (`localhost` is
//!   none), a query, or a trailing `/` (a file server opens the same file).
//!
//! A URI template (`file:///logs/{name}`, in `completion/complete` and template lists) is
//! read the same way; its braces are left as they are.

use std::net::Ipv6Addr;

/// Why a URI is refused, or `Ok` when it has one spelling.
pub fn check(uri: &str) -> Result<(), String> {
    read(uri, false)
}

/// [`check`] for a URI template, whose `{` and `}` stand for what a client fills in.
pub fn check_template(uri: &str) -> Result<(), String> {
    read(uri, true)
}

/// The schemes WHATWG URL readers treat specially, with their default ports.
const SPECIAL: [(&str, &str); 6] = [
    ("http", "80"),
    ("https", "443"),
    ("ws", "80"),
    ("wss", "443"),
    ("ftp", "21"),
    ("file", ""),
];

fn read(uri: &str, template: bool) -> Result<(), String> {
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
    let must_escape = |c: char| {
        !c.is_ascii()
            || matches!(c, '"' | '<' | '>' | '^' | '|' | '`')
            || (!template && matches!(c, '{' | '}'))
    };
    if let Some(c) = uri.chars().find(|c| must_escape(*c)) {
        return refuse(&format!(
            "holds {c:?} unescaped, which some readers escape and others read escaped: write \
             it percent-encoded (UTF-8, upper case hex)"
        ));
    }
    if uri.contains('#') {
        return refuse("has a fragment (\"#...\"), which no server is sent");
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
    let (rest, query) = match rest.split_once('?') {
        Some((rest, query)) => (rest, Some(query)),
        None => (rest, None),
    };
    if query == Some("") {
        return refuse("has an empty query (\"?\"), the same URI without it");
    }
    let special = SPECIAL.iter().find(|(s, _)| *s == scheme);
    let path = match (rest.strip_prefix("//"), special) {
        (Some(after), _) => {
            let (authority, path) = after.split_at(after.find('/').unwrap_or(after.len()));
            if let Some((scheme, default_port)) = special {
                authority_ok(scheme, default_port, authority)?;
                if path.is_empty() {
                    return refuse(&format!(
                        "has no path: readers write \"{scheme}://{authority}\" with a \"/\""
                    ));
                }
            }
            path
        }
        (None, Some((scheme, _))) => {
            return refuse(&format!(
                "has no \"//\" after \"{scheme}:\", which readers add (\"{scheme}:/x\" is \
                 \"{scheme}:///x\" or \"{scheme}://x\" to them)"
            ))
        }
        (None, None) => rest,
    };
    if scheme == "file" {
        if query.is_some() {
            return refuse("has a query in a file URI, which a file server does not read");
        }
        if path.len() > 1 && path.ends_with('/') {
            return refuse("ends with \"/\" in a file URI: a file server opens the same file");
        }
    }
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

/// The authority of a URI whose scheme readers normalize: no user info, a host in its one
/// spelling (a file URI's empty), no default, empty or zero-led port.
fn authority_ok(scheme: &str, default_port: &str, authority: &str) -> Result<(), String> {
    let refuse = |why: String| Err(format!("the resource URI {why}"));
    if authority.contains('@') {
        return refuse("has user info in its authority, the same resource without it".into());
    }
    if scheme == "file" {
        if authority.is_empty() {
            return Ok(());
        }
        return refuse("names a host in a file URI (\"file:///PATH\" is the one spelling)".into());
    }
    // The port, after the last ':' outside an IPv6 literal's brackets.
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !host.starts_with('[') || host.ends_with(']') => (host, Some(port)),
        _ => (authority, None),
    };
    match port {
        Some("") => return refuse("has an empty port, the same as none".into()),
        Some(p) if p == default_port || (p.starts_with('0') && p.len() > 1) => {
            return refuse(format!(
                "writes the port {p:?}, the same URI as another spelling"
            ))
        }
        _ => {}
    }
    host_ok(host).map_err(|why| format!("the resource URI's host {why}"))
}

/// A host in its one spelling: lower case, no trailing dot, an IPv4 address as four
/// decimal numbers and an IPv6 address in its shortest form (RFC 5952).
fn host_ok(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("is empty".into());
    }
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err("has upper case letters, which readers fold".into());
    }
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return match v6.parse::<Ipv6Addr>() {
            Ok(addr) if addr.to_string() == v6 => Ok(()),
            Ok(addr) => Err(format!("is written as [{addr}] by readers")),
            Err(_) => Err("is no IPv6 address".into()),
        };
    }
    if host.ends_with('.') {
        return Err("ends with \".\", the same host without it".into());
    }
    // WHATWG readers take a host whose last label is a number (decimal, octal, hex) as an
    // IPv4 address in one of its many forms (`2852039166`, `0xa9.0xfe.0xa9.0xfe`).
    let last = host.rsplit('.').next().unwrap_or_default();
    let numeric = |label: &str| {
        let hex = label.strip_prefix("0x");
        !label.is_empty()
            && (label.bytes().all(|b| b.is_ascii_digit())
                || hex.is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit())))
    };
    if numeric(last) {
        let canonical = host
            .split('.')
            .map(|label| label.parse::<u8>().ok().filter(|n| n.to_string() == label))
            .collect::<Option<Vec<u8>>>()
            .is_some_and(|parts| parts.len() == 4);
        if !canonical {
            return Err("is an IPv4 address in a form other than four decimal numbers".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn one_spelling_passes() {
        for uri in [
            "file:///etc/hosts",
            "file:///",
            "https://api.example.com/v1/items?id=3",
            "https://api.example.com:8443/a",
            "https://api.example.com/",
            "http://169.254.169.254/latest/meta-data/",
            "https://[::1]:8080/x",
            "ftp://files.example.com/x",
            "test://static/resource/1",
            "test://static-text",
            "note://Notes/A",
            "ui://widget/%20spaced",
            "file:///home/jos%C3%A9/x",
            "urn:isbn:0451450523",
            "memo:insights",
        ] {
            assert_eq!(check(uri), Ok(()), "{uri}");
        }
        assert_eq!(check_template("file:///logs/{name}"), Ok(()));
        assert_eq!(check_template("test://template/{id}/data"), Ok(()));
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
            ("file://LOCALHOST/etc/shadow", "host in a file URI"),
            ("file:/etc/shadow", "no \"//\""),
            ("file:etc/shadow", "no \"//\""),
            ("file:///etc/shadow/", "ends with \"/\""),
            ("file:///etc/shadow?x=1", "query in a file URI"),
            ("file:///etc/shadow?", "empty query"),
            ("file:///etc/shadow#x", "fragment"),
            ("file:///etc/shadow#", "fragment"),
            ("file:///home/josé/x", "unescaped"),
            ("file:///srv/a{b}/x", "unescaped"),
            ("https://API.example.com/x", "upper case"),
            ("https://\u{ff41}pi.example.com/admin/x", "unescaped"),
            ("https://api.example.com./admin/x", "ends with"),
            ("https://user@api.example.com/admin/x", "user info"),
            ("https://api.example.com", "no path"),
            ("https://api.example.com:443/x", "port"),
            ("http://api.example.com:80/x", "port"),
            ("http://api.example.com:080/x", "port"),
            ("http://api.example.com:/x", "empty port"),
            ("ws://api.example.com:80/x", "port"),
            ("http://2852039166/latest/meta-data/", "IPv4"),
            ("http://169.254.43518/latest/meta-data/", "IPv4"),
            ("http://0xa9.0xfe.0xa9.0xfe/latest/", "IPv4"),
            ("http://169.254.169.0254/x", "IPv4"),
            ("http://[0:0::1]/x", "written as [::1]"),
            ("http://[::FFFF:1]/x", "upper case"),
            ("ftp://FILES.example.com/x", "upper case"),
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
                prop_assert!(uri.is_ascii());
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

        /// An IPv4 address passes in one form only: four decimal numbers without leading
        /// zeros; the same address as one number, in hex or with a zero-led part is refused.
        #[test]
        fn an_ipv4_address_has_one_spelling(a in any::<[u8; 4]>()) {
            let url = |host: String| format!("http://{host}/x");
            let dotted = format!("{}.{}.{}.{}", a[0], a[1], a[2], a[3]);
            prop_assert!(check(&url(dotted)).is_ok());
            let number = u32::from_be_bytes(a).to_string();
            prop_assert!(check(&url(number)).is_err());
            let hex = format!("0x{:x}.0x{:x}.0x{:x}.0x{:x}", a[0], a[1], a[2], a[3]);
            prop_assert!(check(&url(hex)).is_err());
            let zero = format!("0{}.{}.{}.{}", a[0], a[1], a[2], a[3]);
            prop_assert!(check(&url(zero)).is_err());
        }

        /// An IPv6 address passes only as readers write it.
        #[test]
        fn an_ipv6_address_has_one_spelling(a in any::<[u16; 8]>()) {
            let addr = Ipv6Addr::from(a);
            let url = |host: &str| format!("http://[{host}]/x");
            prop_assert!(check(&url(&addr.to_string())).is_ok());
            let long: Vec<String> = a.iter().map(|s| format!("{s:x}")).collect();
            let long = long.join(":");
            let ok = check(&url(&long)).is_ok();
            prop_assert_eq!(ok, long == addr.to_string(), "{}", long);
        }
    }
}
