//! Human approval of calls whose rule says `require_approval`: which call waits for one,
//! what it finds, and the news approvers are told.
//!
//! A call is identified by its [`ApprovalKey`]: a digest, keyed with the deployment's secret
//! (the grant is a credential), of its server, tool, subject and canonical arguments. Where
//! approvals are kept is an [`ApprovalDesk`] (the sidecar's: `toolgate_runtime::approvals`, a
//! table in a file that outlives the process, so an approval used before a crash stays
//! used): a call opens a pending approval there, and an approved call runs once.
//!
//! Each approval also names its [`Owner`] (the caller's grant and the rule that asks), so
//! that pending approvals are capped per grant and per rule ([`Caps`]): one caller, or a
//! flood through one rule, cannot take every slot.

use crate::trace_ids::TraceIds;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;

/// Pending approvals one grant may have at once, by default.
pub const DEFAULT_PENDING_PER_GRANT: usize = 32;
/// Pending approvals one rule may have at once (all grants together), by default.
pub const DEFAULT_PENDING_PER_RULE: usize = 1024;

/// An approval's id: 128 random bits, written `apr_` and 32 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ApprovalId(pub u128);

impl ApprovalId {
    /// A fresh, unguessable id.
    pub fn random() -> ApprovalId {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).expect("the system's random source works");
        ApprovalId(u128::from_be_bytes(bytes).max(1))
    }

    pub fn parse(text: &str) -> Option<ApprovalId> {
        let hex = text.strip_prefix("apr_")?;
        if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u128::from_str_radix(hex, 16)
            .ok()
            .filter(|&n| n != 0)
            .map(ApprovalId)
    }
}

impl fmt::Display for ApprovalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "apr_{:032x}", self.0)
    }
}

/// Which call an approval is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApprovalKey(pub [u64; 2]);

impl fmt::Display for ApprovalKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}{:016x}", self.0[0], self.0[1])
    }
}

impl ApprovalKey {
    pub fn parse(text: &str) -> Option<ApprovalKey> {
        parse_words(text).map(ApprovalKey)
    }
}

/// A call's identity for approval: who, where, what, and with which arguments.
pub struct Call<'a> {
    pub server: Option<&'a str>,
    pub tool: &'a str,
    pub grant: Option<&'a str>,
    pub session: Option<&'a str>,
    pub agent: Option<&'a str>,
    /// The arguments' canonical JSON ([`crate::json::arg_json::canonical`]).
    pub arguments: &'a str,
}

/// Who a pending approval counts against: the caller's grant and the rule that asks, as
/// keyed 64-bit digests (0: not known, as for an approval put back from the store).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Owner {
    pub grant: u64,
    pub rule: u64,
}

impl Owner {
    /// The grant word's top bit: set when the grant is one the client chose (an unverified
    /// credential no server vouched for, or none), clear for a trusted one.
    const CLIENT_CHOSEN: u64 = 1 << 63;

    /// Whether the grant is one the client chose: such approvals may hold only half of a
    /// rule's and of the table's room, so that made-up credentials cannot crowd out
    /// trusted callers (`toolgate_runtime`'s approval table).
    pub fn client_chosen(self) -> bool {
        self.grant & Owner::CLIENT_CHOSEN != 0
    }

    /// The owner as text (32 hex digits), for the store.
    pub fn to_hex(self) -> String {
        format!("{:016x}{:016x}", self.grant, self.rule)
    }

    pub fn parse(text: &str) -> Option<Owner> {
        let [grant, rule] = parse_words(text)?;
        Some(Owner { grant, rule })
    }
}

/// How many pending approvals one grant, and one rule, may have at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    pub per_grant: usize,
    pub per_rule: usize,
}

impl Default for Caps {
    fn default() -> Caps {
        Caps {
            per_grant: DEFAULT_PENDING_PER_GRANT,
            per_rule: DEFAULT_PENDING_PER_RULE,
        }
    }
}

/// Digests of calls, keyed with the deployment's secret: a call's grant is a credential,
/// and an unkeyed digest of it (beside the other fields it was hashed with) could be
/// reversed by trying guesses.
#[derive(Clone)]
pub struct CallDigests {
    mac: Hmac<Sha256>,
}

impl CallDigests {
    pub fn new(secret: &[u8]) -> CallDigests {
        CallDigests {
            mac: Hmac::new_from_slice(secret).expect("HMAC takes any key length"),
        }
    }

