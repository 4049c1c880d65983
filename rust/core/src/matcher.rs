//! Tool-name matching compiled once per policy.
//!
//! Exact names are one hash lookup. Globs are grouped by their literal prefix (the text
//! before the first wildcard); a lookup tries the name's own prefixes from longest to
//! shortest, so the cost depends on the name's length and the few distinct prefix lengths,
//! not on how many tools the policy lists. Precedence: exact name, then the glob with the
//! longest literal prefix; ties go to the glob with more literal characters, then to the one
//! written first.

use crate::glob;
use ahash::AHashMap;
use regex::Regex;

/// A compiled glob with its tie-breakers: literal characters, then document order.
type GlobEntry<T> = (Regex, usize, usize, T);

pub struct NameMatcher<T> {
    exact: AHashMap<Box<str>, T>,
    globs: AHashMap<Box<str>, Vec<GlobEntry<T>>>,
    /// Distinct literal-prefix lengths, longest first.
    prefix_lens: Vec<usize>,
}

impl<T: Clone> NameMatcher<T> {
    /// Build from `(name or glob, value)` in document order. Globs must be valid (the policy
    /// loader checked them).
    pub fn new<'a>(
        entries: impl IntoIterator<Item = (&'a str, T)>,
    ) -> Result<NameMatcher<T>, String> {
        let mut exact = AHashMap::new();
        let mut globs: AHashMap<Box<str>, Vec<GlobEntry<T>>> = AHashMap::new();
        for (order, (name, value)) in entries.into_iter().enumerate() {
            if glob::is_glob(name) {
                let re = glob::compile(name)?;
                let prefix = glob::literal_prefix(name);
                globs.entry(prefix.into()).or_default().push((
                    re,
                    glob::literal_len(name),
                    order,
                    value,
                ));
            } else {
                exact.entry(name.into()).or_insert(value);
            }
        }
        for group in globs.values_mut() {
            group.sort_by(|a, b| b.1.cmp(&a.1).then(a.2.cmp(&b.2)));
        }
        let mut prefix_lens: Vec<usize> = globs.keys().map(|p| p.len()).collect();
        prefix_lens.sort_unstable_by(|a, b| b.cmp(a));
        prefix_lens.dedup();
        Ok(NameMatcher {
            exact,
            globs,
            prefix_lens,
        })
    }

    #[inline]
    pub fn lookup(&self, name: &str) -> Option<&T> {
        if let Some(v) = self.exact.get(name) {
            return Some(v);
        }
        for &len in &self.prefix_lens {
            if len > name.len() || !name.is_char_boundary(len) {
                continue;
            }
            if let Some(group) = self.globs.get(&name[..len]) {
                if let Some((_, _, _, v)) = group.iter().find(|(re, ..)| re.is_match(name)) {
                    return Some(v);
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_beats_glob_and_longest_prefix_wins() {
        let m = NameMatcher::new([
            ("*", 0),
            ("delete_*", 1),
            ("delete_user*", 2),
            ("delete_user", 3),
            ("d?lete_*", 4),
        ])
        .unwrap();
        assert_eq!(m.lookup("delete_user"), Some(&3));
        assert_eq!(m.lookup("delete_users"), Some(&2));
        assert_eq!(m.lookup("delete_repo"), Some(&1));
        assert_eq!(m.lookup("dalete_x"), Some(&4));
        assert_eq!(m.lookup("read"), Some(&0));
    }

    #[test]
    fn ties_go_to_more_literals_then_document_order() {
        let m = NameMatcher::new([("a*", 0), ("a*z", 1), ("a*y", 2), ("a?y", 3)]).unwrap();
        assert_eq!(m.lookup("abz"), Some(&1));
        assert_eq!(
            m.lookup("aby"),
            Some(&2),
            "a*y and a?y tie on literals; a*y is first"
        );
        assert_eq!(m.lookup("abc"), Some(&0));
        assert_eq!(NameMatcher::new([("x", 0)]).unwrap().lookup("y"), None);
    }

    #[test]
    fn non_ascii_names_do_not_split_characters() {
        let m = NameMatcher::new([("é*", 0)]).unwrap();
        assert_eq!(m.lookup("éa"), Some(&0));
        assert_eq!(m.lookup("e"), None);
    }
}
