//! A quick test that rules a pattern out before its automaton runs.
//!
//! Policy regexes mostly look for something dangerous (`(^|\s)(rm|mkfs|dd)\s`) in text that
//! usually does not contain it. Every match of such a pattern contains one of a few literal
//! strings (`rm`, `mkfs`, `dd`); if no text position starts with the first two bytes of any
//! of them, there is no match. Testing that is one table lookup per byte with no dependency
//! between bytes, where a DFA's walk is a chain of dependent loads, so the common "no match"
//! answer costs a fraction of the walk. A "maybe" still runs the automaton: the filter only
//! ever says no when the automaton would.
//!
//! The literals come from the pattern's syntax tree: a finite set covering some part every
//! match must include (an alternation of words, a run of literal characters, a small case
//! class). Patterns without such a part (`^$`, `a*`, `\d{3,}`) get no filter.

use regex_syntax::hir::{Class, Hir, HirKind};

/// Most strings a finite set may hold while it is being built.
const MAX_LITERALS: usize = 256;
/// Longest literal built, in bytes: `a{100000}` must not build a 100 kB string per step.
const MAX_LITERAL_BYTES: usize = 64;
/// Most characters a class may hold to be spelled out (a case pair, `[Ssſ]`, `[xyz]`).
const MAX_CLASS_CHARS: usize = 8;
/// Most distinct two-byte starts worth a filter: beyond this most text would say "maybe".
const MAX_BIGRAMS: usize = 64;
/// The filter's bits: 2^12, 512 bytes, a few cache lines.
const BITS: usize = 1 << 12;
/// Most starts compared directly with vectors; more use the bit table.
const MAX_VECTOR_PAIRS: usize = 8;

/// The two-byte starts of the literals every match contains.
#[derive(Clone, Debug)]
pub struct Bigrams {
    /// The starts themselves when there are few, each byte repeated across a 16-byte lane
    /// so a vector compares 16 text positions at once; empty when there are too many.
    pairs: Vec<[[u8; 16]; 2]>,
    /// Every start, hashed into a bit table: the scan for many starts or without vectors.
    bits: Box<[u64; BITS / 64]>,
}

impl Bigrams {
    /// The filter for `pattern`, if it has a required set of literals of two bytes or more.
    pub fn for_pattern(pattern: &str) -> Option<Bigrams> {
        let hir = regex_syntax::parse(pattern).ok()?;
        let starts = required(&hir)?.iter().map(|l| [l[0], l[1]]).collect();
        Some(Bigrams::from_starts(starts))
    }

    fn from_starts(mut starts: Vec<[u8; 2]>) -> Bigrams {
        starts.sort_unstable();
        starts.dedup();
        let mut bits = Box::new([0u64; BITS / 64]);
        for &[a, b] in &starts {
            let i = index(a, b);
            bits[i / 64] |= 1 << (i % 64);
        }
        let pairs = if starts.len() <= MAX_VECTOR_PAIRS {
            starts.iter().map(|&[a, b]| [[a; 16], [b; 16]]).collect()
        } else {
            Vec::new()
        };
        Bigrams { pairs, bits }
    }

    /// False only if no match of the pattern can be in `text`.
    #[inline]
    pub fn may_match(&self, text: &[u8]) -> bool {
        #[cfg(target_arch = "x86_64")]
        if !self.pairs.is_empty() {
            // SAFETY: SSE2 is part of the x86-64 baseline, so every x86-64 CPU has it.
            return unsafe { vector::any_pair(&self.pairs, text) };
        }
        self.any_in_table(text)
    }

    /// The table scan: one lookup per text position.
    fn any_in_table(&self, text: &[u8]) -> bool {
        let Some((&first, rest)) = text.split_first() else {
            return false;
        };
        let mut prev = first;
        for &b in rest {
            let i = index(prev, b);
            if self.bits[i / 64] & (1 << (i % 64)) != 0 {
                return true;
            }
            prev = b;
        }
        false
    }
}

/// SSE2, which every x86-64 processor has: compare 16 positions with each start at once.
#[cfg(target_arch = "x86_64")]
mod vector {
    use std::arch::x86_64::{
        __m128i, _mm_and_si128, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128,
        _mm_setzero_si128,
    };

    /// Bytes one step reads: 16 positions and the byte after the last.
    const STEP: usize = 17;

