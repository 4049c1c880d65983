//! The user confirms a call in their own MCP client (MCP 2026-07-28's input-required
//! rounds): the question toolgate asks, the token that ties the answer to the call, and the
//! answer read back.
//!
//! The token rides as the key of toolgate's form in the result's `inputRequests`; the client
//! echoes that key in the retry's `inputResponses`. It is deliberately not `requestState`: a
//! confirmed retry goes on to the server as it was sent (Envoy's ext_authz cannot edit a
//! body), and a server refuses a `requestState` it did not mint (the official SDK's does,
//! with -32602), while it ignores an input response it did not ask for.
//!
//! A token is `toolgate.confirm.` and 80 lowercase hex digits: a random nonce (16 bytes),
//! the expiry (ms since the epoch, 8 bytes) and an HMAC-SHA-256 (cut to 16 bytes), under
//! the sidecar's key, over the nonce, the expiry and the call's binding: the policy's
//! revision, the rule, the server, the tool, the caller (grant, session, agent) and the
//! digest of the arguments' canonical JSON. Any change to any of them, or to the token,
//! fails the MAC. That the nonce is used once is the engine's to enforce (it is counted in
//! the counter store with the call's limits).

use crate::json::arg_json;
use crate::json::args::ArgValue;
use crate::policy::arg_path::walk;
use crate::policy::Piece;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// What every token starts with: how toolgate finds its own answer among a retry's.
pub const TOKEN_PREFIX: &str = "toolgate.confirm.";
const NONCE_BYTES: usize = 16;
const MAC_BYTES: usize = 16;
const TOKEN_BYTES: usize = NONCE_BYTES + 8 + MAC_BYTES;
/// The first MCP revision whose clients take an input-required result.
pub const FIRST_REVISION: &str = "2026-07-28";
/// The form's one field: a yes/no the user ticks.
pub const FIELD: &str = "approve";
/// Longest text one `{args.…}` placeholder puts in a question, before escaping.
pub const MAX_VALUE_BYTES: usize = 256;

/// The key toolgate's tokens are signed with.
#[derive(Clone)]
pub struct ConfirmKey {
    mac: Hmac<Sha256>,
}

impl ConfirmKey {
    /// Derived from the deployment's secret, so that replicas sharing it accept each
    /// other's tokens.
    pub fn derived(secret: &[u8]) -> ConfirmKey {
        let mut derive =
            <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
        derive.update(b"toolgate confirmation key v1");
        let key: [u8; 32] = derive.finalize().into_bytes().into();
        ConfirmKey {
            mac: Hmac::new_from_slice(&key).expect("HMAC takes any key length"),
        }
    }

    /// A key for another use (`label` says which), derived from this one: shared as this
    /// one is, by replicas given the same secret.
    pub fn derive(&self, label: &[u8]) -> [u8; 32] {
        let mut mac = self.mac.clone();
        mac.update(b"toolgate derived key\0");
        mac.update(label);
        mac.finalize().into_bytes().into()
    }

    /// A random key: tokens only this process accepts.
    pub fn random() -> ConfirmKey {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).expect("the system's random source works");
        ConfirmKey::derived(&secret)
    }

    /// The MAC over what a token holds and the call it is for.
    fn keyed(
        &self,
        nonce: &[u8; NONCE_BYTES],
        expires_ms: u64,
        binding: &[u8; 32],
    ) -> Hmac<Sha256> {
        let mut mac = self.mac.clone();
        mac.update(b"toolgate confirmation\0");
        mac.update(nonce);
        mac.update(&expires_ms.to_be_bytes());
        mac.update(binding);
        mac
    }

    /// A new token for the call `binding` describes, valid until `expires_ms`.
    pub fn mint(&self, binding: &[u8; 32], expires_ms: u64) -> String {
        let mut nonce = [0u8; NONCE_BYTES];
        getrandom::fill(&mut nonce).expect("the system's random source works");
        self.token(nonce, expires_ms, binding)
    }

    fn token(&self, nonce: [u8; NONCE_BYTES], expires_ms: u64, binding: &[u8; 32]) -> String {
        let tag: [u8; 32] = self
            .keyed(&nonce, expires_ms, binding)
            .finalize()
            .into_bytes()
            .into();
        let mut raw = Vec::with_capacity(TOKEN_BYTES);
        raw.extend_from_slice(&nonce);
        raw.extend_from_slice(&expires_ms.to_be_bytes());
        raw.extend_from_slice(&tag[..MAC_BYTES]);
        let mut out = String::with_capacity(TOKEN_PREFIX.len() + 2 * TOKEN_BYTES);
        out.push_str(TOKEN_PREFIX);
        for b in raw {
            out.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
            out.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
        }
        out
    }

    /// The token's nonce and expiry if it was minted by this key for this very call.
    pub fn verify(&self, token: &str, binding: &[u8; 32]) -> Option<Minted> {
        let raw = parse_hex(token.strip_prefix(TOKEN_PREFIX)?)?;
        let nonce: [u8; NONCE_BYTES] = raw[..NONCE_BYTES].try_into().ok()?;
        let expires_ms = u64::from_be_bytes(raw[NONCE_BYTES..NONCE_BYTES + 8].try_into().ok()?);
        // Compared in constant time, by the MAC's own check.
        self.keyed(&nonce, expires_ms, binding)
            .verify_truncated_left(&raw[NONCE_BYTES + 8..])
            .ok()?;
        Some(Minted { nonce, expires_ms })
    }
}

