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

/// A glob as a tool name is matched against it. Most globs in a policy are literal text
/// around one `*` (`github.*`, `*_delete`): those compare the name's ends, a few instructions
/// where a regex search costs hundreds (a `tools/list` matches every tool it lists); any
/// other runs its regex, which says what every glob means.
pub enum Glob {
    /// `prefix*suffix`, neither holding a metacharacter.
    Affixes {
        prefix: Box<str>,
        suffix: Box<str>,
    },
    Regex(regex::Regex),
}

impl Glob {
    pub fn new(glob: &str) -> Result<Glob, String> {
        let prefix = literal_prefix(glob);
        match glob[prefix.len()..].strip_prefix('*') {
            Some(suffix) if !is_glob(suffix) => Ok(Glob::Affixes {
                prefix: prefix.into(),
                suffix: suffix.into(),
            }),
            _ => compile(glob).map(Glob::Regex),
        }
    }

    #[inline]
    pub fn is_match(&self, name: &str) -> bool {
        match self {
            // The two ends may not overlap: `ab*ba` needs four characters at least.
            Glob::Affixes { prefix, suffix } => {
                let (name, prefix, suffix) =
                    (name.as_bytes(), prefix.as_bytes(), suffix.as_bytes());
                name.len() >= prefix.len() + suffix.len()
                    && same(&name[..prefix.len()], prefix)
                    && same(&name[name.len() - suffix.len()..], suffix)
            }
            Glob::Regex(re) => re.is_match(name),
        }
    }
}

/// Whether `a` and `b` (of one length) hold the same bytes, compared one by one: a glob's
/// ends are a few bytes, where the C library's memcmp cost more in time than a regex search.
#[inline]
fn same(a: &[u8], b: &[u8]) -> bool {
    a.iter().zip(b).all(|(x, y)| x == y)
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
    fn affixes_are_compared_as_text_and_the_rest_run_their_regex() {
        let affixes = |g: &str| matches!(Glob::new(g), Ok(Glob::Affixes { .. }));
        assert!(affixes("github.*") && affixes("*_delete") && affixes("*") && affixes("a*]"));
        assert!(!affixes("a*b*") && !affixes("get_?") && !affixes("rm[0-9]*") && !affixes("a"));
        let g = Glob::new("ab*ba").unwrap();
        assert!(g.is_match("abba") && g.is_match("ab-ba") && !g.is_match("aba"));
        assert!(Glob::new("bad[*").is_err());
    }

    /// `glob` matches each of `names` (and its own text) exactly as its regex does, and is
    /// refused exactly where the regex is.
    fn agrees(glob: &str, names: &[String]) -> Result<(), proptest::test_runner::TestCaseError> {
        match (Glob::new(glob), compile(glob)) {
            (Ok(g), Ok(re)) => {
                for name in names.iter().map(String::as_str).chain([glob]) {
                    let (fast, slow) = (g.is_match(name), re.is_match(name));
                    proptest::prop_assert_eq!(fast, slow, "{:?} on {:?}", glob, name);
                }
            }
            (Err(_), Err(_)) => {}
            (g, re) => proptest::prop_assert!(false, "{glob:?}: {} vs {}", g.is_ok(), re.is_ok()),
        }
        Ok(())
    }

    proptest::proptest! {
        /// Two letters and `*`: ends that overlap (`ab*ba` on `aba`), empty ends, `*` alone.
        #[test]
        fn a_glob_of_few_letters_matches_what_its_regex_matches(
            glob in "[ab*]{0,6}",
            names in proptest::collection::vec("[ab]{0,6}", 1..32),
        ) {
            agrees(&glob, &names)?;
        }

        /// Every metacharacter, classes open and closed, text that is not ASCII, line breaks.
        #[test]
        fn any_glob_matches_what_its_regex_matches(
            glob in "[ab.é*?\\[\\]!-]{0,7}",
            names in proptest::collection::vec("[ab.é\n\\]!-]{0,8}", 1..24),
        ) {
            agrees(&glob, &names)?;
        }
    }

    #[test]
    fn prefixes() {
        assert_eq!(literal_prefix("delete_*"), "delete_");
        assert_eq!(literal_prefix("*"), "");
        assert_eq!(literal_len("a*b?c[xy]"), 3);
        assert!(is_glob("a*") && !is_glob("create-ami"));
    }
}
