//! Tool-name matching compiled once per policy.
//!
//! Exact names are one hash lookup. Globs are grouped by their literal prefix (the text
//! before the first wildcard); a lookup tries the name's own prefixes from longest to
//! shortest, so the cost depends on the name's length and the few distinct prefix lengths,
//! not on how many tools the policy lists. Precedence: exact name, then the glob with the
//! longest literal prefix; ties go to the glob with more literal characters, then to the one
//! written first.

use super::glob::{self, Glob};
use ahash::AHashMap;

/// A compiled glob with its tie-breakers (literal characters, then document order), and the
/// glob as written.
type GlobEntry<T> = (Glob, usize, usize, T, Box<str>);

/// A name or glob that matched, and where it stands in the precedence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found<'a, T> {
    pub value: &'a T,
    /// The name or glob as written.
    pub pattern: &'a str,
    pub kind: MatchKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchKind {
    /// The exact name: beats every glob.
    Exact,
    /// A glob: the longer `prefix` (literal text before the first wildcard) wins, then more
    /// `literals`, then the lower `order` (written first).
    Glob {
        prefix: usize,
        literals: usize,
        order: usize,
    },
}

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
                let re = Glob::new(name)?;
                let prefix = glob::literal_prefix(name);
                globs.entry(prefix.into()).or_default().push((
                    re,
                    glob::literal_len(name),
                    order,
                    value,
                    name.into(),
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
        self.find(name).map(|f| f.value)
    }

    /// The entry that wins for `name`, with what it is.
    #[inline]
    pub fn find(&self, name: &str) -> Option<Found<'_, T>> {
        if let Some((pattern, value)) = self.exact.get_key_value(name) {
            return Some(Found {
                value,
                pattern,
                kind: MatchKind::Exact,
            });
        }
        for &len in &self.prefix_lens {
            if len > name.len() || !name.is_char_boundary(len) {
                continue;
            }
            if let Some(group) = self.globs.get(&name[..len]) {
                if let Some(entry) = group.iter().find(|(re, ..)| re.is_match(name)) {
                    return Some(glob_found(entry, len));
                }
            }
        }
        None
    }

    /// Every entry that matches `name`, the winner first, then in precedence order: for
    /// explaining why the winner won (`find` is what decides).
    pub fn matching(&self, name: &str) -> Vec<Found<'_, T>> {
        let mut out: Vec<Found<'_, T>> = Vec::new();
        if let Some((pattern, value)) = self.exact.get_key_value(name) {
            out.push(Found {
                value,
                pattern,
                kind: MatchKind::Exact,
            });
        }
        let mut globs: Vec<Found<'_, T>> = self
            .globs
            .iter()
            .flat_map(|(prefix, group)| group.iter().map(|entry| (entry, prefix.len())))
            .filter(|((re, ..), _)| re.is_match(name))
            .map(|(entry, prefix)| glob_found(entry, prefix))
            .collect();
        globs.sort_by_key(|f| match f.kind {
            MatchKind::Glob {
                prefix,
                literals,
                order,
            } => (
                std::cmp::Reverse(prefix),
                std::cmp::Reverse(literals),
                order,
            ),
            MatchKind::Exact => (std::cmp::Reverse(usize::MAX), std::cmp::Reverse(0), 0),
        });
        out.extend(globs);
        out
    }
}

#[inline]
fn glob_found<T>(entry: &GlobEntry<T>, prefix: usize) -> Found<'_, T> {
    let (_, literals, order, value, pattern) = entry;
    Found {
        value,
        pattern,
        kind: MatchKind::Glob {
            prefix,
            literals: *literals,
            order: *order,
        },
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