    /// A random secret: for a table no other process shares.
    pub fn random() -> CallDigests {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).expect("the system's random source works");
        CallDigests::new(&secret)
    }

    fn digest<'a>(
        &self,
        domain: &[u8],
        parts: impl IntoIterator<Item = Option<&'a str>>,
    ) -> [u8; 32] {
        let mut mac = self.mac.clone();
        mac.update(domain);
        for part in parts {
            // Length-prefixed, and absent told apart from empty.
            match part {
                Some(p) => {
                    mac.update(&[1]);
                    mac.update(&(p.len() as u64).to_be_bytes());
                    mac.update(p.as_bytes());
                }
                None => mac.update(&[0]),
            }
        }
        mac.finalize().into_bytes().into()
    }

    /// The key a call's arguments are digested under wherever the digest leaves the process
    /// (the decision log, the approvals store, webhooks): an argument may be a secret (a PIN,
    /// a card's last digits) that a plain digest gives away to guesses.
    pub fn arguments(&self) -> Hmac<Sha256> {
        let mut mac = self.mac.clone();
        mac.update(b"toolgate arguments\0");
        mac
    }

    /// The keyed digest of arguments given as their canonical JSON text, as written:
    /// `hmac-sha256:` and 64 hex digits.
    pub fn arguments_hex(&self, canonical: &str) -> String {
        let mut mac = self.arguments();
        mac.update(canonical.as_bytes());
        keyed_hex(&mac.finalize().into_bytes())
    }

    /// Which call an approval is for.
    pub fn key(&self, call: &Call<'_>) -> ApprovalKey {
        let d = self.digest(
            b"toolgate approval key\0",
            [
                call.server,
                Some(call.tool),
                call.grant,
                call.session,
                call.agent,
                Some(call.arguments),
            ],
        );
        // 0 marks an empty slot.
        ApprovalKey([word(&d, 0).max(1), word(&d, 8)])
    }

    /// Whom a pending approval of `grant`'s call through rule `rule` counts against;
    /// `grant_trusted` when the grant is one a client could not have made up (verified by
    /// the proxy, or vouched for by a server: [`crate::owners::vouched`]).
    pub fn owner(&self, grant: Option<&str>, grant_trusted: bool, rule: &str) -> Owner {
        let g = self.digest(b"toolgate approval grant\0", [grant]);
        let r = self.digest(b"toolgate approval rule\0", [Some(rule)]);
        let chosen = grant.is_none() || !grant_trusted;
        let grant_word = word(&g, 0) & !Owner::CLIENT_CHOSEN;
        Owner {
            grant: (grant_word | if chosen { Owner::CLIENT_CHOSEN } else { 0 }).max(1),
            rule: word(&r, 0).max(1),
        }
    }
}

fn word(d: &[u8; 32], i: usize) -> u64 {
    u64::from_be_bytes(d[i..i + 8].try_into().expect("8 bytes"))
}

/// Two 64-bit words written as 32 hex digits.
fn parse_words(text: &str) -> Option<[u64; 2]> {
    if text.len() != 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let word = |r: std::ops::Range<usize>| u64::from_str_radix(&text[r], 16).ok();
    Some([word(0..16)?, word(16..32)?])
}

/// A keyed digest as it is written: `hmac-sha256:` and its hex digits.
pub fn keyed_hex(digest: &[u8]) -> String {
    let mut text = String::from("hmac-sha256:");
    crate::hex::push(&mut text, digest);
    text
}

/// What a call that needs approval finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Waiting; `new` when this call created it.
    Pending {
        id: ApprovalId,
        created_ms: u64,
        expires_ms: u64,
        new: bool,
    },
    /// Approved: may run once, before `until_ms`.
    Approved { id: ApprovalId, until_ms: u64 },
    /// An approver said no.
    Denied { id: ApprovalId, until_ms: u64 },
}

/// A call asking for approval: which call, whom it counts against, how long it may wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ask {
    pub key: ApprovalKey,
    pub owner: Owner,
    pub timeout_ms: u64,
}

/// Why no approval could be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoRoom {
    /// Every slot of the table is taken.
    Table,
    /// The caller's grant has this many pending already.
    Grant(usize),
    /// The rule has this many pending already.
    Rule(usize),
    /// Callers whose credential the client chose have this many pending on the rule
    /// already: the rest of the rule's room is kept for trusted callers.
    ClientChosen(usize),
}

impl fmt::Display for NoRoom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NoRoom::Table => f.write_str("too many are waiting"),
            NoRoom::Grant(n) => write!(f, "this caller has {n} waiting already, the most it may"),
            NoRoom::Rule(n) => write!(f, "this rule has {n} waiting already, the most it may"),
            NoRoom::ClientChosen(n) => write!(
                f,
                "callers with an unverified credential have {n} waiting on this rule already, \
                 the most they may"
            ),
        }
    }
}

/// News of approvals, for the durable store and the approvers' notifications.
#[derive(Debug, Clone, PartialEq)]
pub enum ApprovalEvent {
    /// A call opened a pending approval.
    Opened(Box<Opened>),
    /// An approved call ran.
    Used { id: ApprovalId, at_ms: u64 },
}

