//! Tool-name globs: `*` matches any run of characters, `?` one character, `[...]` a class.

/// True when `text` contains a glob metacharacter.
pub fn is_glob(text: &str) -> bool {
    text.contains(['*', '?', '['])
}

/// The literal text before the first metacharacter; globs with a longer one are more specific.
pub fn literal_prefix(text: &str) -> &str {
    match text.find(['*', '?', '[']) {
        Some(i) => &text[..i],
        None => text,
    }
}

/// Number of literal (non-wildcard) characters; breaks ties between equal prefixes.
pub fn literal_len(text: &str) -> usize {
    let mut n = 0;
    let mut in_class = false;
    for c in text.chars() {
        match c {
            '[' if !in_class => in_class = true,
            ']' if in_class => in_class = false,
            '*' | '?' if !in_class => {}
            _ if !in_class => n += 1,
            _ => {}
        }
    }
    n
}

/// Translate a glob into an anchored regular expression.
pub fn to_regex(glob: &str) -> Result<String, String> {
    let mut out = String::with_capacity(glob.len() + 8);
    out.push_str("^(?s:");
    let mut chars = glob.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' => out.push_str(".*"),
            '?' => out.push('.'),
            '[' => {
                let mut class = String::from("[");
                if chars.peek() == Some(&'!') {
                    chars.next();
                    class.push('^');
                }
                let mut closed = false;
                let mut first = true;
                for c in chars.by_ref() {
                    if c == ']' && !first {
                        closed = true;
                        break;
                    }
                    first = false;
                    if c == '\\' || c == '[' || c == '&' || c == '~' {
                        class.push('\\');
                    }
                    class.push(c);
                }
                if !closed {
                    return Err(format!("unclosed '[' in glob {glob:?}"));
                }
                class.push(']');
                out.push_str(&class);
            }
            _ => out.push_str(&regex::escape(c.encode_utf8(&mut [0; 4]))),
        }
    }
    out.push_str(")$");
    Ok(out)
}

/// Compile a glob to a regex.
pub fn compile(glob: &str) -> Result<regex::Regex, String> {
    let re = to_regex(glob)?;
    regex::Regex::new(&re).map_err(|e| format!("invalid glob {glob:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_question_and_class() {
        let g = compile("github.*").unwrap();
        assert!(g.is_match("github.create_issue"));
        assert!(!g.is_match("githubXcreate"));
        assert!(!g.is_match("x.github.a"));
        let q = compile("get_?").unwrap();
        assert!(q.is_match("get_a") && !q.is_match("get_ab"));
        let c = compile("rm[0-9]").unwrap();
        assert!(c.is_match("rm7") && !c.is_match("rmx"));
        let n = compile("rm[!0-9]").unwrap();
        assert!(n.is_match("rmx") && !n.is_match("rm7"));
        assert!(compile("bad[").is_err());
    }

    #[test]
    fn prefixes() {
        assert_eq!(literal_prefix("delete_*"), "delete_");
        assert_eq!(literal_prefix("*"), "");
        assert_eq!(literal_len("a*b?c[xy]"), 3);
        assert!(is_glob("a*") && !is_glob("create-ami"));
    }
}