/// What a valid token holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Minted {
    pub nonce: [u8; NONCE_BYTES],
    pub expires_ms: u64,
}

/// Lowercase hex only, of exactly a token's length: one spelling per token.
fn parse_hex(text: &str) -> Option<[u8; TOKEN_BYTES]> {
    let digits = text.as_bytes();
    if digits.len() != 2 * TOKEN_BYTES {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; TOKEN_BYTES];
    for (i, pair) in digits.chunks_exact(2).enumerate() {
        out[i] = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

/// What a call is, for its token: everything a changed retry could change. `None` when the
/// arguments are not JSON (such a call cannot be confirmed).
/// `caller`: the call's grant, session and agent.
pub fn binding<A: ArgValue>(
    revision: &str,
    rule: &str,
    server: Option<&str>,
    tool: &str,
    caller: [Option<&str>; 3],
    args: Option<&A>,
) -> Option<[u8; 32]> {
    let arguments = match args {
        Some(a) => Some(arg_json::digest(a)?),
        None => None,
    };
    let mut h = Sha256::new();
    h.update(b"toolgate confirmation binding v1\0");
    let parts = [Some(revision), Some(rule), server, Some(tool)];
    for part in parts.into_iter().chain(caller) {
        // Length-prefixed, and absent told apart from empty.
        match part {
            Some(p) => {
                h.update([1]);
                h.update((p.len() as u64).to_be_bytes());
                h.update(p.as_bytes());
            }
            None => h.update([0]),
        }
    }
    match arguments {
        Some(d) => {
            h.update([1]);
            h.update(d);
        }
        None => h.update([0]),
    }
    Some(h.finalize().into())
}

/// What the client says of itself and of toolgate's question, read from a `tools/call`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Confirming {
    /// The client can be asked: it speaks MCP 2026-07-28 or later and declared form
    /// elicitation, in the request's own `_meta` (that revision has no sessions).
    pub can_ask: bool,
    /// Its answer to toolgate's question, when the call carries one.
    pub answer: Option<Answer>,
}

/// The user's answer to toolgate's question, as the retry carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The key the answer came under: toolgate's token.
    pub token: String,
    /// The user accepted the form and ticked yes.
    pub yes: bool,
}

/// The question a user reads: the policy's text with each argument's value, strings as
/// they are and anything else as JSON, at most [`MAX_VALUE_BYTES`] each (`…` past it), and
/// every character a display could act on written `\u{HEX}`. A missing argument reads
/// `(none)`.
pub fn render<A: ArgValue + Clone>(pieces: &[Piece], args: Option<&A>) -> String {
    let mut out = String::new();
    for piece in pieces {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Arg(path) => {
                let value = args.and_then(|a| walk(a, &path.segments));
                match value {
                    None => out.push_str("(none)"),
                    Some(v) => out.push_str(&shown(&v)),
                }
            }
        }
    }
    out
}

/// The question a rule without a `message` asks: the tool, and the arguments as JSON (at most
/// [`MAX_ARGUMENTS_BYTES`], saying how much more there was), inert. The tool's name is one MCP
/// allows (checked before anyone is asked).
pub fn default_question<A: ArgValue + Clone>(tool: &str, args: Option<&A>) -> String {
    let arguments = match args {
        None => "no arguments".to_owned(),
        Some(a) => cut_inert(json_text(a), MAX_ARGUMENTS_BYTES),
    };
    format!("Allow the tool \"{tool}\" to run with {arguments}?")
}

/// Longest text of the arguments a default question shows, before escaping.
pub const MAX_ARGUMENTS_BYTES: usize = 1024;

fn shown<A: ArgValue>(value: &A) -> String {
    let text = match value.as_str() {
        Some(s) => s.to_owned(),
        None => json_text(value),
    };
    cut_inert(text, MAX_VALUE_BYTES)
}

/// `value` as JSON for a person (strings inert), whole: a long value is cut after.
fn json_text<A: ArgValue>(value: &A) -> String {
    let mut json = Vec::new();
    match arg_json::push_shown(&mut json, value, usize::MAX) {
        Ok(()) => String::from_utf8(json).unwrap_or_default(),
        Err(_) => "(a value JSON cannot show)".to_owned(),
    }
}