    /// True if some `text[i], text[i + 1]` is one of `pairs` (exactly: no false "maybe"
    /// except from the zero bytes that pad a short text).
    #[target_feature(enable = "sse2")]
    pub fn any_pair(pairs: &[[[u8; 16]; 2]], text: &[u8]) -> bool {
        if text.len() < 2 {
            return false;
        }
        if text.len() < STEP {
            // Pad with zeros: a pad byte can only add a "maybe", never hide a pair.
            let mut padded = [0u8; STEP];
            padded[..text.len()].copy_from_slice(text);
            return step(pairs, &padded, 0);
        }
        let last = text.len() - STEP;
        let mut at = 0;
        while at < last {
            if step(pairs, text, at) {
                return true;
            }
            at += 16;
        }
        // The last step may overlap the one before; it covers the final positions.
        step(pairs, text, last)
    }

    /// Positions `at..at + 16`.
    #[target_feature(enable = "sse2")]
    fn step(pairs: &[[[u8; 16]; 2]], text: &[u8], at: usize) -> bool {
        assert!(at + STEP <= text.len());
        // SAFETY: bytes at..at + 17 are inside `text` (asserted); loadu needs no alignment.
        let (here, next) = unsafe {
            let p = text.as_ptr().add(at);
            (load(p), load(p.add(1)))
        };
        let mut hit = _mm_setzero_si128();
        for [a, b] in pairs {
            // SAFETY: each lane array is 16 bytes.
            let (a, b) = unsafe { (load(a.as_ptr()), load(b.as_ptr())) };
            let both = _mm_and_si128(_mm_cmpeq_epi8(here, a), _mm_cmpeq_epi8(next, b));
            hit = _mm_or_si128(hit, both);
        }
        _mm_movemask_epi8(hit) != 0
    }

    /// # Safety
    /// `p` must point to 16 readable bytes.
    #[inline(always)]
    unsafe fn load(p: *const u8) -> __m128i {
        // SAFETY: the caller guarantees 16 readable bytes; unaligned loads are allowed.
        unsafe { _mm_loadu_si128(p.cast()) }
    }
}

/// Where the byte pair `(a, b)` lives in the filter. Different pairs may share a bit (a
/// "maybe" that the automaton then answers); the mix keeps common ASCII pairs apart.
#[inline(always)]
fn index(a: u8, b: u8) -> usize {
    ((a as usize) << 4 ^ b as usize) & (BITS - 1)
}

/// A set of literals every match of `hir` contains, usable by the filter: every literal
/// at least two bytes long and few distinct starts. The smallest-looking set wins.
fn required(hir: &Hir) -> Option<Vec<Vec<u8>>> {
    let usable = |set: Vec<Vec<u8>>| -> Option<Vec<Vec<u8>>> {
        let ok = !set.is_empty()
            && set.iter().all(|l| l.len() >= 2)
            && distinct_starts(&set) <= MAX_BIGRAMS;
        ok.then_some(set)
    };
    if let Some(set) = exact(hir) {
        if let Some(set) = usable(set) {
            return Some(set);
        }
    }
    match hir.kind() {
        HirKind::Capture(c) => required(&c.sub),
        HirKind::Repetition(r) if r.min >= 1 => required(&r.sub),
        // Every match takes one branch, so one of the branches' literals is in it.
        HirKind::Alternation(branches) => {
            let mut union = Vec::new();
            for branch in branches {
                union.extend(required(branch)?);
            }
            union.sort();
            union.dedup();
            usable(union)
        }
        // Every match includes a match of each part, and of each run of adjacent parts.
        HirKind::Concat(parts) => {
            let mut candidates: Vec<Vec<Vec<u8>>> = parts.iter().filter_map(required).collect();
            candidates.extend(runs(parts).into_iter().filter_map(usable));
            candidates
                .into_iter()
                .min_by_key(|set| distinct_starts(set))
        }
        _ => None,
    }
}

/// The finite sets of maximal runs of adjacent parts that each match finitely many strings,
/// split where a run's set would grow too large.
fn runs(parts: &[Hir]) -> Vec<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    let mut current: Option<Vec<Vec<u8>>> = None;
    for part in parts {
        match exact(part) {
            Some(set) => {
                current = Some(match current.take() {
                    None => set,
                    Some(prefix) => match product(&prefix, &set) {
                        Some(p) => p,
                        None => {
                            out.push(prefix);
                            set
                        }
                    },
                })
            }
            None => out.extend(current.take()),
        }
    }
    out.extend(current);
    out
}

