//! The approvals table: one slot per call waiting for or holding an approval, in a file
//! mapped into memory that outlives the process (so an approval used before a crash stays
//! used) and that a restarted sidecar shares with the one still finishing. A slot is
//! `PENDING` until an approver decides, then `APPROVED` (the identical call may run once
//! before its deadline) or `DENIED`; running it makes it `CONSUMED`. Every change happens
//! under one [`PidLock`], which a crashed process cannot leave held: approvals are rare, and
//! a call that needs one is decided in microseconds either way.

use super::mapping::{self, Mapping};
use super::pid_lock::PidLock;
use std::fmt;
use std::fs::OpenOptions;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
use toolgate_core::asking::approval::{
    ApprovalId, ApprovalKey, Ask, Caps, NoRoom, Owner, Standing,
};
use toolgate_core::counter::region::HEADER_WORDS;
use toolgate_core::counter::Region;

/// "TGAP" in the high half of the magic word, the layout's version in the low half.
const MAGIC_TAG: u64 = 0x5447_4150_0000_0000;
/// Version 2 added each slot's owner words.
const VERSION: u64 = 2;
const MAGIC: u64 = MAGIC_TAG | VERSION;
const MAGIC_WORD: usize = 0;
const CAPACITY_WORD: usize = 1;
const LOCK_WORD: usize = 2;

const SLOT_WORDS: usize = 10;
// Word offsets inside a slot.
const KEY0: usize = 0;
const KEY1: usize = 1;
const STATE: usize = 2;
const ID_HI: usize = 3;
const ID_LO: usize = 4;
const CREATED: usize = 5;
const DEADLINE: usize = 6;
const OWNER_GRANT: usize = 7;
const OWNER_RULE: usize = 8;

/// Where an approval stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Waiting for an approver, until its deadline.
    Pending,
    /// The call may run once before the deadline.
    Approved,
    /// Ran: the identical call needs a new approval.
    Consumed,
    /// Refused by an approver; the call is denied until the deadline.
    Denied,
}

impl State {
    fn word(self) -> u64 {
        match self {
            State::Pending => 1,
            State::Approved => 2,
            State::Consumed => 3,
            State::Denied => 4,
        }
    }

    fn from_word(w: u64) -> Option<State> {
        Some(match w {
            1 => State::Pending,
            2 => State::Approved,
            3 => State::Consumed,
            4 => State::Denied,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "PENDING",
            State::Approved => "APPROVED",
            State::Consumed => "CONSUMED",
            State::Denied => "DENIED",
        }
    }
}

/// An approval as the table holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub key: ApprovalKey,
    pub id: ApprovalId,
    pub state: State,
    pub created_ms: u64,
    pub deadline_ms: u64,
}

/// Why an approver's decision was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecideError {
    Unknown,
    Expired,
    AlreadyDecided(State),
}

impl fmt::Display for DecideError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecideError::Unknown => f.write_str("no such approval"),
            DecideError::Expired => f.write_str("the approval has expired"),
            DecideError::AlreadyDecided(s) => {
                write!(f, "the approval is already {}", s.as_str().to_lowercase())
            }
        }
    }
}

/// The layout version of an approvals file written by another version of toolgate; `None`
/// for this version's, an empty file, or one that is no approvals file at all.
fn other_version(file: &std::fs::File) -> Option<u64> {
    let mut magic = [0u8; 8];
    file.read_exact_at(&mut magic, 0).ok()?;
    // Words are native-endian in the mapped file.
    let magic = u64::from_ne_bytes(magic);
    let version = magic & 0xFFFF_FFFF;
    (magic & !0xFFFF_FFFF == MAGIC_TAG && version != VERSION).then_some(version)
}

/// The approvals of one deployment.
pub struct ApprovalTable {
    region: Region,
    capacity: usize,
    /// Where `open_file` moved a file of another layout version, for the caller to tell.
    set_aside: Option<std::path::PathBuf>,
}