/// `text` cut to `max` bytes (at a character boundary), saying how long it was, with every
/// character a display could act on written `\u{HEX}`.
fn cut_inert(text: String, max: usize) -> String {
    let cut = if text.len() > max {
        format!(
            "{}… (cut: {} bytes in all)",
            &text[..text.floor_char_boundary(max)],
            text.len()
        )
    } else {
        text
    };
    crate::json::inert::escape(&cut).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{parse_question, Path as ArgPath};
    use serde_json::{json, Value};

    fn bind(grant: &'static str, args: &Value) -> [u8; 32] {
        let caller = [Some(grant), Some("s-1"), None];
        binding("rev", "/tools/t", None, "t", caller, Some(&args)).unwrap()
    }

    #[test]
    fn a_token_verifies_for_its_call_only() {
        let key = ConfirmKey::random();
        let call = bind("g", &json!({"amount": 5}));
        let token = key.mint(&call, 1_000);
        let minted = key.verify(&token, &call).expect("its own call");
        assert_eq!(minted.expires_ms, 1_000);
        assert!(key
            .verify(&token, &bind("g", &json!({"amount": 6})))
            .is_none());
        assert!(key
            .verify(&token, &bind("h", &json!({"amount": 5})))
            .is_none());
        assert!(ConfirmKey::random().verify(&token, &call).is_none());
        // The same secret derives the same key: replicas share tokens.
        let a = ConfirmKey::derived(b"secret");
        let t = a.mint(&call, 9);
        assert!(ConfirmKey::derived(b"secret").verify(&t, &call).is_some());
        assert!(ConfirmKey::derived(b"other").verify(&t, &call).is_none());
    }

    #[test]
    fn a_token_has_one_spelling() {
        let key = ConfirmKey::random();
        let call = bind("g", &json!({}));
        let token = key.mint(&call, 5);
        assert!(key.verify(&token.to_uppercase(), &call).is_none());
        assert!(key.verify(&format!("{token}0"), &call).is_none());
        assert!(key.verify(&token[..token.len() - 2], &call).is_none());
        assert!(key
            .verify(&token.replace(TOKEN_PREFIX, "x."), &call)
            .is_none());
    }

    proptest::proptest! {
        /// Any change of one character of a token fails it.
        #[test]
        fn a_changed_token_fails(at in 0usize..80, to in "[0-9a-f]") {
            let key = ConfirmKey::derived(b"k");
            let call = bind("g", &json!({"a": 1}));
            let token = key.mint(&call, 77);
            let i = TOKEN_PREFIX.len() + at;
            let mut changed = token.clone();
            changed.replace_range(i..i + 1, &to);
            proptest::prop_assume!(changed != token);
            proptest::prop_assert!(key.verify(&changed, &call).is_none());
        }

        /// Arguments that differ give tokens that do not cross.
        #[test]
        fn other_arguments_fail(a in 0i64..1000, b in 0i64..1000) {
            proptest::prop_assume!(a != b);
            let key = ConfirmKey::derived(b"k");
            let token = key.mint(&bind("g", &json!({"n": a})), 77);
            let other = bind("g", &json!({"n": b}));
            proptest::prop_assert!(key.verify(&token, &other).is_none());
        }
    }

    #[test]
    fn questions_show_arguments_inert() {
        let pieces = parse_question("Transfer {args.amount} {args.currency} to {args.to}?")
            .expect("a question");
        let args = json!({"amount": 120.5, "currency": "EUR", "to": "acct\u{202e}1\n"});
        assert_eq!(
            render(&pieces, Some(&&args)),
            "Transfer 120.5 EUR to acct\\u{202e}1\\u{a}?"
        );
        assert_eq!(
            render(&pieces, None::<&&Value>),
            "Transfer (none) (none) to (none)?"
        );
        let long = json!({"amount": "x".repeat(1000), "currency": [1, {"a": 2}], "to": null});
        let shown = render(&pieces, Some(&&long));
        let cut = format!(
            "Transfer {}… (cut: 1000 bytes in all)",
            "x".repeat(MAX_VALUE_BYTES)
        );
        assert!(shown.starts_with(&cut), "{shown}");
        assert!(shown.ends_with(" [1,{\"a\":2}] to null?"), "{shown}");
        assert_eq!(
            parse_question("{{literal}} {args.a}").unwrap(),
            vec![
                Piece::Text("{literal} ".into()),
                Piece::Arg(ArgPath::parse("args.a").unwrap())
            ]
        );
        for bad in ["{args.a", "a}", "{tool.name}", "{}", "{subject.grant}"] {
            assert!(parse_question(bad).is_err(), "{bad}");
        }
    }
}
