//! The engine's current policy: replaced atomically on reload, read on every decision.
//!
//! A general atomic `Arc` cell pays, on every read, for a hazard slot and two atomic
//! read-modify-writes besides the reference count. Policies change rarely, so each thread
//! remembers the last policy it read from each slot with the slot's generation, and a read
//! is one atomic load, a compare and the `Arc` clone. Only the first read on a thread after
//! a reload takes the lock.

use crate::compile::CompiledPolicy;
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// Slots a thread remembers; the least recently read is forgotten first. A slot of an
/// engine that was dropped lingers here, with its policy, until pushed out.
const REMEMBERED: usize = 4;

/// Distinguishes slots, so a thread's memory of one is never taken for another's.
static NEXT_SLOT_ID: AtomicU64 = AtomicU64::new(1);

struct Remembered {
    slot: u64,
    generation: u64,
    policy: Arc<CompiledPolicy>,
}

thread_local! {
    // Most recently read first.
    static REMEMBERED_POLICIES: RefCell<Vec<Remembered>> = const { RefCell::new(Vec::new()) };
}

pub struct PolicySlot {
    id: u64,
    /// Bumped after each replacement, so a reader that sees the new generation then reads
    /// at least that policy.
    generation: AtomicU64,
    current: RwLock<Arc<CompiledPolicy>>,
}

impl PolicySlot {
    pub fn new(policy: CompiledPolicy) -> PolicySlot {
        PolicySlot {
            id: NEXT_SLOT_ID.fetch_add(1, Ordering::Relaxed),
            generation: AtomicU64::new(0),
            current: RwLock::new(Arc::new(policy)),
        }
    }

    /// Replace the policy; reads already holding the old one finish on it.
    pub fn store(&self, policy: CompiledPolicy) {
        let policy = Arc::new(policy);
        // The lock is only ever held for a pointer copy, so a poisoned lock still holds a
        // whole value.
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        let old = std::mem::replace(&mut *current, policy);
        self.generation.fetch_add(1, Ordering::Release);
        drop(current);
        // The old policy is freed outside the lock, once its last reader lets go.
        drop(old);
    }

    /// The current policy.
    #[inline]
    pub fn load(&self) -> Arc<CompiledPolicy> {
        let generation = self.generation.load(Ordering::Acquire);
        let remembered = REMEMBERED_POLICIES.try_with(|cell| {
            let mut seen = cell.try_borrow_mut().ok()?;
            let i = seen.iter().position(|r| r.slot == self.id)?;
            if seen[i].generation != generation {
                seen.remove(i);
                return None;
            }
            seen[..=i].rotate_right(1);
            Some(Arc::clone(&seen[0].policy))
        });
        match remembered {
            Ok(Some(policy)) => policy,
            _ => self.load_and_remember(generation),
        }
    }

    #[cold]
    fn load_and_remember(&self, generation: u64) -> Arc<CompiledPolicy> {
        let policy = Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()));
        // The policy read is at least as new as `generation` (it was stored before that
        // generation was published), so remembering it under `generation` is safe: a later
        // replacement bumps the generation and this memory is dropped.
        let _ = REMEMBERED_POLICIES.try_with(|cell| {
            if let Ok(mut seen) = cell.try_borrow_mut() {
                seen.retain(|r| r.slot != self.id);
                seen.truncate(REMEMBERED - 1);
                seen.insert(
                    0,
                    Remembered {
                        slot: self.id,
                        generation,
                        policy: Arc::clone(&policy),
                    },
                );
            }
        });
        policy
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Policy;

    fn compiled(revision_tool: &str) -> CompiledPolicy {
        let json = format!(
            r#"{{"version": "1", "default": "deny", "tools": {{"{revision_tool}": {{}}}}}}"#
        );
        CompiledPolicy::compile(Policy::from_json_str(&json).unwrap()).unwrap()
    }

    fn allows(p: &CompiledPolicy, tool: &str) -> bool {
        p.section(None).tools.lookup(tool).is_some()
    }

    #[test]
    fn a_read_after_a_store_sees_the_new_policy() {
        let slot = PolicySlot::new(compiled("a"));
        assert!(allows(&slot.load(), "a"));
        assert!(allows(&slot.load(), "a"));
        slot.store(compiled("b"));
        let p = slot.load();
        assert!(allows(&p, "b") && !allows(&p, "a"));
    }

    #[test]
    fn slots_are_not_confused_on_one_thread() {
        let slots: Vec<PolicySlot> = (0..2 * REMEMBERED)
            .map(|i| PolicySlot::new(compiled(&format!("t{i}"))))
            .collect();
        for _ in 0..3 {
            for (i, slot) in slots.iter().enumerate() {
                assert!(allows(&slot.load(), &format!("t{i}")));
            }
        }
        slots[1].store(compiled("new"));
        assert!(allows(&slots[1].load(), "new"));
        assert!(allows(&slots[0].load(), "t0"));
    }

    #[test]
    fn an_old_policy_is_freed_once_its_readers_let_go() {
        let slot = PolicySlot::new(compiled("a"));
        let held = slot.load();
        let weak = Arc::downgrade(&held);
        slot.store(compiled("b"));
        assert!(allows(&held, "a"), "a reader keeps the policy it read");
        drop(held);
        // This thread's memory of the old policy goes with the next read.
        assert!(allows(&slot.load(), "b"));
        assert!(weak.upgrade().is_none());
    }

    #[test]
    fn readers_on_other_threads_see_each_store() {
        let slot = Arc::new(PolicySlot::new(compiled("v0")));
        for v in 1..20 {
            slot.store(compiled(&format!("v{v}")));
            let s = Arc::clone(&slot);
            let seen = std::thread::spawn(move || {
                let first = allows(&s.load(), &format!("v{v}"));
                first && allows(&s.load(), &format!("v{v}"))
            })
            .join()
            .unwrap();
            assert!(seen, "generation {v}");
            // This thread too, though it remembered the previous one.
            assert!(allows(&slot.load(), &format!("v{v}")));
        }
    }

    /// A reader running beside a writer never goes back to an older policy than one it
    /// has seen, and sees the last one once the writer is done.
    #[test]
    fn a_reader_never_goes_back_while_the_writer_runs() {
        use std::sync::atomic::AtomicBool;
        const VERSIONS: usize = 40;
        let version_of = |p: &CompiledPolicy| (0..=VERSIONS).find(|v| allows(p, &format!("v{v}")));
        let slot = Arc::new(PolicySlot::new(compiled("v0")));
        let done = Arc::new(AtomicBool::new(false));
        let reader = {
            let (slot, done) = (Arc::clone(&slot), Arc::clone(&done));
            std::thread::spawn(move || {
                let mut newest = 0;
                while !done.load(Ordering::Acquire) {
                    let v = version_of(&slot.load()).expect("a known version");
                    assert!(v >= newest, "went back from v{newest} to v{v}");
                    newest = v;
                }
                version_of(&slot.load())
            })
        };
        for v in 1..=VERSIONS {
            slot.store(compiled(&format!("v{v}")));
        }
        done.store(true, Ordering::Release);
        assert_eq!(reader.join().unwrap(), Some(VERSIONS));
    }
}