/// Every string `hir` can match, when they are few: a superset is fine (a look-around
/// matches the empty string here, which only widens the set).
fn exact(hir: &Hir) -> Option<Vec<Vec<u8>>> {
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => Some(vec![Vec::new()]),
        HirKind::Literal(lit) => Some(vec![lit.0.to_vec()]),
        HirKind::Class(Class::Unicode(class)) => small_class(
            class
                .ranges()
                .iter()
                .map(|r| (r.start() as u32, r.end() as u32)),
            |c| char::from_u32(c).map(|c| c.to_string().into_bytes()),
        ),
        HirKind::Class(Class::Bytes(class)) => small_class(
            class
                .ranges()
                .iter()
                .map(|r| (r.start() as u32, r.end() as u32)),
            |b| Some(vec![b as u8]),
        ),
        HirKind::Capture(c) => exact(&c.sub),
        HirKind::Repetition(r) if Some(r.min) == r.max => {
            let sub = exact(&r.sub)?;
            let mut set = vec![Vec::new()];
            for _ in 0..r.min {
                set = product(&set, &sub)?;
            }
            Some(set)
        }
        HirKind::Concat(parts) => {
            let mut set = vec![Vec::new()];
            for part in parts {
                set = product(&set, &exact(part)?)?;
            }
            Some(set)
        }
        HirKind::Alternation(branches) => {
            let mut union = Vec::new();
            for branch in branches {
                union.extend(exact(branch)?);
                if union.len() > MAX_LITERALS {
                    return None;
                }
            }
            Some(union)
        }
        HirKind::Repetition(_) => None,
    }
}

/// The members of a class of at most MAX_CLASS_CHARS, each spelled as its bytes.
fn small_class(
    ranges: impl Iterator<Item = (u32, u32)> + Clone,
    spell: impl Fn(u32) -> Option<Vec<u8>>,
) -> Option<Vec<Vec<u8>>> {
    let count: u64 = ranges.clone().map(|(a, b)| u64::from(b - a) + 1).sum();
    (count <= MAX_CLASS_CHARS as u64)
        .then(|| ranges.flat_map(|(a, b)| a..=b).filter_map(spell).collect())
}

/// Each string of `a` followed by each of `b`, if there are not too many.
fn product(a: &[Vec<u8>], b: &[Vec<u8>]) -> Option<Vec<Vec<u8>>> {
    if a.len().saturating_mul(b.len()) > MAX_LITERALS {
        return None;
    }
    let longest = |set: &[Vec<u8>]| set.iter().map(Vec::len).max().unwrap_or(0);
    if longest(a) + longest(b) > MAX_LITERAL_BYTES {
        return None;
    }
    Some(
        a.iter()
            .flat_map(|x| b.iter().map(move |y| [x.as_slice(), y].concat()))
            .collect(),
    )
}

