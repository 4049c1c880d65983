//! The engine's current policy: replaced atomically on reload, read on every decision.
//!
//! A general atomic `Arc` cell pays, on every read, for a hazard slot and two atomic
//! read-modify-writes besides the reference count. Policies change rarely, so each thread
//! remembers the last policy it read from each slot with the slot's generation, and a read
//! is one atomic load, a compare and the `Arc` clone. Only the first read on a thread after
//! a reload takes the lock.
//!
//! [`PolicySlot::read`] goes further for the decision path: it lends the policy the
//! thread's memory holds, without touching the reference count (each atomic
//! read-modify-write costs a store-buffer drain). While a loan is out, this thread's memory
//! forgets nothing, so the lent policy stays alive.

use crate::compile::CompiledPolicy;
use std::cell::{Cell, RefCell};
use std::marker::PhantomData;
use std::ptr::NonNull;
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
    // Loans of remembered policies now out on this thread; while any is, nothing remembered
    // is dropped.
    static LOANS: Cell<usize> = const { Cell::new(0) };
}

/// A policy read for one decision: lent from this thread's memory, or (after a reload, or
/// while this thread's memory cannot be used) a reference of its own.
pub struct PolicyRead {
    policy: NonNull<CompiledPolicy>,
    owned: Option<Arc<CompiledPolicy>>,
    // A loan is counted on the thread that took it: it must be returned there.
    _on_this_thread: PhantomData<*const ()>,
}

impl PolicyRead {
    /// A reference of the caller's own, for what outlives the read (a decision).
    #[inline]
    pub fn to_arc(&self) -> Arc<CompiledPolicy> {
        match &self.owned {
            Some(policy) => Arc::clone(policy),
            // SAFETY: a lent pointer came from `Arc::as_ptr` of an `Arc` in this thread's
            // memory, which keeps it alive while the loan is out.
            None => unsafe {
                Arc::increment_strong_count(self.policy.as_ptr());
                Arc::from_raw(self.policy.as_ptr())
            },
        }
    }
}

impl std::ops::Deref for PolicyRead {
    type Target = CompiledPolicy;

    #[inline]
    fn deref(&self) -> &CompiledPolicy {
        // SAFETY: see `to_arc`; an owned read points into its own `Arc`.
        unsafe { self.policy.as_ref() }
    }
}

impl Drop for PolicyRead {
    #[inline]
    fn drop(&mut self) {
        if self.owned.is_none() {
            let _ = LOANS.try_with(|loans| loans.set(loans.get() - 1));
        }
    }
}

/// Whether this thread's memory may drop what it remembers.
fn no_loans_out() -> bool {
    LOANS.try_with(|loans| loans.get() == 0).unwrap_or(false)
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

    /// The current policy, lent for the duration of one decision.
    #[inline]
    pub fn read(&self) -> PolicyRead {
        let generation = self.generation.load(Ordering::Acquire);
        let lent = self.remembered(generation, |policy| {
            // Count the loan before handing it out; a thread whose loan count is gone
            // (being torn down) gets a reference of its own instead.
            LOANS.try_with(|loans| loans.set(loans.get() + 1)).ok()?;
            Some(NonNull::from(&**policy))
        });
        match lent {
            Some(policy) => PolicyRead {
                policy,
                owned: None,
                _on_this_thread: PhantomData,
            },
            _ => {
                let policy = self.load();
                PolicyRead {
                    policy: NonNull::from(&*policy),
                    owned: Some(policy),
                    _on_this_thread: PhantomData,
                }
            }
        }
    }

    /// The current policy.
    #[inline]
    pub fn load(&self) -> Arc<CompiledPolicy> {
        let generation = self.generation.load(Ordering::Acquire);
        self.remembered(generation, |policy| Some(Arc::clone(policy)))
            .unwrap_or_else(|| self.load_and_remember(generation))
    }

    /// `use_it` on this thread's memory of this slot, if that is of `generation`, and the
    /// memory moved to the front. A memory of an older generation is forgotten (unless a
    /// loan is out) and gives `None`, as does no memory. Always inlined: as a call it adds
    /// ~110 instructions to each decision (callgrind).
    #[inline(always)]
    fn remembered<R>(
        &self,
        generation: u64,
        use_it: impl FnOnce(&Arc<CompiledPolicy>) -> Option<R>,
    ) -> Option<R> {
        REMEMBERED_POLICIES
            .try_with(|cell| {
                let mut seen = cell.try_borrow_mut().ok()?;
                let i = seen.iter().position(|r| r.slot == self.id)?;
                if seen[i].generation != generation {
                    if no_loans_out() {
                        seen.remove(i);
                    }
                    return None;
                }
                let used = use_it(&seen[i].policy)?;
                seen[..=i].rotate_right(1);
                Some(used)
            })
            .ok()
            .flatten()
    }

    #[cold]
    fn load_and_remember(&self, generation: u64) -> Arc<CompiledPolicy> {
        let policy = Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()));
        // With a loan out, nothing remembered may be dropped: remember this one later.
        if !no_loans_out() {
            return policy;
        }
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

    #[test]
    fn a_lent_policy_stays_while_reloads_and_nested_reads_happen() {
        let slot = PolicySlot::new(compiled("a"));
        let _ = slot.load(); // remembered, so the next read is a loan
        let lent = slot.read();
        assert!(lent.owned.is_none(), "a loan from this thread's memory");
        let weak = Arc::downgrade(&lent.to_arc());
        slot.store(compiled("b"));
        // Reads during the loan (a decision reading its engine again, say) see the new
        // policy, and must not drop the lent one from this thread's memory.
        for _ in 0..2 * REMEMBERED {
            assert!(allows(&slot.read(), "b"));
            let other = PolicySlot::new(compiled("c"));
            assert!(allows(&other.read(), "c"));
        }
        assert!(allows(&lent, "a") && weak.upgrade().is_some());
        drop(lent);
        assert!(allows(&slot.read(), "b"));
        assert!(weak.upgrade().is_none(), "freed once the loan is back");
    }

    #[test]
    fn a_reference_taken_from_a_loan_outlives_the_loan() {
        let slot = PolicySlot::new(compiled("a"));
        let _ = slot.load();
        let kept = slot.read().to_arc();
        slot.store(compiled("b"));
        for _ in 0..3 {
            assert!(allows(&slot.read(), "b"));
        }
        assert!(allows(&kept, "a"));
        assert_eq!(
            Arc::strong_count(&kept),
            1,
            "only the kept reference is left"
        );
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
