//! Sealed task-list cursors.
//!
//! A `tasks/list` answer is filtered down to the caller's own tasks, but the server's
//! `nextCursor` is its own and may be made of a task's id: passed on as it is, a filtered page
//! could name another caller's task, and a cursor a client makes up (another caller's task
//! id) could tell by the server's answer whether that task exists. So the proxy seals the
//! server's cursor for the caller it was given to (ChaCha20-Poly1305 under a key derived from
//! the sidecar's confirmation key, the caller bound in as associated data), and opens the
//! caller's cursor again before the request goes on. A cursor that does not open for this
//! caller (made up, altered, another caller's, or sealed under another key) is refused
//! without reaching the server, alike whatever it names.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};

/// What a sealed cursor starts with.
pub const PREFIX: &str = "toolgate.cursor.";
const NONCE_BYTES: usize = 12;
const TAG_BYTES: usize = 16;

pub struct CursorKey {
    cipher: ChaCha20Poly1305,
}

impl CursorKey {
    pub fn new(key: [u8; 32]) -> CursorKey {
        CursorKey {
            cipher: ChaCha20Poly1305::new(Key::from_slice(&key)),
        }
    }

    /// `cursor`, the server's, sealed for the caller `binding` names.
    pub fn seal(&self, binding: &[u8], cursor: &str) -> String {
        let mut nonce = [0u8; NONCE_BYTES];
        getrandom::fill(&mut nonce).expect("the system's random source works");
        let sealed = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: cursor.as_bytes(),
                    aad: binding,
                },
            )
            .expect("a cursor within an answer's size seals");
        let mut out = String::with_capacity(PREFIX.len() + 2 * (NONCE_BYTES + sealed.len()));
        out.push_str(PREFIX);
        crate::hex::push(&mut out, &nonce);
        crate::hex::push(&mut out, &sealed);
        out
    }

    /// The server's cursor, if `sealed` was sealed for the caller `binding` names.
    pub fn open(&self, binding: &[u8], sealed: &str) -> Option<String> {
        let hex = sealed.strip_prefix(PREFIX)?;
        if hex.len() % 2 != 0 || hex.len() < 2 * (NONCE_BYTES + TAG_BYTES) {
            return None;
        }
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|i| {
                let pair = hex.get(i..i + 2)?;
                if !pair.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                    return None;
                }
                u8::from_str_radix(pair, 16).ok()
            })
            .collect::<Option<Vec<u8>>>()?;
        let (nonce, sealed) = bytes.split_at(NONCE_BYTES);
        let plain = self
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: binding,
                },
            )
            .ok()?;
        String::from_utf8(plain).ok()
    }
}

/// Whom a cursor is sealed for: the server and the caller's grant (and whether it was
/// verified), each written with its length so no two callers' bindings are alike.
pub fn binding(server: Option<&str>, grant: Option<&str>, verified: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for part in [server, grant] {
        match part {
            None => out.push(0),
            Some(p) => {
                out.push(1);
                out.extend_from_slice(&(p.len() as u64).to_le_bytes());
                out.extend_from_slice(p.as_bytes());
            }
        }
    }
    out.push(u8::from(verified));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_opens_only_for_its_caller_under_its_key() {
        let key = CursorKey::new([7; 32]);
        let alice = binding(Some("s"), Some("alice"), false);
        let sealed = key.seal(&alice, "task-42");
        assert!(
            !sealed.contains("task-42"),
            "the server's cursor is not readable"
        );
        assert_eq!(key.open(&alice, &sealed).as_deref(), Some("task-42"));
        assert_ne!(
            key.seal(&alice, "task-42"),
            sealed,
            "a fresh nonce each time"
        );
        for other in [
            binding(Some("s"), Some("mallory"), false),
            binding(Some("s"), Some("alice"), true),
            binding(Some("t"), Some("alice"), false),
            binding(None, Some("alice"), false),
        ] {
            assert_eq!(key.open(&other, &sealed), None);
        }
        assert_eq!(CursorKey::new([8; 32]).open(&alice, &sealed), None);
        let upper = sealed.to_uppercase().replace("TOOLGATE.CURSOR.", PREFIX);
        for bad in ["", "task-42", PREFIX, &sealed[..sealed.len() - 2], &upper] {
            assert_eq!(key.open(&alice, bad), None, "{bad}");
        }
    }
}