/// A pending approval, as approvers see it.
#[derive(Debug, Clone, PartialEq)]
pub struct Opened {
    pub id: ApprovalId,
    pub key: ApprovalKey,
    /// Cut to a bounded preview, as `session` and `agent` are.
    pub server: Option<String>,
    pub tool: String,
    pub grant: Option<String>,
    /// The grant is a verified identity, shown as it is; otherwise a credential, of which
    /// only a keyed hash may be shown.
    pub grant_verified: bool,
    /// Ids the agent chose, cut to a bounded preview
    /// ([`super::approval_text::shown_id`]).
    pub session: Option<String>,
    pub agent: Option<String>,
    /// The arguments' canonical JSON cut to the preview size (`arguments_cut` when it was
    /// cut), the whole text's size in bytes, and its SHA-256: the news never carries
    /// arguments larger than the preview.
    pub arguments: String,
    pub arguments_cut: bool,
    pub arguments_bytes: u64,
    pub arguments_digest: String,
    /// Whom it counts against for the pending caps.
    pub owner: Owner,
    /// The rule that asks for approval (a JSON pointer), and the policy's revision.
    pub rule: String,
    pub revision: String,
    pub created_ms: u64,
    pub expires_ms: u64,
    /// Who may approve; empty: anyone with an admin token.
    pub approvers: Vec<String>,
    /// The span of the decision that asked, where it was traced: an approver's decision is
    /// a span under it ([`crate::trace_ids`]).
    pub trace: Option<TraceIds>,
}

/// How a deployment runs approvals.
#[derive(Clone)]
pub struct ApprovalSettings {
    /// Keys every digest of a call (the deployment's secret).
    pub digests: CallDigests,
    pub caps: Caps,
    /// Bytes of a call's arguments approvers are shown.
    pub preview_bytes: usize,
    /// News waiting for the control plane, at most.
    pub queue: usize,
}

impl ApprovalSettings {
    /// Default caps and preview, with a random secret: for a table no other process shares.
    pub fn private(queue: usize) -> ApprovalSettings {
        ApprovalSettings {
            digests: CallDigests::random(),
            caps: Caps::default(),
            preview_bytes: super::approval_text::DEFAULT_PREVIEW_BYTES,
            queue,
        }
    }
}

/// Where an engine's approvals are kept. Every method answers at once: it never waits on a
/// disk or a network.
pub trait ApprovalDesk: Send + Sync {
    /// How approvals run here.
    fn settings(&self) -> &ApprovalSettings;

    /// What the call `ask` describes finds at `now_ms`: a pending approval (opened now if
    /// there was none, unless the caps leave no room), an approval or a refusal.
    fn request(&self, ask: &Ask, now_ms: u64) -> Result<Standing, NoRoom>;

    /// Use approval `id` for the call `key`: true once, for the first caller, before the
    /// approval's deadline.
    fn consume(&self, key: ApprovalKey, id: ApprovalId, now_ms: u64) -> bool;

    /// Tell the control plane (without waiting; dropped and counted when it cannot keep up).
    fn emit(&self, event: ApprovalEvent);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digests() -> CallDigests {
        CallDigests::new(b"the deployment's secret")
    }

    #[test]
    fn keys_and_owners_are_keyed_with_the_deployments_secret() {
        let call = Call {
            server: None,
            tool: "t",
            grant: Some("sk-live-1234"),
            session: None,
            agent: None,
            arguments: "{}",
        };
        let other = CallDigests::new(b"another deployment's secret");
        assert_ne!(digests().key(&call), other.key(&call));
        assert_ne!(
            digests().owner(call.grant, false, "/r"),
            other.owner(call.grant, false, "/r")
        );
        assert_eq!(digests().key(&call), digests().key(&call));
        let owner = digests().owner(call.grant, false, "/r");
        assert_eq!(Owner::parse(&owner.to_hex()), Some(owner));
    }

    #[test]
    fn ids_read_back_and_keys_tell_calls_apart() {
        let id = ApprovalId::random();
        assert_eq!(ApprovalId::parse(&id.to_string()), Some(id));
        for bad in [
            "",
            "apr_",
            "apr_xyz",
            "apr_00000000000000000000000000000000",
            "xyz_0123",
        ] {
            assert_eq!(ApprovalId::parse(bad), None, "{bad}");
        }
        let call = |grant, arguments| {
            digests().key(&Call {
                server: None,
                tool: "t",
                grant,
                session: None,
                agent: None,
                arguments,
            })
        };
        assert_ne!(call(Some("a"), "{}"), call(Some("b"), "{}"));
        assert_ne!(call(None, "{}"), call(Some(""), "{}"));
        assert_eq!(call(Some("a"), "{}"), call(Some("a"), "{}"));
    }
}