impl ApprovalTable {
    pub fn required_words(capacity: usize) -> usize {
        HEADER_WORDS + capacity * SLOT_WORDS
    }

    /// A table in process memory.
    pub fn new(capacity: usize) -> ApprovalTable {
        let capacity = capacity.max(1);
        let region = Region::allocate(Self::required_words(capacity));
        region.header(CAPACITY_WORD).store(capacity as u64, SeqCst);
        region.header(MAGIC_WORD).store(MAGIC, SeqCst);
        ApprovalTable {
            region,
            capacity,
            set_aside: None,
        }
    }

    /// The table in the file at `path`, created with `capacity` slots if it does not exist.
    /// A file every process of a deployment maps; it keeps its state when they exit. A file
    /// of another layout version is set aside (renamed `PATH.vN.old`) and a new one made:
    /// the durable store's reconcile at start puts back what it held.
    pub fn open_file(path: &Path, capacity: usize) -> Result<ApprovalTable, String> {
        let fail = |what: &str, e: std::io::Error| format!("{}: {what}: {e}", path.display());
        let capacity = capacity.max(1);
        let mut set_aside = None;
        let file = loop {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .map_err(|e| fail("cannot open", e))?;
            // Creating, sizing and setting aside race between processes starting together:
            // serialise them.
            // SAFETY: flock on a file descriptor we own.
            if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&file), libc::LOCK_EX) } != 0 {
                return Err(fail("cannot lock", std::io::Error::last_os_error()));
            }
            // Another process set this file aside while we waited for its lock: open anew.
            let ours = file.metadata().map_err(|e| fail("cannot stat", e))?;
            match std::fs::metadata(path) {
                Ok(now) if (now.dev(), now.ino()) == (ours.dev(), ours.ino()) => {}
                _ => continue,
            }
            match other_version(&file) {
                Some(version) => {
                    let aside = path.with_extension(format!("table.v{version}.old"));
                    std::fs::rename(path, &aside).map_err(|e| fail("cannot set aside", e))?;
                    set_aside = Some(aside);
                }
                None => break file,
            }
        };
        let mut bytes = file.metadata().map_err(|e| fail("cannot stat", e))?.len() as usize;
        if bytes == 0 {
            bytes = Self::required_words(capacity) * 8;
            // A file extended by set_len reads as zeros: every slot empty.
            file.set_len(bytes as u64)
                .map_err(|e| fail("cannot size", e))?;
        }
        if bytes < HEADER_WORDS * 8 || !bytes.is_multiple_of(8) {
            return Err(format!("{}: not a toolgate approvals file", path.display()));
        }
        let mapping = Arc::new(Mapping::map(&file, bytes)?);
        let magic = mapping.word(MAGIC_WORD).load(SeqCst);
        if magic == 0 {
            let slots = (bytes / 8 - HEADER_WORDS) / SLOT_WORDS;
            mapping.word(CAPACITY_WORD).store(slots as u64, SeqCst);
            mapping.word(MAGIC_WORD).store(MAGIC, SeqCst);
        } else if magic != MAGIC {
            return Err(format!("{}: not a toolgate approvals file", path.display()));
        }
        let slots = mapping.word(CAPACITY_WORD).load(SeqCst) as usize;
        if Self::required_words(slots) * 8 != bytes {
            return Err(format!(
                "{}: header does not match the file's size",
                path.display()
            ));
        }
        // The mapping keeps the open file (and so the lock) alive: let go of it explicitly.
        // SAFETY: flock on a file descriptor we own.
        unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&file), libc::LOCK_UN) };
        let region = mapping::region(&mapping, 0, bytes / 8);
        Ok(ApprovalTable {
            region,
            capacity: slots,
            set_aside,
        })
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The file of another layout version that opening this one set aside, if any.
    pub fn set_aside(&self) -> Option<&Path> {
        self.set_aside.as_deref()
    }

    fn word(&self, slot: usize, field: usize) -> &std::sync::atomic::AtomicU64 {
        self.region.word(HEADER_WORDS + slot * SLOT_WORDS + field)
    }

    fn read(&self, slot: usize) -> Option<Slot> {
        let w = |f| self.word(slot, f).load(SeqCst);
        let state = State::from_word(w(STATE))?;
        Some(Slot {
            key: ApprovalKey([w(KEY0), w(KEY1)]),
            id: ApprovalId(((w(ID_HI) as u128) << 64) | w(ID_LO) as u128),
            state,
            created_ms: w(CREATED),
            deadline_ms: w(DEADLINE),
        })
    }

    fn write(&self, slot: usize, s: &Slot, owner: Owner) {
        let w = |f, v| self.word(slot, f).store(v, SeqCst);
        w(KEY0, s.key.0[0]);
        w(KEY1, s.key.0[1]);
        w(ID_HI, (s.id.0 >> 64) as u64);
        w(ID_LO, s.id.0 as u64);
        w(CREATED, s.created_ms);
        w(DEADLINE, s.deadline_ms);
        w(OWNER_GRANT, owner.grant);
        w(OWNER_RULE, owner.rule);
        // Last: a slot whose writer died half-way keeps its old state, which its deadline
        // ends; under the lock no one reads it meanwhile.
        w(STATE, s.state.word());
    }

    fn owner(&self, slot: usize) -> Owner {
        Owner {
            grant: self.word(slot, OWNER_GRANT).load(SeqCst),
            rule: self.word(slot, OWNER_RULE).load(SeqCst),
        }
    }

    /// Whether `owner` may open one more pending approval under `caps`: a scan of the
    /// table, made only when a call opens one (rare, and under the lock anyway).
    ///
    /// Callers whose credential the client chose (a made-up bearer token costs nothing) may
    /// hold at most half of a rule's room and half of the table, so the other half is
    /// always there for trusted callers ([`Owner::client_chosen`]).
    fn room_for(&self, owner: Owner, caps: Caps, now_ms: u64) -> Result<(), NoRoom> {
        let (mut grant, mut rule, mut chosen_rule, mut chosen) = (0, 0, 0, 0);
        for slot in 0..self.capacity {
            let pending = self
                .read(slot)
                .is_some_and(|s| s.state == State::Pending && s.deadline_ms > now_ms);
            if !pending {
                continue;
            }
            let o = self.owner(slot);
            let same_rule = owner.rule != 0 && o.rule == owner.rule;
            grant += usize::from(owner.grant != 0 && o.grant == owner.grant);
            rule += usize::from(same_rule);
            chosen_rule += usize::from(same_rule && o.client_chosen());
            chosen += usize::from(o.client_chosen());
        }
        if grant >= caps.per_grant {
            return Err(NoRoom::Grant(caps.per_grant));
        }
        if rule >= caps.per_rule {
            return Err(NoRoom::Rule(caps.per_rule));
        }
        if owner.client_chosen() {
            let share = caps.per_rule.div_ceil(2);
            if chosen_rule >= share {
                return Err(NoRoom::ClientChosen(share));
            }
            if chosen >= self.capacity.div_ceil(2) {
                return Err(NoRoom::Table);
            }
        }
        Ok(())
    }

    /// The slots on `key`'s probe sequence: the live one holding it, and the first that a
    /// new approval may take (never used, or past its deadline).
    fn probe(&self, key: ApprovalKey, now_ms: u64) -> (Option<usize>, Option<usize>) {
        let start = (key.0[0] as usize) % self.capacity;
        let mut free = None;
        for i in 0..self.capacity {
            let slot = (start + i) % self.capacity;
            match self.read(slot) {
                // Never used: the sequence of `key` ends here.
                None if self.word(slot, KEY0).load(SeqCst) == 0 => {
                    return (None, free.or(Some(slot)));
                }
                Some(s) if s.key == key && s.deadline_ms > now_ms => return (Some(slot), free),
                Some(s) if s.deadline_ms > now_ms => {}
                _ => {
                    free.get_or_insert(slot);
                }
            }
        }
        (None, free)
    }

    /// A call that needs approval: its standing, creating a pending approval (id from
    /// `new_id`, expiring after `timeout_ms`) when there is none. `None` when the table
    /// has no room. (No owner, no caps: see [`ApprovalTable::request_as`].)
    pub fn request(
        &self,
        key: ApprovalKey,
        now_ms: u64,
        timeout_ms: u64,
        new_id: impl FnOnce() -> ApprovalId,
    ) -> Option<Standing> {
        let ask = Ask {
            key,
            owner: Owner::default(),
            timeout_ms,
        };
        let uncapped = Caps {
            per_grant: usize::MAX,
            per_rule: usize::MAX,
        };
        self.request_as(&ask, uncapped, now_ms, new_id).ok()
    }

    /// A call that needs approval: its standing, creating a pending approval for
    /// `ask.owner` (id from `new_id`) when there is none and `caps` leave it room.
    pub fn request_as(
        &self,
        ask: &Ask,
        caps: Caps,
        now_ms: u64,
        new_id: impl FnOnce() -> ApprovalId,
    ) -> Result<Standing, NoRoom> {
        let _lock = PidLock::acquire(self.region.header(LOCK_WORD));
        let (live, free) = self.probe(ask.key, now_ms);
        if let Some(slot) = live {
            let s = self.read(slot).expect("a live slot has a state");
            match s.state {
                State::Pending => {
                    return Ok(Standing::Pending {
                        id: s.id,
                        created_ms: s.created_ms,
                        expires_ms: s.deadline_ms,
                        new: false,
                    })
                }
                State::Approved => {
                    return Ok(Standing::Approved {
                        id: s.id,
                        until_ms: s.deadline_ms,
                    })
                }
                State::Denied => {
                    return Ok(Standing::Denied {
                        id: s.id,
                        until_ms: s.deadline_ms,
                    })
                }
                // Ran already: this call asks again, in the same slot.
                State::Consumed => {}
            }
        }
        let slot = live.or(free).ok_or(NoRoom::Table)?;
        self.room_for(ask.owner, caps, now_ms)?;
        let fresh = Slot {
            key: ask.key,
            id: new_id(),
            state: State::Pending,
            created_ms: now_ms,
            deadline_ms: now_ms.saturating_add(ask.timeout_ms),
        };
        self.write(slot, &fresh, ask.owner);
        Ok(Standing::Pending {
            id: fresh.id,
            created_ms: now_ms,
            expires_ms: fresh.deadline_ms,
            new: true,
        })
    }

    /// Use approval `id` of `key` for the call about to run: true once, for an approved,
    /// unexpired approval; false for everyone else (a racing copy of the call included).
    pub fn consume(&self, key: ApprovalKey, id: ApprovalId, now_ms: u64) -> bool {
        let _lock = PidLock::acquire(self.region.header(LOCK_WORD));
        let (Some(slot), _) = self.probe(key, now_ms) else {
            return false;
        };
        let s = self.read(slot).expect("a live slot has a state");
        if s.id != id || s.state != State::Approved {
            return false;
        }
        self.word(slot, STATE).store(State::Consumed.word(), SeqCst);
        true
    }

    /// An approver's decision on pending approval `id`: approved, the call may run once
    /// within the approval's timeout from now; denied, it is refused for that long.
    pub fn decide(&self, id: ApprovalId, approve: bool, now_ms: u64) -> Result<Slot, DecideError> {
        let _lock = PidLock::acquire(self.region.header(LOCK_WORD));
        let slot = (0..self.capacity)
            .find(|&i| self.read(i).is_some_and(|s| s.id == id))
            .ok_or(DecideError::Unknown)?;
        let mut s = self.read(slot).expect("found by its state");
        if s.state != State::Pending {
            return Err(DecideError::AlreadyDecided(s.state));
        }
        if s.deadline_ms <= now_ms {
            return Err(DecideError::Expired);
        }
        s.state = if approve {
            State::Approved
        } else {
            State::Denied
        };
        let timeout_ms = s.deadline_ms - s.created_ms;
        s.deadline_ms = now_ms.saturating_add(timeout_ms);
        self.write(slot, &s, self.owner(slot));
        Ok(s)
    }

    /// Approval `id` as the table holds it.
    pub fn get(&self, id: ApprovalId) -> Option<Slot> {
        let _lock = PidLock::acquire(self.region.header(LOCK_WORD));
        (0..self.capacity)
            .filter_map(|i| self.read(i))
            .find(|s| s.id == id)
    }

    /// Every approval the table holds (live or past its deadline), for reconciling it with
    /// the durable store.
    pub fn slots(&self) -> Vec<Slot> {
        let _lock = PidLock::acquire(self.region.header(LOCK_WORD));
        (0..self.capacity).filter_map(|i| self.read(i)).collect()
    }

    /// Make the table hold `s` as known from the durable store (after a crash between the
    /// two, or with the table file lost): the slot of `s.id` takes its state if that comes
    /// later (pending, then approved or denied, then consumed); an approval the table lacks
    /// is put back while it is live and there is room. True if anything changed.
    pub fn apply(&self, s: &Slot, now_ms: u64) -> bool {
        self.apply_owned(s, Owner::default(), now_ms)
    }

    /// [`ApprovalTable::apply`], an approval put back counting against `owner` (its owner
    /// as the store recorded it).
    pub fn apply_owned(&self, s: &Slot, owner: Owner, now_ms: u64) -> bool {
        let _lock = PidLock::acquire(self.region.header(LOCK_WORD));
        let order = |state: State| match state {
            State::Pending => 0,
            State::Approved | State::Denied => 1,
            State::Consumed => 2,
        };
        let held = (0..self.capacity).find(|&i| self.read(i).is_some_and(|t| t.id == s.id));
        if let Some(i) = held {
            let held = self.read(i).expect("found by its state");
            if order(s.state) <= order(held.state) {
                return false;
            }
            let slot = Slot {
                key: held.key,
                ..*s
            };
            self.write(i, &slot, self.owner(i));
            return true;
        }
        if s.deadline_ms <= now_ms {
            return false;
        }
        match self.probe(s.key, now_ms) {
            (Some(_), _) | (None, None) => false,
            (None, Some(slot)) => {
                self.write(slot, s, owner);
                true
            }
        }
    }

    /// Drop approval `id` (one the durable store never heard of: nobody could approve it;
    /// the call opens a new one when it comes again).
    pub fn forget(&self, id: ApprovalId) -> bool {
        let _lock = PidLock::acquire(self.region.header(LOCK_WORD));
        match (0..self.capacity).find(|&i| self.read(i).is_some_and(|t| t.id == id)) {
            Some(i) => {
                // No state: the slot is free and holds no approval, and, its key kept, the
                // probe sequences through it stay intact.
                self.word(i, DEADLINE).store(0, SeqCst);
                self.word(i, STATE).store(0, SeqCst);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use toolgate_core::asking::approval::{Call, CallDigests};

    const MIN: u64 = 60_000;

    fn digests() -> CallDigests {
        CallDigests::new(b"the deployment's secret")
    }

    fn key(n: u8) -> ApprovalKey {
        digests().key(&Call {
            server: None,
            tool: "transfer",
            grant: Some("g"),
            session: None,
            agent: None,
            arguments: &n.to_string(),
        })
    }

    fn pending(t: &ApprovalTable, k: ApprovalKey, now: u64) -> ApprovalId {
        match t.request(k, now, 10 * MIN, ApprovalId::random) {
            Some(Standing::Pending { id, .. }) => id,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_call_waits_then_runs_once_after_approval() {
        let t = ApprovalTable::new(16);
        let k = key(1);
        let id = pending(&t, k, 1000);
        // Asked again while pending: the same approval, not a second one.
        assert_eq!(
            t.request(k, 2000, 10 * MIN, ApprovalId::random),
            Some(Standing::Pending {
                id,
                created_ms: 1000,
                expires_ms: 1000 + 10 * MIN,
                new: false
            })
        );
        assert!(!t.consume(k, id, 2000), "not approved yet");
        t.decide(id, true, 3000).unwrap();
        assert_eq!(
            t.request(k, 4000, 10 * MIN, ApprovalId::random),
            Some(Standing::Approved {
                id,
                until_ms: 3000 + 10 * MIN
            })
        );
        assert!(t.consume(k, id, 4000));
        assert!(!t.consume(k, id, 4001), "runs once");
        // The identical call again needs a new approval.
        let again = pending(&t, k, 5000);
        assert_ne!(again, id);
        assert_eq!(t.decide(id, true, 5000), Err(DecideError::Unknown));
    }

    #[test]
    fn expired_and_denied_approvals_never_allow() {
        let t = ApprovalTable::new(16);
        let (a, b) = (key(1), key(2));
        let id_a = pending(&t, a, 0);
        assert_eq!(t.decide(id_a, true, 10 * MIN), Err(DecideError::Expired));
        let id_b = pending(&t, b, 0);
        t.decide(id_b, false, 1000).unwrap();
        assert!(matches!(
            t.request(b, 2000, MIN, ApprovalId::random),
            Some(Standing::Denied { .. })
        ));
        assert!(!t.consume(b, id_b, 2000));
        assert_eq!(
            t.decide(id_b, true, 2000),
            Err(DecideError::AlreadyDecided(State::Denied))
        );
        // An approval not used in time is gone.
        let id = pending(&t, a, 20 * MIN);
        t.decide(id, true, 20 * MIN).unwrap();
        assert!(!t.consume(a, id, 31 * MIN));
    }

    #[test]
    fn different_arguments_need_their_own_approval() {
        let t = ApprovalTable::new(16);
        let id1 = pending(&t, key(1), 0);
        t.decide(id1, true, 0).unwrap();
        assert!(!t.consume(key(2), id1, 1));
        assert!(matches!(
            t.request(key(2), 1, MIN, ApprovalId::random),
            Some(Standing::Pending { new: true, .. })
        ));
    }

    #[test]
    fn a_full_table_has_no_room_until_deadlines_pass() {
        let t = ApprovalTable::new(2);
        pending(&t, key(1), 0);
        pending(&t, key(2), 0);
        assert_eq!(t.request(key(3), 1, MIN, ApprovalId::random), None);
        assert!(t
            .request(key(3), 11 * MIN, MIN, ApprovalId::random)
            .is_some());
    }

    #[test]
    fn pending_approvals_are_capped_per_grant_and_per_rule() {
        let t = ApprovalTable::new(64);
        let d = digests();
        let caps = Caps {
            per_grant: 2,
            per_rule: 3,
        };
        // Trusted grants: the rule's whole room is theirs.
        let ask = |n: u8, grant: &str, rule: &str| Ask {
            key: d.key(&Call {
                server: None,
                tool: "t",
                grant: Some(grant),
                session: None,
                agent: None,
                arguments: &n.to_string(),
            }),
            owner: d.owner(Some(grant), true, rule),
            timeout_ms: MIN,
        };
        let open = |a: &Ask, now| t.request_as(a, caps, now, ApprovalId::random);
        assert!(open(&ask(1, "mallory", "/tools/a"), 0).is_ok());
        assert!(open(&ask(2, "mallory", "/tools/a"), 0).is_ok());
        assert_eq!(
            open(&ask(3, "mallory", "/tools/b"), 0),
            Err(NoRoom::Grant(2))
        );
        // The same call again is not a new approval: it is never refused for the caps.
        assert!(open(&ask(1, "mallory", "/tools/a"), 0).is_ok());
        assert!(open(&ask(4, "alice", "/tools/a"), 0).is_ok());
        assert_eq!(open(&ask(5, "bob", "/tools/a"), 0), Err(NoRoom::Rule(3)));
        assert!(open(&ask(6, "bob", "/tools/b"), 0).is_ok(), "another rule");
        // Decided approvals no longer count; nor do lapsed ones.
        let first = t.request(
            ask(1, "mallory", "/tools/a").key,
            0,
            MIN,
            ApprovalId::random,
        );
        let Some(Standing::Pending { id, .. }) = first else {
            panic!("{first:?}")
        };
        t.decide(id, false, 1).unwrap();
        assert!(open(&ask(7, "mallory", "/tools/c"), 2).is_ok());
        assert!(
            open(&ask(8, "mallory", "/tools/c"), MIN + 1).is_ok(),
            "the rest lapsed"
        );
    }

    proptest::proptest! {
        /// Credentials the client chose never hold more than half of a rule's room nor half
        /// of the table: whatever they opened first, a trusted caller finds room in every
        /// rule while trusted callers hold less than the rest.
        #[test]
        fn made_up_credentials_leave_half_of_every_rule_to_trusted_ones(
            asks in proptest::collection::vec((0u8..40, proptest::bool::ANY, 0u8..3), 1..120),
        ) {
            let t = ApprovalTable::new(32);
            let d = digests();
            let caps = Caps { per_grant: 4, per_rule: 9 };
            // (rule, chosen) -> pending; every approval opened is pending until the end.
            let mut held = std::collections::HashMap::<(u8, bool), usize>::new();
            for (n, (grant, trusted, rule)) in asks.into_iter().enumerate() {
                // A grant is trusted or not for good, as a credential is.
                let grant = format!("g{grant}{}", if trusted { "t" } else { "" });
                let ask = Ask {
                    key: d.key(&Call {
                        server: None,
                        tool: "t",
                        grant: Some(&grant),
                        session: None,
                        agent: None,
                        arguments: &n.to_string(),
                    }),
                    owner: d.owner(Some(&grant), trusted, &format!("/tools/r{rule}")),
                    timeout_ms: MIN,
                };
                let opened = t.request_as(&ask, caps, 0, ApprovalId::random);
                let in_rule = |held: &std::collections::HashMap<(u8, bool), usize>, chosen| {
                    held.get(&(rule, chosen)).copied().unwrap_or(0)
                };
                let (chosen, trusted_held) = (in_rule(&held, true), in_rule(&held, false));
                let chosen_all: usize =
                    held.iter().filter(|((_, c), _)| *c).map(|(_, v)| v).sum();
                match opened {
                    Ok(_) => *held.entry((rule, !trusted)).or_default() += 1,
                    Err(NoRoom::ClientChosen(share)) => {
                        proptest::prop_assert!(!trusted);
                        proptest::prop_assert_eq!((share, chosen), (5, 5));
                    }
                    Err(NoRoom::Table) if !trusted => {
                        proptest::prop_assert!(chosen_all >= 16);
                    }
                    Err(NoRoom::Rule(_)) => {
                        proptest::prop_assert_eq!(chosen + trusted_held, 9);
                    }
                    Err(NoRoom::Grant(_)) => {}
                    Err(other) => proptest::prop_assert!(false, "{other:?} for {grant}"),
                }
                proptest::prop_assert!(in_rule(&held, true) <= 5);
            }
        }
    }

    #[test]
    fn a_file_of_another_layout_is_set_aside_and_made_anew() {
        let path =
            std::env::temp_dir().join(format!("toolgate-approvals-v1-{}", std::process::id()));
        let aside = path.with_extension("table.v1.old");
        let _ = std::fs::remove_file(&aside);
        // A version 1 file: its magic word, then a header and 8-word slots.
        let mut v1 = vec![0u8; (HEADER_WORDS + 4 * 8) * 8];
        v1[..8].copy_from_slice(&(MAGIC_TAG | 1).to_ne_bytes());
        v1[8..16].copy_from_slice(&4u64.to_ne_bytes());
        std::fs::write(&path, &v1).unwrap();
        let t = ApprovalTable::open_file(&path, 8).unwrap();
        assert_eq!(t.capacity(), 8);
        assert_eq!(t.set_aside(), Some(aside.as_path()));
        assert_eq!(std::fs::read(&aside).unwrap(), v1, "kept as it was");
        pending(&t, key(1), 0);
        drop(t);
        let again = ApprovalTable::open_file(&path, 8).unwrap();
        assert_eq!(again.set_aside(), None, "this version's file is kept");
        assert_eq!(again.slots().len(), 1);
        std::fs::remove_file(&path).unwrap();
        std::fs::remove_file(&aside).unwrap();
    }

    #[test]
    fn racing_copies_of_an_approved_call_run_once() {
        let t = Arc::new(ApprovalTable::new(64));
        let k = key(7);
        let id = pending(&t, k, 0);
        t.decide(id, true, 0).unwrap();
        let ran: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| t.consume(k, id, 1) as usize))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(ran, 1);
    }

    #[test]
    fn the_file_keeps_approvals_for_the_next_process() {
        let path = std::env::temp_dir().join(format!("toolgate-approvals-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let a = ApprovalTable::open_file(&path, 8).unwrap();
        let id = pending(&a, key(1), 0);
        a.decide(id, true, 0).unwrap();
        let b = ApprovalTable::open_file(&path, 999).unwrap();
        assert_eq!(b.capacity(), 8, "an existing file keeps its size");
        assert!(b.consume(key(1), id, 1));
        drop(b);
        let c = ApprovalTable::open_file(&path, 8).unwrap();
        assert!(
            !c.consume(key(1), id, 2),
            "used, even after the process that used it is gone"
        );
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, vec![7u8; 4096]).unwrap();
        assert!(ApprovalTable::open_file(&path, 8).is_err());
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn the_durable_stores_later_states_are_applied_and_unknown_approvals_forgotten() {
        let t = ApprovalTable::new(16);
        let id = pending(&t, key(1), 0);
        let mut s = t.get(id).unwrap();
        // The store saw an approval the table missed (a crash between the two).
        s.state = State::Approved;
        s.deadline_ms = 5 * MIN;
        assert!(t.apply(&s, 1));
        let back = Slot {
            state: State::Pending,
            ..s
        };
        assert!(!t.apply(&back, 1), "never goes back");
        assert!(t.consume(key(1), id, 2));
        // A table that lost an approval gets it back while it is live.
        let lost = Slot {
            key: key(2),
            id: ApprovalId::random(),
            state: State::Approved,
            created_ms: 0,
            deadline_ms: 5 * MIN,
        };
        assert!(t.apply(&lost, 1));
        assert!(t.consume(key(2), lost.id, 2));
        let stale = Slot {
            id: ApprovalId::random(),
            deadline_ms: 1,
            ..lost
        };
        assert!(!t.apply(&stale, 2), "expired");
        // One the store never heard of is dropped: its call opens a new one.
        let unknown = pending(&t, key(3), 0);
        assert!(t.forget(unknown));
        assert_eq!(t.get(unknown), None, "forgotten");
        assert!(matches!(
            t.request(key(3), 1, MIN, ApprovalId::random),
            Some(Standing::Pending { new: true, .. })
        ));
        assert_eq!(ApprovalKey::parse(&key(3).to_string()), Some(key(3)));
    }
}
