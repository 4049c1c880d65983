//! Compiled patterns for `regex`, `not_regex` and `glob` conditions.
//!
//! Policy patterns are small and matched against short argument strings, where the general
//! regex engine's per-search setup (a lazily built DFA and its cache) costs more than the
//! scan. So each pattern is also compiled ahead of time into a dense DFA when that DFA is
//! small; a search it cannot answer (or a pattern too big for it) uses the regex crate.
//! Both give the same answers: linear time, no backtracking. Before either runs, a
//! [`Bigrams`] filter rules out text lacking the words every match contains.

use crate::prefilter::Bigrams;
use regex::Regex;
use regex_automata::dfa::{dense, Automaton};
use regex_automata::Input;
use std::sync::Arc;

/// Largest dense DFA built for one pattern; bigger ones use the regex crate.
const DFA_SIZE_LIMIT: usize = 256 * 1024;

#[derive(Clone, Debug)]
pub struct Pattern {
    regex: Regex,
    dfa: Option<Arc<dense::DFA<Vec<u32>>>>,
    filter: Option<Arc<Bigrams>>,
}

impl Pattern {
    pub fn new(regex: Regex) -> Pattern {
        let dfa = dense::Builder::new()
            .configure(
                dense::Config::new()
                    .dfa_size_limit(Some(DFA_SIZE_LIMIT))
                    .determinize_size_limit(Some(4 * DFA_SIZE_LIMIT)),
            )
            .build(regex.as_str())
            .ok()
            .map(Arc::new);
        let filter = Bigrams::for_pattern(regex.as_str()).map(Arc::new);
        Pattern { regex, dfa, filter }
    }

    /// True if the pattern matches somewhere in `text`.
    #[inline]
    pub fn is_match(&self, text: &str) -> bool {
        if let Some(filter) = &self.filter {
            if !filter.may_match(text.as_bytes()) {
                return false;
            }
        }
        if let Some(dfa) = &self.dfa {
            // `earliest`: stop at the first match state, as is_match does.
            if let Ok(found) = dfa.try_search_fwd(&Input::new(text).earliest(true)) {
                return found.is_some();
            }
        }
        self.regex.is_match(text)
    }

    /// Whether the ahead-of-time DFA is in use (for tests).
    pub fn precompiled(&self) -> bool {
        self.dfa.is_some()
    }

    /// Whether a literal filter runs before the automaton (for tests).
    pub fn prefiltered(&self) -> bool {
        self.filter.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn small_patterns_are_precompiled_and_agree() {
        let p = Pattern::new(Regex::new(r"(^|\s)(rm|mkfs|dd)\s").unwrap());
        assert!(p.precompiled());
        assert!(p.prefiltered());
        assert!(p.is_match("sudo rm -rf /"));
        assert!(!p.is_match("ls -la /var/log"));
        assert!(!p.is_match("format"));
    }

    #[test]
    fn unicode_word_boundaries_fall_back_to_the_regex_crate() {
        // A dense DFA gives up on \b over non-ASCII text; the answer must still be right.
        let p = Pattern::new(Regex::new(r"\bprod\b").unwrap());
        assert!(p.is_match("deploy to prod now"));
        assert!(p.is_match("déploie prod"));
        assert!(!p.is_match("production"));
    }

    proptest! {
        #[test]
        fn agrees_with_the_regex_crate(
            pattern in prop::sample::select(vec![
                r"^[a-z]+$", r"(rm|dd)\s", r"\d{3,}", r"^prod/", r"secret|token|password",
                r"\bprod\b", r"[^\x00-\x7f]", r"(?i)DROP\s+TABLE", r"a.*b.*c", r"^$",
            ]),
            text in "\\PC{0,24}",
        ) {
            let regex = Regex::new(pattern).unwrap();
            prop_assert_eq!(Pattern::new(regex.clone()).is_match(&text), regex.is_match(&text));
        }

        /// Texts made of the patterns' own words, so matches are common and the literal
        /// filter's "maybe" path and its "no" path are both taken.
        #[test]
        fn agrees_with_the_regex_crate_on_near_misses(
            pattern in prop::sample::select(vec![
                r"(^|\s)(rm|mkfs|dd)\s", r"secret|token|password", r"(?i)DROP\s+TABLE",
                r"^prod/", r"\bprod\b", r"a.*bc.*d", r"(ab|cd){2}x",
            ]),
            pieces in prop::collection::vec(
                prop::sample::select(vec![
                    "rm", "mkfs", "dd", " ", "\t", "DROP", "dRoP", "table", "token", "prod",
                    "/", "production", "a", "bc", "d", "ab", "cd", "x", "-rf", "é",
                ]),
                0..8,
            ),
        ) {
            let text = pieces.concat();
            let regex = Regex::new(pattern).unwrap();
            let compiled = Pattern::new(regex.clone());
            prop_assert!(compiled.prefiltered());
            prop_assert_eq!(compiled.is_match(&text), regex.is_match(&text), "{:?}", text);
        }
    }
}