fn distinct_starts(set: &[Vec<u8>]) -> usize {
    let mut starts: Vec<[u8; 2]> = set.iter().map(|l| [l[0], l[1]]).collect();
    starts.sort_unstable();
    starts.dedup();
    starts.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use regex::Regex;

    fn literals(pattern: &str) -> Option<Vec<String>> {
        let hir = regex_syntax::parse(pattern).unwrap();
        let mut set: Vec<String> = required(&hir)?
            .into_iter()
            .map(|l| String::from_utf8_lossy(&l).into_owned())
            .collect();
        set.sort();
        Some(set)
    }

    #[test]
    fn finds_the_words_a_match_must_contain() {
        assert_eq!(
            literals(r"(^|\s)(rm|mkfs|dd)\s").unwrap(),
            ["dd", "mkfs", "rm"]
        );
        assert_eq!(literals(r"^prod/").unwrap(), ["prod/"]);
        assert_eq!(
            literals(r"secret|token|password").unwrap(),
            ["password", "secret", "token"]
        );
        assert_eq!(literals(r"a.*bc.*d").unwrap(), ["bc"]);
        // A case-insensitive word is a few spellings.
        assert_eq!(literals(r"(?i)ab").unwrap(), ["AB", "Ab", "aB", "ab"]);
    }

    #[test]
    fn patterns_without_required_words_get_no_filter() {
        for pattern in [
            r"^$",
            r"a*",
            r"\d{3,}",
            r"[a-z]+",
            r"x|yz",
            r"(?i)DROP\s+TABLE|q",
        ] {
            assert!(literals(pattern).is_none(), "{pattern}");
            assert!(Bigrams::for_pattern(pattern).is_none(), "{pattern}");
        }
    }

    #[test]
    fn long_repetitions_stop_growing_literals() {
        // Spelled out, this would be a 100 kB literal built one byte per step.
        assert!(literals(r"x{100000}").is_none());
        assert_eq!(literals(r"x{100000}ab").unwrap(), ["ab"]);
        assert_eq!(literals(r"ab{2}").unwrap(), ["abb"]);
    }

    #[test]
    fn says_no_only_when_the_words_are_absent() {
        let f = Bigrams::for_pattern(r"(^|\s)(rm|mkfs|dd)\s").unwrap();
        assert!(!f.may_match(b"ls -la /var/log/nginx"));
        assert!(!f.may_match(b""));
        assert!(!f.may_match(b"r"));
        assert!(f.may_match(b"sudo rm -rf /"));
        assert!(f.may_match(b"dd"));
        assert!(f.may_match(b"xmkfs"));
    }

    /// Patterns the property test draws from: words, case folding, classes, repetitions,
    /// look-arounds, Unicode, and patterns with no filter.
    const PATTERNS: &[&str] = &[
        r"(^|\s)(rm|mkfs|dd)\s",
        r"(?i)DROP\s+TABLE",
        r"secret|token|password",
        r"^prod/",
        r"\bprod\b",
        r"a.*bc.*d",
        r"(ab|cd){2}x",
        r"[xy]z(q|rs)+",
        r"(?i)straße",
        r"ſk|Kelvin",
        r"é+t",
        r"(?-u:\xff)\x41",
        r"\d{3,}",
        r"x|yz",
    ];

    fn naive(starts: &[[u8; 2]], text: &[u8]) -> bool {
        text.windows(2).any(|w| starts.contains(&[w[0], w[1]]))
    }

    proptest! {
        /// Both scans find every start that is there; the vector scan finds nothing else.
        #[test]
        fn scans_find_the_starts_that_are_there(
            // Nonzero bytes, mostly ones the text uses: a zero pad byte must never match.
            starts in prop::collection::vec(
                prop::array::uniform2(prop::sample::select(b"abrmd \xc3\xa9xyz".to_vec())),
                1..12,
            ),
            text in prop::collection::vec(prop::sample::select(b"abrmd \x00\xc3\xa9".to_vec()), 0..70),
            extra in prop::collection::vec(any::<u8>(), 0..3),
        ) {
            let mut text = text;
            text.extend(extra);
            let filter = Bigrams::from_starts(starts.clone());
            let there = naive(&starts, &text);
            prop_assert_eq!(filter.may_match(&text), there || (filter.pairs.is_empty() && filter.any_in_table(&text)));
            if there {
                prop_assert!(filter.any_in_table(&text));
            }
        }

        /// One start alone in text made of other bytes is found wherever it is, so every
        /// position of a vector step, and the overlapping last step, are covered.
        #[test]
        fn finds_a_lone_start_at_any_position(
            starts in prop::collection::vec(
                prop::array::uniform2(prop::sample::select(b"abrmdxyz\xc3\xa9".to_vec())),
                1..12,
            ),
            text in prop::collection::vec(prop::sample::select(b"-_.0 \x00".to_vec()), 0..70),
            which in any::<prop::sample::Index>(),
            at in any::<prop::sample::Index>(),
        ) {
            let filter = Bigrams::from_starts(starts.clone());
            prop_assert!(!filter.may_match(&text) || filter.pairs.is_empty());
            let mut text = text;
            let at = at.index(text.len() + 1);
            text.splice(at..at, *which.get(&starts));
            prop_assert!(filter.may_match(&text), "start at {at} of {}", text.len());
        }

        /// The filter never says no to a text the regex matches, and the words it picked
        /// occur in every match found.
        #[test]
        fn never_rules_out_a_match(
            pattern in prop::sample::select(PATTERNS),
            pieces in prop::collection::vec(
                prop::sample::select(vec![
                    "rm", "mkfs", "dd", " ", "\t", "DROP", "drop", "TaBlE", "table", "secret",
                    "prod/", "prod", "a", "bc", "d", "ab", "cd", "x", "y", "z", "q", "rs", "ß",
                    "SS", "strasse", "STRAẞE", "ſ", "k", "K", "é", "t", "A", "123", "\n",
                ]),
                0..8,
            ),
            noise in "\\PC{0,6}",
        ) {
            let text = format!("{}{}", pieces.concat(), noise);
            let Ok(regex) = Regex::new(pattern) else { return Ok(()) };
            if let Some(filter) = Bigrams::for_pattern(pattern) {
                if regex.is_match(&text) {
                    prop_assert!(filter.may_match(text.as_bytes()), "{pattern:?} on {text:?}");
                }
            }
        }
    }
}
