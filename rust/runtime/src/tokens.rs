//! Bearer tokens files (`--admin-tokens`, `--authzen-tokens`): `NAME TOKEN` per line, `#`
//! comments and blank lines ignored. One reader for both: the admin listener (Python) asks
//! this one through the extension.

use sha2::{Digest, Sha256};
use std::path::Path;

/// The fewest characters a token has.
pub const MIN_TOKEN_CHARS: usize = 16;

/// A file's tokens, `(name, token)` in the file's order; the error names the file and line:
/// a line that is not two words, a token shorter than [`MIN_TOKEN_CHARS`], a name or token
/// given twice, or no token at all.
pub fn load(path: &Path) -> Result<Vec<(String, String)>, String> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{shown}: {e}"))?;
    // An editor's byte-order mark is not part of the first line (it would hide a comment).
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut tokens: Vec<(String, String)> = Vec::new();
    for (number, line) in text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [name, token] = parts[..] else {
            return Err(format!("{shown}:{number}: expected NAME TOKEN"));
        };
        // Printable ASCII only: nothing invisible that a reader of the file could not see.
        if !(name.bytes().chain(token.bytes())).all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "{shown}:{number}: a name and a token are printable ASCII characters"
            ));
        }
        if token.chars().count() < MIN_TOKEN_CHARS {
            return Err(format!(
                "{shown}:{number}: a token has at least {MIN_TOKEN_CHARS} characters"
            ));
        }
        if tokens.iter().any(|(n, t)| n == name || t == token) {
            return Err(format!(
                "{shown}:{number}: {name} or its token is given twice"
            ));
        }
        tokens.push((name.to_owned(), token.to_owned()));
    }
    if tokens.is_empty() {
        return Err(format!("{shown}: no tokens"));
    }
    Ok(tokens)
}

/// Tokens kept as their SHA-256 digests, matched in time that does not depend on where a
/// presented token first differs from a kept one.
#[derive(Clone)]
pub struct TokenDigests(Vec<(String, [u8; 32])>);

impl TokenDigests {
    pub fn new(tokens: &[(String, String)]) -> TokenDigests {
        TokenDigests(
            tokens
                .iter()
                .map(|(name, token)| (name.clone(), Sha256::digest(token.as_bytes()).into()))
                .collect(),
        )
    }

    /// The name of the token `presented` is, if it is one.
    pub fn name_of(&self, presented: &[u8]) -> Option<&str> {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        let mut found = None;
        // Every kept digest compared in full.
        for (name, kept) in &self.0 {
            let same = kept
                .iter()
                .zip(digest.iter())
                .fold(0u8, |diff, (a, b)| diff | (a ^ b))
                == 0;
            if same {
                found = Some(name.as_str());
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> (tempdir::Dir, std::path::PathBuf) {
        let dir = tempdir::Dir::new();
        let path = dir.0.join("tokens");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                let mut name = [0u8; 8];
                getrandom::fill(&mut name).unwrap();
                let hex = toolgate_core::hex::lower(&name);
                let path = std::env::temp_dir().join(format!("toolgate-tokens-{hex}"));
                std::fs::create_dir(&path).unwrap();
                Dir(path)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn reads_names_and_tokens_and_refuses_each_malformed_file() {
        let (_d, path) = file("# pep\n\nalice 0123456789abcdef\n  bob\tfedcba9876543210  \n");
        assert_eq!(
            load(&path).unwrap(),
            [
                ("alice".to_owned(), "0123456789abcdef".to_owned()),
                ("bob".to_owned(), "fedcba9876543210".to_owned())
            ]
        );
        for (text, why) in [
            ("alice\n", ":1: expected NAME TOKEN"),
            ("a b c\n", ":1: expected NAME TOKEN"),
            ("alice short\n", ":1: a token has at least 16"),
            (
                "a 0123456789abcdef\na 0123456789abcdeX\n",
                ":2: a or its token",
            ),
            (
                "a 0123456789abcdef\nb 0123456789abcdef\n",
                ":2: b or its token",
            ),
            ("# none\n", ": no tokens"),
            (
                "al\u{200b}ice 0123456789abcdef\n",
                ":1: a name and a token are printable",
            ),
            ("\u{feff}#old 0123456789abcdef\n", ": no tokens"),
        ] {
            let (_d, path) = file(text);
            let err = load(&path).unwrap_err();
            assert!(err.contains(why), "{text:?}: {err}");
        }
    }

    #[test]
    fn a_token_is_known_by_its_digest_only_when_it_is_the_whole_token() {
        let kept = TokenDigests::new(&[
            ("alice".into(), "0123456789abcdef".into()),
            ("bob".into(), "fedcba9876543210".into()),
        ]);
        assert_eq!(kept.name_of(b"0123456789abcdef"), Some("alice"));
        assert_eq!(kept.name_of(b"fedcba9876543210"), Some("bob"));
        for wrong in [
            &b""[..],
            b"0123456789abcde",
            b"0123456789abcdef ",
            b"0123456789ABCDEF",
        ] {
            assert_eq!(kept.name_of(wrong), None, "{wrong:?}");
        }
    }
}
